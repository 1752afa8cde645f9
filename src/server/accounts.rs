//! Accounts: argon2id password hashes and resumable session tokens.
//!
//! Hashing is deliberately slow (tens of milliseconds) and large (19 MiB), so it
//! runs on the bounded [`Hasher`] pool, never on a tokio worker; when the pool is
//! full the caller gets [`AccountError::Busy`]. A login for a name that does not
//! exist still verifies against a dummy hash, so the answer's timing does not
//! reveal which names exist. Session tokens are stored only as a BLAKE2b hash, so
//! a copy of the database does not hand out live sessions; resuming costs one
//! store lookup and no argon2 work.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::OnceCell;

use super::hasher::{Busy, Hasher};
use crate::protocol::validate::{is_valid_name, is_valid_password, name_rule};
use crate::store::{now_ms, Store, StoreError};

/// Length of a session token.
pub const SESSION_TOKEN_CHARS: usize = 24;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name breaks the naming rule.
    #[error("invalid name {0:?}: {rule}", rule = name_rule())]
    InvalidName(String),
    /// The password is empty or longer than 1024 bytes.
    #[error("a password must be 1 to 1024 bytes")]
    InvalidPassword,
    /// Hashing failed (out of memory, or a corrupt stored hash).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// No hashing slot in time: the caller should try again shortly (`r`/24).
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// User creation and password checks over a [`Store`].
pub struct Accounts {
    store: Arc<dyn Store>,
    dummy_hash: OnceCell<String>,
    session_ttl: Duration,
    hasher: Hasher,
}

impl Accounts {
    /// Logins and registrations waiting for a hashing slot.
    pub fn hash_queued(&self) -> usize {
        self.hasher.queued()
    }

    /// Accounts kept in `store`, with sessions valid for `session_ttl`, hashing on `hasher`.
    pub fn new(store: Arc<dyn Store>, session_ttl: Duration, hasher: Hasher) -> Accounts {
        Accounts {
            store,
            dummy_hash: OnceCell::new(),
            session_ttl,
            hasher,
        }
    }

    /// Starts a resumable session for `user`; returns its token.
    pub async fn open_session(&self, user: &str) -> Result<String, AccountError> {
        let token = new_session_token();
        let ttl = i64::try_from(self.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = now_ms().saturating_add(ttl);
        self.store
            .create_session(session_key(&token), user.to_string(), expires)
            .await?;
        Ok(token)
    }

    /// Whether `token` is a live session of `user`.
    pub async fn resume(&self, user: &str, token: &str) -> Result<bool, AccountError> {
        let found = self.store.session(session_key(token)).await?;
        Ok(found.is_some_and(|s| s.user == user && s.expires_ms > now_ms()))
    }

    /// Voids a session (logout); an unknown token is not an error.
    pub async fn close_session(&self, token: &str) -> Result<(), AccountError> {
        Ok(self.store.delete_session(session_key(token)).await?)
    }

    /// Creates a user; [`StoreError::UserExists`] (inside [`AccountError::Store`]) if taken.
    pub async fn create(&self, name: &str, password: &str) -> Result<(), AccountError> {
        if !is_valid_name(name) {
            return Err(AccountError::InvalidName(name.to_string()));
        }
        if !is_valid_password(password) {
            return Err(AccountError::InvalidPassword);
        }
        let password = password.to_string();
        let hash = self.hasher.run(move || hash_password(&password)).await??;
        self.store.create_user(name.to_string(), hash).await?;
        Ok(())
    }

    /// Whether `password` is `name`'s; `false` for a user that does not exist.
    pub async fn verify(&self, name: &str, password: &str) -> Result<bool, AccountError> {
        let stored = self.store.password_hash(name.to_string()).await?;
        let (hash, exists) = match stored {
            Some(h) => (h, true),
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| async {
                        self.hasher.run(|| hash_password("no such user")).await?
                    })
                    .await?;
                (dummy.clone(), false)
            }
        };
        let password = password.to_string();
        let matches = self
            .hasher
            .run(move || {
                let parsed =
                    PasswordHash::new(&hash).map_err(|e| AccountError::Hash(e.to_string()))?;
                Ok::<bool, AccountError>(
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        Ok(matches && exists)
    }
}

/// An argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// What the store keeps for a token: its BLAKE2b-256 digest in hex.
pub fn session_key(token: &str) -> String {
    use blake2::{Blake2b256, Digest};
    Blake2b256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh session token: 24 characters from `A-Za-z0-9`, from the OS's random source.
pub fn new_session_token() -> String {
    crate::random::alphanumeric(SESSION_TOKEN_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NoRouting, SqliteStore};

    fn hasher() -> Hasher {
        Hasher::new(1, 16, Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn sessions_resume_until_closed_or_expired() {
        let store = Arc::new(SqliteStore::open(":memory:", Arc::new(NoRouting)).unwrap());
        let acc = Accounts::new(store.clone(), Duration::from_secs(60), hasher());
        let token = acc.open_session("alice").await.unwrap();
        assert!(acc.resume("alice", &token).await.unwrap());
        assert!(
            !acc.resume("bob", &token).await.unwrap(),
            "a token is bound to its user"
        );
        assert!(!acc.resume("alice", "x").await.unwrap());
        assert!(
            store.session(token.clone()).await.unwrap().is_none(),
            "only the hash is stored"
        );
        acc.close_session(&token).await.unwrap();
        assert!(!acc.resume("alice", &token).await.unwrap());
        let short = Accounts::new(store, Duration::from_millis(1), hasher());
        let token = short.open_session("alice").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!short.resume("alice", &token).await.unwrap(), "expired");
    }

    #[test]
    fn tokens_have_the_protocol_shape() {
        let a = new_session_token();
        let b = new_session_token();
        assert_eq!(a.len(), SESSION_TOKEN_CHARS);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn create_and_verify() {
        let store = Arc::new(SqliteStore::open(":memory:", Arc::new(NoRouting)).unwrap());
        let acc = Accounts::new(store.clone(), Duration::from_secs(60), hasher());
        acc.create("alice", "wonderland").await.unwrap();
        assert!(acc.verify("alice", "wonderland").await.unwrap());
        assert!(!acc.verify("alice", "wrong").await.unwrap());
        assert!(!acc.verify("nobody", "wonderland").await.unwrap());
        assert!(matches!(
            acc.create("Alice", "x").await,
            Err(AccountError::InvalidName(_))
        ));
        assert!(matches!(
            acc.create("bob", "").await,
            Err(AccountError::InvalidPassword)
        ));
        assert!(matches!(
            acc.create("alice", "x").await,
            Err(AccountError::Store(StoreError::UserExists(_)))
        ));
        let hash = store.password_hash("alice".into()).await.unwrap().unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("wonderland"));
    }
}
