//! order-service: orders over PostgreSQL or embedded SQLite, validating users
//! against user-service through a circuit breaker, degrading to "accept and
//! verify later" when user-service is away.

pub mod config;
pub mod model;
pub mod routes;
pub mod service;
pub mod store;
pub mod user_client;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use platform::db::Database;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use config::Config;
use platform::db::{self, Migrations};
use platform::server::{Platform, Server};
use routes::AppState;
use user_client::{UserClient, state_name};
use verify::Verifier;

/// The versioned SQL migrations, embedded in the binary.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &sqlx::migrate!("migrations/postgres"),
    sqlite: &sqlx::migrate!("migrations/sqlite"),
};

/// A bound, ready-to-run order-service.
pub struct Application {
    server: Server,
    db: Database,
    verifier: Verifier,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects to the database (with retry), migrates, and binds the port.
    ///
    /// # Errors
    /// When the database stays unreachable, a migration fails or the port is taken.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let db = db::connect_and_migrate(&config.database, MIGRATIONS).await?;
        Self::with_database(config, db, shutdown).await
    }

    /// Binds the service over an existing connection.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn with_database(
        config: Config,
        db: Database,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let platform = Platform::new(config.http, shutdown.clone());
        let users = UserClient::new(
            &config.user_service_url,
            config.user_service_timeout,
            &config.breaker,
            &platform.metrics,
        );
        let verifier = Verifier::new(
            db.clone(),
            users.clone(),
            config.verifier,
            &platform.metrics,
        );
        let breaker = users.clone();
        // Informational only: order-service stays healthy while user-service is down.
        let info = Arc::new(move || json!({ "user_service_circuit": state_name(breaker.state()) }));
        let state = AppState {
            db: db.clone(),
            users,
        };
        let api = routes::router(state).merge(platform::openapi::routes(routes::openapi()));
        let app = platform.app(api, db.clone(), Some(info));
        let server = Server::bind(platform, app).await?;
        tracing::info!(user_service = %config.user_service_url, "order-service configured");
        Ok(Self {
            server,
            db,
            verifier,
            shutdown,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Serves (and re-verifies in the background) until the shutdown token is
    /// cancelled, then closes the pool.
    ///
    /// # Errors
    /// When serving fails fatally.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let verifier = self.verifier.spawn(self.shutdown.clone());
        let served = self.server.run_until_stopped().await;
        self.shutdown.cancel();
        let _ = verifier.await;
        self.db.close().await;
        Ok(served?)
    }
}
