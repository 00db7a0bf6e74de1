//! Backend selection (PostgreSQL or embedded SQLite), connecting with retry,
//! migrations, and the one query interface the stores use for both backends.
//!
//! PostgreSQL goes through tokio-postgres with a deadpool pool: every statement is
//! prepared once per connection and cached, and a checkout costs no round trip
//! (a connection whose socket died is noticed as closed and replaced). We moved off
//! sqlx for PostgreSQL because its pool pings the server on every release (and,
//! by default, on every acquire): three round trips per one-query request, which
//! capped GET throughput at a seventh of what PostgreSQL serves (docs/BENCHMARKS.md).
//! SQLite stays on sqlx, where a ping is an in-process call.
//!
//! Stores write plain SQL with `$1`-style placeholders, which both backends accept,
//! bind values through [`SqlParam`] and read columns through [`Row::get`].
//! Migrations are plain SQL per backend, embedded by `sqlx::migrate!` and applied
//! over one short-lived sqlx connection; sqlx holds a PostgreSQL advisory lock while
//! it migrates, so replicas starting together apply each migration exactly once.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments, Sqlite};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};

use crate::config::{ConfigError, Env};
use crate::error::ApiError;
use crate::extract::PageRequest;

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

/// The embedded migrations of one service, one set per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// A service's database: a pool on either backend. Cheap to clone.
#[derive(Clone)]
pub enum Database {
    Postgres(Pool),
    Sqlite(SqlitePool),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres(_) => "Database::Postgres",
            Self::Sqlite(_) => "Database::Sqlite",
        })
    }
}

/// Why a statement failed, sorted by what the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot serve right now (down, restarting, pool exhausted): a 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique index refused the row; only the caller knows which field collided.
    #[error("unique constraint violated: {0}")]
    UniqueViolation(String),
    /// Anything else is a bug in a query or a schema: a 500.
    #[error("database error: {0}")]
    Other(String),
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Self::ServiceUnavailable("database is unavailable, retry later".to_owned())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        let text = err.to_string();
        match err.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => Self::UniqueViolation(text),
            // 08xxx connection exceptions, 57P0x operator intervention (shutdown,
            // crash, cannot connect now), 53xxx insufficient resources.
            Some(code)
                if ["08", "57P0", "53"]
                    .iter()
                    .any(|class| code.code().starts_with(class)) =>
            {
                Self::Unavailable(text)
            }
            Some(_) => Self::Other(text),
            // No SQLSTATE: the connection broke, was refused or timed out.
            None if err.is_closed() || source_is_io(&err) => Self::Unavailable(text),
            None => Self::Other(text),
        }
    }
}

fn source_is_io(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => err.into(),
            // Timed out waiting for a free connection or creating one, or closed.
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        let text = err.to_string();
        match &err {
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                Self::UniqueViolation(text)
            }
            // SQLITE_BUSY / SQLITE_LOCKED: the busy timeout ran out behind a writer.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6")) => {
                Self::Unavailable(text)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(text),
            _ => Self::Other(text),
        }
    }
}

/// A value bound to a `$n` placeholder on either backend. Implemented for every
/// type both drivers can encode (integers, bool, strings, timestamps, options).
///
/// Hand-written because no crate binds one parameter list to both tokio-postgres
/// and sqlx; it is two one-line adapters.
pub trait SqlParam: Sync {
    fn as_postgres(&self) -> &(dyn ToSql + Sync);
    /// # Errors
    /// When sqlx cannot encode the value.
    fn bind_sqlite(&self, arguments: &mut SqliteArguments) -> Result<(), sqlx::error::BoxDynError>;
}

impl<T> SqlParam for T
where
    T: ToSql + Sync + for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    fn as_postgres(&self) -> &(dyn ToSql + Sync) {
        self
    }

    fn bind_sqlite(&self, arguments: &mut SqliteArguments) -> Result<(), sqlx::error::BoxDynError> {
        arguments.add(self)
    }
}

/// One result row from either backend.
pub enum Row {
    Postgres(tokio_postgres::Row),
    Sqlite(SqliteRow),
}

impl Row {
    /// The value of a column by name.
    ///
    /// # Errors
    /// When the column is missing or of another type: a bug, reported as such.
    pub fn get<T>(&self, column: &str) -> Result<T, DbError>
    where
        T: for<'a> FromSql<'a> + for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    {
        match self {
            Self::Postgres(row) => row.try_get(column).map_err(DbError::from),
            Self::Sqlite(row) => sqlx::Row::try_get(row, column).map_err(DbError::from),
        }
    }
}

impl Database {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Every row the statement returns.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn query(&self, sql: &str, params: &[&dyn SqlParam]) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Postgres(pool) => {
                let client = pool.get().await?;
                let statement = client.prepare_cached(sql).await?;
                let rows = client.query(&statement, &postgres_params(params)).await?;
                Ok(rows.into_iter().map(Row::Postgres).collect())
            }
            Self::Sqlite(pool) => {
                let rows =
                    sqlx::query_with(sqlx::AssertSqlSafe(sql.to_owned()), sqlite_params(params)?)
                        .fetch_all(pool)
                        .await?;
                Ok(rows.into_iter().map(Row::Sqlite).collect())
            }
        }
    }

    /// The first row, if any.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<Option<Row>, DbError> {
        match self {
            Self::Postgres(pool) => {
                let client = pool.get().await?;
                let statement = client.prepare_cached(sql).await?;
                let row = client
                    .query_opt(&statement, &postgres_params(params))
                    .await?;
                Ok(row.map(Row::Postgres))
            }
            Self::Sqlite(pool) => {
                let row =
                    sqlx::query_with(sqlx::AssertSqlSafe(sql.to_owned()), sqlite_params(params)?)
                        .fetch_optional(pool)
                        .await?;
                Ok(row.map(Row::Sqlite))
            }
        }
    }

    /// Exactly one row (an aggregate, an `INSERT … RETURNING`).
    ///
    /// # Errors
    /// See [`DbError`]; no row is a bug.
    pub async fn query_one(&self, sql: &str, params: &[&dyn SqlParam]) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Other(format!("expected one row from: {sql}")))
    }

    /// Runs a statement and returns how many rows it changed.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn execute(&self, sql: &str, params: &[&dyn SqlParam]) -> Result<u64, DbError> {
        match self {
            Self::Postgres(pool) => {
                let client = pool.get().await?;
                let statement = client.prepare_cached(sql).await?;
                Ok(client.execute(&statement, &postgres_params(params)).await?)
            }
            Self::Sqlite(pool) => Ok(sqlx::query_with(
                sqlx::AssertSqlSafe(sql.to_owned()),
                sqlite_params(params)?,
            )
            .execute(pool)
            .await?
            .rows_affected()),
        }
    }

    /// Closes every pooled connection (at shutdown).
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close(),
            Self::Sqlite(pool) => pool.close().await,
        }
    }

    /// One round trip to the database.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn ping(&self) -> Result<(), DbError> {
        self.query_one("SELECT 1 AS one", &[]).await.map(drop)
    }
}

fn postgres_params<'a>(params: &'a [&'a dyn SqlParam]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_postgres()).collect()
}

fn sqlite_params(params: &[&dyn SqlParam]) -> Result<SqliteArguments, DbError> {
    let mut arguments = SqliteArguments::default();
    for param in params {
        param
            .bind_sqlite(&mut arguments)
            .map_err(|e| DbError::Other(format!("cannot encode a parameter: {e}")))?;
    }
    Ok(arguments)
}

/// The `WHERE` clause of a listing whose filters are optional: each condition is
/// added with its value, and its `?` becomes the next `$n` placeholder.
pub struct Filter<'a> {
    conditions: Vec<String>,
    params: Vec<&'a dyn SqlParam>,
}

impl<'a> Filter<'a> {
    /// Starts with a condition that always applies (e.g. `deleted_at IS NULL`).
    pub fn new(always: &str) -> Self {
        Self {
            conditions: vec![always.to_owned()],
            params: Vec::new(),
        }
    }

    #[must_use]
    pub fn and(mut self, condition: &str, value: &'a dyn SqlParam) -> Self {
        self.params.push(value);
        let placeholder = format!("${}", self.params.len());
        self.conditions.push(condition.replace('?', &placeholder));
        self
    }
}

/// One page of `SELECT columns FROM table WHERE filter ORDER BY order_by`, and the
/// number of rows the filter matches. The count costs a second statement only
/// when the page cannot tell it (a full page, or an empty page past the first).
///
/// # Errors
/// See [`DbError`].
pub async fn fetch_page(
    db: &Database,
    columns: &str,
    table: &str,
    filter: Filter<'_>,
    order_by: &str,
    page: &PageRequest,
) -> Result<(Vec<Row>, u64), DbError> {
    let where_clause = filter.conditions.join(" AND ");
    // Both fit: page_size is at most 100 and the offset is capped at i64::MAX.
    let limit = i64::try_from(page.page_size).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.offset()).unwrap_or(i64::MAX);
    let mut params = filter.params.clone();
    params.extend([&limit as &dyn SqlParam, &offset]);
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE {where_clause} ORDER BY {order_by} LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len()
    );
    let rows = db.query(&sql, &params).await?;
    let fetched = rows.len() as u64;
    if fetched > 0 && fetched < page.page_size {
        return Ok((rows, page.offset() + fetched));
    }
    if fetched == 0 && page.offset() == 0 {
        return Ok((rows, 0));
    }
    let count = format!("SELECT COUNT(*) AS total FROM {table} WHERE {where_clause}");
    let total: i64 = db.query_one(&count, &filter.params).await?.get("total")?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}

/// Opens the pool (retrying an unreachable PostgreSQL with backoff until the
/// startup timeout) and applies pending migrations.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    migrations: Migrations,
) -> anyhow::Result<Database> {
    let db = connect_with_retry(settings).await?;
    migrate(settings, &db, migrations).await?;
    Ok(db)
}

async fn connect_with_retry(settings: &DatabaseSettings) -> anyhow::Result<Database> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 1u32;
    loop {
        match connect(settings).await {
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

/// Opens the pool and proves it with one connection, without retry. The error of
/// a direct connect says why the database cannot be reached (refused, unknown
/// host, bad password), where a pool would only report a timeout.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Database> {
    if let DatabaseTarget::Postgres(config) = &settings.target {
        let (client, connection) = config.connect(NoTls).await?;
        drop(client);
        connection.await?;
    }
    if let DatabaseTarget::Sqlite(options) = &settings.target
        && let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let db = connect_lazy(settings);
    db.ping().await?;
    Ok(db)
}

/// A pool that connects on first use: for tests that need a database that is
/// down from the start.
pub fn connect_lazy(settings: &DatabaseSettings) -> Database {
    match &settings.target {
        DatabaseTarget::Postgres(config) => {
            let mut config = config.clone();
            config.connect_timeout(settings.acquire_timeout);
            let manager = Manager::from_config(
                config,
                NoTls,
                // Fast: a checkout only looks at whether the socket is still open, no
                // round trip. After a database restart the old connections are closed
                // and get replaced on their next checkout.
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Database::Postgres(
                Pool::builder(manager)
                    .max_size(settings.max_connections as usize)
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(settings.acquire_timeout))
                    .create_timeout(Some(settings.acquire_timeout))
                    .recycle_timeout(Some(settings.acquire_timeout))
                    .build()
                    .expect("a pool with a runtime and a size builds"),
            )
        }
        DatabaseTarget::Sqlite(options) => Database::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options.clone()),
        ),
    }
}

/// Applies pending migrations for whichever backend `db` is.
pub async fn migrate(
    settings: &DatabaseSettings,
    db: &Database,
    migrations: Migrations,
) -> anyhow::Result<()> {
    match (&settings.target, db) {
        (DatabaseTarget::Postgres(config), _) => {
            use sqlx::Connection;
            let mut connection = sqlx::PgConnection::connect_with(&migration_options(config))
                .await
                .context("connecting to apply PostgreSQL migrations")?;
            migrations
                .postgres
                .run(&mut connection)
                .await
                .context("applying PostgreSQL migrations")?;
            connection.close().await?;
        }
        (DatabaseTarget::Sqlite(_), Database::Sqlite(pool)) => migrations
            .sqlite
            .run(pool)
            .await
            .context("applying SQLite migrations")?,
        (DatabaseTarget::Sqlite(_), Database::Postgres(_)) => {
            anyhow::bail!("settings name SQLite but the pool is PostgreSQL")
        }
    }
    tracing::info!("database migrations applied");
    Ok(())
}

/// sqlx (which runs the migrations) takes its own options; same server and role.
fn migration_options(config: &tokio_postgres::Config) -> PgConnectOptions {
    let mut options = PgConnectOptions::new()
        .port(config.get_ports().first().copied().unwrap_or(5432))
        .application_name(config.get_application_name().unwrap_or("migrations"));
    options = match config.get_hosts().first() {
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => options.socket(path),
        _ => options.host(&postgres_host(config)),
    };
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(password) = config.get_password() {
        options = options.password(&String::from_utf8_lossy(password));
    }
    if let Some(dbname) = config.get_dbname() {
        options = options.database(dbname);
    }
    options
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
