//! A service's life, the same for every service: connect and migrate, compose its
//! routes over the platform's middleware, bind, serve with its background work,
//! and stop gracefully.
//!
//! [`Application::build`] returns the bound address, so tests run a service on
//! port 0 exactly as `main` runs it on its own port.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::ServiceConfig;
use crate::db::{self, Database, Migrations};
use crate::health::HealthInfo;
use crate::server::{Platform, Server};

/// What makes a service: its settings, its migrations, and how its parts are
/// put together over a ready database.
pub trait Service {
    type Config: ServiceConfig;

    /// The binary's name, also the metrics prefix and the log's `service`.
    const NAME: &'static str;

    /// One line for `--help`.
    const ABOUT: &'static str;

    /// The service's OpenAPI document.
    fn openapi() -> utoipa::openapi::OpenApi;

    /// The service's embedded SQL migrations.
    fn migrations() -> Migrations;

    /// The service's routes, health information and background work, over a
    /// migrated database.
    fn compose(config: Self::Config, db: Database, platform: &Platform) -> Composition;
}

/// Work that runs beside the server until the shutdown token is cancelled.
pub type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> JoinHandle<()> + Send>;

/// The parts a [`Service`] contributes.
pub struct Composition {
    /// The API routes, without middleware, health or metrics (the platform adds those).
    pub api: Router,
    /// Extra fields for `/health`.
    pub health_info: Option<HealthInfo>,
    pub background: Vec<BackgroundTask>,
}

/// A bound, ready-to-run service.
pub struct Application<S> {
    server: Server,
    db: Database,
    background: Vec<BackgroundTask>,
    shutdown: CancellationToken,
    service: PhantomData<fn() -> S>,
}

impl<S: Service> Application<S> {
    /// Connects to the database (with retry), migrates, and binds the port.
    ///
    /// # Errors
    /// When the database stays unreachable, a migration fails or the port is taken.
    pub async fn build(config: S::Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let db = db::connect_and_migrate(config.database(), S::migrations()).await?;
        Self::with_database(config, db, shutdown).await
    }

    /// Binds the service over an existing connection (tests use lazy or tiny pools).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn with_database(
        config: S::Config,
        db: Database,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let platform = Platform::new(config.http().clone(), shutdown.clone());
        let parts = S::compose(config, db.clone(), &platform);
        let api = parts.api.merge(crate::openapi::routes(S::openapi()));
        let app = platform.app(api, db.clone(), parts.health_info);
        let server = Server::bind(platform, app).await?;
        Ok(Self {
            server,
            db,
            background: parts.background,
            shutdown,
            service: PhantomData,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Serves (and runs the background work) until the shutdown token is
    /// cancelled, then waits for the background work and closes the pool.
    ///
    /// # Errors
    /// When serving fails fatally.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let tasks: Vec<_> = self
            .background
            .into_iter()
            .map(|task| task(self.shutdown.clone()))
            .collect();
        let served = self.server.run_until_stopped().await;
        self.shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        self.db.close().await;
        Ok(served?)
    }
}
