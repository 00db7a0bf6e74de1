//! `cargo run --release`: the whole system in one process. Each service keeps its
//! own port, database, metrics registry and middleware; on the embedded default
//! each gets its own SQLite file under `./data/`. Every setting is the services'
//! own environment variable. Ctrl-C or SIGTERM stops both gracefully.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

type UserConfig = user_service::Config;
type OrderConfig = order_service::Config;

const USAGE: &str = "usage: microservices [--help]\n\n\
    Runs user-service and order-service together, configured by their own\n\
    USER_SERVICE_* and ORDER_SERVICE_* variables and the shared AUTH_* ones\n\
    (see .env.example). On the embedded default, a signing key and client\n\
    secrets are generated under ./data/ on first start.";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [one] if one == "--help" || one == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("microservices: unknown arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let load = || UserConfig::from_env().and_then(|u| OrderConfig::from_env().map(|o| (u, o)));
    platform::cli::start("microservices", load, |(users, _)| &users.http, run).await
}

async fn run(
    (user_config, mut order_config): (UserConfig, OrderConfig),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let users = user_service::Application::build(user_config, shutdown.clone()).await?;
    // Wire order-service to the user-service we just started, unless told otherwise.
    if std::env::var_os("ORDER_SERVICE_USER_SERVICE_URL").is_none() {
        order_config.own.user_service_url = format!("http://127.0.0.1:{}", users.address().port());
        if std::env::var_os("AUTH_JWKS_URL").is_none() {
            order_config.own.auth.jwks.url = format!(
                "{}/.well-known/jwks.json",
                order_config.own.user_service_url
            );
        }
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
