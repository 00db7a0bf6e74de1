//! The event pipeline under faults, on a `nats-server` of the test's own: the
//! bus away under load, a service killed between commit and publish, and two
//! replicas relaying from one database. Each checks the stream itself: every
//! event of the outbox arrives, none twice, in outbox order.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use platform::events::Event;
use platform::testing::{
    Backend, TemporaryServer, TestDatabase, assert_eventually, outbox_events, poll_until,
    unpublished_events,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{OrderService, StandIn, UserService};

/// Variables that point a service at `nats` with a stream of the test's own.
fn bus_vars(nats: &TemporaryServer, tag: &str) -> Vec<(String, String)> {
    vec![
        ("NATS_URL".to_owned(), nats.url()),
        ("NATS_STREAM".to_owned(), format!("FAULT_{tag}")),
        ("NATS_SUBJECT_PREFIX".to_owned(), format!("fault_{tag}")),
    ]
}

fn as_refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Every message on the stream, in stream order: (event id, resource id).
async fn stream_events(url: &str, stream: &str) -> Vec<(String, String)> {
    let client = async_nats::connect(url).await.expect("nats");
    let context = jetstream::new(client);
    let stream = context.get_stream(stream).await.expect("stream");
    let count = stream.get_info().await.expect("info").state.messages as usize;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(count)
        .messages()
        .await
        .expect("fetch");
    let mut events = Vec::new();
    while let Some(Ok(message)) = messages.next().await {
        let event: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
        events.push((
            event["id"].as_str().unwrap().to_owned(),
            event["resource_id"].as_str().unwrap().to_owned(),
        ));
    }
    events
}

/// The outbox's event ids, in the order they were written.
async fn outbox_ids(url: &str) -> Vec<String> {
    let events: Vec<Event> = outbox_events(url).await;
    events.iter().map(|event| event.id.to_string()).collect()
}

/// Every outbox event is on the stream exactly once, in outbox order.
fn assert_published_once_in_order(outbox: &[String], stream: &[(String, String)]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (id, _) in stream {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    let missing: Vec<_> = outbox
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} never arrived",
        missing.len(),
        outbox.len()
    );
    let on_stream: Vec<&str> = stream.iter().map(|(id, _)| id.as_str()).collect();
    let written: Vec<&str> = outbox.iter().map(String::as_str).collect();
    assert_eq!(on_stream, written, "the stream keeps the outbox's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_away_for_seconds_under_load_loses_nothing_and_duplicates_nothing() {
    let mut nats = TemporaryServer::nats().await;
    let vars = bus_vars(&nats, "away");
    let users = UserService::start_with(Backend::Postgres, &vars).await;
    let mut created = Vec::new();
    let mut create = async |n: usize| {
        for i in 0..n {
            let email = format!("away-{}-{i}@example.com", created.len());
            created.push(users.create_user(&email, true).await);
        }
    };
    create(20).await;
    nats.stop().await;
    // Writes go on while the bus is away: their events wait in the outbox.
    create(40).await;
    // The bus stays away for 10 s in all.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        unpublished_events(users.database_url()).await > 0,
        "the bus was away, yet nothing waits"
    );
    nats.restart().await;
    create(20).await;
    let drained = assert_eventually(
        Duration::from_secs(30),
        || async { unpublished_events(users.database_url()).await == 0 },
        "the outbox did not drain after the bus came back",
    )
    .await;
    let outbox = outbox_ids(users.database_url()).await;
    assert!(outbox.len() >= 80, "{} events", outbox.len());
    let stream = stream_events(&nats.url(), "FAULT_away").await;
    assert_published_once_in_order(&outbox, &stream);
    println!(
        "FIGURES nats_away: {} events, drained {:?} after the bus came back",
        outbox.len(),
        drained
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_relaying_one_database_publish_each_event_once_in_order() {
    let nats = TemporaryServer::nats().await;
    let vars = bus_vars(&nats, "replicas");
    let stand_in = StandIn::start(200, Duration::ZERO).await;
    let database = TestDatabase::create(Backend::Postgres).await;
    let first = OrderService::start_on(&database.url, &stand_in.url(), &as_refs(&vars)).await;
    let second = OrderService::start_on(&database.url, &stand_in.url(), &as_refs(&vars)).await;
    for i in 0..40 {
        let replica = if i % 2 == 0 { &first } else { &second };
        let id = replica.create_order_id(1 + i % 3).await;
        let changed = replica
            .put_json(
                &format!("/api/v1/orders/{id}"),
                &json!({"status": "confirmed"}),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK);
    }
    assert_eventually(
        Duration::from_secs(30),
        || async { unpublished_events(&database.url).await == 0 },
        "the outbox did not drain",
    )
    .await;
    let outbox = outbox_ids(&database.url).await;
    assert_eq!(outbox.len(), 80);
    let stream = stream_events(&nats.url(), "FAULT_replicas").await;
    assert_published_once_in_order(&outbox, &stream);
}

/// The real order-service binary on `port`, over `database_url`, with a stand-in
/// user-service (whose JWKS verifies the test's tokens).
pub(crate) fn spawn_binary(
    port: u16,
    database_url: &str,
    users: &str,
    vars: &[(String, String)],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("ORDER_SERVICE_HOST", "127.0.0.1"),
            ("ORDER_SERVICE_PORT", &port.to_string()),
            ("ORDER_SERVICE_RATE_LIMIT", "0"),
            ("ORDER_SERVICE_DATABASE_URL", database_url),
            ("ORDER_SERVICE_USER_SERVICE_URL", users),
            ("LOG_FORMAT", "json"),
            (
                "AUTH_SERVICE_CLIENT_SECRET",
                crate::helpers::TEST_AUTH.var("AUTH_SERVICE_CLIENT_SECRET"),
            ),
        ])
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("order-service binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_between_commit_and_publish_publishes_after_restart() {
    let mut nats = TemporaryServer::nats().await;
    let vars = bus_vars(&nats, "killed");
    nats.stop().await;
    let stand_in = StandIn::start(200, Duration::ZERO).await;
    let database = TestDatabase::create(Backend::Postgres).await;
    let port = platform::testing::free_port();
    let client = platform::testing::TestClient::new(([127, 0, 0, 1], port).into())
        .with_token(&crate::helpers::TEST_AUTH.admin_token());
    let live = || async {
        let probe = client.http.get(client.url("/health/live")).send().await;
        probe.is_ok_and(|r| r.status() == StatusCode::OK)
    };
    // The bus is away, so the order's event is committed but cannot be
    // published; then the process dies without any shutdown (SIGKILL).
    let mut first = spawn_binary(port, &database.url, &stand_in.url(), &vars);
    assert!(
        poll_until(Duration::from_secs(60), live).await.is_some(),
        "the binary never served"
    );
    let created = client
        .post_json(
            "/api/v1/orders",
            &json!({"user_id": 7, "product_id": "P-K", "quantity": 1, "total_price": 1}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    assert_eq!(
        unpublished_events(&database.url).await,
        1,
        "the event was committed with the order"
    );
    nats.restart().await;
    let mut second = spawn_binary(port, &database.url, &stand_in.url(), &vars);
    let published = poll_until(Duration::from_secs(60), || async {
        unpublished_events(&database.url).await == 0
    })
    .await;
    let _ = second.kill();
    let _ = second.wait();
    assert!(
        published.is_some(),
        "the committed event was not published after the restart"
    );
    let stream = stream_events(&nats.url(), "FAULT_killed").await;
    let order = created.body["data"]["id"].as_i64().unwrap().to_string();
    assert!(
        stream.iter().any(|(_, resource)| *resource == order),
        "{stream:?}"
    );
}
