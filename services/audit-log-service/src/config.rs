//! audit-log-service settings: `AUDIT_LOG_SERVICE_*`, the shared `AUTH_*`
//! verifier settings and `NATS_URL`. It calls no other service, so it needs no
//! client secret: only the keys to check tokens with.

use platform::auth::{JwksSettings, VerifierSettings};
use platform::config::{ConfigError, Env};
use platform::events::EventSettings;

/// audit-log-service's own settings, beyond the HTTP and database ones every
/// service reads under `AUDIT_LOG_SERVICE_*`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `AUDIT_LOG_SERVICE_USER_SERVICE_URL`: the issuer whose JWKS is the default.
    pub user_service_url: String,
    pub auth: AuthSettings,
    /// `NATS_URL`, or the launcher's in-process bus.
    pub events: EventSettings,
}

/// How audit-log-service checks tokens.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub verifier: VerifierSettings,
    /// `AUTH_JWKS_URL`, by default user-service's `/.well-known/jwks.json`.
    pub jwks: JwksSettings,
}

impl AuditSettings {
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is set but invalid.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let shared = env.with_prefix("");
        let user_service_url = env.http_url_or("USER_SERVICE_URL", "http://localhost:8081")?;
        let jwks = format!(
            "{}/.well-known/jwks.json",
            user_service_url.trim_end_matches('/')
        );
        Ok(Self {
            auth: AuthSettings {
                verifier: VerifierSettings::from_env(&shared)?,
                jwks: JwksSettings::from_env(&shared, jwks)?,
            },
            events: EventSettings::from_env(&shared)?,
            user_service_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use platform::config::pairs;
    use platform::testing::assert_each_names_its_variable;

    fn read(variables: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(&pairs(variables))
    }

    #[test]
    fn defaults_follow_the_other_services() {
        let config = read(&[]).unwrap();
        assert_eq!(config.http.port, 8083);
        assert_eq!(config.http.service_name, "audit-log-service");
        assert_eq!(
            config.own.auth.jwks.url,
            "http://localhost:8081/.well-known/jwks.json"
        );
        assert_eq!(config.own.events.nats_url, None);
        assert_eq!(config.database.target.backend_name(), "sqlite");
        assert!(
            config
                .database
                .target
                .describe()
                .ends_with("audit-log-service.db")
        );
    }

    #[test]
    fn the_database_by_parts_defaults_to_auditdb_and_postgres_needs_no_secret() {
        let config = read(&[("AUDIT_LOG_SERVICE_DB_HOST", "db.internal")]).unwrap();
        assert_eq!(
            config.database.target.describe(),
            "db.internal:5432/auditdb"
        );
    }

    #[test]
    fn the_jwks_follows_the_user_service_url_unless_set() {
        let config = read(&[("AUDIT_LOG_SERVICE_USER_SERVICE_URL", "http://users:8081/")]).unwrap();
        assert_eq!(
            config.own.auth.jwks.url,
            "http://users:8081/.well-known/jwks.json"
        );
        let config = read(&[
            ("AUDIT_LOG_SERVICE_USER_SERVICE_URL", "http://users:8081"),
            ("AUTH_JWKS_URL", "https://idp.example.com/keys"),
            ("NATS_URL", "nats://nats:4222"),
        ])
        .unwrap();
        assert_eq!(config.own.auth.jwks.url, "https://idp.example.com/keys");
        assert_eq!(
            config.own.events.nats_url.as_deref(),
            Some("nats://nats:4222")
        );
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert_each_names_its_variable(
            read,
            &[
                ("AUDIT_LOG_SERVICE_USER_SERVICE_URL", "ftp://x"),
                ("AUDIT_LOG_SERVICE_PORT", "eighty"),
                ("AUDIT_LOG_SERVICE_RATE_LIMIT", "-1"),
                ("AUTH_JWKS_REFRESH_INTERVAL", "soon"),
            ],
        );
    }
}
