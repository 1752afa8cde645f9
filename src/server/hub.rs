//! The hub: who is online, session takeover, and fan-out of committed messages.
//!
//! The hub never sees a socket. Each logged-in connection registers a [`Conn`]:
//! a bounded inbox of pre-encoded push frames and a way to close it with a
//! code. The store calls [`CommitSink::committed`] in `msg_id` order once a
//! message is durable; the hub queues the frame with `try_send`, so one slow
//! or dead client can never delay anyone else. A full inbox is the
//! slow-consumer rule (`e`/67): the connection is closed, and the direct
//! message that did not fit stays in the store above the recipient's cursor,
//! exactly as for an offline user. A broadcast is encoded once and the same
//! bytes are queued to every recipient.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::queue::{Bounded, SendError};
use crate::metrics::{Accepted, Metrics};
use crate::protocol::code::Code;
use crate::protocol::reply::ChatMessage;
use crate::store::{CommitSink, Routed};
use crate::sync::lock;

/// A push waiting in a connection's inbox.
#[derive(Debug)]
pub struct Push {
    message: Arc<ChatMessage>,
    /// The encoded frame, made by the first connection that writes it (so not on the
    /// store's thread, which routes every message) and shared by every recipient of
    /// a broadcast.
    frame: OnceLock<Bytes>,
}

impl Push {
    /// A push of `message`, not encoded yet.
    pub fn new(message: Arc<ChatMessage>) -> Push {
        Push {
            message,
            frame: OnceLock::new(),
        }
    }

    /// The message's id, for the delivery cursor and de-duplication.
    pub fn msg_id(&self) -> u64 {
        self.message.msg_id
    }

    /// Direct messages advance the recipient's cursor; broadcasts do not.
    pub fn direct(&self) -> bool {
        self.message.to.is_some()
    }

    /// The frame, newline included.
    pub fn frame(&self) -> &Bytes {
        self.frame.get_or_init(|| self.message.encode_push())
    }
}

/// The hub's view of one connection.
///
/// The connection waits on one [`Conn::signalled`] future for both of the things the
/// hub and the rest of the server can tell it, a push and a close, and looks at
/// which it was afterwards: one waiter, and no separate cancellation token.
#[derive(Debug)]
pub struct Conn {
    /// Unique for the life of the server; tells a connection from its successor.
    pub id: u64,
    inbox: Bounded<Arc<Push>>,
    /// Notified after every push and on a close. Its stored permit means a signal
    /// sent before the connection waits is not lost.
    signal: Notify,
    closed: AtomicBool,
    /// The code to say goodbye with; 0 until the first close wins.
    reason: AtomicU8,
    /// Highest direct `msg_id` written to this connection's socket: acks are
    /// honoured only up to it (a client cannot acknowledge what it was never sent).
    pushed: AtomicU64,
}

impl Conn {
    /// A connection handle whose inbox holds at most `capacity` pushes.
    pub fn new(id: u64, capacity: usize) -> Conn {
        Conn {
            id,
            inbox: Bounded::new(capacity),
            signal: Notify::new(),
            closed: AtomicBool::new(false),
            reason: AtomicU8::new(0),
            pushed: AtomicU64::new(0),
        }
    }

    /// Queues a push for the connection, and wakes it.
    pub fn offer(&self, push: Arc<Push>) -> Result<(), SendError> {
        self.inbox.try_send(push)?;
        self.signal.notify_one();
        Ok(())
    }

    /// The oldest push waiting, if any (the connection's side).
    pub fn take(&self) -> Option<Arc<Push>> {
        self.inbox.try_recv()
    }

    /// The connection has ended: pushes are refused from now on.
    pub fn detach(&self) {
        self.inbox.close();
    }

    /// Asks the connection to close, saying `code`; the first reason given wins.
    pub fn close(&self, code: Code) {
        let _ = self
            .reason
            .compare_exchange(0, code.number(), Ordering::AcqRel, Ordering::Acquire);
        self.abort();
    }

    /// Records that direct messages up to `msg_id` were written to the socket.
    pub fn set_pushed(&self, msg_id: u64) {
        self.pushed.fetch_max(msg_id, Ordering::AcqRel);
    }

    /// Highest direct `msg_id` written to the socket so far.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Acquire)
    }

    /// Stops the connection without a goodbye frame (its peer is gone or stuck).
    pub fn abort(&self) {
        self.closed.store(true, Ordering::Release);
        self.signal.notify_one();
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<Code> {
        Code::from_number(self.reason.load(Ordering::Acquire)).filter(|c| c.number() != 0)
    }

    /// Completes after a push or a close since it last completed (at once if one
    /// came while nobody waited). Only the connection's own task waits on it.
    pub fn signalled(&self) -> Notified<'_> {
        self.signal.notified()
    }

    /// Whether [`Conn::close`] or [`Conn::abort`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Presence and routing, as the connection code sees them.
pub trait Hub: CommitSink {
    /// Marks `user` online on `conn`; a previous connection of the user is closed with `e`/64.
    fn register(&self, user: Arc<str>, conn: Arc<Conn>);
    /// Marks `user` offline, if `conn_id` is still its connection.
    fn unregister(&self, user: &str, conn_id: u64);
    /// Online users, sorted.
    fn online_users(&self) -> Vec<String>;
    /// How many users are online.
    fn online_count(&self) -> usize;
}

/// The in-process hub.
#[derive(Debug, Default)]
pub struct LocalHub {
    online: Mutex<HashMap<Arc<str>, Arc<Conn>>>,
    /// Where routing outcomes, slow consumers and commits are counted.
    metrics: Arc<Metrics>,
}

impl LocalHub {
    /// An empty hub, counting into metrics of its own.
    pub fn new() -> LocalHub {
        LocalHub::default()
    }

    /// An empty hub counting into `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> LocalHub {
        LocalHub {
            online: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Conn>>> {
        // The map stays consistent at every step, so a panic elsewhere cannot leave it torn.
        lock(&self.online)
    }

    /// Queues `push` to `conn`; a full inbox closes it as a slow consumer.
    fn offer(&self, user: &str, conn: &Conn, push: Arc<Push>) -> bool {
        match conn.offer(push) {
            Ok(()) => true,
            Err(SendError::Full) => {
                self.metrics.slow_consumer();
                conn.close(Code::SlowConsumer);
                self.unregister(user, conn.id);
                false
            }
            Err(SendError::Gone) => {
                self.unregister(user, conn.id);
                false
            }
        }
    }
}

impl Hub for LocalHub {
    fn register(&self, user: Arc<str>, conn: Arc<Conn>) {
        // The session's own name is the key: one copy of it per online user.
        let previous = self.lock().insert(user, conn);
        if let Some(old) = previous {
            old.close(Code::TakenOver);
        }
    }

    fn unregister(&self, user: &str, conn_id: u64) {
        let mut online = self.lock();
        if online.get(user).is_some_and(|c| c.id == conn_id) {
            online.remove(user);
        }
    }

    fn online_count(&self) -> usize {
        self.lock().len()
    }

    fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.lock().keys().map(|u| u.to_string()).collect();
        users.sort_unstable();
        users
    }
}

impl CommitSink for LocalHub {
    fn batch_committed(&self, messages: usize, took: std::time::Duration) {
        self.metrics.batch_committed(messages, took);
    }

    fn committed(&self, message: &Arc<ChatMessage>) -> Routed {
        // Made only once someone is there to get it (this runs on the store's thread,
        // for every message), and then once, shared by every recipient: an inbox slot
        // is a pointer, not a frame.
        let push = || Arc::new(Push::new(message.clone()));
        match &message.to {
            Some(to) => {
                let conn = self.lock().get(to.as_str()).cloned();
                let delivered = conn.is_some_and(|conn| self.offer(to, &conn, push()));
                self.metrics.accepted(if delivered {
                    Accepted::DirectDelivered
                } else {
                    Accepted::DirectStored
                });
                Routed {
                    delivered,
                    recipients: 0,
                }
            }
            None => {
                // Snapshot the recipients so the map is not locked while queueing.
                let targets: Vec<(Arc<str>, Arc<Conn>)> = self
                    .lock()
                    .iter()
                    .filter(|(user, _)| ***user != *message.from)
                    .map(|(user, conn)| (user.clone(), conn.clone()))
                    .collect();
                if targets.is_empty() {
                    self.metrics.accepted(Accepted::BroadcastStored);
                    return Routed::default();
                }
                let push = push();
                let recipients = targets
                    .iter()
                    .filter(|(user, conn)| self.offer(user, conn, push.clone()))
                    .count() as u64;
                self.metrics.accepted(if recipients > 0 {
                    Accepted::BroadcastDelivered
                } else {
                    Accepted::BroadcastStored
                });
                Routed {
                    delivered: false,
                    recipients,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u64, cap: usize) -> (Arc<Conn>, Arc<Conn>) {
        let conn = Arc::new(Conn::new(id, cap));
        (conn.clone(), conn)
    }

    fn msg(id: u64, from: &str, to: Option<&str>) -> Arc<ChatMessage> {
        Arc::new(ChatMessage {
            msg_id: id,
            from: from.into(),
            to: to.map(Into::into),
            text: "t".into(),
            ts: 0,
        })
    }

    #[test]
    fn takeover_closes_the_older_connection() {
        let hub = LocalHub::new();
        let (a1, _r1) = conn(1, 4);
        let (a2, _r2) = conn(2, 4);
        hub.register("a".into(), a1.clone());
        hub.register("a".into(), a2.clone());
        assert_eq!(a1.close_reason(), Some(Code::TakenOver));
        assert!(!a2.is_closed());
        hub.unregister("a", 1); // the old one leaving does not log out the new one
        assert_eq!(hub.online_users(), vec!["a"]);
    }

    #[test]
    fn direct_routing_and_slow_consumers() {
        let hub = LocalHub::new();
        let (b, rb) = conn(1, 1);
        assert!(!hub.committed(&msg(1, "a", Some("b"))).delivered);
        hub.register("b".into(), b.clone());
        assert!(hub.committed(&msg(2, "a", Some("b"))).delivered);
        assert!(!hub.committed(&msg(3, "a", Some("b"))).delivered);
        assert_eq!(b.close_reason(), Some(Code::SlowConsumer));
        assert!(hub.online_users().is_empty());
        assert_eq!(rb.take().unwrap().msg_id(), 2);
    }

    #[test]
    fn broadcast_shares_one_encoding_and_skips_the_sender() {
        let hub = LocalHub::new();
        let (a, ra) = conn(1, 4);
        let (b, rb) = conn(2, 4);
        let (c, rc) = conn(3, 4);
        hub.register("a".into(), a);
        hub.register("b".into(), b);
        hub.register("c".into(), c);
        assert_eq!(hub.committed(&msg(9, "a", None)).recipients, 2);
        assert!(ra.take().is_none());
        // One push, shared: the same allocation in both inboxes.
        let pb = rb.take().unwrap();
        let pc = rc.take().unwrap();
        assert!(Arc::ptr_eq(&pb, &pc));
        assert_eq!(pb.frame().as_ptr(), pc.frame().as_ptr());
    }
}
