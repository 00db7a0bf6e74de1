//! The user API as the contract describes it, plus our stricter error handling.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;
use platform::backend_tests;

backend_tests! {
    async fn create_returns_201_with_the_user_and_lowercased_email(backend) {
        let app = spawn_app(backend).await;
        let response = app
            .post_json("/api/v1/users", &json!({"email": "John@Example.COM", "name": "John Doe", "age": 30}))
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        let user = &response.body["data"];
        assert_eq!(response.body["success"], true);
        assert!(user["id"].as_i64().unwrap() > 0);
        assert_eq!(user["email"], "john@example.com");
        assert_eq!(user["name"], "John Doe");
        assert_eq!(user["age"], 30);
        assert_eq!(user["active"], true);
        assert!(user["created_at"].is_string() && user["updated_at"].is_string());
        assert!(user.get("deleted_at").is_none());
    }

    async fn every_validation_rule_answers_400_naming_the_field(backend) {
        let app = spawn_app(backend).await;
        let long_name = "x".repeat(101);
        let cases: Vec<(Value, &str)> = vec![
            (json!({"email": "not-an-email", "name": "John", "age": 30}), "email"),
            (json!({"email": "", "name": "John", "age": 30}), "email"),
            (json!({"email": "a@example.com", "name": "J", "age": 30}), "name"),
            (json!({"email": "a@example.com", "name": "  J  ", "age": 30}), "name"),
            (json!({"email": "a@example.com", "name": " John Doe", "age": 30}), "name"),
            (json!({"email": "a@example.com", "name": "John\n", "age": 30}), "name"),
            (json!({"email": " a@example.com", "name": "John", "age": 30}), "email"),
            (json!({"email": "a@example.com", "name": long_name, "age": 30}), "name"),
            (json!({"email": "a@example.com", "name": "John", "age": 0}), "age"),
            (json!({"email": "a@example.com", "name": "John", "age": 151}), "age"),
            (json!({"email": "a@example.com", "name": "John", "age": -5}), "age"),
            (json!({"email": "a@example.com", "name": "John", "age": "thirty"}), "age"),
            (json!({"email": "a@example.com", "name": "John", "age": 30.5}), "age"),
            (json!({"email": "a@example.com", "name": "John", "age": 150.0001}), "age"),
            (json!({"email": "a@example.com", "name": "John", "age": 1e30}), "age"),
            (json!({"email": "a@example.com", "name": 42, "age": 30}), "name"),
            (json!({"email": "a@example.com", "name": "John"}), "age"),
            (json!({"name": "John", "age": 30}), "email"),
            (json!({"email": "a@example.com", "name": "John", "age": 30, "nickname": "Jo"}), "nickname"),
            (json!({"email": "a@example.com", "name": "John", "age": 30, "role": "root"}), "role"),
            (json!({"email": "a@example.com", "name": "John", "age": 30, "password": "short"}), "password"),
            (json!([1, 2, 3]), "body"),
        ];
        for (body, field) in cases {
            let response = app.post_json("/api/v1/users", &body).await;
            let message = response.assert_error(400, "VALIDATION_ERROR");
            assert!(message.contains(field), "{body} -> {message}");
            assert!(response.invalid_fields().contains(&field.to_owned()), "{body} -> {}", response.body);
        }
        // Nothing was stored by any of them.
        let list = app.get("/api/v1/users").await;
        assert_eq!(list.body["meta"]["total_count"], 0);
    }

    async fn malformed_json_wrong_content_type_and_oversized_body_get_their_statuses(backend) {
        let app = spawn_app(backend).await;
        let url = app.url("/api/v1/users");
        let broken = app.send(app.http.post(&url).header("content-type", "application/json").body(r#"{"email": "#)).await;
        broken.assert_error(400, "BAD_REQUEST");
        let invalid_utf8 = app.send(app.http.post(&url).header("content-type", "application/json").body(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'])).await;
        invalid_utf8.assert_error(400, "BAD_REQUEST");
        let duplicate_keys = app.send(app.http.post(&url).header("content-type", "application/json")
            .body(r#"{"email":"a@example.com","email":"b@example.com","name":"Jo","age":3}"#)).await;
        duplicate_keys.assert_error(400, "VALIDATION_ERROR");
        let text = app.send(app.http.post(&url).header("content-type", "text/plain").body("{}")).await;
        text.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
        let missing = app.send(app.http.post(&url).body("{}")).await;
        missing.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
        let huge = json!({"email": "a@example.com", "name": "x".repeat(70 * 1024), "age": 30});
        app.post_json("/api/v1/users", &huge).await.assert_error(413, "PAYLOAD_TOO_LARGE");
        // The service keeps serving after each of them.
        app.create_user("ok@example.com", "Still Fine", 20).await;
    }

    async fn duplicate_email_is_409_regardless_of_case(backend) {
        let app = spawn_app(backend).await;
        app.create_user("dup@example.com", "First", 30).await;
        for email in ["dup@example.com", "DUP@example.com"] {
            let response = app.post_json("/api/v1/users", &json!({"email": email, "name": "Second", "age": 31})).await;
            let message = response.assert_error(409, "CONFLICT");
            assert!(message.contains("dup@example.com"), "{message}");
        }
    }

    async fn concurrent_creates_with_one_email_yield_exactly_one_201(backend) {
        let app = spawn_app(backend).await;
        let bodies: Vec<Value> = (0..12)
            .map(|i| json!({"email": "race@example.com", "name": format!("Racer {i}"), "age": 20}))
            .collect();
        let attempts = bodies.iter().map(|body| app.post_json("/api/v1/users", body));
        let responses = join_all(attempts).await;
        let created = responses.iter().filter(|r| r.status == StatusCode::CREATED).count();
        let conflicts = responses.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
        assert_eq!((created, conflicts), (1, 11), "{:?}", responses.iter().map(|r| r.status).collect::<Vec<_>>());
    }

    async fn get_returns_the_user_or_404(backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("get@example.com", "Getter", 40).await;
        let id = user["id"].as_i64().unwrap();
        let response = app.get(&format!("/api/v1/users/{id}")).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body["data"], user);
        app.get("/api/v1/users/999999").await.assert_error(404, "NOT_FOUND");
    }

    async fn malformed_ids_are_400_on_every_method(backend) {
        let app = spawn_app(backend).await;
        for id in ["abc", "0", "-1", "1.5", "99999999999999999999", "9223372036854775808", "%20"] {
            let path = format!("/api/v1/users/{id}");
            app.get(&path).await.assert_error(400, "BAD_REQUEST");
            app.delete(&path).await.assert_error(400, "BAD_REQUEST");
            app.put_json(&path, &json!({"age": 3})).await.assert_error(400, "BAD_REQUEST");
        }
        // The largest id is valid syntax, and simply not found.
        app.get(&format!("/api/v1/users/{}", i64::MAX)).await.assert_error(404, "NOT_FOUND");
    }

    async fn list_paginates_newest_first_with_meta(backend) {
        let app = spawn_app(backend).await;
        let mut ids = Vec::new();
        for i in 0..25 {
            ids.push(app.create_user(&format!("u{i}@example.com"), &format!("User {i}"), 20).await["id"].as_i64().unwrap());
        }
        let first = app.get("/api/v1/users").await;
        assert_eq!(first.status, StatusCode::OK);
        let mut meta = first.body["meta"].clone();
        assert!(meta["next_cursor"].is_string(), "{meta}");
        meta.as_object_mut().unwrap().remove("next_cursor");
        assert_eq!(meta, json!({"page": 1, "page_size": 10, "total_pages": 3, "total_count": 25, "total_count_exact": true}));
        let mut seen = Vec::new();
        for page in 1..=3 {
            let response = app.get(&format!("/api/v1/users?page={page}&page_size=10")).await;
            seen.extend(response.body["data"].as_array().unwrap().iter().map(|u| u["id"].as_i64().unwrap()));
        }
        ids.reverse();
        assert_eq!(seen, ids, "every user once, newest first");
        let beyond = app.get("/api/v1/users?page=99").await;
        assert_eq!(beyond.body["data"], json!([]));
        assert_eq!(beyond.body["meta"]["total_count"], 25);
        let last_bigint_page = app.get("/api/v1/users?page=9223372036854775807&page_size=100").await;
        assert_eq!(last_bigint_page.status, StatusCode::OK, "{}", last_bigint_page.body);
        assert_eq!(last_bigint_page.body["data"], json!([]));
        app.get("/api/v1/users?page=9223372036854775808").await.assert_error(400, "VALIDATION_ERROR");
    }

    async fn list_rejects_bad_query_parameters_naming_them(backend) {
        let app = spawn_app(backend).await;
        let long_search = "s".repeat(300);
        for (query, field) in [
            ("page=0", "page"), ("page=-1", "page"), ("page=abc", "page"),
            ("page=99999999999999999999999", "page"),
            ("page_size=0", "page_size"), ("page_size=101", "page_size"), ("page_size=x", "page_size"),
            ("active=yes", "active"), (&format!("search={long_search}") as &str, "search"),
        ] {
            let response = app.get(&format!("/api/v1/users?{query}")).await;
            response.assert_error(400, "VALIDATION_ERROR");
            assert_eq!(response.invalid_fields(), vec![field.to_owned()], "{query}");
        }
    }

    async fn search_is_case_insensitive_over_name_and_email_and_literal(backend) {
        let app = spawn_app(backend).await;
        app.create_user("alice@example.com", "Alice Smith", 30).await;
        app.create_user("bob@wonder.org", "Bob Jones", 30).await;
        app.create_user("percent@example.com", "100% Real", 30).await;
        app.create_user("under_score@example.com", "Under Score", 30).await;
        app.create_user("underxscore@example.com", "Underx Score", 30).await;
        app.create_user("back@example.com", r"Back\Slash", 30).await;
        let names = |body: &Value| -> Vec<String> {
            let mut names: Vec<String> = body["data"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_owned()).collect();
            names.sort();
            names
        };
        let search = |term: &str| {
            let url = reqwest::Url::parse_with_params(&app.url("/api/v1/users"), &[("search", term)]).unwrap();
            app.send(app.http.get(url))
        };
        assert_eq!(names(&search("ALICE").await.body), ["Alice Smith"]);
        assert_eq!(names(&search("WONDER").await.body), ["Bob Jones"]);
        assert_eq!(names(&search("%").await.body), ["100% Real"]);
        assert_eq!(names(&search("under_").await.body), ["Under Score"]);
        assert_eq!(names(&search(r"\").await.body), [r"Back\Slash"]);
        assert_eq!(names(&search("' OR 1=1 --").await.body), Vec::<String>::new());
        assert_eq!(search("_").await.body["meta"]["total_count"], 1);
    }

    async fn list_filters_by_active(backend) {
        let app = spawn_app(backend).await;
        let on = app.create_user("on@example.com", "Active One", 30).await;
        let off = app.create_user("off@example.com", "Inactive One", 30).await;
        let off_id = off["id"].as_i64().unwrap();
        app.put_json(&format!("/api/v1/users/{off_id}"), &json!({"active": false})).await;
        let active = app.get("/api/v1/users?active=true").await;
        assert_eq!(active.body["data"][0]["id"], on["id"]);
        assert_eq!(active.body["meta"]["total_count"], 1);
        let inactive = app.get("/api/v1/users?active=false").await;
        assert_eq!(inactive.body["data"][0]["id"], off_id);
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], 2);
    }

    async fn update_changes_only_given_fields_and_validates(backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("upd@example.com", "Before", 30).await;
        let path = format!("/api/v1/users/{}", user["id"]);
        let response = app.put_json(&path, &json!({"name": "Jane Doe", "age": 31, "active": false})).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        let updated = &response.body["data"];
        assert_eq!((updated["name"].as_str(), updated["age"].as_i64(), updated["active"].as_bool()), (Some("Jane Doe"), Some(31), Some(false)));
        assert_eq!(updated["email"], "upd@example.com");
        assert_eq!(updated["created_at"], user["created_at"]);
        assert_ne!(updated["updated_at"], user["updated_at"]);
        let partial = app.put_json(&path, &json!({"age": 32.0})).await;
        assert_eq!(partial.status, StatusCode::OK, "an integral float is an integer: {}", partial.body);
        assert_eq!(partial.body["data"]["name"], "Jane Doe");
        let unchanged = app.put_json(&path, &json!({})).await;
        assert_eq!(unchanged.status, StatusCode::OK);
        assert_eq!(unchanged.body["data"]["age"], 32);
        for (body, field) in [
            (json!({"age": 0}), "age"), (json!({"name": "J"}), "name"),
            (json!({"active": "no"}), "active"), (json!({"email": "x@example.com"}), "email"),
        ] {
            let message = app.put_json(&path, &body).await.assert_error(400, "VALIDATION_ERROR");
            assert!(message.contains(field), "{message}");
        }
        app.put_json("/api/v1/users/424242", &json!({"age": 5})).await.assert_error(404, "NOT_FOUND");
    }

    async fn soft_deleted_users_vanish_and_free_their_email(backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("gone@example.com", "Gone Soon", 30).await;
        let path = format!("/api/v1/users/{}", user["id"]);
        let deleted = app.delete(&path).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
        assert_eq!(deleted.body["success"], true);
        app.get(&path).await.assert_error(404, "NOT_FOUND");
        app.put_json(&path, &json!({"age": 40})).await.assert_error(404, "NOT_FOUND");
        app.delete(&path).await.assert_error(404, "NOT_FOUND");
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], 0);
        let again = app.create_user("gone@example.com", "Back Again", 31).await;
        assert_ne!(again["id"], user["id"]);
        // Only one live row may hold the email; the deleted one does not count.
        app.post_json("/api/v1/users", &json!({"email": "gone@example.com", "name": "Third", "age": 3}))
            .await
            .assert_error(409, "CONFLICT");
    }

    async fn unicode_names_round_trip(backend) {
        let app = spawn_app(backend).await;
        for (i, name) in ["Zoë Ünïcode", "李小龍", "Ренат", "🦀 Ferris", "O'Brien; DROP TABLE users"].iter().enumerate() {
            let user = app.create_user(&format!("uni{i}@example.com"), name, 30).await;
            let fetched = app.get(&format!("/api/v1/users/{}", user["id"])).await;
            assert_eq!(fetched.body["data"]["name"], *name);
        }
    }
}
