//! Embedded migrations and applying them. The SQL files are compiled in with
//! `include_str!` ([`embed_migrations!`](crate::embed_migrations)) and turned into
//! sqlx's `Migrator` here, rather than by `sqlx::migrate!`: that macro needs
//! sqlx's `macros` feature, which builds sqlx a second time (SQLite's C library
//! included) for the compiler. Versions, descriptions and checksums are the ones
//! `sqlx::migrate!` computes (sqlx's own `Migration::new`), so databases migrated
//! before still validate; `platform::testing::assert_migrations_embedded` proves it
//! against sqlx's reading of the directory. sqlx's migrator applies them: over a
//! sqlx SQLite pool, and over a tokio-postgres connection on PostgreSQL
//! ([`PostgresMigrate`]).

use std::borrow::Cow;

use anyhow::Context;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use tokio_postgres::NoTls;

use super::postgres_migrate::PostgresMigrate;
use super::{Database, DatabaseSettings, DatabaseTarget};

/// One embedded migration: its file name (`<version>_<description>.sql`) and SQL.
#[derive(Debug, Clone, Copy)]
pub struct MigrationFile {
    pub name: &'static str,
    pub sql: &'static str,
}

/// The embedded migrations of one service, one set per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static [MigrationFile],
    pub sqlite: &'static [MigrationFile],
}

/// Embeds the calling crate's migrations, in order: each file exists under the
/// same name in `migrations/postgres` and in `migrations/sqlite`, so the two
/// schemas move together. An UPPER_CASE name instead of a file is one of the
/// platform's own tables, kept in the service's database ([`shared`]).
/// `embed_migrations!["20261124000001_create_users.sql", OUTBOX]`
#[macro_export]
macro_rules! embed_migrations {
    (@file "postgres", $shared:ident) => {
        $crate::db::shared::$shared.postgres
    };
    (@file "sqlite", $shared:ident) => {
        $crate::db::shared::$shared.sqlite
    };
    (@file $backend:literal, $file:literal) => {
        $crate::db::MigrationFile {
            name: $file,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $backend,
                "/",
                $file
            )),
        }
    };
    ($($entry:tt),* $(,)?) => {
        $crate::db::Migrations {
            postgres: &[$($crate::embed_migrations!(@file "postgres", $entry)),*],
            sqlite: &[$($crate::embed_migrations!(@file "sqlite", $entry)),*],
        }
    };
}

/// The migrations of the platform's own tables (`crates/platform/migrations`),
/// which every service using that part lists in its [`embed_migrations!`]. The
/// files kept the versions and names they had in each service's folder, so
/// databases that applied them there still validate.
pub mod shared {
    use super::MigrationFile;

    /// One platform migration, in both backends' SQL.
    #[derive(Debug, Clone, Copy)]
    pub struct SharedMigration {
        pub postgres: MigrationFile,
        pub sqlite: MigrationFile,
    }

    macro_rules! shared_migration {
        ($file:literal) => {
            SharedMigration {
                postgres: crate::embed_migrations!(@file "postgres", $file),
                sqlite: crate::embed_migrations!(@file "sqlite", $file),
            }
        };
    }

    /// The transactional outbox the relay publishes from ([`crate::events::outbox`]).
    pub const OUTBOX: SharedMigration = shared_migration!("20261203000002_outbox.sql");

    /// The claimed keys and stored answers of [`crate::idempotency`].
    pub const IDEMPOTENCY_KEYS: SharedMigration =
        shared_migration!("20261206000001_idempotency_keys.sql");

    /// The W3C trace context carried by each outbox event.
    pub const OUTBOX_TRACE_CONTEXT: SharedMigration =
        shared_migration!("20261215000001_outbox_trace_context.sql");

    /// Every platform migration (a test compares the list with the folders).
    pub const ALL: [SharedMigration; 3] = [OUTBOX, IDEMPOTENCY_KEYS, OUTBOX_TRACE_CONTEXT];
}

impl MigrationFile {
    /// The migration as sqlx reads it from a file of this name: the version before
    /// the first `_`, the rest without `.sql` and with spaces for `_`, and a
    /// transaction unless the file starts with `-- no-transaction`.
    ///
    /// # Errors
    /// When the name is not `<integer>_<description>.sql`, or names a reversible
    /// (`.up.sql` / `.down.sql`) migration, which we do not use.
    pub fn migration(&self) -> anyhow::Result<Migration> {
        let parsed = self.name.split_once('_').and_then(|(version, rest)| {
            let description = rest.strip_suffix(".sql")?;
            let reversible = description.ends_with(".up") || description.ends_with(".down");
            Some((version.parse::<i64>().ok()?, description)).filter(|_| !reversible)
        });
        let (version, description) = parsed.with_context(|| {
            format!(
                "migration {:?} is not named <version>_<description>.sql",
                self.name
            )
        })?;
        Ok(Migration::new(
            version,
            Cow::Owned(description.replace('_', " ")),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(self.sql),
            self.sql.starts_with("-- no-transaction"),
        ))
    }
}

/// sqlx's migrator over `files` (its defaults, as `sqlx::migrate!` builds it).
///
/// # Errors
/// When a file name is malformed (see [`MigrationFile::migration`]).
pub fn migrator(files: &[MigrationFile]) -> anyhow::Result<Migrator> {
    let migrations = files
        .iter()
        .map(MigrationFile::migration)
        .collect::<anyhow::Result<_>>()?;
    Ok(Migrator::with_migrations(migrations))
}

/// Applies pending migrations for whichever backend `db` is.
pub async fn migrate(
    settings: &DatabaseSettings,
    db: &Database,
    migrations: Migrations,
) -> anyhow::Result<()> {
    match (&settings.target, db) {
        (DatabaseTarget::Postgres(config), _) => {
            let migrator = migrator(migrations.postgres)?;
            let mut config = config.clone();
            if config.get_application_name().is_none() {
                config.application_name("migrations");
            }
            let (client, connection) = config
                .connect(NoTls)
                .await
                .context("connecting to apply PostgreSQL migrations")?;
            let connection = tokio::spawn(connection);
            // `Migrator::run` takes only sqlx's own connections; `run_direct` is what it calls.
            migrator
                .run_direct(None, &mut PostgresMigrate::new(client), false)
                .await
                .context("applying PostgreSQL migrations")?;
            // The client is gone: the connection closes and its task ends.
            let _ = connection.await;
        }
        (DatabaseTarget::Sqlite(_), Database::Sqlite(pool)) => migrator(migrations.sqlite)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_read_as_sqlx_reads_them() {
        let file = MigrationFile {
            name: "20261124000001_create_users_table.sql",
            sql: "-- no-transaction\nCREATE INDEX x ON t (c);\n",
        };
        let migration = file.migration().unwrap();
        assert_eq!(migration.version, 20261124000001);
        assert_eq!(migration.description, "create users table");
        assert_eq!(migration.migration_type, MigrationType::Simple);
        assert!(migration.no_tx);
    }

    #[test]
    fn every_platform_migration_file_is_shared_as_sqlx_reads_it() {
        let read = |m: &Migration| (m.version, m.description.clone(), m.checksum.clone());
        let on_disk = |folder: &str| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(folder);
            let mut found: Vec<_> = sqlx::migrate::resolve_blocking(&dir)
                .unwrap()
                .iter()
                .map(|(m, _)| read(m))
                .collect();
            found.sort();
            found
        };
        let listed = |files: [MigrationFile; 3]| -> Vec<_> {
            migrator(&files).unwrap().iter().map(read).collect()
        };
        assert_eq!(listed(shared::ALL.map(|m| m.postgres)), on_disk("postgres"));
        assert_eq!(listed(shared::ALL.map(|m| m.sqlite)), on_disk("sqlite"));
    }

    #[test]
    fn malformed_and_reversible_names_are_refused() {
        for name in [
            "create.sql",
            "v1_create.sql",
            "1_create.txt",
            "1_create.up.sql",
        ] {
            let file = MigrationFile { name, sql: "" };
            assert!(file.migration().is_err(), "{name}");
        }
    }
}
