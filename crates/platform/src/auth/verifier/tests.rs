//! Unit tests of the verifier: good, expired, forged and misaddressed tokens, and the roles claim path.

use super::*;
use crate::auth::SigningKey;
use serde_json::json;

fn settings() -> VerifierSettings {
    VerifierSettings {
        issuer: "https://issuer.test".to_owned(),
        audience: "api".to_owned(),
        roles_claim: "roles".to_owned(),
    }
}

fn failures() -> IntCounterVec {
    IntCounterVec::new(prometheus::Opts::new("f", "f"), &["reason"]).unwrap()
}

fn verifier_for(key: &SigningKey) -> Verifier {
    let jwks = JwkSet {
        keys: vec![key.public_jwk().clone()],
    };
    Verifier::with_keys(settings(), KeySet::from_jwks(&jwks), failures())
}

fn claims(overrides: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": "https://issuer.test", "aud": "api", "sub": "42", "roles": ["user"],
        "iat": now, "nbf": now, "exp": now + 600, "jti": "x",
    });
    for (k, v) in overrides.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

async fn refused(verifier: &Verifier, token: &str) -> String {
    match verifier.verify(token).await {
        Err(ApiError::Unauthorized {
            message,
            invalid_token: true,
        }) => message,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_token_gives_its_subject_and_known_roles() {
    let (key, _) = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let token = key
        .sign(&claims(json!({"roles": ["user", "auditor", "admin"]})))
        .unwrap();
    let caller = verifier.verify(&token).await.unwrap();
    assert_eq!(caller.subject(), "42");
    assert_eq!(caller.roles(), &[Role::User, Role::Admin]);
    // Again, from the cache.
    assert_eq!(verifier.verify(&token).await.unwrap(), caller);
}

#[tokio::test]
async fn expired_future_wrong_issuer_audience_and_missing_claims_are_refused() {
    let (key, _) = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let now = unix_now();
    let cases = [
        (json!({"exp": now - 61}), "expired"),
        (json!({"nbf": now + 120}), "nbf"),
        (json!({"iss": "https://evil.test"}), "issuer"),
        (json!({"aud": "other"}), "audience"),
        (json!({"sub": null}), "sub"),
        (json!({"exp": null}), "exp"),
    ];
    for (overrides, expected) in cases {
        let token = key.sign(&claims(overrides.clone())).unwrap();
        let message = refused(&verifier, &token).await;
        assert!(message.contains(expected), "{overrides} -> {message}");
    }
    // Within the 60 s leeway still passes.
    let token = key.sign(&claims(json!({"exp": now - 30}))).unwrap();
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let (key, _) = SigningKey::generate().unwrap();
    let (other, _) = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let good = key.sign(&claims(json!({}))).unwrap();
    let parts: Vec<&str> = good.split('.').collect();

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": key.kid()})),
        parts[1]
    );
    refused(&verifier, &none).await;

    // HS256 "signed" with the public key as the HMAC secret.
    let public = serde_json::to_string(key.public_jwk()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(key.kid().to_owned());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()).unwrap(),
    )
    .unwrap();
    refused(&verifier, &hs).await;

    let tampered_payload = b64(&claims(json!({"roles": ["admin"]})));
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
    assert!(refused(&verifier, &tampered).await.contains("signature"));

    // Signed by another key that claims our kid.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    let wrong_key = other.sign(&claims(json!({}))).unwrap();
    let impostor = format!(
        "{}.{}",
        b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})),
        wrong_key.split_once('.').unwrap().1
    );
    refused(&verifier, &impostor).await;
    // An unknown kid, garbage, and nothing.
    refused(&verifier, &other.sign(&claims(json!({}))).unwrap()).await;
    for garbage in ["garbage", "a.b.c", "", "...."] {
        refused(&verifier, garbage).await;
    }
    assert!(
        verifier
            .failures
            .with_label_values(&["bad_signature"])
            .get()
            >= 2
    );
}

#[test]
fn roles_are_read_at_a_dotted_path_or_from_a_space_separated_string() {
    let claims =
        json!({"realm_access": {"roles": ["admin", "offline_access"]}, "scope": "user service"});
    let claims = claims.as_object().unwrap();
    assert_eq!(roles_at(claims, "realm_access.roles"), vec![Role::Admin]);
    assert_eq!(roles_at(claims, "scope"), vec![Role::User, Role::Service]);
    assert!(roles_at(claims, "missing.path").is_empty());
}
