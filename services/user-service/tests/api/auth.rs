//! user-service as the identity provider: the token and login endpoints, the
//! JWKS, login throttling, forged tokens, key rotation, the secrets'
//! configuration and the embedded default, and what the log never shows.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use futures::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::helpers::{
    ProcessLog, ServiceProcess, TEST_AUTH, TestApp, TestClient, TestDatabase, base64url,
    client_from, jwt_part, spawn_app, spawn_app_with, spawn_replica,
};
use platform::auth::{CLIENTS_FILE, SIGNING_KEY_FILE, SigningKey, unix_now};
use platform::backend_tests;

use platform::config::ConfigError;
use platform::testing::{TestResponse, metric_value};
use user_service::Config;

const PASSWORD: &str = "correct horse battery staple";
const WRONG_PASSWORD: &str = "incorrect donkey battery";
const NEW_PASSWORD: &str = "a fresh passphrase of mine";
const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

fn from_ip(last: u8) -> reqwest::Client {
    client_from(IpAddr::from([127, 0, 0, last]))
}

/// `POST path` with a JSON body from the client IP 127.0.0.`ip`.
async fn post_from(app: &TestApp, ip: u8, path: &str, body: &Value) -> TestResponse {
    app.send(from_ip(ip).post(app.url(path)).json(body)).await
}

async fn login_from(app: &TestApp, ip: u8, email: &str, password: &str) -> TestResponse {
    post_from(
        app,
        ip,
        "/api/v1/auth/login",
        &json!({"email": email, "password": password}),
    )
    .await
}

/// The token endpoint's answer for the operator client, with the `extra` fields added.
async fn operator_token(app: &TestApp, extra: Value) -> TestResponse {
    let operator = &app.config.own.auth.operator;
    let mut body = json!({"client_id": operator.id, "client_secret": operator.secret.expose()});
    for (k, v) in extra.as_object().expect("fields") {
        body[k] = v.clone();
    }
    app.anonymous().post_json("/api/v1/auth/token", &body).await
}

/// Registers a user with [`PASSWORD`] and returns its id.
async fn register(app: &TestApp, email: &str) -> i64 {
    let response = app
        .anonymous()
        .post_json(
            "/api/v1/users",
            &json!({"email": email, "name": "Some User", "age": 30, "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    response.body["data"]["id"].as_i64().expect("id")
}

/// 429 RATE_LIMIT_EXCEEDED with a `Retry-After` of at least a second.
fn assert_throttled(response: &TestResponse, window_secs: u64) {
    response.assert_clean_error(429, "RATE_LIMIT_EXCEEDED");
    let retry_after: u64 = response.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (1..=window_secs).contains(&retry_after),
        "Retry-After {retry_after}"
    );
}

async fn counter(client: &TestClient, series: &str) -> f64 {
    metric_value(&client.metrics().await, series).unwrap_or(0.0)
}

fn login_outcome(outcome: &str) -> String {
    format!("user_service_login_attempts_total{{outcome=\"{outcome}\"}}")
}

fn auth_failures(reason: &str) -> String {
    format!("user_service_auth_failures_total{{reason=\"{reason}\"}}")
}

/// The `kid`s the service publishes, in order.
async fn published_kids(client: &TestClient) -> Vec<String> {
    let jwks = client.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, StatusCode::OK);
    jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

backend_tests! {
    async fn the_operator_gets_its_roles_or_a_subset_of_them_but_never_more(backend) {
        let app = spawn_app_with(backend, &[("AUTH_CLIENT_ROLES", "admin,user")]).await;
        let all = operator_token(&app, json!({})).await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.body);
        assert_eq!(all.body["data"]["roles"], json!(["admin", "user"]));
        assert_eq!(jwt_part(all.body["data"]["access_token"].as_str().unwrap(), 1)["roles"], json!(["admin", "user"]));

        let subset = operator_token(&app, json!({"roles": ["user"]})).await;
        assert_eq!(subset.status, StatusCode::OK, "{}", subset.body);
        assert_eq!(subset.body["data"]["roles"], json!(["user"]));
        let token = subset.body["data"]["access_token"].as_str().unwrap();
        assert_eq!(jwt_part(token, 1)["roles"], json!(["user"]));
        // The token holds only what was asked for.
        app.anonymous().with_token(token).get("/api/v1/users").await.assert_clean_error(403, "FORBIDDEN");

        for more in [json!(["service"]), json!(["admin", "service"])] {
            let refused = operator_token(&app, json!({"roles": more})).await;
            let message = refused.assert_clean_error(403, "FORBIDDEN");
            assert!(message.contains("service"), "{message}");
        }
    }

    async fn the_service_client_gets_the_service_role_and_nothing_else(backend) {
        let app = spawn_app(backend).await;
        let service = &app.config.own.auth.service;
        let body = json!({"client_id": service.id, "client_secret": service.secret.expose()});
        let answer = app.anonymous().post_json("/api/v1/auth/token", &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["data"]["roles"], json!(["service"]));
        let token = answer.body["data"]["access_token"].as_str().unwrap();
        assert_eq!(jwt_part(token, 1)["sub"], service.id.as_str());
        let mut admin = body.clone();
        admin["roles"] = json!(["admin"]);
        app.anonymous().post_json("/api/v1/auth/token", &admin).await.assert_clean_error(403, "FORBIDDEN");
    }

    async fn a_wrong_secret_and_an_unknown_client_get_the_same_401(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "100")]).await;
        let (operator, service) = (&app.config.own.auth.operator, &app.config.own.auth.service);
        let cases = [
            ("wrong secret", json!({"client_id": operator.id, "client_secret": "not-the-operator-secret-at-all"})),
            ("unknown client", json!({"client_id": "intruder", "client_secret": operator.secret.expose()})),
            ("the other client's secret", json!({"client_id": operator.id, "client_secret": service.secret.expose()})),
            ("secrets swapped", json!({"client_id": service.id, "client_secret": operator.secret.expose()})),
        ];
        let mut answers = Vec::new();
        for (case, body) in cases {
            let response = app.anonymous().post_json("/api/v1/auth/token", &body).await;
            response.assert_clean_error(401, "UNAUTHORIZED");
            answers.push((case, response.body, response.headers.get("www-authenticate").cloned()));
        }
        for (case, body, challenge) in &answers[1..] {
            assert_eq!((body, challenge), (&answers[0].1, &answers[0].2), "{case} differs from {}", answers[0].0);
        }
        assert_eq!(counter(&app, &login_outcome("failure")).await, 4.0);
    }

    async fn asking_for_no_roles_or_unknown_ones_is_a_400_naming_roles(backend) {
        let app = spawn_app(backend).await;
        for roles in [json!([]), json!(["root"]), json!("admin")] {
            let response = operator_token(&app, json!({"roles": roles})).await;
            let message = response.assert_clean_error(400, "VALIDATION_ERROR");
            assert!(message.contains("roles"), "{roles} -> {message}");
            let fields = response.invalid_fields();
            assert!(fields.len() == 1 && fields[0].starts_with("roles"), "{roles}: {fields:?}");
        }
    }

    async fn a_token_is_an_eddsa_jwt_with_the_documented_claims_and_lifetime(backend) {
        let app = spawn_app_with(backend, &[
            ("AUTH_TOKEN_TTL_MINUTES", "7"),
            ("AUTH_JWT_ISSUER", "https://id.example.test"),
            ("AUTH_JWT_AUDIENCE", "shop-apis"),
        ]).await;
        let before = unix_now();
        let answer = operator_token(&app, json!({})).await;
        let after = unix_now();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["success"], true);
        let data = &answer.body["data"];
        let fields: BTreeSet<&str> = data.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, BTreeSet::from(["access_token", "token_type", "expires_in", "expires_at", "roles"]));
        assert_eq!(data["token_type"], "Bearer");
        assert_eq!(data["expires_in"], 420);
        assert_eq!(data["roles"], json!(["admin"]));
        let token = data["access_token"].as_str().unwrap();

        let header = jwt_part(token, 0);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"].as_str(), Some(published_kids(&app).await[0].as_str()));
        let claims = jwt_part(token, 1);
        let names: BTreeSet<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names, BTreeSet::from(["iss", "aud", "sub", "roles", "iat", "nbf", "exp", "jti"]));
        assert_eq!(claims["iss"], "https://id.example.test");
        assert_eq!(claims["aud"], "shop-apis");
        assert_eq!(claims["sub"], "operator");
        assert_eq!(claims["roles"], json!(["admin"]));
        let iat = claims["iat"].as_u64().unwrap();
        assert!((before..=after).contains(&iat), "iat {iat} not in {before}..={after}");
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert_eq!(claims["exp"].as_u64().unwrap() - iat, 7 * 60);
        let expires_at = chrono::DateTime::parse_from_rfc3339(data["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!(expires_at.timestamp(), claims["exp"].as_i64().unwrap());

        let again = operator_token(&app, json!({})).await;
        let second = jwt_part(again.body["data"]["access_token"].as_str().unwrap(), 1);
        assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()));
        assert_ne!(claims["jti"], second["jti"], "jti is unique per token");
        // The issuer's own tokens verify with these settings.
        let list = app.anonymous().with_token(token).get("/api/v1/users").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    }

    async fn the_jwks_is_a_plain_key_set_of_public_keys_with_cache_control(backend) {
        let app = spawn_app(backend).await;
        let response = app.anonymous().http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let cache = response.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(cache.contains("max-age="), "{cache}");
        let body: Value = response.json().await.unwrap();
        let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
        assert_eq!(fields, ["keys"], "a JWKS, not the envelope: {body}");
        let keys = body["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{body}");
        let key = &keys[0];
        assert_eq!(key["kid"].as_str(), Some(app.config.own.auth.signing_key.kid()));
        assert_eq!((key["kty"].as_str(), key["crv"].as_str(), key["use"].as_str()), (Some("OKP"), Some("Ed25519"), Some("sig")));
        assert!(key["x"].as_str().is_some_and(|x| x.len() == 43), "{key}");
        assert!(key.get("d").is_none(), "the private part is published: {key}");
    }

    async fn login_gives_a_token_whose_subject_is_the_user_and_roles_its_role(backend) {
        let app = spawn_app(backend).await;
        let id = register(&app, "Login@Example.com").await;
        let answer = login_from(&app, 1, "login@example.COM", PASSWORD).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let data = &answer.body["data"];
        assert_eq!((data["token_type"].as_str(), data["expires_in"].as_u64()), (Some("Bearer"), Some(900)));
        assert_eq!(data["roles"], json!(["user"]));
        let token = data["access_token"].as_str().unwrap();
        let claims = jwt_part(token, 1);
        assert_eq!(claims["sub"], id.to_string());
        assert_eq!(claims["roles"], json!(["user"]));
        let own = app.anonymous().with_token(token).get(&format!("/api/v1/users/{id}")).await;
        assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    }

    async fn an_unknown_email_and_a_wrong_password_get_the_identical_401(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "100")]).await;
        register(&app, "known@example.com").await;
        let unknown = login_from(&app, 1, "nobody@example.com", PASSWORD).await;
        let wrong = login_from(&app, 1, "known@example.com", WRONG_PASSWORD).await;
        unknown.assert_clean_error(401, "UNAUTHORIZED");
        assert_eq!(unknown.body, wrong.body);
        assert_eq!(unknown.status, wrong.status);
        assert_eq!(unknown.headers.get("www-authenticate"), wrong.headers.get("www-authenticate"));
    }

    async fn inactive_deleted_and_passwordless_users_get_the_same_401_as_a_wrong_password(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "100")]).await;
        register(&app, "reference@example.com").await;
        let reference = login_from(&app, 1, "reference@example.com", WRONG_PASSWORD).await;
        reference.assert_clean_error(401, "UNAUTHORIZED");

        let inactive = register(&app, "inactive@example.com").await;
        let deactivated = app.put_json(&format!("/api/v1/users/{inactive}"), &json!({"active": false})).await;
        assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.body);
        let deleted = register(&app, "deleted@example.com").await;
        assert_eq!(app.delete(&format!("/api/v1/users/{deleted}")).await.status, StatusCode::OK);
        app.create_user("nopassword@example.com", "No Password", 30).await;
        for email in ["inactive@example.com", "deleted@example.com", "nopassword@example.com"] {
            let response = login_from(&app, 1, email, PASSWORD).await;
            assert_eq!((response.status, &response.body), (reference.status, &reference.body), "{email}");
        }
        // Active again, the same password works again.
        app.put_json(&format!("/api/v1/users/{inactive}"), &json!({"active": true})).await;
        assert_eq!(login_from(&app, 1, "inactive@example.com", PASSWORD).await.status, StatusCode::OK);
    }

    async fn failed_logins_for_one_email_are_throttled_even_with_the_right_password(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "3")]).await;
        register(&app, "target@example.com").await;
        register(&app, "bystander@example.com").await;
        // From three addresses, in three spellings: it is the email that counts.
        for (ip, email) in [(11, "target@example.com"), (12, "TARGET@example.com"), (13, "Target@Example.Com")] {
            login_from(&app, ip, email, WRONG_PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
        }
        assert_throttled(&login_from(&app, 14, "target@example.com", PASSWORD).await, 900);
        let bystander = login_from(&app, 14, "bystander@example.com", PASSWORD).await;
        assert_eq!(bystander.status, StatusCode::OK, "another email from the same address: {}", bystander.body);
        assert_eq!(counter(&app, &login_outcome("failure")).await, 3.0);
        assert_eq!(counter(&app, &login_outcome("throttled")).await, 1.0);
        assert_eq!(counter(&app, &login_outcome("success")).await, 1.0);
    }

    async fn a_successful_login_clears_the_failures_of_its_email(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "3")]).await;
        register(&app, "forgetful@example.com").await;
        for _ in 0..2 {
            login_from(&app, 21, "forgetful@example.com", WRONG_PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
        }
        assert_eq!(login_from(&app, 21, "forgetful@example.com", PASSWORD).await.status, StatusCode::OK);
        // Without the reset the second of these would be the fourth failure: 429.
        for _ in 0..2 {
            login_from(&app, 22, "forgetful@example.com", WRONG_PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
        }
        let answer = login_from(&app, 22, "forgetful@example.com", PASSWORD).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    async fn failed_logins_from_one_address_throttle_every_email_from_it_but_not_other_addresses(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "3")]).await;
        register(&app, "victim@example.com").await;
        for email in ["guess1@example.com", "guess2@example.com", "guess3@example.com"] {
            login_from(&app, 31, email, PASSWORD).await.assert_clean_error(401, "UNAUTHORIZED");
        }
        assert_throttled(&login_from(&app, 31, "victim@example.com", PASSWORD).await, 900);
        let elsewhere = login_from(&app, 32, "victim@example.com", PASSWORD).await;
        assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);
    }

    async fn failed_token_requests_are_throttled_per_address(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "3")]).await;
        let operator = &app.config.own.auth.operator;
        let wrong = json!({"client_id": operator.id, "client_secret": "guessing-the-operator-secret"});
        let right = json!({"client_id": operator.id, "client_secret": operator.secret.expose()});
        for _ in 0..3 {
            post_from(&app, 41, "/api/v1/auth/token", &wrong).await.assert_clean_error(401, "UNAUTHORIZED");
        }
        assert_throttled(&post_from(&app, 41, "/api/v1/auth/token", &right).await, 900);
        let elsewhere = post_from(&app, 42, "/api/v1/auth/token", &right).await;
        assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);
    }

    async fn concurrent_wrong_passwords_cannot_get_past_the_failure_limit(backend) {
        let app = spawn_app_with(backend, &[("AUTH_LOGIN_MAX_FAILURES", "3")]).await;
        register(&app, "besieged@example.com").await;
        // Twelve guesses at once, each from its own address: the email allows three.
        let guesses = (51..63).map(|ip| login_from(&app, ip, "besieged@example.com", WRONG_PASSWORD));
        let statuses: Vec<u16> = join_all(guesses).await.iter().map(|r| r.status.as_u16()).collect();
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let throttled = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((checked, throttled), (3, 9), "passwords checked vs throttled: {statuses:?}");
    }

    async fn forged_and_malformed_tokens_get_401_invalid_token(backend) {
        let app = spawn_app(backend).await;
        let own = register(&app, "victim@example.com").await;
        let path = format!("/api/v1/users/{own}");
        for (case, header, _) in forgeries(&app, own).await {
            let response = app.send(app.anonymous().http.get(app.url(&path)).header(AUTHORIZATION, header)).await;
            let message = response.assert_clean_error(401, "UNAUTHORIZED");
            assert_eq!(response.headers["www-authenticate"], INVALID_TOKEN, "{case}: {message}");
        }
        // A bad token does not turn into an anonymous self-registration either.
        let registration = app
            .send(app.anonymous().http.post(app.url("/api/v1/users")).bearer_auth("garbage")
                .json(&json!({"email": "sneak@example.com", "name": "Sneaky", "age": 30, "password": PASSWORD})))
            .await;
        registration.assert_clean_error(401, "UNAUTHORIZED");
        assert_eq!(registration.headers["www-authenticate"], INVALID_TOKEN);
        assert_eq!(app.get("/api/v1/users").await.body["meta"]["total_count"], 1);
    }

    async fn every_refused_token_is_counted_once_under_its_reason(backend) {
        let app = spawn_app(backend).await;
        let own = register(&app, "counted@example.com").await;
        let path = format!("/api/v1/users/{own}");
        let mut problems = Vec::new();
        for (case, header, reason) in forgeries(&app, own).await {
            let before = app.metrics().await;
            let status = app.send(app.anonymous().http.get(app.url(&path)).header(AUTHORIZATION, header)).await.status;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
            let after = app.metrics().await;
            let counted: Vec<(&str, f64)> = platform::auth::FAILURE_REASONS
                .iter()
                .map(|r| (*r, metric_value(&after, &auth_failures(r)).unwrap_or(0.0) - metric_value(&before, &auth_failures(r)).unwrap_or(0.0)))
                .filter(|(_, delta)| *delta != 0.0)
                .collect();
            if counted != [(reason, 1.0)] {
                problems.push(format!("{case}: expected {reason} +1, counted {counted:?}"));
            }
        }
        assert!(problems.is_empty(), "auth failures counted wrongly:\n{}", problems.join("\n"));
    }

    async fn a_request_without_authorization_gets_a_bare_bearer_challenge_counted_as_missing(backend) {
        let app = spawn_app(backend).await;
        let own = register(&app, "plain@example.com").await;
        let response = app.anonymous().get(&format!("/api/v1/users/{own}")).await;
        let message = response.assert_clean_error(401, "UNAUTHORIZED");
        assert!(message.contains("token"), "{message}");
        assert_eq!(response.headers["www-authenticate"], "Bearer");
        assert_eq!(counter(&app, &auth_failures("missing")).await, 1.0);
    }

    async fn tokens_within_the_60_second_leeway_still_verify(backend) {
        let app = spawn_app(backend).await;
        let own = register(&app, "skewed@example.com").await;
        let now = unix_now();
        for overrides in [json!({"iat": now - 900, "nbf": now - 900, "exp": now - 20}), json!({"nbf": now + 20})] {
            let token = app.sign_claims(&own.to_string(), overrides.clone());
            let response = app.anonymous().with_token(&token).get(&format!("/api/v1/users/{own}")).await;
            assert_eq!(response.status, StatusCode::OK, "{overrides}: {}", response.body);
        }
    }

    async fn a_rotated_key_keeps_old_tokens_valid_while_listed_and_refuses_them_once_dropped(backend) {
        let keys = tempfile::tempdir().unwrap();
        let key_file = |name: &str| {
            let (key, pem) = SigningKey::generate().unwrap();
            let path = keys.path().join(name);
            std::fs::write(&path, pem).unwrap();
            (key.kid().to_owned(), path.display().to_string())
        };
        let (kid_a, file_a) = key_file("a.pem");
        let (kid_b, file_b) = key_file("b.pem");
        let database = TestDatabase::create(backend).await;

        let first = spawn_replica(&database.url, &[("AUTH_JWT_PRIVATE_KEY_FILE", &file_a)]).await;
        let own = register(&first, "rotating@example.com").await;
        let user_token = first.login("rotating@example.com", PASSWORD).await;
        let operator = &first.config.own.auth.operator;
        let admin_token = first.token_for(&operator.id, operator.secret.expose(), &[]).await;
        assert_eq!(jwt_part(&user_token, 0)["kid"], kid_a.as_str());
        assert_eq!(published_kids(&first).await, [kid_a.as_str()]);
        let own_path = format!("/api/v1/users/{own}");

        let second = spawn_replica(&database.url, &[("AUTH_JWT_PRIVATE_KEY_FILE", &file_b), ("AUTH_JWT_PREVIOUS_PUBLIC_KEY_FILES", &file_a)]).await;
        assert_eq!(published_kids(&second).await, [kid_b.as_str(), kid_a.as_str()], "the new key first, the old one still published");
        let read = second.anonymous().with_token(&user_token).get(&own_path).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        let list = second.anonymous().with_token(&admin_token).get("/api/v1/users").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        let fresh = second.login("rotating@example.com", PASSWORD).await;
        assert_eq!(jwt_part(&fresh, 0)["kid"], kid_b.as_str(), "new tokens are signed with the new key");

        let third = spawn_replica(&database.url, &[("AUTH_JWT_PRIVATE_KEY_FILE", &file_b)]).await;
        assert_eq!(published_kids(&third).await, [kid_b.as_str()]);
        for (token, path) in [(&user_token, own_path.as_str()), (&admin_token, "/api/v1/users")] {
            let refused = third.anonymous().with_token(token).get(path).await;
            refused.assert_clean_error(401, "UNAUTHORIZED");
            assert_eq!(refused.headers["www-authenticate"], INVALID_TOKEN);
        }
        assert_eq!(counter(&third, &auth_failures("unknown_key")).await, 2.0);
        let read = third.anonymous().with_token(&fresh).get(&own_path).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    }

    async fn no_log_line_holds_a_password_token_secret_or_hash_and_request_lines_name_the_caller(backend) {
        let database = TestDatabase::create(backend).await;
        let mut vars: Vec<(&str, &str)> = TEST_AUTH.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.push(("USER_SERVICE_DATABASE_URL", &database.url));
        // Debug, not the default info: nothing may leak at any level an operator turns on.
        vars.push(("USER_SERVICE_LOG_LEVEL", "debug"));
        let (mut service, log) = ServiceProcess::spawn_bare(&vars);
        let (secrets, sub_by_request) = traffic(&service.client).await;
        service.terminate();
        let status = service.wait_exit(Duration::from_secs(30)).await.expect("the service exits");
        assert!(status.success(), "{status}");
        assert!(log.wait_closed(Duration::from_secs(10)).await, "the log never closed");
        assert_log_is_clean(&log, &secrets);
        let entries = log.entries();
        for (request_id, sub) in sub_by_request {
            let line = entries
                .iter()
                .find(|e| e["span"]["request_id"] == request_id && e["fields"]["message"] == "finished processing request")
                .unwrap_or_else(|| panic!("no request line for {request_id}"));
            assert_eq!(line["sub"].as_str(), sub.as_deref(), "{line}");
        }
    }
}

/// Every way a token can be bad, as `(case, Authorization header, reason it
/// is counted under)`, each aimed at GET /users/{own}, where a good token of
/// user `own` answers 200 (checked first).
async fn forgeries(app: &TestApp, own: i64) -> Vec<(&'static str, String, &'static str)> {
    let valid = app.sign_claims(&own.to_string(), json!({}));
    let control = app
        .anonymous()
        .with_token(&valid)
        .get(&format!("/api/v1/users/{own}"))
        .await;
    assert_eq!(control.status, StatusCode::OK, "the control token works");
    let claims = jwt_part(&valid, 1);
    let parts: Vec<&str> = valid.split('.').collect();
    let kid = app.config.own.auth.signing_key.kid().to_owned();
    let encode = |value: Value| base64url(value.to_string().as_bytes());
    let signed_with = |algorithm: Algorithm, key: &EncodingKey| {
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let public_jwk = serde_json::to_string(app.config.own.auth.signing_key.public_jwk()).unwrap();
    let jwks = app.anonymous().get_text("/.well-known/jwks.json").await;
    let (other_key, other_pem) = SigningKey::generate().unwrap();
    let impostor = signed_with(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(other_pem.as_bytes()).unwrap(),
    );
    let mut admin_claims = claims.clone();
    admin_claims["roles"] = json!(["admin"]);
    admin_claims["sub"] = json!("operator");
    let now = unix_now();
    let with = |overrides: Value| bearer(&app.sign_claims(&own.to_string(), overrides));
    vec![
        (
            "alg none",
            bearer(&format!(
                "{}.{}.",
                encode(json!({"alg": "none", "typ": "JWT", "kid": kid})),
                parts[1]
            )),
            "malformed",
        ),
        (
            "alg none keeping the signature",
            bearer(&format!(
                "{}.{}.{}",
                encode(json!({"alg": "none", "kid": kid})),
                parts[1],
                parts[2]
            )),
            "malformed",
        ),
        (
            "HS256 keyed with the public JWK",
            bearer(&signed_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(public_jwk.as_bytes()).unwrap(),
            )),
            "bad_signature",
        ),
        (
            "HS256 keyed with the JWKS document",
            bearer(&signed_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(jwks.as_bytes()).unwrap(),
            )),
            "bad_signature",
        ),
        (
            "tampered payload (admin)",
            bearer(&format!(
                "{}.{}.{}",
                parts[0],
                encode(admin_claims),
                parts[2]
            )),
            "bad_signature",
        ),
        (
            "expired beyond the leeway",
            with(json!({"iat": now - 1000, "nbf": now - 1000, "exp": now - 120})),
            "expired",
        ),
        (
            "not valid before a future nbf",
            with(json!({"nbf": now + 600})),
            "expired",
        ),
        (
            "wrong iss",
            with(json!({"iss": "https://evil.example"})),
            "claims",
        ),
        ("wrong aud", with(json!({"aud": "someone-else"})), "claims"),
        ("no exp", with(json!({"exp": null})), "claims"),
        (
            "unknown kid",
            bearer(&other_key.sign(&claims).unwrap()),
            "unknown_key",
        ),
        (
            "another key claiming our kid",
            bearer(&impostor),
            "bad_signature",
        ),
        ("garbage", bearer("garbage"), "malformed"),
        ("three junk parts", bearer("a.b.c"), "malformed"),
        (
            "Basic scheme",
            "Basic dXNlcjpwYXNzd29yZA==".to_owned(),
            "malformed",
        ),
        ("a token without a scheme", valid.clone(), "malformed"),
        ("Bearer with nothing", "Bearer".to_owned(), "malformed"),
        ("Bearer and spaces", "Bearer    ".to_owned(), "malformed"),
    ]
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Registers, logs in, gets both clients' tokens, reads, changes a password,
/// fails a login and a token request, and sends a forged token. Returns what
/// must never be logged, and the `sub` each request's log line must carry.
async fn traffic(client: &TestClient) -> (Vec<String>, Vec<(&'static str, Option<String>)>) {
    let anonymous = client.anonymous();
    let (user, user_token) = client
        .register_and_log_in("logged@example.com", PASSWORD)
        .await;
    let id = user["id"].as_i64().unwrap();
    let admin_token = client
        .client_token("operator", TEST_AUTH.var("AUTH_CLIENT_SECRET"))
        .await;
    let service_token = client
        .client_token("order-service", TEST_AUTH.var("AUTH_SERVICE_CLIENT_SECRET"))
        .await;
    let parts: Vec<&str> = user_token.split('.').collect();
    let mut admin_claims = jwt_part(&user_token, 1);
    admin_claims["roles"] = json!(["admin"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64url(admin_claims.to_string().as_bytes()),
        parts[2]
    );
    let own = format!("/api/v1/users/{id}");
    let requests = [
        ("leak-user-get", &user_token, "GET", own.as_str(), None),
        (
            "leak-admin-list",
            &admin_token,
            "GET",
            "/api/v1/users",
            None,
        ),
        (
            "leak-service-get",
            &service_token,
            "GET",
            own.as_str(),
            None,
        ),
        (
            "leak-password-change",
            &user_token,
            "PUT",
            own.as_str(),
            Some(json!({"password": NEW_PASSWORD, "current_password": PASSWORD})),
        ),
        ("leak-forged", &forged, "GET", "/api/v1/users", None),
    ];
    for (request_id, token, method, path, body) in requests {
        let mut request = anonymous
            .http
            .request(method.parse().unwrap(), anonymous.url(path))
            .bearer_auth(token)
            .header("x-request-id", request_id);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let status = anonymous.send(request).await.status;
        let expected = if request_id == "leak-forged" {
            401
        } else {
            200
        };
        assert_eq!(status.as_u16(), expected, "{request_id}");
    }
    let bad_secret = "a-wrong-client-secret-0123456789";
    for (path, credentials) in [
        (
            "/api/v1/auth/login",
            json!({"email": "logged@example.com", "password": WRONG_PASSWORD}),
        ),
        (
            "/api/v1/auth/token",
            json!({"client_id": "operator", "client_secret": bad_secret}),
        ),
    ] {
        let refused = anonymous.post_json(path, &credentials).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
    }

    let mut secrets: Vec<String> = [
        PASSWORD,
        NEW_PASSWORD,
        WRONG_PASSWORD,
        bad_secret,
        "$argon2id$",
    ]
    .map(str::to_owned)
    .to_vec();
    secrets.push(TEST_AUTH.var("AUTH_CLIENT_SECRET").to_owned());
    secrets.push(TEST_AUTH.var("AUTH_SERVICE_CLIENT_SECRET").to_owned());
    for token in [&user_token, &admin_token, &service_token, &forged] {
        secrets.push(token.clone());
        // A signature alone is as good as a token to someone who has the rest.
        secrets.push(token.rsplit('.').next().unwrap().to_owned());
    }
    let subs = vec![
        ("leak-user-get", Some(id.to_string())),
        ("leak-admin-list", Some("operator".to_owned())),
        ("leak-service-get", Some("order-service".to_owned())),
        ("leak-password-change", Some(id.to_string())),
        ("leak-forged", None),
    ];
    (secrets, subs)
}

/// No line contains any of `secrets`, nor the signing key.
fn assert_log_is_clean(log: &ProcessLog, secrets: &[String]) {
    let lines = log.lines();
    assert!(
        lines.len() > 10,
        "too few log lines to prove anything: {lines:?}"
    );
    let key_file = std::fs::read_to_string(TEST_AUTH.var("AUTH_JWT_PRIVATE_KEY_FILE")).unwrap();
    let key_body = key_file.lines().nth(1).expect("the PEM's base64 line");
    for line in &lines {
        assert!(
            !line.contains(key_body),
            "the signing key is logged: {line}"
        );
        for secret in secrets {
            assert!(
                !line.contains(secret.as_str()),
                "{secret:?} is logged: {line}"
            );
        }
    }
}

/// The service's configuration from exactly these variables.
fn config_from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(&move |name: &str| vars.get(name).cloned())
}

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/userdb";
const GOOD_SECRET: &str = "q8Vn2LrX0aZp5WcT7yHk3JmB";
const OTHER_GOOD_SECRET: &str = "Zt4Wq9Lm2Xc7Vb1Nk8Pj5Rd3";

#[test]
fn on_postgres_a_missing_signing_key_is_a_configuration_error_naming_it() {
    let err = config_from(&[
        ("USER_SERVICE_DATABASE_URL", POSTGRES_URL),
        ("AUTH_CLIENT_SECRET", GOOD_SECRET),
        ("AUTH_SERVICE_CLIENT_SECRET", OTHER_GOOD_SECRET),
    ])
    .expect_err("a configuration error");
    assert_eq!(err.variable, "AUTH_JWT_PRIVATE_KEY_FILE");
    assert!(
        err.to_string().contains("AUTH_JWT_PRIVATE_KEY_FILE"),
        "{err}"
    );
}

#[test]
fn on_postgres_missing_client_secrets_are_configuration_errors_naming_them() {
    let key = TEST_AUTH.var("AUTH_JWT_PRIVATE_KEY_FILE");
    let base = [
        ("USER_SERVICE_DATABASE_URL", POSTGRES_URL),
        ("AUTH_JWT_PRIVATE_KEY_FILE", key),
    ];
    let err = config_from(&[
        base[0],
        base[1],
        ("AUTH_SERVICE_CLIENT_SECRET", GOOD_SECRET),
    ])
    .expect_err("no operator secret");
    assert_eq!(err.variable, "AUTH_CLIENT_SECRET", "{err}");
    let err = config_from(&[base[0], base[1], ("AUTH_CLIENT_SECRET", GOOD_SECRET)])
        .expect_err("no service secret");
    assert_eq!(err.variable, "AUTH_SERVICE_CLIENT_SECRET", "{err}");
    config_from(&[
        base[0],
        base[1],
        ("AUTH_CLIENT_SECRET", GOOD_SECRET),
        ("AUTH_SERVICE_CLIENT_SECRET", OTHER_GOOD_SECRET),
    ])
    .expect("complete");
}

#[test]
fn placeholder_and_short_secrets_are_refused_naming_the_variable_but_not_the_value() {
    let key = TEST_AUTH.var("AUTH_JWT_PRIVATE_KEY_FILE");
    let embedded = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite:{}", embedded.path().join("users.db").display());
    for url in [POSTGRES_URL, sqlite_url.as_str()] {
        for variable in ["AUTH_CLIENT_SECRET", "AUTH_SERVICE_CLIENT_SECRET"] {
            for value in [
                "change-me-in-production",
                "change-me-to-a-long-random-string",
                "example-secret-for-the-readme",
                "too-short",
            ] {
                let mut vars = vec![
                    ("USER_SERVICE_DATABASE_URL", url),
                    ("AUTH_JWT_PRIVATE_KEY_FILE", key),
                    ("AUTH_CLIENT_SECRET", GOOD_SECRET),
                    ("AUTH_SERVICE_CLIENT_SECRET", OTHER_GOOD_SECRET),
                ];
                vars.retain(|(name, _)| *name != variable);
                vars.push((variable, value));
                let err = config_from(&vars).expect_err("refused");
                assert_eq!(err.variable, variable, "{value}: {err}");
                assert!(!err.to_string().contains(value), "{err}");
            }
        }
    }
}

#[test]
fn an_unreadable_or_invalid_key_file_is_a_configuration_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    for (variable, path) in [
        ("AUTH_JWT_PRIVATE_KEY_FILE", &garbage),
        ("AUTH_JWT_PRIVATE_KEY_FILE", &missing),
        ("AUTH_JWT_PREVIOUS_PUBLIC_KEY_FILES", &garbage),
    ] {
        let path = path.display().to_string();
        let mut vars = vec![
            ("USER_SERVICE_DATABASE_URL", POSTGRES_URL),
            (
                "AUTH_JWT_PRIVATE_KEY_FILE",
                TEST_AUTH.var("AUTH_JWT_PRIVATE_KEY_FILE"),
            ),
            ("AUTH_CLIENT_SECRET", GOOD_SECRET),
            ("AUTH_SERVICE_CLIENT_SECRET", OTHER_GOOD_SECRET),
        ];
        vars.retain(|(name, _)| *name != variable);
        vars.push((variable, &path));
        let err = config_from(&vars).expect_err("refused");
        assert_eq!(err.variable, variable, "{path}: {err}");
    }
}

#[test]
fn the_binary_on_postgres_without_a_signing_key_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER_SERVICE_DATABASE_URL", POSTGRES_URL)
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTH_JWT_PRIVATE_KEY_FILE"), "{stderr}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing generated on PostgreSQL"
    );
}

/// The generated client secrets: (operator, service).
fn generated_secrets(data: &std::path::Path) -> (String, String) {
    let text = std::fs::read_to_string(data.join(CLIENTS_FILE)).expect("auth.env");
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_owned()
    };
    (
        value("AUTH_CLIENT_SECRET"),
        value("AUTH_SERVICE_CLIENT_SECRET"),
    )
}

fn assert_owner_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_generates_private_secrets_once_and_keeps_them_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = format!("sqlite:{}", data.join("users.db").display());
    let (mut first, first_log) = ServiceProcess::spawn_bare(&[("USER_SERVICE_DATABASE_URL", &url)]);
    for file in [CLIENTS_FILE, SIGNING_KEY_FILE] {
        assert_owner_only(&data.join(file));
    }
    let (operator_secret, service_secret) = generated_secrets(&data);
    assert!(operator_secret.len() >= 32 && service_secret.len() >= 32);
    assert_ne!(operator_secret, service_secret);
    let pem = std::fs::read_to_string(data.join(SIGNING_KEY_FILE)).unwrap();
    let kid = SigningKey::from_pkcs8_pem(pem.as_bytes())
        .expect("a signing key")
        .kid()
        .to_owned();
    assert_eq!(published_kids(&first.client).await, [kid.as_str()]);
    let admin_token = first
        .client
        .client_token("operator", &operator_secret)
        .await;
    let list = first
        .client
        .with_token(&admin_token)
        .get("/api/v1/users")
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let service_token = first
        .client
        .client_token("order-service", &service_secret)
        .await;
    assert_eq!(jwt_part(&service_token, 1)["roles"], json!(["service"]));

    first.terminate();
    assert!(first.wait_exit(Duration::from_secs(30)).await.is_some());
    assert!(first_log.wait_closed(Duration::from_secs(10)).await);
    let clients_file = data.join(CLIENTS_FILE).display().to_string();
    assert!(
        first_log
            .entries()
            .iter()
            .any(|e| e["fields"]["file"] == clients_file.as_str()),
        "the log says where the secrets are: {:?}",
        first_log.lines()
    );
    let secrets = [operator_secret.clone(), service_secret.clone()];
    let key_body = pem.lines().nth(1).unwrap().to_owned();
    for line in first_log.lines() {
        for secret in secrets.iter().chain([&key_body, &admin_token]) {
            assert!(!line.contains(secret.as_str()), "logged: {line}");
        }
    }

    let (second, second_log) = ServiceProcess::spawn_bare(&[("USER_SERVICE_DATABASE_URL", &url)]);
    assert_eq!(generated_secrets(&data), (operator_secret, service_secret));
    assert_eq!(
        std::fs::read_to_string(data.join(SIGNING_KEY_FILE)).unwrap(),
        pem
    );
    assert_eq!(published_kids(&second.client).await, [kid]);
    let again = second
        .client
        .with_token(&admin_token)
        .get("/api/v1/users")
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "a token from before the restart: {}",
        again.body
    );
    for line in second_log.lines() {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "logged: {line}");
        }
    }
}
