//! What SQLite alone can do with W1's writes: the ceiling under `moechat-bench`'s W1.
//!
//! Inserts W1's pattern (50 senders, each writing to its own recipient, 100-byte
//! texts) into a copy of the message table of schema v4 with its indexes, in
//! transactions of `--batch` rows, with the store's pragmas (WAL, `synchronous =
//! FULL`, 16 MiB of cache, checkpoints every 4,000 pages). No server, no network,
//! no routing: the rate it prints is the most a single writer thread could commit.
//! The database is a scratch file at `--db`, which must not exist; it is removed
//! afterwards.
//! Flags change one thing at a time, to price the schema's parts (docs/BENCHMARKS.md):
//!
//! ```sh
//! cargo run --release --example sqlite_ceiling -- --db /tmp/ceiling.db
//! cargo run --release --example sqlite_ceiling -- --db /tmp/ceiling.db --int-keys
//! cargo run --release --example sqlite_ceiling -- --db /tmp/ceiling.db --no-pair-index
//! ```

use std::process::ExitCode;
use std::time::Instant;

use rusqlite::{params, Connection};

const USAGE: &str = "usage: sqlite_ceiling --db NEW-PATH [--messages N] [--batch N] \
                     [--int-keys] [--no-pair-index] [--sync FULL|NORMAL]\n\
                     (NEW-PATH must not exist: the scratch database is made there and removed)";

struct Options {
    db: String,
    messages: u64,
    batch: u64,
    int_keys: bool,
    pair_index: bool,
    sync: String,
}

/// The options, or `None` when only the usage was asked for.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        db: String::new(),
        messages: 1_000_000,
        batch: 1_300,
        int_keys: false,
        pair_index: true,
        sync: "FULL".into(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("{name} must be a positive integer, not {v:?}"))
        };
        match arg.as_str() {
            "--db" => o.db = value("--db")?,
            "--messages" => o.messages = number("--messages", value("--messages")?)?,
            "--batch" => o.batch = number("--batch", value("--batch")?)?,
            "--int-keys" => o.int_keys = true,
            "--no-pair-index" => o.pair_index = false,
            "--sync" => {
                o.sync = value("--sync")?.to_ascii_uppercase();
                if o.sync != "FULL" && o.sync != "NORMAL" {
                    return Err(format!("--sync must be FULL or NORMAL, not {:?}", o.sync));
                }
            }
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.db.is_empty() {
        return Err("--db is required".into());
    }
    // It is a scratch file: never overwrite one that exists (it could be a real store).
    if std::path::Path::new(&o.db).exists() {
        return Err(format!(
            "{} exists; give a path for a new scratch file",
            o.db
        ));
    }
    Ok(Some(o))
}

/// Removes the scratch database and its WAL files.
fn remove(db: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{db}{suffix}"));
    }
}

fn run(o: &Options) -> rusqlite::Result<f64> {
    let mut conn = Connection::open(&o.db)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", &o.sync)?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "wal_autocheckpoint", 4_000)?;
    let key = if o.int_keys { "INTEGER" } else { "TEXT" };
    conn.execute_batch(&format!(
        "CREATE TABLE messages (
             msg_id INTEGER PRIMARY KEY, sender {key} NOT NULL, recipient {key},
             text TEXT NOT NULL, ts INTEGER NOT NULL, nonce TEXT, receipt INTEGER);
         CREATE INDEX messages_inbox ON messages (recipient, msg_id);
         CREATE INDEX messages_nonce ON messages (sender, nonce) WHERE nonce IS NOT NULL;"
    ))?;
    if o.pair_index {
        conn.execute_batch("CREATE INDEX messages_pair ON messages (recipient, sender, msg_id);")?;
    }
    // The bench's users are u0, u1, …: senders u0..u49 write to u50..u99.
    let names: Vec<(String, String)> = (0..50)
        .map(|i| (format!("u{i}"), format!("u{}", i + 50)))
        .collect();
    let text = "x".repeat(100);
    let started = Instant::now();
    let mut msg_id: u64 = 0;
    while msg_id < o.messages {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (msg_id, sender, recipient, text, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for _ in 0..o.batch.min(o.messages - msg_id) {
                msg_id += 1;
                let pair = (msg_id % 50) as usize;
                let id = i64::try_from(msg_id).unwrap_or(i64::MAX);
                if o.int_keys {
                    insert.execute(params![id, pair as i64, pair as i64 + 50, text, id])?;
                } else {
                    let (from, to) = &names[pair];
                    insert.execute(params![id, from, to, text, id])?;
                }
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sqlite_ceiling: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = run(&options);
    remove(&options.db);
    match result {
        Ok(seconds) => {
            println!(
                "{}: {} keys, {} index, synchronous={}, batches of {}: {:.0} inserts/s ({:.2} us each)",
                options.db,
                if options.int_keys { "integer" } else { "text" },
                if options.pair_index {
                    "with the pair"
                } else {
                    "without the pair"
                },
                options.sync,
                options.batch,
                options.messages as f64 / seconds,
                seconds * 1e6 / options.messages as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sqlite_ceiling: {}: {e}", options.db);
            ExitCode::FAILURE
        }
    }
}
