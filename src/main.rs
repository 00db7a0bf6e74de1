//! `cargo run --release`: the whole system in one process. Each service keeps its
//! own port, database, metrics registry and middleware; on the embedded default
//! each gets its own SQLite file under `./data/`. Every setting is the services'
//! own environment variable. Ctrl-C or SIGTERM stops both gracefully.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    platform::config::load_dotenv();
    let configs = user_service::config::Config::from_env()
        .and_then(|users| order_service::config::Config::from_env().map(|orders| (users, orders)));
    let (user_config, order_config) = match configs {
        Ok(configs) => configs,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(&user_config.http.log_level);
    let shutdown = CancellationToken::new();
    tokio::spawn(platform::server::cancel_on_signal(shutdown.clone()));
    match run(user_config, order_config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "system failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    user_config: user_service::config::Config,
    mut order_config: order_service::config::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let users = user_service::Application::build(user_config, shutdown.clone()).await?;
    // Wire order-service to the user-service we just started, unless told otherwise.
    if std::env::var_os("ORDER_SERVICE_USER_SERVICE_URL").is_none() {
        order_config.user_service_url = format!("http://127.0.0.1:{}", users.address().port());
    }
    let orders = order_service::Application::build(order_config, shutdown.clone()).await?;
    tracing::info!(
        user_service = %users.address(),
        order_service = %orders.address(),
        "system ready"
    );
    // If either stops (or fails), stop the other too.
    let (users_done, orders_done) = tokio::join!(
        stop_all_when_done(users.run_until_stopped(), &shutdown),
        stop_all_when_done(orders.run_until_stopped(), &shutdown),
    );
    users_done.and(orders_done)
}

async fn stop_all_when_done(
    service: impl Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let result = service.await;
    shutdown.cancel();
    result
}
