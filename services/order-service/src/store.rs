//! SQL for orders: plain async functions on the database, one statement text for
//! PostgreSQL and SQLite. Every query sees live rows only (`deleted_at IS NULL`).

use std::sync::LazyLock;

use platform::db::{Database, DbError, SqlParam, now};
use platform::events::{Event, Origin, outbox};
use platform::idempotency::Recorder;
use platform::pagination::{Filter, Page, PageMeta, fetch_page};
use serde_json::json;

use crate::error::OrderError;
use crate::model::{CreateOrderRequest, Order, OrderFilter, OrderStatus};

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO orders (user_id, product_id, quantity, total_price_cents, status, \
         user_verified, created_at, updated_at, created_by, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $8) RETURNING {}",
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
        "UPDATE orders SET status = $3, updated_at = $4, updated_by = $5 \
         WHERE id = $1 AND deleted_at IS NULL AND status = $2 RETURNING {}",
        Order::COLUMNS
    )
});

const SOFT_DELETE: &str =
    "UPDATE orders SET deleted_at = $2, updated_by = $3 WHERE id = $1 AND deleted_at IS NULL";

static UNVERIFIED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM orders WHERE deleted_at IS NULL AND user_verified = FALSE \
         ORDER BY id LIMIT $1",
        Order::COLUMNS
    )
});

static CANCEL_PENDING_OF_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders SET status = 'cancelled', status_reason = $2, updated_at = $3, \
         updated_by = 'system' \
         WHERE user_id = $1 AND status = 'pending' AND deleted_at IS NULL RETURNING {}",
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
         user_verified = TRUE, updated_at = $5, updated_by = 'system' \
         WHERE id = $1 AND user_verified = FALSE \
         RETURNING status_reason = $2 AS cancelled"
    )
});

/// Inserts a pending order for `user_id` and its `order.created` event in one
/// transaction (with the answer to an idempotent request, when `recorder` is
/// given); `user_verified` records whether user-service vouched for the user,
/// `created_by` is the origin's subject.
#[tracing::instrument(level = "debug", skip(db, request, origin, recorder))]
pub async fn insert(
    db: &Database,
    request: &CreateOrderRequest,
    user_id: i64,
    user_verified: bool,
    origin: &Origin,
    recorder: Option<&Recorder<'_, Order>>,
) -> Result<Order, DbError> {
    let product_id: &String = &request.product_id;
    let created_by = origin.subject();
    let params: [&dyn SqlParam; 8] = [
        &user_id,
        &product_id,
        &request.quantity.as_i32(),
        &request.total_price.0,
        &OrderStatus::Pending.as_str(),
        &user_verified,
        &now(),
        &created_by,
    ];
    let mut transaction = db.begin().await?;
    let row = transaction.query_one(&INSERT, &params).await?;
    let order = Order::from_row(&row)?;
    let event = origin.event("order.created", order.resource(), order.event_payload());
    outbox::commit_with(transaction, &event, recorder, &order).await?;
    Ok(order)
}

/// The live order with this id.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn find(db: &Database, id: i64) -> Result<Order, OrderError> {
    match db.lookup(&FIND, &[&id]).await? {
        Some(row) => Ok(Order::from_row(&row)?),
        None => Err(OrderError::NotFound(id)),
    }
}

/// One page of live orders, newest first, and its meta. Each filter has an
/// index in the list's order (see the `list_indexes` migration).
#[tracing::instrument(level = "debug", skip(db))]
pub async fn list(
    db: &Database,
    page: &Page,
    filter: &OrderFilter,
) -> Result<(Vec<Order>, PageMeta), DbError> {
    let user_id = filter.user_id.map(platform::validation::Int::get);
    let status = filter.status.map(OrderStatus::as_str);
    let product_id: Option<&String> = filter.product_id.as_deref();
    let mut conditions = Filter::new("deleted_at IS NULL");
    if let Some(user_id) = &user_id {
        conditions = conditions.and("user_id = ?", user_id);
    }
    if let Some(status) = &status {
        conditions = conditions.and("status = ?", status);
    }
    if let Some(product_id) = &product_id {
        // Exact match on a bound value, so `%` or `'` are just characters.
        conditions = conditions.and("product_id = ?", product_id);
    }
    let (rows, meta) = fetch_page(db, Order::COLUMNS, "orders", conditions, page).await?;
    let orders = rows.iter().map(Order::from_row).collect::<Result<_, _>>()?;
    Ok((orders, meta))
}

/// Moves an order to `next` if the state machine allows it from its current status.
///
/// The write is conditional on the status it was read with, so of two concurrent
/// updates only one can win; the loser gets 409 naming both statuses. An
/// idempotent request's answer is recorded with the change (`recorder`).
#[tracing::instrument(level = "debug", skip(db, origin, recorder))]
pub async fn change_status(
    db: &Database,
    id: i64,
    next: OrderStatus,
    origin: &Origin,
    recorder: Option<&Recorder<'_, Order>>,
) -> Result<Order, OrderError> {
    let current = find(db, id).await?;
    if current.status == next {
        return Ok(current);
    }
    if !current.status.can_become(next) {
        return Err(OrderError::Transition {
            from: current.status,
            to: next,
        });
    }
    let updated_by = origin.subject();
    let params: [&dyn SqlParam; 5] = [
        &id,
        &current.status.as_str(),
        &next.as_str(),
        &now(),
        &updated_by,
    ];
    let mut transaction = db.begin().await?;
    if let Some(row) = transaction.query_opt(&CHANGE_STATUS, &params).await? {
        let order = Order::from_row(&row)?;
        let event = status_changed(origin, &order, current.status, None);
        outbox::commit_with(transaction, &event, recorder, &order).await?;
        return Ok(order);
    }
    // Someone changed it between our read and write: report what it is now.
    drop(transaction);
    match find(db, id).await?.status {
        now if now == next => Err(OrderError::ConcurrentlyChanged(now)),
        now => Err(OrderError::Transition {
            from: now,
            to: next,
        }),
    }
}

/// The `order.status_changed` event of `order` (already changed) from `from`.
fn status_changed(
    origin: &Origin,
    order: &Order,
    from: OrderStatus,
    reason: Option<&str>,
) -> Event {
    let payload =
        json!({"from": from, "to": order.status, "reason": reason, "user_id": order.user_id});
    origin.event("order.status_changed", order.resource(), payload)
}

/// Marks the order deleted, with its `order.deleted` event; a second delete finds nothing.
#[tracing::instrument(level = "debug", skip(db, origin))]
pub async fn soft_delete(db: &Database, id: i64, origin: &Origin) -> Result<(), OrderError> {
    match outbox::soft_delete(db, SOFT_DELETE, "order", id, origin).await? {
        true => Ok(()),
        false => Err(OrderError::NotFound(id)),
    }
}

/// Cancels the user's pending orders (the user was deleted or deactivated),
/// each with its `order.status_changed` event by `system`, in one transaction.
/// Idempotent: a second call finds nothing pending. Returns how many.
#[tracing::instrument(level = "debug", skip(db, origin))]
pub async fn cancel_pending_of_user(
    db: &Database,
    user_id: i64,
    reason: &str,
    origin: &Origin,
) -> Result<u64, DbError> {
    let mut transaction = db.begin().await?;
    let params: [&dyn SqlParam; 3] = [&user_id, &reason.to_owned(), &now()];
    let rows = transaction.query(&CANCEL_PENDING_OF_USER, &params).await?;
    for row in &rows {
        let order = Order::from_row(row)?;
        let event = status_changed(origin, &order, OrderStatus::Pending, Some(reason));
        outbox::record(&mut transaction, &event).await?;
    }
    transaction.commit().await?;
    Ok(rows.len() as u64)
}

/// The oldest live orders whose user is not yet verified.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn unverified(db: &Database, limit: u64) -> Result<Vec<Order>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = db.query(&UNVERIFIED, &[&limit]).await?;
    rows.iter().map(Order::from_row).collect()
}

/// Marks these still-unverified orders verified, in one transaction; returns
/// how many changed.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn mark_verified(db: &Database, ids: &[i64]) -> Result<u64, DbError> {
    let at = now();
    let mut changed = 0;
    let mut transaction = db.begin().await?;
    for id in ids {
        changed += transaction.execute(MARK_VERIFIED, &[id, &at]).await?;
    }
    transaction.commit().await?;
    Ok(changed)
}

/// Settles orders whose user turned out not to exist or to be inactive: those that
/// can still be cancelled are; those already past that point keep their status.
/// All are marked verified with the reason, so they leave the queue either way.
/// Returns how many were cancelled. One transaction for the whole batch.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn reject_unverified(db: &Database, ids: &[i64], reason: &str) -> Result<u64, DbError> {
    let too_late_reason = format!("{reason} (found after the order had progressed)");
    let cancelled_status = OrderStatus::Cancelled.as_str();
    let at = now();
    let (mut cancelled, mut too_late) = (0u64, 0u64);
    let mut transaction = db.begin().await?;
    let lock = if db.backend_name() == "postgres" {
        " FOR UPDATE"
    } else {
        ""
    };
    let read = format!("SELECT {} FROM orders WHERE id = $1{lock}", Order::COLUMNS);
    for id in ids {
        // Read (and on PostgreSQL lock) first: the event names the status it left.
        let Some(before) = transaction.query_opt(&read, &[id]).await? else {
            continue;
        };
        let before = Order::from_row(&before)?;
        let params: [&dyn SqlParam; 5] = [id, &reason, &too_late_reason, &cancelled_status, &at];
        if let Some(row) = transaction.query_opt(&REJECT, &params).await? {
            if row.get::<bool>("cancelled")? {
                cancelled += 1;
                let after = Order {
                    status: OrderStatus::Cancelled,
                    ..before.clone()
                };
                let event = status_changed(&Origin::system(), &after, before.status, Some(reason));
                outbox::record(&mut transaction, &event).await?;
            } else {
                too_late += 1;
            }
        }
    }
    transaction.commit().await?;
    if too_late > 0 {
        tracing::warn!(
            orders = too_late,
            reason,
            "user rejected after orders had shipped; left for a person to review"
        );
    }
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::testing::TestDatabase;

    /// A fresh database, and the request `body` parsed.
    async fn database_and(
        backend: platform::testing::Backend,
        body: &str,
    ) -> (TestDatabase, Database, CreateOrderRequest) {
        let database = TestDatabase::create(backend).await;
        let db = platform::testing::migrated::<crate::OrderService>(&database.url).await;
        (
            database,
            db,
            platform::body::parse_json(body.as_bytes()).unwrap(),
        )
    }

    platform::backend_tests! {
        async fn the_column_list_is_the_table_and_from_row_reads_it_back(backend) {
            let body = r#"{"user_id":7,"product_id":"P-1","quantity":3,"total_price":12.34}"#;
            let (_database, db, request) = database_and(backend, body).await;
            let order = insert(&db, &request, 7, false, &Origin::system(), None).await.unwrap();
            platform::testing::assert_column_list(&db, "orders", order.id, Order::COLUMNS).await;
            assert_eq!(find(&db, order.id).await.unwrap(), order, "from_row reads back what was stored");
            assert_eq!((order.total_price_cents, order.quantity), (1234, 3));
            db.close().await;
        }

        async fn a_rejected_batch_is_written_in_one_transaction(backend) {
            let body = r#"{"user_id":7,"product_id":"P-1","quantity":1,"total_price":1}"#;
            let (_database, db, request) = database_and(backend, body).await;
            let first = insert(&db, &request, 7, false, &Origin::system(), None).await.unwrap();
            let second = insert(&db, &request, 7, false, &Origin::system(), None).await.unwrap();
            let cancelled = reject_unverified(&db, &[first.id, second.id], "user not found").await.unwrap();
            assert_eq!(cancelled, 2);
            for id in [first.id, second.id] {
                let order = find(&db, id).await.unwrap();
                assert_eq!((order.status, order.user_verified), (OrderStatus::Cancelled, true));
            }
            assert!(unverified(&db, 10).await.unwrap().is_empty());
            db.close().await;
        }
    }
}
