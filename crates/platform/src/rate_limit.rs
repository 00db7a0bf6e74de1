//! Rate limits: a token bucket (GCRA) per client IP, burst twice the rate as in
//! the original; a stricter one per IP on the login and token endpoints; and,
//! for authenticated requests, one per token subject (charged by the [`Caller`]
//! extractor once the token verified).
//!
//! In-process by default (`governor`). With `REDIS_URL` the buckets live in Redis
//! and every replica shares them ([`shared`]); when Redis cannot answer, the
//! in-process buckets decide (or, with `<P>_RATE_LIMIT_FAIL_CLOSED=true`, the
//! request is refused with 503) until it is back.
//!
//! The middleware is ours rather than `tower_governor`'s because it must answer in
//! our envelope, count rejections in our metrics, exempt health and metrics, and
//! believe `X-Forwarded-For` only from configured proxies.
//!
//! [`Caller`]: crate::auth::Caller

mod middleware;
mod settings;
pub mod shared;

pub use middleware::{SubjectCharged, SubjectLimit, enforce};
pub use settings::LimitSettings;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::NotUntil;
use governor::clock::{Clock, QuantaInstant};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::Metrics;
use shared::{SharedLimiter, Verdict};
/// The values of `{service}_rate_limit_decisions_total{decision}`.
pub const DECISIONS: [&str; 5] = [
    "redis_allowed",
    "redis_limited",
    "local_allowed",
    "local_limited",
    "unavailable",
];

/// Which limit a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Ip,
    Auth,
    Subject,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Auth => "auth",
            Self::Subject => "subject",
        }
    }
}

/// One keyed in-process limiter at `rate` per second, burst twice that.
fn keyed<K: std::hash::Hash + Eq + Clone>(rate: NonZeroU32) -> DefaultKeyedRateLimiter<K> {
    let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
    DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

/// The limiter of one service.
pub struct RateLimiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    auth: Option<(NonZeroU32, DefaultKeyedRateLimiter<IpAddr>)>,
    subjects: Option<(NonZeroU32, DefaultKeyedRateLimiter<String>)>,
    rate: NonZeroU32,
    shared: Option<Arc<SharedLimiter>>,
    fail_closed: bool,
    trusted_proxies: Vec<IpNet>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// `None` when `per_second` is 0, which turns limiting off.
    pub fn new(
        per_second: u32,
        trusted_proxies: Vec<IpNet>,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        Self::with_limits(
            per_second,
            &LimitSettings::default(),
            trusted_proxies,
            metrics,
        )
    }

    /// The limiter with the per-subject and login limits, over Redis when
    /// `limits` names it; `None` when `per_second` is 0.
    pub fn with_limits(
        per_second: u32,
        limits: &LimitSettings,
        trusted_proxies: Vec<IpNet>,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let shared = limits.redis_url.as_deref().and_then(|url| {
            SharedLimiter::new(url, limits.redis_prefix.clone(), &metrics)
                .map_err(|e| tracing::error!(error = %e, "REDIS_URL cannot be used; limiting in-process"))
                .ok()
        });
        Some(Self {
            buckets: keyed(rate),
            auth: NonZeroU32::new(limits.auth).map(|r| (r, keyed(r))),
            subjects: NonZeroU32::new(limits.per_subject).map(|r| (r, keyed(r))),
            rate,
            shared,
            fail_closed: limits.fail_closed,
            trusted_proxies,
            metrics,
        })
    }

    /// The address to limit (see [`client_ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Takes a token for `client` from its in-process bucket, or says how many
    /// seconds until one is free.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        self.buckets
            .check_key(&client.to_canonical())
            .map_err(|not_until| self.refusal(&not_until))
    }

    /// Takes a token from `bucket` for `key` (an IP, or a subject): in Redis when
    /// configured and up, in-process otherwise. Counts the decision, and a refusal
    /// in `{service}_rate_limited_total`.
    ///
    /// # Errors
    /// 429 with `Retry-After` when the bucket is empty; 503 when Redis is away and
    /// the limiter fails closed.
    pub async fn admit(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        let Some(rate) = self.rate_of(bucket) else {
            return Ok(());
        };
        let (decision, verdict) = match self.shared_verdict(bucket, key, rate).await {
            Some(verdict) => verdict,
            None => {
                let verdict = self.check_local(bucket, key);
                (
                    if verdict.is_ok() {
                        "local_allowed"
                    } else {
                        "local_limited"
                    },
                    verdict,
                )
            }
        };
        self.metrics
            .rate_limit_decisions
            .with_label_values(&[decision])
            .inc();
        if matches!(verdict, Err(ApiError::RateLimited { .. })) {
            self.metrics.rate_limited.inc();
        }
        verdict
    }

    /// Redis's verdict, or `None` when the in-process buckets must decide.
    async fn shared_verdict(
        &self,
        bucket: Bucket,
        key: &str,
        rate: NonZeroU32,
    ) -> Option<(&'static str, Result<(), ApiError>)> {
        let shared = self.shared.as_ref()?;
        let redis_key = format!("{}:{key}", bucket.name());
        match shared
            .check(&redis_key, rate.get(), rate.get().saturating_mul(2))
            .await
        {
            Verdict::Allowed => Some(("redis_allowed", Ok(()))),
            Verdict::Limited { retry_after } => {
                Some(("redis_limited", Err(rate_limited(retry_after))))
            }
            Verdict::Unavailable if self.fail_closed => Some((
                "unavailable",
                Err(ApiError::ServiceUnavailable(
                    "rate limiter unavailable, retry later".to_owned(),
                )),
            )),
            Verdict::Unavailable => None,
        }
    }

    fn rate_of(&self, bucket: Bucket) -> Option<NonZeroU32> {
        match bucket {
            Bucket::Ip => Some(self.rate),
            Bucket::Auth => self.auth.as_ref().map(|(rate, _)| *rate),
            Bucket::Subject => self.subjects.as_ref().map(|(rate, _)| *rate),
        }
    }

    fn check_local(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        let verdict = match (bucket, key.parse::<IpAddr>()) {
            (Bucket::Ip, Ok(ip)) => self.buckets.check_key(&ip.to_canonical()),
            (Bucket::Auth, Ok(ip)) => match &self.auth {
                Some((_, limiter)) => limiter.check_key(&ip.to_canonical()),
                None => Ok(()),
            },
            (Bucket::Subject, _) => match &self.subjects {
                Some((_, limiter)) => limiter.check_key(&key.to_owned()),
                None => Ok(()),
            },
            (_, Err(_)) => Ok(()),
        };
        verdict.map_err(|not_until| self.refusal(&not_until))
    }

    /// A 429 that says when the bucket has a token again, by the buckets' own
    /// clock. Not `DefaultClock::default()`: quanta's `Clock::new` runs CPUID to
    /// check for a usable TSC, and under a hypervisor every CPUID is a VM exit
    /// (taken on every request, it cost a GET nearly a third of its throughput here).
    fn refusal(&self, not_until: &NotUntil<QuantaInstant>) -> ApiError {
        rate_limited(not_until.wait_time_from(self.buckets.clock().now()))
    }

    /// Whether the shared limiter is configured and answering.
    pub fn shared_up(&self) -> Option<bool> {
        self.shared.as_ref().map(|shared| shared.is_up())
    }

    /// Forgets clients whose bucket has refilled, keeping memory bounded.
    pub fn evict_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
        if let Some((_, auth)) = &self.auth {
            auth.retain_recent();
            auth.shrink_to_fit();
        }
        if let Some((_, subjects)) = &self.subjects {
            subjects.retain_recent();
            subjects.shrink_to_fit();
        }
        self.report_tracked_clients();
    }

    /// Sets the `rate_limiter_clients` gauge to the number of buckets held now.
    fn report_tracked_clients(&self) {
        self.metrics
            .rate_limiter_clients
            .set(self.tracked_clients() as i64);
    }

    pub fn tracked_clients(&self) -> usize {
        self.buckets.len()
    }

    /// Runs [`Self::evict_idle`] every `interval` until `shutdown`.
    pub fn spawn_eviction(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = ticker.tick() => limiter.evict_idle(),
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }
}

/// 429 with the wait rounded up to whole seconds, at least one.
fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}
/// The client's address: the socket peer, unless the peer is a trusted proxy,
/// in which case the rightmost `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries further left are client-controlled and can be forged).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| {
        let ip = ip.to_canonical();
        trusted_proxies.iter().any(|net| net.contains(&ip))
    };
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => {}
            Ok(ip) => return ip,
            // A garbled hop means the chain cannot be believed past this point.
            Err(_) => return peer,
        }
    }
    peer
}
#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, trusted: &[&str]) -> RateLimiter {
        RateLimiter::new(
            per_second,
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
            Arc::new(Metrics::new("test")),
        )
        .unwrap()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn zero_rate_disables_limiting() {
        assert!(RateLimiter::new(0, vec![], Arc::new(Metrics::new("t"))).is_none());
    }

    #[test]
    fn burst_is_twice_the_rate_then_retry_after_is_at_least_one_second() {
        let limiter = limiter(1, &[]);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(limiter.check(ip).is_ok());
        assert!(limiter.check(ip).is_ok());
        match limiter.check(ip) {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let limiter = limiter(1, &[]);
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(limiter.client_ip(peer, &xff("1.2.3.4")), peer);
    }

    #[test]
    fn trusted_proxy_yields_rightmost_untrusted_hop() {
        let limiter = limiter(1, &["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        // The client forged "6.6.6.6"; the proxy appended the address it saw.
        let chosen = limiter.client_ip(peer, &xff("6.6.6.6, 203.0.113.9, 10.0.0.2"));
        assert_eq!(chosen, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(limiter.client_ip(peer, &xff("garbage")), peer);
        assert_eq!(limiter.client_ip(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn idle_clients_are_evicted() {
        let limiter = limiter(1000, &[]);
        for i in 0..50u8 {
            limiter.check(IpAddr::from([192, 0, 2, i])).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), 50);
        std::thread::sleep(Duration::from_millis(10));
        limiter.evict_idle();
        assert_eq!(limiter.tracked_clients(), 0);
    }

    fn limits(
        per_subject: u32,
        auth: u32,
        redis_url: Option<String>,
        fail_closed: bool,
    ) -> RateLimiter {
        let settings = LimitSettings {
            per_subject,
            auth,
            redis_url,
            redis_prefix: "test:".to_owned(),
            fail_closed,
        };
        RateLimiter::with_limits(100, &settings, vec![], Arc::new(Metrics::new("t"))).unwrap()
    }

    #[tokio::test]
    async fn each_subject_and_the_login_endpoints_have_buckets_of_their_own() {
        let limiter = limits(1, 1, None, false);
        for bucket in [Bucket::Subject, Bucket::Auth] {
            let key = "203.0.113.7";
            assert!(limiter.admit(bucket, key).await.is_ok());
            assert!(limiter.admit(bucket, key).await.is_ok());
            let refused = limiter.admit(bucket, key).await.unwrap_err();
            assert_eq!(refused.code(), "RATE_LIMIT_EXCEEDED", "{bucket:?}");
            assert!(limiter.admit(bucket, "203.0.113.8").await.is_ok());
        }
        // The per-IP bucket (100/s) is untouched by both.
        assert!(limiter.admit(Bucket::Ip, "203.0.113.7").await.is_ok());
    }

    #[tokio::test]
    async fn without_redis_the_limiter_falls_back_in_process_or_fails_closed() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", closed.local_addr().unwrap());
        drop(closed);
        let open = limits(0, 0, Some(url.clone()), false);
        assert!(open.admit(Bucket::Ip, "203.0.113.7").await.is_ok());
        assert_eq!(open.shared_up(), Some(false));
        let shut = limits(0, 0, Some(url), true);
        let refused = shut.admit(Bucket::Ip, "203.0.113.7").await.unwrap_err();
        assert_eq!(
            refused.status_code(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
