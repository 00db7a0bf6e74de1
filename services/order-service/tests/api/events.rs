//! Events: each change writes exactly one event with its actor, in the same
//! transaction, on both backends; with NATS they are relayed, and a deleted
//! user's pending orders are cancelled by order-service.

use std::time::Duration;

use platform::backend_tests;
use platform::testing::{
    Backend, TestStream, assert_eventually, outbox_events, unpublished_events,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{OrderService, TEST_AUTH, UserService};

/// `(type, actor.sub, resource_id)` of each event.
fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["actor"]["sub"].as_str().unwrap().to_owned(),
                e["resource_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn owned(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

async fn start_pair(backend: Backend, extra: &[(String, String)]) -> (UserService, OrderService) {
    let users = UserService::start_with(backend, extra).await;
    let overrides: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let orders = OrderService::start(backend, &users.url(), &overrides).await;
    (users, orders)
}

backend_tests! {
    async fn every_change_writes_exactly_one_event_with_its_actor_and_none_for_reads(backend) {
        let (users, orders) = start_pair(backend, &[]).await;
        let anonymous = users.service.client.anonymous();
        let registered = anonymous.post_json("/api/v1/users", &json!({
            "email": "ev@example.com", "name": "Event User", "age": 30,
            "password": "event-user-password", "actor": {"sub": "forged"}
        })).await;
        // A forged actor in a body is an unknown field: refused, nothing written.
        assert_eq!(registered.status, StatusCode::BAD_REQUEST);
        let registered = anonymous.post_json("/api/v1/users", &json!({
            "email": "ev@example.com", "name": "Event User", "age": 30, "password": "event-user-password"
        })).await;
        let id = registered.body["data"]["id"].as_i64().unwrap();
        let as_user = users.service.client.with_token(&TEST_AUTH.user_token(id));
        assert_eq!(as_user.put_json(&format!("/api/v1/users/{id}"), &json!({"name": "Renamed User"})).await.status, StatusCode::OK);
        let login = anonymous.post_json("/api/v1/auth/login", &json!({"email": "ev@example.com", "password": "wrong-password!"})).await;
        assert_eq!(login.status, StatusCode::UNAUTHORIZED);
        let login = anonymous.post_json("/api/v1/auth/login", &json!({"email": "ev@example.com", "password": "event-user-password"})).await;
        assert_eq!(login.status, StatusCode::OK);
        assert_eq!(users.service.client.get(&format!("/api/v1/users/{id}")).await.status, StatusCode::OK);

        let order_as_user = orders.client.with_token(&TEST_AUTH.user_token(id));
        let created = order_as_user.post_json("/api/v1/orders", &json!({"product_id": "P-1", "quantity": 1, "total_price": 3})).await;
        let order = created.body["data"]["id"].as_i64().unwrap().to_string();
        order_as_user.put_json(&format!("/api/v1/orders/{order}"), &json!({"status": "cancelled"})).await;
        orders.get(&format!("/api/v1/orders/{order}")).await;
        orders.delete(&format!("/api/v1/orders/{order}")).await;
        users.service.client.put_json(&format!("/api/v1/users/{id}"), &json!({"active": false})).await;
        users.service.client.delete(&format!("/api/v1/users/{id}")).await;

        let id = id.to_string();
        let user_events = outbox_events::<Value>(users.database_url()).await;
        assert_eq!(summary(&user_events), owned(&[
            ("user.created", "anonymous", &id),
            ("user.updated", &id, &id),
            ("auth.login_failed", "anonymous", "login"),
            ("auth.token_issued", &id, &id),
            // order-service's own token, fetched for the order's user lookup.
            ("auth.token_issued", "order-service", "order-service"),
            ("user.deactivated", "operator", &id),
            ("user.deleted", "operator", &id),
        ]));
        assert_eq!(user_events[1]["payload"]["changed"], json!(["name"]));
        assert_eq!(user_events[3]["actor"]["roles"], json!(["user"]));
        let order_events = outbox_events::<Value>(orders.database_url()).await;
        assert_eq!(summary(&order_events), owned(&[
            ("order.created", &id, &order),
            ("order.status_changed", &id, &order),
            ("order.deleted", "operator", &order),
        ]));
        assert_eq!(order_events[1]["payload"]["from"], "pending");
        assert_eq!(order_events[1]["payload"]["to"], "cancelled");
        // Never a secret: no password, hash or token in any event.
        let all = format!("{user_events:?}{order_events:?}");
        for secret in ["event-user-password", "argon2", "access_token", "eyJ"] {
            assert!(!all.contains(secret), "an event holds {secret}: {all}");
        }
        for event in user_events.iter().chain(&order_events) {
            assert_eq!(event["id"].as_str().unwrap().chars().nth(14), Some('7'), "UUID v7: {event}");
        }
    }

    async fn a_change_that_fails_writes_no_event(backend) {
        let (users, _orders) = start_pair(backend, &[]).await;
        users.create_user("dup@example.com", true).await;
        let duplicate = users.service.client.post_json("/api/v1/users", &json!({"email": "dup@example.com", "name": "Dup User", "age": 3})).await;
        assert_eq!(duplicate.status, StatusCode::CONFLICT);
        let events = outbox_events::<Value>(users.database_url()).await;
        assert_eq!(events.len(), 1, "{events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_the_outbox_drains_and_a_deleted_users_pending_orders_are_cancelled() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let stream = TestStream::new();
        let bus = stream.owned_vars();
        let (users, orders) = start_pair(backend, &bus).await;
        let user = users.create_user("leaving@example.com", true).await;
        let pending = orders.create_order_id(user).await;
        let shipped = orders.create_order_id(user).await;
        for status in ["confirmed", "shipped"] {
            let changed = orders
                .put_json(
                    &format!("/api/v1/orders/{shipped}"),
                    &json!({"status": status}),
                )
                .await;
            assert_eq!(changed.status, StatusCode::OK);
        }
        assert_eq!(
            users
                .service
                .client
                .delete(&format!("/api/v1/users/{user}"))
                .await
                .status,
            StatusCode::OK
        );
        assert_eventually(
            Duration::from_secs(15),
            || async {
                orders.get(&format!("/api/v1/orders/{pending}")).await.body["data"]["status"]
                    == "cancelled"
            },
            &format!("{backend:?}: the pending order was not cancelled"),
        )
        .await;
        let pending = orders.get(&format!("/api/v1/orders/{pending}")).await;
        assert_eq!(pending.body["data"]["status_reason"], "user deleted");
        assert_eq!(pending.body["data"]["updated_by"], "system");
        let shipped = orders.get(&format!("/api/v1/orders/{shipped}")).await;
        assert_eq!(shipped.body["data"]["status"], "shipped");
        // Both outboxes drain; the cancellation is itself an event, by system.
        assert_eventually(
            Duration::from_secs(15),
            || async {
                unpublished_events(users.database_url()).await == 0
                    && unpublished_events(orders.database_url()).await == 0
            },
            &format!("{backend:?}: the outbox did not drain"),
        )
        .await;
        let last = outbox_events::<Value>(orders.database_url())
            .await
            .pop()
            .unwrap();
        assert_eq!(
            (last["type"].as_str(), last["actor"]["sub"].as_str()),
            (Some("order.status_changed"), Some("system"))
        );
        assert_eq!(last["payload"]["reason"], "user deleted");
        let metrics = users.service.client.metrics().await;
        assert_eq!(
            platform::testing::metric_value(&metrics, "user_service_outbox_backlog"),
            Some(0.0),
            "{metrics}"
        );
    }
}
