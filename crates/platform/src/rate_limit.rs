//! Per-client-IP token bucket (GCRA via `governor`), burst twice the rate as in the original.
//!
//! The middleware is ours rather than `tower_governor`'s because it must answer in
//! our envelope, count rejections in our metrics, exempt health and metrics, and
//! believe `X-Forwarded-For` only from configured proxies.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// The limiter of one service.
pub struct RateLimiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
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
        let rate = NonZeroU32::new(per_second)?;
        let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
        Some(Self {
            buckets: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            trusted_proxies,
            metrics,
        })
    }

    /// The address to limit (see [`client_ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Takes a token for `client`, or says how many seconds until one is free.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        self.buckets
            .check_key(&client.to_canonical())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            })
    }

    /// Forgets clients whose bucket has refilled, keeping memory bounded.
    pub fn evict_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
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

/// Health probes and scrapes must work even while a client is being throttled.
fn is_exempt(path: &str) -> bool {
    path == "/metrics" || path == "/health" || path.starts_with("/health/")
}

/// Middleware: 429 RATE_LIMIT_EXCEEDED with `Retry-After` once a client's bucket is empty.
pub async fn enforce(
    State(limiter): State<Arc<RateLimiter>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if is_exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let client = limiter.client_ip(peer.ip(), request.headers());
    let verdict = limiter.check(client);
    // Reported on every request, not only at eviction: a flood of new client IPs
    // between two evictions is exactly the growth this gauge must show.
    limiter.report_tracked_clients();
    if let Err(rejection) = verdict {
        limiter.metrics.rate_limited.inc();
        return rejection.into_response();
    }
    next.run(request).await
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

    #[test]
    fn health_and_metrics_are_exempt() {
        assert!(is_exempt("/health"));
        assert!(is_exempt("/health/ready"));
        assert!(is_exempt("/metrics"));
        assert!(!is_exempt("/api/v1/users"));
        assert!(!is_exempt("/healthz"));
    }
}
