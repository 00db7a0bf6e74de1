//! `order-service [migrate | --print-openapi]`: serve the order API, only apply
//! migrations, or print the OpenAPI document.

use std::process::ExitCode;

use order_service::{Application, MIGRATIONS, config::Config, routes};
use platform::cli::ServiceMain;

#[tokio::main]
async fn main() -> ExitCode {
    ServiceMain {
        name: "order-service",
        load_config: Config::from_env,
        openapi: routes::openapi,
        migrations: MIGRATIONS,
    }
    .run(|config, shutdown| async move {
        Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
    .await
}
