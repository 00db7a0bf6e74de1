//! HTTP handlers: extract, authorize, call the store or the service, answer in
//! the envelope.
//!
//! Who may do what: a user places, reads and lists its own orders and may only
//! cancel them; someone else's order is a 404, so ids are not confirmed; an
//! admin does everything; a service token has no business here (403).

use axum::Router;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::routing::{post, put};
use platform::db::Database;

use crate::error::OrderError;
use crate::model::{
    CreateOrderRequest, Order, OrderFilter, OrderResponse, OrderStatus, OrderWithUser,
    UpdateOrderRequest, UserId,
};
use crate::service::{embedded_user, order_created, place_order};
use crate::store;
use crate::user_client::UserClient;
use platform::auth::Role;
use platform::events::Origin;
use platform::idempotency::{self, Idempotency, IdempotencyHeader, StoredAnswer};
use platform::openapi::{DataEnvelope, Deleted, ErrorEnvelope, PageEnvelope};
use platform::pagination::PageQuery;
use platform::{ApiError, ApiJson, ApiResponse, ApiResult, Caller, ListQuery, PathId, RequestId};

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
pub struct ApiDoc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub users: UserClient,
    /// Idempotency keys on the writes, fingerprinted with a key derived from
    /// order-service's own client secret.
    pub idempotency: idempotency::Guard,
}

/// The order API routes, without the platform's middleware.
pub fn router(state: AppState) -> Router {
    let keyed = || from_fn_with_state(state.idempotency.clone(), idempotency::enforce);
    Router::new()
        .route(
            "/api/v1/orders",
            post(create_order).layer(keyed()).get(list_orders),
        )
        .route(
            "/api/v1/orders/{id}",
            put(update_order)
                .layer(keyed())
                .get(get_order)
                .delete(delete_order),
        )
        .with_state(state)
}

/// Orders are for users and admins; any other token is refused before a lookup.
fn require_customer_or_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() || caller.has(Role::User) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "orders are for users and admins".to_owned(),
        ))
    }
}

/// Someone else's order answers exactly as a missing one.
fn require_owner(caller: &Caller, order: &Order) -> Result<(), OrderError> {
    if caller.may_act_for(order.user_id) {
        Ok(())
    } else {
        Err(OrderError::NotFound(order.id))
    }
}

/// Whose order this is: a user buys for itself (`user_id` omitted or its own);
/// an admin for anyone it names (itself when it is a user and names nobody).
fn buyer(caller: &Caller, asked: Option<UserId>) -> Result<i64, ApiError> {
    let asked = asked.map(|id| id.get());
    if caller.is_admin() {
        // A client (not a user) has no orders of its own: it must name the buyer.
        return asked.or(caller.user_id()).ok_or_else(|| {
            ApiError::Forbidden("a client may place orders only for a named user_id".to_owned())
        });
    }
    let own = caller
        .user_id()
        .filter(|_| caller.has(Role::User))
        .ok_or_else(|| ApiError::Forbidden("orders are for users and admins".to_owned()))?;
    match asked {
        None => Ok(own),
        Some(id) if id == own => Ok(own),
        Some(_) => Err(ApiError::Forbidden(
            "a user may place orders only for itself".to_owned(),
        )),
    }
}

/// Create an order for an active user (the caller, unless an admin names one).
/// If user-service cannot answer, the order is still created with `user: null`
/// and `user_verified: false`.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = CreateOrderRequest,
    params(IdempotencyHeader),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created (user embedded, or null when unverified); with `Idempotent-Replayed: true`, the answer to the first request with this Idempotency-Key", body = DataEnvelope<OrderWithUser>,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay"))),
        (status = 409, description = "A request with this Idempotency-Key is still running", body = ErrorEnvelope),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = ErrorEnvelope),
        (status = 400, description = "Malformed JSON, a field breaks a rule, or the user is not active", body = ErrorEnvelope),
        (status = 403, description = "A user naming another user_id, a client naming none, or a token of neither a user nor an admin", body = ErrorEnvelope),
        (status = 404, description = "The user does not exist", body = ErrorEnvelope),
    ))]
async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    idempotency: Idempotency,
    ApiJson(request): ApiJson<CreateOrderRequest>,
) -> ApiResult<OrderWithUser> {
    let user_id = buyer(&caller, request.user_id)?;
    let origin = Origin::request(Some(&caller), request_id);
    let (order, user) = place_order(
        &state.db,
        &state.users,
        &request,
        user_id,
        &origin,
        &idempotency,
    )
    .await?;
    tracing::info!(
        order_id = order.id,
        verified = order.user_verified,
        "order created"
    );
    Ok(order_created(&order, user))
}

/// Get a live order with its user (`null` when user-service cannot say).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = DataEnvelope<OrderWithUser>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live order has this id (or it is not the caller's)", body = ErrorEnvelope),
    ))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
) -> ApiResult<OrderWithUser> {
    require_customer_or_admin(&caller)?;
    let order = store::find(&state.db, id).await?;
    require_owner(&caller, &order)?;
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
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of orders (a user's own only)", body = PageEnvelope<OrderResponse>),
        (status = 400, description = "A query parameter is invalid (named)", body = ErrorEnvelope),
    ))]
async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ListQuery(page, mut filter): ListQuery<OrderFilter>,
) -> ApiResult<Vec<OrderResponse>> {
    if !caller.is_admin() {
        // A user lists its own orders, whether or not it names itself.
        let own = buyer(&caller, filter.user_id).map_err(|err| match err {
            ApiError::Forbidden(_) if caller.has(Role::User) => {
                ApiError::Forbidden("a user may list only its own orders".to_owned())
            }
            other => other,
        })?;
        filter.user_id =
            Some(UserId::new(own).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?);
    }
    let page = page.bind(filter.scope())?;
    let (orders, meta) = store::list(&state.db, &page, &filter).await?;
    let orders = orders.into_iter().map(OrderResponse::from).collect();
    Ok(ApiResponse::page(orders, meta))
}

/// Change an order's status along the state machine: pending -> confirmed |
/// cancelled; confirmed -> shipped | cancelled; shipped -> delivered. Setting the
/// current status again is a no-op.
#[utoipa::path(put, path = "/api/v1/orders/{id}", tag = "orders", request_body = UpdateOrderRequest,
    params(("id" = i64, Path, minimum = 1, description = "Order id"), IdempotencyHeader),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated order; with `Idempotent-Replayed: true`, the answer to the first request with this Idempotency-Key", body = DataEnvelope<OrderResponse>,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay"))),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = ErrorEnvelope),
        (status = 400, description = "Bad id, malformed JSON or unknown status", body = ErrorEnvelope),
        (status = 403, description = "A user asked for a status other than cancelled", body = ErrorEnvelope),
        (status = 404, description = "No live order has this id (or it is not the caller's)", body = ErrorEnvelope),
        (status = 409, description = "The state machine forbids this change (both statuses named), or a request with this Idempotency-Key is still running", body = ErrorEnvelope),
    ))]
async fn update_order(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
    idempotency: Idempotency,
    ApiJson(request): ApiJson<UpdateOrderRequest>,
) -> ApiResult<OrderResponse> {
    require_customer_or_admin(&caller)?;
    if !caller.is_admin() {
        require_owner(&caller, &store::find(&state.db, id).await?)?;
        if request.status != OrderStatus::Cancelled {
            return Err(ApiError::Forbidden(
                "a user may only cancel its order".to_owned(),
            ));
        }
    }
    let origin = Origin::request(Some(&caller), request_id);
    let answer = |order: &Order| ApiResponse::ok(OrderResponse::from(order.clone()));
    let stored = |order: &Order| StoredAnswer::of(&answer(order));
    let recorder = idempotency.recorder(&stored);
    let order =
        store::change_status(&state.db, id, request.status, &origin, recorder.as_ref()).await?;
    tracing::info!(order_id = id, status = %order.status, "order status set");
    Ok(answer(&order))
}

/// Soft-delete an order (admins only).
#[utoipa::path(delete, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = DataEnvelope<Deleted>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live order has this id", body = ErrorEnvelope),
    ))]
async fn delete_order(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
) -> ApiResult<Deleted> {
    caller.require_admin("deleting an order")?;
    store::soft_delete(&state.db, id, &Origin::request(Some(&caller), request_id)).await?;
    tracing::info!(order_id = id, "order deleted");
    Ok(ApiResponse::ok(Deleted {
        id,
        message: "order deleted".to_owned(),
    }))
}
