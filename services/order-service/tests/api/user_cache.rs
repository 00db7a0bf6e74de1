//! The user cache: two order-service replicas on one database serve a known
//! user without asking user-service, and both refuse a user deactivated or
//! deleted as soon as the event arrives, long before the cache's TTL.

use std::time::Duration;

use platform::backend_tests;
use platform::testing::{
    TestStream, assert_eventually, metric_value, poll_until, unpublished_events,
};
use reqwest::StatusCode;

use crate::helpers::{OrderService, UserService};

/// Far longer than any test waits: a refusal seen in time came from the event.
const TTL: &str = "600";
/// How long an event may take to arrive.
const DELIVERY: Duration = Duration::from_secs(20);

async fn counter(replica: &OrderService, series: &str) -> f64 {
    metric_value(&replica.metrics().await, series).unwrap_or(0.0)
}

async fn cache_hits(replica: &OrderService) -> f64 {
    counter(
        replica,
        r#"order_service_user_cache_requests_total{outcome="hit"}"#,
    )
    .await
}

async fn user_service_calls(replica: &OrderService) -> f64 {
    counter(
        replica,
        r#"order_service_user_client_requests_total{outcome="found"}"#,
    )
    .await
}

/// Places orders for `user` on `replica` until one is served from the cache
/// (the replica's event subscription must be live first).
async fn warm(replica: &OrderService, user: i64) {
    assert_eventually(
        DELIVERY,
        || async {
            replica.create_order_id(user).await;
            cache_hits(replica).await >= 1.0
        },
        &format!("the cache never served user {user}"),
    )
    .await;
}

/// Polls until `replica` answers `status` to an order for `user`.
async fn refused(replica: &OrderService, user: i64, status: StatusCode) -> bool {
    poll_until(DELIVERY, || async {
        let answer = replica
            .create_order(user, "PROD-C", serde_json::json!(5))
            .await;
        assert!(
            answer.status == StatusCode::CREATED || answer.status == status,
            "{}: {}",
            answer.status,
            answer.body
        );
        answer.status == status
    })
    .await
    .is_some()
}

backend_tests! {
    async fn both_replicas_serve_users_from_cache_and_refuse_them_at_the_event_not_the_ttl(backend) {
        let stream = TestStream::new();
        let bus = stream.owned_vars();
        let users = UserService::start_with(backend, &bus).await;
        let mut vars: Vec<(&str, &str)> = bus.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.push(("ORDER_SERVICE_USER_CACHE_TTL", TTL));
        let leaving = users.create_user("leaving@example.com", true).await;
        let deleted = users.create_user("deleted@example.com", true).await;
        // Their `user.created` events are out before the replicas subscribe, so
        // no late event empties a cache the test has just filled.
        assert_eventually(DELIVERY, || async { unpublished_events(users.database_url()).await == 0 }, "user-service's outbox did not drain").await;
        let first = OrderService::start(backend, &users.url(), &vars).await;
        let second = OrderService::start_on(first.database_url(), &users.url(), &vars).await;
        for replica in [&first, &second] {
            warm(replica, leaving).await;
            warm(replica, deleted).await;
        }

        // Served from the cache: no call to user-service for further orders.
        let calls = user_service_calls(&first).await;
        for _ in 0..5 {
            first.create_order_id(leaving).await;
        }
        assert_eq!(user_service_calls(&first).await, calls, "a cached user was looked up again");

        let deactivated = users.service.client
            .put_json(&format!("/api/v1/users/{leaving}"), &serde_json::json!({"active": false}))
            .await;
        assert_eq!(deactivated.status, StatusCode::OK);
        let removed = users.service.client.delete(&format!("/api/v1/users/{deleted}")).await;
        assert_eq!(removed.status, StatusCode::OK);
        for (name, replica) in [("first", &first), ("second", &second)] {
            assert!(
                refused(replica, leaving, StatusCode::BAD_REQUEST).await,
                "{backend:?}: the {name} replica still takes orders of a deactivated user"
            );
            assert!(
                refused(replica, deleted, StatusCode::NOT_FOUND).await,
                "{backend:?}: the {name} replica still takes orders of a deleted user"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ttl_asks_user_service_every_time() {
    let stream = TestStream::new();
    let bus = stream.owned_vars();
    let backend = platform::testing::Backend::Sqlite;
    let users = UserService::start_with(backend, &bus).await;
    let mut vars: Vec<(&str, &str)> = bus.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("ORDER_SERVICE_USER_CACHE_TTL", "0"));
    let orders = OrderService::start(backend, &users.url(), &vars).await;
    let user = users.create_user("uncached@example.com", true).await;
    for _ in 0..3 {
        orders.create_order_id(user).await;
    }
    assert_eq!(user_service_calls(&orders).await, 3.0);
    assert_eq!(cache_hits(&orders).await, 0.0);
}
