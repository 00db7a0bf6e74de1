//! The middleware that charges each request to its IP's buckets, and what it
//! leaves in the request for the subject's bucket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Bucket, RateLimiter};

/// What the [`Caller`](crate::auth::Caller) extractor charges a verified
/// subject to: put in the request by [`enforce`].
#[derive(Clone)]
pub struct SubjectLimit(pub Arc<RateLimiter>);

/// Marks a request whose subject was charged, so a second extraction does not charge it again.
#[derive(Clone, Copy)]
pub struct SubjectCharged;

/// Health probes and scrapes must work even while a client is being throttled.
fn is_exempt(path: &str) -> bool {
    path == "/metrics" || path == "/health" || path.starts_with("/health/")
}

/// Login and token issuing: a stricter bucket, against password and secret guessing.
fn is_auth(path: &str) -> bool {
    path == "/api/v1/auth/login" || path == "/api/v1/auth/token"
}

/// Middleware: 429 RATE_LIMIT_EXCEEDED with `Retry-After` once a client's bucket
/// is empty; leaves the subject's bucket to the `Caller` extractor.
pub async fn enforce(
    State(limiter): State<Arc<RateLimiter>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if is_exempt(path) {
        return next.run(request).await;
    }
    let auth = is_auth(path);
    let client = limiter
        .client_ip(peer.ip(), request.headers())
        .to_canonical()
        .to_string();
    let mut verdict = limiter.admit(Bucket::Ip, &client).await;
    if verdict.is_ok() && auth {
        verdict = limiter.admit(Bucket::Auth, &client).await;
    }
    // Reported on every request, not only at eviction: a flood of new client IPs
    // between two evictions is exactly the growth this gauge must show.
    limiter.report_tracked_clients();
    if let Err(rejection) = verdict {
        return rejection.into_response();
    }
    if limiter.subjects.is_some() {
        request
            .extensions_mut()
            .insert(SubjectLimit(Arc::clone(&limiter)));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_metrics_and_login_are_told_apart() {
        assert!(is_exempt("/health"));
        assert!(is_exempt("/health/ready"));
        assert!(is_exempt("/metrics"));
        assert!(!is_exempt("/api/v1/users"));
        assert!(!is_exempt("/healthz"));
        assert!(is_auth("/api/v1/auth/login") && is_auth("/api/v1/auth/token"));
        assert!(!is_auth("/api/v1/users"));
    }
}
