//! user-service: user management over PostgreSQL or embedded SQLite, and the
//! identity provider every service trusts.
//!
//! [`Application::build`] connects, migrates, binds and returns the bound
//! address, so tests run it on port 0 exactly as `main` runs it on 8081.

pub mod auth;
pub mod config;
pub mod error;
pub mod model;
pub mod password;
pub mod routes;
pub mod store;

use std::sync::Arc;

use axum::extract::FromRef;
use jsonwebtoken::jwk::JwkSet;
use platform::app::{Composition, Service};
use platform::auth::{KeySet, Verifier, failure_counter};
use platform::db::{Database, Migrations};
use platform::events::relay::{self, OutboxMetrics};
use platform::server::Platform;

use auth::IdentityProvider;

/// The versioned SQL migrations, embedded in the binary.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &sqlx::migrate!("migrations/postgres"),
    sqlite: &sqlx::migrate!("migrations/sqlite"),
};

/// What every handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: Database,
    pub auth: Arc<IdentityProvider>,
}

/// The user service: its API over its database, and the relay of its outbox.
pub struct UserService;

impl Service for UserService {
    type Config = config::Config;
    const NAME: &'static str = config::SERVICE_NAME;
    const ABOUT: &'static str = "User management and identity: users over PostgreSQL or embedded SQLite, tokens for every service.";

    fn openapi() -> utoipa::openapi::OpenApi {
        routes::openapi()
    }

    fn migrations() -> Migrations {
        MIGRATIONS
    }

    fn compose(config: config::Config, db: Database, platform: &Platform) -> Composition {
        announce_generated_secrets(&config);
        password::warm_up();
        let auth = auth::provider(
            &config.auth,
            config.http.trusted_proxies.clone(),
            &platform.metrics,
        );
        // user-service verifies tokens against the keys it publishes.
        let keys = KeySet::from_jwks(&JwkSet::clone(auth.issuer.jwks()));
        let verifier = Arc::new(Verifier::with_keys(
            config.auth.verifier.clone(),
            keys,
            failure_counter(&platform.metrics, Self::NAME),
        ));
        let outbox = OutboxMetrics::register(&platform.metrics, Self::NAME);
        Composition {
            api: routes::router(AppState {
                db: db.clone(),
                auth,
            })
            .layer(verifier.layer()),
            health_info: None,
            background: vec![relay::task(db, config.events, outbox, Self::NAME)],
        }
    }
}

/// On the embedded default, says once at start where the generated secrets are
/// and how to get an admin token with them (never the secrets themselves).
fn announce_generated_secrets(config: &config::Config) {
    let Some(secrets) = &config.auth.generated_in else {
        return;
    };
    let file = secrets.dir().join(platform::auth::CLIENTS_FILE);
    tracing::info!(
        file = %file.display(),
        admin_token = format!(
            "set -a; . {}; set +a; curl -s -X POST localhost:{}/api/v1/auth/token -H 'Content-Type: application/json' \
             -d \"{{\\\"client_id\\\":\\\"{}\\\",\\\"client_secret\\\":\\\"$AUTH_CLIENT_SECRET\\\"}}\"",
            file.display(),
            config.http.port,
            config.auth.operator.id
        ),
        "signing key and client secrets generated on first start are in this directory (owner-only); \
         for an admin token run the admin_token command"
    );
}

/// A bound, ready-to-run user-service.
pub type Application = platform::app::Application<UserService>;
