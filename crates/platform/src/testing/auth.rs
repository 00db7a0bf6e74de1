//! Identity for tests: a signing key and client secrets set as a deployment on
//! PostgreSQL sets them, and tokens minted with that key (as user-service's
//! token endpoint would), so tests can act as any caller.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;

use crate::auth::{Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, Role, Secret, SigningKey, unix_now};

/// The test process's identity: one signing key (in a temp directory kept for
/// the process's life) and client secrets, set as a PostgreSQL deployment sets
/// them; [`test_config`](super::test_config) passes them to every service.
pub fn test_auth() -> &'static TestAuth {
    static AUTH: std::sync::LazyLock<TestAuth> = std::sync::LazyLock::new(|| {
        TestAuth::new(
            &std::env::temp_dir().join(format!("microservices-test-auth-{}", std::process::id())),
        )
    });
    &AUTH
}

/// A test process's identity set-up.
pub struct TestAuth {
    /// `AUTH_JWT_PRIVATE_KEY_FILE`, `AUTH_CLIENT_SECRET`, `AUTH_SERVICE_CLIENT_SECRET`.
    pub vars: Vec<(String, String)>,
    key: SigningKey,
}

impl TestAuth {
    /// A fresh Ed25519 key written to `dir`, and random client secrets.
    ///
    /// # Panics
    /// When the key cannot be written.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("secrets dir");
        let (key, pem) = SigningKey::generate().expect("signing key");
        let key_file = dir.join("jwt-signing-key.pem");
        std::fs::write(&key_file, pem).expect("key file written");
        let vars = vec![
            (
                "AUTH_JWT_PRIVATE_KEY_FILE".to_owned(),
                key_file.display().to_string(),
            ),
            (
                "AUTH_CLIENT_SECRET".to_owned(),
                Secret::generate().expose().to_owned(),
            ),
            (
                "AUTH_SERVICE_CLIENT_SECRET".to_owned(),
                Secret::generate().expose().to_owned(),
            ),
        ];
        Self { vars, key }
    }

    /// The value of one of [`Self::vars`].
    ///
    /// # Panics
    /// When `name` is not one of them.
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .expect("a test auth variable")
    }

    /// A token for `subject` with `roles`, valid for 15 minutes, with the
    /// default issuer and audience.
    ///
    /// # Panics
    /// When signing fails.
    pub fn token(&self, subject: &str, roles: &[Role]) -> String {
        let now = unix_now();
        self.key
            .sign(&Claims {
                iss: DEFAULT_ISSUER.to_owned(),
                aud: DEFAULT_AUDIENCE.to_owned(),
                sub: subject.to_owned(),
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
                iat: now,
                nbf: now,
                exp: now + 900,
                jti: uuid::Uuid::new_v4().to_string(),
            })
            .expect("signed token")
    }

    /// The operator client's admin token.
    pub fn admin_token(&self) -> String {
        self.token("operator", &[Role::Admin])
    }

    /// A token of the user with this id.
    pub fn user_token(&self, user_id: i64) -> String {
        self.token(&user_id.to_string(), &[Role::User])
    }

    /// The service client's token.
    pub fn service_token(&self) -> String {
        self.token("order-service", &[Role::Service])
    }

    /// The JWKS that verifies these tokens.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.key.public_jwk().clone()],
        }
    }

    /// Serves [`Self::jwks`] at `/.well-known/jwks.json` on a loopback port until
    /// the test's runtime ends, and returns its base URL: the stand-in issuer of a
    /// service that only verifies tokens.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn serve_jwks(&self) -> String {
        let jwks = self.jwks();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }
}
