//! The user-service client: pooled HTTP with a per-call timeout, behind a circuit breaker.
//!
//! The breaker is `tower-resilience-circuitbreaker`, configured to the original's
//! gobreaker settings: it trips once at least 3 calls in the counting window have
//! failed at a rate of 50% or more; while open it rejects at once; after
//! `CIRCUIT_BREAKER_TIMEOUT` it half-opens and admits `CIRCUIT_BREAKER_MAX_REQUESTS`
//! trial calls (further concurrent calls are rejected), closing after that many
//! successes and re-opening on the first failure. Two differences from gobreaker,
//! both deliberate: the counting window (`CIRCUIT_BREAKER_INTERVAL`) rolls over the
//! last N seconds instead of resetting at fixed instants, and the failure rate is
//! evaluated after successes too (gobreaker checks only on failure), so a window
//! of 2 failures and 1 success trips on that success rather than on the next failure.
//!
//! Only unavailability counts as failure: timeouts, connection errors, 5xx and
//! unreadable answers. A 404 is an answer ("no such user"), not a failure, so bad
//! user ids can never open the circuit (the original counts them).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceExt};
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer, CircuitState, DefaultClassifier,
};

use crate::config::BreakerSettings;
use platform::metrics::Metrics;

/// The user fields an order needs, as user-service answers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteUser {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub active: bool,
}

/// What user-service said about a user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    Found(RemoteUser),
    NotFound,
}

/// Why user-service could not answer. Every variant counts as a breaker failure,
/// except `CircuitOpen`, which is the breaker refusing to call at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UserServiceError {
    #[error("user-service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("user-service unreachable: {0}")]
    Connection(String),
    #[error("user-service answered {0}")]
    Status(u16),
    #[error("user-service answer unreadable: {0}")]
    Decode(String),
    #[error("circuit to user-service is open")]
    CircuitOpen,
}

/// A lookup request: the user id and the request id to propagate.
#[derive(Debug, Clone)]
pub struct LookupRequest {
    pub user_id: i64,
    pub request_id: Option<String>,
}

/// The HTTP call itself, as a tower service so the breaker can wrap it.
#[derive(Clone)]
pub struct HttpUserLookup {
    http: reqwest::Client,
    base_url: Arc<str>,
    timeout: Duration,
}

impl HttpUserLookup {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .expect("the HTTP client builds with static settings");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').into(),
            timeout,
        }
    }

    async fn lookup(self, request: LookupRequest) -> Result<UserLookup, UserServiceError> {
        #[derive(Deserialize)]
        struct Envelope {
            data: RemoteUser,
        }
        let url = format!("{}/api/v1/users/{}", self.base_url, request.user_id);
        let mut call = self.http.get(url);
        if let Some(id) = &request.request_id {
            call = call.header("x-request-id", id);
        }
        let response = call.send().await.map_err(|e| self.classify(&e))?;
        match response.status() {
            StatusCode::OK => {
                let body = response.bytes().await.map_err(|e| self.classify(&e))?;
                let envelope: Envelope = serde_json::from_slice(&body)
                    .map_err(|e| UserServiceError::Decode(e.to_string()))?;
                Ok(UserLookup::Found(envelope.data))
            }
            StatusCode::NOT_FOUND => Ok(UserLookup::NotFound),
            other => Err(UserServiceError::Status(other.as_u16())),
        }
    }

    fn classify(&self, err: &reqwest::Error) -> UserServiceError {
        if err.is_timeout() {
            UserServiceError::Timeout(self.timeout)
        } else {
            UserServiceError::Connection(error_chain(err))
        }
    }
}

/// reqwest's top-level message is generic; the cause says "connection refused".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Service<LookupRequest> for HttpUserLookup {
    type Response = UserLookup;
    type Error = UserServiceError;
    type Future = BoxFuture<'static, Result<UserLookup, UserServiceError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: LookupRequest) -> Self::Future {
        Box::pin(self.clone().lookup(request))
    }
}

/// The breaker's state as the contract's gauge encodes it.
pub fn state_code(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

pub fn state_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half-open",
        CircuitState::Open => "open",
    }
}

/// Builds the breaker layer from the settings; each state change sets the gauge
/// and is logged as a structured event.
pub fn breaker_layer(settings: &BreakerSettings, state_gauge: IntGauge) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("user-service")
        .failure_rate_threshold(0.5)
        .minimum_number_of_calls(3)
        .sliding_window_type(tower_resilience_circuitbreaker::SlidingWindowType::TimeBased)
        .sliding_window_duration(settings.interval)
        .wait_duration_in_open(settings.timeout)
        .permitted_calls_in_half_open(settings.max_requests)
        .on_state_transition(move |from, to| {
            state_gauge.set(state_code(to));
            tracing::warn!(
                event = "circuit_breaker_state_change",
                breaker = "user-service",
                from = state_name(from),
                to = state_name(to),
                "circuit breaker changed state"
            );
        })
        .build()
        .expect("breaker settings are validated by the config")
}

/// The client handlers and the verifier use.
#[derive(Clone)]
pub struct UserClient {
    breaker: CircuitBreaker<HttpUserLookup, DefaultClassifier>,
    calls: IntCounterVec,
}

impl UserClient {
    /// Registers `order_service_circuit_breaker_state{service="user-service"}` and
    /// `order_service_user_client_requests_total{outcome}` in `metrics`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        breaker: &BreakerSettings,
        metrics: &Metrics,
    ) -> Self {
        let state = IntGaugeVec::new(
            Opts::new(
                "order_service_circuit_breaker_state",
                "Circuit breaker state (0=closed, 1=half-open, 2=open)",
            ),
            &["service"],
        )
        .expect("valid metric");
        let calls = IntCounterVec::new(
            Opts::new(
                "order_service_user_client_requests_total",
                "Calls to user-service by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        metrics.register(Box::new(state.clone()));
        metrics.register(Box::new(calls.clone()));
        let gauge = state.with_label_values(&["user-service"]);
        gauge.set(0);
        let layer = breaker_layer(breaker, gauge);
        Self {
            breaker: layer.layer_fn(HttpUserLookup::new(base_url, timeout)),
            calls,
        }
    }

    /// Asks user-service for a user, through the breaker.
    ///
    /// # Errors
    /// A [`UserServiceError`] when user-service cannot answer or the circuit is open.
    pub async fn get_user(
        &self,
        user_id: i64,
        request_id: Option<String>,
    ) -> Result<UserLookup, UserServiceError> {
        let mut breaker = self.breaker.clone();
        let result = match breaker.ready().await {
            Ok(service) => {
                service
                    .call(LookupRequest {
                        user_id,
                        request_id,
                    })
                    .await
            }
            Err(err) => Err(err),
        };
        let result = result.map_err(|err| match err {
            CircuitBreakerError::OpenCircuit => UserServiceError::CircuitOpen,
            CircuitBreakerError::Inner(inner) => inner,
        });
        let outcome = match &result {
            Ok(UserLookup::Found(_)) => "found",
            Ok(UserLookup::NotFound) => "not_found",
            Err(UserServiceError::CircuitOpen) => "rejected",
            Err(_) => "failure",
        };
        self.calls.with_label_values(&[outcome]).inc();
        if let Err(err) = &result {
            tracing::debug!(user_id, error = %err, "user lookup failed");
        }
        result
    }

    pub fn state(&self) -> CircuitState {
        self.breaker.state_sync()
    }
}

#[cfg(test)]
mod tests {
    //! The breaker's contract, proven on a stand-in for user-service whose answers
    //! the test scripts, so nothing here depends on timing except the open wait.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A scripted user-service: answers with `outcome` and counts calls.
    #[derive(Clone)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        outcome: Arc<Mutex<Result<UserLookup, UserServiceError>>>,
        delay: Duration,
    }

    impl Service<LookupRequest> for Scripted {
        type Response = UserLookup;
        type Error = UserServiceError;
        type Future = BoxFuture<'static, Result<UserLookup, UserServiceError>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: LookupRequest) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let outcome = self.outcome.lock().unwrap().clone();
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                outcome
            })
        }
    }

    struct Harness {
        breaker: CircuitBreaker<Scripted, DefaultClassifier>,
        scripted: Scripted,
        gauge: IntGauge,
    }

    impl Harness {
        fn new(max_requests: usize, open_for: Duration, delay: Duration) -> Self {
            let scripted = Scripted {
                calls: Arc::default(),
                outcome: Arc::new(Mutex::new(Ok(UserLookup::NotFound))),
                delay,
            };
            let gauge = IntGauge::new("state", "state").unwrap();
            let settings = BreakerSettings {
                max_requests,
                interval: Duration::from_secs(60),
                timeout: open_for,
            };
            let breaker = breaker_layer(&settings, gauge.clone()).layer_fn(scripted.clone());
            Self {
                breaker,
                scripted,
                gauge,
            }
        }

        fn answer(&self, outcome: Result<UserLookup, UserServiceError>) {
            *self.scripted.outcome.lock().unwrap() = outcome;
        }

        async fn call(&self) -> Result<UserLookup, CircuitBreakerError<UserServiceError>> {
            let mut breaker = self.breaker.clone();
            breaker
                .ready()
                .await?
                .call(LookupRequest {
                    user_id: 1,
                    request_id: None,
                })
                .await
        }

        fn calls(&self) -> usize {
            self.scripted.calls.load(Ordering::SeqCst)
        }
    }

    fn failure() -> Result<UserLookup, UserServiceError> {
        Err(UserServiceError::Status(503))
    }

    #[tokio::test]
    async fn trips_at_three_failed_calls_and_not_before() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        h.answer(failure());
        h.call().await.unwrap_err();
        h.call().await.unwrap_err();
        assert_eq!(
            h.breaker.state_sync(),
            CircuitState::Closed,
            "2 calls are below the minimum"
        );
        h.call().await.unwrap_err();
        assert_eq!(h.breaker.state_sync(), CircuitState::Open);
        assert_eq!(h.gauge.get(), 2);
    }

    #[tokio::test]
    async fn a_failure_rate_below_half_keeps_it_closed() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        for _ in 0..3 {
            h.answer(Ok(UserLookup::NotFound));
            h.call().await.unwrap();
            h.call().await.unwrap();
            h.answer(failure());
            h.call().await.unwrap_err();
        }
        assert_eq!(
            h.breaker.state_sync(),
            CircuitState::Closed,
            "1 in 3 failed"
        );
    }

    #[tokio::test]
    async fn not_found_answers_never_open_it() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        h.answer(Ok(UserLookup::NotFound));
        for _ in 0..50 {
            assert_eq!(h.call().await.unwrap(), UserLookup::NotFound);
        }
        assert_eq!(h.breaker.state_sync(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn open_rejects_without_calling() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        h.answer(failure());
        for _ in 0..3 {
            h.call().await.unwrap_err();
        }
        let before = h.calls();
        for _ in 0..10 {
            assert!(h.call().await.unwrap_err().is_circuit_open());
        }
        assert_eq!(h.calls(), before, "no call reached user-service while open");
    }

    async fn opened(max_requests: usize, delay: Duration) -> Harness {
        let h = Harness::new(max_requests, Duration::from_millis(50), delay);
        h.answer(failure());
        for _ in 0..3 {
            h.call().await.unwrap_err();
        }
        assert_eq!(h.breaker.state_sync(), CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(80)).await;
        h
    }

    #[tokio::test]
    async fn half_open_admits_exactly_max_requests_concurrent_calls() {
        let h = opened(3, Duration::from_millis(200)).await;
        h.answer(Ok(UserLookup::NotFound));
        let before = h.calls();
        let results = futures::future::join_all((0..6).map(|_| h.call())).await;
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        let rejected = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.is_circuit_open()))
            .count();
        assert_eq!((admitted, rejected), (3, 3));
        assert_eq!(h.calls() - before, 3);
        assert_eq!(
            h.breaker.state_sync(),
            CircuitState::Closed,
            "3 successes close it"
        );
        assert_eq!(h.gauge.get(), 0);
    }

    #[tokio::test]
    async fn one_half_open_failure_reopens() {
        let h = opened(3, Duration::ZERO).await;
        h.call().await.unwrap_err();
        assert_eq!(h.breaker.state_sync(), CircuitState::Open);
        assert_eq!(h.gauge.get(), 2);
        assert!(h.call().await.unwrap_err().is_circuit_open());
    }

    #[tokio::test]
    async fn half_open_closes_after_max_requests_successes() {
        let h = opened(2, Duration::ZERO).await;
        h.answer(Ok(UserLookup::NotFound));
        h.call().await.unwrap();
        assert_eq!(h.breaker.state_sync(), CircuitState::HalfOpen);
        assert_eq!(h.gauge.get(), 1);
        h.call().await.unwrap();
        assert_eq!(h.breaker.state_sync(), CircuitState::Closed);
    }
}
