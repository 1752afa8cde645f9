//! The SQLite schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Each migration moves the schema one version up and never changes once
//! released; a database from a newer server is refused rather than guessed at.

use rusqlite::Connection;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: users with argon2id PHC hashes and a delivery cursor; the message log.
    "CREATE TABLE users (
         name         TEXT PRIMARY KEY NOT NULL,
         pw_hash      TEXT NOT NULL,
         created_ms   INTEGER NOT NULL,
         delivered_id INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     CREATE TABLE messages (
         msg_id    INTEGER PRIMARY KEY AUTOINCREMENT,
         sender    TEXT NOT NULL,
         recipient TEXT,
         text      TEXT NOT NULL,
         ts        INTEGER NOT NULL,
         nonce     TEXT
     );
     CREATE INDEX messages_inbox ON messages (recipient, msg_id);
     CREATE INDEX messages_pair ON messages (recipient, sender, msg_id);",
    // 2: resumable sessions, keyed by a hash of the token (the token itself is never stored).
    "CREATE TABLE sessions (
         token_hash TEXT PRIMARY KEY NOT NULL,
         user       TEXT NOT NULL,
         expires_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX sessions_user ON sessions (user);
     CREATE INDEX sessions_expiry ON sessions (expires_ms);",
    // 3: idempotent sends: find a sender's nonce, and remember the receipt it was given
    // (1/0 delivered or stored for a direct message, the recipient count for a broadcast).
    "ALTER TABLE messages ADD COLUMN receipt INTEGER;
     CREATE INDEX messages_nonce ON messages (sender, nonce) WHERE nonce IS NOT NULL;",
    // 4: msg_ids from a counter the store keeps instead of AUTOINCREMENT (which reads
    // and writes sqlite_sequence on every insert). The counter starts above every id
    // ever handed out, so none is reused; the table is rebuilt, as SQLite cannot drop
    // AUTOINCREMENT in place.
    "CREATE TABLE counters (
         name  TEXT PRIMARY KEY NOT NULL,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO counters (name, value) VALUES ('msg_id', MAX(
         COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
         COALESCE((SELECT MAX(msg_id) FROM messages), 0)));
     CREATE TABLE messages_v4 (
         msg_id    INTEGER PRIMARY KEY,
         sender    TEXT NOT NULL,
         recipient TEXT,
         text      TEXT NOT NULL,
         ts        INTEGER NOT NULL,
         nonce     TEXT,
         receipt   INTEGER
     );
     INSERT INTO messages_v4 (msg_id, sender, recipient, text, ts, nonce, receipt)
         SELECT msg_id, sender, recipient, text, ts, nonce, receipt FROM messages;
     DROP TABLE messages;
     ALTER TABLE messages_v4 RENAME TO messages;
     CREATE INDEX messages_inbox ON messages (recipient, msg_id);
     CREATE INDEX messages_pair ON messages (recipient, sender, msg_id);
     CREATE INDEX messages_nonce ON messages (sender, nonce) WHERE nonce IS NOT NULL;",
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database to [`SCHEMA_VERSION`], or explains why it cannot.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "its schema version {version} is newer than this server's {SCHEMA_VERSION}"
        ));
    }
    migrate_until(conn, version, SCHEMA_VERSION)
}

/// Runs the migrations from `version` up to `target`.
fn migrate_until(conn: &mut Connection, version: u32, target: u32) -> Result<(), String> {
    let steps = MIGRATIONS.iter().enumerate().take(target as usize);
    for (i, sql) in steps.skip(version as usize) {
        // Some rebuild a table: on a large log that takes a while, so say what is going on.
        if version > 0 {
            tracing::info!("upgrading the database to schema version {}", i + 1);
        }
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql)
            .map_err(|e| format!("migration to version {}: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A database at schema `version` exactly, to test the migrations after it.
#[cfg(test)]
pub(crate) fn at_version(conn: &mut Connection, version: u32) {
    migrate_until(conn, 0, version).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(migrate(&mut c).unwrap_err().contains("newer"));
    }
}
