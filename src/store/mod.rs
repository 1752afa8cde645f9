//! The store: users, the message log and per-user delivery cursors.
//!
//! Connection code sees only the [`Store`] trait, so a clustered store (say
//! PostgreSQL) can replace the embedded SQLite one ([`SqliteStore`]) without the
//! protocol or connection code knowing. The store, not the hub, assigns
//! `msg_id`, and it reports every committed message to a [`CommitSink`] in
//! `msg_id` order *after* it is durable: that ordered feed is what lets a
//! recipient's single delivery cursor be sound (everything at or below it was
//! written to the recipient's connection). The whole contract, and the tests every
//! implementation runs (`contract`), are described in docs/store.md.

#[cfg(test)]
mod contract;
mod schema;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::protocol::reply::ChatMessage;
use crate::protocol::request::Peer;

pub(crate) use sqlite::now_ms;
pub use sqlite::SqliteStore;

/// A store operation in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A submitted append on its way to being durable (see [`Store::submit`]).
pub type Committing = Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send + 'static>>;

/// What can go wrong in the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or is not a MoeChat database.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The path given.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// A user of that name already exists.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// No user of that name.
    #[error("no such user {0:?}")]
    NoSuchUser(String),
    /// The backend failed while running an operation; it had no effect. The reason is
    /// the backend's own words, for the log (clients are told only `e`/60).
    #[error("database error: {0}")]
    Backend(String),
    /// A whole transaction failed (could not begin or commit); none of it took effect.
    #[error("database error: {0}")]
    Transaction(String),
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
}

/// A resumable session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose session it is.
    pub user: String,
    /// When it stops being valid, Unix epoch milliseconds.
    pub expires_ms: i64,
}

/// A message to append to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The sender's name.
    pub from: String,
    /// The recipient; `None` for a broadcast.
    pub to: Option<String>,
    /// The text.
    pub text: String,
    /// The sender's idempotency key: a second message from the same sender with the
    /// same nonce within `nonce_window` is a repeat of the first (PROTOCOL.md 3.2).
    pub nonce: Option<String>,
    /// How far back a nonce counts (the server's session TTL).
    pub nonce_window: std::time::Duration,
}

/// What routing did with a committed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routed {
    /// For a direct message: queued to the recipient's live connection.
    pub delivered: bool,
    /// For a broadcast: the number of connections it was queued to.
    pub recipients: u64,
}

/// An appended message and what routing did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message as stored, with its `msg_id` and `ts` (shared with the pushes
    /// routing made of it).
    pub message: Arc<ChatMessage>,
    /// The sink's answer (for a repeat: the first message's).
    pub routed: Routed,
    /// The nonce matched an earlier message: nothing was stored or routed, and
    /// `message` and `routed` are the first message's.
    pub duplicate: bool,
}

/// Receives every committed message, in `msg_id` order, once it is durable.
///
/// Called on the store's own thread: implementations must not block.
pub trait CommitSink: Send + Sync + 'static {
    /// Routes one message.
    fn committed(&self, message: &Arc<ChatMessage>) -> Routed;

    /// A write transaction holding `messages` appends became durable in `took`
    /// (after their [`CommitSink::committed`] calls); for metrics, ignored by default.
    fn batch_committed(&self, _messages: usize, _took: std::time::Duration) {}
}

/// A sink that routes nothing: for tools that use the store without a server.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRouting;

impl CommitSink for NoRouting {
    fn committed(&self, _message: &Arc<ChatMessage>) -> Routed {
        Routed::default()
    }
}

/// The store interface the server is written against.
pub trait Store: Send + Sync + 'static {
    /// Creates a user with a PHC password hash; [`StoreError::UserExists`] if taken.
    fn create_user(&self, name: String, password_hash: String) -> StoreFuture<'_, ()>;
    /// The user's PHC password hash, or `None` if there is no such user.
    fn password_hash(&self, name: String) -> StoreFuture<'_, Option<String>>;
    /// Deletes a user and the direct messages to and from it; `false` if there was none.
    fn delete_user(&self, name: String) -> StoreFuture<'_, bool>;
    /// All user names, sorted.
    fn list_users(&self) -> StoreFuture<'_, Vec<String>>;
    /// Takes a message into the log's order, then makes it durable and routes it
    /// through the sink. The outer future finishes once the message's place is fixed
    /// (queued behind every message submitted before it), the inner one once it is
    /// durable: a connection can submit its sends in order without waiting for each
    /// commit. A direct message to a user that does not exist fails the inner future
    /// with [`StoreError::NoSuchUser`]; a repeated nonce returns the first message with
    /// `duplicate` set.
    fn submit(&self, message: NewMessage) -> StoreFuture<'_, Committing>;
    /// [`Store::submit`] and wait until the message is durable.
    fn append(&self, message: NewMessage) -> StoreFuture<'_, Appended> {
        Box::pin(async move { self.submit(message).await?.await })
    }
    /// Direct messages to `user` above `after` (default: the user's delivery cursor),
    /// oldest first, at most `limit`.
    fn undelivered(
        &self,
        user: String,
        after: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<ChatMessage>>;
    /// The conversation of `user` with `peer`, the newest `limit` below `before`, oldest first.
    fn history(
        &self,
        user: String,
        peer: Peer,
        before: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<ChatMessage>>;
    /// Records that every direct message to `user` up to `msg_id` was written to its connection.
    /// Never blocks, and reads see it at once; cursors are coalesced and written with the
    /// next transaction that writes anyway, or on their own within about 100 ms.
    fn advance_cursor(&self, user: &str, msg_id: u64);
    /// Records a resumable session (`token_hash` identifies it) valid until `expires_ms`;
    /// sessions already expired are forgotten on the way.
    fn create_session(
        &self,
        token_hash: String,
        user: String,
        expires_ms: i64,
    ) -> StoreFuture<'_, ()>;
    /// The session `token_hash` names, if it exists.
    fn session(&self, token_hash: String) -> StoreFuture<'_, Option<SessionRecord>>;
    /// Forgets a session (logout).
    fn delete_session(&self, token_hash: String) -> StoreFuture<'_, ()>;
    /// Whether the store takes writes now: its last write transaction committed and it
    /// is not closed (`/healthz` answers 503 while this is `false`).
    fn writable(&self) -> bool;
    /// Writes what is pending and stops; later calls fail with [`StoreError::Closed`].
    fn close(&self) -> StoreFuture<'_, ()>;
}
