//! `user-service [migrate | --print-openapi | --help]`: serve the user API, only apply
//! migrations, or print the OpenAPI document.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::run_service::<user_service::UserService>().await
}
