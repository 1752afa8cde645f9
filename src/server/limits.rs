//! Rate limits: a per-connection token bucket for message frames (`e`/74 past it),
//! and caps on failed logins per source address and per account (`r`/22 past them).
//!
//! Only failures count against the login caps: a successful login and a session
//! resume never do, so the users behind one address (a NAT, a gateway) can all log
//! back in after a restart, while a guesser is stopped. Everything takes the current
//! instant as an argument, so it is tested without a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The window of the per-address cap.
pub(crate) const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// Keys tracked before the first sweep of stale windows.
const SWEEP_FLOOR: usize = 1_024;

/// Fixed-window counters of failures, one per key, with at most `cap` in each window.
///
/// Memory stays bounded under a spray of keys without a sweep on every call: stale
/// windows are swept when the map has doubled since the last sweep, so each sweep's
/// O(n) is paid for by the n/2 insertions before it, and the map never holds more
/// than twice the keys that failed within one window.
#[derive(Debug)]
pub struct FailureWindows<K> {
    cap: u32,
    window: Duration,
    inner: Mutex<Windows<K>>,
}

#[derive(Debug)]
struct Windows<K> {
    counts: HashMap<K, (Instant, u32)>,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> FailureWindows<K> {
    /// At most `cap` failures per key in each `window`; a cap of 0 means no cap.
    pub fn new(cap: u32, window: Duration) -> FailureWindows<K> {
        FailureWindows {
            cap,
            window,
            inner: Mutex::new(Windows {
                counts: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }

    /// `Err(wait)` while `key` has used up its failures in the current window.
    pub fn check<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.cap == 0 {
            return Ok(());
        }
        let inner = lock(&self.inner);
        match inner.counts.get(key) {
            Some(&(start, count)) if count >= self.cap => {
                let age = now.saturating_duration_since(start);
                if age >= self.window {
                    Ok(())
                } else {
                    Err(self.window - age)
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure for `key`.
    pub fn fail(&self, key: K, now: Instant) {
        if self.cap == 0 {
            return;
        }
        let mut inner = lock(&self.inner);
        if inner.counts.len() >= inner.sweep_at {
            let window = self.window;
            inner
                .counts
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            inner.sweep_at = (inner.counts.len() * 2).max(SWEEP_FLOOR);
        }
        let (start, count) = inner.counts.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
    }

    /// Forgets `key`'s failures (a successful password login).
    pub fn clear<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.cap != 0 {
            lock(&self.inner).counts.remove(key);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.inner).counts.len()
    }
}

/// The login caps a server keeps: failures per source address and per account.
#[derive(Debug)]
pub struct LoginLimits {
    /// Failed logins (any credential) per source address per [`ADDRESS_WINDOW`].
    pub addresses: FailureWindows<IpAddr>,
    /// Failed password logins per account name per `ACCOUNT_WINDOW`.
    pub accounts: FailureWindows<Box<str>>,
}

impl LoginLimits {
    /// `per_address` failures a minute per address, `per_account` per `account_window`.
    pub fn new(per_address: u32, per_account: u32, account_window: Duration) -> LoginLimits {
        LoginLimits {
            addresses: FailureWindows::new(per_address, ADDRESS_WINDOW),
            accounts: FailureWindows::new(per_account, account_window),
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    // f32: every connection carries one, and a rate needs no more precision.
    rate: f32,
    burst: f32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be positive; `burst` is at least 1.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = burst.max(1) as f32;
        TokenBucket {
            rate: rate as f32,
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * f64::from(self.rate)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token, for the error sentence.
    pub(crate) fn wait(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / f64::from(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_per_key_and_window() {
        let t0 = Instant::now();
        let cap = FailureWindows::new(2, ADDRESS_WINDOW);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(cap.check(&a, t0).is_ok());
        cap.fail(a, t0);
        assert!(cap.check(&a, t0).is_ok(), "one failure of two");
        cap.fail(a, t0);
        let wait = cap.check(&a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(cap.check(&b, t0).is_ok(), "another address has its own cap");
        assert!(cap.check(&a, t0 + ADDRESS_WINDOW).is_ok(), "a new window");
        cap.fail(a, t0 + ADDRESS_WINDOW);
        assert!(cap.check(&a, t0 + ADDRESS_WINDOW).is_ok(), "counting anew");
        cap.clear(&a);
        cap.fail(a, t0 + ADDRESS_WINDOW);
        assert!(cap.check(&a, t0 + ADDRESS_WINDOW).is_ok(), "cleared");
        let off = FailureWindows::new(0, ADDRESS_WINDOW);
        for _ in 0..1000 {
            off.fail(a, t0);
        }
        assert!(off.check(&a, t0).is_ok());
    }

    #[test]
    fn account_keys_borrow_as_str() {
        let t0 = Instant::now();
        let cap: FailureWindows<Box<str>> = FailureWindows::new(1, Duration::from_secs(900));
        cap.fail("alice".into(), t0);
        assert!(cap.check("alice", t0).is_err());
        assert!(cap.check("bob", t0).is_ok());
    }

    #[test]
    fn a_spray_of_keys_stays_bounded_and_sweeps_rarely() {
        let t0 = Instant::now();
        let cap = FailureWindows::new(5, ADDRESS_WINDOW);
        // One key a millisecond for ten minutes: ten windows' worth of keys.
        for i in 0..600_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            cap.fail(IpAddr::from(i.to_be_bytes()), now);
        }
        // A window holds 60,000 live keys; the map never holds more than twice that.
        assert!(cap.tracked() <= 120_000, "{}", cap.tracked());
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0), "burst spent");
        assert!(b.wait() > Duration::ZERO);
        assert!(!b.try_take(t0 + Duration::from_millis(50)), "half a token");
        assert!(b.try_take(t0 + Duration::from_millis(101)));
        // Idle time refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| b.try_take(later)).count();
        assert_eq!(taken, 3);
    }
}
