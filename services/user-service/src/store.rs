//! SQL for users: plain async functions on the database, one statement text for
//! PostgreSQL and SQLite. Every query sees live rows only (`deleted_at IS NULL`).

use std::sync::LazyLock;

use platform::db::{Database, SqlParam, now};
use platform::events::{Origin, outbox};
use platform::idempotency::Recorder;
use platform::pagination::{Filter, Page, PageMeta, fetch_page};

use crate::error::UserError;
use crate::model::{Age, CreateUserRequest, Email, UpdateUserRequest, User, UserFilter, UserRole};
use crate::search::Search;

/// The partial unique index on live users' emails, as each backend names it.
const EMAIL_INDEX: (&str, &str) = ("users_email_live_key", "users.email");

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO users (email, name, age, active, created_at, updated_at, \
         password_hash, role, created_by, updated_by) \
         VALUES ($1, $2, $3, TRUE, $4, $4, $5, $6, $7, $7) RETURNING {}",
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
         active = COALESCE($4, active), updated_at = $5, \
         password_hash = COALESCE($6, password_hash), role = COALESCE($7, role), updated_by = $8 \
         WHERE id = $1 AND deleted_at IS NULL RETURNING {}",
        User::COLUMNS
    )
});

const SOFT_DELETE: &str =
    "UPDATE users SET deleted_at = $2, updated_by = $3 WHERE id = $1 AND deleted_at IS NULL";

const FIND_CREDENTIALS: &str =
    "SELECT id, role, active, password_hash FROM users WHERE email = $1 AND deleted_at IS NULL";

const FIND_PASSWORD_HASH: &str =
    "SELECT password_hash FROM users WHERE id = $1 AND deleted_at IS NULL";

/// What a login needs of a live user, and nothing an answer could show.
pub struct Credentials {
    pub id: i64,
    pub role: UserRole,
    pub active: bool,
    pub password_hash: Option<String>,
}

/// Inserts a user and its `user.created` event in one transaction; the partial
/// unique index decides duplicates, so two racing requests cannot both win.
/// `created_by` is the origin's subject (none for self-registration).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn insert(
    db: &Database,
    request: &CreateUserRequest,
    password_hash: Option<String>,
    origin: &Origin,
    recorder: Option<&Recorder<'_, User>>,
) -> Result<User, UserError> {
    let created_by = origin.subject();
    let email: &String = &request.email;
    let name: &String = &request.name;
    let role = request.role.unwrap_or_default().as_str().to_owned();
    let params: [&dyn SqlParam; 7] = [
        &email,
        &name,
        &request.age.as_i32(),
        &now(),
        &password_hash,
        &role,
        &created_by,
    ];
    let mut transaction = db.begin().await?;
    let row = transaction
        .query_one(&INSERT, &params)
        .await
        .map_err(|err| match err {
            err if err.violates(EMAIL_INDEX.0, EMAIL_INDEX.1) => {
                UserError::EmailTaken(email.clone())
            }
            other => other.into(),
        })?;
    let user = User::from_row(&row)?;
    let event = origin.event("user.created", user.resource(), user.event_payload());
    outbox::commit_with(transaction, &event, recorder, &user).await?;
    Ok(user)
}

/// The live user with this id.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn find(db: &Database, id: i64) -> Result<User, UserError> {
    match db.lookup(&FIND, &[&id]).await? {
        Some(row) => Ok(User::from_row(&row)?),
        None => Err(UserError::NotFound(id)),
    }
}

/// The login record of the live user with this (lower-cased) email.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn find_credentials(
    db: &Database,
    email: &Email,
) -> Result<Option<Credentials>, UserError> {
    let email: &String = email;
    let Some(row) = db.lookup(FIND_CREDENTIALS, &[&email]).await? else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        id: row.get("id")?,
        role: UserRole::from_column(&row.get::<String>("role")?)?,
        active: row.get("active")?,
        password_hash: row.get("password_hash")?,
    }))
}

/// The password hash of a live user (`None` inside when it has none).
#[tracing::instrument(level = "debug", skip(db))]
pub async fn find_password_hash(db: &Database, id: i64) -> Result<Option<String>, UserError> {
    match db.lookup(FIND_PASSWORD_HASH, &[&id]).await? {
        Some(row) => Ok(row.get("password_hash")?),
        None => Err(UserError::NotFound(id)),
    }
}

/// One page of live users, newest first, and its meta.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn list(
    db: &Database,
    page: &Page,
    filter: &UserFilter,
) -> Result<(Vec<User>, PageMeta), UserError> {
    let search = filter.search_term().map(Search::new);
    let mut conditions = Filter::new("deleted_at IS NULL");
    if let Some(active) = &filter.active {
        conditions = conditions.and("active = ?", active);
    }
    if let Some(search) = &search {
        conditions = search.apply(db, conditions);
    }
    let (rows, meta) = fetch_page(db, User::COLUMNS, "users", conditions, page).await?;
    let users = rows.iter().map(User::from_row).collect::<Result<_, _>>()?;
    Ok((users, meta))
}

/// Applies the given changes in one statement, with their event (`user.deactivated`
/// when `active` becomes false, else `user.updated`, naming the changed fields)
/// in the same transaction, and returns the updated user. The password arrives
/// hashed; `updated_by` is the origin's subject.
#[tracing::instrument(level = "debug", skip(db, changes, password_hash, origin))]
pub async fn update(
    db: &Database,
    id: i64,
    changes: &UpdateUserRequest,
    password_hash: Option<String>,
    origin: &Origin,
) -> Result<User, UserError> {
    if changes.is_empty() {
        return find(db, id).await;
    }
    let updated_by = origin.subject();
    let name = changes
        .name
        .clone()
        .map(platform::validation::Text::into_inner);
    let age = changes.age.map(Age::as_i32);
    let role = changes.role.map(|r| r.as_str().to_owned());
    let params: [&dyn SqlParam; 8] = [
        &id,
        &name,
        &age,
        &changes.active,
        &now(),
        &password_hash,
        &role,
        &updated_by,
    ];
    let mut transaction = db.begin().await?;
    let Some(row) = transaction.query_opt(&UPDATE, &params).await? else {
        return Err(UserError::NotFound(id));
    };
    let user = User::from_row(&row)?;
    let event_type = if changes.active == Some(false) {
        "user.deactivated"
    } else {
        "user.updated"
    };
    let mut payload = user.event_payload();
    payload["changed"] = serde_json::json!(changes.field_names());
    let event = origin.event(event_type, user.resource(), payload);
    outbox::record_and_commit(transaction, &event).await?;
    Ok(user)
}

/// Marks the user deleted, with its `user.deleted` event; a second delete finds nothing.
#[tracing::instrument(level = "debug", skip(db, origin))]
pub async fn soft_delete(db: &Database, id: i64, origin: &Origin) -> Result<(), UserError> {
    match outbox::soft_delete(db, SOFT_DELETE, "user", id, origin).await? {
        true => Ok(()),
        false => Err(UserError::NotFound(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::testing::TestDatabase;

    /// A fresh database holding one user made from `body`.
    async fn one_user(
        backend: platform::testing::Backend,
        body: &str,
    ) -> (TestDatabase, Database, User) {
        let database = TestDatabase::create(backend).await;
        let db = platform::testing::migrated::<crate::UserService>(&database.url).await;
        let request: CreateUserRequest = platform::body::parse_json(body.as_bytes()).unwrap();
        let user = insert(&db, &request, None, &Origin::system(), None)
            .await
            .unwrap();
        (database, db, user)
    }

    platform::backend_tests! {
        async fn the_column_list_is_the_table_and_from_row_reads_it_back(backend) {
            let body = r#"{"email":"Cols@Example.com","name":"Col Umns","age":42}"#;
            let (_database, db, user) = one_user(backend, body).await;
            // Only the login reads the hash (find_credentials).
            let columns = format!("{}, password_hash", User::COLUMNS);
            platform::testing::assert_column_list(&db, "users", user.id, &columns).await;
            assert_eq!(find(&db, user.id).await.unwrap(), user, "from_row reads back what was stored");
            assert_eq!((user.email.as_str(), user.age), ("cols@example.com", 42));
            db.close().await;
        }

        async fn a_transaction_keeps_its_writes_only_when_committed(backend) {
            let body = r#"{"email":"tx@example.com","name":"Tx User","age":42}"#;
            let (_database, db, user) = one_user(backend, body).await;
            let rename = "UPDATE users SET name = $2 WHERE id = $1";
            let mut dropped = db.begin().await.unwrap();
            assert_eq!(dropped.execute(rename, &[&user.id, &"Dropped"]).await.unwrap(), 1);
            drop(dropped);
            // The one connection comes back only after its rollback; were it reused
            // still inside the dropped transaction, this commit would commit "Dropped".
            let mut other = db.begin().await.unwrap();
            other.execute("UPDATE users SET age = 43 WHERE id = $1", &[&user.id]).await.unwrap();
            other.commit().await.unwrap();
            let after_drop = find(&db, user.id).await.unwrap();
            assert_eq!((after_drop.name.as_str(), after_drop.age), ("Tx User", 43));
            let mut rolled_back = db.begin().await.unwrap();
            rolled_back.execute(rename, &[&user.id, &"Rolled Back"]).await.unwrap();
            rolled_back.rollback().await.unwrap();
            assert_eq!(find(&db, user.id).await.unwrap().name, "Tx User");
            let mut committed = db.begin().await.unwrap();
            committed.execute(rename, &[&user.id, &"Committed"]).await.unwrap();
            let seen_inside = committed.query_one("SELECT name FROM users WHERE id = $1", &[&user.id]).await.unwrap();
            assert_eq!(seen_inside.get::<String>("name").unwrap(), "Committed");
            committed.commit().await.unwrap();
            assert_eq!(find(&db, user.id).await.unwrap().name, "Committed");
            db.close().await;
        }

        // On PostgreSQL the last statement and the COMMIT go out together, and
        // the first statement takes the BEGIN along: a failing last statement
        // must still roll back the ones before it, and leave the (only)
        // connection outside any transaction.
        async fn a_failing_last_statement_keeps_nothing_of_its_transaction(backend) {
            let body = r#"{"email":"last@example.com","name":"Last Statement","age":42}"#;
            let (_database, db, user) = one_user(backend, body).await;
            let rename = "UPDATE users SET name = $2 WHERE id = $1";
            let twin = "INSERT INTO users (email, name, age, active, created_at, updated_at) \
                        SELECT email, name, age, active, created_at, updated_at FROM users WHERE id = $1";
            let mut transaction = db.begin().await.unwrap();
            transaction.execute(rename, &[&user.id, &"Renamed"]).await.unwrap();
            let err = transaction.execute_and_commit(twin, &[&user.id]).await.unwrap_err();
            assert!(matches!(err, platform::db::DbError::UniqueViolation { .. }), "{err:?}");
            assert_eq!(find(&db, user.id).await.unwrap().name, "Last Statement");

            let empty = db.begin().await.unwrap();
            empty.commit().await.unwrap();
            let mut transaction = db.begin().await.unwrap();
            transaction.execute(rename, &[&user.id, &"Renamed"]).await.unwrap();
            let changed = transaction
                .execute_and_commit("UPDATE users SET age = 44 WHERE id = $1", &[&user.id])
                .await
                .unwrap();
            assert_eq!(changed, 1);
            let after = find(&db, user.id).await.unwrap();
            assert_eq!((after.name.as_str(), after.age), ("Renamed", 44));
            let alone = db.begin().await.unwrap();
            alone.execute_and_commit(rename, &[&user.id, &"Alone"]).await.unwrap();
            assert_eq!(find(&db, user.id).await.unwrap().name, "Alone");
            db.close().await;
        }
    }

    /// A request cancelled while its BEGIN waits for SQLite's write lock (a
    /// client that hung up) must not leave a connection inside a transaction in
    /// the pool: it would hold the lock and fail every later BEGIN.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_begin_leaves_no_transaction_in_the_pool() {
        let body = r#"{"email":"lock@example.com","name":"Lock Holder","age":42}"#;
        let (database, db, user) = one_user(platform::testing::Backend::Sqlite, body).await;
        let other = platform::testing::connect(&database.url).await;
        let holder = other.begin().await.unwrap();
        for _ in 0..3 {
            let waiting =
                tokio::time::timeout(std::time::Duration::from_millis(100), db.begin()).await;
            assert!(waiting.is_err(), "the write lock is held");
        }
        holder.rollback().await.unwrap();
        for round in 0..8 {
            let mut transaction = db
                .begin()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            transaction
                .execute("UPDATE users SET age = age WHERE id = $1", &[&user.id])
                .await
                .unwrap();
            transaction.commit().await.unwrap();
        }
        db.close().await;
        other.close().await;
    }
}
