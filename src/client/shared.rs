//! The state the handle, the connection tasks and reconnection share: the link in
//! use, requests waiting for answers, the session to resume and the ack counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dial::Dialer;
use super::reader::Pushed;
use super::reconnect::reconnect;
use super::writer::ACK_DUE;
use super::{ClientError, ClientOptions, ConnectionEvent};
use crate::protocol::code::Code;
use crate::protocol::envelope::Envelope;
use crate::sync::lock;

/// A request waiting for its answer; `frame` is kept to send it again after a resume.
pub(super) struct Waiter {
    pub(super) tx: oneshot::Sender<Envelope>,
    pub(super) frame: Bytes,
    pub(super) resend: bool,
}

pub(super) type Pending = HashMap<u64, Waiter>;

/// The connection in use: where frames go, and which connection it is.
pub(super) struct Link {
    pub(super) out: mpsc::Sender<Bytes>,
    pub(super) generation: u64,
}

pub(super) struct Shared {
    pub(super) options: ClientOptions,
    pub(super) dialer: Dialer,
    pub(super) link: Mutex<Link>,
    /// `link`'s generation, readable without its lock (the ack fast path).
    pub(super) link_generation: AtomicU64,
    /// `None` once the client has ended, so no request can wait forever.
    pub(super) pending: Mutex<Option<Pending>>,
    pub(super) next_id: AtomicU64,
    pub(super) generations: AtomicU64,
    pub(super) close_reason: Mutex<Option<ClientError>>,
    pub(super) stop: CancellationToken,
    /// Where pushes go; taken when the client ends so `Incoming` sees the end.
    pub(super) incoming: Mutex<Option<mpsc::Sender<Pushed>>>,
    /// `(user, token)` of the session to resume, once logged in with reconnect on.
    pub(super) session: Mutex<Option<(String, String)>>,
    pub(super) logged_out: AtomicBool,
    /// Highest direct `msg_id` handed to the application: redeliveries at or below it are dropped.
    pub(super) last_direct: AtomicU64,
    /// Highest direct `msg_id` handed out by `recv`, not yet known to be handled.
    pub(super) taken: AtomicU64,
    /// Highest direct `msg_id` acknowledged to the server.
    pub(super) acked: AtomicU64,
    /// The generation of the connection whose writer has an [`ACK_DUE`] marker still
    /// queued (0: none): further acks only raise `acked`. Per connection, so a marker
    /// stranded in a dead connection's queue holds back no other's acks.
    pub(super) ack_queued: AtomicU64,
}

impl Shared {
    pub(super) fn pending(&self) -> MutexGuard<'_, Option<Pending>> {
        lock(&self.pending)
    }

    pub(super) fn out(&self) -> mpsc::Sender<Bytes> {
        lock(&self.link).out.clone()
    }

    /// Acknowledges what the application has finished with (see [`Incoming::recv`]).
    pub(super) fn ack_taken(&self) {
        let taken = self.taken.load(Ordering::Acquire);
        // Raised before the marker is looked at, while a writer clears the marker
        // before it reads `acked`: one of the two sees the other's write, so no ack
        // falls between them (which takes SeqCst on both sides).
        if taken <= self.acked.fetch_max(taken, Ordering::SeqCst) {
            return;
        }
        // Per message on a busy receiver: a marker already waiting on the current
        // connection will carry this ack too, no lock needed.
        let queued = self.ack_queued.load(Ordering::SeqCst);
        if queued != 0 && queued == self.link_generation.load(Ordering::Acquire) {
            return;
        }
        let (out, generation) = {
            let link = lock(&self.link);
            (link.out.clone(), link.generation)
        };
        if self.ack_queued.swap(generation, Ordering::SeqCst) == generation {
            return;
        }
        if out.try_send(ACK_DUE).is_err() {
            // A lost ack only means a redelivery, which is dropped by msg_id; the
            // next one may try again.
            let _ = self.ack_queued.compare_exchange(
                generation,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Ends the client for good: waiting requests fail, `Incoming` ends.
    pub(super) fn finish(&self, err: ClientError) {
        self.set_close_reason(err);
        self.pending().take();
        lock(&self.incoming).take();
        self.stop.cancel();
    }

    /// Called when connection `generation` ended; reconnects or ends the client.
    pub(super) fn connection_lost(self: &Arc<Self>, generation: u64, err: ClientError) {
        if lock(&self.link).generation != generation {
            return; // a connection that was never put in use, or already replaced
        }
        let final_code = matches!(
            err.named_code(),
            Some(Code::TakenOver | Code::TooManyAttempts | Code::FrameTooLong)
        );
        let resumable = self.options.reconnect
            && !self.stop.is_cancelled()
            && !final_code
            && !self.logged_out.load(Ordering::Acquire)
            && lock(&self.session).is_some();
        if resumable {
            self.options
                .emit(ConnectionEvent::Disconnected(err.clone()));
            tokio::spawn(reconnect(self.clone(), err));
        } else {
            self.finish(err);
        }
    }

    pub(super) fn closed_error(&self) -> ClientError {
        lock(&self.close_reason)
            .clone()
            .unwrap_or(ClientError::Closed {
                code: None,
                reason: "the connection is closed".into(),
            })
    }

    pub(super) fn set_close_reason(&self, err: ClientError) {
        let mut reason = lock(&self.close_reason);
        if reason.is_none() {
            *reason = Some(err);
        }
    }
}
