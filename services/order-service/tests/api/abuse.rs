//! Bad input and abuse: every request gets a clear 4xx envelope and the service keeps serving.
//!
//! The platform-level cases (body size, header floods, slow clients, request ids,
//! the limiter) are proven once, in user-service's abuse suite; here are the bodies
//! and filters only orders have.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{OrderService, System, spawn_system};
use platform::backend_tests;
use platform::testing::TestResponse;

/// POSTs `body` as it is written (numbers such as `1e400` or `-0` cannot go
/// through `serde_json::Value` unchanged).
async fn post_order_text(orders: &OrderService, body: String) -> TestResponse {
    orders
        .send(
            orders
                .http
                .post(orders.url("/api/v1/orders"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

async fn put_status_text(orders: &OrderService, id: i64, body: String) -> TestResponse {
    orders
        .send(
            orders
                .http
                .put(orders.url(&format!("/api/v1/orders/{id}")))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

/// A create body with one field's JSON text replaced.
fn order_with(user_id: i64, field: &str, json_text: &str) -> String {
    let mut fields = vec![
        ("user_id", user_id.to_string()),
        ("product_id", "\"PROD-1\"".to_owned()),
        ("quantity", "1".to_owned()),
        ("total_price", "9.99".to_owned()),
    ];
    for (name, value) in &mut fields {
        if *name == field {
            *value = json_text.to_owned();
        }
    }
    let members: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// The service still takes and reads orders after whatever came before.
async fn assert_still_serving(system: &System, user_id: i64) {
    let id = system.orders.create_order_id(user_id).await;
    let fetched = system.orders.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
}

async fn total_count(orders: &OrderService, query: &str) -> u64 {
    let response = orders.get(&format!("/api/v1/orders?{query}")).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{query}: {}",
        response.body
    );
    response.body["meta"]["total_count"].as_u64().unwrap()
}

backend_tests! {
    async fn total_price_edge_values_are_exact_or_400_naming_total_price(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("money@example.com", true).await;
        for literal in [
            "\"9.99\"", "\"1e400\"", "1e400", "-1e400", "1e-400", "0.001", "0.0000000000000000000000000001",
            "-0.01", "1000000000.01", "123456789012345678901234567890",
            "99999999999999999999999999999999999999999999999999.5", "null", "true", "[]", "{}",
            "[[[[[[[[[[1]]]]]]]]]]",
        ] {
            let response = post_order_text(&system.orders, order_with(user_id, "total_price", literal)).await;
            let message = response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["total_price"], "{literal}: {message}");
            if literal.starts_with(|c: char| c.is_ascii_digit()) {
                assert!(message.contains("at most"), "{literal}: {message}");
            }
        }
        // Not JSON numbers at all.
        for literal in ["NaN", "Infinity", "0x10", "+1", ".5", "1.", "01"] {
            let response = post_order_text(&system.orders, order_with(user_id, "total_price", literal)).await;
            response.assert_clean_error(400, "BAD_REQUEST");
        }
        for (literal, cents) in [
            ("-0", 0), ("-0.0", 0), ("0", 0), ("0.10", 10), ("1E2", 10_000), ("1.5e-1", 15),
            ("1000000000.00", 100_000_000_000_i64), ("0.01", 1),
        ] {
            let response = post_order_text(&system.orders, order_with(user_id, "total_price", literal)).await;
            assert_eq!(response.status, StatusCode::CREATED, "{literal}: {}", response.body);
            let price = &response.body["data"]["total_price"];
            assert_eq!((price.as_f64().unwrap() * 100.0).round() as i64, cents, "{literal} -> {price}");
            // Never a negative zero on the way out.
            assert!(!price.to_string().starts_with('-'), "{literal} -> {price}");
        }
        assert_still_serving(&system, user_id).await;
    }

    async fn quantity_and_user_id_out_of_range_are_400_naming_the_field(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("qty@example.com", true).await;
        let cases = [
            ("quantity", "2147483648"), ("quantity", "1000001"), ("quantity", "9223372036854775808"),
            ("quantity", "99999999999999999999"), ("quantity", "1e400"), ("quantity", "-0"),
            ("quantity", "-1"), ("quantity", "1.5"), ("quantity", "\"1\""), ("quantity", "null"),
            ("quantity", "true"), ("quantity", "[1]"),
            ("user_id", "9223372036854775808"), ("user_id", "-9223372036854775809"), ("user_id", "1e400"),
            ("user_id", "0.5"), ("user_id", "-0"), ("user_id", "{\"id\":1}"),
            ("product_id", "1"), ("product_id", "null"), ("product_id", "[\"P\"]"),
        ];
        for (field, literal) in cases {
            let response = post_order_text(&system.orders, order_with(user_id, field, literal)).await;
            let message = response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), [field], "{field}={literal}: {message}");
        }
        // An integral float is an integer (JSON Schema), at the edge of the range.
        let response = post_order_text(&system.orders, order_with(user_id, "quantity", "1000000.0")).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        assert_still_serving(&system, user_id).await;
    }

    async fn status_lookalikes_and_wrong_shapes_are_400_naming_status(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("status@example.com", true).await;
        let id = system.orders.create_order_id(user_id).await;
        for status in [
            "\"p\u{435}nding\"", "\"confirm\u{435}d\"", "\"PENDING\"", "\"Confirmed\"",
            "\"confirmed\\u0000\"", "\"confirmed \"", "\" confirmed\"", "\"\u{ff43}onfirmed\"",
            "\"cancelled\u{200b}\"", "\"canceled\"", "\"\"", "null", "1", "[\"confirmed\"]",
            "\"shipped\\u202e\"",
        ] {
            let response = put_status_text(&system.orders, id, format!("{{\"status\":{status}}}")).await;
            let message = response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["status"], "{status}: {message}");
        }
        let duplicate = put_status_text(&system.orders, id, r#"{"status":"confirmed","status":"cancelled"}"#.to_owned()).await;
        duplicate.assert_clean_error(400, "VALIDATION_ERROR");
        assert_eq!(duplicate.invalid_fields(), ["status"]);
        let order = system.orders.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(order.body["data"]["status"], "pending", "no rejected update changed it");
        // The same lookalikes in the list filter.
        for status in ["p%D0%B5nding", "PENDING", "pending%00", "pending%20", "%EF%BD%90ending", "pending&status=shipped"] {
            let response = system.orders.get(&format!("/api/v1/orders?status={status}")).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["status"], "{status}");
        }
        assert_still_serving(&system, user_id).await;
    }

    async fn product_ids_with_wildcards_and_injection_are_stored_and_filtered_literally(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("like@example.com", true).await;
        let products = ["%", "_", "\\", "A%", "A_", "AB", "a'b", "x' OR '1'='1", "P\u{301}", "\u{1f980}"];
        for product in products {
            let response = system.orders.create_order(user_id, product, json!(1)).await;
            assert_eq!(response.status, StatusCode::CREATED, "{product}: {}", response.body);
            assert_eq!(response.body["data"]["product_id"], product);
        }
        for product in products {
            let url = reqwest::Url::parse_with_params(&system.orders.url("/api/v1/orders"), &[("product_id", product)]).unwrap();
            let response = system.orders.send(system.orders.http.get(url)).await;
            assert_eq!(response.body["meta"]["total_count"], 1, "{product:?} matches only itself");
            assert_eq!(response.body["data"][0]["product_id"], product);
        }
        for query in ["product_id=A%25%25", "product_id=%25%25", "product_id=A__", "product_id=%27%20OR%20%271%27%3D%271", "product_id=P"] {
            assert_eq!(total_count(&system.orders, query).await, 0, "{query}");
        }
        // Control characters (NUL would make PostgreSQL fail) are a 400, in the filter and the body.
        for query in ["product_id=%00", "product_id=A%00", "product_id=A%1B", "product_id=%FF"] {
            let response = system.orders.get(&format!("/api/v1/orders?{query}")).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["product_id"], "{query}");
        }
        for product in ["\u{0}", "A\u{0}B", "\u{85}"] {
            let response = system.orders.create_order(user_id, product, json!(1)).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), ["product_id"], "{product:?}");
        }
        // Length is counted in characters: 64 four-byte characters fit, 65 do not.
        let crabs = "\u{1f980}".repeat(64);
        let response = system.orders.create_order(user_id, &crabs, json!(1)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        let response = system.orders.create_order(user_id, &format!("{crabs}\u{1f980}"), json!(1)).await;
        response.assert_clean_error(400, "VALIDATION_ERROR");
        assert_eq!(total_count(&system.orders, "page_size=100").await, products.len() as u64 + 1, "every order intact");
        assert_still_serving(&system, user_id).await;
    }

    async fn deeply_nested_duplicate_and_oversized_order_bodies_are_400_or_413(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("deep@example.com", true).await;
        let depth = 10_000;
        let deep_array = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep_object = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for (field, value) in [
            ("total_price", deep_array.as_str()), ("total_price", deep_object.as_str()),
            ("quantity", deep_array.as_str()), ("product_id", deep_object.as_str()),
        ] {
            let response = post_order_text(&system.orders, order_with(user_id, field, value)).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), [field]);
        }
        // Never closed.
        let unclosed = post_order_text(&system.orders, format!("{{\"total_price\":{}", "[".repeat(depth))).await;
        unclosed.assert_clean_error(400, "BAD_REQUEST");
        let id = system.orders.create_order_id(user_id).await;
        let deep_status = put_status_text(&system.orders, id, format!("{{\"status\":{deep_object}}}")).await;
        deep_status.assert_clean_error(400, "VALIDATION_ERROR");

        let duplicate = post_order_text(&system.orders, format!(
            r#"{{"user_id":{user_id},"product_id":"P","quantity":1,"total_price":1,"total_price":1000000}}"#
        )).await;
        duplicate.assert_clean_error(400, "VALIDATION_ERROR");
        assert_eq!(duplicate.invalid_fields(), ["total_price"]);

        let oversized = post_order_text(&system.orders, order_with(user_id, "product_id", &format!("\"{}\"", "P".repeat(70 * 1024)))).await;
        oversized.assert_clean_error(413, "PAYLOAD_TOO_LARGE");
        let invalid_utf8 = b"{\"user_id\":1,\"product_id\":\"P\xff\",\"quantity\":1,\"total_price\":1}";
        let invalid_utf8 = system.orders.send(system.orders.http.post(system.orders.url("/api/v1/orders"))
            .header("content-type", "application/json").body(invalid_utf8.to_vec())).await;
        invalid_utf8.assert_clean_error(400, "BAD_REQUEST");
        assert_eq!(total_count(&system.orders, "").await, 1, "only the valid order exists");
        assert_still_serving(&system, user_id).await;
    }

    async fn order_ids_and_list_filters_at_the_edges_are_400_naming_them(backend) {
        let system = spawn_system(backend).await;
        let user_id = system.users.create_user("edges@example.com", true).await;
        for id in ["-0", "1e3", "%FF", "1%00", "18446744073709551616", &"9".repeat(5_000)] {
            let path = format!("/api/v1/orders/{id}");
            system.orders.get(&path).await.assert_clean_error(400, "BAD_REQUEST");
            let body = json!({"status": "confirmed"});
            system.orders.put_json(&path, &body).await.assert_clean_error(400, "BAD_REQUEST");
            system.orders.delete(&path).await.assert_clean_error(400, "BAD_REQUEST");
        }
        let cases: Vec<(&str, &str)> = vec![
            ("user_id=9223372036854775808", "user_id"), ("user_id=-1", "user_id"), ("user_id=1.0", "user_id"),
            ("user_id=", "user_id"), ("user_id=1&user_id=2", "user_id"), ("user_id=%FF", "user_id"),
            ("page_size=-5", "page_size"), ("page=0", "page"),
        ];
        for (query, field) in cases {
            let response = system.orders.get(&format!("/api/v1/orders?{query}")).await;
            response.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), [field], "{query}");
        }
        assert_eq!(total_count(&system.orders, &format!("user_id={}", i64::MAX)).await, 0);
        let long_product = format!("product_id={}", "P".repeat(60 * 1024));
        let response = system.orders.get(&format!("/api/v1/orders?{long_product}")).await;
        let message = response.assert_clean_error(400, "VALIDATION_ERROR");
        assert!(message.len() < 300, "not echoed: {} bytes", message.len());
        assert_still_serving(&system, user_id).await;
    }
}
