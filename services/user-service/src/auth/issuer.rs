//! Signing tokens: the claims every token carries, the answer of both token
//! endpoints, and the JWKS that lets every service verify them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use platform::ApiError;
use platform::auth::{Claims, Role, SigningKey, unix_now};
use serde::Serialize;
use utoipa::ToSchema;

use super::config::AuthConfig;

/// The answer of `POST /auth/token` and `POST /auth/login`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// A signed JWT (EdDSA or ES256); send it as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub expires_at: DateTime<Utc>,
    /// The roles the token carries.
    #[schema(example = json!(["admin"]))]
    pub roles: Vec<String>,
}

/// Issues tokens with the current signing key.
pub struct TokenIssuer {
    key: Arc<SigningKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
    jwks: JwkSet,
}

impl TokenIssuer {
    pub fn new(config: &AuthConfig) -> Self {
        let mut keys: Vec<Jwk> = vec![config.signing_key.public_jwk().clone()];
        keys.extend(
            config
                .previous_keys
                .iter()
                .filter(|jwk| jwk.common.key_id.as_deref() != Some(config.signing_key.kid()))
                .cloned(),
        );
        Self {
            key: Arc::clone(&config.signing_key),
            issuer: config.verifier.issuer.clone(),
            audience: config.verifier.audience.clone(),
            ttl: config.token_ttl,
            jwks: JwkSet { keys },
        }
    }

    /// The public keys tokens may be signed with: the current one first, then
    /// those kept for rotation.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A token for `subject` with `roles`, valid from now for the configured TTL.
    ///
    /// # Errors
    /// 500 when signing fails (a bug).
    pub fn issue(&self, subject: &str, roles: &[Role]) -> Result<TokenResponse, ApiError> {
        let now = unix_now();
        let ttl = self.ttl.as_secs();
        let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_owned(),
            roles: roles.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let access_token = self
            .key
            .sign(&claims)
            .map_err(|e| ApiError::Internal(e.into()))?;
        let expires_at = DateTime::from_timestamp(i64::try_from(now + ttl).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            expires_at,
            roles,
        })
    }
}
