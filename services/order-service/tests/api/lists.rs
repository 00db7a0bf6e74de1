//! Order lists at scale: keyset cursors over every filter, bound to the list
//! and filter they came from.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::backend_tests;
use platform::db::{Database, SqlParam};
use platform::testing::{assert_no_repeats, walk_by_cursor, walk_by_page};

use crate::helpers::{OrderService, StandIn, TEST_AUTH};

/// Inserts `count` pending orders of `user_id` for `product`, all created at
/// `at` (ties, ordered by id), behind the service's back.
async fn insert_orders(db: &Database, user_id: i64, product: &str, count: i64, at: DateTime<Utc>) {
    // In `INSERT … SELECT`, PostgreSQL does not type a parameter by its column.
    let at_sql = match db {
        Database::Postgres(_) => "CAST($4 AS TIMESTAMPTZ)",
        Database::Sqlite(_) => "$4",
    };
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO orders (user_id, product_id, quantity, total_price_cents, status, user_verified, created_at, updated_at) \
         SELECT CAST($2 AS BIGINT), $3, 1, 100 * i, 'pending', TRUE, {at_sql}, {at_sql} FROM n"
    );
    let product = product.to_owned();
    let params: [&dyn SqlParam; 4] = [&count, &user_id, &product, &at];
    db.execute(&sql, &params).await.expect("bulk insert");
}

/// The live orders matching `condition`, in the list's order, read with SQL.
async fn ids_in_list_order(db: &Database, condition: &str) -> Vec<i64> {
    let sql = format!(
        "SELECT id FROM orders WHERE deleted_at IS NULL AND {condition} ORDER BY created_at DESC, id DESC"
    );
    let rows = db.query(&sql, &[]).await.unwrap();
    rows.iter()
        .map(|row| row.get::<i64>("id").unwrap())
        .collect()
}

async fn spawn(backend: platform::testing::Backend) -> (StandIn, OrderService, Database) {
    let users = StandIn::start(200, Duration::ZERO).await;
    let orders = OrderService::start(backend, &users.url(), &[]).await;
    let db = platform::testing::connect(orders.database_url()).await;
    (users, orders, db)
}

backend_tests! {
    async fn cursor_walks_equal_page_walks_for_every_filter(backend) {
        let (_users, orders, db) = spawn(backend).await;
        let start = platform::db::now() - chrono::Duration::hours(1);
        for (i, (user, product)) in [(7, "A-1"), (8, "A-1"), (7, "B-2"), (9, "A-1")].into_iter().enumerate() {
            insert_orders(&db, user, product, 9, start + chrono::Duration::minutes(i as i64 % 2)).await;
        }
        db.execute("UPDATE orders SET status = 'confirmed' WHERE id % 3 = 0", &[]).await.unwrap();
        for (query, condition) in [
            ("", "TRUE"),
            ("user_id=7", "user_id = 7"),
            ("status=confirmed", "status = 'confirmed'"),
            ("product_id=A-1", "product_id = 'A-1'"),
            ("user_id=7&status=pending&product_id=B-2", "user_id = 7 AND status = 'pending' AND product_id = 'B-2'"),
        ] {
            let expected = ids_in_list_order(&db, condition).await;
            assert!(!expected.is_empty(), "{query}");
            let path = format!("/api/v1/orders?page_size=4&{query}");
            let by_cursor = walk_by_cursor(&orders.client, &path, || async {}).await;
            assert_eq!(by_cursor, expected, "cursor walk: {query}");
            assert_eq!(walk_by_page(&orders.client, &path).await, expected, "page walk: {query}");
        }
        db.close().await;
    }

    async fn a_users_cursor_walk_over_its_orders_skips_nothing_while_it_buys_more(backend) {
        let (_users, orders, db) = spawn(backend).await;
        insert_orders(&db, 42, "OLD-1", 20, platform::db::now() - chrono::Duration::minutes(3)).await;
        insert_orders(&db, 43, "OTHER", 5, platform::db::now()).await;
        let expected = ids_in_list_order(&db, "user_id = 42").await;
        let customer = orders.client.with_token(&TEST_AUTH.user_token(42));
        let customer = &customer;
        let walked = walk_by_cursor(customer, "/api/v1/orders?page_size=3", || async move {
            let body = serde_json::json!({"product_id": "NEW-1", "quantity": 1, "total_price": 1});
            let created = customer.post_json("/api/v1/orders", &body).await;
            assert_eq!(created.status, 201, "{}", created.body);
        })
        .await;
        assert_no_repeats(&walked);
        assert_eq!(walked, expected);
        db.close().await;
    }

    async fn a_cursor_of_another_list_or_filter_is_a_400_naming_cursor(backend) {
        let (_users, orders, db) = spawn(backend).await;
        insert_orders(&db, 5, "P-1", 6, platform::db::now()).await;
        let first = orders.get("/api/v1/orders?page_size=2&user_id=5").await;
        let cursor = first.body["meta"]["next_cursor"].as_str().unwrap().to_owned();
        let of_users = platform::cursor::Cursor { at: platform::db::now(), id: 1_i64 }
            .encode("users|active=None|search=None");
        for query in [
            format!("cursor={of_users}"),
            format!("cursor={cursor}"),
            format!("cursor={cursor}&user_id=6"),
            format!("cursor={cursor}&user_id=5&status=pending"),
            "cursor=%00".to_owned(),
        ] {
            let answer = orders.get(&format!("/api/v1/orders?{query}")).await;
            answer.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(answer.invalid_fields(), ["cursor"], "{query}");
        }
        // A user's cursor is bound to its own orders: another user cannot use it.
        let own = orders.client.with_token(&TEST_AUTH.user_token(5));
        let mine = own.get("/api/v1/orders?page_size=2").await;
        let my_cursor = mine.body["meta"]["next_cursor"].as_str().unwrap().to_owned();
        assert_eq!(own.get(&format!("/api/v1/orders?page_size=2&cursor={my_cursor}")).await.status, 200);
        let other = orders.client.with_token(&TEST_AUTH.user_token(6));
        let answer = other.get(&format!("/api/v1/orders?page_size=2&cursor={my_cursor}")).await;
        assert_eq!(answer.invalid_fields(), ["cursor"]);
        db.close().await;
    }
}
