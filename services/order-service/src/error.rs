//! What can go wrong with orders, and how each answers (mapped once, here).

use platform::ApiError;
use platform::db::DbError;

use crate::model::OrderStatus;

/// An order operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// 404: no live order has this id.
    #[error("order {0} not found")]
    NotFound(i64),
    /// 409: the state machine forbids this change.
    #[error("cannot change order status from {from} to {to}")]
    Transition { from: OrderStatus, to: OrderStatus },
    /// 409: another request set the same status between our read and our write.
    #[error("order was concurrently changed to {0}")]
    ConcurrentlyChanged(OrderStatus),
    /// 404: user-service says the user does not exist.
    #[error("user not found")]
    UserNotFound,
    /// 400: user-service says the user is not active.
    #[error("user is not active")]
    UserNotActive,
    /// 503 or 500, as the platform maps database errors.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<OrderError> for ApiError {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::NotFound(_) | OrderError::UserNotFound => Self::NotFound(err.to_string()),
            OrderError::Transition { .. } | OrderError::ConcurrentlyChanged(_) => {
                Self::Conflict(err.to_string())
            }
            OrderError::UserNotActive => Self::BadRequest(err.to_string()),
            OrderError::Database(db) => db.into(),
        }
    }
}
