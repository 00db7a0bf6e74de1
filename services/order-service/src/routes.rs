//! HTTP handlers: extract, validate, call the store or the service, answer in the envelope.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};

use crate::model::{
    CreateOrderRequest, OrderFilter, OrderResponse, OrderWithUser, UpdateOrderRequest,
};
use crate::service::{embedded_user, place_order};
use crate::store;
use crate::user_client::UserClient;
use platform::{ApiError, ApiJson, ApiResponse, PathId, QueryParams, RequestId};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
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

type Answer<T> = Result<ApiResponse<T>, ApiError>;

async fn create_order(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    ApiJson(request): ApiJson<CreateOrderRequest>,
) -> Answer<OrderWithUser> {
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

async fn get_order(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
) -> Answer<OrderWithUser> {
    let order = store::find(&state.db, id).await?;
    let user = embedded_user(&state.users, order.user_id, request_id).await;
    Ok(ApiResponse::ok(OrderWithUser {
        order: order.into(),
        user,
    }))
}

/// Lists do not embed users: one user-service call per row would make a page
/// as slow as its slowest lookup.
async fn list_orders(
    State(state): State<AppState>,
    query: QueryParams,
) -> Answer<Vec<OrderResponse>> {
    let filter = OrderFilter::from_query(&query)?;
    let (orders, total) = store::list(&state.db, &filter).await?;
    let orders = orders.into_iter().map(OrderResponse::from).collect();
    Ok(ApiResponse::page(orders, filter.page.meta(total)))
}

async fn update_order(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(request): ApiJson<UpdateOrderRequest>,
) -> Answer<OrderResponse> {
    let order = store::change_status(&state.db, id, request.status).await?;
    tracing::info!(order_id = id, status = %order.status, "order status set");
    Ok(ApiResponse::ok(order.into()))
}

async fn delete_order(State(state): State<AppState>, PathId(id): PathId) -> Answer<Value> {
    store::soft_delete(&state.db, id).await?;
    tracing::info!(order_id = id, "order deleted");
    Ok(ApiResponse::ok(
        json!({ "id": id, "message": "order deleted" }),
    ))
}
