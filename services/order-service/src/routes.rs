//! HTTP handlers: extract, validate, call the store or the service, answer in the envelope.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use platform::db::Database;

use crate::model::{
    CreateOrderRequest, OrderFilter, OrderResponse, OrderWithUser, UpdateOrderRequest,
};
use crate::service::{embedded_user, place_order};
use crate::store;
use crate::user_client::UserClient;
use platform::openapi::{DataEnvelope, Deleted, ErrorEnvelope, PageEnvelope};
use platform::pagination::PageQuery;
use platform::{ApiJson, ApiResponse, ApiResult, ListQuery, PathId, RequestId};

/// The OpenAPI document, generated from the handlers and types below.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "order-service", version = "1.0.0", description = "Order management. Every answer uses the envelope {success, data|error, meta}. Users are validated against user-service through a circuit breaker; when it cannot answer, orders are accepted unverified and settled later."),
    paths(
        create_order, list_orders, get_order, update_order, delete_order,
        platform::health::health, platform::health::live, platform::health::ready, platform::metrics::export,
    ),
    components(schemas(ErrorEnvelope)),
    tags((name = "orders", description = "Order CRUD and status changes"), (name = "operations", description = "Health and metrics")),
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of this service, with the shared responses and headers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::finish(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub users: UserClient,
}

/// The order API routes, without the platform's middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/orders", post(create_order).get(list_orders))
        .route(
            "/api/v1/orders/{id}",
            get(get_order).put(update_order).delete(delete_order),
        )
        .with_state(state)
}

/// Create an order for an active user. If user-service cannot answer, the order
/// is still created with `user: null` and `user_verified: false`.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = CreateOrderRequest,
    responses(
        (status = 201, description = "Created (user embedded, or null when unverified)", body = DataEnvelope<OrderWithUser>),
        (status = 400, description = "Malformed JSON, a field breaks a rule, or the user is not active", body = ErrorEnvelope),
        (status = 404, description = "The user does not exist", body = ErrorEnvelope),
    ))]
async fn create_order(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    ApiJson(request): ApiJson<CreateOrderRequest>,
) -> ApiResult<OrderWithUser> {
    let (order, user) = place_order(&state.db, &state.users, &request, request_id).await?;
    tracing::info!(
        order_id = order.id,
        verified = order.user_verified,
        "order created"
    );
    Ok(ApiResponse::created(OrderWithUser {
        order: order.into(),
        user,
    }))
}

/// Get a live order with its user (`null` when user-service cannot say).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = DataEnvelope<OrderWithUser>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live order has this id", body = ErrorEnvelope),
    ))]
async fn get_order(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
) -> ApiResult<OrderWithUser> {
    let order = store::find(&state.db, id).await?;
    let user = embedded_user(&state.users, order.user_id, request_id).await;
    Ok(ApiResponse::ok(OrderWithUser {
        order: order.into(),
        user,
    }))
}

/// List live orders, newest first. Lists do not embed users: one user-service
/// call per row would make a page as slow as its slowest lookup.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    params(PageQuery, OrderFilter),
    responses(
        (status = 200, description = "One page of orders", body = PageEnvelope<OrderResponse>),
        (status = 400, description = "A query parameter is invalid (named)", body = ErrorEnvelope),
    ))]
async fn list_orders(
    State(state): State<AppState>,
    ListQuery(page, filter): ListQuery<OrderFilter>,
) -> ApiResult<Vec<OrderResponse>> {
    let (orders, total) = store::list(&state.db, &page, &filter).await?;
    let orders = orders.into_iter().map(OrderResponse::from).collect();
    Ok(ApiResponse::page(orders, page.meta(total)))
}

/// Change an order's status along the state machine: pending -> confirmed |
/// cancelled; confirmed -> shipped | cancelled; shipped -> delivered. Setting the
/// current status again is a no-op.
#[utoipa::path(put, path = "/api/v1/orders/{id}", tag = "orders", request_body = UpdateOrderRequest,
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "The updated order", body = DataEnvelope<OrderResponse>),
        (status = 400, description = "Bad id, malformed JSON or unknown status", body = ErrorEnvelope),
        (status = 404, description = "No live order has this id", body = ErrorEnvelope),
        (status = 409, description = "The state machine forbids this change (both statuses named)", body = ErrorEnvelope),
    ))]
async fn update_order(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(request): ApiJson<UpdateOrderRequest>,
) -> ApiResult<OrderResponse> {
    let order = store::change_status(&state.db, id, request.status).await?;
    tracing::info!(order_id = id, status = %order.status, "order status set");
    Ok(ApiResponse::ok(order.into()))
}

/// Soft-delete an order.
#[utoipa::path(delete, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "Deleted", body = DataEnvelope<Deleted>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live order has this id", body = ErrorEnvelope),
    ))]
async fn delete_order(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Deleted> {
    store::soft_delete(&state.db, id).await?;
    tracing::info!(order_id = id, "order deleted");
    Ok(ApiResponse::ok(Deleted {
        id,
        message: "order deleted".to_owned(),
    }))
}
