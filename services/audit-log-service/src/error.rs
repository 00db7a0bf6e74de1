//! What can go wrong reading the audit log, and how each answers (mapped once, here).

use platform::ApiError;
use platform::db::DbError;
use uuid::Uuid;

/// An audit-log read's failure.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// 404: no entry has this event id.
    #[error("audit entry {0} not found")]
    NotFound(Uuid),
    /// 503 or 500, as the platform maps database errors.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<AuditError> for ApiError {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::NotFound(_) => Self::NotFound(err.to_string()),
            AuditError::Database(db) => db.into(),
        }
    }
}
