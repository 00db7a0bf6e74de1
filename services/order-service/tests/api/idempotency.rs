//! Idempotency keys on order writes, on both backends: a repeat replays the
//! first answer and writes nothing, another request under the same key is 422,
//! a repeat while the first runs is 409, two replicas taking the same request at
//! once create one order, and an error or an expired key frees the key.

use std::time::Duration;

use platform::backend_tests;
use platform::testing::{TestResponse, assert_eventually, count_rows};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{OrderService, StandIn, TEST_AUTH, stored_orders};

/// The status changes in the outbox.
const STATUS_CHANGES: &str =
    "SELECT count(*) AS n FROM outbox WHERE subject LIKE '%status_changed'";

fn replayed(response: &TestResponse) -> bool {
    response
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

fn order(user_id: i64) -> Value {
    json!({"user_id": user_id, "product_id": "P-IDEM", "quantity": 1, "total_price": 12.5})
}

backend_tests! {
    async fn a_repeated_post_replays_the_first_answer_and_creates_one_order(backend) {
        let stand_in = StandIn::start(200, Duration::ZERO).await;
        let orders = OrderService::start(backend, &stand_in.url(), &[]).await;
        let first = orders.client.post_json_keyed("/api/v1/orders", "create-1", &order(7)).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert!(!replayed(&first));
        let again = orders.client.post_json_keyed("/api/v1/orders", "create-1", &order(7)).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert!(replayed(&again), "{:?}", again.headers);
        assert_eq!(again.body, first.body);
        assert_eq!(stored_orders(orders.database_url()).await.len(), 1);

        // The same key for another request: refused, nothing written.
        let other = orders.client.post_json_keyed("/api/v1/orders", "create-1", &order(8)).await;
        other.assert_error(422, "UNPROCESSABLE_ENTITY");
        // Keys are per subject: another caller's identical key is its own.
        let user = orders.client.with_token(&TEST_AUTH.user_token(7));
        let own = user.post_json_keyed("/api/v1/orders", "create-1", &order(7)).await;
        assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
        assert!(!replayed(&own));
        assert_eq!(stored_orders(orders.database_url()).await.len(), 2);

        let malformed = orders.client.post_json_keyed("/api/v1/orders", "two words", &order(7)).await;
        malformed.assert_error(400, "VALIDATION_ERROR");
        assert!(malformed.body.to_string().contains("Idempotency-Key"), "{}", malformed.body);
    }

    async fn a_repeated_status_change_replays_and_changes_once(backend) {
        let stand_in = StandIn::start(200, Duration::ZERO).await;
        let orders = OrderService::start(backend, &stand_in.url(), &[]).await;
        let id = orders.create_order_id(7).await;
        let path = format!("/api/v1/orders/{id}");
        let confirm = json!({"status": "confirmed"});
        let first = orders.client.put_json_keyed(&path, "confirm-1", &confirm).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        let again = orders.client.put_json_keyed(&path, "confirm-1", &confirm).await;
        assert!(replayed(&again));
        assert_eq!(again.body, first.body);
        assert_eq!(count_rows(orders.database_url(), STATUS_CHANGES).await, 1);
        let other = orders.client.put_json_keyed(&path, "confirm-1", &json!({"status": "shipped"})).await;
        other.assert_error(422, "UNPROCESSABLE_ENTITY");
    }

    async fn an_error_frees_the_key_and_an_expired_key_is_pruned(backend) {
        let stand_in = StandIn::start(200, Duration::ZERO).await;
        let orders = OrderService::start(backend, &stand_in.url(), &[]).await;
        let invalid = json!({"user_id": 7, "product_id": "P-IDEM", "quantity": 0, "total_price": 1});
        let refused = orders.client.post_json_keyed("/api/v1/orders", "retry-1", &invalid).await;
        refused.assert_error(400, "VALIDATION_ERROR");
        let fixed = orders.client.post_json_keyed("/api/v1/orders", "retry-1", &order(7)).await;
        assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
        assert!(!replayed(&fixed));

        // A day later the key is gone: pruned, and usable again.
        let db = platform::testing::connect(orders.database_url()).await;
        let past = platform::db::now() - chrono::Duration::hours(25);
        db.execute("UPDATE idempotency_keys SET claimed_at = $1, expires_at = $1", &[&past])
            .await
            .expect("age the key");
        assert_eq!(platform::idempotency::prune(&db).await.expect("prune"), 1);
        db.close().await;
        let later = orders.client.post_json_keyed("/api/v1/orders", "retry-1", &order(7)).await;
        assert_eq!(later.status, StatusCode::CREATED);
        assert!(!replayed(&later));
        assert_eq!(stored_orders(orders.database_url()).await.len(), 2);
    }

    async fn a_repeat_while_the_first_runs_is_409_and_two_replicas_create_one_order(backend) {
        // user-service answers slowly, so the first request is still running.
        let stand_in = StandIn::start(200, Duration::from_secs(1)).await;
        let first = OrderService::start(backend, &stand_in.url(), &[]).await;
        let second = OrderService::start_on(first.database_url(), &stand_in.url(), &[]).await;
        let (a, b) = (first.client.clone(), second.client.clone());
        let running = tokio::spawn(async move {
            a.post_json_keyed("/api/v1/orders", "slow-1", &order(7)).await
        });
        assert_eventually(Duration::from_secs(30), || async { stand_in.calls() >= 1 }, "the first request never reached user-service").await;
        let repeat = b.post_json_keyed("/api/v1/orders", "slow-1", &order(7)).await;
        repeat.assert_error(409, "CONFLICT");
        let done = running.await.expect("first request");
        assert_eq!(done.status, StatusCode::CREATED, "{}", done.body);
        let replay = second.client.post_json_keyed("/api/v1/orders", "slow-1", &order(7)).await;
        assert!(replayed(&replay));
        assert_eq!(replay.body, done.body);

        // Sent to both replicas at once: the database lets one through.
        let body = order(9);
        let (x, y) = tokio::join!(
            first.client.post_json_keyed("/api/v1/orders", "both-1", &body),
            second.client.post_json_keyed("/api/v1/orders", "both-1", &body),
        );
        let mut statuses = [x.status.as_u16(), y.status.as_u16()];
        statuses.sort_unstable();
        assert!(statuses == [201, 201] || statuses == [201, 409], "{statuses:?}");
        if statuses == [201, 201] {
            assert!(replayed(&x) != replayed(&y), "two fresh answers for one key");
        }
        let rows = stored_orders(first.database_url()).await;
        assert_eq!(rows.iter().filter(|o| o.user_id == 9).count(), 1, "{rows:?}");
    }
}
