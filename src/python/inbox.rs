//! `Inbox`: a client's pushed messages as the bindings hand them to Python, fetched
//! from the Rust client in batches.
//!
//! Crossing into Rust, releasing the GIL and waking the runtime costs more than a
//! message itself; a batch pays it once for everything that has arrived, and the
//! messages behind the first are handed out without leaving Python's thread. Each
//! counts as taken (and is acknowledged) only when Python really receives it, as
//! with a plain `recv`.

use std::collections::VecDeque;

use crate::client::{ClientError, Incoming, Pushed};

/// Messages fetched per trip to the runtime, at most.
const BATCH: usize = 256;

pub(super) struct Inbox {
    incoming: Incoming,
    ready: VecDeque<Pushed>,
}

impl Inbox {
    pub(super) fn new(incoming: Incoming) -> Inbox {
        Inbox {
            incoming,
            ready: VecDeque::with_capacity(BATCH),
        }
    }

    /// The next message already fetched, handed to the application; `None` if there is none.
    pub(super) fn pop(&mut self) -> Option<Pushed> {
        self.incoming.ack_taken();
        let m = self.ready.pop_front()?;
        self.incoming.took(&m);
        Some(m)
    }

    /// Waits until there is a message to pop (cancel-safe: a timeout loses nothing).
    pub(super) async fn fill(&mut self) -> Result<(), ClientError> {
        if self.ready.is_empty() {
            self.incoming.recv_batch(BATCH, &mut self.ready).await?;
        }
        Ok(())
    }
}
