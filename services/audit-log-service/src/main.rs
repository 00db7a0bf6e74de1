//! `audit-log-service [migrate | --print-openapi | --help]`: serve the audit log
//! and consume events, only apply migrations, or print the OpenAPI document.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::run_service::<audit_log_service::AuditLogService>().await
}
