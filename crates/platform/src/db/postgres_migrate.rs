//! sqlx's migrator over a tokio-postgres connection.
//!
//! The statements, table and advisory lock are those of sqlx-postgres's own
//! implementation of `Migrate`, so a database migrated by either validates with
//! the other. PostgreSQL is then reached by one driver, and sqlx's PostgreSQL
//! driver, which was compiled only to run migrations, is not compiled at all.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::migrate::{AppliedMigration, Migrate, MigrateError, Migration};
use tokio_postgres::types::ToSql;

/// One PostgreSQL connection, migrating.
pub(super) struct PostgresMigrate(tokio_postgres::Client);

/// sqlx's errors hold a driver error as a source only through `Io`.
fn driver(error: tokio_postgres::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(error))
}

fn failed(error: tokio_postgres::Error) -> MigrateError {
    MigrateError::Execute(driver(error))
}

impl PostgresMigrate {
    pub(super) fn new(client: tokio_postgres::Client) -> Self {
        Self(client)
    }

    async fn batch(&self, sql: &str) -> Result<(), MigrateError> {
        self.0.batch_execute(sql).await.map_err(failed)
    }

    /// `pg_advisory_lock` / `pg_advisory_unlock` on sqlx-postgres's lock id,
    /// derived from the database name: every migrator of one database, sqlx's
    /// included, waits for the one holding it.
    async fn advisory(&self, function: &str) -> Result<(), MigrateError> {
        const CRC_32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
        let row = self
            .0
            .query_one("SELECT current_database()", &[])
            .await
            .map_err(failed)?;
        let database: String = row.get(0);
        let id = 0x3d32_ad9e * i64::from(CRC_32.checksum(database.as_bytes()));
        let sql = format!("SELECT {function}($1)");
        self.0.execute(&sql, &[&id]).await.map_err(failed)?;
        Ok(())
    }

    /// Runs `migration`'s SQL and records it, in one transaction unless the
    /// migration opts out; returns how long that took.
    async fn run(&mut self, table: &str, migration: &Migration) -> Result<Duration, MigrateError> {
        let started = Instant::now();
        let record = format!(
            "INSERT INTO {table} (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, -1)"
        );
        let description: &str = &migration.description;
        let checksum: &[u8] = &migration.checksum;
        let params: [&(dyn ToSql + Sync); 3] = [&migration.version, &description, &checksum];
        let sql = migration.sql.as_str();
        let in_migration = |e| MigrateError::ExecuteMigration(driver(e), migration.version);
        if migration.no_tx {
            self.0.batch_execute(sql).await.map_err(in_migration)?;
            self.0.execute(&record, &params).await.map_err(failed)?;
        } else {
            let transaction = self.0.transaction().await.map_err(failed)?;
            transaction.batch_execute(sql).await.map_err(in_migration)?;
            transaction
                .execute(&record, &params)
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)?;
        }
        Ok(started.elapsed())
    }
}

impl Migrate for PostgresMigrate {
    fn create_schema_if_not_exists<'e>(
        &'e mut self,
        schema: &'e str,
    ) -> BoxFuture<'e, Result<(), MigrateError>> {
        Box::pin(async move {
            self.batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema};"))
                .await
        })
    }

    fn ensure_migrations_table<'e>(
        &'e mut self,
        table: &'e str,
    ) -> BoxFuture<'e, Result<(), MigrateError>> {
        Box::pin(async move {
            self.batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    version BIGINT PRIMARY KEY,
                    description TEXT NOT NULL,
                    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
                    success BOOLEAN NOT NULL,
                    checksum BYTEA NOT NULL,
                    execution_time BIGINT NOT NULL
                );"
            ))
            .await
        })
    }

    fn dirty_version<'e>(
        &'e mut self,
        table: &'e str,
    ) -> BoxFuture<'e, Result<Option<i64>, MigrateError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT version FROM {table} WHERE success = false ORDER BY version LIMIT 1"
            );
            let row = self.0.query_opt(&sql, &[]).await.map_err(failed)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn list_applied_migrations<'e>(
        &'e mut self,
        table: &'e str,
    ) -> BoxFuture<'e, Result<Vec<AppliedMigration>, MigrateError>> {
        Box::pin(async move {
            let sql = format!("SELECT version, checksum FROM {table} ORDER BY version");
            let rows = self.0.query(&sql, &[]).await.map_err(failed)?;
            Ok(rows
                .iter()
                .map(|row| AppliedMigration {
                    version: row.get(0),
                    checksum: row.get::<_, Vec<u8>>(1).into(),
                })
                .collect())
        })
    }

    fn lock(&mut self) -> BoxFuture<'_, Result<(), MigrateError>> {
        Box::pin(self.advisory("pg_advisory_lock"))
    }

    fn unlock(&mut self) -> BoxFuture<'_, Result<(), MigrateError>> {
        Box::pin(self.advisory("pg_advisory_unlock"))
    }

    fn apply<'e>(
        &'e mut self,
        table: &'e str,
        migration: &'e Migration,
    ) -> BoxFuture<'e, Result<Duration, MigrateError>> {
        Box::pin(async move {
            let elapsed = self.run(table, migration).await?;
            let nanos = i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
            let sql = format!("UPDATE {table} SET execution_time = $1 WHERE version = $2");
            let params: [&(dyn ToSql + Sync); 2] = [&nanos, &migration.version];
            self.0.execute(&sql, &params).await.map_err(failed)?;
            Ok(elapsed)
        })
    }

    /// Never called: only simple (up) migrations are embedded
    /// (`MigrationFile::migration` refuses `.down.sql`) and nothing undoes them.
    fn revert<'e>(
        &'e mut self,
        _: &'e str,
        migration: &'e Migration,
    ) -> BoxFuture<'e, Result<Duration, MigrateError>> {
        let refused = MigrateError::VersionNotPresent(migration.version);
        Box::pin(std::future::ready(Err(refused)))
    }
}
