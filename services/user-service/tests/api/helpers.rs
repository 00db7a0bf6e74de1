//! Spawns the real service on an ephemeral port over a fresh database per test:
//! an SQLite file in a temp dir, or a randomly named PostgreSQL database that is
//! dropped when the test ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio_util::sync::CancellationToken;
use user_service::Application;
use user_service::config::Config;

/// Runs each named test body once per backend, as `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { body($crate::helpers::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { body($crate::helpers::Backend::Postgres).await }
            async fn body($backend: $crate::helpers::Backend) $body
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Server for the PostgreSQL tests; `TEST_DATABASE_URL` overrides it.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { name: String },
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("test.db").display());
                Self {
                    url,
                    cleanup: Cleanup::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let admin = admin_url();
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL tests need a server at {admin} (set TEST_DATABASE_URL): {e}")
                });
                let name = format!("test_user_service_{}", uuid::Uuid::new_v4().simple());
                // The name is ours (a UUID), so formatting it into SQL is safe.
                conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .await
                    .expect("create test database");
                let (base, _) = admin.rsplit_once('/').expect("admin url has a database");
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { name },
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { name } = &self.cleanup {
            let name = name.clone();
            // Drop runs inside the test's runtime, which cannot block on itself.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                        let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                        let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                    }
                });
            })
            .join()
            .ok();
        }
    }
}

/// A running service and a client for it.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub db: DatabaseConnection,
    pub shutdown: CancellationToken,
    /// Kept so the database outlives the app; dropped (and removed) after it.
    _database: TestDatabase,
}

/// One HTTP answer, body parsed as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// Asserts the error envelope with this status and code, and returns its message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["success"], false, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        self.body["error"]["message"]
            .as_str()
            .expect("error message")
            .to_owned()
    }

    /// The field names listed in `error.details`.
    pub fn invalid_fields(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Variables every test app gets: ephemeral port, loopback, limiter off.
fn base_vars(database_url: &str) -> HashMap<String, String> {
    [
        ("USER_SERVICE_HOST", "127.0.0.1"),
        ("USER_SERVICE_PORT", "0"),
        ("USER_SERVICE_RATE_LIMIT", "0"),
        ("USER_SERVICE_DATABASE_URL", database_url),
        ("USER_SERVICE_DATABASE_STARTUP_TIMEOUT", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub fn config_with(database_url: &str, overrides: &[(&str, &str)]) -> Config {
    let mut vars = base_vars(database_url);
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(&move |name: &str| vars.get(name).cloned()).expect("test config")
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Spawns the service with extra `USER_SERVICE_*` variables.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let config = config_with(&database.url, overrides);
    let shutdown = CancellationToken::new();
    let app = Application::build(config, shutdown.clone())
        .await
        .expect("application starts");
    start(app, shutdown, database)
}

/// Runs an already built application in the background.
pub fn start(app: Application, shutdown: CancellationToken, database: TestDatabase) -> TestApp {
    let address = app.address();
    let db = app.db().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: client_from(IpAddr::from([127, 0, 0, 1])),
        db,
        shutdown,
        _database: database,
    }
}

/// A client whose connections come from `local` (any 127.x address works on Linux),
/// so tests can act as different client IPs.
pub fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .build()
        .expect("client")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> TestResponse {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(self.client.delete(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.client.put(self.url(path)).json(body)).await
    }

    /// Creates a user and returns its `data`, asserting 201.
    pub async fn create_user(&self, email: &str, name: &str, age: i64) -> Value {
        let response = self
            .post_json(
                "/api/v1/users",
                &json!({ "email": email, "name": name, "age": age }),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body["data"].clone()
    }
}
