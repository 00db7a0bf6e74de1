//! Backend selection (PostgreSQL or embedded SQLite), connecting with retry,
//! migrations, and the one query interface the stores use for both backends.
//!
//! PostgreSQL goes through tokio-postgres with a deadpool pool: every statement is
//! prepared once per connection and cached, and a checkout costs no round trip
//! (a connection whose socket died is noticed as closed and replaced). Lookups
//! of one row by its key skip the pool: they are pipelined over a few shared
//! connections ([`Database::lookup`]). We moved off
//! sqlx for PostgreSQL because its pool pings the server on every release (and,
//! by default, on every acquire): three round trips per one-query request, which
//! capped GET throughput at a seventh of what PostgreSQL serves (docs/BENCHMARKS.md).
//! SQLite stays on sqlx, where a ping is an in-process call.
//!
//! Stores write plain SQL with `$1`-style placeholders, which both backends accept,
//! bind values through [`SqlParam`] and read columns through [`Row::get`].
//! Migrations are plain SQL per backend, embedded with [`embed_migrations!`](crate::embed_migrations)
//! and applied by sqlx's migrator over one short-lived connection (tokio-postgres on
//! PostgreSQL, holding sqlx's advisory lock while it migrates, so replicas starting
//! together apply each migration exactly once).

mod connection;
mod error;
mod lookups;
mod migrations;
mod postgres_migrate;
mod settings;
mod trace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Arguments, Sqlite};
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSql, ToSql};
use tracing::Instrument;

use connection::postgres_params;
use lookups::SharedClients;
use trace::statement_span;

pub use connection::{Connection, Transaction};
pub use error::DbError;
pub use migrations::{MigrationFile, Migrations, migrate, migrator, shared};
pub use settings::{DatabaseSettings, DatabaseTarget};

/// Now, at microsecond precision: what both backends store exactly, so a row
/// reads back equal to what was written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// A service's database: a pool on either backend. Cheap to clone.
#[derive(Clone)]
pub enum Database {
    Postgres(Postgres),
    Sqlite(SqlitePool),
}

/// PostgreSQL: the pool for transactions and whatever may scan, and the shared
/// connections for lookups (none when `<PREFIX>_DATABASE_SHARED_CONNECTIONS` is 0:
/// then lookups check out of the pool too).
#[derive(Clone)]
pub struct Postgres {
    pub pool: Pool,
    lookups: Option<Arc<SharedClients>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres(_) => "Database::Postgres",
            Self::Sqlite(_) => "Database::Sqlite",
        })
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

    /// The names of the row's columns, in order.
    pub fn column_names(&self) -> Vec<String> {
        use sqlx::Column;
        match self {
            Self::Postgres(row) => row.columns().iter().map(|c| c.name().to_owned()).collect(),
            Self::Sqlite(row) => sqlx::Row::columns(row)
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
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

    /// A connection of its own, for several statements in a row.
    ///
    /// # Errors
    /// See [`DbError`]: the pool could not give one in time.
    pub async fn connection(&self) -> Result<Connection, DbError> {
        Ok(match self {
            Self::Postgres(pg) => Connection::Postgres(pg.pool.get().await?.into()),
            Self::Sqlite(pool) => Connection::Sqlite(pool.acquire().await?),
        })
    }

    /// Starts a transaction on a connection of its own.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn begin(&self) -> Result<Transaction, DbError> {
        self.connection().await?.begin().await
    }

    /// Every row the statement returns.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn query(&self, sql: &str, params: &[&dyn SqlParam]) -> Result<Vec<Row>, DbError> {
        self.connection().await?.query(sql, params).await
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
        self.connection().await?.query_opt(sql, params).await
    }

    /// The row a key finds, if any: for a statement that reads at most one row
    /// through a unique index. On PostgreSQL it runs on a shared connection,
    /// pipelined with the other lookups of the moment, and never waits for the
    /// pool. A statement that may scan belongs in [`Database::query_opt`]: one
    /// server process answers a shared connection's statements in order, so a
    /// slow one would hold up every lookup behind it.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn lookup(
        &self,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<Option<Row>, DbError> {
        match self {
            Self::Postgres(Postgres {
                lookups: Some(lookups),
                ..
            }) => lookups
                .query_opt(sql, &postgres_params(params))
                .instrument(statement_span("postgresql", sql))
                .await
                .map(|row| row.map(Row::Postgres)),
            _ => self.query_opt(sql, params).await,
        }
    }

    /// Exactly one row (an aggregate, an `INSERT … RETURNING`).
    ///
    /// # Errors
    /// See [`DbError`]; no row is a bug.
    pub async fn query_one(&self, sql: &str, params: &[&dyn SqlParam]) -> Result<Row, DbError> {
        self.connection().await?.query_one(sql, params).await
    }

    /// Runs a statement and returns how many rows it changed.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn execute(&self, sql: &str, params: &[&dyn SqlParam]) -> Result<u64, DbError> {
        self.connection().await?.execute(sql, params).await
    }

    /// Closes every pooled connection (at shutdown).
    pub async fn close(&self) {
        match self {
            Self::Postgres(pg) => {
                pg.pool.close();
                if let Some(lookups) = &pg.lookups {
                    lookups.close();
                }
            }
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
                config.clone(),
                NoTls,
                // Fast: a checkout only looks at whether the socket is still open, no
                // round trip. After a database restart the old connections are closed
                // and get replaced on their next checkout.
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let pool = Pool::builder(manager)
                .max_size(settings.max_connections as usize)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(settings.acquire_timeout))
                .create_timeout(Some(settings.acquire_timeout))
                .recycle_timeout(Some(settings.acquire_timeout))
                .build()
                .expect("a pool with a runtime and a size builds");
            let lookups = (settings.shared_connections > 0).then(|| {
                Arc::new(SharedClients::new(
                    config,
                    settings.shared_connections as usize,
                    settings.acquire_timeout,
                ))
            });
            Database::Postgres(Postgres { pool, lookups })
        }
        DatabaseTarget::Sqlite(options) => Database::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options.clone()),
        ),
    }
}
