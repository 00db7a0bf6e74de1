//! The shared platform of the services: the envelope and error type, extractors,
//! configuration helpers, database connection and migrations, telemetry, metrics,
//! rate limiting, health probes and the server with graceful shutdown.
//!
//! It is a small library, not a framework: each service builds its own router and
//! hands it to [`server::Platform::app`] for the common middleware stack.

pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod cursor;
pub mod db;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod otel;
pub mod pagination;
pub mod query;
pub mod rate_limit;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timestamp;
pub mod validation;

pub use auth::Caller;
pub use body::ApiJson;
pub use error::{ApiError, ApiResponse, ApiResult, FieldError};
pub use extract::{PathId, RequestId};
pub use pagination::{PageMeta, PageRequest};
pub use query::ListQuery;
