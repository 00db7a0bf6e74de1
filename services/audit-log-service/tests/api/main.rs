//! One integration-test binary for audit-log-service: the real service over HTTP,
//! on SQLite and on PostgreSQL, and its consumer on a real NATS JetStream.

mod access;
mod append_only;
mod audit_logs;
mod helpers;
mod nats;
