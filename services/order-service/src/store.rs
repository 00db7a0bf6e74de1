//! SQL for orders: plain async functions on the connection, one code path for
//! PostgreSQL and SQLite. Every query sees live rows only (`deleted_at IS NULL`).

use chrono::{SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::model::{CreateOrderRequest, Order, OrderFilter, OrderStatus, order};
use platform::ApiError;

fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("order {id} not found"))
}

fn live() -> Condition {
    Condition::all().add(order::Column::DeletedAt.is_null())
}

/// Inserts a pending order; `user_verified` records whether user-service vouched for the user.
#[tracing::instrument(skip_all, fields(user_id = request.user_id))]
pub async fn insert(
    db: &DatabaseConnection,
    request: &CreateOrderRequest,
    user_verified: bool,
) -> Result<Order, ApiError> {
    let quantity = i32::try_from(request.quantity)
        .map_err(|_| ApiError::invalid_field("quantity", "out of range"))?;
    let at = now();
    let order = order::ActiveModel {
        user_id: Set(request.user_id),
        product_id: Set(request.product_id.clone()),
        quantity: Set(quantity),
        total_price_cents: Set(request.total_price.0),
        status: Set(OrderStatus::Pending),
        user_verified: Set(user_verified),
        status_reason: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
        deleted_at: Set(None),
        ..Default::default()
    };
    Ok(order.insert(db).await?)
}

#[tracing::instrument(skip(db))]
pub async fn find(db: &DatabaseConnection, id: i64) -> Result<Order, ApiError> {
    order::Entity::find_by_id(id)
        .filter(live())
        .one(db)
        .await?
        .ok_or_else(|| not_found(id))
}

/// One page of live orders, newest first, and the total matching the filter.
#[tracing::instrument(skip(db))]
pub async fn list(
    db: &DatabaseConnection,
    filter: &OrderFilter,
) -> Result<(Vec<Order>, u64), ApiError> {
    let mut condition = live();
    if let Some(user_id) = filter.user_id {
        condition = condition.add(order::Column::UserId.eq(user_id));
    }
    if let Some(status) = filter.status {
        condition = condition.add(order::Column::Status.eq(status));
    }
    if let Some(product_id) = &filter.product_id {
        // Exact match: bound as a value, so `%` or `'` are just characters.
        condition = condition.add(order::Column::ProductId.eq(product_id.clone()));
    }
    let query = order::Entity::find()
        .filter(condition)
        .order_by_desc(order::Column::CreatedAt)
        .order_by_desc(order::Column::Id);
    Ok(platform::db::fetch_page(db, query, &filter.page).await?)
}

/// Moves an order to `next` if the state machine allows it from its current status.
///
/// The write is conditional on the status it was read with, so of two concurrent
/// updates only one can win; the loser gets 409 naming both statuses.
#[tracing::instrument(skip(db))]
pub async fn change_status(
    db: &DatabaseConnection,
    id: i64,
    next: OrderStatus,
) -> Result<Order, ApiError> {
    let current = find(db, id).await?;
    if current.status == next {
        return Ok(current);
    }
    if !current.status.can_become(next) {
        return Err(transition_conflict(current.status, next));
    }
    let updated = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(next))
        .col_expr(order::Column::UpdatedAt, Expr::value(now()))
        .filter(live().add(order::Column::Id.eq(id)))
        .filter(order::Column::Status.eq(current.status))
        .exec_with_returning(db)
        .await?;
    match updated.into_iter().next() {
        Some(order) => Ok(order),
        // Someone changed it between our read and write: report what it is now.
        None => match find(db, id).await?.status {
            now if now == next => Err(ApiError::Conflict(format!(
                "order was concurrently changed to {now}"
            ))),
            now => Err(transition_conflict(now, next)),
        },
    }
}

fn transition_conflict(from: OrderStatus, to: OrderStatus) -> ApiError {
    ApiError::Conflict(format!("cannot change order status from {from} to {to}"))
}

#[tracing::instrument(skip(db))]
pub async fn soft_delete(db: &DatabaseConnection, id: i64) -> Result<(), ApiError> {
    let result = order::Entity::update_many()
        .col_expr(order::Column::DeletedAt, Expr::value(now()))
        .filter(live().add(order::Column::Id.eq(id)))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        Err(not_found(id))
    } else {
        Ok(())
    }
}

/// The oldest live orders whose user is not yet verified.
pub async fn unverified(db: &DatabaseConnection, limit: u64) -> Result<Vec<Order>, ApiError> {
    Ok(order::Entity::find()
        .filter(live().add(order::Column::UserVerified.eq(false)))
        .order_by_asc(order::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Marks these still-unverified orders verified; returns how many changed.
pub async fn mark_verified(db: &DatabaseConnection, ids: &[i64]) -> Result<u64, ApiError> {
    let result = order::Entity::update_many()
        .col_expr(order::Column::UserVerified, Expr::value(true))
        .col_expr(order::Column::UpdatedAt, Expr::value(now()))
        .filter(order::Column::Id.is_in(ids.iter().copied()))
        .filter(order::Column::UserVerified.eq(false))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Settles orders whose user turned out not to exist or to be inactive: those that
/// can still be cancelled are; those already past that point keep their status.
/// All are marked verified with the reason, so they leave the queue either way;
/// both statements commit together.
pub async fn reject_unverified(
    db: &DatabaseConnection,
    ids: &[i64],
    reason: &str,
) -> Result<u64, ApiError> {
    let txn = db.begin().await?;
    let cancelled = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(OrderStatus::Cancelled))
        .col_expr(order::Column::UserVerified, Expr::value(true))
        .col_expr(order::Column::StatusReason, Expr::value(reason.to_owned()))
        .col_expr(order::Column::UpdatedAt, Expr::value(now()))
        .filter(order::Column::Id.is_in(ids.iter().copied()))
        .filter(order::Column::UserVerified.eq(false))
        .filter(order::Column::Status.is_in(OrderStatus::cancellable()))
        .exec(&txn)
        .await?
        .rows_affected;
    let too_late = order::Entity::update_many()
        .col_expr(order::Column::UserVerified, Expr::value(true))
        .col_expr(
            order::Column::StatusReason,
            Expr::value(format!("{reason} (found after the order had progressed)")),
        )
        .col_expr(order::Column::UpdatedAt, Expr::value(now()))
        .filter(order::Column::Id.is_in(ids.iter().copied()))
        .filter(order::Column::UserVerified.eq(false))
        .exec(&txn)
        .await?
        .rows_affected;
    txn.commit().await?;
    if too_late > 0 {
        tracing::warn!(
            orders = too_late,
            reason,
            "user rejected after orders had shipped; left for a person to review"
        );
    }
    Ok(cancelled)
}
