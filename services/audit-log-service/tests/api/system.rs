//! The three services on one NATS JetStream stream, as deployed: user-service,
//! order-service (pointed at it) and audit-log-service (trusting its JWKS).
//! Shared by the pipeline tests and the traces test binary.

use std::time::Duration;

use platform::events::Event;
use platform::testing::{
    RunningService, TestClient, TestResponse, TestStream, outbox_events, poll_until,
};
use reqwest::StatusCode;

use crate::helpers::{AuditService, Backend, TEST_AUTH, TestDatabase, metric_value, test_config};
/// user-service, order-service (pointed at it) and audit-log-service (trusting
/// its JWKS), each on a database of its own, all on a stream of their own.
pub(crate) struct Pipeline {
    pub(crate) users: RunningService,
    pub(crate) orders: RunningService,
    pub(crate) audit: AuditService,
    /// user-service's and order-service's, whose outboxes the test reads.
    databases: [TestDatabase; 2],
    _stream: TestStream,
}

impl Pipeline {
    pub(crate) async fn start(backend: Backend) -> Self {
        let stream = TestStream::new();
        // Fails here, naming the server, when NATS is away.
        stream.bus().await;
        let bus = stream.vars();
        let on_bus = |extra: Option<(&'static str, &str)>| -> Vec<(String, String)> {
            bus.iter()
                .map(|(k, v)| (*k, v.as_str()))
                .chain(extra)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let databases = [
            TestDatabase::create(backend).await,
            TestDatabase::create(backend).await,
        ];
        let users = spawn::<user_service::UserService>(&databases[0], &on_bus(None)).await;
        let users_url = format!("http://{}", users.address);
        let orders = spawn::<order_service::OrderService>(
            &databases[1],
            &on_bus(Some(("ORDER_SERVICE_USER_SERVICE_URL", &users_url))),
        )
        .await;
        let audit = AuditService::spawn(
            TestDatabase::create(backend).await,
            on_bus(Some(("AUDIT_LOG_SERVICE_USER_SERVICE_URL", &users_url))),
        )
        .await;
        Self {
            users,
            orders,
            audit,
            databases,
            _stream: stream,
        }
    }

    /// Every event in both outboxes, once all of them are published and the
    /// audit log says it stored as many (nothing more is written after the
    /// test's last request).
    pub(crate) async fn settled_events(&self) -> Vec<Event> {
        let settled = poll_until(Duration::from_secs(30), || async {
            let mut written = 0;
            for database in &self.databases {
                let (total, published) = outbox_counts(&database.url).await;
                if published < total {
                    return false;
                }
                written += total;
            }
            let metrics = self.audit.metrics().await;
            metric_value(&metrics, "audit_log_service_events_stored_total") == Some(written as f64)
        })
        .await;
        assert!(
            settled.is_some(),
            "the audit log did not catch up with the outboxes: {}",
            self.audit.metrics().await
        );
        let mut events: Vec<Event> = outbox_events(&self.databases[0].url).await;
        events.extend(outbox_events::<Event>(&self.databases[1].url).await);
        events
    }

    /// Places an order (one P-1 at 3.00) as the user whose token this is,
    /// asserting 201.
    pub(crate) async fn place_order(&self, token: &str) -> TestResponse {
        let order = serde_json::json!({"product_id": "P-1", "quantity": 1, "total_price": 3});
        let created = self
            .orders
            .client
            .with_token(token)
            .post_json("/api/v1/orders", &order)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        created
    }

    /// Registers a user by itself (with a password), logs it in, and returns
    /// its id and the access token user-service issued.
    pub(crate) async fn register_and_log_in(&self, email: &str) -> (i64, String) {
        let (user, token) = self
            .users
            .client
            .register_and_log_in(email, "pipeline-user-password")
            .await;
        (user["id"].as_i64().expect("user id"), token)
    }
}

/// Runs `S` on `database` with `overrides` (whole variable names).
async fn spawn<S: platform::app::Service>(
    database: &TestDatabase,
    overrides: &[(String, String)],
) -> RunningService {
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    RunningService::spawn(test_config::<S>(&database.url, &overrides)).await
}

pub(crate) fn as_admin(service: &RunningService) -> TestClient {
    service.client.with_token(&TEST_AUTH.admin_token())
}

/// How many events the outbox at `url` holds, and how many of them are published.
async fn outbox_counts(url: &str) -> (i64, i64) {
    let db = platform::testing::connect(url).await;
    let row = db
        .query_one(
            "SELECT COUNT(*) AS total, COUNT(published_at) AS published FROM outbox",
            &[],
        )
        .await
        .expect("count the outbox");
    db.close().await;
    (
        row.get("total").expect("total"),
        row.get("published").expect("published"),
    )
}
