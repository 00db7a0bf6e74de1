//! order-service settings: `ORDER_SERVICE_*` and the contract's `CIRCUIT_BREAKER_*`.

use std::time::Duration;

use platform::auth::{
    ClientCredentials, JwksSettings, VerifierSettings as TokenSettings, client_credentials,
    embedded_secrets,
};
use platform::config::{ConfigError, Env};
use platform::db::DatabaseSettings;

/// The circuit breaker around user-service calls (gobreaker's settings).
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// Trial calls admitted while half-open; that many successes close it.
    pub max_requests: usize,
    /// The window over which failures are counted while closed.
    pub interval: Duration,
    /// How long it stays open before half-opening.
    pub timeout: Duration,
}

/// The background re-verification of orders created while user-service was away.
#[derive(Debug, Clone)]
pub struct OrderVerifierSettings {
    /// Lookups in flight at once.
    pub workers: usize,
    /// Pause between sweeps.
    pub interval: Duration,
    /// Orders read per sweep.
    pub batch_size: u64,
}

/// order-service's own settings, beyond the HTTP and database ones every service reads.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    pub user_service_url: String,
    pub user_service_timeout: Duration,
    pub breaker: BreakerSettings,
    pub verifier: OrderVerifierSettings,
    pub auth: AuthSettings,
    pub events: platform::events::EventSettings,
    pub user_cache: crate::user_cache::UserCacheSettings,
}

/// How order-service checks tokens and proves itself to user-service.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub verifier: TokenSettings,
    /// `AUTH_JWKS_URL`, by default user-service's `/.well-known/jwks.json`.
    pub jwks: JwksSettings,
    /// `AUTH_SERVICE_CLIENT_ID` / `AUTH_SERVICE_CLIENT_SECRET`: our client at user-service.
    pub service: ClientCredentials,
}

impl AuthSettings {
    /// Reads the shared `AUTH_*` variables. The service secret may be generated
    /// beside the embedded SQLite file; on PostgreSQL it must be set.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is missing or invalid.
    fn from_env(env: &Env<'_>, user_service_url: &str) -> Result<Self, ConfigError> {
        let shared = env.with_prefix("");
        let database = DatabaseSettings::from_env(env, "orderdb", "order-service")?;
        let jwks = format!(
            "{}/.well-known/jwks.json",
            user_service_url.trim_end_matches('/')
        );
        Ok(Self {
            verifier: TokenSettings::from_env(&shared)?,
            jwks: JwksSettings::from_env(&shared, jwks)?,
            service: client_credentials(
                &shared,
                "AUTH_SERVICE_CLIENT_ID",
                "order-service",
                "AUTH_SERVICE_CLIENT_SECRET",
                embedded_secrets(&database).as_ref(),
            )?,
        })
    }
}

impl OrderSettings {
    /// Reads `ORDER_SERVICE_*` (through `env`), `CIRCUIT_BREAKER_*` and `AUTH_*`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is set but invalid.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let breaker_env = env.with_prefix("CIRCUIT_BREAKER");
        let user_service_url = env.http_url_or("USER_SERVICE_URL", "http://localhost:8081")?;
        Ok(Self {
            auth: AuthSettings::from_env(env, &user_service_url)?,
            breaker: BreakerSettings {
                max_requests: at_least_one(&breaker_env, "MAX_REQUESTS", 3)?,
                interval: breaker_env.fractional_seconds_or("INTERVAL", 60.0)?,
                timeout: breaker_env.fractional_seconds_or("TIMEOUT", 30.0)?,
            },
            verifier: OrderVerifierSettings {
                workers: at_least_one(env, "VERIFY_WORKERS", 4)?,
                interval: env.fractional_seconds_or("VERIFY_INTERVAL", 5.0)?,
                batch_size: env.parse_or("VERIFY_BATCH_SIZE", 100)?,
            },
            user_service_url,
            user_service_timeout: env.millis_or("USER_SERVICE_TIMEOUT_MS", 2000)?,
            events: platform::events::EventSettings::from_env(&env.with_prefix(""))?,
            user_cache: crate::user_cache::UserCacheSettings::from_env(env)?,
        })
    }
}

/// A count that zero would make meaningless (no trial calls, no workers).
fn at_least_one(env: &Env<'_>, suffix: &str, default: usize) -> Result<usize, ConfigError> {
    match env.parse_or(suffix, default)? {
        0 => Err(env.invalid(suffix, "0", "must be at least 1")),
        count => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use platform::config::pairs;
    use platform::testing::assert_each_names_its_variable;

    fn config(variables: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // A configured secret, so no file is generated beside a default SQLite path.
        let mut all = vec![("AUTH_SERVICE_CLIENT_SECRET", "k3JfP9zQx2LmW8vR4tYb")];
        all.extend_from_slice(variables);
        Config::from_lookup(&pairs(&all))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config(&[]).unwrap();
        assert_eq!(config.http.port, 8082);
        assert_eq!(config.own.user_service_url, "http://localhost:8081");
        assert_eq!(config.own.breaker.max_requests, 3);
        assert_eq!(config.own.breaker.interval, Duration::from_secs(60));
        assert_eq!(config.own.breaker.timeout, Duration::from_secs(30));
        assert_eq!(config.own.user_service_timeout, Duration::from_secs(2));
        assert_eq!(
            config.own.auth.jwks.url,
            "http://localhost:8081/.well-known/jwks.json"
        );
        assert_eq!(config.own.auth.service.id, "order-service");
    }

    #[test]
    fn on_postgres_the_service_secret_is_required_and_never_a_placeholder() {
        let url = (
            "ORDER_SERVICE_DATABASE_URL",
            "postgres://u@127.0.0.1/orders",
        );
        let missing = Config::from_lookup(&pairs(&[url])).unwrap_err();
        assert_eq!(missing.variable, "AUTH_SERVICE_CLIENT_SECRET");
        let placeholder =
            config(&[url, ("AUTH_SERVICE_CLIENT_SECRET", "change-me-change-me")]).unwrap_err();
        assert_eq!(placeholder.variable, "AUTH_SERVICE_CLIENT_SECRET");
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert_each_names_its_variable(
            config,
            &[
                ("CIRCUIT_BREAKER_TIMEOUT", "-1"),
                ("CIRCUIT_BREAKER_MAX_REQUESTS", "0"),
                ("ORDER_SERVICE_USER_SERVICE_URL", "ftp://x"),
                ("ORDER_SERVICE_VERIFY_WORKERS", "many"),
            ],
        );
    }

    #[test]
    fn breaker_timings_accept_fractions() {
        let config = config(&[("CIRCUIT_BREAKER_TIMEOUT", "0.5")]).unwrap();
        assert_eq!(config.own.breaker.timeout, Duration::from_millis(500));
    }
}
