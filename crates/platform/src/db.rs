//! Backend selection (PostgreSQL or embedded SQLite), connecting with retry, and migrations.
//!
//! Pools are built with sqlx directly (so pool size, acquire timeout and SQLite
//! pragmas are explicit) and then handed to SeaORM, which gives one query code
//! path for both backends. Migrations are plain SQL per backend, embedded in the
//! binary by `sqlx::migrate!`; sqlx holds a PostgreSQL advisory lock while it
//! migrates, so replicas starting together apply each migration exactly once.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{
    DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QuerySelect, Select,
    SqlxPostgresConnector, SqlxSqliteConnector,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::{ConfigError, Env};
use crate::extract::PageRequest;

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Postgres(PgConnectOptions),
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
            Self::Postgres(o) => format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
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
    /// `PREFIX_DATABASE_STARTUP_TIMEOUT` (seconds).
    pub fn from_env(
        env: &Env<'_>,
        default_db_name: &str,
        service_name: &str,
    ) -> Result<Self, ConfigError> {
        let target = if let Some(url) = env.raw("DATABASE_URL") {
            parse_url(env, &url, service_name)?
        } else if POSTGRES_PART_VARIABLES.iter().any(|v| env.raw(v).is_some()) {
            DatabaseTarget::Postgres(
                PgConnectOptions::new()
                    .host(&env.raw("DB_HOST").unwrap_or_else(|| "localhost".into()))
                    .port(env.parse_or("DB_PORT", 5432)?)
                    .username(&env.raw("DB_USER").unwrap_or_else(|| "postgres".into()))
                    .password(&env.raw("DB_PASSWORD").unwrap_or_else(|| "postgres".into()))
                    .database(&env.raw("DB_NAME").unwrap_or_else(|| default_db_name.into()))
                    .application_name(service_name),
            )
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
            acquire_timeout: env.millis_or("DATABASE_ACQUIRE_TIMEOUT_MS", 3000)?,
            startup_timeout: env.seconds_or("DATABASE_STARTUP_TIMEOUT", 30)?,
        })
    }
}

fn parse_url(env: &Env<'_>, url: &str, service_name: &str) -> Result<DatabaseTarget, ConfigError> {
    let shown = redact_password(url);
    let invalid = |e: sqlx::Error| env.invalid("DATABASE_URL", &shown, e.to_string());
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url).map_err(invalid)?;
        Ok(DatabaseTarget::Postgres(
            options.application_name(service_name),
        ))
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url).map_err(invalid)?;
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

/// The embedded migrations of one service, one set per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// Opens the pool (retrying an unreachable PostgreSQL with backoff until the
/// startup timeout) and applies pending migrations.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    migrations: Migrations,
) -> anyhow::Result<DatabaseConnection> {
    let db = connect_with_retry(settings).await?;
    migrate(&db, migrations).await?;
    Ok(db)
}

async fn connect_with_retry(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 1u32;
    loop {
        let attempt_result = match probe(&settings.target).await {
            Ok(()) => connect(settings).await,
            Err(err) => Err(err),
        };
        match attempt_result {
            Ok(db) => {
                tracing::info!(
                    backend = settings.target.backend_name(),
                    location = %settings.target.describe(),
                    max_connections = settings.max_connections,
                    "database connected"
                );
                return Ok(db);
            }
            Err(err) if started.elapsed() + backoff < settings.startup_timeout => {
                tracing::warn!(attempt, error = %err, retry_in_ms = backoff.as_millis() as u64,
                    location = %settings.target.describe(), "database not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "could not connect to {} at {} within {:?} ({attempt} attempts)",
                        settings.target.backend_name(),
                        settings.target.describe(),
                        settings.startup_timeout
                    )
                });
            }
        }
    }
}

/// One direct connection, closed at once: unlike a pool timeout, its error says
/// why the database cannot be reached (refused, unknown host, bad password).
async fn probe(target: &DatabaseTarget) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    if let DatabaseTarget::Postgres(options) = target {
        options.connect().await?.close().await?;
    }
    Ok(())
}

/// Opens the pool once, without retry.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    match &settings.target {
        DatabaseTarget::Postgres(options) => {
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
        }
        DatabaseTarget::Sqlite(options) => {
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create directory {}", dir.display()))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
        }
    }
}

/// A pool that connects on first use: for tests that need a database that is
/// down from the start.
pub fn connect_lazy(settings: &DatabaseSettings) -> DatabaseConnection {
    match &settings.target {
        DatabaseTarget::Postgres(options) => SqlxPostgresConnector::from_sqlx_postgres_pool(
            PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options.clone()),
        ),
        DatabaseTarget::Sqlite(options) => SqlxSqliteConnector::from_sqlx_sqlite_pool(
            SqlitePoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options.clone()),
        ),
    }
}

/// One page of an (already filtered and ordered) query, and the total count of
/// rows the filter matches.
///
/// # Errors
/// When the database fails.
pub async fn fetch_page<E>(
    db: &DatabaseConnection,
    query: Select<E>,
    page: &PageRequest,
) -> Result<(Vec<E::Model>, u64), DbErr>
where
    E: EntityTrait,
    E::Model: Sync,
{
    let total = query.clone().count(db).await?;
    let rows = query
        .limit(page.page_size)
        .offset(page.offset())
        .all(db)
        .await?;
    Ok((rows, total))
}

/// Applies pending migrations for whichever backend `db` is.
pub async fn migrate(db: &DatabaseConnection, migrations: Migrations) -> anyhow::Result<()> {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => migrations
            .postgres
            .run(db.get_postgres_connection_pool())
            .await
            .context("applying PostgreSQL migrations")?,
        sea_orm::DatabaseBackend::Sqlite => migrations
            .sqlite
            .run(db.get_sqlite_connection_pool())
            .await
            .context("applying SQLite migrations")?,
        other => anyhow::bail!("unsupported database backend {other:?}"),
    }
    tracing::info!("database migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<DatabaseSettings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |name: &str| map.get(name).cloned();
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
    fn unknown_url_scheme_and_zero_pool_name_the_variable() {
        let err = settings(&[("USER_SERVICE_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "USER_SERVICE_DATABASE_URL");
        let err = settings(&[("USER_SERVICE_DATABASE_MAX_CONNECTIONS", "0")]).unwrap_err();
        assert_eq!(err.variable, "USER_SERVICE_DATABASE_MAX_CONNECTIONS");
    }
}
