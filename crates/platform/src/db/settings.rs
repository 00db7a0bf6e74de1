//! Where a service's data lives: backend selection from the environment.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::config::{ConfigError, Env};

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Postgres(tokio_postgres::Config),
    Sqlite(SqliteConnectOptions),
}

impl DatabaseTarget {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Host, port and database (never the password), or the SQLite file.
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(c) => format!(
                "{}:{}/{}",
                postgres_host(c),
                c.get_ports().first().copied().unwrap_or(5432),
                c.get_dbname().unwrap_or("")
            ),
            Self::Sqlite(o) => o.get_filename().display().to_string(),
        }
    }
}

/// Everything needed to open the pool.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub target: DatabaseTarget,
    pub max_connections: u32,
    /// PostgreSQL connections shared by every lookup, beside the pool (0: lookups
    /// use the pool).
    pub shared_connections: u32,
    /// How long a request waits for a pooled connection before it gets a 503.
    pub acquire_timeout: Duration,
    /// How long start-up keeps retrying an unreachable database before giving up.
    pub startup_timeout: Duration,
}

/// The variables that, when any is set, select PostgreSQL built from parts.
const POSTGRES_PART_VARIABLES: [&str; 5] =
    ["DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME"];

impl DatabaseSettings {
    /// Backend rule: `PREFIX_DATABASE_URL` wins; else any `PREFIX_DB_*` part selects
    /// PostgreSQL with the contract's defaults; else an SQLite file under `./data/`.
    /// Pool: `PREFIX_DATABASE_MAX_CONNECTIONS`, `PREFIX_DATABASE_ACQUIRE_TIMEOUT_MS`,
    /// `PREFIX_DATABASE_STARTUP_TIMEOUT` (seconds); `PREFIX_DATABASE_SHARED_CONNECTIONS`
    /// (PostgreSQL's lookups, see [`Database::lookup`](super::Database::lookup)).
    pub fn from_env(
        env: &Env<'_>,
        default_db_name: &str,
        service_name: &str,
    ) -> Result<Self, ConfigError> {
        let target = if let Some(url) = env.raw("DATABASE_URL") {
            parse_url(env, &url, service_name)?
        } else if POSTGRES_PART_VARIABLES.iter().any(|v| env.raw(v).is_some()) {
            let mut config = tokio_postgres::Config::new();
            config
                .host(env.raw("DB_HOST").unwrap_or_else(|| "localhost".into()))
                .port(env.parse_or("DB_PORT", 5432)?)
                .user(env.raw("DB_USER").unwrap_or_else(|| "postgres".into()))
                .password(env.raw("DB_PASSWORD").unwrap_or_else(|| "postgres".into()))
                .dbname(env.raw("DB_NAME").unwrap_or_else(|| default_db_name.into()))
                .application_name(service_name);
            DatabaseTarget::Postgres(config)
        } else {
            DatabaseTarget::Sqlite(sqlite_options(
                SqliteConnectOptions::new()
                    .filename(PathBuf::from("data").join(format!("{service_name}.db"))),
            ))
        };
        let default_pool = match target {
            DatabaseTarget::Postgres(_) => 20,
            DatabaseTarget::Sqlite(_) => 8,
        };
        let max_connections = env.parse_or("DATABASE_MAX_CONNECTIONS", default_pool)?;
        if max_connections == 0 {
            return Err(env.invalid("DATABASE_MAX_CONNECTIONS", "0", "must be at least 1"));
        }
        Ok(Self {
            target,
            max_connections,
            shared_connections: env.parse_or("DATABASE_SHARED_CONNECTIONS", 1)?,
            acquire_timeout: env.millis_or("DATABASE_ACQUIRE_TIMEOUT_MS", 3000)?,
            startup_timeout: env.seconds_or("DATABASE_STARTUP_TIMEOUT", 30)?,
        })
    }
}

fn parse_url(env: &Env<'_>, url: &str, service_name: &str) -> Result<DatabaseTarget, ConfigError> {
    let shown = redact_password(url);
    let invalid = |e: &dyn std::fmt::Display| env.invalid("DATABASE_URL", &shown, e.to_string());
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| invalid(&e))?;
        if config.get_hosts().is_empty() {
            return Err(invalid(&"the URL names no host"));
        }
        config.application_name(service_name);
        Ok(DatabaseTarget::Postgres(config))
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url).map_err(|e| invalid(&e))?;
        Ok(DatabaseTarget::Sqlite(sqlite_options(options)))
    } else {
        Err(env.invalid(
            "DATABASE_URL",
            &shown,
            "expected a postgres://, postgresql:// or sqlite: URL",
        ))
    }
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`, so errors can echo the URL.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// WAL lets readers run beside the single writer; the busy timeout makes writers
/// queue instead of failing at once.
fn sqlite_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
}

fn postgres_host(config: &tokio_postgres::Config) -> String {
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(variables: &[(&str, &str)]) -> Result<DatabaseSettings, ConfigError> {
        let lookup = crate::config::pairs(variables);
        DatabaseSettings::from_env(&Env::new("USER_SERVICE", &lookup), "userdb", "user-service")
    }

    #[test]
    fn nothing_set_means_embedded_sqlite_under_data() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.target.backend_name(), "sqlite");
        assert_eq!(s.target.describe(), "data/user-service.db");
    }

    #[test]
    fn any_db_part_selects_postgres_with_contract_defaults() {
        let s = settings(&[("USER_SERVICE_DB_HOST", "db.internal")]).unwrap();
        assert_eq!(s.target.backend_name(), "postgres");
        assert_eq!(s.target.describe(), "db.internal:5432/userdb");
    }

    #[test]
    fn url_wins_over_parts() {
        let s = settings(&[
            ("USER_SERVICE_DB_HOST", "ignored"),
            (
                "USER_SERVICE_DATABASE_URL",
                "postgres://u:p@127.0.0.1:6543/other",
            ),
        ])
        .unwrap();
        assert_eq!(s.target.describe(), "127.0.0.1:6543/other");
        let s = settings(&[("USER_SERVICE_DATABASE_URL", "sqlite:/tmp/x.db")]).unwrap();
        assert_eq!(s.target.backend_name(), "sqlite");
    }

    #[test]
    fn errors_never_echo_the_password() {
        let err = settings(&[(
            "USER_SERVICE_DATABASE_URL",
            "postgres://u:hunter2@h:notaport/db",
        )])
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn one_shared_connection_serves_lookups_unless_set_otherwise() {
        assert_eq!(settings(&[]).unwrap().shared_connections, 1);
        let s = settings(&[("USER_SERVICE_DATABASE_SHARED_CONNECTIONS", "0")]).unwrap();
        assert_eq!(s.shared_connections, 0);
        let err = settings(&[("USER_SERVICE_DATABASE_SHARED_CONNECTIONS", "-1")]).unwrap_err();
        assert_eq!(err.variable, "USER_SERVICE_DATABASE_SHARED_CONNECTIONS");
    }

    #[test]
    fn unknown_url_scheme_and_zero_pool_name_the_variable() {
        let err = settings(&[("USER_SERVICE_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "USER_SERVICE_DATABASE_URL");
        let err = settings(&[("USER_SERVICE_DATABASE_MAX_CONNECTIONS", "0")]).unwrap_err();
        assert_eq!(err.variable, "USER_SERVICE_DATABASE_MAX_CONNECTIONS");
    }
}
