//! user-service: user management over PostgreSQL or embedded SQLite.
//!
//! [`Application::build`] connects, migrates, binds and returns the bound
//! address, so tests run it on port 0 exactly as `main` runs it on 8081.

pub mod config;
pub mod model;
pub mod routes;
pub mod store;

use std::net::SocketAddr;

use platform::db::Database;
use tokio_util::sync::CancellationToken;

use config::Config;
use platform::db::{self, Migrations};
use platform::server::{Platform, Server};

/// The versioned SQL migrations, embedded in the binary.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &sqlx::migrate!("migrations/postgres"),
    sqlite: &sqlx::migrate!("migrations/sqlite"),
};

/// A bound, ready-to-run user-service.
pub struct Application {
    server: Server,
    db: Database,
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

    /// Binds the service over an existing connection (tests use lazy or tiny pools).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn with_database(
        config: Config,
        db: Database,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let platform = Platform::new(config.http, shutdown);
        let api = routes::router(db.clone()).merge(platform::openapi::routes(routes::openapi()));
        let app = platform.app(api, db.clone(), None);
        let server = Server::bind(platform, app).await?;
        Ok(Self { server, db })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Serves until the shutdown token is cancelled, then closes the pool.
    ///
    /// # Errors
    /// When serving fails fatally.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.run_until_stopped().await?;
        self.db.close().await;
        Ok(())
    }
}
