//! user-service: user management over PostgreSQL or embedded SQLite.
//!
//! [`Application::build`] connects, migrates, binds and returns the bound
//! address, so tests run it on port 0 exactly as `main` runs it on 8081.

pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod store;

use platform::app::{Composition, Service};
use platform::db::{Database, Migrations};
use platform::server::Platform;

/// The versioned SQL migrations, embedded in the binary. A new file is listed
/// here too (a test compares the list with the folders).
pub static MIGRATIONS: Migrations = platform::embed_migrations!["20261124000001_create_users.sql"];

/// The user service: its API over its database, nothing in the background.
pub struct UserService;

impl Service for UserService {
    type Config = config::Config;
    const NAME: &'static str = config::SERVICE_NAME;
    const ABOUT: &'static str = "User management: users over PostgreSQL or embedded SQLite.";

    fn openapi() -> utoipa::openapi::OpenApi {
        routes::openapi()
    }

    fn migrations() -> Migrations {
        MIGRATIONS
    }

    fn compose(_: config::Config, db: Database, _: &Platform) -> Composition {
        Composition {
            api: routes::router(db),
            health_info: None,
            background: Vec::new(),
        }
    }
}

/// A bound, ready-to-run user-service.
pub type Application = platform::app::Application<UserService>;

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded_as_sqlx_reads_it() {
        platform::testing::assert_migrations_embedded(
            env!("CARGO_MANIFEST_DIR"),
            super::MIGRATIONS,
        );
    }
}
