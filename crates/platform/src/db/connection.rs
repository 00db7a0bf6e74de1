//! One connection checked out of the pool, and transactions on it.

use std::ops::{Deref, DerefMut};

use futures::FutureExt;
use sqlx::Executor;
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteArguments;
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::trace::statement_span;
use super::{DbError, Row, SqlParam};

/// A pooled connection on either backend; back to the pool when dropped.
pub enum Connection {
    Postgres(PostgresConnection),
    Sqlite(PoolConnection<Sqlite>),
}

/// A PostgreSQL client, and whether a transaction's BEGIN still waits to go out
/// with its first statement ([`Connection::begin`]).
pub struct PostgresConnection {
    client: deadpool_postgres::Object,
    begin_pending: bool,
}

impl From<deadpool_postgres::Object> for PostgresConnection {
    fn from(client: deadpool_postgres::Object) -> Self {
        Self {
            client,
            begin_pending: false,
        }
    }
}

/// Runs `statement` on `client`, sent in one round trip with the transaction's
/// BEGIN when that is still pending: tokio-postgres pipelines requests that
/// are in flight together, in the order they were first polled. A BEGIN fails
/// only with its connection, and then so does the statement behind it.
async fn after_begin<T>(
    client: &tokio_postgres::Client,
    begin_pending: &mut bool,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    if !std::mem::take(begin_pending) {
        return Ok(statement.await?);
    }
    // No span of its own: it rides in the statement's round trip (and span).
    let (began, result) = futures::future::join(client.batch_execute("BEGIN"), statement).await;
    began?;
    Ok(result?)
}

impl Connection {
    /// Every row the statement returns.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<Vec<Row>, DbError> {
        let span = statement_span(self.system(), sql);
        async move {
            match self {
                Self::Postgres(pg) => {
                    let statement = pg.client.prepare_cached(sql).await?;
                    let params = postgres_params(params);
                    let query = pg.client.query(&statement, &params);
                    let rows = after_begin(&pg.client, &mut pg.begin_pending, query).await?;
                    Ok(rows.into_iter().map(Row::Postgres).collect())
                }
                Self::Sqlite(connection) => {
                    let rows = sqlite_query(sql, params)?
                        .fetch_all(&mut **connection)
                        .await?;
                    Ok(rows.into_iter().map(Row::Sqlite).collect())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Every row the statement returns, planned for these values: the statement
    /// runs unnamed (one round trip, as a cached one), so PostgreSQL plans it with
    /// the values in hand rather than reusing a generic plan that cannot know
    /// whether a search term is selective. The cached statement only supplies the
    /// parameter types. SQLite plans every statement that way anyway.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn query_planned(
        &mut self,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Postgres(pg) => {
                let statement = pg.client.prepare_cached(sql).await?;
                let typed: Vec<_> = postgres_params(params)
                    .into_iter()
                    .zip(statement.params().iter().cloned())
                    .collect();
                let query = pg.client.query_typed(sql, &typed);
                let rows = after_begin(&pg.client, &mut pg.begin_pending, query).await?;
                Ok(rows.into_iter().map(Row::Postgres).collect())
            }
            Self::Sqlite(_) => self.query(sql, params).await,
        }
    }

    /// The first row, if any.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<Option<Row>, DbError> {
        let span = statement_span(self.system(), sql);
        async move {
            match self {
                Self::Postgres(pg) => {
                    let statement = pg.client.prepare_cached(sql).await?;
                    let params = postgres_params(params);
                    let query = pg.client.query_opt(&statement, &params);
                    let row = after_begin(&pg.client, &mut pg.begin_pending, query).await?;
                    Ok(row.map(Row::Postgres))
                }
                Self::Sqlite(connection) => {
                    let row = sqlite_query(sql, params)?
                        .fetch_optional(&mut **connection)
                        .await?;
                    Ok(row.map(Row::Sqlite))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Exactly one row (an aggregate, an `INSERT … RETURNING`).
    ///
    /// # Errors
    /// See [`DbError`]; no row is a bug.
    pub async fn query_one(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Other(format!("expected one row from: {sql}")))
    }

    /// Runs a statement and returns how many rows it changed.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn execute(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<u64, DbError> {
        let span = statement_span(self.system(), sql);
        async move {
            match self {
                Self::Postgres(pg) => {
                    let statement = pg.client.prepare_cached(sql).await?;
                    let params = postgres_params(params);
                    let execute = pg.client.execute(&statement, &params);
                    after_begin(&pg.client, &mut pg.begin_pending, execute).await
                }
                Self::Sqlite(connection) => Ok(sqlite_query(sql, params)?
                    .execute(&mut **connection)
                    .await?
                    .rows_affected()),
            }
        }
        .instrument(span)
        .await
    }

    /// Starts a transaction on this connection. On PostgreSQL the BEGIN goes out
    /// with the transaction's first statement, a round trip less; SQLite takes
    /// its write lock here, so the busy timeout applies instead of a deferred
    /// transaction failing when it first writes.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn begin(self) -> Result<Transaction, DbError> {
        let mut guard = DiscardUnlessKept(Some(self));
        match guard.get() {
            Self::Postgres(pg) => pg.begin_pending = true,
            // A BEGIN that failed left no transaction: the connection goes back to the pool.
            sqlite @ Self::Sqlite(_) => {
                let result = sqlite.batch("BEGIN IMMEDIATE").await;
                if let Err(err) = result {
                    drop(guard.keep());
                    return Err(err);
                }
            }
        }
        Ok(Transaction {
            connection: Some(guard.keep()),
        })
    }

    /// True while a transaction on this connection has not sent anything yet:
    /// there is nothing to commit or roll back.
    fn nothing_sent(&self) -> bool {
        matches!(self, Self::Postgres(pg) if pg.begin_pending)
    }

    /// A statement without parameters or results (transaction control).
    async fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let span = statement_span(self.system(), sql);
        async move {
            match self {
                Self::Postgres(pg) => Ok(pg.client.batch_execute(sql).await?),
                Self::Sqlite(connection) => {
                    connection
                        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
                        .await?;
                    Ok(())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The `db.system` of the trace's SQL spans.
    fn system(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Closes the connection instead of returning it to the pool: for one whose
    /// transaction state is unknown. The server rolls back what it left open.
    fn discard(self) {
        match self {
            Self::Postgres(pg) => drop(deadpool_postgres::Object::take(pg.client)),
            Self::Sqlite(connection) => drop(connection.detach()),
        }
    }
}

/// A transaction: statements run on it through [`Connection`]'s methods, and it
/// ends with [`Transaction::commit`]. Dropped without commit (an error, or the
/// request was cancelled), it is rolled back before the connection is reused.
pub struct Transaction {
    connection: Option<Connection>,
}

impl Transaction {
    /// # Errors
    /// See [`DbError`]; when the commit fails, nothing was written.
    pub async fn commit(mut self) -> Result<(), DbError> {
        self.finish("COMMIT").await
    }

    /// # Errors
    /// See [`DbError`].
    pub async fn rollback(mut self) -> Result<(), DbError> {
        self.finish("ROLLBACK").await
    }

    /// Runs the transaction's last statement and commits, on PostgreSQL in one
    /// round trip: were the statement to fail, the server answers the COMMIT
    /// behind it by rolling back, and the statement's error is returned.
    ///
    /// # Errors
    /// See [`DbError`]; on any error nothing was written.
    pub async fn execute_and_commit(
        mut self,
        sql: &str,
        params: &[&dyn SqlParam],
    ) -> Result<u64, DbError> {
        let mut guard = DiscardUnlessKept(self.connection.take());
        let Connection::Postgres(pg) = guard.get() else {
            self.connection = Some(guard.keep());
            let changed = self.execute(sql, params).await?;
            self.commit().await?;
            return Ok(changed);
        };
        let span = statement_span("postgresql", sql);
        let statement = match pg.client.prepare_cached(sql).instrument(span.clone()).await {
            Ok(statement) => statement,
            Err(err) => {
                // Nothing of it ran: back in the transaction, which rolls back as it drops.
                self.connection = Some(guard.keep());
                return Err(err.into());
            }
        };
        let params = postgres_params(params);
        let execute = pg.client.execute(&statement, &params).instrument(span);
        let commit = pg
            .client
            .batch_execute("COMMIT")
            .instrument(statement_span("postgresql", "COMMIT"));
        let (changed, committed) = after_begin(
            &pg.client,
            &mut pg.begin_pending,
            futures::future::join(execute, commit).map(Ok),
        )
        .await?;
        // Failed, the commit leaves the transaction's state unknown: the guard
        // closes the connection. A failed statement made the COMMIT a rollback.
        committed?;
        drop(guard.keep());
        Ok(changed?)
    }

    async fn finish(&mut self, sql: &str) -> Result<(), DbError> {
        let Some(connection) = self.connection.take() else {
            return Ok(());
        };
        if connection.nothing_sent() {
            return Ok(());
        }
        let mut guard = DiscardUnlessKept(Some(connection));
        // Failed, the transaction's state is unknown: the guard closes the connection.
        guard.get().batch(sql).await?;
        drop(guard.keep());
        Ok(())
    }
}

impl Deref for Transaction {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a live transaction has its connection")
    }
}

impl DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a live transaction has its connection")
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        if connection.nothing_sent() {
            return;
        }
        // Drop cannot wait, so the rollback runs on the runtime; without one (or
        // if the rollback fails) the connection is closed rather than reused.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if connection.batch("ROLLBACK").await.is_err() {
                        connection.discard();
                    }
                });
            }
            Err(_) => connection.discard(),
        }
    }
}

/// A connection between sending BEGIN, COMMIT or ROLLBACK and reading the
/// answer. If the request is cancelled there (a client that hangs up, a
/// timeout), the statement still runs, and a connection returned to the pool
/// could be inside a transaction nobody ends, holding SQLite's write lock or
/// swallowing the next user's writes: so unless kept, it is closed, not reused.
struct DiscardUnlessKept(Option<Connection>);

impl DiscardUnlessKept {
    fn get(&mut self) -> &mut Connection {
        self.0.as_mut().expect("the connection is held until kept")
    }

    fn keep(mut self) -> Connection {
        self.0.take().expect("the connection is held until kept")
    }
}

impl Drop for DiscardUnlessKept {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            connection.discard();
        }
    }
}

pub(super) fn postgres_params<'a>(params: &'a [&'a dyn SqlParam]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_postgres()).collect()
}

fn sqlite_query<'q>(
    sql: &'q str,
    params: &[&dyn SqlParam],
) -> Result<sqlx::query::Query<'q, Sqlite, SqliteArguments>, DbError> {
    let mut arguments = SqliteArguments::default();
    for param in params {
        param
            .bind_sqlite(&mut arguments)
            .map_err(|e| DbError::Other(format!("cannot encode a parameter: {e}")))?;
    }
    Ok(sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments))
}
