//! The `AUTH_*` variables every service shares (unprefixed, like the circuit
//! breaker's, because every service must agree on them).

use std::time::Duration;

use super::secrets::{EmbeddedSecrets, Secret, configured_secret};
use crate::config::{ConfigError, Env};
use crate::db::{DatabaseSettings, DatabaseTarget};

/// What a token must say to be accepted here.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// `AUTH_JWT_ISSUER`: the `iss` every token must carry.
    pub issuer: String,
    /// `AUTH_JWT_AUDIENCE`: a value `aud` must contain.
    pub audience: String,
    /// `AUTH_ROLES_CLAIM`: where the roles are, as a dotted path.
    pub roles_claim: String,
}

pub const DEFAULT_ISSUER: &str = "user-service";
pub const DEFAULT_AUDIENCE: &str = "microservices";

impl VerifierSettings {
    /// # Errors
    /// Never today; kept fallible like every settings reader.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            issuer: env
                .raw("AUTH_JWT_ISSUER")
                .unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            audience: env
                .raw("AUTH_JWT_AUDIENCE")
                .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
            roles_claim: env
                .raw("AUTH_ROLES_CLAIM")
                .unwrap_or_else(|| "roles".to_owned()),
        })
    }
}

/// How a service reaches a JWKS it does not publish itself.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// `AUTH_JWKS_URL`
    pub url: String,
    /// `AUTH_JWKS_REFRESH_INTERVAL` (seconds): how often the keys are fetched again.
    pub refresh_interval: Duration,
}

impl JwksSettings {
    /// # Errors
    /// When the refresh interval is not a number of seconds.
    pub fn from_env(env: &Env<'_>, default_url: String) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.raw("AUTH_JWKS_URL").unwrap_or(default_url),
            refresh_interval: env.fractional_seconds_or("AUTH_JWKS_REFRESH_INTERVAL", 300.0)?,
        })
    }
}

/// A client of the token endpoint: id and secret.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: Secret,
}

/// Where generated secrets live when the service runs on its embedded SQLite
/// file (beside it); `None` on PostgreSQL, where secrets must be configured
/// because replicas must share them.
pub fn embedded_secrets(database: &DatabaseSettings) -> Option<EmbeddedSecrets> {
    match &database.target {
        DatabaseTarget::Sqlite(options) => {
            let file = options.get_filename();
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("data"));
            Some(EmbeddedSecrets::new(dir))
        }
        DatabaseTarget::Postgres(_) => None,
    }
}

/// A client's credentials: `<ID_VAR>` (default `default_id`) and `<SECRET_VAR>`,
/// which must be set unless `embedded` can generate it.
///
/// # Errors
/// When the secret is missing on PostgreSQL, guessable, or the id looks like a
/// user id (a number), which would confuse ownership.
pub fn client_credentials(
    env: &Env<'_>,
    id_variable: &str,
    default_id: &str,
    secret_variable: &str,
    embedded: Option<&EmbeddedSecrets>,
) -> Result<ClientCredentials, ConfigError> {
    let id = env
        .raw(id_variable)
        .unwrap_or_else(|| default_id.to_owned());
    if id.parse::<i64>().is_ok() {
        return Err(ConfigError {
            variable: env.name(id_variable),
            value: id,
            reason: "must not be a number (numbers are user ids)".to_owned(),
        });
    }
    let secret = match (env.raw(secret_variable), embedded) {
        (Some(value), _) => configured_secret(&env.name(secret_variable), &value)?,
        (None, Some(embedded)) => embedded.client_secret(&env.name(secret_variable))?,
        (None, None) => return Err(required_on_postgres(&env.name(secret_variable))),
    };
    Ok(ClientCredentials { id, secret })
}

/// The error for a secret that PostgreSQL deployments must configure.
pub fn required_on_postgres(variable: &str) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        value: String::new(),
        reason: "must be set when the database is PostgreSQL (every replica must share it)"
            .to_owned(),
    }
}
