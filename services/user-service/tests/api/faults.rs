//! Faults with real processes, real PostgreSQL and real HTTP: the database going
//! away under load, and SIGTERM to the real binary under load.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, ServiceProcess, TestClient, TestDatabase};
use platform::backend_tests;
use platform::testing::{
    Answer, Load, TemporaryPostgres, assert_eventually, created_ids, database_outage_under_load,
    poll_until,
};

/// `USER_SERVICE_REQUEST_TIMEOUT` in these tests: no answer may take longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scheduling slack on a loaded machine on top of a server-side bound.
const SLACK: Duration = Duration::from_secs(3);
/// The recovery bound, from the database accepting connections again.
const RECOVERY: Duration = Duration::from_secs(5);

/// One step of user load: create a user, then read it back (or the first page).
async fn user_step(client: TestClient, n: u64) -> Vec<Answer> {
    let body = json!({"email": format!("load{n}@example.com"), "name": "Load Tester", "age": 30});
    let timeout = REQUEST_TIMEOUT + 2 * SLACK;
    let post = client
        .http
        .post(client.url("/api/v1/users"))
        .json(&body)
        .timeout(timeout);
    let created = Answer::of("POST /users", post).await;
    let read = match created.created_id() {
        Some(id) => client.http.get(client.url(&format!("/api/v1/users/{id}"))),
        None => client.http.get(client.url("/api/v1/users?page_size=20")),
    };
    let read = Answer::of("GET /users", read.timeout(timeout)).await;
    vec![created, read]
}

fn user_load(client: &TestClient, workers: usize, max_steps: u64) -> Load {
    let client = client.clone();
    Load::start(workers, max_steps, move |_, n| user_step(client.clone(), n))
}

/// How many of `ids` are rows in `users`, read straight from the database.
async fn stored(database_url: &str, ids: &[i64]) -> usize {
    let db = platform::testing::connect(database_url).await;
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let sql = format!("SELECT id FROM users WHERE id IN ({list})");
    let rows = db.query(&sql, &[]).await.expect("count users");
    db.close().await;
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_under_load_is_503_then_recovers_within_5s_losing_nothing() {
    let postgres = TemporaryPostgres::start().await;
    let url = postgres.url("postgres");
    let app = spawn_app_with_url(&url).await;
    let load = user_load(&app.client, 6, 100_000);

    let outage = database_outage_under_load(
        &postgres,
        "fast",
        &app.client,
        load,
        ("POST /users", "GET /users"),
        RECOVERY,
        REQUEST_TIMEOUT + SLACK,
    )
    .await;
    assert_eq!(
        stored(&url, &outage.created).await,
        outage.created.len(),
        "an acknowledged user was lost"
    );
    let slowest = outage
        .answers
        .iter()
        .map(Answer::latency)
        .max()
        .unwrap_or_default();
    println!(
        "FIGURES postgres_away: answers {:?}, created {}, ready failed {:?} after stop, \
         down for {:?}, first 2xx {:?} and full recovery {:?} after restart, slowest answer {slowest:?}",
        outage.statuses,
        outage.created.len(),
        outage.ready_failed_after,
        outage.up - outage.down,
        outage.first_success_after,
        outage.recovered_after,
    );
}

/// The in-process service over `url`, with the test request timeout.
async fn spawn_app_with_url(url: &str) -> crate::helpers::TestApp {
    let config = crate::helpers::config_with(
        url,
        &[(
            "USER_SERVICE_REQUEST_TIMEOUT",
            &REQUEST_TIMEOUT.as_secs().to_string(),
        )],
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = user_service::Application::build(config.clone(), shutdown.clone())
        .await
        .expect("application starts");
    crate::helpers::start(app, shutdown, TestDatabase::external(url), config)
}

/// Opens a connection and sends a POST whose body is only half written, so the
/// request is in the server's hands (headers read, handler waiting for the body).
async fn half_sent_post(client: &TestClient, email: &str) -> (TcpStream, Vec<u8>) {
    // Anonymous self-registration: the raw request carries no token.
    let body =
        json!({"email": email, "name": "Slow Sender", "age": 40, "password": "slow-sender-pw"})
            .to_string();
    let mut stream = TcpStream::connect(client.address).await.expect("connect");
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        client.address,
        body.len()
    );
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(first).await.expect("first half");
    (stream, rest.to_vec())
}

/// Sends the rest of the body and reads the whole answer.
async fn finish_post(mut stream: TcpStream, rest: &[u8]) -> String {
    stream.write_all(rest).await.expect("second half");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the answer comes")
        .expect("read answer");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn in_flight(client: &TestClient) -> f64 {
    platform::testing::metric_value(&client.metrics().await, "user_service_requests_in_flight")
        .unwrap_or(0.0)
}

backend_tests! {
    async fn sigterm_under_load_drains_accepted_requests_refuses_new_ones_and_exits_0(backend) {
        const GRACE: Duration = Duration::from_secs(10);
        let database = TestDatabase::create(backend).await;
        let mut service = ServiceProcess::spawn(
            &database.url,
            &[("USER_SERVICE_SHUTDOWN_TIMEOUT", &GRACE.as_secs().to_string())],
        );
        let client = service.client.clone();
        assert_eventually(Duration::from_secs(60), || async {
            client.http.get(client.url("/health/ready")).send().await.is_ok_and(|r| r.status().is_success())
        }, "the binary never became ready").await;
        let client = service.admin_client().await;

        // Two requests surely in the server's hands (the in-flight gauge counts them
        // and the /metrics call itself), waiting for the rest of their bodies.
        let slow_a = half_sent_post(&client, "slow-a@example.com").await;
        let slow_b = half_sent_post(&client, "slow-b@example.com").await;
        assert_eventually(Duration::from_secs(30), || async { in_flight(&client).await >= 3.0 }, "the half-sent requests never reached a handler").await;

        let load = user_load(&client, 8, 100_000);
        poll_until(Duration::from_secs(30), || async { load.count(|a| a.is_success()) >= 100 }).await;
        // Taken before `kill` runs: the signal lands at or after this instant.
        let signalled = Instant::now();
        service.terminate();

        // New connections: refused once the listener closes (the half-sent requests
        // keep the process draining meanwhile).
        let closed = assert_eventually(Duration::from_secs(5), || async {
            TcpStream::connect(client.address).await.is_err()
        }, "still accepting connections 5 s after SIGTERM").await;
        let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
        match fresh.get(client.url("/api/v1/users")).send().await {
            Err(e) => assert!(e.is_connect(), "{e:?}"),
            Ok(r) => assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "a new connection was served while draining"),
        }
        let answers = load.finish().await;
        assert!(service.child.try_wait().expect("try_wait").is_none(), "exited with requests in flight");

        // The accepted slow requests complete, successfully, after the signal.
        for (stream, rest) in [slow_a, slow_b] {
            let answer = finish_post(stream, &rest).await;
            assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        }
        let status = service.wait_exit(GRACE + SLACK).await;
        let exit_after = signalled.elapsed();
        let status = status.unwrap_or_else(|| panic!("still running {exit_after:?} after SIGTERM"));
        assert!(status.success(), "exit status {status}");
        assert!(exit_after < GRACE + SLACK, "exited after {exit_after:?}");

        // Every request that got an answer was served fully and successfully; a
        // request without one never reached a handler (its connection was idle when
        // the draining server closed it) and was sent at or after the signal.
        let (mut refused, mut unanswered) = (0, 0);
        for answer in &answers {
            match (&answer.error, answer.status) {
                (None, Some(200 | 201)) => {}
                (Some(error), None) => {
                    assert!(answer.finished > signalled, "failed before the signal: {answer:?}");
                    if error.contains("ConnectError") { refused += 1 } else { unanswered += 1 }
                }
                _ => panic!("an accepted request failed: {answer:?}"),
            }
        }
        let in_flight_ok = answers.iter().filter(|a| a.started < signalled && a.finished > signalled && a.is_success()).count();
        let ids = created_ids(&answers);
        assert_eq!(stored(&database.url, &ids).await, ids.len(), "an acknowledged user was lost");
        println!(
            "FIGURES sigterm {backend:?}: {} answers ({} ok, {refused} refused connections, {unanswered} idle connections closed unanswered, \
             {in_flight_ok} in flight at the signal completed 2xx), listener closed {:?} after SIGTERM, \
             exit 0 after {exit_after:?} (grace {GRACE:?})",
            answers.len(),
            answers.iter().filter(|a| a.is_success()).count(),
            closed,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stuck_past_the_grace_period_does_not_keep_the_process_alive() {
    const GRACE: Duration = Duration::from_secs(2);
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut service = ServiceProcess::spawn(
        &database.url,
        &[(
            "USER_SERVICE_SHUTDOWN_TIMEOUT",
            &GRACE.as_secs().to_string(),
        )],
    );
    let client = service.client.clone();
    let (mut stuck, _never_sent) = half_sent_post(&client, "stuck@example.com").await;
    assert_eventually(
        Duration::from_secs(30),
        || async { in_flight(&client).await >= 2.0 },
        "the half-sent request never reached a handler",
    )
    .await;

    let signalled = Instant::now();
    service.terminate();
    let status = service.wait_exit(GRACE + SLACK).await;
    let exit_after = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {exit_after:?} after SIGTERM"));
    assert!(status.success(), "exit status {status}");
    assert!(
        exit_after >= GRACE,
        "gave up on the in-flight request after only {exit_after:?}"
    );
    let mut rest = Vec::new();
    let _ = stuck.read_to_end(&mut rest).await;
    println!("FIGURES grace: exit 0 after {exit_after:?} with a request stuck (grace {GRACE:?})");
}
