//! `order-service [migrate | --print-openapi | --help]`: serve the order API, only apply
//! migrations, or print the OpenAPI document.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::run_service::<order_service::OrderService>().await
}
