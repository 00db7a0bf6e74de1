//! The shared platform of the services: the envelope and error type, extractors,
//! configuration helpers, database connection and migrations, telemetry, metrics,
//! rate limiting, health probes and the server with graceful shutdown.
//!
//! It is a small library, not a framework: each service builds its own router and
//! hands it to [`server::Platform::app`] for the common middleware stack.

pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ApiError, ApiResponse, ApiResult, FieldError, PageMeta};
pub use extract::{ApiJson, PageRequest, PathId, QueryParams, RequestId};
