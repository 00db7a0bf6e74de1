//! Identity: tokens issued by user-service (EdDSA or ES256 JWTs), verified by
//! every service against a key set, and the [`Caller`] extractor that turns a
//! bearer token into a verified subject and roles.

mod caller;
mod keys;
mod secrets;
mod settings;
mod verifier;

pub use caller::{Caller, Role};
pub use keys::{KeyError, KeySet, SigningKey, public_jwk_from_pem};
pub use secrets::{CLIENTS_FILE, EmbeddedSecrets, SIGNING_KEY_FILE, Secret, configured_secret};
pub use settings::{
    ClientCredentials, DEFAULT_AUDIENCE, DEFAULT_ISSUER, JwksSettings, VerifierSettings,
    client_credentials, embedded_secrets, required_on_postgres,
};
pub use verifier::{FAILURE_REASONS, Verifier};

use serde::{Deserialize, Serialize};

/// The claims of every token user-service issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// A user id for users, the client id for clients.
    pub sub: String,
    pub roles: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Unique per token (UUID v4).
    pub jti: String,
}

/// Registers `{service}_auth_failures_total{reason}`, every reason at 0.
pub fn failure_counter(
    metrics: &crate::metrics::Metrics,
    service: &str,
) -> prometheus::IntCounterVec {
    metrics.labelled_counter(
        &format!("{}_auth_failures_total", service.replace('-', "_")),
        "Requests refused for a missing or invalid bearer token, by reason",
        "reason",
        &FAILURE_REASONS,
    )
}

/// Seconds since the Unix epoch, the unit of `iat`, `nbf` and `exp`.
pub fn unix_now() -> u64 {
    verifier::unix_now()
}
