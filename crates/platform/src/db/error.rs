//! Why a statement failed, sorted by what the caller should answer.

use tokio_postgres::error::SqlState;

/// Why a statement failed, sorted by what the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot serve right now (down, restarting, pool exhausted): a 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique index refused the row. `constraint` names it, so a caller maps
    /// only the index it expects (a second unique index never reads as the first).
    #[error("unique constraint {constraint} violated: {message}")]
    UniqueViolation { constraint: String, message: String },
    /// Anything else is a bug in a query or a schema: a 500.
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    /// Whether this is a violation of the unique index `index`. PostgreSQL names
    /// the index; SQLite names only the columns (`users.email`), which the caller
    /// gives as `sqlite_columns`.
    pub fn violates(&self, index: &str, sqlite_columns: &str) -> bool {
        matches!(self, Self::UniqueViolation { constraint, .. }
            if constraint == index || constraint == sqlite_columns)
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        let text = err.to_string();
        match err.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => Self::UniqueViolation {
                constraint: err
                    .as_db_error()
                    .and_then(|e| e.constraint())
                    .unwrap_or_default()
                    .to_owned(),
                message: text,
            },
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
                Self::UniqueViolation {
                    constraint: db
                        .constraint()
                        .map(str::to_owned)
                        .unwrap_or_else(|| sqlite_unique_columns(db.message())),
                    message: text,
                }
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
/// SQLite reports no constraint name, only `UNIQUE constraint failed: users.email`.
fn sqlite_unique_columns(message: &str) -> String {
    message
        .strip_prefix("UNIQUE constraint failed: ")
        .unwrap_or(message)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_matches_only_its_own_index() {
        let email = DbError::UniqueViolation {
            constraint: "users_email_live_key".to_owned(),
            message: String::new(),
        };
        assert!(email.violates("users_email_live_key", "users.email"));
        assert!(!email.violates("users_handle_key", "users.handle"));
        let sqlite = DbError::UniqueViolation {
            constraint: sqlite_unique_columns("UNIQUE constraint failed: users.email"),
            message: String::new(),
        };
        assert!(sqlite.violates("users_email_live_key", "users.email"));
        assert!(!DbError::Other("x".to_owned()).violates("users_email_live_key", "users.email"));
    }
}
