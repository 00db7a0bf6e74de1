//! SQL for users: plain async functions on the database, one statement text for
//! PostgreSQL and SQLite. Every query sees live rows only (`deleted_at IS NULL`).

use std::sync::LazyLock;

use chrono::{SubsecRound, Utc};
use platform::ApiError;
use platform::db::{Database, DbError, Filter, fetch_page};

use crate::model::{UpdateUserRequest, User, UserFilter, normalize_email};

/// Timestamps at microsecond precision, which both backends store exactly.
fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("user {id} not found"))
}

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO users (email, name, age, active, created_at, updated_at) \
         VALUES ($1, $2, $3, TRUE, $4, $4) RETURNING {}",
        User::COLUMNS
    )
});

static FIND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM users WHERE id = $1 AND deleted_at IS NULL",
        User::COLUMNS
    )
});

/// Absent fields keep their value (`COALESCE` with a NULL parameter), so one
/// statement serves every combination of changes.
static UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE users SET name = COALESCE($2, name), age = COALESCE($3, age), \
         active = COALESCE($4, active), updated_at = $5 \
         WHERE id = $1 AND deleted_at IS NULL RETURNING {}",
        User::COLUMNS
    )
});

const SOFT_DELETE: &str = "UPDATE users SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL";

/// Inserts a user; the partial unique index decides duplicates, so two racing
/// requests cannot both win.
pub async fn insert(db: &Database, email: &str, name: &str, age: i32) -> Result<User, ApiError> {
    let email = normalize_email(email);
    let row = db
        .query_one(&INSERT, &[&email, &name, &age, &now()])
        .await
        .map_err(|err| match err {
            DbError::UniqueViolation(_) => {
                ApiError::Conflict(format!("a user with email {email} already exists"))
            }
            other => other.into(),
        })?;
    Ok(User::from_row(&row)?)
}

/// The live user with this id.
pub async fn find(db: &Database, id: i64) -> Result<User, ApiError> {
    match db.query_opt(&FIND, &[&id]).await? {
        Some(row) => Ok(User::from_row(&row)?),
        None => Err(not_found(id)),
    }
}

/// One page of live users, newest first, and the total matching the filter.
pub async fn list(db: &Database, filter: &UserFilter) -> Result<(Vec<User>, u64), ApiError> {
    let pattern = filter.search.as_deref().map(like_pattern);
    let mut conditions = Filter::new("deleted_at IS NULL");
    if let Some(active) = &filter.active {
        conditions = conditions.and("active = ?", active);
    }
    if let Some(pattern) = &pattern {
        conditions = conditions.and(
            r"(LOWER(name) LIKE ? ESCAPE '\' OR LOWER(email) LIKE ? ESCAPE '\')",
            pattern,
        );
    }
    let (rows, total) = fetch_page(
        db,
        User::COLUMNS,
        "users",
        conditions,
        "created_at DESC, id DESC",
        &filter.page,
    )
    .await?;
    let users = rows.iter().map(User::from_row).collect::<Result<_, _>>()?;
    Ok((users, total))
}

/// `%term%` for `LOWER(column) LIKE`, with `%`, `_` and `\` escaped so they match
/// themselves. The term is lowered in Rust, so it is Unicode-aware; SQLite's
/// LOWER() folds ASCII only, so on SQLite non-ASCII capitals in stored names match
/// only their exact case.
fn like_pattern(term: &str) -> String {
    let escaped = term
        .to_lowercase()
        .replace('\\', r"\\")
        .replace('%', r"\%")
        .replace('_', r"\_");
    format!("%{escaped}%")
}

/// Applies the given changes in one statement and returns the updated user.
pub async fn update(db: &Database, id: i64, changes: &UpdateUserRequest) -> Result<User, ApiError> {
    if changes.is_empty() {
        return find(db, id).await;
    }
    let age = changes
        .age
        .map(i32::try_from)
        .transpose()
        .map_err(|_| ApiError::invalid_field("age", "out of range"))?;
    let params: [&dyn platform::db::SqlParam; 5] =
        [&id, &changes.name, &age, &changes.active, &now()];
    match db.query_opt(&UPDATE, &params).await? {
        Some(row) => Ok(User::from_row(&row)?),
        None => Err(not_found(id)),
    }
}

/// Marks the user deleted; a second delete finds nothing.
pub async fn soft_delete(db: &Database, id: i64) -> Result<(), ApiError> {
    match db.execute(SOFT_DELETE, &[&id, &now()]).await? {
        0 => Err(not_found(id)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_wildcards_in_a_search_term_match_themselves() {
        assert_eq!(like_pattern(r"50%_off\"), r"%50\%\_off\\%");
        assert_eq!(like_pattern("ÄBC"), "%äbc%");
    }
}
