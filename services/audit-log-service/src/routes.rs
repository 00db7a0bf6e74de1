//! HTTP handlers: the audit log is read by admins only, and never written
//! through the API (entries come from the event stream; any other method is 405).

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::routing::get;
use platform::cursor::Cursor;
use platform::db::Database;
use platform::openapi::{CursorPageEnvelope, DataEnvelope, ErrorEnvelope};
use platform::pagination::CursorMeta;
use platform::query::StrictQuery;
use platform::validation::truncate;
use platform::{ApiError, ApiResponse, ApiResult, Caller};
use uuid::Uuid;

use crate::model::{AuditLog, AuditLogQuery, DEFAULT_PAGE_SIZE};
use crate::store;

/// The OpenAPI document, generated from the handlers and types below.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "audit-log-service", version = "1.0.0", description = "The append-only audit log: every event of every service (who did what to which resource, when), stored exactly once from NATS JetStream, readable by admins. Every answer uses the envelope {success, data|error, meta}."),
    paths(
        list_audit_logs, get_audit_log,
        platform::health::health, platform::health::live, platform::health::ready, platform::metrics::export,
    ),
    components(schemas(ErrorEnvelope)),
    tags((name = "audit-logs", description = "Reading the audit log (admins only)"), (name = "operations", description = "Health and metrics")),
)]
pub struct ApiDoc;

/// The audit-log routes, without the platform's middleware.
pub fn router(db: Database) -> Router {
    Router::new()
        .route("/api/v1/audit-logs", get(list_audit_logs))
        .route("/api/v1/audit-logs/{id}", get(get_audit_log))
        .with_state(db)
}

/// An event id from the `{id}` path segment; anything but a UUID is a 400.
struct EventId(Uuid);

impl<S: Send + Sync> FromRequestParts<S> for EventId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))?;
        raw.parse().map(Self).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid id {:?}: must be an event id (a UUID)",
                truncate(&raw, 40)
            ))
        })
    }
}

/// List audit entries, newest first, filtered by actor, action, resource and
/// time, one keyset page at a time: follow `meta.next_cursor` until it is absent.
#[utoipa::path(get, path = "/api/v1/audit-logs", tag = "audit-logs",
    params(AuditLogQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of entries, newest first", body = CursorPageEnvelope<AuditLog>),
        (status = 400, description = "A query parameter is invalid (named)", body = ErrorEnvelope),
    ))]
async fn list_audit_logs(
    State(db): State<Database>,
    caller: Caller,
    StrictQuery(query): StrictQuery<AuditLogQuery>,
) -> ApiResult<Vec<AuditLog>> {
    caller.require_admin("reading the audit log")?;
    let page_size = query.page_size.map_or(DEFAULT_PAGE_SIZE, |size| size.get());
    let scope = query.scope();
    let after = match &query.cursor {
        Some(text) => Some(Cursor::from_param(text, &scope)?),
        None => None,
    };
    let (entries, next) = store::list(&db, &query, after, page_size).await?;
    let meta = CursorMeta {
        page_size: page_size.unsigned_abs(),
        next_cursor: next.map(|cursor| cursor.encode(&scope)),
    };
    Ok(ApiResponse::cursor_page(entries, meta))
}

/// Get the audit entry of one event.
#[utoipa::path(get, path = "/api/v1/audit-logs/{id}", tag = "audit-logs",
    params(("id" = String, Path, format = "uuid", description = "The event id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entry", body = DataEnvelope<AuditLog>),
        (status = 400, description = "The id is not a UUID", body = ErrorEnvelope),
        (status = 404, description = "No entry has this event id", body = ErrorEnvelope),
    ))]
async fn get_audit_log(
    State(db): State<Database>,
    caller: Caller,
    EventId(id): EventId,
) -> ApiResult<AuditLog> {
    caller.require_admin("reading the audit log")?;
    Ok(ApiResponse::ok(store::find(&db, id).await?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_spec_matches_the_code() {
        platform::testing::assert_committed_spec(
            env!("CARGO_MANIFEST_DIR"),
            "audit-log-service",
            &<crate::AuditLogService as platform::app::Service>::openapi(),
        );
    }
}
