//! `/health` (the contract's), `/health/live` and `/health/ready` (for Kubernetes).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Upper bound on a health probe's database round trip.
const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Extra, informational fields a service adds to `/health` (e.g. breaker state).
pub type HealthInfo = Arc<dyn Fn() -> Value + Send + Sync>;

/// What the probes look at.
#[derive(Clone)]
pub struct HealthState {
    pub service: &'static str,
    pub db: DatabaseConnection,
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

/// 200 `{"status":"healthy",…}` when the database answers, 503 `unhealthy` otherwise.
async fn health(State(state): State<Arc<HealthState>>) -> Response {
    let database_up = state.database_up().await;
    let mut body = json!({
        "status": if database_up { "healthy" } else { "unhealthy" },
        "service": state.service,
        "checks": { "database": if database_up { "up" } else { "down" } },
    });
    if let Some(info) = &state.info {
        body["info"] = info();
    }
    (status_for(database_up), Json(body)).into_response()
}

/// The process is running and serving HTTP.
async fn live(State(state): State<Arc<HealthState>>) -> Response {
    Json(json!({ "status": "alive", "service": state.service })).into_response()
}

/// Ready for traffic: the database answers and shutdown has not begun.
async fn ready(State(state): State<Arc<HealthState>>) -> Response {
    let draining = state.shutdown.is_cancelled();
    let ready = !draining && state.database_up().await;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "service": state.service,
        "draining": draining,
    });
    (status_for(ready), Json(body)).into_response()
}

fn status_for(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
