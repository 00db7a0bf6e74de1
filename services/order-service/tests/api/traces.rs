//! order-service's spans as exported (see audit-log-service's traces tests
//! for the whole system): a circuit breaker rejection is an event in the
//! request's trace. Current-thread runtime: `TestTracing` is the thread's subscriber.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, OrderService, StandIn};
use platform::testing::TestTracing;

#[tokio::test]
async fn a_breaker_rejection_is_an_event_on_the_lookup_span() {
    let tracing = TestTracing::start(&[]);
    let failing = StandIn::start(500, Duration::ZERO).await;
    let orders = OrderService::start(
        Backend::Sqlite,
        &failing.url(),
        &[
            ("CIRCUIT_BREAKER_TIMEOUT", "60"),
            ("ORDER_SERVICE_VERIFY_INTERVAL", "600"),
        ],
    )
    .await;
    for _ in 0..3 {
        let response = orders.create_order(1, "P", json!(1)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    }
    assert_eq!(
        orders.breaker_state().await,
        2.0,
        "three failures open the circuit"
    );
    let calls = failing.calls();
    let rejected = orders.create_order(1, "P", json!(1)).await;
    assert_eq!(rejected.status, StatusCode::CREATED, "{}", rejected.body);
    assert_eq!(failing.calls(), calls, "the open circuit made no call");

    let traceparent = rejected.headers["traceparent"].to_str().expect("ASCII");
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .expect("a trace id")
        .to_owned();
    let event = "circuit breaker rejected the call to user-service";
    let spans = tracing
        .receiver
        .wait_for_trace(&trace_id, |spans| {
            spans.iter().any(|s| s.events.iter().any(|e| e == event))
        })
        .await;
    let lookup = spans
        .iter()
        .find(|s| s.events.iter().any(|e| e == event))
        .expect("rejected");
    assert_eq!(lookup.name, "get_user");
    assert!(
        !spans.iter().any(|s| s.name == "GET /api/v1/users/{id}"),
        "no HTTP client span: nothing was sent"
    );
}
