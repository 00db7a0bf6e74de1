//! user-service: user management over PostgreSQL or embedded SQLite, and the
//! identity provider every service trusts.
//!
//! [`Application::build`] connects, migrates, binds and returns the bound
//! address, so tests run it on port 0 exactly as `main` runs it on 8081.

pub mod auth;
pub mod error;
pub mod model;
pub mod password;
pub mod routes;
pub mod search;
pub mod store;

use std::sync::Arc;

use axum::extract::FromRef;
use platform::app::{Composition, Service};
use platform::auth::{KeySet, Verifier, failure_counter};
use platform::config::{ConfigError, Env};
use platform::db::{Database, DatabaseSettings, Migrations};
use platform::events::EventSettings;
use platform::events::relay::{self, OutboxMetrics};
use platform::server::Platform;

use auth::IdentityProvider;
use auth::config::AuthConfig;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub auth: Arc<IdentityProvider>,
    /// Idempotency keys on `POST /api/v1/users`, fingerprinted with a key derived
    /// from the operator client's secret.
    pub idempotency: platform::idempotency::Guard,
}

/// Handlers that need only the database take `State<Database>`.
impl FromRef<AppState> for Database {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

/// user-service's own settings: the identity provider's and where its events go.
#[derive(Debug, Clone)]
pub struct UserSettings {
    pub auth: AuthConfig,
    pub events: EventSettings,
}

/// The user service: its API over its database, the identity provider, and the
/// relay of its outbox.
#[derive(Debug, Clone)]
pub struct UserService;

impl Service for UserService {
    /// The identity provider's settings (`AUTH_*`, `USER_SERVICE_OPEN_REGISTRATION`)
    /// and the bus (`NATS_*`); the rest is what every service reads
    /// (`USER_SERVICE_*`, as the contract).
    type Settings = UserSettings;
    type ApiDoc = routes::ApiDoc;
    const NAME: &'static str = "user-service";
    const ABOUT: &'static str = "User management and identity: users over PostgreSQL or embedded SQLite, tokens for every service.";
    const ENV_PREFIX: &'static str = "USER_SERVICE";
    const DEFAULT_PORT: u16 = 8081;
    const DEFAULT_DATABASE: &'static str = "userdb";
    /// Versioned SQL, embedded in the binary: its own files and the platform's
    /// outbox and idempotency tables. A new file is listed here too (a test
    /// compares the list with the folders).
    const MIGRATIONS: Migrations = platform::embed_migrations![
        "20261124000001_create_users.sql",
        "20261203000001_identity.sql",
        OUTBOX,
        "20261205000001_search.sql",
        IDEMPOTENCY_KEYS,
        OUTBOX_TRACE_CONTEXT,
    ];

    fn settings(env: &Env<'_>) -> Result<UserSettings, ConfigError> {
        // Where the database is decides whether secrets may be generated.
        let database = DatabaseSettings::from_env(env, Self::DEFAULT_DATABASE, Self::NAME)?;
        let shared = env.with_prefix("");
        Ok(UserSettings {
            auth: AuthConfig::from_env(&shared, env, &database)?,
            events: EventSettings::from_env(&shared)?,
        })
    }

    fn compose(settings: UserSettings, db: Database, platform: &Platform) -> Composition {
        let config = settings.auth;
        announce_generated_secrets(&config, platform.settings.port);
        password::warm_up();
        let auth = auth::provider(
            &config,
            platform.settings.trusted_proxies.clone(),
            &platform.metrics,
        );
        // user-service verifies tokens against the keys it publishes.
        let keys = KeySet::from_jwks(auth.issuer.jwks());
        let verifier = Arc::new(Verifier::with_keys(
            config.verifier.clone(),
            keys,
            failure_counter(&platform.metrics, Self::NAME),
        ));
        let outbox = OutboxMetrics::register(&platform.metrics, Self::NAME);
        Composition {
            api: routes::router(AppState {
                idempotency: platform::idempotency::Guard::new(db.clone(), &config.operator.secret),
                db: db.clone(),
                auth,
            })
            .layer(verifier.layer()),
            health_info: None,
            background: vec![
                platform::idempotency::prune_task(db.clone()),
                relay::task(db, settings.events, outbox, Self::NAME),
            ],
        }
    }
}

/// On the embedded default, says at start where the generated secrets are and
/// how to get an admin token with them (never the secrets themselves).
fn announce_generated_secrets(config: &AuthConfig, port: u16) {
    let Some(secrets) = &config.generated_in else {
        return;
    };
    let file = secrets.dir().join(platform::auth::CLIENTS_FILE);
    tracing::info!(
        file = %file.display(),
        admin_token = format!(
            "set -a; . {}; set +a; curl -s -X POST localhost:{port}/api/v1/auth/token -H 'Content-Type: application/json' \
             -d \"{{\\\"client_id\\\":\\\"{}\\\",\\\"client_secret\\\":\\\"$AUTH_CLIENT_SECRET\\\"}}\"",
            file.display(),
            config.operator.id
        ),
        "the signing key and client secrets of the embedded default are in this directory \
         (owner-only, generated on first start); for an admin token run the admin_token command"
    );
}

/// Everything user-service reads at start.
pub type Config = platform::app::Config<UserService>;

/// A bound, ready-to-run user-service.
pub type Application = platform::app::Application<UserService>;

#[cfg(test)]
platform::service_tests!(crate::UserService);
