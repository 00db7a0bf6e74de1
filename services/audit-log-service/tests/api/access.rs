//! Who may read the audit log: admins only. Tokens are minted with the key
//! whose JWKS the service fetched, as user-service would issue them.

use platform::auth::{Role, SigningKey};
use platform::backend_tests;
use serde_json::json;

use crate::helpers::{AuditService, TEST_AUTH, at, event, metric_value};

backend_tests! {
    async fn only_admins_read_the_audit_log(backend) {
        let audit = AuditService::start(backend).await;
        let stored = event("user.created", "1", ("user", "1"), at(0, 0), json!({}));
        audit.store(std::slice::from_ref(&stored)).await;
        let paths = ["/api/v1/audit-logs".to_owned(), format!("/api/v1/audit-logs/{}", stored.id)];
        for path in &paths {
            let anonymous = audit.anonymous().get(path).await;
            anonymous.assert_clean_error(401, "UNAUTHORIZED");
            assert_eq!(anonymous.headers["www-authenticate"], "Bearer", "{path}");
            for token in [
                TEST_AUTH.user_token(1),
                TEST_AUTH.service_token(),
                TEST_AUTH.token("2", &[Role::User, Role::Service]),
            ] {
                let message = audit.with_token(&token).get(path).await.assert_clean_error(403, "FORBIDDEN");
                assert!(message.contains("admin"), "{message}");
            }
            let admin = audit.get(path).await;
            assert_eq!(admin.status, 200, "{path}: {}", admin.body);
            let user_admin = audit.with_token(&TEST_AUTH.token("3", &[Role::User, Role::Admin])).get(path).await;
            assert_eq!(user_admin.status, 200, "a user who is an admin reads it too");
        }
        // Anonymous callers are refused before their input is looked at.
        audit.anonymous().get("/api/v1/audit-logs?page_size=0").await.assert_clean_error(401, "UNAUTHORIZED");
        audit.anonymous().get("/api/v1/audit-logs/not-a-uuid").await.assert_clean_error(401, "UNAUTHORIZED");
    }

    async fn a_token_from_another_issuer_key_is_refused(backend) {
        let audit = AuditService::start(backend).await;
        let (foreign, _) = SigningKey::generate().expect("a key");
        let now = platform::auth::unix_now();
        let forged = foreign.sign(&platform::auth::Claims {
            iss: platform::auth::DEFAULT_ISSUER.to_owned(),
            aud: platform::auth::DEFAULT_AUDIENCE.to_owned(),
            sub: "operator".to_owned(),
            roles: vec!["admin".to_owned()],
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: "forged".to_owned(),
        }).expect("signed");
        for token in [forged.as_str(), "not.a.token"] {
            let answer = audit.with_token(token).get("/api/v1/audit-logs").await;
            answer.assert_clean_error(401, "UNAUTHORIZED");
            assert_eq!(answer.headers["www-authenticate"], "Bearer error=\"invalid_token\"");
        }
        let metrics = audit.metrics().await;
        assert!(metric_value(&metrics, r#"audit_log_service_auth_failures_total{reason="malformed"}"#) >= Some(1.0), "{metrics}");
    }

    async fn health_and_metrics_are_public_and_name_the_consumer_series(backend) {
        let audit = AuditService::start(backend).await;
        let health = audit.anonymous().get("/health").await;
        assert_eq!(health.status, 200, "{}", health.body);
        assert_eq!(health.body["service"], "audit-log-service");
        assert_eq!(health.body["info"]["events"], "none", "no bus in this test");
        let metrics = audit.anonymous().metrics().await;
        for series in [
            "audit_log_service_events_stored_total",
            "audit_log_service_events_duplicate_total",
            "audit_log_service_consumer_lag",
        ] {
            assert_eq!(metric_value(&metrics, series), Some(0.0), "{series}");
        }
    }
}
