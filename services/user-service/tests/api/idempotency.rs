//! Idempotency keys on user creation, on both backends: a repeated registration
//! replays the first answer and creates one user; another body under the key is 422.

use platform::backend_tests;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

async fn users_with_email(db: &platform::db::Database, email: &str) -> i64 {
    db.query_one(
        "SELECT count(*) AS n FROM users WHERE email = $1",
        &[&email.to_owned()],
    )
    .await
    .expect("count")
    .get("n")
    .expect("n")
}

backend_tests! {
    async fn a_repeated_create_replays_the_first_answer_and_creates_one_user(backend) {
        let app = spawn_app(backend).await;
        let body = json!({"email": "idem@example.com", "name": "Idem Potent", "age": 30});
        let first = app.client.post_json_keyed("/api/v1/users", "user-1", &body).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        let again = app.client.post_json_keyed("/api/v1/users", "user-1", &body).await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
        assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
        assert_eq!(again.body, first.body);
        assert_eq!(users_with_email(&app.db, "idem@example.com").await, 1);

        let other = json!({"email": "other@example.com", "name": "Idem Potent", "age": 30});
        app.client.post_json_keyed("/api/v1/users", "user-1", &other).await.assert_error(422, "UNPROCESSABLE_ENTITY");
        // Without a key, the same body is a second create: the email is taken.
        app.client.post_json("/api/v1/users", &body).await.assert_error(409, "CONFLICT");

        // Anonymous registration: the key is the anonymous caller's.
        let registration = json!({"email": "anon@example.com", "name": "Anon Ymous", "age": 30,
            "password": "a-long-enough-password"});
        let anonymous = app.client.anonymous();
        let first = anonymous.post_json_keyed("/api/v1/users", "user-1", &registration).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        let again = anonymous.post_json_keyed("/api/v1/users", "user-1", &registration).await;
        assert_eq!(again.body, first.body);
        assert!(!again.body.to_string().contains("password"), "{}", again.body);
        assert_eq!(users_with_email(&app.db, "anon@example.com").await, 1);
    }
}
