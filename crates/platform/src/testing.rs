//! Test support shared by the services' integration tests (feature `testing`):
//! a fresh database per test on either backend, an HTTP client that reads our
//! envelope, and a macro that runs a test body on SQLite and on PostgreSQL.

use std::net::{IpAddr, SocketAddr};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

/// Runs each named test body once per backend, as `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { body($crate::testing::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { body($crate::testing::Backend::Postgres).await }
            async fn body($backend: $crate::testing::Backend) $body
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Server for the PostgreSQL tests; `TEST_DATABASE_URL` overrides it.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test: a temp SQLite file, or a randomly named
/// PostgreSQL database dropped (with its connections) when this value drops.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { name: String },
}

impl TestDatabase {
    /// # Panics
    /// When PostgreSQL is requested and cannot be reached: those tests fail, never skip.
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
                let name = format!("test_{}", uuid::Uuid::new_v4().simple());
                // The name is ours (a UUID), so formatting it into SQL is safe.
                conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .await
                    .expect("create test database");
                let (base, _) = admin.rsplit_once('/').expect("admin url names a database");
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
            let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
            // Drop runs inside the test's runtime, which cannot block on itself.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                        let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                    }
                });
            })
            .join()
            .ok();
        }
    }
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
    ///
    /// # Panics
    /// When the answer is anything else.
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

/// A client for one running service.
#[derive(Clone)]
pub struct TestClient {
    pub address: SocketAddr,
    pub http: reqwest::Client,
}

/// A client whose connections come from `local` (any 127.x address works on
/// Linux), so tests can act as different client IPs.
pub fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .no_proxy()
        .build()
        .expect("client")
}

impl TestClient {
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            http: client_from(IpAddr::from([127, 0, 0, 1])),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// # Panics
    /// When the request cannot be sent at all.
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
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// The raw `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// The value of one sample in Prometheus text output, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Asserts that the committed OpenAPI file (relative to the workspace root) is what
/// the code generates, and says how to regenerate it when not.
///
/// # Panics
/// When the file is missing, not JSON, or stale.
pub fn assert_committed_spec(manifest_dir: &str, service: &str, spec: &utoipa::openapi::OpenApi) {
    let relative = format!("docs/openapi/{service}.json");
    let path = std::path::Path::new(manifest_dir)
        .join("../..")
        .join(&relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let committed: Value = serde_json::from_str(&text).expect("committed spec is JSON");
    let generated = serde_json::to_value(spec).expect("spec serializes");
    assert!(
        committed == generated,
        "{relative} is stale: run `cargo run -q -p {service} -- --print-openapi > {relative}`"
    );
}
