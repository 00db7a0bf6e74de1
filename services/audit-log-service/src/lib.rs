//! audit-log-service: the append-only record of every event of every service,
//! fed by a durable NATS JetStream consumer (or the launcher's in-process bus)
//! that stores each event exactly once, and read by admins over HTTP.

pub mod config;
pub mod consumer;
pub mod error;
pub mod model;
pub mod routes;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use config::AuditSettings;
use consumer::ConsumerMetrics;
use platform::app::{BackgroundTask, Composition, Service};
use platform::auth::{Verifier, failure_counter};
use platform::config::{ConfigError, Env};
use platform::db::{Database, Migrations};
use platform::server::Platform;

/// How long a JWKS fetch from user-service may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(2);

/// The audit-log service: its read API and the consumer that fills it.
#[derive(Debug, Clone)]
pub struct AuditLogService;

impl Service for AuditLogService {
    /// `AUDIT_LOG_SERVICE_USER_SERVICE_URL`, the shared `AUTH_*` verifier
    /// settings and `NATS_*`.
    type Settings = AuditSettings;
    type ApiDoc = routes::ApiDoc;
    const NAME: &'static str = "audit-log-service";
    const ABOUT: &'static str =
        "Append-only audit log: every event of every service, stored once, read by admins.";
    const ENV_PREFIX: &'static str = "AUDIT_LOG_SERVICE";
    const DEFAULT_PORT: u16 = 8083;
    const DEFAULT_DATABASE: &'static str = "auditdb";
    /// Versioned SQL, embedded in the binary. A new file is listed here too (a
    /// test compares the list with the folders).
    const MIGRATIONS: Migrations =
        platform::embed_migrations!["20261204000001_create_audit_logs.sql"];

    fn settings(env: &Env<'_>) -> Result<AuditSettings, ConfigError> {
        AuditSettings::from_env(env)
    }

    fn compose(config: AuditSettings, db: Database, platform: &Platform) -> Composition {
        let http = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            .no_proxy()
            .build()
            .expect("the HTTP client builds with static settings");
        let tokens = Arc::new(Verifier::with_jwks(
            config.auth.verifier.clone(),
            config.auth.jwks.url.clone(),
            http,
            failure_counter(&platform.metrics, Self::NAME),
        ));
        let (refresher, jwks_refresh) = (Arc::clone(&tokens), config.auth.jwks.refresh_interval);
        let metrics = ConsumerMetrics::register(&platform.metrics, Self::NAME);
        let source = if config.events.nats_url.is_some() {
            "nats"
        } else if config.events.in_process.is_some() {
            "in-process"
        } else {
            "none"
        };
        tracing::info!(jwks = %config.auth.jwks.url, events = source, "audit-log-service configured");
        let mut background: Vec<BackgroundTask> = vec![Box::new(move |shutdown| {
            refresher.spawn_refresh(jwks_refresh, shutdown)
        })];
        background.extend(consumer::tasks(&config.events, db.clone(), &metrics));
        Composition {
            api: routes::router(db).layer(tokens.layer()),
            // Informational: where events come from ("none" until NATS_URL is set).
            health_info: Some(Arc::new(move || json!({ "events": source }))),
            background,
        }
    }
}

/// Everything audit-log-service reads at start.
pub type Config = platform::app::Config<AuditLogService>;

/// A bound, ready-to-run audit-log-service.
pub type Application = platform::app::Application<AuditLogService>;

#[cfg(test)]
platform::service_tests!(crate::AuditLogService);
