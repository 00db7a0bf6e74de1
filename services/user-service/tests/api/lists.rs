//! Lists at scale: keyset cursors, bounded counts and indexed search, checked
//! against the slow ways of getting the same answers.

use chrono::{DateTime, Duration, Utc};
use platform::backend_tests;
use platform::db::{Database, SqlParam};
use platform::pagination::EXACT_COUNT_LIMIT;
use platform::testing::{assert_no_repeats, page_ids, walk_by_cursor, walk_by_page};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// Inserts `count` users created at `at` (so they tie on `created_at` and are
/// ordered by id), named `<prefix> <n>`, behind the service's back: one
/// statement, however many.
async fn insert_users(db: &Database, prefix: &str, count: i64, at: DateTime<Utc>) {
    // In `INSERT … SELECT`, PostgreSQL does not type a parameter by its column.
    let at_sql = match db {
        Database::Postgres(_) => "CAST($4 AS TIMESTAMPTZ)",
        Database::Sqlite(_) => "$4",
    };
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO users (email, name, age, active, created_at, updated_at, role) \
         SELECT $2 || i || '@example.com', $3 || ' ' || i, 30, TRUE, {at_sql}, {at_sql}, 'user' FROM n"
    );
    let email_prefix = prefix.to_lowercase();
    let params: [&dyn SqlParam; 4] = [&count, &email_prefix, &prefix, &at];
    db.execute(&sql, &params).await.expect("bulk insert");
}

async fn database(app: &TestApp) -> Database {
    platform::testing::connect(app.database_url()).await
}

/// Users in the list's order (newest first, id descending), read with SQL.
async fn ids_in_list_order(db: &Database) -> Vec<i64> {
    let rows = db
        .query(
            "SELECT id FROM users WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.get::<i64>("id").unwrap())
        .collect()
}

fn search_url(app: &TestApp, term: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("search", term)];
    params.extend_from_slice(extra);
    let url = reqwest::Url::parse_with_params(&app.url("/api/v1/users"), &params).unwrap();
    format!("/api/v1/users?{}", url.query().unwrap())
}

/// A small xorshift generator: the randomized tests print their seed, so a
/// failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

backend_tests! {
    async fn a_cursor_walk_equals_the_page_walk_and_the_sql_order(backend) {
        let app = spawn_app(backend).await;
        let db = database(&app).await;
        let start = platform::db::now() - Duration::hours(1);
        // Three groups of rows that tie on created_at, and rows made through the API.
        for (i, prefix) in ["Alpha", "Beta", "Gamma"].into_iter().enumerate() {
            insert_users(&db, prefix, 19, start + Duration::minutes(i as i64)).await;
        }
        for i in 0..4 {
            app.create_user(&format!("api{i}@example.com"), "Api User", 20).await;
        }
        let expected = ids_in_list_order(&db).await;
        assert_eq!(expected.len(), 61);
        for size in [1, 7, 61, 100] {
            let path = format!("/api/v1/users?page_size={size}");
            let by_cursor = walk_by_cursor(&app.client, &path, || async {}).await;
            assert_eq!(by_cursor, expected, "cursor walk, page_size {size}");
            assert_eq!(walk_by_page(&app.client, &path).await, expected, "page walk, page_size {size}");
        }
        // With a filter, the walk covers what the filter selects, in order.
        let beta = walk_by_cursor(&app.client, &search_url(&app, "beta", &[("page_size", "4")]), || async {}).await;
        assert_eq!(beta.len(), 19);
        assert_eq!(beta, walk_by_page(&app.client, &search_url(&app, "beta", &[("page_size", "4")])).await);
        db.close().await;
    }

    async fn inserts_during_a_cursor_walk_neither_repeat_nor_skip_a_row(backend) {
        let app = spawn_app(backend).await;
        let db = database(&app).await;
        insert_users(&db, "Before", 40, platform::db::now() - Duration::minutes(5)).await;
        let before = ids_in_list_order(&db).await;
        let mut added = 0;
        let walked = walk_by_cursor(&app.client, "/api/v1/users?page_size=3", || {
            added += 1;
            let n = added;
            let app = &app;
            async move {
                // Two writers racing the walk: new users land in front of it.
                let (a, b) = (format!("during{n}a@example.com"), format!("during{n}b@example.com"));
                futures::join!(app.create_user(&a, "During Walk", 20), app.create_user(&b, "During Walk", 20));
            }
        })
        .await;
        assert_no_repeats(&walked);
        assert_eq!(walked, before, "exactly the rows that were there, in order");
        assert!(added >= 13, "the writers ran between pages");
        // Numbered pages, by contrast, shift when rows are added in front.
        assert_eq!(ids_in_list_order(&db).await.len(), 40 + 2 * added);
        db.close().await;
    }

    async fn a_bad_cursor_is_a_400_naming_cursor(backend) {
        let app = spawn_app(backend).await;
        let db = database(&app).await;
        insert_users(&db, "Some", 5, platform::db::now()).await;
        let first = app.get("/api/v1/users?page_size=2").await;
        let cursor = first.body["meta"]["next_cursor"].as_str().unwrap().to_owned();
        assert_eq!(page_ids(&app.get(&format!("/api/v1/users?page_size=2&cursor={cursor}")).await).len(), 2);
        let mut tampered = cursor.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let at = platform::db::now();
        let of_orders = platform::cursor::Cursor { at, id: 1_i64 }
            .encode("orders|user_id=None|status=None|product_id=None");
        for query in [
            "cursor=garbage".to_owned(),
            "cursor=".to_owned(),
            format!("cursor={}", "A".repeat(500)),
            format!("cursor={tampered}"),
            format!("cursor={}", &cursor[..cursor.len() - 1]),
            format!("cursor={of_orders}"),
            // The same list with another filter is another list.
            format!("cursor={cursor}&search=some"),
            format!("cursor={cursor}&active=true"),
            format!("cursor={cursor}&page=2"),
        ] {
            let answer = app.get(&format!("/api/v1/users?{query}")).await;
            answer.assert_clean_error(400, "VALIDATION_ERROR");
            assert_eq!(answer.invalid_fields(), ["cursor"], "{query}");
        }
        db.close().await;
    }

    async fn counts_are_exact_up_to_the_limit_and_a_flagged_lower_bound_beyond(backend) {
        let app = spawn_app(backend).await;
        let db = database(&app).await;
        let limit = EXACT_COUNT_LIMIT as i64;
        insert_users(&db, "Bulk", limit, platform::db::now() - Duration::minutes(1)).await;
        let meta = |answer: &Value| answer["meta"].clone();
        let at_limit = meta(&app.get("/api/v1/users?page=2&page_size=10").await.body);
        assert_eq!((at_limit["total_count"].as_i64(), at_limit["total_count_exact"].as_bool()), (Some(limit), Some(true)), "{at_limit}");
        assert_eq!(at_limit["total_pages"].as_i64(), Some(limit / 10));
        insert_users(&db, "Extra", 1, platform::db::now()).await;
        let beyond = meta(&app.get("/api/v1/users?page=2&page_size=10").await.body);
        assert_eq!((beyond["total_count"].as_i64(), beyond["total_count_exact"].as_bool()), (Some(limit + 1), Some(false)), "{beyond}");
        // The last page knows the total without counting.
        let last = meta(&app.get(&format!("/api/v1/users?page={}&page_size=10", limit / 10 + 1)).await.body);
        assert_eq!((last["total_count"].as_i64(), last["total_count_exact"].as_bool()), (Some(limit + 1), Some(true)), "{last}");
        assert!(last.get("next_cursor").is_none(), "{last}");
        // A filter that matches few rows is counted exactly.
        let few = meta(&app.get(&search_url(&app, "extra", &[])).await.body);
        assert_eq!((few["total_count"].as_i64(), few["total_count_exact"].as_bool()), (Some(1), Some(true)));
        // Cursor pages carry no counts.
        let cursor = beyond["next_cursor"].as_str().unwrap();
        let keyset = meta(&app.get(&format!("/api/v1/users?page_size=10&cursor={cursor}")).await.body);
        let mut keys: Vec<_> = keyset.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["next_cursor", "page_size"]);
        db.close().await;
    }

    async fn indexed_search_agrees_with_a_scan_on_a_randomized_table(backend) {
        let app = spawn_app(backend).await;
        let db = database(&app).await;
        let seed = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
        let mut rng = Rng(seed);
        // Few letters, so that terms of every length match something; the
        // wildcard characters and a quote are letters here too.
        let alphabet: Vec<char> = "abAB%_\\\"é x".chars().collect();
        let word = |rng: &mut Rng, length: usize| -> String {
            (0..length).map(|_| alphabet[rng.next(alphabet.len())]).collect()
        };
        let mut users = Vec::new();
        for i in 0..150 {
            let length = 1 + rng.next(8);
            let name = format!("N{}z", word(&mut rng, length));
            let email = format!("{}{i}@example.com", word(&mut rng, 3).replace(['%', '\\', '"', ' ', 'é', '_'], "").to_lowercase());
            let response = app.post_json("/api/v1/users", &serde_json::json!({"email": email, "name": name, "age": 20})).await;
            assert_eq!(response.status, 201, "{}", response.body);
            users.push(response.body["data"].clone());
        }
        // A deleted user is never found.
        let gone = users.pop().unwrap();
        app.delete(&format!("/api/v1/users/{}", gone["id"])).await;
        for _ in 0..60 {
            let length = 1 + rng.next(4);
            let term = word(&mut rng, length);
            let needle = term.trim().to_lowercase();
            if needle.is_empty() {
                continue;
            }
            let mut expected: Vec<i64> = users
                .iter()
                .filter(|u| {
                    let field = |f: &str| u[f].as_str().unwrap().to_lowercase();
                    field("name").contains(&needle) || field("email").contains(&needle)
                })
                .map(|u| u["id"].as_i64().unwrap())
                .collect();
            expected.reverse();
            let found = walk_by_cursor(&app.client, &search_url(&app, &term, &[("page_size", "100")]), || async {}).await;
            assert_eq!(found, expected, "seed {seed:#x}, term {term:?}");
            let counted = app.get(&search_url(&app, &term, &[])).await;
            assert_eq!(counted.body["meta"]["total_count"].as_u64(), Some(expected.len() as u64), "seed {seed:#x}, term {term:?}");
        }
        db.close().await;
    }
}
