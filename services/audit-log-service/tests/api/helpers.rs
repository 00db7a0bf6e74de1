//! Runs audit-log-service on an ephemeral port over a fresh database, with
//! tokens verified against a stand-in issuer's JWKS (or a real user-service's),
//! and builds events to feed it.

use std::ops::{Deref, DerefMut};

use audit_log_service::AuditLogService;
use chrono::{DateTime, Utc};
use platform::events::{Actor, Event};
use serde_json::Value;

pub use platform::testing::{
    Backend, RunningService, TestAuth, TestDatabase, metric_value, test_config,
};

/// The signing key and client secrets of every service in this test process
/// (`test_config` passes them), and tokens minted with that key, as
/// user-service would issue them.
pub static TEST_AUTH: std::sync::LazyLock<&'static TestAuth> =
    std::sync::LazyLock::new(platform::testing::test_auth);

/// An admin's `GET /api/v1/users` on `users` (a user-service), sent with this
/// W3C `traceparent`.
pub async fn list_users_traced(
    users: &RunningService,
    traceparent: &str,
) -> platform::testing::TestResponse {
    users
        .client
        .with_token(&TEST_AUTH.admin_token())
        .get_with_header("/api/v1/users", "traceparent", traceparent)
        .await
}

/// A running audit-log-service; its client sends an admin token, and its `db`
/// is the service's own pool, to feed it events as its consumer would.
pub struct AuditService {
    pub service: RunningService,
    pub database: TestDatabase,
    /// The variables it runs with beyond the test defaults, kept for restarts.
    overrides: Vec<(String, String)>,
}

impl Deref for AuditService {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.service
    }
}

impl DerefMut for AuditService {
    fn deref_mut(&mut self) -> &mut RunningService {
        &mut self.service
    }
}

impl AuditService {
    /// Starts the service on its own database, without a bus (the tests store
    /// events the way the consumer does).
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts the service with extra variables (a NATS stream, say), trusting
    /// the test key through a stand-in issuer's JWKS.
    pub async fn start_with(backend: Backend, extra: &[(&str, String)]) -> Self {
        let jwks = format!("{}/.well-known/jwks.json", TEST_AUTH.serve_jwks().await);
        let overrides = std::iter::once(("AUTH_JWKS_URL", jwks))
            .chain(extra.iter().cloned())
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Self::spawn(TestDatabase::create(backend).await, overrides).await
    }

    /// Starts the service over `database` with `overrides` (whole variable names).
    pub async fn spawn(database: TestDatabase, overrides: Vec<(String, String)>) -> Self {
        let variables: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config = test_config::<AuditLogService>(&database.url, &variables);
        let mut service = RunningService::spawn(config).await;
        service.client = service.client.with_token(&TEST_AUTH.admin_token());
        Self {
            service,
            database,
            overrides,
        }
    }

    /// A new instance over the same database and settings, as after a restart.
    pub async fn restart(self) -> Self {
        self.restart_with(&[]).await
    }

    /// A new instance over the same database, with some settings changed.
    pub async fn restart_with(mut self, changes: &[(&str, String)]) -> Self {
        self.service.stop().await;
        let mut overrides = self.overrides;
        overrides.extend(changes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        Self::spawn(self.database, overrides).await
    }

    /// Stores events as the consumer does, in one batch.
    pub async fn store(&self, events: &[Event]) {
        let batch: Vec<_> = events
            .iter()
            .map(|event| (event.clone(), tracing::Span::none()))
            .collect();
        let stored = audit_log_service::store::store_events(&self.db, &batch)
            .await
            .expect("events stored");
        assert!(
            stored.iter().all(|new| *new),
            "every event was new: {stored:?}"
        );
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
