//! Failed logins per email and per client IP: after `max_failures` within the
//! window, further attempts get 429 with `Retry-After` before any password is
//! checked. Stricter than the general rate limit, and a success clears the
//! email's count.
//!
//! Hand-written (a sliding window of failure times) because a token bucket
//! (governor) cannot be reset for one key on success. Per process: with many
//! replicas each keeps its own count (the shared Redis limiter is a later step).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use platform::ApiError;

/// Above this many tracked keys, expired ones are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `keys` and, when none is spent, counts this attempt as a failure
    /// of each at once (one step under the lock, so concurrent attempts cannot
    /// all pass); returns its time, for [`Self::release`] when it succeeds.
    ///
    /// # Errors
    /// `RateLimited` with the wait, when a key has no attempt left.
    pub fn reserve(&self, keys: &[&str]) -> Result<Instant, ApiError> {
        let mut failures = self.failures.lock().expect("throttle lock");
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = failures.get_mut(*key) {
                self.forget_expired(times, now);
                if times.len() >= self.max_failures
                    && let Some(oldest) = times.front()
                {
                    wait = wait.max(self.window.saturating_sub(now - *oldest));
                }
            }
        }
        if !wait.is_zero() {
            return Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        self.push(&mut failures, keys, now);
        Ok(now)
    }

    /// Takes back the attempt reserved at `at` (it did not fail).
    pub fn release(&self, keys: &[&str], at: Instant) {
        let mut failures = self.failures.lock().expect("throttle lock");
        for key in keys {
            if let Some(times) = failures.get_mut(*key)
                && let Some(position) = times.iter().rposition(|t| *t == at)
            {
                times.remove(position);
            }
        }
    }

    fn push(&self, failures: &mut HashMap<String, VecDeque<Instant>>, keys: &[&str], now: Instant) {
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, times| times.back().is_some_and(|last| now - *last < self.window));
        }
        for key in keys {
            let times = failures.entry((*key).to_owned()).or_default();
            self.forget_expired(times, now);
            times.push_back(now);
            // Only the last `max_failures` matter for the verdict.
            while times.len() > self.max_failures {
                times.pop_front();
            }
        }
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("throttle lock").remove(key);
    }

    fn forget_expired(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_per_key_and_a_reset_clears_only_its_key() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(900));
        for _ in 0..3 {
            throttle.reserve(&["email:a", "ip:1"]).unwrap();
        }
        match throttle.reserve(&["email:a", "ip:2"]) {
            Err(ApiError::RateLimited { retry_after_secs }) => {
                assert!(
                    (899..=900).contains(&retry_after_secs),
                    "{retry_after_secs}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The IP is also spent, for any email.
        assert!(throttle.reserve(&["email:b", "ip:1"]).is_err());
        throttle.reserve(&["email:b", "ip:2"]).unwrap();
        throttle.reset("email:a");
        throttle.reserve(&["email:a", "ip:3"]).unwrap();
        assert!(throttle.reserve(&["email:a", "ip:1"]).is_err());
    }

    #[test]
    fn a_reservation_counts_until_released_so_concurrent_attempts_cannot_all_pass() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(900));
        let first = throttle.reserve(&["email:a"]).unwrap();
        let _second = throttle.reserve(&["email:a"]).unwrap();
        assert!(
            throttle.reserve(&["email:a"]).is_err(),
            "two in flight use the limit"
        );
        throttle.release(&["email:a"], first);
        throttle.reserve(&["email:a"]).unwrap();
    }

    #[test]
    fn failures_leave_the_window() {
        let throttle = LoginThrottle::new(1, Duration::from_millis(0));
        throttle.reserve(&["k"]).unwrap();
        throttle.reserve(&["k"]).unwrap();
    }
}
