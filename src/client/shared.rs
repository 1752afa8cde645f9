//! What the application's handles and the connection task share. Everything about
//! the connection (the socket, requests waiting for answers, the session, what was
//! acknowledged) belongs to the task alone (`handler`); the handles only take
//! request ids, report what the application has finished with, and read why the
//! client ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ClientError;

/// See the module doc.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The next request id.
    next_id: AtomicU64,
    /// Highest direct `msg_id` handed to the application.
    pub(super) taken: AtomicU64,
    /// Highest direct `msg_id` the application has finished with: what the task
    /// acknowledges to the server.
    pub(super) done: AtomicU64,
    /// Set when `done` moved since the task last wrote an ack; the task clears it
    /// before reading `done`, so at most one wake-up per ack it writes.
    pub(super) ack_wanted: AtomicBool,
    /// Wakes the task for an ack.
    pub(super) nudge: Notify,
    /// Why the client ended (or will: "logged out" is known before the close); set
    /// once, by the first reason.
    closed: OnceLock<ClientError>,
    /// Set by the task when it has ended.
    ended: AtomicBool,
    /// Cancelled to stop the task: [`Client::close`](super::Client::close), or every
    /// handle dropped.
    pub(super) stop: CancellationToken,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            next_id: AtomicU64::new(1),
            ..Shared::default()
        }
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Everything taken so far is handled: have the task acknowledge it (see
    /// [`Incoming::recv`](super::Incoming::recv)).
    pub(super) fn ack_taken(&self) {
        let taken = self.taken.load(Ordering::Acquire);
        if taken <= self.done.fetch_max(taken, Ordering::SeqCst) {
            return;
        }
        // SeqCst with the task's clear-then-read: either it sees the new `done`, or
        // this sees the flag cleared and wakes it again.
        if !self.ack_wanted.swap(true, Ordering::SeqCst) {
            self.nudge.notify_one();
        }
    }

    /// Records why the client ended, unless a reason is already there.
    pub(super) fn set_close_reason(&self, err: ClientError) {
        let _ = self.closed.set(err);
    }

    /// Called by the task as it ends, with the reason if none was recorded before.
    pub(super) fn end(&self, err: ClientError) {
        self.set_close_reason(err);
        self.ended.store(true, Ordering::Release);
    }

    /// Whether the client has ended.
    pub(super) fn is_closed(&self) -> bool {
        self.ended.load(Ordering::Acquire) || self.stop.is_cancelled()
    }

    /// Why the client ended (or a plain "closed" before it is known).
    pub(super) fn closed_error(&self) -> ClientError {
        self.closed.get().cloned().unwrap_or(ClientError::Closed {
            code: None,
            reason: "the connection is closed".into(),
        })
    }
}
