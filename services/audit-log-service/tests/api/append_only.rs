//! The table itself refuses to change or lose an entry, whoever asks: not only
//! the API (which has no such route) but any SQL on the service's connection;
//! and on PostgreSQL the service can run as a role that could not even switch
//! the refusal off.

use platform::backend_tests;
use platform::testing::Backend;
use serde_json::json;

use crate::helpers::{AuditService, at, event};

backend_tests! {
    async fn the_table_refuses_update_and_delete(backend) {
        let audit = AuditService::start(backend).await;
        let stored = event("user.deleted", "operator", ("user", "9"), at(0, 0), json!({"id": 9}));
        audit.store(std::slice::from_ref(&stored)).await;
        let id = stored.id.to_string();
        // A connection of its own, as an operator (or an attacker) at a SQL prompt would have.
        let mut statements = vec![
            format!("UPDATE audit_logs SET actor_sub = 'someone-else' WHERE id = '{id}'"),
            "UPDATE audit_logs SET payload = '{}'".to_owned(),
            format!("DELETE FROM audit_logs WHERE id = '{id}'"),
            "DELETE FROM audit_logs".to_owned(),
        ];
        if backend == Backend::Postgres {
            statements.push("TRUNCATE audit_logs".to_owned());
        }
        for statement in statements {
            let err = raw_execute(backend, &audit.database.url, &statement).await.expect_err(&statement);
            assert!(err.contains("append-only"), "{statement}: {err}");
        }
        let sql = platform::testing::connect(&audit.database.url).await;
        let row = sql
            .query_one("SELECT actor_sub, payload, COUNT(*) OVER () AS n FROM audit_logs", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<String>("actor_sub").unwrap(), "operator");
        assert_eq!(row.get::<String>("payload").unwrap(), r#"{"id":9}"#);
        assert_eq!(row.get::<i64>("n").unwrap(), 1);
        // Inserting stays possible, and a second insert of the same id is a no-op, not an update.
        let again = sql
            .execute(
                "INSERT INTO audit_logs (id, action, actor_sub, actor_roles, resource_type, resource_id, \
                 occurred_at, payload, recorded_at) \
                 SELECT id, 'forged', 'x', '[]', 'x', 'x', occurred_at, '{}', recorded_at FROM audit_logs \
                 WHERE TRUE ON CONFLICT (id) DO NOTHING",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(again, 0);
        sql.close().await;
        let entry = audit.get(&format!("/api/v1/audit-logs/{id}")).await;
        assert_eq!(entry.body["data"]["action"], "user.deleted");
    }
}

/// Runs one statement on a connection of its own, with the database's own
/// error message (the service's error type keeps only what a caller needs).
async fn raw_execute(backend: Backend, url: &str, statement: &str) -> Result<u64, String> {
    match backend {
        Backend::Postgres => {
            let client = postgres(url).await;
            client.execute(statement, &[]).await.map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), ToString::to_string)
            })
        }
        // sqlx's SQLite errors carry SQLite's message.
        Backend::Sqlite => {
            let sql = platform::testing::connect(url).await;
            let outcome = sql.execute(statement, &[]).await.map_err(|e| e.to_string());
            sql.close().await;
            outcome
        }
    }
}

/// A tokio-postgres connection: unlike the services' pool, its errors keep
/// PostgreSQL's message, and it runs several statements in one batch.
async fn postgres(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A PostgreSQL role of its own, dropped after the databases it was granted on.
struct Role(String);

impl Role {
    async fn create(grants_in: &str) -> Self {
        let name = format!("audit_writer_{}", uuid::Uuid::new_v4().simple());
        postgres(&platform::testing::admin_url())
            .await
            .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
            .await
            .expect("role created");
        // What the service needs: check the migrations at start, read and insert.
        let grants = format!(
            "GRANT USAGE, CREATE ON SCHEMA public TO {name}; \
             GRANT SELECT ON _sqlx_migrations TO {name}; \
             GRANT SELECT, INSERT ON audit_logs TO {name};"
        );
        postgres(grants_in)
            .await
            .batch_execute(&grants)
            .await
            .expect("grants");
        Self(name)
    }

    /// The database URL `url` with this role as its user.
    fn url(&self, url: &str) -> String {
        let (_, rest) = url.split_once('@').expect("a URL with a user");
        format!("postgres://{}@{rest}", self.0)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let sql = format!("DROP ROLE IF EXISTS {}", self.0);
        platform::testing::block_on_own_thread(async move {
            let admin = platform::testing::admin_url();
            if let Ok((server, connection)) =
                tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                let _ = server.batch_execute(&sql).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_service_runs_as_a_role_that_cannot_switch_the_refusal_off() {
    // Migrated by the owner (the role the test database belongs to), as a migration Job would.
    let owner = AuditService::start(Backend::Postgres).await;
    let owner_url = owner.database.url.clone();
    let role = Role::create(&owner_url).await;
    let audit = owner
        .restart_with(&[("AUDIT_LOG_SERVICE_DATABASE_URL", role.url(&owner_url))])
        .await;
    let stored = event(
        "order.deleted",
        "operator",
        ("order", "3"),
        at(0, 0),
        json!({"id": 3}),
    );
    audit.store(std::slice::from_ref(&stored)).await;
    let listed = audit.get("/api/v1/audit-logs").await;
    assert_eq!(
        listed.body["data"][0]["id"],
        stored.id.to_string(),
        "{}",
        listed.body
    );
    let url = role.url(&owner_url);
    for statement in [
        "ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only",
        "DROP TRIGGER audit_logs_append_only ON audit_logs",
        "DELETE FROM audit_logs",
        "UPDATE audit_logs SET action = 'forged'",
    ] {
        let err = raw_execute(Backend::Postgres, &url, statement)
            .await
            .expect_err(statement);
        assert!(
            err.contains("must be owner") || err.contains("permission denied"),
            "{statement}: {err}"
        );
    }
    drop(audit);
}
