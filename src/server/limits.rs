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

/// Fixed-window counters of failures, one per key, with at most `cap` in each window;
/// and, for keys whose attempts are checked one by one ([`begin`](Self::begin)), how
/// many of their attempts are still in flight.
///
/// Memory stays bounded under a spray of keys without a sweep on every call: stale
/// windows are swept when the map has doubled since the last sweep, so each sweep's
/// O(n) is paid for by the n/2 insertions before it, and the map never holds more
/// than twice the keys that failed, or are being tried, within one window.
#[derive(Debug)]
pub struct FailureWindows<K> {
    cap: u32,
    window: Duration,
    inner: Mutex<Windows<K>>,
}

#[derive(Debug)]
struct Windows<K> {
    entries: HashMap<K, Entry>,
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the current window started.
    start: Instant,
    failures: u32,
    in_flight: u32,
}

/// Why [`FailureWindows::begin`] refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key used up its failures: wait this long (`r`/22).
    Capped(Duration),
    /// Only attempts still in flight fill the cap: try again shortly (`r`/24).
    Busy,
}

/// How an attempt begun with [`FailureWindows::begin`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A failure: it counts.
    Failed,
    /// A success: the key's failures are forgotten.
    Succeeded,
    /// Nothing was learned (busy, an internal error, the connection gone).
    Unknown,
}

impl<K: Hash + Eq + Clone> FailureWindows<K> {
    /// At most `cap` failures per key in each `window`; a cap of 0 means no cap.
    pub fn new(cap: u32, window: Duration) -> FailureWindows<K> {
        FailureWindows {
            cap,
            window,
            inner: Mutex::new(Windows {
                entries: HashMap::new(),
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
        match lock(&self.inner).entries.get(key) {
            Some(e) => self.capped(e, now).map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    /// Counts one failure for `key`.
    pub fn fail(&self, key: K, now: Instant) {
        if self.cap != 0 {
            let mut inner = lock(&self.inner);
            let e = self.entry(&mut inner, key, now);
            e.failures = e.failures.saturating_add(1);
        }
    }

    /// Begins an attempt for `key` whose outcome is not known yet. Refused when the key
    /// is capped, and `Busy` when the failures so far plus the attempts in flight
    /// already reach the cap: then at most `cap` verdicts are ever given in a window,
    /// however many attempts arrive at once, while a success never counts. The attempt
    /// ends with [`Attempt::finish`], or as [`Outcome::Unknown`] when dropped.
    pub fn begin(&self, key: K, now: Instant) -> Result<Attempt<'_, K>, Refused> {
        if self.cap != 0 {
            let mut inner = lock(&self.inner);
            if let Some(wait) = inner.entries.get(&key).and_then(|e| self.capped(e, now)) {
                return Err(Refused::Capped(wait));
            }
            let e = self.entry(&mut inner, key.clone(), now);
            if e.failures.saturating_add(e.in_flight) >= self.cap {
                return Err(Refused::Busy);
            }
            e.in_flight += 1;
        }
        Ok(Attempt {
            windows: self,
            key: Some(key),
        })
    }

    fn end(&self, key: &K, outcome: Outcome, now: Instant) {
        if self.cap == 0 {
            return;
        }
        let mut inner = lock(&self.inner);
        let Some(e) = inner.entries.get_mut(key) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Failed => {
                if now.saturating_duration_since(e.start) >= self.window {
                    e.start = now;
                    e.failures = 0;
                }
                e.failures = e.failures.saturating_add(1);
            }
            Outcome::Succeeded => e.failures = 0,
            Outcome::Unknown => {}
        }
    }

    /// How long `e` stays capped, if it is.
    fn capped(&self, e: &Entry, now: Instant) -> Option<Duration> {
        let age = now.saturating_duration_since(e.start);
        (e.failures >= self.cap && age < self.window).then(|| self.window - age)
    }

    /// `key`'s entry, in its current window, sweeping stale ones first when the map
    /// has doubled since the last sweep.
    fn entry<'a>(&self, inner: &'a mut Windows<K>, key: K, now: Instant) -> &'a mut Entry {
        if inner.entries.len() >= inner.sweep_at {
            let window = self.window;
            inner
                .entries
                .retain(|_, e| e.in_flight > 0 || now.saturating_duration_since(e.start) < window);
            inner.sweep_at = (inner.entries.len() * 2).max(SWEEP_FLOOR);
        }
        let e = inner.entries.entry(key).or_insert(Entry {
            start: now,
            failures: 0,
            in_flight: 0,
        });
        if now.saturating_duration_since(e.start) >= self.window {
            e.start = now;
            e.failures = 0;
        }
        e
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.inner).entries.len()
    }
}

/// An attempt begun with [`FailureWindows::begin`]; dropped unfinished (a connection
/// gone while its password was being checked), it ends as [`Outcome::Unknown`], so an
/// account is never left counting an attempt that will not come back.
#[derive(Debug)]
pub struct Attempt<'a, K: Hash + Eq + Clone> {
    windows: &'a FailureWindows<K>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Attempt<'_, K> {
    /// Ends the attempt with its outcome.
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(key) = self.key.take() {
            self.windows.end(&key, outcome, Instant::now());
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Attempt<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.windows.end(&key, Outcome::Unknown, Instant::now());
        }
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
        cap.fail(a, t0 + ADDRESS_WINDOW);
        assert!(
            cap.check(&a, t0 + ADDRESS_WINDOW).is_err(),
            "two in the new window"
        );
        let off = FailureWindows::new(0, ADDRESS_WINDOW);
        for _ in 0..1000 {
            off.fail(a, t0);
        }
        assert!(off.check(&a, t0).is_ok());
    }

    #[test]
    fn attempts_in_flight_fill_the_cap_with_busy_and_successes_never_count() {
        let t0 = Instant::now();
        let cap: FailureWindows<Box<str>> = FailureWindows::new(2, Duration::from_secs(900));
        let a1 = cap.begin("alice".into(), t0).unwrap();
        let a2 = cap.begin("alice".into(), t0).unwrap();
        assert_eq!(cap.begin("alice".into(), t0).unwrap_err(), Refused::Busy);
        assert!(cap.begin("bob".into(), t0).is_ok(), "another account");
        a1.finish(Outcome::Failed);
        drop(a2); // a connection gone mid-check: nothing learned
        let a3 = cap.begin("alice".into(), t0).unwrap();
        a3.finish(Outcome::Succeeded);
        assert!(
            cap.check("alice", t0).is_ok(),
            "the success forgot the failure"
        );
        for _ in 0..2 {
            cap.begin("alice".into(), t0)
                .unwrap()
                .finish(Outcome::Failed);
        }
        assert!(matches!(
            cap.begin("alice".into(), t0),
            Err(Refused::Capped(_))
        ));
        let off: FailureWindows<Box<str>> = FailureWindows::new(0, Duration::from_secs(900));
        let held: Vec<_> = (0..100)
            .map(|_| off.begin("x".into(), t0).unwrap())
            .collect();
        drop(held);
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
