//! Spawns the real user-service on an ephemeral port over a fresh database.

use std::collections::HashMap;
use std::ops::Deref;

use reqwest::StatusCode;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use user_service::Application;
use user_service::config::Config;

pub use platform::testing::{Backend, TestClient, TestDatabase, client_from};

/// A running service, a client for it, and its database.
pub struct TestApp {
    pub client: TestClient,
    pub db: DatabaseConnection,
    pub shutdown: CancellationToken,
    /// Kept so the database outlives the app; dropped (and removed) after it.
    _database: TestDatabase,
}

impl Deref for TestApp {
    type Target = TestClient;

    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Test variables on top of the defaults: ephemeral port, loopback, limiter off.
pub fn config_with(database_url: &str, overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("USER_SERVICE_HOST", "127.0.0.1"),
        ("USER_SERVICE_PORT", "0"),
        ("USER_SERVICE_RATE_LIMIT", "0"),
        ("USER_SERVICE_DATABASE_URL", database_url),
        ("USER_SERVICE_DATABASE_STARTUP_TIMEOUT", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
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
    let client = TestClient::new(app.address());
    let db = app.db().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        client,
        db,
        shutdown,
        _database: database,
    }
}

impl TestApp {
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
