//! SQL for orders: plain async functions on the database, one statement text for
//! PostgreSQL and SQLite. Every query sees live rows only (`deleted_at IS NULL`).

use std::sync::LazyLock;

use chrono::{SubsecRound, Utc};
use platform::ApiError;
use platform::db::{Database, Filter, SqlParam, fetch_page};

use crate::model::{CreateOrderRequest, Order, OrderFilter, OrderStatus};

fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("order {id} not found"))
}

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO orders (user_id, product_id, quantity, total_price_cents, status, \
         user_verified, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {}",
        Order::COLUMNS
    )
});

static FIND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM orders WHERE id = $1 AND deleted_at IS NULL",
        Order::COLUMNS
    )
});

/// Conditional on the status the caller read, so of two racing updates one wins.
static CHANGE_STATUS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders SET status = $3, updated_at = $4 \
         WHERE id = $1 AND deleted_at IS NULL AND status = $2 RETURNING {}",
        Order::COLUMNS
    )
});

const SOFT_DELETE: &str = "UPDATE orders SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL";

static UNVERIFIED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM orders WHERE deleted_at IS NULL AND user_verified = FALSE \
         ORDER BY id LIMIT $1",
        Order::COLUMNS
    )
});

const MARK_VERIFIED: &str = "UPDATE orders SET user_verified = TRUE, updated_at = $2 WHERE id = $1 AND user_verified = FALSE";

/// Cancels the order if it still can be cancelled, else only records why it should
/// have been; either way it leaves the verification queue. One statement, so the
/// status and the reason change together. `SET` reads the old row; `RETURNING`
/// the new one, whose reason tells which branch was taken.
static REJECT: LazyLock<String> = LazyLock::new(|| {
    let cancellable = OrderStatus::cancellable()
        .map(|s| format!("'{}'", s.as_str()))
        .join(", ");
    format!(
        "UPDATE orders SET \
         status = CASE WHEN status IN ({cancellable}) THEN $4 ELSE status END, \
         status_reason = CASE WHEN status IN ({cancellable}) THEN $2 ELSE $3 END, \
         user_verified = TRUE, updated_at = $5 \
         WHERE id = $1 AND user_verified = FALSE \
         RETURNING status_reason = $2 AS cancelled"
    )
});

/// Inserts a pending order; `user_verified` records whether user-service vouched for the user.
pub async fn insert(
    db: &Database,
    request: &CreateOrderRequest,
    user_verified: bool,
) -> Result<Order, ApiError> {
    let quantity = i32::try_from(request.quantity)
        .map_err(|_| ApiError::invalid_field("quantity", "out of range"))?;
    let params: [&dyn SqlParam; 7] = [
        &request.user_id,
        &request.product_id,
        &quantity,
        &request.total_price.0,
        &OrderStatus::Pending.as_str(),
        &user_verified,
        &now(),
    ];
    let row = db.query_one(&INSERT, &params).await?;
    Ok(Order::from_row(&row)?)
}

pub async fn find(db: &Database, id: i64) -> Result<Order, ApiError> {
    match db.query_opt(&FIND, &[&id]).await? {
        Some(row) => Ok(Order::from_row(&row)?),
        None => Err(not_found(id)),
    }
}

/// One page of live orders, newest first, and the total matching the filter.
pub async fn list(db: &Database, filter: &OrderFilter) -> Result<(Vec<Order>, u64), ApiError> {
    let status = filter.status.map(OrderStatus::as_str);
    let mut conditions = Filter::new("deleted_at IS NULL");
    if let Some(user_id) = &filter.user_id {
        conditions = conditions.and("user_id = ?", user_id);
    }
    if let Some(status) = &status {
        conditions = conditions.and("status = ?", status);
    }
    if let Some(product_id) = &filter.product_id {
        // Exact match on a bound value, so `%` or `'` are just characters.
        conditions = conditions.and("product_id = ?", product_id);
    }
    let (rows, total) = fetch_page(
        db,
        Order::COLUMNS,
        "orders",
        conditions,
        "created_at DESC, id DESC",
        &filter.page,
    )
    .await?;
    let orders = rows.iter().map(Order::from_row).collect::<Result<_, _>>()?;
    Ok((orders, total))
}

/// Moves an order to `next` if the state machine allows it from its current status.
///
/// The write is conditional on the status it was read with, so of two concurrent
/// updates only one can win; the loser gets 409 naming both statuses.
pub async fn change_status(db: &Database, id: i64, next: OrderStatus) -> Result<Order, ApiError> {
    let current = find(db, id).await?;
    if current.status == next {
        return Ok(current);
    }
    if !current.status.can_become(next) {
        return Err(transition_conflict(current.status, next));
    }
    let params: [&dyn SqlParam; 4] = [&id, &current.status.as_str(), &next.as_str(), &now()];
    match db.query_opt(&CHANGE_STATUS, &params).await? {
        Some(row) => Ok(Order::from_row(&row)?),
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

pub async fn soft_delete(db: &Database, id: i64) -> Result<(), ApiError> {
    match db.execute(SOFT_DELETE, &[&id, &now()]).await? {
        0 => Err(not_found(id)),
        _ => Ok(()),
    }
}

/// The oldest live orders whose user is not yet verified.
pub async fn unverified(db: &Database, limit: u64) -> Result<Vec<Order>, ApiError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = db.query(&UNVERIFIED, &[&limit]).await?;
    Ok(rows.iter().map(Order::from_row).collect::<Result<_, _>>()?)
}

/// Marks these still-unverified orders verified; returns how many changed.
/// One statement per order: a batch is small (one user's orders), and each order
/// settles on its own.
pub async fn mark_verified(db: &Database, ids: &[i64]) -> Result<u64, ApiError> {
    let at = now();
    let mut changed = 0;
    for id in ids {
        changed += db.execute(MARK_VERIFIED, &[id, &at]).await?;
    }
    Ok(changed)
}

/// Settles orders whose user turned out not to exist or to be inactive: those that
/// can still be cancelled are; those already past that point keep their status.
/// All are marked verified with the reason, so they leave the queue either way.
/// Returns how many were cancelled.
pub async fn reject_unverified(db: &Database, ids: &[i64], reason: &str) -> Result<u64, ApiError> {
    let too_late_reason = format!("{reason} (found after the order had progressed)");
    let cancelled_status = OrderStatus::Cancelled.as_str();
    let at = now();
    let (mut cancelled, mut too_late) = (0u64, 0u64);
    for id in ids {
        let params: [&dyn SqlParam; 5] = [id, &reason, &too_late_reason, &cancelled_status, &at];
        if let Some(row) = db.query_opt(&REJECT, &params).await? {
            if row.get::<bool>("cancelled")? {
                cancelled += 1;
            } else {
                too_late += 1;
            }
        }
    }
    if too_late > 0 {
        tracing::warn!(
            orders = too_late,
            reason,
            "user rejected after orders had shipped; left for a person to review"
        );
    }
    Ok(cancelled)
}
