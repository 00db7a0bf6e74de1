//! Who may do what on the user routes (issue 12's matrix), one rule per test:
//! anonymous callers, a user on its own id and on another's, the service
//! client and an admin; who created and changed a user; tokens without a role.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestClient, spawn_app, spawn_app_with};
use platform::backend_tests;
use platform::testing::TestResponse;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a new password of mine";

/// A self-registered user (with [`PASSWORD`]): its id and a client with its token.
async fn user(app: &TestApp, email: &str) -> (i64, TestClient) {
    let (data, client) = app.user_session(email, PASSWORD).await;
    (data["id"].as_i64().expect("user id"), client)
}

/// A user created by the admin (no password): the "other" user of a test.
async fn other_user(app: &TestApp) -> i64 {
    app.create_user("other@example.com", "Other User", 40).await["id"]
        .as_i64()
        .expect("user id")
}

fn user_path(id: i64) -> String {
    format!("/api/v1/users/{id}")
}

/// The answer of `POST /auth/login` with these credentials (from 127.0.0.1).
async fn login(app: &TestApp, email: &str, password: &str) -> TestResponse {
    app.anonymous()
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
}

/// 401 for a request without a token: `WWW-Authenticate: Bearer`, no error code.
fn assert_needs_token(response: &TestResponse) {
    response.assert_clean_error(401, "UNAUTHORIZED");
    assert_eq!(
        response.headers["www-authenticate"], "Bearer",
        "{}",
        response.body
    );
}

/// The user as the admin sees it.
async fn stored(app: &TestApp, id: i64) -> Value {
    let response = app.get(&user_path(id)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    response.body["data"].clone()
}

backend_tests! {
    async fn public_routes_answer_anonymous_callers_users_services_and_admins(backend) {
        let app = spawn_app(backend).await;
        let (_, user) = user(&app, "public@example.com").await;
        let service = app.as_service().await;
        let operator = &app.config.own.auth.operator;
        for (who, client) in [("anonymous", app.anonymous()), ("user", user), ("service", service), ("admin", app.client.clone())] {
            for path in ["/health", "/health/live", "/health/ready", "/metrics", "/.well-known/jwks.json", "/openapi.json", "/docs/"] {
                let status = client.http.get(client.url(path)).send().await.unwrap().status();
                assert_eq!(status, StatusCode::OK, "{who} GET {path}");
            }
            let token = client.post_json("/api/v1/auth/token", &json!({"client_id": operator.id, "client_secret": operator.secret.expose()})).await;
            assert_eq!(token.status, StatusCode::OK, "{who}: {}", token.body);
            let login = client.post_json("/api/v1/auth/login", &json!({"email": "public@example.com", "password": PASSWORD})).await;
            assert_eq!(login.status, StatusCode::OK, "{who}: {}", login.body);
        }
    }

    async fn anonymous_registration_needs_a_password_and_cannot_claim_admin(backend) {
        let app = spawn_app(backend).await;
        let anonymous = app.anonymous();
        let without_password = anonymous
            .post_json("/api/v1/users", &json!({"email": "self@example.com", "name": "Self Made", "age": 30}))
            .await;
        let message = without_password.assert_clean_error(400, "VALIDATION_ERROR");
        assert!(message.contains("password"), "{message}");
        assert_eq!(without_password.invalid_fields(), ["password"]);
        let as_admin = anonymous
            .post_json("/api/v1/users", &json!({"email": "self@example.com", "name": "Self Made", "age": 30, "password": PASSWORD, "role": "admin"}))
            .await;
        as_admin.assert_clean_error(403, "FORBIDDEN");
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], 0, "nothing stored");

        let registered = anonymous
            .post_json("/api/v1/users", &json!({"email": "self@example.com", "name": "Self Made", "age": 30, "password": PASSWORD, "role": "user"}))
            .await;
        assert_eq!(registered.status, StatusCode::CREATED, "{}", registered.body);
        let data = &registered.body["data"];
        assert_eq!(data["role"], "user");
        assert!(data.get("password").is_none() && data.get("password_hash").is_none(), "{data}");
        let token = login(&app, "self@example.com", PASSWORD).await;
        assert_eq!(token.status, StatusCode::OK, "{}", token.body);
    }

    async fn users_and_services_cannot_create_users(backend) {
        let app = spawn_app(backend).await;
        let (_, user) = user(&app, "creator@example.com").await;
        let service = app.as_service().await;
        let body = json!({"email": "new@example.com", "name": "New User", "age": 20, "password": PASSWORD});
        user.post_json("/api/v1/users", &body).await.assert_clean_error(403, "FORBIDDEN");
        service.post_json("/api/v1/users", &body).await.assert_clean_error(403, "FORBIDDEN");
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], 1, "only the session's user");
    }

    async fn admins_create_users_of_any_role_with_or_without_a_password(backend) {
        let app = spawn_app(backend).await;
        let plain = app.create_user("plain@example.com", "Plain User", 20).await;
        assert_eq!(plain["role"], "user");
        let created = app
            .post_json("/api/v1/users", &json!({"email": "boss@example.com", "name": "Boss User", "age": 50, "password": PASSWORD, "role": "admin"}))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        assert_eq!(created.body["data"]["role"], "admin");
        // The new admin logs in as one and acts as one.
        let token = app.login("boss@example.com", PASSWORD).await;
        let boss = app.anonymous().with_token(&token);
        let list = boss.get("/api/v1/users").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        assert_eq!(list.body["meta"]["total_count"], 2);
        assert_eq!(boss.get(&user_path(plain["id"].as_i64().unwrap())).await.status, StatusCode::OK);
    }

    async fn closed_registration_answers_anonymous_creation_with_401(backend) {
        let app = spawn_app_with(backend, &[("USER_SERVICE_OPEN_REGISTRATION", "false")]).await;
        let response = app
            .anonymous()
            .post_json("/api/v1/users", &json!({"email": "late@example.com", "name": "Too Late", "age": 30, "password": PASSWORD}))
            .await;
        assert_needs_token(&response);
        app.create_user("late@example.com", "Let In", 30).await;
    }

    async fn reading_a_user_without_a_token_is_401(backend) {
        let app = spawn_app(backend).await;
        let id = other_user(&app).await;
        assert_needs_token(&app.anonymous().get(&user_path(id)).await);
    }

    async fn a_user_reads_itself_and_another_users_id_answers_exactly_like_a_missing_one(backend) {
        let app = spawn_app(backend).await;
        let (own, user) = user(&app, "reader@example.com").await;
        let other = other_user(&app).await;
        let mine = user.get(&user_path(own)).await;
        assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
        assert_eq!(mine.body["data"], stored(&app, own).await);

        let existing = user.get(&user_path(other)).await;
        existing.assert_clean_error(404, "NOT_FOUND");
        // The same id once nobody has it: not a byte of difference.
        assert_eq!(app.delete(&user_path(other)).await.status, StatusCode::OK);
        let missing = user.get(&user_path(other)).await;
        assert_eq!(existing.body, missing.body);
        assert_eq!(existing.headers.get("www-authenticate"), missing.headers.get("www-authenticate"));
    }

    async fn services_and_admins_read_any_user(backend) {
        let app = spawn_app(backend).await;
        let (own, _) = user(&app, "someone@example.com").await;
        let other = other_user(&app).await;
        let service = app.as_service().await;
        for id in [own, other] {
            let by_service = service.get(&user_path(id)).await;
            assert_eq!(by_service.status, StatusCode::OK, "{}", by_service.body);
            assert_eq!(by_service.body["data"]["id"], id);
            assert_eq!(app.get(&user_path(id)).await.status, StatusCode::OK);
        }
    }

    async fn only_admins_list_users(backend) {
        let app = spawn_app(backend).await;
        let (_, user) = user(&app, "lister@example.com").await;
        let service = app.as_service().await;
        assert_needs_token(&app.anonymous().get("/api/v1/users").await);
        user.get("/api/v1/users").await.assert_clean_error(403, "FORBIDDEN");
        service.get("/api/v1/users").await.assert_clean_error(403, "FORBIDDEN");
        let list = app.get("/api/v1/users").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        assert_eq!(list.body["meta"]["total_count"], 1);
    }

    async fn a_user_changes_its_own_name_and_age(backend) {
        let app = spawn_app(backend).await;
        let (own, user) = user(&app, "changer@example.com").await;
        let response = user.put_json(&user_path(own), &json!({"name": "New Name", "age": 44})).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        assert_eq!((response.body["data"]["name"].as_str(), response.body["data"]["age"].as_i64()), (Some("New Name"), Some(44)));
        assert_eq!(stored(&app, own).await["name"], "New Name");
    }

    async fn a_user_cannot_change_its_own_active_flag_or_role(backend) {
        let app = spawn_app(backend).await;
        let (own, user) = user(&app, "climber@example.com").await;
        let before = stored(&app, own).await;
        for body in [
            json!({"role": "admin"}), json!({"active": false}), json!({"role": "user"}),
            json!({"name": "Sneaky Name", "role": "admin"}),
        ] {
            user.put_json(&user_path(own), &body).await.assert_clean_error(403, "FORBIDDEN");
        }
        assert_eq!(stored(&app, own).await, before, "nothing changed");
        let token = app.login("climber@example.com", PASSWORD).await;
        assert_eq!(crate::helpers::jwt_part(&token, 1)["roles"], json!(["user"]));
    }

    async fn a_user_changes_its_password_only_with_the_current_one(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "100")]).await;
        let (own, user) = user(&app, "rotator@example.com").await;
        let path = user_path(own);
        let without = user.put_json(&path, &json!({"password": NEW_PASSWORD})).await;
        let message = without.assert_clean_error(400, "VALIDATION_ERROR");
        assert!(message.contains("current_password"), "{message}");
        assert_eq!(without.invalid_fields(), ["current_password"]);
        let wrong = user.put_json(&path, &json!({"password": NEW_PASSWORD, "current_password": "not my password"})).await;
        wrong.assert_clean_error(403, "FORBIDDEN");
        login(&app, "rotator@example.com", NEW_PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");

        let changed = user.put_json(&path, &json!({"password": NEW_PASSWORD, "current_password": PASSWORD})).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
        assert!(changed.body["data"].get("password").is_none(), "{}", changed.body);
        let token = app.login("rotator@example.com", NEW_PASSWORD).await;
        assert_eq!(crate::helpers::jwt_part(&token, 1)["sub"], own.to_string());
        login(&app, "rotator@example.com", PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
    }

    async fn a_user_changing_another_users_id_gets_404(backend) {
        let app = spawn_app(backend).await;
        let (_, user) = user(&app, "meddler@example.com").await;
        let other = other_user(&app).await;
        let before = stored(&app, other).await;
        user.put_json(&user_path(other), &json!({"name": "Hijacked"})).await.assert_clean_error(404, "NOT_FOUND");
        assert_eq!(stored(&app, other).await, before);
    }

    async fn anonymous_callers_and_services_cannot_change_users(backend) {
        let app = spawn_app(backend).await;
        let (own, _) = user(&app, "target@example.com").await;
        let before = stored(&app, own).await;
        let service = app.as_service().await;
        assert_needs_token(&app.anonymous().put_json(&user_path(own), &json!({"name": "Anon Change"})).await);
        service.put_json(&user_path(own), &json!({"name": "Service Change"})).await.assert_clean_error(403, "FORBIDDEN");
        assert_eq!(stored(&app, own).await, before);
    }

    async fn admins_change_every_field_of_any_user_including_role(backend) {
        let app = spawn_app(backend).await;
        let (own, _) = user(&app, "promoted@example.com").await;
        let response = app
            .put_json(&user_path(own), &json!({"name": "Promoted User", "age": 61, "role": "admin", "password": NEW_PASSWORD}))
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        let data = &response.body["data"];
        assert_eq!((data["name"].as_str(), data["age"].as_i64(), data["role"].as_str()), (Some("Promoted User"), Some(61), Some("admin")));
        let token = app.login("promoted@example.com", NEW_PASSWORD).await;
        assert_eq!(crate::helpers::jwt_part(&token, 1)["roles"], json!(["admin"]));

        let deactivated = app.put_json(&user_path(own), &json!({"active": false})).await;
        assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.body);
        assert_eq!(deactivated.body["data"]["active"], false);
    }

    async fn a_user_deletes_itself_and_can_no_longer_log_in(backend) {
        let app = spawn_app(backend).await;
        let (own, user) = user(&app, "leaver@example.com").await;
        let deleted = user.delete(&user_path(own)).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
        login(&app, "leaver@example.com", PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
        // Its token is still valid until it expires, but there is nothing left to see.
        user.get(&user_path(own)).await.assert_clean_error(404, "NOT_FOUND");
        app.get(&user_path(own)).await.assert_clean_error(404, "NOT_FOUND");
    }

    async fn a_user_deleting_another_users_id_gets_404(backend) {
        let app = spawn_app(backend).await;
        let (_, user) = user(&app, "vandal@example.com").await;
        let other = other_user(&app).await;
        user.delete(&user_path(other)).await.assert_clean_error(404, "NOT_FOUND");
        stored(&app, other).await;
    }

    async fn anonymous_callers_and_services_cannot_delete_users(backend) {
        let app = spawn_app(backend).await;
        let (own, _) = user(&app, "keeper@example.com").await;
        let service = app.as_service().await;
        assert_needs_token(&app.anonymous().delete(&user_path(own)).await);
        service.delete(&user_path(own)).await.assert_clean_error(403, "FORBIDDEN");
        stored(&app, own).await;
    }

    async fn admins_delete_any_user(backend) {
        let app = spawn_app(backend).await;
        let (own, _) = user(&app, "removed@example.com").await;
        let other = other_user(&app).await;
        for id in [own, other] {
            let deleted = app.delete(&user_path(id)).await;
            assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
            app.get(&user_path(id)).await.assert_clean_error(404, "NOT_FOUND");
        }
        login(&app, "removed@example.com", PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
    }

    async fn created_by_and_updated_by_name_who_acted(backend) {
        let app = spawn_app(backend).await;
        let by_admin = app.create_user("made@example.com", "Made By Admin", 30).await;
        assert_eq!((&by_admin["created_by"], &by_admin["updated_by"]), (&json!("operator"), &json!("operator")));
        let (own, user) = user(&app, "selfmade@example.com").await;
        let registered = stored(&app, own).await;
        assert_eq!((&registered["created_by"], &registered["updated_by"]), (&Value::Null, &Value::Null));

        let changed = user.put_json(&user_path(own), &json!({"age": 31})).await;
        assert_eq!(changed.body["data"]["updated_by"], own.to_string(), "{}", changed.body);
        assert_eq!(changed.body["data"]["created_by"], Value::Null);
        let by_operator = app.put_json(&user_path(own), &json!({"age": 32})).await;
        assert_eq!(by_operator.body["data"]["updated_by"], "operator");
        // The answers show what is stored.
        assert_eq!(stored(&app, own).await["updated_by"], "operator");
        let listed = app.get("/api/v1/users").await;
        let made = listed.body["data"].as_array().unwrap().iter().find(|u| u["id"] == by_admin["id"]).cloned().unwrap();
        assert_eq!(made["created_by"], "operator");
    }

    async fn a_token_without_a_known_role_is_forbidden(backend) {
        let app = spawn_app(backend).await;
        let (own, _) = user(&app, "roleless@example.com").await;
        for roles in [json!([]), json!(["auditor"]), json!("superuser")] {
            let token = app.sign_claims(&own.to_string(), json!({"roles": roles}));
            let client = app.anonymous().with_token(&token);
            client.get(&user_path(own)).await.assert_clean_error(403, "FORBIDDEN");
            client.get("/api/v1/users").await.assert_clean_error(403, "FORBIDDEN");
            client.put_json(&user_path(own), &json!({"age": 99})).await.assert_clean_error(403, "FORBIDDEN");
        }
        let no_roles_claim = app.anonymous().with_token(&app.sign_claims(&own.to_string(), json!({"roles": null})));
        no_roles_claim.get(&user_path(own)).await.assert_clean_error(403, "FORBIDDEN");
    }
}
