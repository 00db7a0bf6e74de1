//! Spawns order-service against a real user-service (both on ephemeral ports, each
//! on its own fresh database) or against a stand-in user-service the test scripts.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use reqwest::StatusCode as ClientStatus;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use platform::testing::{
    Backend, RunningService, TestAuth, TestClient, TestDatabase, metric_value, test_config,
};

/// The signing key and client secrets every service in this test process uses
/// (`test_config` passes them), and tokens minted with that key, as
/// user-service would issue them.
pub static TEST_AUTH: std::sync::LazyLock<&'static TestAuth> =
    std::sync::LazyLock::new(platform::testing::test_auth);

/// A service's client acting as the operator (an admin).
fn as_admin(mut service: RunningService) -> RunningService {
    service.client = service.client.with_token(&TEST_AUTH.admin_token());
    service
}

/// Short breaker timings so tests see open, half-open and closed within a second.
const FAST_BREAKER: [(&str, &str); 4] = [
    ("CIRCUIT_BREAKER_TIMEOUT", "0.5"),
    ("CIRCUIT_BREAKER_INTERVAL", "60"),
    ("CIRCUIT_BREAKER_MAX_REQUESTS", "3"),
    ("ORDER_SERVICE_VERIFY_INTERVAL", "0.2"),
];

/// A running user-service that can be stopped and started again on the same port and data.
pub struct UserService {
    pub service: RunningService,
    backend: Backend,
    database: TestDatabase,
    /// Extra variables it runs with (kept for restarts).
    extra: Vec<(String, String)>,
}

impl UserService {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts it with extra variables (say `NATS_URL`).
    pub async fn start_with(backend: Backend, extra: &[(String, String)]) -> Self {
        let database = TestDatabase::create(backend).await;
        let service = Self::run(&database.url, 0, extra).await;
        Self {
            service,
            backend,
            database,
            extra: extra.to_vec(),
        }
    }

    async fn run(url: &str, port: u16, extra: &[(String, String)]) -> RunningService {
        let port = port.to_string();
        let mut overrides = vec![("USER_SERVICE_PORT", port.as_str())];
        overrides.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        as_admin(
            RunningService::spawn(test_config::<user_service::UserService>(url, &overrides)).await,
        )
    }

    /// Stops it and waits until its port is closed.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }

    /// Starts it again on the same port, over the same data.
    pub async fn restart(&mut self) {
        self.service =
            Self::run(&self.database.url, self.service.address.port(), &self.extra).await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.service.address)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where it keeps its users (and its outbox), for reading behind its back.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// Creates a user and returns its id.
    pub async fn create_user(&self, email: &str, active: bool) -> i64 {
        let created = self
            .service
            .post_json(
                "/api/v1/users",
                &json!({"email": email, "name": "Order Customer", "age": 30}),
            )
            .await;
        assert_eq!(created.status, ClientStatus::CREATED, "{}", created.body);
        let id = created.body["data"]["id"].as_i64().unwrap();
        if !active {
            let updated = self
                .service
                .put_json(&format!("/api/v1/users/{id}"), &json!({"active": false}))
                .await;
            assert_eq!(updated.status, ClientStatus::OK);
        }
        id
    }
}

/// A running order-service.
pub struct OrderService {
    pub service: RunningService,
    /// The variables it was started with beyond the test defaults, for a restart.
    overrides: Vec<(String, String)>,
    database: TestDatabase,
}

impl Deref for OrderService {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.service
    }
}

impl OrderService {
    /// Starts order-service pointed at `user_service_url`, with fast breaker timings
    /// and any extra variables.
    pub async fn start(
        backend: Backend,
        user_service_url: &str,
        overrides: &[(&str, &str)],
    ) -> Self {
        let database = TestDatabase::create(backend).await;
        Self::run(Self::overrides(user_service_url, overrides), database).await
    }

    /// Starts order-service over a database the test owns (say a cluster it stops).
    pub async fn start_on(
        database_url: &str,
        user_service_url: &str,
        overrides: &[(&str, &str)],
    ) -> Self {
        let database = TestDatabase::external(database_url);
        Self::run(Self::overrides(user_service_url, overrides), database).await
    }

    fn overrides(user_service_url: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        [("ORDER_SERVICE_USER_SERVICE_URL", user_service_url)]
            .into_iter()
            .chain(FAST_BREAKER)
            .chain(overrides.iter().copied())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    async fn run(overrides: Vec<(String, String)>, database: TestDatabase) -> Self {
        let variables: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config = test_config::<order_service::OrderService>(&database.url, &variables);
        Self {
            service: as_admin(RunningService::spawn(config).await),
            overrides,
            database,
        }
    }

    /// Stops this instance and starts a new one over the same database, as a
    /// deployment or crash-restart would.
    pub async fn restart(mut self) -> Self {
        self.service.stop().await;
        Self::run(self.overrides, self.database).await
    }

    /// Where this instance keeps its orders, for reading them behind its back.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// POSTs an order and returns the whole answer.
    pub async fn create_order(
        &self,
        user_id: i64,
        product_id: &str,
        total_price: Value,
    ) -> platform::testing::TestResponse {
        self.post_json(
            "/api/v1/orders",
            &json!({"user_id": user_id, "product_id": product_id, "quantity": 2, "total_price": total_price}),
        )
        .await
    }

    /// Creates an order and returns its id, asserting 201.
    pub async fn create_order_id(&self, user_id: i64) -> i64 {
        let response = self.create_order(user_id, "PROD-123", json!(99.99)).await;
        assert_eq!(response.status, ClientStatus::CREATED, "{}", response.body);
        response.body["data"]["id"].as_i64().unwrap()
    }

    /// `order_service_circuit_breaker_state{service="user-service"}`.
    pub async fn breaker_state(&self) -> f64 {
        metric_value(
            &self.metrics().await,
            r#"order_service_circuit_breaker_state{service="user-service"}"#,
        )
        .expect("breaker state metric")
    }
}

/// Both services, wired together.
pub struct System {
    pub users: UserService,
    pub orders: OrderService,
}

pub async fn spawn_system(backend: Backend) -> System {
    spawn_system_with(backend, &[]).await
}

pub async fn spawn_system_with(backend: Backend, overrides: &[(&str, &str)]) -> System {
    let users = UserService::start(backend).await;
    let orders = OrderService::start(users.backend(), &users.url(), overrides).await;
    System { users, orders }
}

/// What the stand-in user-service answers and what it saw.
#[derive(Default)]
pub struct StandInState {
    pub delay: Duration,
    pub status: u16,
    pub request_ids: Vec<String>,
    /// The `Authorization` header of every user lookup.
    pub authorizations: Vec<String>,
    pub calls: usize,
}

/// A scripted user-service: answers every user id with `status` (200 = an active
/// user) after `delay`, recording the `X-Request-ID` it received.
pub struct StandIn {
    pub address: SocketAddr,
    pub state: Arc<Mutex<StandInState>>,
}

impl StandIn {
    pub async fn start(status: u16, delay: Duration) -> Self {
        let state = Arc::new(Mutex::new(StandInState {
            delay,
            status,
            ..StandInState::default()
        }));
        let app = Router::new()
            .route("/api/v1/users/{id}", get(answer))
            .route("/api/v1/auth/token", axum::routing::post(service_token))
            .route(
                "/.well-known/jwks.json",
                get(|| async { axum::Json(TEST_AUTH.jwks()) }),
            )
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
}

/// The stand-in's token endpoint: a service token signed with the test key.
async fn service_token() -> impl IntoResponse {
    axum::Json(json!({"success": true, "data": {
        "access_token": TEST_AUTH.service_token(), "token_type": "Bearer",
        "expires_in": 900, "expires_at": "2099-01-01T00:00:00Z", "roles": ["service"]
    }}))
}

async fn answer(
    State(state): State<Arc<Mutex<StandInState>>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let (delay, status) = {
        let mut s = state.lock().unwrap();
        s.calls += 1;
        if let Some(rid) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            s.request_ids.push(rid.to_owned());
        }
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            s.authorizations.push(auth.to_owned());
        }
        (s.delay, s.status)
    };
    tokio::time::sleep(delay).await;
    let body = json!({"success": true, "data": {
        "id": id, "email": format!("u{id}@example.com"), "name": "Stand In", "age": 30, "active": true,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
    }});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body))
}

/// One row of `orders`, read straight from the database.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    pub id: i64,
    pub user_id: i64,
    pub status: String,
    pub user_verified: bool,
    pub status_reason: Option<String>,
}

/// Every order in the database at `url`, bypassing the service.
pub async fn stored_orders(url: &str) -> Vec<StoredOrder> {
    let db = platform::testing::connect(url).await;
    let sql = "SELECT id, user_id, status, user_verified, status_reason FROM orders ORDER BY id";
    let rows = db.query(sql, &[]).await.expect("read orders");
    db.close().await;
    let orders = rows
        .iter()
        .map(|row| StoredOrder {
            id: row.get("id").expect("id"),
            user_id: row.get("user_id").expect("user_id"),
            status: row.get("status").expect("status"),
            user_verified: row.get("user_verified").expect("user_verified"),
            status_reason: row.get("status_reason").expect("status_reason"),
        })
        .collect();
    let _ = db.close().await;
    orders
}
