//! The embedded store: one SQLite connection owned by one thread.
//!
//! Async callers send commands over a bounded channel and await a oneshot, so
//! SQLite never runs on a tokio worker. The thread drains whatever commands
//! have queued up and runs them in one `BEGIN IMMEDIATE … COMMIT` (group
//! commit): messages that arrive while a transaction commits go into the next
//! one, so durability costs one fsync per batch, not per message. Only after
//! the commit does it route the batch's messages, in `msg_id` order, and answer
//! the callers; so nothing is acknowledged before it is on disk. Delivery cursors
//! are the exception that may lag: they ride on the next transaction that writes
//! anyway, or get one of their own [`CURSOR_DELAY`] later, so a batch of reads
//! (a receiver fetching its backlog while it acks) stays a read with no fsync.
//!
//! An operation is a job: the closure its [`Store`] method hands to
//! `SqliteStore::job`, run on the thread inside the batch's transaction, its answer
//! sent after the commit. A new operation is that method and its SQL, nothing else.
//! Appends alone have their own command: they take a `msg_id` and are routed after
//! the commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::schema;
use super::{
    Appended, CommitSink, Committing, NewMessage, Routed, SessionRecord, Store, StoreError,
    StoreFuture,
};
use crate::config::MEMORY_DB;
use crate::protocol::reply::ChatMessage;
use crate::protocol::request::Peer;
use crate::sync::lock;

/// Commands queued for the store thread before callers wait (backpressure).
const QUEUE: usize = 8_192;
/// Most commands in one transaction; bounds the latency one batch adds to the next.
const MAX_BATCH: usize = 2_048;
/// How long a cursor advance may wait for a transaction that writes anyway before it
/// gets one (and an fsync) of its own. A receiver reading its backlog acks all the
/// time; without the wait, every page it fetches would become a write and an fsync.
const CURSOR_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the store's thread is asked to do.
enum Command {
    /// Any operation but an append: it runs inside the batch's transaction, and its
    /// answer leaves once the transaction has committed (see [`Job`]).
    Job(Box<dyn Job>),
    /// Appends are special: they take a `msg_id`, and are routed after the commit.
    Append {
        message: NewMessage,
        reply: Reply<Appended>,
    },
    /// Write the cursor advances waiting (sent [`CURSOR_DELAY`] after the first).
    FlushCursors,
    Close {
        reply: Reply<()>,
    },
}

impl Command {
    /// Whether running it writes to the database (and so its transaction ends in an fsync).
    fn writes(&self) -> bool {
        match self {
            Command::Job(job) => job.writes(),
            Command::Append { .. } | Command::FlushCursors | Command::Close { .. } => true,
        }
    }
}

/// What a job may use besides the transaction.
struct Batch<'a> {
    /// Recipients known to exist in this transaction (a delete clears it).
    known: &'a mut HashSet<String>,
    cursors: &'a mut Cursors,
}

/// One operation of the store: the whole of it is the closure a [`Store`] method
/// gives to [`SqliteStore::job`], so a new operation is written in one place.
trait Job: Send {
    fn writes(&self) -> bool;
    /// Runs it inside the batch's transaction; the answer waits for the commit.
    fn run(self: Box<Self>, tx: &rusqlite::Transaction<'_>, batch: &mut Batch<'_>) -> Answer;
    /// The transaction could not begin: answer with the failure.
    fn fail(self: Box<Self>, reason: &str);
}

/// A job's result and whom to give it, sent once the transaction commits (or turned
/// into the commit's failure).
type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Query<T, F> {
    writes: bool,
    run: F,
    reply: Reply<T>,
}

impl<T, F> Job for Query<T, F>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Transaction<'_>, &mut Batch<'_>) -> Result<T, StoreError> + Send,
{
    fn writes(&self) -> bool {
        self.writes
    }

    fn run(self: Box<Self>, tx: &rusqlite::Transaction<'_>, batch: &mut Batch<'_>) -> Answer {
        let Query { run, reply, .. } = *self;
        let result = run(tx, batch);
        Box::new(move |committed: Result<(), String>| {
            // A caller that went away (its connection closed) simply drops the answer.
            let _ = reply.send(match committed {
                Ok(()) => result,
                Err(reason) => Err(StoreError::Transaction(reason)),
            });
        })
    }

    fn fail(self: Box<Self>, reason: &str) {
        let _ = self.reply.send(Err(StoreError::Transaction(reason.into())));
    }
}

/// Cursor advances handed over by callers, by user (only the highest matters), and
/// whether a [`Command::FlushCursors`] is on its way for them.
#[derive(Default)]
struct PendingCursors {
    advances: Mutex<HashMap<String, u64>>,
    flush_due: AtomicBool,
}

/// A handle to the SQLite store thread. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    tx: mpsc::Sender<Command>,
    cursors: Arc<PendingCursors>,
    transactions: Arc<AtomicU64>,
    /// Whether the last write transaction committed (false once the thread ends).
    writable: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`, or an
    /// in-memory one for `:memory:`, and starts its thread. Blocks while opening.
    pub fn open(path: &str, sink: Arc<dyn CommitSink>) -> Result<SqliteStore, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let cursors = Arc::new(PendingCursors::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let owned_path = path.to_string();
        let thread_cursors = cursors.clone();
        let transactions = Arc::new(AtomicU64::new(0));
        let writable = Arc::new(AtomicBool::new(true));
        let thread_writable = writable.clone();
        let thread_transactions = transactions.clone();
        thread::Builder::new()
            .name("moechat-store".into())
            .spawn(move || match open_connection(&owned_path) {
                Ok((conn, ids)) => {
                    let _ = ready_tx.send(Ok(()));
                    let health = Health {
                        transactions: thread_transactions,
                        writable: thread_writable,
                    };
                    run(conn, ids, rx, sink, thread_cursors, &health);
                    health.writable.store(false, Ordering::Relaxed);
                }
                Err(reason) => {
                    let _ = ready_tx.send(Err(reason));
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.into(),
                reason: e.to_string(),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(SqliteStore {
                tx,
                cursors,
                transactions,
                writable,
            }),
            Ok(Err(reason)) => Err(StoreError::Open {
                path: path.into(),
                reason,
            }),
            Err(_) => Err(StoreError::Open {
                path: path.into(),
                reason: "the store thread died".into(),
            }),
        }
    }

    /// Transactions committed so far: with group commit, far fewer than messages.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Runs `run` on the store's thread, inside a transaction (one that writes, and
    /// so ends in an fsync, if `writes`), and answers once it has committed.
    fn job<T, F>(&self, writes: bool, run: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &mut Batch<'_>) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let command = Command::Job(Box::new(Query { writes, run, reply }));
        Box::pin(async move {
            self.tx
                .send(command)
                .await
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

impl Store for SqliteStore {
    fn create_user(&self, name: String, password_hash: String) -> StoreFuture<'_, ()> {
        self.job(true, move |tx, _| create_user(tx, name, &password_hash))
    }

    fn password_hash(&self, name: String) -> StoreFuture<'_, Option<String>> {
        self.job(false, move |tx, _| password_hash(tx, &name))
    }

    fn delete_user(&self, name: String) -> StoreFuture<'_, bool> {
        self.job(true, move |tx, batch| {
            batch.known.clear();
            // A user made again under this name starts from nothing.
            batch.cursors.unsaved.remove(&name);
            delete_user(tx, &name)
        })
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<String>> {
        self.job(false, |tx, _| list_users(tx))
    }

    fn submit(&self, message: NewMessage) -> StoreFuture<'_, Committing> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Append { message, reply };
        Box::pin(async move {
            self.tx
                .send(command)
                .await
                .map_err(|_| StoreError::Closed)?;
            let committing: Committing =
                Box::pin(async move { rx.await.map_err(|_| StoreError::Closed)? });
            Ok(committing)
        })
    }

    fn undelivered(
        &self,
        user: String,
        after: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<ChatMessage>> {
        self.job(false, move |tx, batch| {
            undelivered(tx, &user, after, limit, batch.cursors)
        })
    }

    fn history(
        &self,
        user: String,
        peer: Peer,
        before: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<ChatMessage>> {
        self.job(false, move |tx, _| history(tx, &user, &peer, before, limit))
    }

    fn advance_cursor(&self, user: &str, msg_id: u64) {
        {
            let mut pending = lock(&self.cursors.advances);
            let slot = pending.entry(user.to_string()).or_insert(0);
            *slot = (*slot).max(msg_id);
        }
        if self.cursors.flush_due.swap(true, Ordering::AcqRel) {
            return; // a flush is already on its way, and takes this advance too
        }
        let tx = self.tx.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                tokio::time::sleep(CURSOR_DELAY).await;
                let _ = tx.send(Command::FlushCursors).await;
            })),
            // No runtime to wait on: flush with the next batch, which this starts. If the
            // queue is full, the next caller tries again.
            Err(_) => {
                if tx.try_send(Command::FlushCursors).is_err() {
                    self.cursors.flush_due.store(false, Ordering::Release);
                }
            }
        }
    }

    fn create_session(
        &self,
        token_hash: String,
        user: String,
        expires_ms: i64,
    ) -> StoreFuture<'_, ()> {
        self.job(true, move |tx, _| {
            create_session(tx, &token_hash, &user, expires_ms)
        })
    }

    fn session(&self, token_hash: String) -> StoreFuture<'_, Option<SessionRecord>> {
        self.job(false, move |tx, _| session(tx, &token_hash))
    }

    fn delete_session(&self, token_hash: String) -> StoreFuture<'_, ()> {
        self.job(true, move |tx, _| {
            tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
            Ok(())
        })
    }

    fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        let (reply, rx) = oneshot::channel();
        Box::pin(async move {
            if self.tx.send(Command::Close { reply }).await.is_err() {
                return Ok(()); // already closed
            }
            rx.await.unwrap_or(Ok(()))
        })
    }
}

fn open_connection(path: &str) -> Result<(Connection, MsgIds), String> {
    let mut conn = if path == MEMORY_DB {
        Connection::open_in_memory()
    } else {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }
    .map_err(|e| e.to_string())?;
    // WAL lets CLI tools read while the server writes; FULL makes each commit survive power loss.
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // 16 MiB of page cache (SQLite's default is 2 MiB): the indexes of a busy log
        // stay in memory instead of being read back page by page.
        conn.pragma_update(None, "cache_size", -16_384)?;
        // Checkpoints every 4,000 pages (16 MiB of log) instead of SQLite's 1,000: the
        // index pages a busy log keeps touching are copied back once per checkpoint,
        // so fewer checkpoints copy less in all (W1 in docs/BENCHMARKS.md).
        conn.pragma_update(None, "wal_autocheckpoint", 4_000)?;
        Ok(())
    };
    setup().map_err(|e| e.to_string())?;
    schema::migrate(&mut conn)?;
    let ids = MsgIds::load(&conn).map_err(|e| format!("the message id counter: {e}"))?;
    Ok((conn, ids))
}

/// A command's result, held until the transaction commits.
enum Done {
    Job(Answer),
    Appended(Reply<Appended>, Result<Outcome, StoreError>),
}

/// What `append` found.
enum Outcome {
    /// Inserted: route it after the commit.
    New {
        message: ChatMessage,
        track_receipt: bool,
    },
    /// A repeated nonce: the first message, and the receipt saved for it, if any yet.
    Repeat {
        first: ChatMessage,
        saved: Option<i64>,
    },
}

/// Receipts of messages with a nonce, so a repeat gets the first one's answer.
/// Kept in memory until the next transaction saves them in `messages.receipt`.
#[derive(Default)]
struct Receipts {
    /// msg_id → (is a direct message, what routing did).
    unsaved: HashMap<u64, (bool, Routed)>,
}

impl Receipts {
    fn encode(direct: bool, routed: Routed) -> i64 {
        if direct {
            i64::from(routed.delivered)
        } else {
            i64::try_from(routed.recipients).unwrap_or(i64::MAX)
        }
    }

    fn decode(first: &ChatMessage, saved: Option<i64>) -> Routed {
        let saved = saved.unwrap_or(0);
        match first.to {
            Some(_) => Routed {
                delivered: saved == 1,
                recipients: 0,
            },
            None => Routed {
                delivered: false,
                recipients: u64::try_from(saved).unwrap_or(0),
            },
        }
    }
}

/// `msg_id`s, handed out here rather than by SQLite's AUTOINCREMENT, which reads and
/// writes `sqlite_sequence` for every insert (about a tenth of W1's store thread). The
/// `counters` row, written once per transaction that appended, keeps an id from ever
/// being handed out twice, even after the newest messages are deleted with their user.
struct MsgIds {
    /// The highest id handed out.
    last: u64,
    /// The highest id the `counters` row holds, as far as this thread knows.
    saved: u64,
}

impl MsgIds {
    fn load(conn: &Connection) -> rusqlite::Result<MsgIds> {
        let counter: i64 = conn.query_row(
            "SELECT value FROM counters WHERE name = 'msg_id'",
            [],
            |r| r.get(0),
        )?;
        // A row above the counter (written by an older build, say) still counts.
        let last = u64::try_from(counter)
            .unwrap_or(0)
            .max(newest_msg_id(conn)?);
        Ok(MsgIds { last, saved: last })
    }

    /// Moves past every id already in the log.
    fn catch_up(&mut self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        self.last = self.last.max(newest_msg_id(tx)?);
        Ok(())
    }

    /// The id the next inserted message gets.
    fn next(&self) -> u64 {
        self.last + 1
    }

    /// `id` went into the log.
    fn taken(&mut self, id: u64) {
        self.last = id;
    }

    /// Writes the counter into `tx`, if it moved. Ids of a transaction that then fails
    /// are not handed out again: a gap, never a repeat.
    fn save(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        if self.last != self.saved {
            tx.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'msg_id'")?
                .execute([to_sql_id(self.last)])?;
        }
        Ok(())
    }

    /// The transaction that saved the counter committed.
    fn committed(&mut self) {
        self.saved = self.last;
    }
}

/// The highest `msg_id` in the log (0 when it is empty).
fn newest_msg_id(conn: &Connection) -> rusqlite::Result<u64> {
    let newest: i64 = conn.query_row("SELECT COALESCE(MAX(msg_id), 0) FROM messages", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(newest).unwrap_or(0))
}

/// The cursor advances the store thread holds until a transaction writes them.
struct Cursors {
    pending: Arc<PendingCursors>,
    /// Taken from `pending`, not yet committed; reads of a cursor see these too.
    unsaved: HashMap<String, u64>,
}

impl Cursors {
    /// Takes what callers handed over since the last batch.
    fn collect(&mut self, flushing: bool) {
        if flushing {
            // Cleared before the take: an advance after it schedules a flush of its own.
            self.pending.flush_due.store(false, Ordering::Release);
        }
        for (user, id) in std::mem::take(&mut *lock(&self.pending.advances)) {
            let slot = self.unsaved.entry(user).or_insert(0);
            *slot = (*slot).max(id);
        }
    }

    /// `user`'s cursor: the stored one, or a higher one not yet written.
    fn current(&self, user: &str, stored: u64) -> u64 {
        self.unsaved.get(user).map_or(stored, |&id| id.max(stored))
    }
}

/// What the store's thread reports about itself to the handles.
struct Health {
    /// Transactions run (tests read it to see batching).
    transactions: Arc<AtomicU64>,
    /// Whether the last write transaction committed.
    writable: Arc<AtomicBool>,
}

fn run(
    mut conn: Connection,
    mut ids: MsgIds,
    mut rx: mpsc::Receiver<Command>,
    sink: Arc<dyn CommitSink>,
    pending: Arc<PendingCursors>,
    health: &Health,
) {
    let mut close_reply = None;
    let mut batch = Vec::with_capacity(64);
    let mut receipts = Receipts::default();
    let mut cursors = Cursors {
        pending,
        unsaved: HashMap::new(),
    };
    while close_reply.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        close_reply = run_batch(
            &mut conn,
            &mut batch,
            sink.as_ref(),
            &mut cursors,
            &mut receipts,
            &mut ids,
            &health.writable,
        );
        health.transactions.fetch_add(1, Ordering::Relaxed);
    }
    // Flush what the last batch did not see, then close the file before saying so.
    let mut last = vec![Command::FlushCursors];
    run_batch(
        &mut conn,
        &mut last,
        sink.as_ref(),
        &mut cursors,
        &mut receipts,
        &mut ids,
        &health.writable,
    );
    drop(conn);
    if let Some(reply) = close_reply {
        let _ = reply.send(Ok(()));
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

/// Runs `batch` in one transaction; returns the reply of a `Close` found in it.
/// A write transaction's outcome is recorded in `writable`.
fn run_batch(
    conn: &mut Connection,
    batch: &mut Vec<Command>,
    sink: &dyn CommitSink,
    cursors: &mut Cursors,
    receipts: &mut Receipts,
    ids: &mut MsgIds,
    writable: &AtomicBool,
) -> Option<Reply<()>> {
    let started = std::time::Instant::now();
    // Cursors ride on a transaction that writes anyway, or on the flush sent for them
    // (or a close); a batch of reads alone stays a read, with no fsync.
    let writes = batch.iter().any(Command::writes);
    let appends = batch
        .iter()
        .filter(|c| matches!(c, Command::Append { .. }))
        .count();
    cursors.collect(writes);
    let saving_cursors = writes && !cursors.unsaved.is_empty();
    let mut done = Vec::with_capacity(batch.len());
    let mut close = None;
    // A batch of reads needs no write lock: a deferred transaction takes none (in WAL
    // mode, no file lock at all), where IMMEDIATE would lock and unlock for nothing.
    let behavior = if writes || !receipts.unsaved.is_empty() {
        TransactionBehavior::Immediate
    } else {
        TransactionBehavior::Deferred
    };
    let tx = match conn.transaction_with_behavior(behavior) {
        Ok(tx) => tx,
        Err(e) => {
            let reason = e.to_string();
            if writes {
                writable.store(false, Ordering::Relaxed);
            }
            for command in batch.drain(..) {
                fail(command, &reason, &mut close);
            }
            return close;
        }
    };
    // Recipients seen in this transaction: one lookup per recipient, not per message.
    // Only this thread writes users, and a delete in the batch clears it (a create
    // cannot make a known recipient unknown).
    let mut known = HashSet::new();
    let mut cursor_result = Ok(());
    if saving_cursors {
        for (user, id) in &cursors.unsaved {
            if let Err(e) = tx
                .prepare_cached(
                    "UPDATE users SET delivered_id = MAX(delivered_id, ?2) WHERE name = ?1",
                )
                .and_then(|mut update| update.execute(params![user, to_sql_id(*id)]))
            {
                cursor_result = Err(e);
            }
        }
    }
    // Receipts routed by earlier batches; the repeat lookups below read them back.
    let saving: Vec<(u64, i64)> = receipts
        .unsaved
        .iter()
        .map(|(id, (direct, routed))| (*id, Receipts::encode(*direct, *routed)))
        .collect();
    for (msg_id, code) in &saving {
        if let Err(e) = tx.execute(
            "UPDATE messages SET receipt = ?2 WHERE msg_id = ?1",
            params![to_sql_id(*msg_id), code],
        ) {
            tracing::warn!("receipt of message {msg_id} not saved: {e}");
        }
    }
    for command in batch.drain(..) {
        if close.is_some() {
            // Commands after Close are refused; their callers see StoreError::Closed.
            drop(command);
            continue;
        }
        done.push(match command {
            Command::Job(job) => {
                let mut batch = Batch {
                    known: &mut known,
                    cursors,
                };
                Done::Job(job.run(&tx, &mut batch))
            }
            Command::Append { message, reply } => {
                Done::Appended(reply, append(&tx, message, &mut known, ids))
            }
            Command::FlushCursors => continue,
            Command::Close { reply } => {
                close = Some(reply);
                continue;
            }
        });
    }
    if let Err(e) = &cursor_result {
        tracing::warn!("delivery cursors not saved: {e}");
    }
    if let Err(e) = ids.save(&tx).and_then(|()| tx.commit()) {
        let reason = format!("commit failed: {e}");
        tracing::error!("{reason}");
        if writes {
            writable.store(false, Ordering::Relaxed);
        }
        for d in done {
            d.fail(&reason);
        }
        return close;
    }
    for (msg_id, _) in &saving {
        receipts.unsaved.remove(msg_id);
    }
    if saving_cursors && cursor_result.is_ok() {
        cursors.unsaved.clear();
    }
    ids.committed();
    if writes {
        writable.store(true, Ordering::Relaxed);
    }
    let took = started.elapsed();
    for d in done {
        d.answer(sink, receipts);
    }
    if writes {
        sink.batch_committed(appends, took);
    }
    close
}

fn fail(command: Command, reason: &str, close: &mut Option<Reply<()>>) {
    match command {
        Command::Job(job) => job.fail(reason),
        Command::Append { reply, .. } => {
            drop(reply.send(Err(StoreError::Transaction(reason.into()))))
        }
        Command::FlushCursors => {}
        Command::Close { reply } => *close = Some(reply),
    }
}

impl Done {
    fn answer(self, sink: &dyn CommitSink, receipts: &mut Receipts) {
        // A caller that went away (its connection closed) simply drops the answer.
        match self {
            Done::Job(answer) => answer(Ok(())),
            Done::Appended(r, v) => {
                let v = v.map(|outcome| match outcome {
                    Outcome::New {
                        message,
                        track_receipt,
                    } => {
                        let message = Arc::new(message);
                        let routed = sink.committed(&message);
                        if track_receipt {
                            let direct = message.to.is_some();
                            receipts.unsaved.insert(message.msg_id, (direct, routed));
                        }
                        Appended {
                            message,
                            routed,
                            duplicate: false,
                        }
                    }
                    Outcome::Repeat { first, saved } => {
                        let routed = match receipts.unsaved.get(&first.msg_id) {
                            Some((_, r)) => *r,
                            None => Receipts::decode(&first, saved),
                        };
                        Appended {
                            message: Arc::new(first),
                            routed,
                            duplicate: true,
                        }
                    }
                });
                drop(r.send(v));
            }
        }
    }

    fn fail(self, reason: &str) {
        match self {
            Done::Job(answer) => answer(Err(reason.into())),
            Done::Appended(r, _) => drop(r.send(Err(StoreError::Transaction(reason.into())))),
        }
    }
}

/// Unix epoch milliseconds, the unit of `ts` and of session expiry.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `msg_id`s are positive SQLite rowids; a caller's bound past `i64::MAX` means "no bound".
fn to_sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn create_user(tx: &rusqlite::Transaction<'_>, name: String, hash: &str) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT INTO users (name, pw_hash, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        params![name, hash, now_ms()],
    )?;
    if inserted == 0 {
        return Err(StoreError::UserExists(name));
    }
    Ok(())
}

fn password_hash(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT pw_hash FROM users WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn create_session(
    tx: &rusqlite::Transaction<'_>,
    token_hash: &str,
    user: &str,
    expires_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM sessions WHERE expires_ms <= ?1")?
        .execute([now_ms()])?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO sessions (token_hash, user, expires_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![token_hash, user, expires_ms])?;
    Ok(())
}

fn session(
    tx: &rusqlite::Transaction<'_>,
    token_hash: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT user, expires_ms FROM sessions WHERE token_hash = ?1")?
        .query_row([token_hash], |r| {
            Ok(SessionRecord {
                user: r.get(0)?,
                expires_ms: r.get(1)?,
            })
        })
        .optional()?)
}

fn delete_user(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<bool, StoreError> {
    let n = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
    if n > 0 {
        tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        tx.execute(
            "DELETE FROM messages WHERE recipient IS NOT NULL AND (recipient = ?1 OR sender = ?1)",
            [name],
        )?;
    }
    Ok(n > 0)
}

fn list_users(tx: &rusqlite::Transaction<'_>) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT name FROM users ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

fn append(
    tx: &rusqlite::Transaction<'_>,
    m: NewMessage,
    known: &mut HashSet<String>,
    ids: &mut MsgIds,
) -> Result<Outcome, StoreError> {
    let ts = now_ms();
    if let Some(nonce) = &m.nonce {
        let window = i64::try_from(m.nonce_window.as_millis()).unwrap_or(i64::MAX);
        let first = tx
            .prepare_cached(
                "SELECT msg_id, sender, recipient, text, ts, receipt FROM messages
                 WHERE sender = ?1 AND nonce = ?2 AND ts >= ?3
                 ORDER BY msg_id LIMIT 1",
            )?
            .query_row(params![m.from, nonce, ts.saturating_sub(window)], |r| {
                Ok((row_to_message(r)?, r.get::<_, Option<i64>>(5)?))
            })
            .optional()?;
        if let Some((first, saved)) = first {
            return Ok(Outcome::Repeat { first, saved });
        }
    }
    if let Some(to) = m.to.as_ref().filter(|to| !known.contains(*to)) {
        let exists = tx
            .prepare_cached("SELECT 1 FROM users WHERE name = ?1")?
            .query_row([to], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Err(StoreError::NoSuchUser(to.clone()));
        }
        known.insert(to.clone());
    }
    let insert = |msg_id: u64| {
        tx.prepare_cached(
            "INSERT INTO messages (msg_id, sender, recipient, text, ts, nonce)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            to_sql_id(msg_id),
            m.from,
            m.to,
            m.text,
            ts,
            m.nonce
        ])
    };
    let mut msg_id = ids.next();
    if let Err(e) = insert(msg_id) {
        // The id is taken: something else wrote to the log (another process on this
        // file). Catch up with the log rather than fail every append from now on.
        if e.sqlite_error_code() != Some(rusqlite::ErrorCode::ConstraintViolation) {
            return Err(e.into());
        }
        ids.catch_up(tx)?;
        msg_id = ids.next();
        insert(msg_id)?;
    }
    ids.taken(msg_id);
    let track_receipt = m.nonce.is_some();
    Ok(Outcome::New {
        message: ChatMessage {
            msg_id,
            from: m.from,
            to: m.to,
            text: m.text,
            ts,
        },
        track_receipt,
    })
}

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    Ok(ChatMessage {
        msg_id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        from: r.get(1)?,
        to: r.get(2)?,
        text: r.get(3)?,
        ts: r.get(4)?,
    })
}

fn undelivered(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    after: Option<u64>,
    limit: u32,
    cursors: &Cursors,
) -> Result<Vec<ChatMessage>, StoreError> {
    let after = match after {
        Some(a) => to_sql_id(a),
        None => {
            let stored: i64 = tx
                .prepare_cached("SELECT delivered_id FROM users WHERE name = ?1")?
                .query_row([user], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            to_sql_id(cursors.current(user, u64::try_from(stored).unwrap_or(0)))
        }
    };
    let mut stmt = tx.prepare_cached(
        "SELECT msg_id, sender, recipient, text, ts FROM messages
         WHERE recipient = ?1 AND msg_id > ?2 ORDER BY msg_id LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![user, after, limit], row_to_message)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn history(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    peer: &Peer,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<ChatMessage>, StoreError> {
    let before = before.map_or(i64::MAX, to_sql_id);
    let mut rows: Vec<ChatMessage> = match peer {
        Peer::User(other) => tx
            .prepare_cached(
                "SELECT msg_id, sender, recipient, text, ts FROM messages
                 WHERE ((recipient = ?1 AND sender = ?2) OR (recipient = ?2 AND sender = ?1))
                   AND msg_id < ?3
                 ORDER BY msg_id DESC LIMIT ?4",
            )?
            .query_map(params![user, other, before, limit], row_to_message)?
            .collect::<Result<_, _>>()?,
        Peer::Broadcasts => tx
            .prepare_cached(
                "SELECT msg_id, sender, recipient, text, ts FROM messages
                 WHERE recipient IS NULL AND msg_id < ?1
                 ORDER BY msg_id DESC LIMIT ?2",
            )?
            .query_map(params![before, limit], row_to_message)?
            .collect::<Result<_, _>>()?,
    };
    rows.reverse();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{dm, with_nonce, Maker};
    use crate::store::NoRouting;

    /// SQLite on a file in the contract's folder.
    struct OnFile;

    impl Maker for OnFile {
        fn open(&self, dir: &std::path::Path, sink: Arc<dyn CommitSink>) -> Arc<dyn Store> {
            let path = dir.join("moechat.db");
            Arc::new(SqliteStore::open(path.to_str().unwrap(), sink).unwrap())
        }
    }

    mod contract {
        use super::OnFile;
        crate::store::contract::store_contract!(OnFile);
    }

    /// A store on the file `name` in `dir`, for tests that reopen it or read it beside.
    fn file_store(dir: &tempfile::TempDir, name: &str) -> (std::path::PathBuf, SqliteStore) {
        let path = dir.path().join(name);
        (path.clone(), open_file(&path))
    }

    fn open_file(path: &std::path::Path) -> SqliteStore {
        SqliteStore::open(path.to_str().unwrap(), Arc::new(NoRouting)).unwrap()
    }

    /// The cursor column as another connection reads it (WAL lets it while the store runs).
    fn stored_cursor(path: &std::path::Path, user: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT delivered_id FROM users WHERE name = ?1",
                [user],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn a_cursor_waits_for_a_write_or_its_flush_but_reads_see_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (path, s) = file_store(&dir, "c.db");
        s.create_user("a".into(), "h".into()).await.unwrap();
        s.create_user("b".into(), "h".into()).await.unwrap();
        let first = s.append(dm("a", "b", "1")).await.unwrap().message.msg_id;
        let second = s.append(dm("a", "b", "2")).await.unwrap().message.msg_id;
        s.advance_cursor("b", first);
        // Read at once: the cursor holds, though no transaction has written it yet.
        let rest = s.undelivered("b".into(), None, 10).await.unwrap();
        assert_eq!(rest.iter().map(|m| m.msg_id).collect::<Vec<_>>(), [second]);
        // Then the flush writes it on its own, with nothing else to commit.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stored_cursor(&path, "b") != to_sql_id(first) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cursor was never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // A write commits the cursors waiting with it.
        s.advance_cursor("b", second);
        s.create_user("c".into(), "h".into()).await.unwrap();
        assert_eq!(stored_cursor(&path, "b"), to_sql_id(second));
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_id_taken_behind_the_store_s_back_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (path, s) = file_store(&dir, "other.db");
        s.create_user("a".into(), "h".into()).await.unwrap();
        let first = s.append(dm("a", "a", "one")).await.unwrap().message.msg_id;
        // Another process writes the next id into the same file.
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO messages (msg_id, sender, recipient, text, ts) VALUES (?1, 'a', 'a', 'x', 0)",
                [to_sql_id(first + 1)],
            )
            .unwrap();
        let next = s.append(dm("a", "a", "two")).await.unwrap().message.msg_id;
        assert_eq!(next, first + 2);
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn the_counter_migration_keeps_every_message_and_id_above_the_old_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            // A version-3 database whose newest messages were deleted, so its
            // AUTOINCREMENT sequence is above every id left.
            let mut c = Connection::open(&path).unwrap();
            schema::at_version(&mut c, 3);
            c.execute_batch(
                "INSERT INTO users (name, pw_hash, created_ms) VALUES ('a', 'h', 0), ('b', 'h', 0);
                 INSERT INTO messages (sender, recipient, text, ts, nonce) VALUES
                     ('a', 'b', 'one', CAST(strftime('%s', 'now') AS INTEGER) * 1000, 'n1'),
                     ('b', 'a', 'two', 2, NULL),
                     ('a', NULL, 'all', 3, NULL), ('a', 'b', 'gone', 4, NULL);
                 DELETE FROM messages WHERE text = 'gone';",
            )
            .unwrap();
        }
        let s = open_file(&path);
        let inbox = s.undelivered("b".into(), None, 10).await.unwrap();
        assert_eq!(
            inbox
                .iter()
                .map(|m| (m.msg_id, m.text.as_str()))
                .collect::<Vec<_>>(),
            [(1, "one")]
        );
        let pair = s
            .history("a".into(), Peer::User("b".into()), None, 10)
            .await
            .unwrap();
        assert_eq!(pair.iter().map(|m| m.msg_id).collect::<Vec<_>>(), [1, 2]);
        let repeat = s
            .append(with_nonce(dm("a", "b", "one"), "n1"))
            .await
            .unwrap();
        assert!(repeat.duplicate && repeat.message.msg_id == 1);
        assert_eq!(
            s.append(dm("a", "b", "new")).await.unwrap().message.msg_id,
            5
        );
        s.close().await.unwrap();
        let c = Connection::open(&path).unwrap();
        let autoincrement: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages' AND sql LIKE '%AUTOINCREMENT%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(autoincrement, 0);
        let indexes: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'
                 AND name IN ('messages_inbox', 'messages_pair', 'messages_nonce')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let s = Arc::new(open_file(&path));
        s.create_user("a".into(), "h".into()).await.unwrap();
        s.create_user("b".into(), "h".into()).await.unwrap();
        let before = s.transactions();
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.append(dm("a", "b", &i.to_string())).await.unwrap() })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().message.msg_id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 400, "every append got its own msg_id");
        let used = s.transactions() - before;
        eprintln!("400 appends in {used} transactions");
        // One fsync-ed commit takes long enough for the others to queue behind it.
        assert!(
            used < 100,
            "400 concurrent appends took {used} transactions"
        );
    }
}
