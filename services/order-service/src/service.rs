//! Order creation and reading, where the order store and user-service meet.

use platform::ApiResponse;
use platform::db::Database;
use platform::events::{Event, Origin};
use platform::idempotency::{Idempotency, StoredAnswer};

use crate::error::OrderError;
use crate::model::{CreateOrderRequest, Order, OrderWithUser};
use crate::store;
use crate::user_client::{RemoteUser, UserClient, UserLookup};

/// The answer to a created order.
pub fn order_created(order: &Order, user: Option<RemoteUser>) -> ApiResponse<OrderWithUser> {
    ApiResponse::created(OrderWithUser {
        order: order.clone().into(),
        user,
    })
}

/// Creates an order for an existing, active user. When user-service cannot say
/// (down, failing, slow, circuit open) the order is still taken, marked unverified,
/// and the verifier settles it later: the customer is not turned away because
/// another service is having a bad minute.
///
/// # Errors
/// When the user does not exist or is inactive, or a database error.
pub async fn place_order(
    db: &Database,
    users: &UserClient,
    request: &CreateOrderRequest,
    user_id: i64,
    origin: &Origin,
    idempotency: &Idempotency,
) -> Result<(Order, Option<RemoteUser>), OrderError> {
    let user = match users.get_user(user_id, origin.request_id.clone()).await {
        Ok(UserLookup::Found(user)) if user.active => Ok(Some(user)),
        Ok(UserLookup::Found(_)) => return Err(OrderError::UserNotActive),
        Ok(UserLookup::NotFound) => return Err(OrderError::UserNotFound),
        Err(err) => Err(err),
    };
    let embedded = user.as_ref().ok().cloned().flatten();
    let answer = |order: &Order| StoredAnswer::of(&order_created(order, embedded.clone()));
    let recorder = idempotency.recorder(&answer);
    let order = store::insert(
        db,
        request,
        user_id,
        user.is_ok(),
        origin,
        recorder.as_ref(),
    )
    .await?;
    if let Err(err) = user {
        tracing::warn!(order_id = order.id, user_id, error = %err,
            "user-service unavailable; order accepted unverified");
    }
    Ok((order, embedded))
}

/// The user to embed in an order answer: `None` when it does not exist (any more)
/// or user-service cannot say. Reading an order never fails because of user-service.
pub async fn embedded_user(
    users: &UserClient,
    user_id: i64,
    request_id: Option<String>,
) -> Option<RemoteUser> {
    match users.get_user(user_id, request_id).await {
        Ok(UserLookup::Found(user)) => Some(user),
        Ok(UserLookup::NotFound) | Err(_) => None,
    }
}

/// What order-service does when a user goes away: its pending orders are
/// cancelled, by `system`, joined to the request that caused it. Other events
/// are ignored. Idempotent, so redelivery is harmless.
///
/// # Errors
/// When the database cannot take it (the event is then delivered again).
pub async fn on_user_event(db: &Database, event: Event) -> anyhow::Result<()> {
    let reason = match event.event_type.as_str() {
        "user.deleted" => "user deleted",
        "user.deactivated" => "user deactivated",
        _ => return Ok(()),
    };
    let Ok(user_id) = event.resource_id.parse::<i64>() else {
        tracing::warn!(event_id = %event.id, resource_id = event.resource_id, "user event without a user id");
        return Ok(());
    };
    let origin = Origin {
        request_id: event.request_id.clone(),
        ..Origin::system()
    };
    let cancelled = store::cancel_pending_of_user(db, user_id, reason, &origin).await?;
    if cancelled > 0 {
        tracing::info!(user_id, cancelled, reason, "pending orders cancelled");
    }
    Ok(())
}
