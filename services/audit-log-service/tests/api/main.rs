//! One integration-test binary for audit-log-service: the real service over HTTP,
//! on SQLite and on PostgreSQL, its consumer on a real NATS JetStream, and the
//! three services together, and the trace they make together.

mod access;
mod append_only;
mod audit_logs;
mod helpers;
mod nats;
mod pipeline;
mod traces;
