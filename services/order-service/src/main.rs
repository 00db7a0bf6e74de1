//! `order-service [migrate | --print-openapi]`: serve the order API, only apply
//! migrations, or print the OpenAPI document.

use std::process::ExitCode;

use order_service::{Application, MIGRATIONS, config::Config};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-openapi") {
        println!(
            "{}",
            order_service::routes::openapi()
                .to_pretty_json()
                .expect("spec serializes")
        );
        return ExitCode::SUCCESS;
    }
    platform::config::load_dotenv();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("order-service: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(&config.http.log_level);
    let result = match std::env::args().nth(1).as_deref() {
        Some("migrate") => platform::db::connect_and_migrate(&config.database, MIGRATIONS)
            .await
            .map(drop),
        None => serve(config).await,
        Some(other) => Err(anyhow::anyhow!(
            "unknown command {other:?}; usage: order-service [migrate | --print-openapi]"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "order-service failed");
            eprintln!("order-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(platform::server::cancel_on_signal(shutdown.clone()));
    Application::build(config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
