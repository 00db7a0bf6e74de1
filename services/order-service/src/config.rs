//! order-service settings: `ORDER_SERVICE_*` and the contract's `CIRCUIT_BREAKER_*`.

use std::time::Duration;

use platform::auth::{
    ClientCredentials, JwksSettings, VerifierSettings, client_credentials, embedded_secrets,
};
use platform::cli::ServiceConfig;
use platform::config::{ConfigError, Env, HttpSettings, Lookup};
use platform::db::DatabaseSettings;

pub const SERVICE_NAME: &str = "order-service";
const PREFIX: &str = "ORDER_SERVICE";

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

/// Everything the service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub user_service_url: String,
    pub user_service_timeout: Duration,
    pub breaker: BreakerSettings,
    pub verifier: OrderVerifierSettings,
    pub auth: AuthSettings,
    pub events: platform::events::EventSettings,
}

/// How order-service checks tokens and proves itself to user-service.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub verifier: VerifierSettings,
    /// `AUTH_JWKS_URL`, by default user-service's `/.well-known/jwks.json`.
    pub jwks: JwksSettings,
    /// `AUTH_SERVICE_CLIENT_ID` / `AUTH_SERVICE_CLIENT_SECRET`: our client at user-service.
    pub service: ClientCredentials,
}

impl ServiceConfig for Config {
    fn http(&self) -> &HttpSettings {
        &self.http
    }

    fn database(&self) -> &DatabaseSettings {
        &self.database
    }

    fn from_lookup(lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        let env = Env::new(PREFIX, lookup);
        let breaker_env = Env::new("CIRCUIT_BREAKER", lookup);
        let breaker = BreakerSettings {
            max_requests: breaker_env.parse_or("MAX_REQUESTS", 3)?,
            interval: breaker_env.fractional_seconds_or("INTERVAL", 60.0)?,
            timeout: breaker_env.fractional_seconds_or("TIMEOUT", 30.0)?,
        };
        if breaker.max_requests == 0 {
            return Err(breaker_env.invalid("MAX_REQUESTS", "0", "must be at least 1"));
        }
        let verifier = OrderVerifierSettings {
            workers: env.parse_or("VERIFY_WORKERS", 4)?,
            interval: env.fractional_seconds_or("VERIFY_INTERVAL", 5.0)?,
            batch_size: env.parse_or("VERIFY_BATCH_SIZE", 100)?,
        };
        if verifier.workers == 0 {
            return Err(env.invalid("VERIFY_WORKERS", "0", "must be at least 1"));
        }
        let database = DatabaseSettings::from_env(&env, "orderdb", SERVICE_NAME)?;
        let user_service_url = user_service_url(&env)?;
        let shared = Env::new("", lookup);
        let auth = AuthSettings {
            verifier: VerifierSettings::from_env(&shared)?,
            jwks: JwksSettings::from_env(
                &shared,
                format!(
                    "{}/.well-known/jwks.json",
                    user_service_url.trim_end_matches('/')
                ),
            )?,
            service: client_credentials(
                &shared,
                "AUTH_SERVICE_CLIENT_ID",
                "order-service",
                "AUTH_SERVICE_CLIENT_SECRET",
                embedded_secrets(&database).as_ref(),
            )?,
        };
        Ok(Self {
            http: HttpSettings::from_env(&env, SERVICE_NAME, 8082)?,
            database,
            user_service_url,
            user_service_timeout: env.millis_or("USER_SERVICE_TIMEOUT_MS", 2000)?,
            breaker,
            verifier,
            auth,
            events: platform::events::EventSettings::from_env(&shared)?,
        })
    }
}

fn user_service_url(env: &Env<'_>) -> Result<String, ConfigError> {
    let url = env
        .raw("USER_SERVICE_URL")
        .unwrap_or_else(|| "http://localhost:8081".to_owned());
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(url),
        _ => Err(env.invalid(
            "USER_SERVICE_URL",
            &url,
            "expected an http:// or https:// URL",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // A configured secret, so no file is generated beside a default SQLite path.
        let map: HashMap<String, String> = [("AUTH_SERVICE_CLIENT_SECRET", "k3JfP9zQx2LmW8vR4tYb")]
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config(&[]).unwrap();
        assert_eq!(config.http.port, 8082);
        assert_eq!(config.user_service_url, "http://localhost:8081");
        assert_eq!(config.breaker.max_requests, 3);
        assert_eq!(config.breaker.interval, Duration::from_secs(60));
        assert_eq!(config.breaker.timeout, Duration::from_secs(30));
        assert_eq!(config.user_service_timeout, Duration::from_secs(2));
        assert_eq!(
            config.auth.jwks.url,
            "http://localhost:8081/.well-known/jwks.json"
        );
        assert_eq!(config.auth.service.id, "order-service");
    }

    #[test]
    fn on_postgres_the_service_secret_is_required_and_never_a_placeholder() {
        let url = (
            "ORDER_SERVICE_DATABASE_URL",
            "postgres://u@127.0.0.1/orders",
        );
        let missing = Config::from_lookup(&|name: &str| (name == url.0).then(|| url.1.to_owned()))
            .unwrap_err();
        assert_eq!(missing.variable, "AUTH_SERVICE_CLIENT_SECRET");
        let placeholder =
            config(&[url, ("AUTH_SERVICE_CLIENT_SECRET", "change-me-change-me")]).unwrap_err();
        assert_eq!(placeholder.variable, "AUTH_SERVICE_CLIENT_SECRET");
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (name, value) in [
            ("CIRCUIT_BREAKER_TIMEOUT", "-1"),
            ("CIRCUIT_BREAKER_MAX_REQUESTS", "0"),
            ("ORDER_SERVICE_USER_SERVICE_URL", "ftp://x"),
            ("ORDER_SERVICE_VERIFY_WORKERS", "many"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name);
        }
    }

    #[test]
    fn breaker_timings_accept_fractions() {
        let config = config(&[("CIRCUIT_BREAKER_TIMEOUT", "0.5")]).unwrap();
        assert_eq!(config.breaker.timeout, Duration::from_millis(500));
    }
}
