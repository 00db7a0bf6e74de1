//! Rolling restarts: SIGTERM to the real binary under load from clients that
//! open a new connection per request. With a shutdown delay, readiness fails at
//! once while the server keeps accepting, so a client that stops sending when
//! readiness fails (as a load balancer does) loses no request.

use std::time::{Duration, Instant};

use platform::backend_tests;
use platform::testing::{
    Answer, Load, TestClient, TestDatabase, assert_eventually, free_port, poll_until,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::bus_faults::spawn_binary;
use crate::helpers::{StandIn, TEST_AUTH};

/// Seconds the server keeps accepting after SIGTERM.
const DELAY: &str = "3";

/// `workers` clients placing orders, each request on a connection of its own.
fn new_connection_load(client: &TestClient, workers: usize) -> Load {
    let url = client.url("/api/v1/orders");
    let token = TEST_AUTH.admin_token();
    Load::start(workers, 100_000, move |_, n| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            // No idle connection is kept, so every request opens a new one.
            let http = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let body = json!({"user_id": 1 + n % 5, "product_id": "P-TERM", "quantity": 1, "total_price": 2});
            vec![
                Answer::of(
                    "POST /orders",
                    http.post(url).bearer_auth(token).json(&body),
                )
                .await,
            ]
        }
    })
}

/// Polls for the exit status for at most `limit`.
async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

backend_tests! {
    async fn sigterm_with_a_shutdown_delay_cuts_no_request_of_new_connection_clients_and_exits_0(backend) {
        let stand_in = StandIn::start(200, Duration::ZERO).await;
        let database = TestDatabase::create(backend).await;
        let port = free_port();
        let vars = [("ORDER_SERVICE_SHUTDOWN_DELAY", DELAY), ("ORDER_SERVICE_SHUTDOWN_TIMEOUT", "10")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut child = spawn_binary(port, &database.url, &stand_in.url(), &vars);
        let client = TestClient::new(([127, 0, 0, 1], port).into()).with_token(&TEST_AUTH.admin_token());
        assert_eventually(Duration::from_secs(60), || async {
            client.http.get(client.url("/health/ready")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
        }, "the binary never became ready").await;

        let load = new_connection_load(&client, 6);
        let running = poll_until(Duration::from_secs(60), || async { load.count(Answer::is_success) >= 100 }).await;
        assert!(running.is_some(), "the load never got going: {:?}", load.answers().last());
        let signalled = Instant::now();
        let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(kill.expect("kill runs").success(), "kill -TERM failed");

        // The load balancer's view: readiness fails, so it stops sending.
        let unready = assert_eventually(Duration::from_secs(10), || async {
            client.get("/health/ready").await.status == StatusCode::SERVICE_UNAVAILABLE
        }, "readiness kept passing after SIGTERM").await;
        // A keep-alive client is told to go elsewhere.
        let draining = client.get("/api/v1/orders").await;
        assert_eq!(draining.status, StatusCode::OK);
        assert_eq!(draining.headers.get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
        let answers = load.finish().await;

        let status = wait_exit(&mut child, Duration::from_secs(30)).await;
        let exit_after = signalled.elapsed();
        let status = status.unwrap_or_else(|| panic!("still running {exit_after:?} after SIGTERM"));
        assert!(status.success(), "exit status {status}");
        let cut: Vec<_> = answers.iter().filter(|a| !a.is_success()).collect();
        assert!(cut.is_empty(), "{} of {} requests cut: {:?}", cut.len(), answers.len(), cut.first());
        let after_signal = answers.iter().filter(|a| a.started > signalled).count();
        assert!(after_signal > 0, "no request was sent after the signal");
        println!(
            "FIGURES sigterm-delay {backend:?}: {} requests on new connections, 0 cut, {after_signal} sent after SIGTERM \
             (readiness failed after {:?}), exit 0 after {exit_after:?} (delay {DELAY} s)",
            answers.len(),
            unready,
        );
    }
}
