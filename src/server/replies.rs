//! The bounded queue from a connection's reader to its writer: answers in request
//! order, at most `capacity` waiting.
//!
//! A tokio `mpsc` channel allocates its first block of 32 slots up front, 1.3 KB
//! for every connection whether or not it ever sends a request; this queue holds
//! nothing until there is something to hold, and gives its memory back once it has
//! drained. Each side wakes the other through a `Notify`, whose stored permit means
//! a wake-up that comes before the wait is not lost, and each side re-checks the
//! queue after waking.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::session::Outbound;

struct State {
    items: VecDeque<Outbound>,
    /// The reader is gone: once drained, `recv` returns `None`.
    sender_gone: bool,
    /// The writer is gone: `send` fails.
    receiver_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Something was queued, or the sender left.
    readable: Notify,
    /// Something was taken, or the receiver left.
    writable: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the queue whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The reader's end.
pub struct ReplySender(Arc<Shared>);

/// The writer's end.
pub struct ReplyReceiver(Arc<Shared>);

/// The writer has gone; the answer was not queued.
#[derive(Debug)]
pub struct Gone;

/// A queue holding at most `capacity` answers.
pub fn queue(capacity: usize) -> (ReplySender, ReplyReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        capacity: capacity.max(1),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (ReplySender(shared.clone()), ReplyReceiver(shared))
}

impl ReplySender {
    /// Queues `o`, waiting while the queue is full.
    pub async fn send(&self, o: Outbound) -> Result<(), Gone> {
        let mut o = Some(o);
        loop {
            {
                let mut state = self.0.lock();
                if state.receiver_gone {
                    return Err(Gone);
                }
                if state.items.len() < self.0.capacity {
                    if let Some(o) = o.take() {
                        state.items.push_back(o);
                    }
                    drop(state);
                    self.0.readable.notify_one();
                    return Ok(());
                }
            }
            self.0.writable.notified().await;
        }
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.readable.notify_one();
    }
}

impl ReplyReceiver {
    /// The next answer, waiting for one; `None` once the sender is gone and all are taken.
    /// Cancel-safe: an answer is taken only by a call that returns it.
    pub async fn recv(&self) -> Option<Outbound> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some(o) = self.take(&mut state) {
                    return Some(o);
                }
                if state.sender_gone {
                    return None;
                }
            }
            self.0.readable.notified().await;
        }
    }

    /// The next answer if one is queued.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut state = self.0.lock();
        self.take(&mut state)
    }

    fn take(&self, state: &mut State) -> Option<Outbound> {
        let o = state.items.pop_front()?;
        if state.items.is_empty() {
            // An idle connection keeps no buffer.
            state.items = VecDeque::new();
        }
        self.0.writable.notify_one();
        Some(o)
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        self.0.lock().receiver_gone = true;
        self.0.writable.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n]))
    }

    fn byte(o: Option<Outbound>) -> u8 {
        match o {
            Some(Outbound::Frame(b)) => b[0],
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn keeps_order_and_bounds_the_sender() {
        let (tx, rx) = queue(2);
        tx.send(frame(1)).await.unwrap();
        tx.send(frame(2)).await.unwrap();
        // Full: the third waits until the receiver takes one.
        let third = tokio::spawn(async move {
            tx.send(frame(3)).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished());
        assert_eq!(byte(rx.recv().await), 1);
        let tx = third.await.unwrap();
        assert_eq!(byte(rx.try_recv()), 2);
        assert_eq!(byte(rx.recv().await), 3);
        assert!(rx.try_recv().is_none());
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing_and_a_gone_receiver_fails_sends() {
        let (tx, rx) = queue(4);
        // A recv cancelled while waiting takes nothing; the next one gets the answer.
        assert!(tokio::time::timeout(Duration::from_millis(10), rx.recv())
            .await
            .is_err());
        tx.send(frame(7)).await.unwrap();
        assert_eq!(byte(rx.recv().await), 7);
        drop(rx);
        assert!(tx.send(frame(8)).await.is_err());
    }

    #[tokio::test]
    async fn many_answers_through_a_small_queue_arrive_in_order() {
        let (tx, rx) = queue(3);
        let sender = tokio::spawn(async move {
            for i in 0..=255u8 {
                tx.send(frame(i)).await.unwrap();
            }
        });
        for i in 0..=255u8 {
            assert_eq!(byte(rx.recv().await), i);
        }
        sender.await.unwrap();
        assert!(rx.recv().await.is_none());
    }
}
