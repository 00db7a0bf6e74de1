//! A database of its own for each test, on either backend.

use tokio_postgres::NoTls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Server for the PostgreSQL tests; `TEST_DATABASE_URL` overrides it.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A connection to the server's administrative database.
async fn admin() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A database that exists for one test: a temp SQLite file, or a randomly named
/// PostgreSQL database dropped (with its connections) when this value drops.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        name: String,
    },
    /// Someone else's (a [`TemporaryPostgres`] the test owns): nothing to drop.
    None,
}

impl TestDatabase {
    /// # Panics
    /// When PostgreSQL is requested and cannot be reached: those tests fail, never skip.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite:{}", dir.path().join("test.db").display());
                Self {
                    url,
                    cleanup: Cleanup::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = admin_url();
                let admin = admin().await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL tests need a server at {admin_url} (set TEST_DATABASE_URL): {e}"
                    )
                });
                let name = format!("test_{}", uuid::Uuid::new_v4().simple());
                // The name is ours (a UUID), so formatting it into SQL is safe.
                admin
                    .batch_execute(&format!(r#"CREATE DATABASE "{name}""#))
                    .await
                    .expect("create test database");
                let (base, _) = admin_url
                    .rsplit_once('/')
                    .expect("admin url names a database");
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { name },
                }
            }
        }
    }
}

impl TestDatabase {
    /// A database the test manages itself; dropping this leaves it alone.
    pub fn external(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            cleanup: Cleanup::None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { name } = &self.cleanup {
            let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
            super::block_on_own_thread(async move {
                if let Ok(admin) = admin().await {
                    let _ = admin.batch_execute(&sql).await;
                }
            });
        }
    }
}

/// A pool on the database at `url` (`postgres://…` or `sqlite:…`), for tests that
/// read what a service stored, bypassing it.
///
/// # Panics
/// When the URL is not one the services accept or the database cannot be reached.
pub async fn connect(url: &str) -> crate::db::Database {
    let lookup = |name: &str| (name == "T_DATABASE_URL").then(|| url.to_owned());
    let env = crate::config::Env::new("T", &lookup);
    let settings =
        crate::db::DatabaseSettings::from_env(&env, "test", "test").expect("a database URL");
    crate::db::connect(&settings)
        .await
        .expect("direct connection")
}

/// The `n` that `sql` (`SELECT count(*) AS n …`) answers on the database at
/// `url`, over a connection of its own (bypassing the service).
///
/// # Panics
/// When the database cannot be reached or the query fails.
pub async fn count_rows(url: &str, sql: &str) -> i64 {
    let db = connect(url).await;
    let n = db
        .query_one(sql, &[])
        .await
        .expect("count")
        .get("n")
        .expect("n");
    db.close().await;
    n
}

/// How many events in the outbox of the database at `url` the relay has yet to publish.
pub async fn unpublished_events(url: &str) -> i64 {
    count_rows(
        url,
        "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
    )
    .await
}

/// Every event in the outbox of the database at `url`, oldest first, as written
/// (as [`crate::events::Event`]s or JSON values).
///
/// # Panics
/// When the outbox cannot be read or an event is not a `T`.
pub async fn outbox_events<T: serde::de::DeserializeOwned>(url: &str) -> Vec<T> {
    let db = connect(url).await;
    let rows = db
        .query("SELECT event FROM outbox ORDER BY seq", &[])
        .await
        .expect("read the outbox");
    db.close().await;
    rows.iter()
        .map(|row| {
            serde_json::from_str(&row.get::<String>("event").expect("event")).expect("an event")
        })
        .collect()
}

/// Asserts that `migrations` embed exactly the files of the service's
/// `migrations/postgres` and `migrations/sqlite`, plus the platform's shared ones
/// it lists ([`crate::db::shared`]), with the versions, descriptions and checksums
/// sqlx reads from those folders (what `sqlx::migrate!` embedded before, so
/// databases migrated by an older build still validate).
///
/// # Panics
/// When a file is missing from the list, listed but absent, or read differently.
pub fn assert_migrations_embedded(manifest_dir: &str, migrations: crate::db::Migrations) {
    let read = |m: &sqlx::migrate::Migration| {
        let m = m.clone();
        (
            m.version,
            m.description,
            m.migration_type,
            m.checksum,
            m.no_tx,
        )
    };
    for (folder, files) in [
        ("postgres", migrations.postgres),
        ("sqlite", migrations.sqlite),
    ] {
        let resolve = |root: &str| {
            let dir = std::path::Path::new(root).join("migrations").join(folder);
            sqlx::migrate::resolve_blocking(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        };
        let listed = |path: &std::path::Path| {
            let name = path.file_name().and_then(|name| name.to_str());
            files.iter().any(|file| Some(file.name) == name)
        };
        let mut on_disk: Vec<_> = resolve(manifest_dir).iter().map(|(m, _)| read(m)).collect();
        for (m, path) in resolve(env!("CARGO_MANIFEST_DIR")) {
            if listed(&path) && !on_disk.iter().any(|own| own.0 == m.version) {
                on_disk.push(read(&m));
            }
        }
        on_disk.sort_by_key(|m| m.0);
        let migrator = crate::db::migrator(files).expect("well-named migrations");
        let embedded: Vec<_> = migrator.iter().map(read).collect();
        assert_eq!(
            embedded, on_disk,
            "migrations/{folder}: list every file, in order"
        );
    }
}

/// Asserts that `columns` (a row type's `COLUMNS`) names every column of
/// `table`, as the stored row `id` has them.
///
/// # Panics
/// When the row cannot be read or the lists differ.
pub async fn assert_column_list(db: &crate::db::Database, table: &str, id: i64, columns: &str) {
    let row = db
        .query_one(&format!("SELECT * FROM {table} WHERE id = $1"), &[&id])
        .await
        .expect("the stored row");
    let mut in_table = row.column_names();
    in_table.sort();
    let mut listed: Vec<&str> = columns.split(", ").collect();
    listed.sort_unstable();
    assert_eq!(
        in_table, listed,
        "the column list names every column of {table}"
    );
}
