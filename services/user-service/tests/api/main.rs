//! One integration-test binary for user-service: real HTTP against the real
//! service, on SQLite and on PostgreSQL.

mod abuse;
mod access;
mod auth;
mod faults;
mod helpers;
mod idempotency;
mod lists;
mod operations;
mod shared_limit;
mod users;
