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

use crate::config::{ConfigError, Env, HttpSettings, Lookup};
use crate::db::{self, Database, DatabaseSettings, Migrations};
use crate::health::HealthInfo;
use crate::server::{Platform, Server};

/// What makes a service: its settings, its migrations, and how its parts are
/// put together over a ready database.
pub trait Service: 'static {
    /// The settings of its own, beyond the HTTP and database ones every service
    /// reads (`()` when it has none).
    type Settings: std::fmt::Debug + Clone;

    /// The binary's name, also the metrics prefix and the log's `service`.
    const NAME: &'static str;

    /// One line for `--help`.
    const ABOUT: &'static str;

    /// The prefix of its variables, e.g. `USER_SERVICE` for `USER_SERVICE_PORT`.
    const ENV_PREFIX: &'static str;

    /// The port when `<PREFIX>_PORT` is unset.
    const DEFAULT_PORT: u16;

    /// The PostgreSQL database when it is given in parts (`<PREFIX>_DB_HOST`, …).
    const DEFAULT_DATABASE: &'static str;

    /// Its SQL migrations, embedded ([`embed_migrations!`](crate::embed_migrations)).
    const MIGRATIONS: Migrations;

    /// Reads its own settings; `env` carries its prefix.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is set but invalid.
    fn settings(env: &Env<'_>) -> Result<Self::Settings, ConfigError>;

    /// Its handlers' OpenAPI document (`#[derive(utoipa::OpenApi)]`).
    type ApiDoc: utoipa::OpenApi;

    /// The service's OpenAPI 3.1 document: [`Self::ApiDoc`] with the responses
    /// and headers every service shares.
    fn openapi() -> utoipa::openapi::OpenApi {
        crate::openapi::finish(<Self::ApiDoc as utoipa::OpenApi>::openapi())
    }

    /// The service's routes, health information and background work, over a
    /// migrated database.
    fn compose(settings: Self::Settings, db: Database, platform: &Platform) -> Composition;
}

/// Everything a service reads at start: the HTTP side and the database, which
/// every service reads the same way under its prefix, and its own settings.
#[derive(Debug, Clone)]
pub struct Config<S: Service> {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub own: S::Settings,
}

impl<S: Service> Config<S> {
    /// Reads the settings through `lookup` (tests pass a map).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is set but invalid.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        let env = Env::new(S::ENV_PREFIX, lookup);
        Ok(Self {
            own: S::settings(&env)?,
            http: HttpSettings::from_env(&env, S::NAME, S::DEFAULT_PORT)?,
            database: DatabaseSettings::from_env(&env, S::DEFAULT_DATABASE, S::NAME)?,
        })
    }

    /// Reads the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is set but invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&crate::config::process_env)
    }
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
    pub async fn build(config: Config<S>, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let db = db::connect_and_migrate(&config.database, S::MIGRATIONS).await?;
        Self::with_database(config, db, shutdown).await
    }

    /// Binds the service over an existing connection (tests use lazy or tiny pools).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn with_database(
        config: Config<S>,
        db: Database,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let platform = Platform::new(config.http, shutdown.clone());
        let parts = S::compose(config.own, db.clone(), &platform);
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
    /// cancelled, then waits for the background work and closes the pool. The
    /// background work stops only once the server has (after the shutdown delay
    /// and the drain), so requests served meanwhile still have it.
    ///
    /// # Errors
    /// When serving fails fatally.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let stopped = CancellationToken::new();
        let tasks: Vec<_> = self
            .background
            .into_iter()
            .map(|task| task(stopped.clone()))
            .collect();
        let served = self.server.run_until_stopped().await;
        stopped.cancel();
        self.shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        self.db.close().await;
        Ok(served?)
    }
}
