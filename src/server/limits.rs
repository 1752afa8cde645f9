//! Rate limits: a per-connection token bucket for message frames (`e`/74 past it),
//! and a per-address cap on login attempts (`r`/22 past it).
//!
//! Both take the current instant as an argument, so they are tested without a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The window of the login cap.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before stale windows are swept out (bounds memory under a spray).
const SWEEP_AT: usize = 10_000;

/// At most `per_minute` login attempts per source address in each minute-long window.
#[derive(Debug)]
pub struct LoginLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    /// A cap of `per_minute` attempts; 0 means no cap.
    pub fn new(per_minute: u32) -> LoginLimiter {
        LoginLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `addr`; `Err(wait)` when the address is over its cap.
    pub fn attempt(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut windows = lock(&self.windows);
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now.saturating_duration_since(*start) < LOGIN_WINDOW);
        }
        let (start, count) = windows.entry(addr).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= LOGIN_WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            return Err(LOGIN_WINDOW.saturating_sub(now.saturating_duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    // f32: every connection carries one, and a rate needs no more precision.
    rate: f32,
    burst: f32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be positive; `burst` is at least 1.
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = burst.max(1) as f32;
        TokenBucket {
            rate: rate as f32,
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
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
    pub fn wait(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / f64::from(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_cap_per_address_and_window() {
        let t0 = Instant::now();
        let cap = LoginLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(cap.attempt(a, t0).is_ok() && cap.attempt(a, t0).is_ok());
        let wait = cap.attempt(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            cap.attempt(b, t0).is_ok(),
            "another address has its own cap"
        );
        assert!(cap.attempt(a, t0 + LOGIN_WINDOW).is_ok(), "a new window");
        let off = LoginLimiter::new(0);
        assert!((0..1000).all(|_| off.attempt(a, t0).is_ok()));
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
