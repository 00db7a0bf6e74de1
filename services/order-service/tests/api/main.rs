//! One integration-test binary for order-service: real HTTP between real services,
//! on SQLite and on PostgreSQL.

mod abuse;
mod access;
mod bus_faults;
mod events;
mod faults;
mod helpers;
mod idempotency;
mod lists;
mod orders;
mod resilience;
mod shutdown;
mod user_cache;
