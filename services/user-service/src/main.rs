//! `user-service [migrate | --print-openapi]`: serve the user API, only apply
//! migrations, or print the OpenAPI document.

use std::process::ExitCode;

use platform::cli::ServiceMain;
use user_service::{Application, MIGRATIONS, config::Config, routes};

#[tokio::main]
async fn main() -> ExitCode {
    ServiceMain {
        name: "user-service",
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
