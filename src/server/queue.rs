//! The bounded queues into a connection's writer: answers from its reader (in
//! request order) and pushes from the hub (its inbox), at most `capacity` waiting.
//!
//! A tokio `mpsc` channel allocates its first block of 32 slots up front: 1.3 KB
//! for the answers and 0.3 KB for the inbox of every connection, whether or not it
//! ever sends a request or gets a push. These queues hold nothing until there is
//! something to hold, and give their memory back once drained. Each side wakes the
//! other through a `Notify`, whose stored permit means a wake-up that comes before
//! the wait is not lost, and each side re-checks the queue after waking.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<T>,
    /// The sender is gone: once drained, `recv` returns `None`.
    sender_gone: bool,
    /// The receiver (the writer) is gone: sends fail.
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Something was queued, or the sender left.
    readable: Notify,
    /// Something was taken, or the receiver left.
    writable: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the queue whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending end (the reader's, or the hub's through a connection handle).
pub struct Sender<T>(Arc<Shared<T>>);

/// The writer's end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The receiver has gone.
    Gone,
    /// `try_send` found the queue full.
    Full,
}

/// A queue holding at most `capacity` items.
pub fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
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
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full.
    pub async fn send(&self, item: T) -> Result<(), SendError> {
        let mut item = Some(item);
        loop {
            match self.push(&mut item) {
                Err(SendError::Full) => self.0.writable.notified().await,
                done => return done,
            }
        }
    }

    /// Queues `item` if there is room, without waiting.
    pub fn try_send(&self, item: T) -> Result<(), SendError> {
        self.push(&mut Some(item))
    }

    fn push(&self, item: &mut Option<T>) -> Result<(), SendError> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(SendError::Gone);
        }
        if state.items.len() >= self.0.capacity {
            return Err(SendError::Full);
        }
        if let Some(item) = item.take() {
            state.items.push_back(item);
        }
        drop(state);
        self.0.readable.notify_one();
        Ok(())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queue::Sender")
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.readable.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once the sender is gone and all are taken.
    /// Cancel-safe: an item is taken only by a call that returns it.
    pub async fn recv(&self) -> Option<T> {
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

    /// The next item if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        let mut state = self.0.lock();
        self.take(&mut state)
    }

    fn take(&self, state: &mut State<T>) -> Option<T> {
        let o = state.items.pop_front()?;
        if state.items.is_empty() {
            // An idle connection keeps no buffer.
            state.items = VecDeque::new();
        }
        self.0.writable.notify_one();
        Some(o)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.lock().receiver_gone = true;
        self.0.writable.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(n: u8) -> u8 {
        n
    }

    fn byte(o: Option<u8>) -> u8 {
        o.expect("an item")
    }

    #[test]
    fn try_send_reports_full_and_gone() {
        let (tx, rx) = queue(1);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Err(SendError::Full));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.try_send(3), Ok(()));
        drop(rx);
        assert_eq!(tx.try_send(4), Err(SendError::Gone));
    }

    #[tokio::test]
    async fn keeps_order_and_bounds_the_sender() {
        let (tx, rx) = queue::<u8>(2);
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
