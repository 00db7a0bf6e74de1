//! Prometheus metrics with the contract's names, one registry per service.
//!
//! Each service owns its registry (no global recorder), so two services in one
//! process, or many test instances, never mix their numbers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::core::{Atomic, Collector, GenericGauge};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Label used for requests that matched no route, so scanners cannot blow up cardinality.
pub const UNMATCHED_PATH: &str = "unmatched";

/// The HTTP metrics of one service.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    in_flight: IntGauge,
    /// Requests answered 429 by the rate limiter.
    pub rate_limited: IntCounter,
    /// Client IPs the rate limiter currently tracks.
    pub rate_limiter_clients: IntGauge,
    /// Rate limit checks by `decision` (where decided, and how).
    pub rate_limit_decisions: IntCounterVec,
    /// 1 while the shared (Redis) limiter is away and the in-process one decides.
    pub rate_limiter_fallback: IntGauge,
}

impl Metrics {
    /// Registers `{prefix}_requests_total`, `{prefix}_request_duration_seconds`,
    /// `{prefix}_errors_total`, `{prefix}_requests_in_flight`,
    /// `{prefix}_rate_limited_total`, `{prefix}_rate_limiter_clients`,
    /// `{prefix}_rate_limit_decisions_total` and `{prefix}_rate_limiter_fallback`.
    pub fn new(prefix: &str) -> Self {
        let registry = Registry::new();
        let add = MetricSet {
            registry: &registry,
            prefix: prefix.to_owned(),
        };
        let duration = add.registered(HistogramVec::new(
            HistogramOpts::new(
                add.name("request_duration_seconds"),
                "HTTP request latency in seconds",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "path"],
        ));
        let metrics = Self {
            requests: add.counter_vec(
                "requests_total",
                "Total HTTP requests",
                &["method", "path", "status"],
            ),
            duration,
            errors: add.counter_vec("errors_total", "HTTP error responses by type", &["type"]),
            in_flight: add.gauge("requests_in_flight", "HTTP requests being served"),
            rate_limited: add.counter(
                "rate_limited_total",
                "Requests rejected by the per-IP rate limiter",
            ),
            rate_limiter_clients: add.gauge(
                "rate_limiter_clients",
                "Client IPs tracked by the rate limiter",
            ),
            rate_limit_decisions: add.counter_vec(
                "rate_limit_decisions_total",
                "Rate limit checks by decision: allowed or limited, by Redis or in-process; \
                 unavailable when Redis is away and the limiter fails closed",
                &["decision"],
            ),
            rate_limiter_fallback: add.gauge(
                "rate_limiter_fallback",
                "1 while the shared (Redis) rate limiter is unavailable and the in-process one decides",
            ),
            registry,
        };
        // Known label values exist from the start, so `rate()` sees the first one.
        for kind in ["client_error", "server_error"] {
            metrics.errors.with_label_values(&[kind]);
        }
        for decision in crate::rate_limit::DECISIONS {
            metrics.rate_limit_decisions.with_label_values(&[decision]);
        }
        metrics
    }

    /// Adds a service-specific collector to this registry.
    ///
    /// # Panics
    /// When a metric of the same name is already registered: a programming error.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric names are unique per service");
    }

    /// Registers a counter with one label whose values are all known: each
    /// starts at 0, so dashboards and `rate()` see it before its first event
    /// (Prometheus' instrumentation advice).
    ///
    /// # Panics
    /// When the name is invalid or already registered: a programming error.
    pub fn labelled_counter(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> IntCounterVec {
        let counter = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
        for value in values {
            counter.with_label_values(&[value]);
        }
        self.register(Box::new(counter.clone()));
        counter
    }

    /// Makes and registers metrics named `{service}_{name}`, with the service's
    /// dashes as underscores (`order-service` -> `order_service_*`).
    pub fn for_service(&self, service: &str) -> MetricSet<'_> {
        MetricSet {
            registry: &self.registry,
            prefix: service.replace('-', "_"),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(8 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    fn observe(&self, method: &str, path: &str, status: StatusCode, seconds: f64) {
        self.requests
            .with_label_values(&[method, path, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[method, path])
            .observe(seconds);
        if status.is_server_error() {
            self.errors.with_label_values(&["server_error"]).inc();
        } else if status.is_client_error() {
            self.errors.with_label_values(&["client_error"]).inc();
        }
    }
}

/// Makes metrics named `{prefix}_{name}` and registers them in one service's
/// registry: each metric is one line where it is declared.
///
/// # Panics
/// Its methods panic when a name is invalid or already registered: a programming error.
pub struct MetricSet<'a> {
    registry: &'a Registry,
    prefix: String,
}

impl MetricSet<'_> {
    /// A registered counter.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.registered(IntCounter::new(self.name(name), help))
    }

    /// A registered gauge: `IntGauge` or (float) `Gauge`.
    pub fn gauge<P: Atomic + 'static>(&self, name: &str, help: &str) -> GenericGauge<P> {
        self.registered(GenericGauge::new(self.name(name), help))
    }

    /// A registered counter with labels.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.registered(IntCounterVec::new(Opts::new(self.name(name), help), labels))
    }

    fn name(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    fn registered<M: Collector + Clone + 'static>(&self, metric: prometheus::Result<M>) -> M {
        let metric = metric.expect("valid metric");
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric names are unique per service");
        metric
    }
}

/// Counts one request in flight for as long as it lives: dropped when the request
/// ends, also when its future is dropped because the client went away.
struct InFlight(IntGauge);

impl InFlight {
    fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: counts and times every request, labelled by route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_PATH, MatchedPath::as_str)
        .to_owned();
    let in_flight = InFlight::start(&metrics.in_flight);
    let response = next.run(request).await;
    drop(in_flight);
    metrics.observe(
        &method,
        &path,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn export(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_requests_appear_with_contract_names_and_labels() {
        let metrics = Metrics::new("user_service");
        metrics.observe("GET", "/api/v1/users/{id}", StatusCode::NOT_FOUND, 0.002);
        metrics.observe(
            "POST",
            "/api/v1/users",
            StatusCode::INTERNAL_SERVER_ERROR,
            0.01,
        );
        let text = metrics.render();
        assert!(text.contains(
            r#"user_service_requests_total{method="GET",path="/api/v1/users/{id}",status="404"} 1"#
        ));
        assert!(text.contains(r#"user_service_errors_total{type="client_error"} 1"#));
        assert!(text.contains(r#"user_service_errors_total{type="server_error"} 1"#));
        assert!(text.contains("user_service_request_duration_seconds_bucket"));
    }

    #[test]
    fn error_kinds_exist_at_zero_before_the_first_error() {
        let text = Metrics::new("user_service").render();
        assert!(
            text.contains(r#"user_service_errors_total{type="client_error"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"user_service_errors_total{type="server_error"} 0"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_request_dropped_mid_flight_leaves_the_gauge() {
        use axum::Router;
        use axum::routing::get;
        use tower::ServiceExt;
        let metrics = Arc::new(Metrics::new("t"));
        let (entered, wait_entered) = tokio::sync::oneshot::channel::<()>();
        let entered = Arc::new(std::sync::Mutex::new(Some(entered)));
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    let entered = Arc::clone(&entered);
                    async move {
                        if let Some(tx) = entered.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        std::future::pending::<&'static str>().await
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&metrics),
                track,
            ));
        let request = axum::http::Request::get("/slow")
            .body(axum::body::Body::empty())
            .unwrap();
        let call = tokio::spawn(app.oneshot(request));
        wait_entered.await.unwrap();
        assert_eq!(metrics.in_flight.get(), 1);
        // What hyper does when the client disconnects: the request's future is dropped.
        call.abort();
        let _ = call.await;
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
