//! The benchmark's floor: what `GET /api/v1/users/{id}`, `POST /api/v1/users` and
//! `GET /api/v1/orders/{id}` cost with the services' own statements, transaction
//! and JSON answers, and none of their plumbing. `make bench` runs it on the
//! databases user-service and order-service migrated and seeded, and reports each
//! service's figure as a ratio to this one.
//!
//! Environment: `FLOOR_PORT`, `FLOOR_USER_DATABASE_URL`, `FLOOR_ORDER_DATABASE_URL`,
//! `FLOOR_MAX_CONNECTIONS` (20, the services' default pool). `GET /api/v1/orders/{id}`
//! embeds the order's user fetched over HTTP from the floor's own user route, as
//! order-service embeds it from user-service.

use std::env;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{NoTls, Row};

/// The statements user-service and order-service prepare (their `COLUMNS`).
const USER_COLUMNS: &str = "id, email, name, age, active, created_at, updated_at, deleted_at, \
                            role, created_by, updated_by";
const ORDER_COLUMNS: &str = "id, user_id, product_id, quantity, total_price_cents, status, \
                             user_verified, status_reason, created_at, updated_at, deleted_at, created_by, updated_by";
const INSERT_EVENT: &str =
    "INSERT INTO outbox (event_id, subject, event, created_at) VALUES ($1, $2, $3, $4)";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
struct Databases {
    users: Pool,
    orders: Pool,
    /// Embeds an order's user as order-service does: over HTTP, from the floor's own
    /// user route (a kept-alive connection pool, no breaker, no token).
    http: reqwest::Client,
    users_url: String,
}

#[derive(Serialize)]
struct UserView {
    id: i64,
    email: String,
    name: String,
    age: i32,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    role: String,
    created_by: Option<String>,
    updated_by: Option<String>,
}

impl From<&Row> for UserView {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            email: row.get("email"),
            name: row.get("name"),
            age: row.get("age"),
            active: row.get("active"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            role: row.get("role"),
            created_by: row.get("created_by"),
            updated_by: row.get("updated_by"),
        }
    }
}

#[derive(Serialize)]
struct OrderView {
    id: i64,
    user_id: i64,
    product_id: String,
    quantity: i32,
    total_price: String,
    status: String,
    user_verified: bool,
    status_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: Option<String>,
    updated_by: Option<String>,
}

impl From<&Row> for OrderView {
    fn from(row: &Row) -> Self {
        let cents: i64 = row.get("total_price_cents");
        Self {
            id: row.get("id"),
            user_id: row.get("user_id"),
            product_id: row.get("product_id"),
            quantity: row.get("quantity"),
            total_price: format!("{}.{:02}", cents / 100, cents % 100),
            status: row.get("status"),
            user_verified: row.get("user_verified"),
            status_reason: row.get("status_reason"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            created_by: row.get("created_by"),
            updated_by: row.get("updated_by"),
        }
    }
}

#[derive(Deserialize)]
struct NewUser {
    email: String,
    name: String,
    age: i32,
}

fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (status, Json(json!({ "success": true, "data": data }))).into_response()
}

fn failed(status: StatusCode, error: impl std::fmt::Display) -> Response {
    let body =
        json!({ "success": false, "error": { "code": "FLOOR", "message": error.to_string() } });
    (status, Json(body)).into_response()
}

/// The live row of `table` with this id, read as the services read it: the same
/// statement, prepared once per connection.
async fn find_live(
    pool: &Pool,
    columns: &str,
    table: &str,
    id: i64,
) -> Result<Option<Row>, BoxError> {
    let sql = format!("SELECT {columns} FROM {table} WHERE id = $1 AND deleted_at IS NULL");
    let client = pool.get().await?;
    let statement = client.prepare_cached(&sql).await?;
    Ok(client.query_opt(&statement, &[&id]).await?)
}

async fn get_user(State(db): State<Databases>, Path(id): Path<i64>) -> Response {
    match find_live(&db.users, USER_COLUMNS, "users", id).await {
        Ok(Some(row)) => ok(StatusCode::OK, UserView::from(&row)),
        Ok(None) => failed(StatusCode::NOT_FOUND, "no such user"),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The user and its `user.created` event in one transaction, as user-service writes them.
async fn create_user(State(db): State<Databases>, Json(new): Json<NewUser>) -> Response {
    let insert = format!(
        "INSERT INTO users (email, name, age, active, created_at, updated_at, password_hash, role, \
         created_by, updated_by) VALUES ($1, $2, $3, TRUE, $4, $4, $5, $6, $7, $7) RETURNING {USER_COLUMNS}"
    );
    let result = async {
        let mut client = db.users.get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction.prepare_cached(&insert).await?;
        let now = Utc::now();
        let (no_hash, role, by) = (None::<String>, "user", Some("floor"));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&new.email, &new.name, &new.age, &now, &no_hash, &role, &by];
        let row = transaction.query_one(&statement, &params).await?;
        let user = UserView::from(&row);
        let event = json!({
            "id": uuid::Uuid::now_v7(), "type": "user.created", "occurred_at": now,
            "actor": { "sub": "floor", "roles": ["admin"] }, "resource_type": "user",
            "resource_id": user.id.to_string(), "request_id": null, "payload": &user,
        });
        let statement = transaction.prepare_cached(INSERT_EVENT).await?;
        let event_id = event["id"].as_str().unwrap_or_default().to_owned();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&event_id, &"events.users.created", &event.to_string(), &now];
        transaction.execute(&statement, &params).await?;
        transaction.commit().await?;
        Ok::<_, BoxError>(user)
    };
    match result.await {
        Ok(user) => ok(StatusCode::CREATED, user),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn get_order(State(db): State<Databases>, Path(id): Path<i64>) -> Response {
    let order = match find_live(&db.orders, ORDER_COLUMNS, "orders", id).await {
        Ok(Some(row)) => OrderView::from(&row),
        Ok(None) => return failed(StatusCode::NOT_FOUND, "no such order"),
        Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let url = format!("{}/api/v1/users/{}", db.users_url, order.user_id);
    let user = match db.http.get(url).send().await {
        Ok(answer) if answer.status().is_success() => answer
            .json::<serde_json::Value>()
            .await
            .map_or(serde_json::Value::Null, |mut body| body["data"].take()),
        _ => serde_json::Value::Null,
    };
    let mut data = serde_json::to_value(order).unwrap_or_default();
    data["user"] = user;
    ok(StatusCode::OK, data)
}

fn pool(url: &str, size: usize) -> Result<Pool, BoxError> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .build()?)
}

fn setting(name: &str) -> Result<String, BoxError> {
    env::var(name).map_err(|_| format!("{name} is required").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let size = env::var("FLOOR_MAX_CONNECTIONS")
        .map_or(Ok(20), |v| v.parse().map_err(|_| "FLOOR_MAX_CONNECTIONS"))?;
    let port = setting("FLOOR_PORT")?;
    let db = Databases {
        users: pool(&setting("FLOOR_USER_DATABASE_URL")?, size)?,
        orders: pool(&setting("FLOOR_ORDER_DATABASE_URL")?, size)?,
        http: reqwest::Client::new(),
        users_url: format!("http://127.0.0.1:{port}"),
    };
    let app = Router::new()
        .route("/health/ready", get(|| async { "ok" }))
        .route("/api/v1/users/{id}", get(get_user))
        .route("/api/v1/users", axum::routing::post(create_user))
        .route("/api/v1/orders/{id}", get(get_order))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    Ok(axum::serve(listener, app).await?)
}
