//! The three services on one NATS JetStream stream, as deployed: every event
//! user-service and order-service write reaches the audit log exactly once,
//! with the actor who caused it, and no caller can name that actor itself.

use std::collections::BTreeMap;

use platform::backend_tests;
use platform::events::Event;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::system::{Pipeline, as_admin};

/// The audit log once every published event is in it, walked `page_size`
/// entries at a time; asserted to hold exactly one entry per event.
async fn settled_log(pipeline: &Pipeline, page_size: usize) -> Vec<Value> {
    let events = pipeline.settled_events().await;
    let entries = pipeline.audit.walk("", page_size).await;
    assert_one_entry_per_event(&entries, &events);
    entries
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
        let created = pipeline.place_order(&token).await;
        let order = created.body["data"]["id"].as_i64().expect("order id").to_string();
        let cancelled = orders_as_user
            .put_json(&format!("/api/v1/orders/{order}"), &json!({"status": "cancelled"}))
            .await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
        let deleted = as_admin(&pipeline.orders).delete(&format!("/api/v1/orders/{order}")).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
        let deleted = as_admin(&pipeline.users).delete(&user).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);

        // Pages smaller than the log: the walk follows the cursor across all of them.
        let entries = settled_log(&pipeline, 3).await;
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
        let order = pipeline.place_order(&token).await;
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

        let entries = settled_log(&pipeline, 100).await;
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
