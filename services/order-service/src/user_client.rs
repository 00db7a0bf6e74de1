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

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerError, CircuitState, DefaultClassifier,
};
use tracing::Instrument;

use crate::breaker::breaker_layer;
use crate::config::BreakerSettings;
use crate::service_token::ServiceToken;
use crate::user_cache::UserCache;
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
    #[error("user-service refused our service credentials")]
    CredentialsRejected,
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
    token: Arc<ServiceToken>,
}

/// The HTTP client for user-service: pooled, with the per-call timeout.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .no_proxy()
        .build()
        .expect("the HTTP client builds with static settings")
}

impl HttpUserLookup {
    pub fn new(base_url: &str, timeout: Duration, token: Arc<ServiceToken>) -> Self {
        Self {
            http: http_client(timeout),
            base_url: base_url.trim_end_matches('/').into(),
            timeout,
            token,
        }
    }

    /// One lookup with the service token; a 401 means the token went stale
    /// (user-service rotated its key, or restarted with a new one), so it is
    /// fetched again and the call retried once.
    async fn lookup(self, request: LookupRequest) -> Result<UserLookup, UserServiceError> {
        let token = self.token.get(&self.http).await?;
        match self.lookup_with(&request, &token).await {
            Err(UserServiceError::Status(401)) => {
                self.token.forget(&token).await;
                let fresh = self.token.get(&self.http).await?;
                self.lookup_with(&request, &fresh).await
            }
            other => other,
        }
    }

    /// One call, in a client span whose trace context goes along in `traceparent`.
    async fn lookup_with(
        &self,
        request: &LookupRequest,
        token: &str,
    ) -> Result<UserLookup, UserServiceError> {
        let span = tracing::debug_span!(
            "GET /api/v1/users/{id}",
            otel.kind = "client",
            http.request.method = "GET",
            url.template = "/api/v1/users/{id}",
            server.address = %self.base_url,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let mut headers = reqwest::header::HeaderMap::new();
        platform::otel::inject(&span, &mut headers);
        let result = self
            .send_lookup(request, token, headers)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        result
    }

    async fn send_lookup(
        &self,
        request: &LookupRequest,
        token: &str,
        headers: reqwest::header::HeaderMap,
    ) -> Result<UserLookup, UserServiceError> {
        #[derive(Deserialize)]
        struct Envelope {
            data: RemoteUser,
        }
        let url = format!("{}/api/v1/users/{}", self.base_url, request.user_id);
        let mut call = self.http.get(url).bearer_auth(token).headers(headers);
        if let Some(id) = &request.request_id {
            call = call.header("x-request-id", id);
        }
        let response = call.send().await.map_err(|e| self.classify(&e))?;
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());
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

/// A user lookup as a tower service, so the breaker can wrap it: the HTTP call
/// in the service, a scripted stand-in in the breaker's tests.
pub type LookupService = BoxCloneSyncService<LookupRequest, UserLookup, UserServiceError>;

impl HttpUserLookup {
    fn into_service(self) -> LookupService {
        BoxCloneSyncService::new(tower::service_fn(move |request| {
            self.clone().lookup(request)
        }))
    }
}

/// The client handlers and the verifier use.
#[derive(Clone)]
pub struct UserClient {
    breaker: CircuitBreaker<LookupService, DefaultClassifier>,
    calls: IntCounterVec,
    cache: Arc<UserCache>,
}

impl UserClient {
    /// Registers `order_service_circuit_breaker_state{service="user-service"}` and
    /// `order_service_user_client_requests_total{outcome}` in `metrics`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        breaker: &BreakerSettings,
        token: Arc<ServiceToken>,
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
        metrics.register(Box::new(state.clone()));
        let calls = metrics.labelled_counter(
            "order_service_user_client_requests_total",
            "Calls to user-service by outcome",
            "outcome",
            &["found", "not_found", "rejected", "failure"],
        );
        let gauge = state.with_label_values(&["user-service"]);
        gauge.set(0);
        let layer = breaker_layer(breaker, gauge);
        Self {
            breaker: layer.layer_fn(HttpUserLookup::new(base_url, timeout, token).into_service()),
            calls,
            cache: Arc::new(UserCache::disabled()),
        }
    }

    /// Serves found users from `cache` first, and fills it with user-service's answers.
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<UserCache>) -> Self {
        self.cache = cache;
        self
    }

    /// The user from the cache, else from user-service through the breaker.
    ///
    /// # Errors
    /// A [`UserServiceError`] when user-service cannot answer or the circuit is open.
    #[tracing::instrument(level = "debug", skip(self, request_id))]
    pub async fn get_user(
        &self,
        user_id: i64,
        request_id: Option<String>,
    ) -> Result<UserLookup, UserServiceError> {
        if let Some(user) = self.cache.get(user_id) {
            return Ok(UserLookup::Found(user));
        }
        let ticket = self.cache.ticket();
        let result = self.ask(user_id, request_id).await;
        if let (Some(ticket), Ok(UserLookup::Found(user))) = (ticket, &result) {
            self.cache.store(ticket, user);
        }
        result
    }

    /// Asks user-service for a user, through the breaker.
    async fn ask(
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
        match &result {
            // An event on the lookup's span in the trace: the call was never made.
            Err(UserServiceError::CircuitOpen) => {
                tracing::debug!(user_id, "circuit breaker rejected the call to user-service");
            }
            Err(err) => tracing::debug!(user_id, error = %err, "user lookup failed"),
            Ok(_) => {}
        }
        result
    }

    pub fn state(&self) -> CircuitState {
        self.breaker.state_sync()
    }
}
