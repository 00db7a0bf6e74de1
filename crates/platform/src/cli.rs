//! The body of every binary: `<service> [migrate | --print-openapi | --help]` for
//! each service, and the start-up the one-command launcher shares with them.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::app::{Application, Config, Service};
use crate::config::{ConfigError, HttpSettings};
use crate::db;

/// A service binary: serve (the default), `migrate` (apply migrations and
/// exit), `--print-openapi` or `--help`. Exit 2 for a usage or configuration
/// error (naming the variable), 1 for a failure, 0 after a graceful stop.
pub async fn run_service<S: Service>() -> ExitCode {
    let usage = format!("usage: {} [migrate | --print-openapi | --help]", S::NAME);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.as_slice() {
        [] => Command::Serve,
        [one] if one == "migrate" => Command::Migrate,
        [one] if one == "--print-openapi" => {
            println!(
                "{}",
                S::openapi().to_pretty_json().expect("the spec serializes")
            );
            return ExitCode::SUCCESS;
        }
        [one] if one == "--help" || one == "-h" => {
            println!("{usage}\n\n{}", S::ABOUT);
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{}: unknown arguments {args:?}\n{usage}", S::NAME);
            return ExitCode::from(2);
        }
    };
    start(
        S::NAME,
        Config::<S>::from_env,
        |config| &config.http,
        async |config: Config<S>, shutdown| match command {
            Command::Serve => {
                Application::<S>::build(config, shutdown)
                    .await?
                    .run_until_stopped()
                    .await
            }
            Command::Migrate => db::connect_and_migrate(&config.database, S::MIGRATIONS)
                .await
                .map(drop),
        },
    )
    .await
}

enum Command {
    Serve,
    Migrate,
}

/// The start-up every binary shares: `.env`, the configuration (exit 2 naming
/// the variable when it is invalid), logs, Ctrl-C / SIGTERM cancelling the
/// shutdown token; then `work`, whose failure is logged and exits 1.
pub async fn start<C>(
    name: &str,
    load: impl FnOnce() -> Result<C, ConfigError>,
    http: impl Fn(&C) -> &HttpSettings,
    work: impl AsyncFnOnce(C, CancellationToken) -> anyhow::Result<()>,
) -> ExitCode {
    crate::config::load_dotenv();
    let config = match load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{name}: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let settings = http(&config);
    let (otel, tracing) = match crate::otel::layer(&settings.tracing, name) {
        Ok(exporting) => exporting.unzip(),
        Err(err) => {
            eprintln!("{name}: cannot export traces: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::init(&settings.log_level, settings.log_format, otel);
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::server::cancel_on_signal(shutdown.clone()));
    let code = match work(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), service = name, "service failed");
            eprintln!("{name}: {err:#}");
            ExitCode::FAILURE
        }
    };
    // The spans of the last requests are sent before the process exits.
    drop(tracing);
    code
}
