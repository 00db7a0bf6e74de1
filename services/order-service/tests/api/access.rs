//! Who may do what with orders: every cell of the access matrix, on both
//! backends, with tokens user-service's key signs (the same key the test mints
//! with), plus an external identity provider and order-service's own token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use platform::auth::{Role, SigningKey};
use platform::backend_tests;
use platform::testing::{TestClient, assert_eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::{OrderService, StandIn, System, TEST_AUTH, spawn_system};

/// A system with two users (A and B) and one order of each.
struct Fixture {
    system: System,
    a: i64,
    b: i64,
    order_a: i64,
    order_b: i64,
}

impl Fixture {
    async fn new(backend: platform::testing::Backend) -> Self {
        let system = spawn_system(backend).await;
        let a = system.users.create_user("a@example.com", true).await;
        let b = system.users.create_user("b@example.com", true).await;
        let order_a = system.orders.create_order_id(a).await;
        let order_b = system.orders.create_order_id(b).await;
        Self {
            system,
            a,
            b,
            order_a,
            order_b,
        }
    }

    fn orders(&self) -> &OrderService {
        &self.system.orders
    }

    fn as_user(&self, id: i64) -> TestClient {
        self.orders().client.with_token(&TEST_AUTH.user_token(id))
    }

    fn as_service(&self) -> TestClient {
        self.orders().client.with_token(&TEST_AUTH.service_token())
    }

    fn anonymous(&self) -> TestClient {
        self.orders().client.anonymous()
    }
}

fn order_body(user_id: Option<i64>) -> Value {
    let mut body = json!({"product_id": "PROD-9", "quantity": 1, "total_price": 5});
    if let Some(id) = user_id {
        body["user_id"] = json!(id);
    }
    body
}

backend_tests! {
    async fn creating_orders_is_for_the_user_itself_or_an_admin(backend) {
        let f = Fixture::new(backend).await;
        f.anonymous().post_json("/api/v1/orders", &order_body(Some(f.a))).await.assert_error(401, "UNAUTHORIZED");
        let own = f.as_user(f.a).post_json("/api/v1/orders", &order_body(None)).await;
        assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
        assert_eq!(own.body["data"]["user_id"], f.a, "user_id omitted = the caller");
        assert_eq!(own.body["data"]["created_by"], f.a.to_string());
        let named_self = f.as_user(f.a).post_json("/api/v1/orders", &order_body(Some(f.a))).await;
        assert_eq!(named_self.status, StatusCode::CREATED);
        f.as_user(f.a).post_json("/api/v1/orders", &order_body(Some(f.b))).await.assert_error(403, "FORBIDDEN");
        f.as_service().post_json("/api/v1/orders", &order_body(Some(f.a))).await.assert_error(403, "FORBIDDEN");
        let by_admin = f.orders().post_json("/api/v1/orders", &order_body(Some(f.b))).await;
        assert_eq!(by_admin.status, StatusCode::CREATED);
        assert_eq!(by_admin.body["data"]["created_by"], "operator");
        // A client admin names nobody: there is no buyer to assume.
        let message = f.orders().post_json("/api/v1/orders", &order_body(None)).await.assert_error(403, "FORBIDDEN");
        assert!(message.contains("user_id"), "{message}");
    }

    async fn someone_elses_order_is_a_404_exactly_like_a_missing_one(backend) {
        let f = Fixture::new(backend).await;
        let path = |id: i64| format!("/api/v1/orders/{id}");
        f.anonymous().get(&path(f.order_a)).await.assert_error(401, "UNAUTHORIZED");
        let own = f.as_user(f.a).get(&path(f.order_a)).await;
        assert_eq!(own.status, StatusCode::OK);
        assert_eq!(own.body["data"]["user"]["id"], f.a);
        let other = f.as_user(f.a).get(&path(f.order_b)).await;
        other.assert_error(404, "NOT_FOUND");
        let missing = f.as_user(f.a).get(&path(999_999)).await;
        assert_eq!(
            other.body["error"]["message"].as_str().unwrap().replace(&f.order_b.to_string(), "N"),
            missing.body["error"]["message"].as_str().unwrap().replace("999999", "N"),
        );
        f.as_service().get(&path(f.order_a)).await.assert_error(403, "FORBIDDEN");
        assert_eq!(f.orders().get(&path(f.order_b)).await.status, StatusCode::OK);
    }

    async fn a_user_lists_only_its_own_orders(backend) {
        let f = Fixture::new(backend).await;
        f.anonymous().get("/api/v1/orders").await.assert_error(401, "UNAUTHORIZED");
        for query in ["/api/v1/orders", &format!("/api/v1/orders?user_id={}", f.a)] {
            let mine = f.as_user(f.a).get(query).await;
            assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
            let owners: Vec<i64> = mine.body["data"].as_array().unwrap().iter().map(|o| o["user_id"].as_i64().unwrap()).collect();
            assert_eq!(owners, vec![f.a], "{query}");
            assert_eq!(mine.body["meta"]["total_count"], 1);
        }
        f.as_user(f.a).get(&format!("/api/v1/orders?user_id={}", f.b)).await.assert_error(403, "FORBIDDEN");
        f.as_service().get("/api/v1/orders").await.assert_error(403, "FORBIDDEN");
        let all = f.orders().get("/api/v1/orders").await;
        assert_eq!(all.body["meta"]["total_count"], 2);
    }

    async fn a_user_may_only_cancel_its_own_order_and_an_admin_follows_the_state_machine(backend) {
        let f = Fixture::new(backend).await;
        let path = |id: i64| format!("/api/v1/orders/{id}");
        let status = |s: &str| json!({"status": s});
        f.anonymous().put_json(&path(f.order_a), &status("cancelled")).await.assert_error(401, "UNAUTHORIZED");
        f.as_user(f.a).put_json(&path(f.order_a), &status("confirmed")).await.assert_error(403, "FORBIDDEN");
        f.as_user(f.a).put_json(&path(f.order_b), &status("cancelled")).await.assert_error(404, "NOT_FOUND");
        f.as_service().put_json(&path(f.order_a), &status("cancelled")).await.assert_error(403, "FORBIDDEN");
        let cancelled = f.as_user(f.a).put_json(&path(f.order_a), &status("cancelled")).await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
        assert_eq!(cancelled.body["data"]["updated_by"], f.a.to_string());
        let confirmed = f.orders().put_json(&path(f.order_b), &status("confirmed")).await;
        assert_eq!(confirmed.status, StatusCode::OK);
        assert_eq!(confirmed.body["data"]["updated_by"], "operator");
        f.orders().put_json(&path(f.order_a), &status("confirmed")).await.assert_error(409, "CONFLICT");
        // The owner still cannot cancel past shipping: the state machine holds for users too.
        f.orders().put_json(&path(f.order_b), &status("shipped")).await;
        f.as_user(f.b).put_json(&path(f.order_b), &status("cancelled")).await.assert_error(409, "CONFLICT");
    }

    async fn only_an_admin_deletes_orders(backend) {
        let f = Fixture::new(backend).await;
        let path = format!("/api/v1/orders/{}", f.order_a);
        f.anonymous().delete(&path).await.assert_error(401, "UNAUTHORIZED");
        f.as_user(f.a).delete(&path).await.assert_error(403, "FORBIDDEN");
        f.as_service().delete(&path).await.assert_error(403, "FORBIDDEN");
        assert_eq!(f.orders().delete(&path).await.status, StatusCode::OK);
        f.orders().get(&path).await.assert_error(404, "NOT_FOUND");
    }

    async fn forged_and_foreign_tokens_are_refused_with_a_bearer_challenge(backend) {
        let f = Fixture::new(backend).await;
        let (stranger, _) = SigningKey::generate().unwrap();
        let foreign = stranger.sign(&json!({
            "iss": "user-service", "aud": "microservices", "sub": "operator", "roles": ["admin"],
            "exp": platform::auth::unix_now() + 600,
        })).unwrap();
        let genuine = TEST_AUTH.token("operator", &[Role::Admin]);
        let claims = genuine.split('.').nth(1).unwrap();
        let tampered = genuine.replace(claims, &claims.chars().rev().collect::<String>());
        for token in [foreign, tampered, "garbage".to_owned()] {
            let response = f.orders().client.with_token(&token).get("/api/v1/orders").await;
            response.assert_error(401, "UNAUTHORIZED");
            assert_eq!(response.headers["www-authenticate"], r#"Bearer error="invalid_token""#);
        }
        let none = f.anonymous().get("/api/v1/orders").await;
        assert_eq!(none.headers["www-authenticate"], "Bearer");
        let failures = f.orders().metrics().await;
        assert!(platform::testing::metric_value(&failures, r#"order_service_auth_failures_total{reason="unknown_key"}"#).unwrap() >= 1.0, "{failures}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_lookups_carry_order_services_own_token_never_the_callers() {
    let stand_in = StandIn::start(200, Duration::ZERO).await;
    let orders =
        OrderService::start(platform::testing::Backend::Sqlite, &stand_in.url(), &[]).await;
    let as_user = orders.client.with_token(&TEST_AUTH.user_token(42));
    let created = as_user.post_json("/api/v1/orders", &order_body(None)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let seen = stand_in.state.lock().unwrap().authorizations.clone();
    assert!(!seen.is_empty());
    for authorization in seen {
        let token = authorization
            .strip_prefix("Bearer ")
            .expect("a bearer token");
        let claims = payload(token);
        assert_eq!(claims["sub"], "order-service");
        assert_eq!(claims["roles"], json!(["service"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_service_credentials_show_in_health_and_orders_degrade_not_fail() {
    let system = spawn_system(platform::testing::Backend::Sqlite).await;
    let wrong = OrderService::start(
        platform::testing::Backend::Sqlite,
        &system.users.url(),
        &[(
            "AUTH_SERVICE_CLIENT_SECRET",
            "a-wrong-but-long-enough-value",
        )],
    )
    .await;
    let user = system.users.create_user("c@example.com", true).await;
    let created = wrong.create_order(user, "P-1", json!(1)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["data"]["user_verified"], false);
    let health = wrong.get("/health").await;
    assert_eq!(health.body["info"]["user_service_credentials"], "rejected");
    let right = system.orders.get("/health").await;
    assert_eq!(right.body["info"]["user_service_credentials"], "unknown");
}

/// An OIDC-style provider run by the test: its own key, issuer and audience,
/// roles under `realm_access.roles` (as Keycloak puts them), and a JWKS the
/// test can change while order-service runs.
struct Provider {
    url: String,
    keys: Arc<Mutex<JwkSet>>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Self {
        let keys = Arc::new(Mutex::new(JwkSet {
            keys: keys.iter().map(|k| k.public_jwk().clone()).collect(),
        }));
        let served = Arc::clone(&keys);
        let app = Router::new().route(
            "/realms/shop/protocol/openid-connect/certs",
            get(move || {
                let jwks = served.lock().unwrap().clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}/realms/shop/protocol/openid-connect/certs"),
            keys,
        }
    }

    fn token(key: &SigningKey, roles: Value) -> String {
        let now = platform::auth::unix_now();
        key.sign(&json!({
            "iss": "https://idp.test/realms/shop", "aud": ["orders-api", "account"],
            "sub": "5f0c2a8e-idp-user", "realm_access": {"roles": roles},
            "iat": now, "exp": now + 300,
        }))
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_provider_is_trusted_through_its_jwks_with_nested_roles_until_it_drops_a_key() {
    let (current, _) = SigningKey::generate().unwrap();
    let (next, _) = SigningKey::generate().unwrap();
    let provider = Provider::start(&[&current]).await;
    let stand_in = StandIn::start(200, Duration::ZERO).await;
    let orders = OrderService::start(
        platform::testing::Backend::Sqlite,
        &stand_in.url(),
        &[
            ("AUTH_JWKS_URL", &provider.url),
            ("AUTH_JWT_ISSUER", "https://idp.test/realms/shop"),
            ("AUTH_JWT_AUDIENCE", "orders-api"),
            ("AUTH_ROLES_CLAIM", "realm_access.roles"),
            ("AUTH_JWKS_REFRESH_INTERVAL", "0.2"),
        ],
    )
    .await;
    let admin = orders.client.with_token(&Provider::token(
        &current,
        json!(["admin", "offline_access"]),
    ));
    assert_eq!(admin.get("/api/v1/orders").await.status, StatusCode::OK);
    // Roles elsewhere than the configured claim grant nothing.
    let no_roles = orders
        .client
        .with_token(&Provider::token(&current, json!(["offline_access"])));
    no_roles
        .get("/api/v1/orders")
        .await
        .assert_error(403, "FORBIDDEN");
    // user-service's own tokens are not trusted here: another issuer and key.
    orders
        .client
        .with_token(&TEST_AUTH.admin_token())
        .get("/api/v1/orders")
        .await
        .assert_error(401, "UNAUTHORIZED");
    // The provider rotates and drops the old key: its tokens stop working once
    // the JWKS is read again, and the new key's work.
    *provider.keys.lock().unwrap() = JwkSet {
        keys: vec![next.public_jwk().clone()],
    };
    assert_eventually(
        Duration::from_secs(10),
        || async { admin.get("/api/v1/orders").await.status == StatusCode::UNAUTHORIZED },
        "a key removed from the JWKS still verifies",
    )
    .await;
    let renewed = orders
        .client
        .with_token(&Provider::token(&next, json!(["admin"])));
    assert_eq!(renewed.get("/api/v1/orders").await.status, StatusCode::OK);
}

/// The claims of a compact JWT, without verifying it.
fn payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
