//! user-service: user management over PostgreSQL or embedded SQLite.
//!
//! [`Application::build`] connects, migrates, binds and returns the bound
//! address, so tests run it on port 0 exactly as `main` runs it on 8081.

pub mod error;
pub mod model;
pub mod routes;
pub mod store;

use platform::app::{Composition, Service};
use platform::config::{ConfigError, Env};
use platform::db::{Database, Migrations};
use platform::server::Platform;

/// The user service: its API over its database, nothing in the background.
#[derive(Debug, Clone)]
pub struct UserService;

impl Service for UserService {
    /// Only the settings every service reads (`USER_SERVICE_*`, names and defaults
    /// as the contract).
    type Settings = ();
    const NAME: &'static str = "user-service";
    const ABOUT: &'static str = "User management: users over PostgreSQL or embedded SQLite.";
    const ENV_PREFIX: &'static str = "USER_SERVICE";
    const DEFAULT_PORT: u16 = 8081;
    const DEFAULT_DATABASE: &'static str = "userdb";
    /// Versioned SQL, embedded in the binary. A new file is listed here too (a
    /// test compares the list with the folders).
    const MIGRATIONS: Migrations = platform::embed_migrations!["20261124000001_create_users.sql"];

    fn settings(_: &Env<'_>) -> Result<(), ConfigError> {
        Ok(())
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        routes::openapi()
    }

    fn compose(_: (), db: Database, _: &Platform) -> Composition {
        Composition {
            api: routes::router(db),
            health_info: None,
            background: Vec::new(),
        }
    }
}

/// Everything user-service reads at start.
pub type Config = platform::app::Config<UserService>;

/// A bound, ready-to-run user-service.
pub type Application = platform::app::Application<UserService>;

#[cfg(test)]
platform::service_tests!(crate::UserService);
