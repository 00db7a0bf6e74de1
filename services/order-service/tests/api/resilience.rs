//! Graceful degradation: user-service down, slow, failing or answering 404s.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, OrderService, StandIn, metric_value, spawn_system, spawn_system_with,
};
use platform::backend_tests;
use platform::testing::poll_until;

/// Long enough for a sweep or two on a loaded CI machine; the verifier runs every 0.2 s.
const SETTLE: Duration = Duration::from_secs(15);

backend_tests! {
    async fn every_known_outcome_is_exported_at_zero_before_its_first_event(backend) {
        let system = spawn_system(backend).await;
        let metrics = system.orders.metrics().await;
        for outcome in ["found", "not_found", "rejected", "failure"] {
            let series = format!(r#"order_service_user_client_requests_total{{outcome="{outcome}"}}"#);
            assert_eq!(metric_value(&metrics, &series), Some(0.0), "{series}");
        }
        for result in ["verified", "cancelled", "deferred"] {
            let series = format!(r#"order_service_order_verifications_total{{result="{result}"}}"#);
            assert_eq!(metric_value(&metrics, &series), Some(0.0), "{series}");
        }
    }

    async fn orders_survive_a_user_service_outage_and_are_settled_after_recovery(backend) {
        // No sweep during the outage: its lookups would be counted with the API's.
        let mut system = spawn_system_with(backend, &[("ORDER_SERVICE_VERIFY_INTERVAL", "3")]).await;
        let active = system.users.create_user("active@example.com", true).await;
        let inactive = system.users.create_user("inactive@example.com", false).await;
        assert_eq!(system.orders.breaker_state().await, 0.0);

        system.users.stop().await;
        let mut accepted = Vec::new();
        for user_id in [active, active, active, inactive, 987_654] {
            let response = system.orders.create_order(user_id, "PROD-9", json!(5)).await;
            assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
            assert_eq!(response.body["data"]["user"], Value::Null);
            assert_eq!(response.body["data"]["user_verified"], false);
            accepted.push((user_id, response.body["data"]["id"].as_i64().unwrap()));
        }
        assert_eq!(system.orders.breaker_state().await, 2.0, "three failed lookups open the circuit");
        let metrics = system.orders.metrics().await;
        assert_eq!(metric_value(&metrics, r#"order_service_user_client_requests_total{outcome="failure"}"#), Some(3.0));
        assert_eq!(metric_value(&metrics, r#"order_service_user_client_requests_total{outcome="rejected"}"#), Some(2.0));

        let read = system.orders.get(&format!("/api/v1/orders/{}", accepted[0].1)).await;
        assert_eq!(read.status, StatusCode::OK, "reading never fails because of user-service");
        assert_eq!(read.body["data"]["user"], Value::Null);
        let health = system.orders.get("/health").await;
        assert_eq!(health.status, StatusCode::OK, "order-service stays healthy");
        assert_eq!(health.body["info"]["user_service_circuit"], "open");

        system.users.restart().await;
        let orders = &system.orders;
        let settled = poll_until(SETTLE, || async {
            orders.get("/api/v1/orders?page_size=100").await.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["user_verified"] == true)
        }).await.is_some();
        assert!(settled, "{}", orders.get("/api/v1/orders").await.body);
        assert_eq!(orders.breaker_state().await, 0.0, "half-open trials succeeded and closed it");
        for (user_id, id) in accepted {
            let order = orders.get(&format!("/api/v1/orders/{id}")).await.body["data"].clone();
            let (status, reason) = (order["status"].as_str().unwrap(), order["status_reason"].clone());
            match user_id {
                u if u == active => assert_eq!((status, reason), ("pending", Value::Null)),
                u if u == inactive => assert_eq!((status, reason), ("cancelled", json!("user is not active"))),
                _ => assert_eq!((status, reason), ("cancelled", json!("user not found"))),
            }
        }
        let metrics = orders.metrics().await;
        assert_eq!(metric_value(&metrics, r#"order_service_order_verifications_total{result="verified"}"#), Some(3.0));
        assert_eq!(metric_value(&metrics, r#"order_service_order_verifications_total{result="cancelled"}"#), Some(2.0));
    }

    async fn unverified_orders_are_settled_by_the_next_instance_after_a_restart(backend) {
        let mut system = spawn_system(backend).await;
        let user_id = system.users.create_user("restart@example.com", true).await;
        system.users.stop().await;
        let id = system.orders.create_order_id(user_id).await;
        // Restart order-service while user-service is still away, then bring it back.
        let orders = system.orders.restart().await;
        system.users.restart().await;
        let verified = poll_until(SETTLE, || async {
            orders.get(&format!("/api/v1/orders/{id}")).await.body["data"]["user_verified"] == true
        }).await.is_some();
        assert!(verified, "the unverified flag lives in the database");
        let read = orders.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(read.body["data"]["user"]["id"], user_id);
    }

    async fn a_storm_of_unknown_user_ids_never_opens_the_breaker(backend) {
        let system = spawn_system(backend).await;
        for user_id in 100_000..100_030 {
            system.orders.create_order(user_id, "P", json!(1)).await.assert_error(404, "NOT_FOUND");
        }
        assert_eq!(system.orders.breaker_state().await, 0.0);
        let metrics = system.orders.metrics().await;
        assert_eq!(metric_value(&metrics, r#"order_service_user_client_requests_total{outcome="not_found"}"#), Some(30.0));
    }
}

#[tokio::test]
async fn slow_user_service_is_cut_at_the_client_timeout_and_the_open_breaker_fails_fast() {
    let slow = StandIn::start(200, Duration::from_secs(10)).await;
    let orders = OrderService::start(
        Backend::Sqlite,
        &slow.url(),
        &[
            ("ORDER_SERVICE_USER_SERVICE_TIMEOUT_MS", "1000"),
            ("CIRCUIT_BREAKER_TIMEOUT", "60"),
            ("ORDER_SERVICE_VERIFY_INTERVAL", "600"),
        ],
    )
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let response = orders.create_order(1, "P", json!(1)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        assert_eq!(response.body["data"]["user_verified"], false);
        // Bounded by the 1 s client timeout, not the 10 s the stand-in would take.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        orders.breaker_state().await,
        2.0,
        "timeouts trip the breaker"
    );
    let calls_before = slow.calls();
    let started = Instant::now();
    let response = orders.create_order(1, "P", json!(1)).await;
    let open_call = started.elapsed();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(
        slow.calls(),
        calls_before,
        "an open circuit does not call user-service"
    );
    assert!(
        open_call < Duration::from_millis(1000),
        "open circuit answered in {open_call:?}, not after the timeout"
    );
}

#[tokio::test]
async fn user_service_5xx_answers_count_as_failures() {
    let failing = StandIn::start(500, Duration::ZERO).await;
    let orders = OrderService::start(
        Backend::Sqlite,
        &failing.url(),
        &[("CIRCUIT_BREAKER_TIMEOUT", "60")],
    )
    .await;
    for _ in 0..3 {
        let response = orders.create_order(1, "P", json!(1)).await;
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.body["data"]["user_verified"], false);
    }
    assert_eq!(orders.breaker_state().await, 2.0);
}

#[tokio::test]
async fn the_request_id_travels_to_user_service() {
    let stand_in = StandIn::start(200, Duration::ZERO).await;
    let orders = OrderService::start(Backend::Sqlite, &stand_in.url(), &[]).await;
    let created = orders
        .send(
            orders
                .http
                .post(orders.url("/api/v1/orders"))
                .header("x-request-id", "req-abc-123")
                .json(&json!({"user_id": 7, "product_id": "P", "quantity": 1, "total_price": 2.5})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers["x-request-id"], "req-abc-123");
    assert_eq!(created.body["data"]["user"]["id"], 7);
    let seen = stand_in.state.lock().unwrap().request_ids.clone();
    assert_eq!(seen, vec!["req-abc-123".to_owned()]);
}
