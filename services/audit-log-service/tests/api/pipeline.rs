//! The three services on one NATS JetStream stream, as deployed: every event
//! user-service and order-service write reaches the audit log exactly once,
//! with the actor who caused it, and no caller can name that actor itself.

use std::collections::BTreeMap;
use std::time::Duration;

use platform::backend_tests;
use platform::events::Event;
use platform::testing::{RunningService, TestClient, TestStream, poll_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{AuditService, Backend, TEST_AUTH, TestDatabase, metric_value, test_config};

/// user-service, order-service (pointed at it) and audit-log-service (trusting
/// its JWKS), each on a database of its own, all on a stream of their own.
pub(crate) struct Pipeline {
    pub(crate) users: RunningService,
    pub(crate) orders: RunningService,
    audit: AuditService,
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
    async fn settled_events(&self) -> Vec<Event> {
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
        let mut events = outbox(&self.databases[0].url).await;
        events.extend(outbox(&self.databases[1].url).await);
        events
    }

    /// Registers a user by itself (with a password), logs it in, and returns
    /// its id and the access token user-service issued.
    pub(crate) async fn register_and_log_in(&self, email: &str) -> (i64, String) {
        let anonymous = self.users.client.anonymous();
        let password = "pipeline-user-password";
        let registered = anonymous
            .post_json(
                "/api/v1/users",
                &json!({"email": email, "name": "Pipeline User", "age": 30, "password": password}),
            )
            .await;
        assert_eq!(
            registered.status,
            StatusCode::CREATED,
            "{}",
            registered.body
        );
        let id = registered.body["data"]["id"].as_i64().expect("user id");
        let login = anonymous
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        let token = login.body["data"]["access_token"]
            .as_str()
            .expect("access_token");
        (id, token.to_owned())
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

/// Every event in the outbox at `url`, oldest first, as written.
async fn outbox(url: &str) -> Vec<Event> {
    let db = platform::testing::connect(url).await;
    let rows = db
        .query("SELECT event FROM outbox ORDER BY seq", &[])
        .await
        .expect("read the outbox");
    db.close().await;
    rows.iter()
        .map(|row| {
            serde_json::from_str(&row.get::<String>("event").expect("event")).expect("an event")
        })
        .collect()
}

/// Asserts that `entries` are exactly `events`, one entry each, as the events say.
fn assert_one_entry_per_event(entries: &[Value], events: &[Event]) {
    let by_id: BTreeMap<&str, &Value> = entries
        .iter()
        .map(|e| (e["id"].as_str().expect("id"), e))
        .collect();
    assert_eq!(by_id.len(), entries.len(), "no event twice: {entries:#?}");
    assert_eq!(
        entries.len(),
        events.len(),
        "nothing else: {entries:#?}\n{events:#?}"
    );
    for event in events {
        let id = event.id.to_string();
        let entry = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{} {id} is not in the audit log", event.event_type));
        assert_eq!(entry["action"], event.event_type.as_str(), "{entry}");
        assert_eq!(entry["actor"], json!(event.actor), "{entry}");
        assert_eq!(
            entry["resource_type"],
            event.resource_type.as_str(),
            "{entry}"
        );
        assert_eq!(entry["resource_id"], event.resource_id.as_str(), "{entry}");
        assert_eq!(entry["request_id"], json!(event.request_id), "{entry}");
        assert_eq!(entry["payload"], event.payload, "{entry}");
    }
}

/// `(action, actor.sub, resource_id)` of each entry, sorted: what happened,
/// by whom, to what, whatever the interleaving of the two services.
fn summary(entries: &[Value]) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    let mut summary: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                text(&e["action"]),
                text(&e["actor"]["sub"]),
                text(&e["resource_id"]),
            )
        })
        .collect();
    summary.sort();
    summary
}

fn sorted(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut items: Vec<_> = items
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
    items.sort();
    items
}

backend_tests! {
    async fn every_event_of_both_services_is_in_the_audit_log_once_with_its_actor(backend) {
        let pipeline = Pipeline::start(backend).await;
        let (id, token) = pipeline.register_and_log_in("pipeline@example.com").await;
        let user = format!("/api/v1/users/{id}");
        let as_user = pipeline.users.client.with_token(&token);
        let renamed = as_user.put_json(&user, &json!({"name": "Renamed User"})).await;
        assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
        let orders_as_user = pipeline.orders.client.with_token(&token);
        let created = orders_as_user
            .post_json("/api/v1/orders", &json!({"product_id": "P-1", "quantity": 1, "total_price": 3}))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let order = created.body["data"]["id"].as_i64().expect("order id").to_string();
        let cancelled = orders_as_user
            .put_json(&format!("/api/v1/orders/{order}"), &json!({"status": "cancelled"}))
            .await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
        let deleted = as_admin(&pipeline.orders).delete(&format!("/api/v1/orders/{order}")).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
        let deleted = as_admin(&pipeline.users).delete(&user).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);

        let events = pipeline.settled_events().await;
        // Pages smaller than the log: the walk follows the cursor across all of them.
        let entries = pipeline.audit.walk("", 3).await;
        assert_one_entry_per_event(&entries, &events);
        let id = id.to_string();
        assert_eq!(summary(&entries), sorted(&[
            ("user.created", "anonymous", &id),
            ("auth.token_issued", &id, &id),
            ("user.updated", &id, &id),
            // order-service's own token, fetched for the new order's user lookup.
            ("auth.token_issued", "order-service", "order-service"),
            ("order.created", &id, &order),
            ("order.status_changed", &id, &order),
            ("order.deleted", "operator", &order),
            ("user.deleted", "operator", &id),
        ]));
        let of_user = pipeline.audit.walk(&format!("actor={id}"), 100).await;
        assert!(of_user.iter().all(|e| e["actor"]["roles"] == json!(["user"])), "{of_user:#?}");
    }

    async fn a_forged_actor_in_a_request_body_is_refused_and_no_entry_has_it(backend) {
        let pipeline = Pipeline::start(backend).await;
        let forged = json!({"sub": "forged-admin", "roles": ["admin"]});
        let refused = pipeline.users.client.anonymous().post_json("/api/v1/users", &json!({
            "email": "forger@example.com", "name": "Forger", "age": 30,
            "password": "pipeline-user-password", "actor": forged
        })).await;
        refused.assert_clean_error(400, "VALIDATION_ERROR");
        assert_eq!(refused.invalid_fields(), ["actor"]);
        let (id, token) = pipeline.register_and_log_in("forger@example.com").await;
        let as_user = pipeline.users.client.with_token(&token);
        let orders_as_user = pipeline.orders.client.with_token(&token);
        let order = orders_as_user
            .post_json("/api/v1/orders", &json!({"product_id": "P-1", "quantity": 1, "total_price": 3}))
            .await;
        assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
        let order_id = order.body["data"]["id"].as_i64().expect("order id").to_string();
        let order = format!("/api/v1/orders/{order_id}");
        for refused in [
            as_user.put_json(&format!("/api/v1/users/{id}"), &json!({"name": "Renamed", "actor": forged})).await,
            orders_as_user.post_json("/api/v1/orders", &json!({
                "product_id": "P-2", "quantity": 1, "total_price": 3, "actor": forged
            })).await,
            orders_as_user.put_json(&order, &json!({"status": "cancelled", "actor": forged})).await,
        ] {
            refused.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(refused.invalid_fields(), ["actor"]);
        }

        let events = pipeline.settled_events().await;
        let entries = pipeline.audit.walk("", 100).await;
        assert_one_entry_per_event(&entries, &events);
        let id = id.to_string();
        // Only the accepted requests left a trace, each with the token's subject.
        assert_eq!(summary(&entries), sorted(&[
            ("user.created", "anonymous", &id),
            ("auth.token_issued", &id, &id),
            ("auth.token_issued", "order-service", "order-service"),
            ("order.created", &id, &order_id),
        ]));
        assert_eq!(pipeline.audit.walk("actor=forged-admin", 100).await, Vec::<Value>::new());
        let all = serde_json::to_string(&entries).expect("entries as JSON");
        assert!(!all.contains("forged-admin"), "{all}");
    }
}
