//! `cargo run --release`: the whole system in one process, on the embedded
//! default (an SQLite file per service under `./data/`), or on whatever the
//! contract's variables select. Ctrl-C stops every service gracefully.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    platform::config::load_dotenv();
    let user_config = match user_service::config::Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(&user_config.http.log_level);
    let shutdown = CancellationToken::new();
    tokio::spawn(platform::server::cancel_on_signal(shutdown.clone()));
    match run(user_config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    user_config: user_service::config::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let users = user_service::Application::build(user_config, shutdown.clone()).await?;
    tracing::info!(address = %users.address(), "user-service ready");
    let result = users.run_until_stopped().await;
    shutdown.cancel();
    result
}
