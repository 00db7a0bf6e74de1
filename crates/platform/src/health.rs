//! `/health` (the contract's), `/health/live` and `/health/ready` (for Kubernetes).

use std::sync::Arc;
use std::time::Duration;

use crate::db::Database;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// Upper bound on a health probe's database round trip.
const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Extra, informational fields a service adds to `/health` (e.g. breaker state).
pub type HealthInfo = Arc<dyn Fn() -> Value + Send + Sync>;

/// What the probes look at.
#[derive(Clone)]
pub struct HealthState {
    pub service: &'static str,
    pub db: Database,
    /// Cancelled on shutdown: readiness fails so load balancers drain us first.
    pub shutdown: CancellationToken,
    pub info: Option<HealthInfo>,
}

impl HealthState {
    async fn database_up(&self) -> bool {
        matches!(
            tokio::time::timeout(DB_PING_TIMEOUT, self.db.ping()).await,
            Ok(Ok(()))
        )
    }
}

/// The three probe routes.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(Arc::new(state))
}

/// `/health`: the contract's `{"status":"healthy","service":…}`, plus the checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `healthy` or `unhealthy`.
    #[schema(pattern = "^(healthy|unhealthy)$")]
    pub status: &'static str,
    pub service: &'static str,
    pub checks: HealthChecks,
    /// Service-specific information that does not affect health.
    #[schema(value_type = Option<Object>, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthChecks {
    /// `up` or `down`.
    #[schema(pattern = "^(up|down)$")]
    pub database: &'static str,
}

/// `/health/live`
#[derive(Debug, Serialize, ToSchema)]
pub struct LivenessReport {
    /// Always `alive`.
    pub status: &'static str,
    pub service: &'static str,
}

/// `/health/ready`
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// `ready` or `not_ready`.
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: &'static str,
    pub service: &'static str,
    /// True once shutdown has begun.
    pub draining: bool,
}

/// Health: 200 when the database answers within 2 s, 503 otherwise.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = HealthReport),
        (status = 503, description = "The database does not answer", body = HealthReport),
    ))]
pub async fn health(State(state): State<Arc<HealthState>>) -> Response {
    let database_up = state.database_up().await;
    let report = HealthReport {
        status: if database_up { "healthy" } else { "unhealthy" },
        service: state.service,
        checks: HealthChecks {
            database: if database_up { "up" } else { "down" },
        },
        info: state.info.as_ref().map(|info| info()),
    };
    (status_for(database_up), Json(report)).into_response()
}

/// Liveness: the process is running and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = LivenessReport)))]
pub async fn live(State(state): State<Arc<HealthState>>) -> Response {
    Json(LivenessReport {
        status: "alive",
        service: state.service,
    })
    .into_response()
}

/// Readiness: the database answers and shutdown has not begun.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = ReadinessReport),
        (status = 503, description = "Database down or draining", body = ReadinessReport),
    ))]
pub async fn ready(State(state): State<Arc<HealthState>>) -> Response {
    let draining = state.shutdown.is_cancelled();
    let ready = !draining && state.database_up().await;
    let report = ReadinessReport {
        status: if ready { "ready" } else { "not_ready" },
        service: state.service,
        draining,
    };
    (status_for(ready), Json(report)).into_response()
}

fn status_for(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
