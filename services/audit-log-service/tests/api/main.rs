//! One integration-test binary for audit-log-service: the real service over HTTP,
//! on SQLite and on PostgreSQL, its consumer on a real NATS JetStream, and the
//! three services together (their traces: the `traces` test binary).

mod access;
mod append_only;
mod audit_logs;
mod helpers;
mod nats;
mod pipeline;
mod system;
mod traces;
