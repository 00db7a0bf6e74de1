//! With tracing off (here `OTEL_SDK_DISABLED=true` beside an endpoint) no
//! OpenTelemetry layer exists and nothing is sent; the traced tests are in the
//! `traces` test binary, whose process-wide subscriber exports everything.

use platform::otel::TracingSettings;
use platform::testing::{Backend, OtlpReceiver, RunningService, TestDatabase};
use reqwest::StatusCode;

use crate::helpers::{list_users_traced, test_config};

#[tokio::test]
async fn with_the_exporter_disabled_nothing_is_sent() {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let settings = TracingSettings::from_lookup(&platform::config::pairs(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SDK_DISABLED", "true"),
    ]))
    .expect("settings");
    let layer = platform::otel::layer(&settings, "user-service").expect("no error");
    assert!(layer.is_none(), "no OpenTelemetry layer at all");
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut users =
        RunningService::spawn(test_config::<user_service::UserService>(&database.url, &[])).await;
    let answered = list_users_traced(
        &users,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert!(
        answered.headers.get("traceparent").is_none(),
        "{:?}",
        answered.headers
    );
    // Stopped, it has answered everything it will: nothing went out.
    users.stop().await;
    assert_eq!(receiver.requests(), 0);
}
