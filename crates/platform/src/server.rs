//! The middleware stack, assembled in one place, and serving with graceful shutdown.

use std::any::Any;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Router};
use crate::db::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::HttpSettings;
use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
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
        let limiter = RateLimiter::new(
            settings.rate_limit_per_second,
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
    /// stack. Outermost first: request id, trace log, request-id echo, CORS,
    /// metrics, panic recovery, rate limit, timeout, body limit.
    pub fn app(&self, api: Router, db: Database, info: Option<HealthInfo>) -> Router {
        let health = HealthState {
            service: self.settings.service_name,
            db,
            shutdown: self.shutdown.clone(),
            info,
        };
        let mut router = api
            .merge(health::router(health))
            .route(
                "/metrics",
                get(metrics::export).with_state(Arc::clone(&self.metrics)),
            )
            .fallback(|| async { ApiError::NotFound("route not found".to_owned()) })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: BoxError| async {
                        ApiError::ServiceUnavailable("request timed out".to_owned())
                    }))
                    .timeout(self.settings.request_timeout),
            );
        if let Some(limiter) = &self.limiter {
            router = router.layer(from_fn_with_state(Arc::clone(limiter), rate_limit::enforce));
        }
        router
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(from_fn_with_state(
                Arc::clone(&self.metrics),
                metrics::track,
            ))
            .layer(cors(&self.settings.cors_allowed_origins))
            .layer(PropagateRequestIdLayer::x_request_id())
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
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let request_id = HeaderName::from_static("x-request-id");
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::CONTENT_TYPE, header::ACCEPT, request_id.clone()])
        .expose_headers([request_id, header::RETRY_AFTER])
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
    /// # Errors
    /// When accepting connections fails fatally.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            listener,
            app,
            platform,
        } = self;
        let shutdown = platform.shutdown.clone();
        if let Some(limiter) = &platform.limiter {
            limiter.spawn_eviction(shutdown.clone());
        }
        tracing::info!(
            service = platform.settings.service_name,
            address = %listener.local_addr()?,
            "listening"
        );
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let grace_elapsed = async {
            shutdown.cancelled().await;
            tokio::time::sleep(platform.settings.shutdown_grace).await;
        };
        tokio::select! {
            result = server.into_future() => result?,
            () = grace_elapsed => tracing::warn!(
                service = platform.settings.service_name,
                "shutdown grace period elapsed with requests in flight; stopping anyway"
            ),
        }
        tracing::info!(service = platform.settings.service_name, "server stopped");
        Ok(())
    }
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
