//! `cargo run --release`: the whole system in one process. Each service keeps its
//! own port, database, metrics registry and middleware; on the embedded default
//! each gets its own SQLite file under `./data/`. Every setting is the services'
//! own environment variable. Ctrl-C or SIGTERM stops both gracefully.

use std::process::ExitCode;

use std::sync::Arc;

use platform::events::InProcessBus;
use tokio_util::sync::CancellationToken;

type UserConfig = user_service::Config;
type OrderConfig = order_service::Config;
type AuditConfig = audit_log_service::Config;

const USAGE: &str = "usage: microservices [--help]\n\n\
    Runs user-service, order-service and audit-log-service together, configured\n\
    by their own USER_SERVICE_*, ORDER_SERVICE_* and AUDIT_LOG_SERVICE_* variables\n\
    and the shared AUTH_* and NATS_* ones (see .env.example). On the embedded\n\
    default, a signing key and client secrets are generated under ./data/ on\n\
    first start, and without NATS_URL events are delivered in-process.";

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
    let load = || {
        Ok((
            UserConfig::from_env()?,
            OrderConfig::from_env()?,
            AuditConfig::from_env()?,
        ))
    };
    platform::cli::start("microservices", load, |(users, _, _)| &users.http, run).await
}

async fn run(
    (mut user_config, mut order_config, mut audit_config): (UserConfig, OrderConfig, AuditConfig),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Without a broker the services share an in-process bus, fed by the same
    // outboxes and relays, so no event is lost and every consumer sees them.
    if user_config.own.events.nats_url.is_none() {
        let bus = Arc::new(InProcessBus::default());
        user_config.own.events.in_process = Some(Arc::clone(&bus));
        order_config.own.events.in_process = Some(Arc::clone(&bus));
        audit_config.own.events.in_process = Some(bus);
        tracing::info!("no NATS_URL: events are delivered in-process between the services");
    }
    let users = user_service::Application::build(user_config, shutdown.clone()).await?;
    let user_service_url = format!("http://127.0.0.1:{}", users.address().port());
    let jwks_url = format!("{user_service_url}/.well-known/jwks.json");
    // Wire the others to the user-service we just started, unless told otherwise.
    if std::env::var_os("ORDER_SERVICE_USER_SERVICE_URL").is_none() {
        order_config.own.user_service_url = user_service_url.clone();
        if std::env::var_os("AUTH_JWKS_URL").is_none() {
            order_config.own.auth.jwks.url = jwks_url.clone();
        }
    }
    if std::env::var_os("AUDIT_LOG_SERVICE_USER_SERVICE_URL").is_none()
        && std::env::var_os("AUTH_JWKS_URL").is_none()
    {
        audit_config.own.auth.jwks.url = jwks_url;
    }
    let orders = order_service::Application::build(order_config, shutdown.clone()).await?;
    let audit = audit_log_service::Application::build(audit_config, shutdown.clone()).await?;
    tracing::info!(
        user_service = %users.address(),
        order_service = %orders.address(),
        audit_log_service = %audit.address(),
        "system ready"
    );
    // If any stops (or fails), stop the others too.
    let (users_done, orders_done, audit_done) = tokio::join!(
        stop_all_when_done(users.run_until_stopped(), &shutdown),
        stop_all_when_done(orders.run_until_stopped(), &shutdown),
        stop_all_when_done(audit.run_until_stopped(), &shutdown),
    );
    users_done.and(orders_done).and(audit_done)
}

async fn stop_all_when_done(
    service: impl Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let result = service.await;
    shutdown.cancel();
    result
}
