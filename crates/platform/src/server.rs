//! The middleware stack, assembled in one place, and serving with graceful shutdown.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{from_fn_with_state, map_request, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::Listener;
use axum::{BoxError, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::body::MAX_BODY_BYTES;
use crate::config::HttpSettings;
use crate::db::Database;
use crate::error::ApiError;
use crate::health::{self, HealthInfo, HealthState};
use crate::metrics::{self, Metrics};
use crate::rate_limit::{self, RateLimiter};
use crate::telemetry;

/// The parts every service shares: settings, metrics, limiter and the shutdown signal.
#[derive(Clone)]
pub struct Platform {
    pub settings: HttpSettings,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<RateLimiter>>,
    pub shutdown: CancellationToken,
}

impl Platform {
    /// Metric names take the service name with `_` (`user-service` -> `user_service_…`).
    pub fn new(settings: HttpSettings, shutdown: CancellationToken) -> Self {
        let metrics = Arc::new(Metrics::new(&settings.service_name.replace('-', "_")));
        let limiter = RateLimiter::with_limits(
            settings.rate_limit_per_second,
            &settings.limits,
            settings.trusted_proxies.clone(),
            Arc::clone(&metrics),
        )
        .map(Arc::new);
        Self {
            settings,
            metrics,
            limiter,
            shutdown,
        }
    }

    /// The service's API routes plus health and metrics, wrapped in the middleware
    /// stack. Outermost first: request-id sanitising, request id, trace log (the request span),
    /// trace context answer, request-id echo, CORS,
    /// metrics, panic recovery, rate limit, timeout, body limit.
    ///
    /// The stack is one layer for the router: axum wraps every route in each layer
    /// given to `Router::layer` separately, boxed, and clones a route's whole service
    /// for each request, so twelve layers cost twelve boxed clones (and as many
    /// allocations and frees) per request where one layer costs one.
    pub fn app(&self, api: Router, db: Database, info: Option<HealthInfo>) -> Router {
        let health = HealthState {
            service: self.settings.service_name,
            db,
            shutdown: self.shutdown.clone(),
            info,
        };
        let rate_limit = self
            .limiter
            .as_ref()
            .map(|limiter| from_fn_with_state(Arc::clone(limiter), rate_limit::enforce));
        let stack = ServiceBuilder::new()
            .layer(map_request(drop_unusable_request_id))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(telemetry::request_span(self.settings.service_name))
                    .on_request(())
                    // ApiError already logs 5xx at the right level (a 503 is an outage
                    // to note, not a bug); the response line below carries the status.
                    .on_failure(())
                    .on_response(
                        DefaultOnResponse::new()
                            .level(tracing::Level::INFO)
                            .latency_unit(LatencyUnit::Micros),
                    ),
            )
            .layer(map_response(crate::otel::record_server_response))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(cors(&self.settings.cors_allowed_origins))
            .layer(from_fn_with_state(
                Arc::clone(&self.metrics),
                metrics::track,
            ))
            .layer(CatchPanicLayer::custom(panic_response))
            .option_layer(rate_limit)
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                ApiError::ServiceUnavailable("request timed out".to_owned())
            }))
            .timeout(self.settings.request_timeout)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        api.merge(health::router(health))
            .route(
                "/metrics",
                get(metrics::export).with_state(Arc::clone(&self.metrics)),
            )
            .fallback(|| async { ApiError::NotFound("route not found".to_owned()) })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(stack)
    }
}

/// Longest client-supplied request id we keep; a UUID is 36.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A client's `X-Request-ID` goes into every log line and is echoed back and
/// forwarded to other services, so only a short id of `[A-Za-z0-9._-]` is kept.
/// Anything else (huge, spaces, tabs, bytes outside ASCII, several headers) is
/// removed here, and `SetRequestIdLayer` then generates a fresh UUID.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    let usable = match (values.next(), values.next()) {
        (None, _) => return request,
        (Some(only), None) => is_usable_request_id(only.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !usable {
        headers.remove(X_REQUEST_ID);
    }
    request
}

fn is_usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let traceparent = HeaderName::from_static(crate::otel::propagation::TRACEPARENT);
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            X_REQUEST_ID,
            traceparent.clone(),
        ])
        .expose_headers([X_REQUEST_ID, header::RETRY_AFTER, traceparent])
}

/// A panicking handler answers 500 in the envelope; the panic text goes to the log only.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}

/// A bound listener with its app, ready to serve.
pub struct Server {
    listener: TcpListener,
    app: Router,
    platform: Platform,
}

impl Server {
    /// Binds `host:port` from the settings; port 0 picks a free port (tests).
    ///
    /// # Errors
    /// When the address cannot be bound (in use, no permission).
    pub async fn bind(platform: Platform, app: Router) -> std::io::Result<Self> {
        let address = SocketAddr::new(platform.settings.host, platform.settings.port);
        let listener = TcpListener::bind(address).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"))
        })?;
        Ok(Self {
            listener,
            app,
            platform,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until the platform's shutdown token is cancelled, then lets in-flight
    /// requests finish for up to the grace period.
    ///
    /// Served with hyper's HTTP/1 connection builder rather than `axum::serve`,
    /// which has no header read timeout: without one, a client that sends half a
    /// request line and then nothing holds its connection (and a file descriptor)
    /// forever. HTTP/1 only, because hyper-util's auto-detecting builder first waits
    /// for 24 bytes with no timeout at all, which would let the same client through.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            mut listener,
            app,
            platform,
        } = self;
        let settings = &platform.settings;
        let shutdown = platform.shutdown.clone();
        if let Some(limiter) = &platform.limiter {
            limiter.spawn_eviction(settings.rate_limit_eviction_interval, shutdown.clone());
        }
        tracing::info!(
            service = settings.service_name,
            address = %listener.local_addr()?,
            "listening"
        );
        let http = http1_builder(settings.header_read_timeout);
        let connections = GracefulShutdown::new();
        let stop_accepting = shutdown_delay(&shutdown, settings);
        tokio::pin!(stop_accepting);
        loop {
            // axum's `Listener::accept` retries transient accept errors (and backs
            // off when out of file descriptors), as `axum::serve` does.
            let (stream, peer) = tokio::select! {
                accepted = Listener::accept(&mut listener) => accepted,
                () = &mut stop_accepting => break,
            };
            let service = with_peer(app.clone(), peer, shutdown.clone());
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let connection = connections.watch(connection);
            tokio::spawn(async move {
                // Client disconnects and header timeouts end up here; under attack
                // they are frequent, so they are not worth more than a debug line.
                if let Err(err) = connection.await {
                    tracing::debug!(%peer, error = %err, "connection closed with an error");
                }
            });
        }
        // New connections are refused from here on; open ones finish their request.
        drop(listener);
        tokio::select! {
            () = connections.shutdown() => {},
            () = tokio::time::sleep(settings.shutdown_grace) => tracing::warn!(
                service = settings.service_name,
                "shutdown grace period elapsed with requests in flight; stopping anyway"
            ),
        }
        tracing::info!(service = settings.service_name, "server stopped");
        Ok(())
    }
}

/// Resolves `delay` after the shutdown signal. Readiness fails at the signal, and
/// until this resolves the server keeps accepting and serving (each answer with
/// `Connection: close`), so that load balancers stop sending before the listener
/// closes: a connection accepted or queued in the backlog after that would be
/// closed before its request is read.
async fn shutdown_delay(shutdown: &CancellationToken, settings: &HttpSettings) {
    shutdown.cancelled().await;
    if !settings.shutdown_delay.is_zero() {
        tracing::info!(
            service = settings.service_name,
            delay_ms = settings.shutdown_delay.as_millis() as u64,
            "draining: not ready, still serving new connections until the shutdown delay ends"
        );
        tokio::time::sleep(settings.shutdown_delay).await;
    }
}

/// HTTP/1 with a deadline for the request head. hyper starts the clock when it
/// begins reading a head, so idle keep-alive connections are closed after the same
/// time; on expiry hyper closes the connection without an answer.
fn http1_builder(header_read_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}

/// The app as a hyper service for one connection, with the peer address where
/// `ConnectInfo` (the rate limiter) looks for it. Once shutdown has begun, every
/// answer says `Connection: close`, so that keep-alive clients reconnect elsewhere.
fn with_peer(
    app: Router,
    peer: SocketAddr,
    draining: CancellationToken,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = app.clone().oneshot(request.map(Body::new));
        let draining = draining.clone();
        async move {
            let mut response = answer.await?;
            if draining.is_cancelled() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM, and cancels `token` then.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
        () = token.cancelled() => return,
    }
    tracing::info!("shutdown signal received; draining");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::config::Env;
    use crate::db::{DatabaseSettings, connect_lazy};

    fn test_app(api: Router) -> Router {
        let vars = |name: &str| match name {
            "T_RATE_LIMIT" => Some("0".to_owned()),
            "T_REQUEST_TIMEOUT" => Some("1".to_owned()),
            "T_DATABASE_URL" => Some("sqlite::memory:".to_owned()),
            _ => None,
        };
        let env = Env::new("T", &vars);
        let settings = HttpSettings::from_env(&env, "test-service", 0).unwrap();
        let db = connect_lazy(&DatabaseSettings::from_env(&env, "t", "test-service").unwrap());
        Platform::new(settings, CancellationToken::new()).app(api, db, None)
    }

    async fn call(app: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn only_short_ids_of_safe_characters_are_kept() {
        assert!(is_usable_request_id(b"req-abc_1.2"));
        assert!(is_usable_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!is_usable_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        for bad in [&b""[..], b"a b", b"a\tb", b"caf\xc3\xa9", b"a;b", b"a\r\nb"] {
            assert!(!is_usable_request_id(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_without_leaking_the_panic() {
        let app = test_app(Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("secret at /srv/app/src/x.rs");
                }
                "unreachable"
            }),
        ));
        let (status, body) = call(app, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_answers_503() {
        let app = test_app(Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        ));
        let (status, body) = call(app, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["message"], "request timed out");
    }
}
