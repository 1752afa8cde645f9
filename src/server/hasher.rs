//! The password-hashing pool: argon2id work on a few dedicated threads, with a
//! bounded queue in front.
//!
//! One argon2id hash takes about 19 MiB and keeps a core busy for tens of
//! milliseconds. Run on tokio's blocking pool, a burst of logins starts hundreds at
//! once: gigabytes of memory that the allocator keeps, and fewer logins a second than
//! the cores could do one after another. Here at most `workers` hashes run at once,
//! each on a thread that lives as long as the pool (so its memory is reused, not
//! spread over hundreds of thread heaps). At most `queue` more wait for a slot, each
//! for at most `wait`; past either bound the caller gets [`Busy`] at once and the
//! client is told `r`/24 (try again), so a flood of logins cannot pile up work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::sync::lock;

/// The pool is full: no hashing slot within the wait, or no room to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too busy checking passwords; try again shortly")]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;

/// A bounded pool of hashing threads (see the module doc).
#[derive(Debug)]
pub struct Hasher {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    wait: Duration,
    jobs: SyncSender<Job>,
}

impl Hasher {
    /// `workers` threads, `queue` callers allowed to wait, each for at most `wait`.
    pub fn new(workers: usize, queue: usize, wait: Duration) -> std::io::Result<Hasher> {
        let workers = workers.max(1);
        // Each job in the channel holds a slot, so it never holds more than `workers`.
        let (jobs, rx) = sync_channel::<Job>(workers);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("moechat-hash-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Hasher {
            slots: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            queue,
            wait,
            jobs,
        })
    }

    /// Callers waiting for a slot right now (for the metrics and the burst tool).
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Runs `f` on a hashing thread once a slot is free; [`Busy`] if none frees up in
    /// time or too many wait already. Dropping the future while `f` runs lets `f`
    /// finish and discards its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = self.slot().await?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = f();
            // Freed before the answer: the next caller may start while this one wakes.
            drop(slot);
            let _ = tx.send(out);
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            // Full cannot happen (see `new`); Disconnected only if a worker died.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(Busy),
        }
        rx.await.map_err(|_| Busy)
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, Busy> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Busy),
        }
    }
}

/// Counts a caller out of the queue however its wait ends (a slot, a timeout, a drop).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a job, not while running it.
        let job = lock(jobs).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool was dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    #[tokio::test]
    async fn runs_at_most_workers_at_once() {
        let pool = Arc::new(Hasher::new(2, 100, Duration::from_secs(10)).unwrap());
        let running = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    7
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(7));
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_at_once_and_a_long_wait_is_busy_in_time() {
        let pool = Arc::new(Hasher::new(1, 1, Duration::from_millis(100)).unwrap());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let hold = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || release_rx.recv().is_ok()).await })
        };
        while pool.slots.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| ()).await })
        };
        while pool.queued() != 1 {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        assert_eq!(pool.run(|| ()).await, Err(Busy), "no room to wait");
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(waiter.await.unwrap(), Err(Busy), "no slot within the wait");
        assert_eq!(pool.queued(), 0);
        release_tx.send(()).unwrap();
        assert_eq!(hold.await.unwrap(), Ok(true));
        assert_eq!(pool.run(|| 1).await, Ok(1), "free again");
    }
}
