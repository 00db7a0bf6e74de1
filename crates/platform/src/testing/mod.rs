//! Test support shared by the services' integration tests (feature `testing`):
//! a fresh database per test on either backend, an HTTP client that reads our
//! envelope, a service run in the test's process, a throwaway PostgreSQL cluster
//! to stop under load, a bounded load generator, a NATS stream of its own and a
//! throwaway NATS server, an OTLP receiver for traces, and a macro that runs a test body on SQLite and on
//! PostgreSQL.

mod auth;
mod cluster;
mod database;
mod events;
mod http;
mod lists;
mod load;
mod redis;
mod service;
mod throwaway;
mod traces;

pub use auth::{TestAuth, test_auth};
pub use cluster::{Outage, TemporaryPostgres, database_outage_under_load, free_port};
pub use database::{
    Backend, TestDatabase, admin_url, assert_column_list, assert_migrations_embedded, connect,
    count_rows, outbox_events, unpublished_events,
};
pub use events::{TestStream, nats_url};
pub use http::{
    INTERNALS, TestClient, TestResponse, assert_no_internals, client_from, metric_value,
};
pub use lists::{assert_no_repeats, page_ids, walk_by_cursor, walk_by_page};
pub use load::{Answer, Load, assert_documented, created_ids};
pub use redis::{redis_prefix, redis_url};
pub use service::{RunningService, assert_each_names_its_variable, migrated, test_config};
pub use throwaway::TemporaryServer;
pub use traces::{OtlpReceiver, ReceivedSpan, global_receiver};

use serde_json::Value;

/// Runs each named test body once per backend, as `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { body($crate::testing::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { body($crate::testing::Backend::Postgres).await }
            async fn body($backend: $crate::testing::Backend) $body
        }
    )*};
}

/// The checks of a service's committed files, as unit tests of its crate: the
/// OpenAPI document under `docs/openapi/` and the migration folders are what the
/// code generates and embeds. `#[cfg(test)] platform::service_tests!(crate::UserService);`
#[macro_export]
macro_rules! service_tests {
    ($service:ty) => {
        mod service_tests {
            use $crate::app::Service;

            #[test]
            fn committed_openapi_spec_matches_the_code() {
                $crate::testing::assert_committed_spec(
                    env!("CARGO_MANIFEST_DIR"),
                    <$service>::NAME,
                    &<$service>::openapi(),
                );
            }

            #[test]
            fn every_migration_file_is_embedded_as_sqlx_reads_it() {
                $crate::testing::assert_migrations_embedded(
                    env!("CARGO_MANIFEST_DIR"),
                    <$service>::MIGRATIONS,
                );
            }
        }
    };
}

/// Runs `work` to the end on a thread and runtime of its own: what a `Drop`
/// that cleans up needs, as it runs inside the test's runtime, which cannot
/// block on itself.
pub fn block_on_own_thread(work: impl Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work);
    })
    .join()
    .ok();
}

/// Polls `check` every 20 ms until it holds, for at most `limit`; returns how long
/// it took, or `None` when it never held.
pub async fn poll_until<F, Fut>(
    limit: std::time::Duration,
    mut check: F,
) -> Option<std::time::Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `check` as [`poll_until`] does and fails the test with `failure` when
/// it never held within `limit`; returns how long it took.
///
/// # Panics
/// When `check` did not hold within `limit`.
pub async fn assert_eventually<F, Fut>(
    limit: std::time::Duration,
    check: F,
    failure: &str,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let reached = poll_until(limit, check).await;
    assert!(reached.is_some(), "{failure}");
    reached.unwrap_or_default()
}

/// Asserts that the committed OpenAPI file (relative to the workspace root) is what
/// the code generates, and says how to regenerate it when not.
///
/// # Panics
/// When the file is missing, not JSON, or stale.
pub fn assert_committed_spec(manifest_dir: &str, service: &str, spec: &utoipa::openapi::OpenApi) {
    let relative = format!("docs/openapi/{service}.json");
    let path = std::path::Path::new(manifest_dir)
        .join("../..")
        .join(&relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let committed: Value = serde_json::from_str(&text).expect("committed spec is JSON");
    let generated = serde_json::to_value(spec).expect("spec serializes");
    assert!(
        committed == generated,
        "{relative} is stale: run `cargo run -q -p {service} -- --print-openapi > {relative}`"
    );
}
