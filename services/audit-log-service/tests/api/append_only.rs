//! The table itself refuses to change or lose an entry, whoever asks: not only
//! the API (which has no such route) but any SQL on the service's connection.

use platform::backend_tests;
use platform::testing::Backend;
use serde_json::json;
use sqlx::Connection;

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
    let statement = sqlx::AssertSqlSafe(statement.to_owned());
    let outcome = match backend {
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::raw_sql(statement)
                .execute(&mut connection)
                .await
                .map(|r| r.rows_affected())
        }
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::raw_sql(statement)
                .execute(&mut connection)
                .await
                .map(|r| r.rows_affected())
        }
    };
    outcome.map_err(|e| e.to_string())
}
