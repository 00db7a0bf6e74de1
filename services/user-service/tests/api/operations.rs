//! Routing errors, request ids, health, metrics, rate limiting and database
//! outages: the platform's behaviour as seen through user-service.

use std::net::IpAddr;
use std::time::Duration;

use platform::app::Service;
use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use user_service::{Application, UserService};

use platform::db::Database;

use crate::helpers::{
    Backend, TestDatabase, client_from, config_with, spawn_app, spawn_app_with, start,
};
use platform::backend_tests;

backend_tests! {
    async fn unknown_routes_and_wrong_methods_answer_in_the_envelope(backend) {
        let app = spawn_app(backend).await;
        app.get("/api/v1/nope").await.assert_error(404, "NOT_FOUND");
        app.get("/").await.assert_error(404, "NOT_FOUND");
        let patch = app.send(app.http.patch(app.url("/api/v1/users/1"))).await;
        patch.assert_error(405, "METHOD_NOT_ALLOWED");
        app.delete("/api/v1/users").await.assert_error(405, "METHOD_NOT_ALLOWED");
    }

    async fn request_id_is_echoed_or_generated(backend) {
        let app = spawn_app(backend).await;
        let given = app.get_with_header("/health", "x-request-id", "trace-me-123").await;
        assert_eq!(given.headers["x-request-id"], "trace-me-123");
        let generated = app.get("/api/v1/users/999").await;
        let id = generated.headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "a UUID: {id}");
    }

    async fn health_reports_healthy_with_the_service_name(backend) {
        let app = spawn_app(backend).await;
        let health = app.get("/health").await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(health.body["status"], "healthy");
        assert_eq!(health.body["service"], "user-service");
        assert_eq!(app.get("/health/live").await.status, StatusCode::OK);
        let ready = app.get("/health/ready").await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        assert_eq!(ready.body["status"], "ready");
    }

    async fn metrics_use_route_templates_and_the_contract_names(backend) {
        let app = spawn_app(backend).await;
        let user = app.create_user("m@example.com", "Metric Man", 30).await;
        app.get(&format!("/api/v1/users/{}", user["id"])).await;
        app.get("/api/v1/users/123456").await;
        app.get("/no/such/route/42").await;
        let response = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = response.text().await.unwrap();
        let samples = parse_prometheus(&text);
        let find = |name: &str, labels: &[(&str, &str)]| {
            samples.iter().find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))).map(|s| s.2)
        };
        assert_eq!(find("user_service_requests_total", &[("method", "POST"), ("path", "/api/v1/users"), ("status", "201")]), Some(1.0));
        assert_eq!(find("user_service_requests_total", &[("method", "GET"), ("path", "/api/v1/users/{id}"), ("status", "200")]), Some(1.0));
        assert_eq!(find("user_service_requests_total", &[("method", "GET"), ("path", "/api/v1/users/{id}"), ("status", "404")]), Some(1.0));
        assert_eq!(find("user_service_requests_total", &[("path", "unmatched"), ("status", "404")]), Some(1.0));
        assert_eq!(find("user_service_errors_total", &[("type", "client_error")]), Some(2.0));
        assert!(find("user_service_request_duration_seconds_count", &[("method", "GET"), ("path", "/api/v1/users/{id}")]).is_some());
        assert!(!text.contains("123456"), "raw ids must not become labels");
    }
}

/// A minimal parser of the Prometheus text format: enough to prove the output is
/// well-formed (every sample line is `name{labels} value`) and to read samples.
fn parse_prometheus(text: &str) -> Vec<(String, std::collections::HashMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    rest.strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels {line}")),
                ),
                None => (series, ""),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad name {name}"
            );
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label {pair}"));
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value)
        })
        .collect()
}

#[tokio::test]
async fn rate_limiter_admits_exactly_the_burst_per_ip_and_never_limits_health() {
    // 2 requests/s means a burst of 4; tokens refill every 500 ms, far longer
    // than six loopback requests take.
    let app = spawn_app_with(Backend::Sqlite, &[("USER_SERVICE_RATE_LIMIT", "2")]).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let response = app.get("/api/v1/users").await;
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            response.assert_error(429, "RATE_LIMIT_EXCEEDED");
            retry_after = Some(
                response.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
        statuses.push(response.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert!(retry_after.unwrap() >= 1);

    let other_client = client_from(IpAddr::from([127, 0, 0, 2]));
    let other = app
        .send(
            other_client
                .get(app.url("/api/v1/users"))
                .bearer_auth(&app.admin_token),
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another IP has its own bucket"
    );

    for path in ["/health", "/health/live", "/health/ready", "/metrics"] {
        assert_eq!(
            app.http.get(app.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("user_service_rate_limited_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let untrusted = spawn_app_with(Backend::Sqlite, &[("USER_SERVICE_RATE_LIMIT", "1")]).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let forged = format!("203.0.113.{i}");
        let response = untrusted
            .get_with_header("/api/v1/users", "x-forwarded-for", &forged)
            .await;
        statuses.push(response.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "spoofed X-Forwarded-For must not buy new buckets"
    );

    let behind_proxy = spawn_app_with(
        Backend::Sqlite,
        &[
            ("USER_SERVICE_RATE_LIMIT", "1"),
            ("USER_SERVICE_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    for i in 0..3 {
        let client_ip = format!("203.0.113.{i}");
        for _ in 0..2 {
            let response = behind_proxy
                .get_with_header("/api/v1/users", "x-forwarded-for", &client_ip)
                .await;
            assert_eq!(
                response.status,
                StatusCode::OK,
                "{client_ip} has its own burst of 2"
            );
        }
    }
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/users"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

backend_tests! {
    async fn exhausted_pool_answers_503_instead_of_hanging(backend) {
        let app = spawn_app_with(backend, &[
            ("USER_SERVICE_DATABASE_MAX_CONNECTIONS", "1"),
            ("USER_SERVICE_DATABASE_ACQUIRE_TIMEOUT_MS", "200"),
        ]).await;
        let user = app.create_user("pool@example.com", "Pool Tester", 30).await;
        let path = format!("/api/v1/users/{}", user["id"]);
        // Hold the only connection, as a stuck request would.
        let held = match &app.db {
            Database::Sqlite(pool) => Held::Sqlite(pool.acquire().await.unwrap()),
            Database::Postgres(pg) => Held::Postgres(pg.pool.get().await.unwrap()),
        };
        let update = json!({"name": "Pool Waiter"});
        app.put_json(&path, &update).await.assert_error(503, "SERVICE_UNAVAILABLE");
        assert_eq!(app.get("/health").await.status, StatusCode::SERVICE_UNAVAILABLE);
        // A lookup by id needs no pooled connection on PostgreSQL: it runs on the
        // shared one. On SQLite it waits for the pool like everything else.
        let lookup = app.get(&path).await;
        match backend {
            Backend::Postgres => assert_eq!(lookup.status, StatusCode::OK),
            Backend::Sqlite => {
                lookup.assert_error(503, "SERVICE_UNAVAILABLE");
            }
        }
        drop(held);
        assert_eq!(app.get(&path).await.status, StatusCode::OK);
        assert_eq!(app.put_json(&path, &update).await.status, StatusCode::OK);
    }
}

/// A lookup on a shared connection that PostgreSQL has ended, sent before the
/// client noticed, runs again on a new connection instead of failing.
#[tokio::test(flavor = "current_thread")]
async fn a_lookup_on_a_shared_connection_the_server_ended_runs_again_on_a_new_one() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let db = platform::db::connect_lazy(&config_with(&database.url, &[]).database);
    const PID: &str = "SELECT pg_backend_pid() AS pid";
    let pid = |row: Option<platform::db::Row>| row.unwrap().get::<i32>("pid").unwrap();
    let first = pid(db.lookup(PID, &[]).await.unwrap());
    // Ended (and waited for) from another thread while this runtime's only thread
    // waits too: the shared client's connection task cannot notice before the
    // next lookup goes out on it.
    let url = database.url.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let admin = platform::testing::connect(&url).await;
            let ended = admin
                .query_one("SELECT pg_terminate_backend($1, 5000) AS ended", &[&first])
                .await
                .unwrap();
            assert!(ended.get::<bool>("ended").unwrap());
            admin.close().await;
        });
    })
    .join()
    .unwrap();
    let second = pid(db.lookup(PID, &[]).await.expect("the lookup runs again"));
    assert_ne!(first, second, "a new connection answers");
    db.close().await;
}

enum Held {
    Sqlite(#[allow(dead_code)] sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(#[allow(dead_code)] deadpool_postgres::Object),
}

#[tokio::test]
async fn unreachable_postgres_answers_503_and_unhealthy() {
    // Nothing listens on port 1: every checkout fails fast.
    let database = TestDatabase::create(Backend::Sqlite).await;
    let config = config_with(
        "postgres://postgres@127.0.0.1:1/none",
        &[("USER_SERVICE_DATABASE_ACQUIRE_TIMEOUT_MS", "300")],
    );
    let db = platform::db::connect_lazy(&config.database);
    let shutdown = CancellationToken::new();
    let app = start(
        Application::with_database(config.clone(), db, shutdown.clone())
            .await
            .unwrap(),
        shutdown,
        database,
        config,
    );
    let started = std::time::Instant::now();
    app.get("/api/v1/users/1")
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    app.post_json(
        "/api/v1/users",
        &json!({"email": "a@example.com", "name": "Jo", "age": 3}),
    )
    .await
    .assert_error(503, "SERVICE_UNAVAILABLE");
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["status"], "unhealthy");
    assert_eq!(
        app.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);
    // Generous bound: proves "no hang", not speed.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn startup_gives_up_on_an_unreachable_database_with_a_clear_error() {
    let config = config_with(
        "postgres://postgres@127.0.0.1:1/none",
        &[("USER_SERVICE_DATABASE_STARTUP_TIMEOUT", "1")],
    );
    let err = Application::build(config, CancellationToken::new())
        .await
        .err()
        .expect("start-up must fail");
    let message = format!("{err:#}");
    assert!(message.contains("127.0.0.1:1/none"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_closes() {
    let app = spawn_app(Backend::Sqlite).await;
    app.create_user("bye@example.com", "Bye Bye", 30).await;
    app.shutdown.cancel();
    // The listener closes: new connections are refused soon after.
    let mut refused = false;
    for _ in 0..50 {
        if reqwest::Client::new()
            .get(app.url("/health"))
            .send()
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "server still accepting after shutdown");
}

#[tokio::test]
async fn replicas_starting_together_migrate_one_postgres_database_once() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let starts = (0..4).map(|_| {
        let config = config_with(&database.url, &[]);
        async move { Application::build(config, CancellationToken::new()).await }
    });
    let apps = futures::future::join_all(starts).await;
    assert!(apps.iter().all(Result::is_ok), "every replica starts");
    let applied: i64 = apps[0]
        .as_ref()
        .unwrap()
        .db()
        .query_one("SELECT count(*) AS applied FROM _sqlx_migrations", &[])
        .await
        .unwrap()
        .get("applied")
        .unwrap();
    assert_eq!(
        applied,
        <UserService as Service>::MIGRATIONS.postgres.len() as i64
    );
}
