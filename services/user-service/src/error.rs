//! What can go wrong with users, and how each answers (mapped once, here).

use platform::ApiError;
use platform::db::DbError;

/// A store operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// 404: no live user has this id.
    #[error("user {0} not found")]
    NotFound(i64),
    /// 409: a live user already has this (lower-cased) email.
    #[error("a user with email {0} already exists")]
    EmailTaken(String),
    /// 503 or 500, as the platform maps database errors.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<UserError> for ApiError {
    fn from(err: UserError) -> Self {
        match err {
            UserError::NotFound(_) => Self::NotFound(err.to_string()),
            UserError::EmailTaken(_) => Self::Conflict(err.to_string()),
            UserError::Database(db) => db.into(),
        }
    }
}
