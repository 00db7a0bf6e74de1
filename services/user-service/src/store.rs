//! SQL for users: plain async functions on the connection, one code path for
//! PostgreSQL and SQLite. Every query sees live rows only (`deleted_at IS NULL`).

use chrono::{SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, Set, SqlErr,
};

use crate::model::{UpdateUserRequest, User, UserFilter, normalize_email, user};
use platform::ApiError;

/// Timestamps at microsecond precision, which both backends store exactly.
fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("user {id} not found"))
}

/// Maps a unique-index violation to 409 here, where we know it was the email.
fn conflict_on_duplicate_email(err: DbErr, email: &str) -> ApiError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            ApiError::Conflict(format!("a user with email {email} already exists"))
        }
        _ => err.into(),
    }
}

/// Inserts a user; the partial unique index decides duplicates, so two racing
/// requests cannot both win.
#[tracing::instrument(skip_all)]
pub async fn insert(
    db: &DatabaseConnection,
    email: &str,
    name: &str,
    age: i32,
) -> Result<User, ApiError> {
    let email = normalize_email(email);
    let at = now();
    user::ActiveModel {
        email: Set(email.clone()),
        name: Set(name.to_owned()),
        age: Set(age),
        active: Set(true),
        created_at: Set(at),
        updated_at: Set(at),
        deleted_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
    .map_err(|e| conflict_on_duplicate_email(e, &email))
}

/// The live user with this id.
#[tracing::instrument(skip(db))]
pub async fn find(db: &DatabaseConnection, id: i64) -> Result<User, ApiError> {
    user::Entity::find_by_id(id)
        .filter(user::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .ok_or_else(|| not_found(id))
}

/// One page of live users, newest first, and the total matching the filter.
#[tracing::instrument(skip(db))]
pub async fn list(
    db: &DatabaseConnection,
    filter: &UserFilter,
) -> Result<(Vec<User>, u64), ApiError> {
    let mut condition = Condition::all().add(user::Column::DeletedAt.is_null());
    if let Some(active) = filter.active {
        condition = condition.add(user::Column::Active.eq(active));
    }
    if let Some(search) = &filter.search {
        condition = condition.add(matches_search(search));
    }
    let query = user::Entity::find()
        .filter(condition)
        .order_by_desc(user::Column::CreatedAt)
        .order_by_desc(user::Column::Id);
    Ok(platform::db::fetch_page(db, query, &filter.page).await?)
}

/// `LOWER(name) LIKE '%term%' OR LOWER(email) LIKE …`, with `%`, `_` and `\` in
/// the term escaped so they match themselves. The term is lowered in Rust, so it
/// is Unicode-aware; SQLite's LOWER() folds ASCII only, so on SQLite non-ASCII
/// capitals in stored names match only their exact case.
fn matches_search(term: &str) -> Condition {
    let escaped = term
        .to_lowercase()
        .replace('\\', r"\\")
        .replace('%', r"\%")
        .replace('_', r"\_");
    let pattern = format!("%{escaped}%");
    let like = |column: user::Column| {
        Expr::expr(Func::lower(Expr::col(column))).like(LikeExpr::new(pattern.clone()).escape('\\'))
    };
    Condition::any()
        .add(like(user::Column::Name))
        .add(like(user::Column::Email))
}

/// Applies the given changes in one statement and returns the updated user.
#[tracing::instrument(skip(db))]
pub async fn update(
    db: &DatabaseConnection,
    id: i64,
    changes: &UpdateUserRequest,
) -> Result<User, ApiError> {
    if changes.is_empty() {
        return find(db, id).await;
    }
    let mut statement = user::Entity::update_many()
        .col_expr(user::Column::UpdatedAt, Expr::value(now()))
        .filter(user::Column::Id.eq(id))
        .filter(user::Column::DeletedAt.is_null());
    if let Some(name) = &changes.name {
        statement = statement.col_expr(user::Column::Name, Expr::value(name.clone()));
    }
    if let Some(age) = changes.age {
        let age = i32::try_from(age).map_err(|_| ApiError::invalid_field("age", "out of range"))?;
        statement = statement.col_expr(user::Column::Age, Expr::value(age));
    }
    if let Some(active) = changes.active {
        statement = statement.col_expr(user::Column::Active, Expr::value(active));
    }
    statement
        .exec_with_returning(db)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(id))
}

/// Marks the user deleted; a second delete finds nothing.
#[tracing::instrument(skip(db))]
pub async fn soft_delete(db: &DatabaseConnection, id: i64) -> Result<(), ApiError> {
    let result = user::Entity::update_many()
        .col_expr(user::Column::DeletedAt, Expr::value(now()))
        .filter(user::Column::Id.eq(id))
        .filter(user::Column::DeletedAt.is_null())
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        Err(not_found(id))
    } else {
        Ok(())
    }
}
