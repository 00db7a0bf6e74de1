//! Distributed tracing through the real services, in a test binary of its own:
//! every test here is traced by the process-wide subscriber, which exports over
//! OTLP/HTTP to a real receiver ([`global_receiver`]); each test follows the
//! traces its own requests started (by trace id) from the client through both
//! services, their databases and NATS.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/system.rs"]
mod system;

use platform::backend_tests;
use platform::testing::{
    Backend, ReceivedSpan, RunningService, TestDatabase, TestResponse, global_receiver,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TEST_AUTH, list_users_traced, test_config};
use crate::system::{Pipeline, as_admin};

const PASSWORD: &str = "pipeline-user-password";

/// The trace id of the server span an answer names in its `traceparent`.
fn trace_id(response: &TestResponse) -> String {
    let value = response
        .headers
        .get("traceparent")
        .unwrap_or_else(|| panic!("no traceparent in {:?}", response.headers))
        .to_str()
        .expect("ASCII");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    parts[1].to_owned()
}

fn find<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.kind == kind && s.name == name)
}

fn server<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.kind == "server" && s.name == name && s.attribute("service") == Some(service))
}

/// Whether `span` is `ancestor` or below it in `spans`.
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut current = Some(span);
    while let Some(s) = current {
        if s.span_id == ancestor.span_id {
            return true;
        }
        current = spans.iter().find(|p| p.span_id == s.parent_span_id);
    }
    false
}

/// SQL spans below `ancestor`, by name (`INSERT orders`).
fn sql_below(spans: &[ReceivedSpan], ancestor: &ReceivedSpan) -> Vec<String> {
    spans
        .iter()
        .filter(|s| s.attribute("db.system").is_some() && descends_from(spans, s, ancestor))
        .map(|s| s.name.clone())
        .collect()
}

/// No attribute of any span received holds one of `secrets`.
fn assert_nothing_secret(spans: &[ReceivedSpan], secrets: &[&str]) {
    for span in spans {
        for (key, value) in &span.attributes {
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "{}: attribute {key} holds a secret: {value}",
                    span.name
                );
            }
        }
    }
}

backend_tests! {
    async fn an_order_is_one_trace_through_both_services_and_their_databases(backend) {
        let receiver = global_receiver();
        let pipeline = Pipeline::start(backend).await;
        let (_, token) = pipeline.register_and_log_in("traced@example.com").await;
        let created = pipeline.place_order(&token).await;

        let trace = trace_id(&created);
        let spans = receiver.wait_for_trace(&trace, |spans| {
            server(spans, "order-service", "POST /api/v1/orders").is_some()
                && server(spans, "user-service", "GET /api/v1/users/{id}").is_some()
                && spans.iter().filter(|s| s.attribute("db.system").is_some()).count() >= 2
        }).await;
        let order = server(&spans, "order-service", "POST /api/v1/orders").expect("order span");
        assert_eq!(order.parent_span_id, "", "the client sent no trace: a new one starts");
        assert_eq!(order.attribute("http.route"), Some("/api/v1/orders"));
        assert_eq!(order.attribute("http.request.method"), Some("POST"));
        assert_eq!(order.attribute("http.response.status_code"), Some("201"));
        let call = find(&spans, "client", "GET /api/v1/users/{id}").expect("the HTTP client span");
        assert!(descends_from(&spans, call, order), "{call:#?}");
        assert_eq!(call.attribute("http.response.status_code"), Some("200"));
        let user = server(&spans, "user-service", "GET /api/v1/users/{id}").expect("user span");
        assert_eq!(user.parent_span_id, call.span_id, "user-service continues the caller's span");
        assert!(sql_below(&spans, order).iter().any(|n| n == "INSERT orders"), "{:?}", sql_below(&spans, order));
        assert!(sql_below(&spans, user).iter().any(|n| n == "SELECT users"), "{:?}", sql_below(&spans, user));
        for sql in spans.iter().filter(|s| s.attribute("db.system").is_some()) {
            assert_eq!(sql.kind, "client");
            let system = sql.attribute("db.system");
            assert!(matches!(system, Some("postgresql" | "sqlite")), "{system:?}");
        }
        assert_nothing_secret(&receiver.spans(), &[&token, PASSWORD, "traced@example.com"]);
    }

    async fn a_user_deletion_reaches_the_audit_log_and_order_service_in_its_trace(backend) {
        let receiver = global_receiver();
        let pipeline = Pipeline::start(backend).await;
        let (id, token) = pipeline.register_and_log_in("deleted@example.com").await;
        pipeline.place_order(&token).await;
        let deleted = as_admin(&pipeline.users).delete(&format!("/api/v1/users/{id}")).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);

        let trace = trace_id(&deleted);
        let consumer = |spans: &[ReceivedSpan], group: &str, what: &str| {
            spans.iter().any(|s| s.kind == "consumer"
                && s.attribute("messaging.consumer.group.name") == Some(group)
                && s.name.ends_with(what))
        };
        let spans = receiver.wait_for_trace(&trace, |spans| {
            consumer(spans, "audit-log", "users.deleted")
                && consumer(spans, "order-service", "users.deleted")
                // The cancellation it caused, published by order-service, audited too.
                && consumer(spans, "audit-log", "orders.status_changed")
        }).await;
        let request = server(&spans, "user-service", "DELETE /api/v1/users/{id}").expect("request span");
        let publish = find(&spans, "producer", "publish events.users.deleted").expect("publish span");
        assert!(descends_from(&spans, publish, request), "published in the request's trace");
        for group in ["audit-log", "order-service"] {
            let handled = spans.iter()
                .find(|s| s.kind == "consumer" && s.attribute("messaging.consumer.group.name") == Some(group)
                    && s.name.ends_with("users.deleted"))
                .expect("consumer span");
            assert_eq!(handled.parent_span_id, publish.span_id, "{group} continues the publisher's span");
            assert!(!sql_below(&spans, handled).is_empty(), "{group} wrote in the trace");
        }
        let cancelled = find(&spans, "producer", "publish events.orders.status_changed").expect("the cancellation's publish");
        assert!(descends_from(&spans, cancelled, request));
        assert_nothing_secret(&receiver.spans(), &[&token, PASSWORD, "deleted@example.com"]);
    }
}

/// user-service alone, on SQLite, exporting to `tracing`'s receiver.
async fn user_service() -> (RunningService, TestDatabase) {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let config = test_config::<user_service::UserService>(&database.url, &[]);
    (RunningService::spawn(config).await, database)
}

#[tokio::test]
async fn a_request_with_a_traceparent_continues_that_trace() {
    let receiver = global_receiver();
    let (users, _database) = user_service().await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answered = list_users_traced(&users, &format!("00-{caller_trace}-{caller_span}-01")).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(trace_id(&answered), caller_trace);
    let spans = receiver
        .wait_for_trace(caller_trace, |spans| {
            server(spans, "user-service", "GET /api/v1/users").is_some()
        })
        .await;
    let request = server(&spans, "user-service", "GET /api/v1/users").expect("server span");
    assert_eq!(request.parent_span_id, caller_span);
}

#[tokio::test]
async fn a_breaker_rejection_is_an_event_on_the_lookup_span() {
    let receiver = global_receiver();
    // user-service for the token keys only: the lookups go to a port where
    // nothing listens, so every call fails.
    let (users, _users_database) = user_service().await;
    let jwks = format!("http://{}/.well-known/jwks.json", users.address);
    let closed = format!("http://127.0.0.1:{}", platform::testing::free_port());
    let database = TestDatabase::create(Backend::Sqlite).await;
    let config = test_config::<order_service::OrderService>(
        &database.url,
        &[
            ("AUTH_JWKS_URL", &jwks),
            ("ORDER_SERVICE_USER_SERVICE_URL", &closed),
            ("CIRCUIT_BREAKER_TIMEOUT", "60"),
            ("ORDER_SERVICE_VERIFY_INTERVAL", "600"),
        ],
    );
    let orders = RunningService::spawn(config).await;
    let as_admin = orders.client.with_token(&TEST_AUTH.admin_token());
    let order = json!({"user_id": 1, "product_id": "P", "quantity": 1, "total_price": 1});
    let mut rejected = None;
    // Three failed lookups open the circuit; the next one is refused without a call.
    for _ in 0..4 {
        let response = as_admin.post_json("/api/v1/orders", &order).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        rejected = Some(response);
    }
    let trace = trace_id(&rejected.expect("four answers"));
    let event = "circuit breaker rejected the call to user-service";
    let has_event = |s: &ReceivedSpan| s.events.iter().any(|e| e == event);
    let spans = receiver
        .wait_for_trace(&trace, |spans| spans.iter().any(has_event))
        .await;
    let lookup = spans.iter().find(|s| has_event(s)).expect("the rejection");
    assert_eq!(lookup.name, "get_user");
    assert!(
        !spans.iter().any(|s| s.name == "GET /api/v1/users/{id}"),
        "no HTTP client span: nothing was sent"
    );
}
