//! Spawns audit-log-service on an ephemeral port over a fresh database, with
//! tokens verified against a stand-in issuer's JWKS, and builds events to feed it.

use std::collections::HashMap;
use std::ops::Deref;

use audit_log_service::config::Config;
use chrono::{DateTime, Utc};
use platform::cli::ServiceConfig;
use platform::db::Database;
use platform::events::{Actor, Event};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use platform::testing::{Backend, TestAuth, TestClient, TestDatabase, metric_value};

/// The signing key every token of this test process is minted with; the
/// service trusts it through the JWKS the test serves.
pub static TEST_AUTH: std::sync::LazyLock<TestAuth> = std::sync::LazyLock::new(|| {
    TestAuth::new(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("audit-log-service-auth-{}", std::process::id())),
    )
});

/// A running audit-log-service; its client sends an admin token.
pub struct AuditService {
    pub client: TestClient,
    /// The service's own pool, to feed it events as its consumer would.
    pub db: Database,
    pub database: TestDatabase,
    vars: HashMap<String, String>,
    shutdown: CancellationToken,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Deref for AuditService {
    type Target = TestClient;

    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl Drop for AuditService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl AuditService {
    /// Starts the service on its own database, without a bus (the tests store
    /// events the way the consumer does).
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts the service with extra variables (a NATS stream, say).
    pub async fn start_with(backend: Backend, extra: &[(&str, String)]) -> Self {
        let database = TestDatabase::create(backend).await;
        let jwks = format!("{}/.well-known/jwks.json", TEST_AUTH.serve_jwks().await);
        let mut vars: HashMap<String, String> = [
            ("AUDIT_LOG_SERVICE_HOST", "127.0.0.1"),
            ("AUDIT_LOG_SERVICE_PORT", "0"),
            ("AUDIT_LOG_SERVICE_RATE_LIMIT", "0"),
            ("AUDIT_LOG_SERVICE_DATABASE_URL", database.url.as_str()),
            ("AUTH_JWKS_URL", jwks.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        Self::run(vars, database).await
    }

    async fn run(vars: HashMap<String, String>, database: TestDatabase) -> Self {
        let lookup = vars.clone();
        let config = Config::from_lookup(&move |name: &str| lookup.get(name).cloned())
            .expect("audit-log-service config");
        let shutdown = CancellationToken::new();
        let app = audit_log_service::Application::build(config, shutdown.clone())
            .await
            .expect("audit-log-service starts");
        let client = TestClient::new(app.address()).with_token(&TEST_AUTH.admin_token());
        let db = app.db().clone();
        let (done, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = app.run_until_stopped().await;
            let _ = done.send(());
        });
        Self {
            client,
            db,
            database,
            vars,
            shutdown,
            stopped: Some(stopped),
        }
    }

    /// Stops it (its consumer too) and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }

    /// A new instance over the same database and settings, as after a restart.
    pub async fn restart(self) -> Self {
        self.restart_with(&[]).await
    }

    /// A new instance over the same database, with some settings changed.
    pub async fn restart_with(mut self, changes: &[(&str, String)]) -> Self {
        self.stop().await;
        let mut vars = std::mem::take(&mut self.vars);
        vars.extend(changes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let database = std::mem::replace(&mut self.database, TestDatabase::external(""));
        drop(self);
        Self::run(vars, database).await
    }

    /// Stores events as the consumer does.
    pub async fn store(&self, events: &[Event]) {
        for event in events {
            let stored = audit_log_service::store::store_event(&self.db, event)
                .await
                .expect("event stored");
            assert!(stored, "event {} was new", event.id);
        }
    }

    /// Every entry the list answers for `query`, following the cursor with
    /// pages of `page_size`; asserts each page's envelope and size.
    pub async fn walk(&self, query: &str, page_size: usize) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/audit-logs?page_size={page_size}");
            if !query.is_empty() {
                path = format!("{path}&{query}");
            }
            if let Some(cursor) = &cursor {
                path = format!("{path}&cursor={cursor}");
            }
            let page = self.get(&path).await;
            assert_eq!(page.status, 200, "{path}: {}", page.body);
            assert_eq!(page.body["meta"]["page_size"], page_size);
            let data = page.body["data"].as_array().expect("data").clone();
            assert!(data.len() <= page_size);
            entries.extend(data.iter().cloned());
            match page.body["meta"].get("next_cursor") {
                Some(next) => {
                    assert_eq!(data.len(), page_size, "only a full page has a next page");
                    cursor = Some(next.as_str().expect("cursor is a string").to_owned());
                }
                None => return entries,
            }
        }
    }
}

/// An event with everything chosen by the test.
pub fn event(
    action: &str,
    actor: &str,
    resource: (&str, &str),
    occurred_at: DateTime<Utc>,
    payload: Value,
) -> Event {
    let mut event = Event::new(
        action,
        Actor {
            sub: actor.to_owned(),
            roles: vec!["admin".to_owned()],
        },
        (resource.0, resource.1.to_owned()),
        Some(format!("req-{actor}")),
        payload,
    );
    event.occurred_at = occurred_at;
    event
}

/// `2026-12-04T10:MM:SSZ`: instants the tests can reason about.
pub fn at(minute: u32, second: u32) -> DateTime<Utc> {
    format!("2026-12-04T10:{minute:02}:{second:02}Z")
        .parse()
        .expect("a valid instant")
}

/// The ids of a list answer's entries, in order.
pub fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}
