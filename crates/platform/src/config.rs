//! Reading settings from environment variables, once, with errors that name the variable.
//!
//! Nothing here reads the process environment directly: callers pass a lookup
//! function, so tests build configurations side by side without touching globals.

use std::fmt::Display;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {variable}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

/// A source of variables: `std::env::var` in production, a map in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as a [`Lookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A [`Lookup`] over fixed name/value pairs: what tests configure a service with.
pub fn pairs(variables: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = variables
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Loads `./.env` into the process environment when the file exists; variables
/// already set win. Called once at the top of `main`, before any thread starts.
pub fn load_dotenv() {
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("warning: .env could not be read: {err}");
    }
}

/// Variables of one service, all sharing a prefix such as `USER_SERVICE`.
pub struct Env<'a> {
    prefix: &'a str,
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    pub fn new(prefix: &'a str, lookup: Lookup<'a>) -> Self {
        Self { prefix, lookup }
    }

    /// The same variables under another prefix (order-service's `CIRCUIT_BREAKER_*`).
    pub fn with_prefix(&self, prefix: &'a str) -> Self {
        Self::new(prefix, self.lookup)
    }

    /// The full variable name for `suffix`, e.g. `USER_SERVICE_PORT`.
    pub fn name(&self, suffix: &str) -> String {
        if self.prefix.is_empty() {
            suffix.to_owned()
        } else {
            format!("{}_{suffix}", self.prefix)
        }
    }

    /// The raw value of `PREFIX_SUFFIX`, if set and not blank.
    pub fn raw(&self, suffix: &str) -> Option<String> {
        (self.lookup)(&self.name(suffix)).filter(|v| !v.trim().is_empty())
    }

    /// `PREFIX_SUFFIX` parsed as `T`, or `default` when unset.
    pub fn parse_or<T>(&self, suffix: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(suffix) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError {
                variable: self.name(suffix),
                value,
                reason: e.to_string(),
            }),
        }
    }

    /// Whole seconds, as the contract's timeouts are written.
    pub fn seconds_or(&self, suffix: &str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(suffix, default).map(Duration::from_secs)
    }

    /// Seconds, fractions allowed (`0.5`), for settings tests want short.
    pub fn fractional_seconds_or(
        &self,
        suffix: &str,
        default: f64,
    ) -> Result<Duration, ConfigError> {
        let seconds: f64 = self.parse_or(suffix, default)?;
        Duration::try_from_secs_f64(seconds).map_err(|_| {
            self.invalid(
                suffix,
                &seconds.to_string(),
                "must be a non-negative number of seconds",
            )
        })
    }

    /// Milliseconds, for settings finer than a second.
    pub fn millis_or(&self, suffix: &str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(suffix, default).map(Duration::from_millis)
    }

    /// A value that must be one of `allowed`.
    pub fn choice_or(
        &self,
        suffix: &str,
        allowed: &[&str],
        default: &str,
    ) -> Result<String, ConfigError> {
        let value = self.raw(suffix).unwrap_or_else(|| default.to_owned());
        let normalized = value.trim().to_ascii_lowercase();
        if allowed.contains(&normalized.as_str()) {
            Ok(normalized)
        } else {
            Err(self.invalid(suffix, &value, format!("expected one of {allowed:?}")))
        }
    }

    /// An `http://` or `https://` URL with a host (another service's address).
    pub fn http_url_or(&self, suffix: &str, default: &str) -> Result<String, ConfigError> {
        let url = self.raw(suffix).unwrap_or_else(|| default.to_owned());
        match reqwest::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                Ok(url)
            }
            _ => Err(self.invalid(suffix, &url, "expected an http:// or https:// URL")),
        }
    }

    pub fn invalid(&self, suffix: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: self.name(suffix),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: for files, pipes, containers and log shippers.
    Json,
    /// A compact line a person reads at a terminal.
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT=json|pretty`; unset, pretty when standard output is a
    /// terminal and JSON otherwise.
    ///
    /// # Errors
    /// When `LOG_FORMAT` is set to anything else.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        use std::io::IsTerminal;
        // Not prefixed: one process may run several services, with one log.
        let shared = Env::new("", lookup);
        let default = if std::io::stdout().is_terminal() {
            "pretty"
        } else {
            "json"
        };
        match shared
            .choice_or("LOG_FORMAT", &["json", "pretty"], default)?
            .as_str()
        {
            "pretty" => Ok(Self::Pretty),
            _ => Ok(Self::Json),
        }
    }
}

/// Settings of the HTTP side that every service shares.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Used in logs, health answers and metric names (`user-service`).
    pub service_name: &'static str,
    pub host: IpAddr,
    pub port: u16,
    pub log_level: String,
    /// `LOG_FORMAT` (shared by every service): `json` or `pretty`.
    pub log_format: LogFormat,
    /// Requests per second per client IP; the burst is twice this. 0 turns limiting off.
    pub rate_limit_per_second: u32,
    /// How often the limiter forgets clients whose bucket has refilled.
    pub rate_limit_eviction_interval: Duration,
    /// The per-subject and login limits, and Redis when the limit is shared.
    pub limits: crate::rate_limit::LimitSettings,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `*` or a list of origins allowed by CORS.
    pub cors_allowed_origins: Vec<String>,
    pub request_timeout: Duration,
    /// How long a connection may take to send a complete request head (line and
    /// headers) before it is closed: slow clients must not hold connections forever.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    pub shutdown_grace: Duration,
    /// The standard `OTEL_*` variables (shared by every service).
    pub tracing: crate::otel::TracingSettings,
    /// How long the server keeps accepting and serving after SIGTERM, readiness
    /// already failing, so that load balancers stop sending before it stops listening.
    pub shutdown_delay: Duration,
}

impl HttpSettings {
    /// Reads `PREFIX_PORT`, `PREFIX_LOG_LEVEL`, `PREFIX_RATE_LIMIT` (the contract's
    /// names) and our additions `PREFIX_HOST`, `PREFIX_TRUSTED_PROXIES`,
    /// `PREFIX_CORS_ALLOWED_ORIGINS`, `PREFIX_REQUEST_TIMEOUT`, `PREFIX_SHUTDOWN_TIMEOUT`,
    /// `PREFIX_HEADER_READ_TIMEOUT`, `PREFIX_RATE_LIMIT_EVICTION_INTERVAL`, `PREFIX_SHUTDOWN_DELAY`.
    pub fn from_env(
        env: &Env<'_>,
        service_name: &'static str,
        default_port: u16,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            service_name,
            host: env.parse_or("HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse_or("PORT", default_port)?,
            log_level: env.choice_or(
                "LOG_LEVEL",
                &["trace", "debug", "info", "warn", "error"],
                "info",
            )?,
            log_format: LogFormat::from_lookup(env.lookup)?,
            rate_limit_per_second: env.parse_or("RATE_LIMIT", 100)?,
            rate_limit_eviction_interval: positive_seconds(
                env,
                "RATE_LIMIT_EVICTION_INTERVAL",
                30.0,
            )?,
            limits: crate::rate_limit::LimitSettings::from_env(env, service_name)?,
            trusted_proxies: parse_networks(env, "TRUSTED_PROXIES")?,
            cors_allowed_origins: env
                .raw("CORS_ALLOWED_ORIGINS")
                .unwrap_or_else(|| "*".to_owned())
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            request_timeout: env.seconds_or("REQUEST_TIMEOUT", 10)?,
            header_read_timeout: positive_seconds(env, "HEADER_READ_TIMEOUT", 10.0)?,
            shutdown_grace: env.seconds_or("SHUTDOWN_TIMEOUT", 30)?,
            tracing: crate::otel::TracingSettings::from_lookup(env.lookup)?,
            shutdown_delay: env.fractional_seconds_or("SHUTDOWN_DELAY", 0.0)?,
        })
    }
}

/// A zero interval would spin the eviction task and a zero header timeout would
/// close every connection at once: both are configuration mistakes.
fn positive_seconds(env: &Env<'_>, suffix: &str, default: f64) -> Result<Duration, ConfigError> {
    let duration = env.fractional_seconds_or(suffix, default)?;
    if duration.is_zero() {
        Err(env.invalid(suffix, "0", "must be greater than 0"))
    } else {
        Ok(duration)
    }
}

/// A comma-separated list of IPs or CIDR networks.
fn parse_networks(env: &Env<'_>, suffix: &str) -> Result<Vec<IpNet>, ConfigError> {
    let Some(value) = env.raw(suffix) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| env.invalid(suffix, &value, format!("{item:?} is not an IP or CIDR")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `HttpSettings` of a service whose variables start with `prefix`.
    fn http(prefix: &str, variables: &[(&str, &str)]) -> Result<HttpSettings, ConfigError> {
        HttpSettings::from_env(&Env::new(prefix, &pairs(variables)), "a-service", 8081)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let settings = http("USER_SERVICE", &[]).unwrap();
        assert_eq!(settings.port, 8081);
        assert_eq!(settings.rate_limit_per_second, 100);
        assert_eq!(settings.log_level, "info");
        assert_eq!(settings.shutdown_grace, Duration::from_secs(30));
        assert_eq!(settings.shutdown_delay, Duration::ZERO);
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(
            settings.rate_limit_eviction_interval,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn header_read_timeout_takes_fractions_and_refuses_zero() {
        let settings = http("X", &[("X_HEADER_READ_TIMEOUT", "0.5")]).unwrap();
        assert_eq!(settings.header_read_timeout, Duration::from_millis(500));
        for name in ["X_HEADER_READ_TIMEOUT", "X_RATE_LIMIT_EVICTION_INTERVAL"] {
            assert_eq!(http("X", &[(name, "0")]).unwrap_err().variable, name);
        }
    }

    #[test]
    fn invalid_port_names_the_variable() {
        let err = http("USER_SERVICE", &[("USER_SERVICE_PORT", "eighty")]).unwrap_err();
        assert_eq!(err.variable, "USER_SERVICE_PORT");
        assert!(err.to_string().contains("USER_SERVICE_PORT"));
    }

    #[test]
    fn unknown_log_level_is_rejected() {
        let err = http("ORDER_SERVICE", &[("ORDER_SERVICE_LOG_LEVEL", "loud")]).unwrap_err();
        assert_eq!(err.variable, "ORDER_SERVICE_LOG_LEVEL");
    }

    #[test]
    fn trusted_proxies_accept_ips_and_networks() {
        let vars = pairs(&[("X_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]);
        let nets = parse_networks(&Env::new("X", &vars), "TRUSTED_PROXIES").unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        let vars = pairs(&[("X_TRUSTED_PROXIES", "nope")]);
        assert!(parse_networks(&Env::new("X", &vars), "TRUSTED_PROXIES").is_err());
    }
}
