//! A span per SQL statement, named by what it does (`SELECT users`), never by
//! its values: the statement's text and parameters stay out of the trace.

use tracing::{Level, Span};

/// The span of one statement on `system` (`postgresql`, `sqlite`). Debug level:
/// it exists only when traces are exported, and then costs the naming below;
/// its fields are given at creation, since each one recorded later is another
/// pass through every layer.
pub(super) fn statement_span(system: &'static str, sql: &str) -> Span {
    if !tracing::enabled!(Level::DEBUG) {
        return Span::none();
    }
    let (operation, table) = summary(sql);
    let name = match table {
        Some(table) => format!("{operation} {table}"),
        None => operation.clone(),
    };
    tracing::debug_span!(
        "sql",
        otel.name = name,
        otel.kind = "client",
        db.system = system,
        db.operation.name = operation,
        db.collection.name = table,
    )
}

/// The statement's operation (`SELECT`, `INSERT`, `BEGIN`, ...) and the table it
/// works on: the word after `FROM`, `INTO` or `UPDATE`. Only keywords and
/// identifiers of the statement's text, which holds `$n` placeholders, never values.
fn summary(sql: &str) -> (String, Option<&str>) {
    let mut words = sql.split_whitespace();
    let operation = words.next().unwrap_or("SQL").to_ascii_uppercase();
    let after = match operation.as_str() {
        "UPDATE" => Some(None),
        "INSERT" => Some(Some("INTO")),
        "SELECT" | "DELETE" | "WITH" => Some(Some("FROM")),
        _ => None,
    };
    let table = match after {
        Some(None) => words.next(),
        Some(Some(keyword)) => words
            .by_ref()
            .skip_while(|w| !w.eq_ignore_ascii_case(keyword))
            .nth(1),
        None => None,
    };
    // A subquery or a placeholder is no table name.
    let table = table
        .filter(|t| !t.starts_with(['(', '$']))
        .map(|t| t.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')))
        .filter(|t| !t.is_empty());
    (operation, table)
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn statements_are_named_by_operation_and_table_only() {
        let cases = [
            (
                "SELECT id, email FROM users WHERE email = $1",
                "SELECT",
                Some("users"),
            ),
            (
                "insert into outbox (event_id) VALUES ($1)",
                "INSERT",
                Some("outbox"),
            ),
            (
                "UPDATE orders SET status = $2 WHERE id = $1",
                "UPDATE",
                Some("orders"),
            ),
            (
                "DELETE FROM outbox WHERE published_at < $1",
                "DELETE",
                Some("outbox"),
            ),
            ("BEGIN IMMEDIATE", "BEGIN", None),
            ("SELECT 1 AS one", "SELECT", None),
            ("SELECT count(*) AS n FROM (SELECT 1) t", "SELECT", None),
        ];
        for (sql, operation, table) in cases {
            assert_eq!(summary(sql), (operation.to_owned(), table), "{sql}");
        }
    }
}
