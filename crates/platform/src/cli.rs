//! The body of every service binary: `<service> [migrate | --print-openapi]`.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, HttpSettings};
use crate::db::{self, DatabaseSettings, Migrations};

/// What the shared `main` needs from a service's configuration.
pub trait ServiceConfig {
    fn http(&self) -> &HttpSettings;
    fn database(&self) -> &DatabaseSettings;
}

/// One service binary's commands and the parts they need.
pub struct ServiceMain<C> {
    pub name: &'static str,
    pub load_config: fn() -> Result<C, ConfigError>,
    pub openapi: fn() -> utoipa::openapi::OpenApi,
    pub migrations: Migrations,
}

impl<C: ServiceConfig> ServiceMain<C> {
    /// Parses the command line and runs it: serve (the default), `migrate` (apply
    /// migrations and exit) or `--print-openapi`. Exit 2 for a configuration
    /// error (naming the variable), 1 for a failure, 0 after a graceful stop.
    pub async fn run<F, Fut>(self, serve: F) -> ExitCode
    where
        F: FnOnce(C, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let command = std::env::args().nth(1);
        if command.as_deref() == Some("--print-openapi") {
            let spec = (self.openapi)()
                .to_pretty_json()
                .expect("the spec serializes");
            println!("{spec}");
            return ExitCode::SUCCESS;
        }
        crate::config::load_dotenv();
        let config = match (self.load_config)() {
            Ok(config) => config,
            Err(err) => {
                eprintln!("{}: configuration error: {err}", self.name);
                return ExitCode::from(2);
            }
        };
        crate::telemetry::init(&config.http().log_level);
        let result = match command.as_deref() {
            None => {
                let shutdown = CancellationToken::new();
                tokio::spawn(crate::server::cancel_on_signal(shutdown.clone()));
                serve(config, shutdown).await
            }
            Some("migrate") => db::connect_and_migrate(config.database(), self.migrations)
                .await
                .map(drop),
            Some(other) => Err(anyhow::anyhow!(
                "unknown command {other:?}; usage: {} [migrate | --print-openapi]",
                self.name
            )),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    service = self.name,
                    "service failed"
                );
                eprintln!("{}: {err:#}", self.name);
                ExitCode::FAILURE
            }
        }
    }
}
