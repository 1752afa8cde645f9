//! Users for the instruments: `u0..u{n}` with one password and one live session
//! each, written into a database through the library's own store and accounts. One
//! argon2 hash is shared by every user, so seeding 10,000 users takes seconds, not
//! minutes of argon2.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use moechat::server::accounts::{hash_password, Accounts};
use moechat::server::hasher::Hasher;
use moechat::store::{NoRouting, SqliteStore, Store};

use crate::support;

/// The password of every bench user.
pub const PASSWORD: &str = "bench-password";

/// The name of bench user `i`.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

/// A template database with users `u0..u{n}` and one live session token each.
pub struct Seed {
    /// The database file.
    pub db: PathBuf,
    /// User `i`'s session token at index `i`.
    pub tokens: Arc<Vec<String>>,
}

impl Seed {
    /// Seeds `dir/template.db` with `users` users; a failure ends the process with one
    /// line naming `tool`.
    pub async fn create(dir: &Path, users: usize, tool: &str) -> Seed {
        let db = dir.join("template.db");
        let path = db.to_string_lossy().into_owned();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&path, Arc::new(NoRouting))
                .unwrap_or_else(|e| support::fail(tool, &e.to_string())),
        );
        let hash = hash_password(PASSWORD).unwrap_or_else(|e| support::fail(tool, &e.to_string()));
        // Sessions only: the pool never hashes here.
        let hasher = Hasher::new(1, 0, Duration::from_secs(1))
            .unwrap_or_else(|e| support::fail(tool, &e.to_string()));
        let accounts = Arc::new(Accounts::new(
            store.clone(),
            Duration::from_secs(86_400),
            hasher,
        ));
        // Concurrent calls share group commits: 10,000 users are a few transactions.
        let tokens: Vec<(usize, String)> = stream::iter(0..users)
            .map(|i| {
                let (store, accounts, hash) = (store.clone(), accounts.clone(), hash.clone());
                async move {
                    store
                        .create_user(user(i), hash)
                        .await
                        .unwrap_or_else(|e| support::fail(tool, &format!("seeding: {e}")));
                    let token = accounts
                        .open_session(&user(i))
                        .await
                        .unwrap_or_else(|e| support::fail(tool, &format!("seeding: {e}")));
                    (i, token)
                }
            })
            .buffer_unordered(512)
            .collect()
            .await;
        store
            .close()
            .await
            .unwrap_or_else(|e| support::fail(tool, &e.to_string()));
        let mut ordered = vec![String::new(); users];
        for (i, t) in tokens {
            ordered[i] = t;
        }
        Seed {
            db,
            tokens: Arc::new(ordered),
        }
    }
}
