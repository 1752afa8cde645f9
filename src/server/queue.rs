//! A connection's inbox as a data structure: a bounded FIFO that the hub fills
//! (from the store's thread) and the connection drains, with no waking of its
//! own; [`Conn`](super::hub::Conn) pairs it with the one `Notify` its
//! connection waits on.
//!
//! It allocates nothing until something is queued and gives its buffer back once
//! drained, so an idle connection's inbox costs a few words. (A tokio `mpsc`
//! channel allocates its first block of 32 slots when it is created.)

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::sync::lock;

struct State<T> {
    items: VecDeque<T>,
    /// The consumer has gone: offers fail from now on.
    closed: bool,
}

/// A FIFO holding at most `capacity` items.
pub(crate) struct Bounded<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The consumer has gone.
    Gone,
    /// The queue is full.
    Full,
}

impl<T> Bounded<T> {
    /// An empty queue for at most `capacity` items (at least one).
    pub(crate) fn new(capacity: usize) -> Bounded<T> {
        Bounded {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the queue whole, so a poisoned lock is still usable.
        lock(&self.state)
    }

    /// Queues `item` if there is room and the consumer is still there.
    pub(crate) fn try_send(&self, item: T) -> Result<(), SendError> {
        let mut state = self.lock();
        if state.closed {
            return Err(SendError::Gone);
        }
        if state.items.len() >= self.capacity {
            return Err(SendError::Full);
        }
        state.items.push_back(item);
        Ok(())
    }

    /// The oldest item, if any.
    pub(crate) fn try_recv(&self) -> Option<T> {
        let mut state = self.lock();
        let item = state.items.pop_front()?;
        if state.items.is_empty() {
            // An idle connection keeps no buffer.
            state.items = VecDeque::new();
        }
        Some(item)
    }

    /// The consumer leaves: what is queued is dropped and further sends fail.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.items = VecDeque::new();
    }
}

impl<T> std::fmt::Debug for Bounded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("len", &self.lock().items.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_within_its_capacity() {
        let q = Bounded::new(3);
        for i in 0..3 {
            assert_eq!(q.try_send(i), Ok(()));
        }
        assert_eq!(q.try_send(3), Err(SendError::Full));
        assert_eq!(q.try_recv(), Some(0));
        assert_eq!(q.try_send(3), Ok(()));
        assert_eq!(
            std::iter::from_fn(|| q.try_recv()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(q.try_recv(), None);
    }

    #[test]
    fn a_closed_queue_refuses_and_holds_nothing() {
        let q = Bounded::new(2);
        q.try_send("a").unwrap();
        q.close();
        assert_eq!(q.try_send("b"), Err(SendError::Gone));
        assert_eq!(q.try_recv(), None);
    }

    #[test]
    fn a_zero_capacity_still_holds_one() {
        let q = Bounded::new(0);
        assert_eq!(q.try_send(1), Ok(()));
        assert_eq!(q.try_send(2), Err(SendError::Full));
    }
}
