//! The order API with a real user-service behind it.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_system;
use platform::backend_tests;

const STATUSES: [&str; 5] = ["pending", "confirmed", "shipped", "delivered", "cancelled"];

/// The allowed path from `pending` to each status.
fn path_to(status: &str) -> &'static [&'static str] {
    match status {
        "confirmed" => &["confirmed"],
        "shipped" => &["confirmed", "shipped"],
        "delivered" => &["confirmed", "shipped", "delivered"],
        "cancelled" => &["cancelled"],
        _ => &[],
    }
}

fn allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("pending", "confirmed" | "cancelled")
            | ("confirmed", "shipped" | "cancelled")
            | ("shipped", "delivered")
    )
}

backend_tests! {
    async fn create_embeds_the_active_user_and_keeps_money_exact(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("buyer@example.com", true).await;
        let response = system.orders.create_order(user_id, "PROD-123", json!(99.99)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        let order = &response.body["data"];
        assert_eq!(order["user_id"], user_id);
        assert_eq!(order["product_id"], "PROD-123");
        assert_eq!(order["quantity"], 2);
        assert_eq!(order["status"], "pending");
        assert_eq!(order["user_verified"], true);
        assert_eq!(order["user"]["id"], user_id);
        assert_eq!(order["user"]["email"], "buyer@example.com");
        // The literal text of the price survives storage, not just its float value.
        let raw = system.orders.http.get(system.orders.url(&format!("/api/v1/orders/{}", order["id"]))).send().await.unwrap().text().await.unwrap();
        assert!(raw.contains(r#""total_price":99.99,"#), "{raw}");
        for (sent, shown) in [("0.1", "0.1"), ("0.2", "0.2"), ("0.3", "0.3"), ("0.30", "0.3"), ("1e2", "100.0"), ("0", "0.0"), ("123456.78", "123456.78")] {
            let body = format!(r#"{{"user_id":{user_id},"product_id":"P","quantity":1,"total_price":{sent}}}"#);
            let created = system.orders.http.post(system.orders.url("/api/v1/orders")).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(created.status(), StatusCode::CREATED);
            let text = created.text().await.unwrap();
            assert!(text.contains(&format!(r#""total_price":{shown},"#)), "{sent} -> {text}");
        }
    }

    async fn every_validation_rule_answers_400_naming_the_field(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("v@example.com", true).await;
        let long = "P".repeat(65);
        let cases: Vec<(Value, &str)> = vec![
            (json!({"user_id": 0, "product_id": "P", "quantity": 1, "total_price": 1}), "user_id"),
            (json!({"user_id": -4, "product_id": "P", "quantity": 1, "total_price": 1}), "user_id"),
            (json!({"user_id": "one", "product_id": "P", "quantity": 1, "total_price": 1}), "user_id"),
            (json!({"user_id": user_id, "product_id": "", "quantity": 1, "total_price": 1}), "product_id"),
            (json!({"user_id": user_id, "product_id": "   ", "quantity": 1, "total_price": 1}), "product_id"),
            (json!({"user_id": user_id, "product_id": " P-1", "quantity": 1, "total_price": 1}), "product_id"),
            (json!({"user_id": user_id, "product_id": long, "quantity": 1, "total_price": 1}), "product_id"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 0, "total_price": 1}), "quantity"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1.5, "total_price": 1}), "quantity"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1, "total_price": -0.01}), "total_price"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1, "total_price": 9.999}), "total_price"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1, "total_price": "9.99"}), "total_price"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1, "total_price": 1e12}), "total_price"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1}), "total_price"),
            (json!({"user_id": user_id, "product_id": "P", "quantity": 1, "total_price": 1, "status": "shipped"}), "status"),
        ];
        for (body, field) in cases {
            let response = system.orders.post_json("/api/v1/orders", &body).await;
            let message = response.assert_error(400, "VALIDATION_ERROR");
            assert!(message.contains(field), "{body} -> {message}");
            assert!(response.invalid_fields().contains(&field.to_owned()), "{body} -> {}", response.body);
        }
        let text = system.orders.send(system.orders.http.post(system.orders.url("/api/v1/orders")).header("content-type", "text/plain").body("{}")).await;
        text.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
        assert_eq!(system.orders.get("/api/v1/orders").await.body["meta"]["total_count"], 0, "nothing stored");
    }

    async fn unknown_user_is_404_and_inactive_user_is_400(backend) {
        let system = spawn_system(backend).await;
        let message = system.orders.create_order(424_242, "P", json!(1)).await.assert_error(404, "NOT_FOUND");
        assert_eq!(message, "user not found");
        let inactive = system.users.create_user("sleepy@example.com", false).await;
        let message = system.orders.create_order(inactive, "P", json!(1)).await.assert_error(400, "BAD_REQUEST");
        assert_eq!(message, "user is not active");
        assert_eq!(system.orders.get("/api/v1/orders").await.body["meta"]["total_count"], 0, "nothing stored");
    }

    async fn get_embeds_the_user_and_rejects_bad_ids(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("g@example.com", true).await;
        let id = system.orders.create_order_id(user_id).await;
        let response = system.orders.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body["data"]["user"]["id"], user_id);
        system.orders.get("/api/v1/orders/999999").await.assert_error(404, "NOT_FOUND");
        for bad in ["x", "0", "-3", "99999999999999999999"] {
            system.orders.get(&format!("/api/v1/orders/{bad}")).await.assert_error(400, "BAD_REQUEST");
        }
        // A user deleted after ordering: the order is still readable, user null.
        system.users.service.delete(&format!("/api/v1/users/{user_id}")).await;
        let orphan = system.orders.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(orphan.status, StatusCode::OK);
        assert_eq!(orphan.body["data"]["user"], Value::Null);
    }

    async fn list_filters_paginates_and_validates(backend) {
        let system = spawn_system(backend).await;
        let alice = system.users.create_user("alice@example.com", true).await;
        let bob = system.users.create_user("bob@example.com", true).await;
        let mut ids = Vec::new();
        for (i, (user, product)) in [(alice, "A-1"), (alice, "B_%"), (bob, "A-1"), (bob, "A-2"), (alice, "A-1")].into_iter().enumerate() {
            let response = system.orders.create_order(user, product, json!(i)).await;
            ids.push(response.body["data"]["id"].as_i64().unwrap());
        }
        system.orders.put_json(&format!("/api/v1/orders/{}", ids[0]), &json!({"status": "confirmed"})).await;
        let orders = &system.orders;
        let count = |query: &str| {
            let path = format!("/api/v1/orders?{query}");
            async move { orders.get(&path).await.body["meta"]["total_count"].as_u64().unwrap() }
        };
        assert_eq!(count("").await, 5);
        assert_eq!(count(&format!("user_id={alice}")).await, 3);
        assert_eq!(count("status=confirmed").await, 1);
        assert_eq!(count("status=pending").await, 4);
        assert_eq!(count("product_id=A-1").await, 3);
        assert_eq!(count("product_id=B_%25").await, 1);
        assert_eq!(count("product_id=B__").await, 0, "no wildcards");
        assert_eq!(count(&format!("user_id={bob}&product_id=A-2")).await, 1);
        let page = system.orders.get("/api/v1/orders?page=2&page_size=2").await;
        let mut meta = page.body["meta"].clone();
        assert!(meta["next_cursor"].is_string(), "{meta}");
        meta.as_object_mut().unwrap().remove("next_cursor");
        assert_eq!(meta, json!({"page": 2, "page_size": 2, "total_pages": 3, "total_count": 5, "total_count_exact": true}));
        let listed: Vec<i64> = page.body["data"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
        assert_eq!(listed, vec![ids[2], ids[1]], "newest first");
        assert!(page.body["data"][0].get("user").is_none(), "lists do not embed users");
        for (query, field) in [("user_id=0", "user_id"), ("user_id=abc", "user_id"), ("status=lost", "status"), ("page_size=500", "page_size"), ("page=0", "page")] {
            let response = system.orders.get(&format!("/api/v1/orders?{query}")).await;
            response.assert_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), vec![field.to_owned()], "{query}");
        }
    }

    async fn every_status_transition_is_allowed_or_409_as_the_state_machine_says(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("sm@example.com", true).await;
        for from in STATUSES {
            for to in STATUSES {
                let id = system.orders.create_order_id(user_id).await;
                let path = format!("/api/v1/orders/{id}");
                for step in path_to(from) {
                    let response = system.orders.put_json(&path, &json!({"status": step})).await;
                    assert_eq!(response.status, StatusCode::OK, "setup {from}: {}", response.body);
                }
                let response = system.orders.put_json(&path, &json!({"status": to})).await;
                if from == to || allowed(from, to) {
                    assert_eq!(response.status, StatusCode::OK, "{from} -> {to}: {}", response.body);
                    assert_eq!(response.body["data"]["status"], to);
                } else {
                    let message = response.assert_error(409, "CONFLICT");
                    assert!(message.contains(from) && message.contains(to), "{from} -> {to}: {message}");
                    let unchanged = system.orders.get(&path).await;
                    assert_eq!(unchanged.body["data"]["status"], from);
                }
            }
        }
        let any = system.orders.create_order_id(user_id).await;
        for body in [json!({"status": "lost"}), json!({}), json!({"status": "confirmed", "quantity": 3})] {
            system.orders.put_json(&format!("/api/v1/orders/{any}"), &body).await.assert_error(400, "VALIDATION_ERROR");
        }
        system.orders.put_json("/api/v1/orders/777777", &json!({"status": "confirmed"})).await.assert_error(404, "NOT_FOUND");
    }

    async fn concurrent_updates_of_one_order_do_not_both_win(backend) {
        // From confirmed, "shipped" and "cancelled" are each allowed, but never both
        // in sequence: if both were applied from the same read, one would be lost.
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("race@example.com", true).await;
        for round in 0..8 {
            let id = system.orders.create_order_id(user_id).await;
            let path = format!("/api/v1/orders/{id}");
            system.orders.put_json(&path, &json!({"status": "confirmed"})).await;
            let ship = json!({"status": "shipped"});
            let cancel = json!({"status": "cancelled"});
            let responses = join_all([system.orders.put_json(&path, &ship), system.orders.put_json(&path, &cancel)]).await;
            let winners: Vec<&str> = responses
                .iter()
                .filter(|r| r.status == StatusCode::OK)
                .map(|r| r.body["data"]["status"].as_str().unwrap())
                .collect();
            let losers = responses.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
            assert_eq!((winners.len(), losers), (1, 1), "round {round}: {responses:?}");
            let stored = system.orders.get(&path).await;
            assert_eq!(stored.body["data"]["status"], winners[0], "round {round}");
        }
    }

    async fn soft_deleted_orders_vanish(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("del@example.com", true).await;
        let id = system.orders.create_order_id(user_id).await;
        let path = format!("/api/v1/orders/{id}");
        let deleted = system.orders.delete(&path).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
        system.orders.get(&path).await.assert_error(404, "NOT_FOUND");
        system.orders.put_json(&path, &json!({"status": "confirmed"})).await.assert_error(404, "NOT_FOUND");
        system.orders.delete(&path).await.assert_error(404, "NOT_FOUND");
        assert_eq!(system.orders.get("/api/v1/orders").await.body["meta"]["total_count"], 0);
    }
}
