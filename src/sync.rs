//! Locking shared by the layers: a mutex whose holder panicked is still used.
//!
//! Every critical section in this crate leaves its data whole at each step (an
//! insert, a swap, a counter), so a panic elsewhere cannot leave it torn, and
//! refusing the lock forever after would turn one bug into an outage.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
