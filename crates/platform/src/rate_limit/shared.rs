//! The rate limit shared by every replica, in Redis (`REDIS_URL`): one atomic
//! GCRA script per check, on the server's clock, so a client's allowance is the
//! same whichever replica it reaches. No Redis module is needed (managed Redis
//! works).
//!
//! When Redis cannot answer, the caller falls back to its in-process buckets
//! (or refuses, when failing closed): the switch is logged once each way and
//! shown by `{service}_rate_limiter_fallback`. While down, Redis is probed at
//! most once per [`PROBE_EVERY`] rather than on every request, so an outage adds
//! no latency; the first probe that succeeds brings the shared limit back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;

/// How long one check may take before Redis counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// How often Redis is tried again while it is down.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA: each request moves the bucket's "theoretical arrival time" (TAT) one
/// emission interval on; a request is refused when that would put the TAT more
/// than the burst ahead of now. KEYS[1] the bucket, ARGV[1] the emission interval
/// and ARGV[2] the burst, both in microseconds. Returns {allowed, retry_after_us}.
const GCRA: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now_us then tat = now_us end
local new_tat = tat + interval
local ahead = new_tat - now_us
if ahead > burst then
  return {0, ahead - burst}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(ahead / 1000) + 1)
return {1, 0}
";

/// What the shared limiter said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited {
        retry_after: Duration,
    },
    /// Redis cannot answer now: the caller decides (fall back or refuse).
    Unavailable,
}

/// The Redis side of one service's limiter.
pub struct SharedLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    up: AtomicBool,
    /// Milliseconds since `started` before which Redis is not tried again.
    next_probe_ms: AtomicU64,
    started: Instant,
    fallback: IntGauge,
}

impl SharedLimiter {
    /// A limiter over `url` that connects on first use; keys start with `prefix`.
    /// Reports in `{service}_rate_limiter_fallback` (1 while Redis is away).
    ///
    /// # Errors
    /// When `url` is not a Redis URL.
    pub fn new(url: &str, prefix: String, metrics: &Metrics) -> redis::RedisResult<Arc<Self>> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CHECK_TIMEOUT))
            .set_response_timeout(Some(CHECK_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(PROBE_EVERY);
        let connection =
            ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)?;
        Ok(Arc::new(Self {
            connection,
            script: redis::Script::new(GCRA),
            prefix,
            up: AtomicBool::new(true),
            next_probe_ms: AtomicU64::new(0),
            started: Instant::now(),
            fallback: metrics.rate_limiter_fallback.clone(),
        }))
    }

    /// Takes a token from the shared bucket `key` (`rate` per second, burst `burst`).
    pub async fn check(&self, key: &str, rate: u32, burst: u32) -> Verdict {
        if !self.up.load(Ordering::Acquire) && !self.probe_due() {
            return Verdict::Unavailable;
        }
        let interval_us = 1_000_000 / u64::from(rate.max(1));
        let burst_us = interval_us * u64::from(burst);
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(format!("{}{key}", self.prefix));
        invocation.arg(interval_us).arg(burst_us);
        let answer = tokio::time::timeout(
            CHECK_TIMEOUT,
            invocation.invoke_async::<(i64, i64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((allowed, retry_us))) => {
                self.mark_up();
                if allowed == 1 {
                    Verdict::Allowed
                } else {
                    let retry_us = u64::try_from(retry_us).unwrap_or(0);
                    Verdict::Limited {
                        retry_after: Duration::from_micros(retry_us),
                    }
                }
            }
            Ok(Err(err)) => self.mark_down(&err.to_string()),
            Err(_) => self.mark_down("no answer in time"),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether this request may try Redis while it is down (one per interval).
    fn probe_due(&self) -> bool {
        let now = self.elapsed_ms();
        let due = self.next_probe_ms.load(Ordering::Acquire);
        now >= due
            && self
                .next_probe_ms
                .compare_exchange(
                    due,
                    now + millis(PROBE_EVERY),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.fallback.set(0);
            tracing::info!("Redis is back: the shared rate limit applies again");
        }
    }

    fn mark_down(&self, reason: &str) -> Verdict {
        self.next_probe_ms
            .store(self.elapsed_ms() + millis(PROBE_EVERY), Ordering::Release);
        if self.up.swap(false, Ordering::AcqRel) {
            self.fallback.set(1);
            tracing::warn!(
                error = reason,
                "Redis unavailable: rate limiting falls back to this process"
            );
        }
        Verdict::Unavailable
    }

    fn elapsed_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
