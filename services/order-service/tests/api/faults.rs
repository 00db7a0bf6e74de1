//! Faults with real processes, real PostgreSQL and real HTTP: user-service dying
//! under load, the order database going away, user-service turning slow.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{OrderService, StandIn, TestClient, spawn_system, stored_orders};
use platform::backend_tests;
use platform::testing::{
    Answer, Load, TemporaryPostgres, assert_documented, assert_eventually, created_ids,
    database_outage_under_load, poll_until,
};

/// Order-service's default request timeout: no answer may take longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Scheduling slack on a loaded machine on top of a server-side bound.
const SLACK: Duration = Duration::from_secs(3);
/// How long user-service stays away in the outage test, at least.
const OUTAGE: Duration = Duration::from_secs(2);
/// Generous bound for the verifier (every 0.2 s in tests) to settle the backlog.
const SETTLE: Duration = Duration::from_secs(30);

/// One step of order load: create an order for `user_id`, then read it back (or
/// the first page when it was not created).
async fn order_step(client: TestClient, user_id: i64) -> Vec<Answer> {
    let body =
        json!({"user_id": user_id, "product_id": "SKU-LOAD", "quantity": 1, "total_price": 9.99});
    let timeout = REQUEST_TIMEOUT + 2 * SLACK;
    let post = client.http.post(client.url("/api/v1/orders")).json(&body);
    let created = Answer::of("POST /orders", post.timeout(timeout)).await;
    let read = match created.created_id() {
        Some(id) => client.http.get(client.url(&format!("/api/v1/orders/{id}"))),
        None => client.http.get(client.url("/api/v1/orders?page_size=20")),
    };
    let read = Answer::of("GET /orders", read.timeout(timeout)).await;
    vec![created, read]
}

/// `workers` tasks creating and reading orders for `users` in turn.
fn order_load(client: &TestClient, users: Vec<i64>, workers: usize) -> Load {
    let client = client.clone();
    Load::start(workers, 50_000, move |_, n| {
        order_step(client.clone(), users[n as usize % users.len()])
    })
}

backend_tests! {
    async fn user_service_dying_under_load_loses_no_order_and_every_one_is_settled_after_recovery(backend) {
        let mut system = spawn_system(backend).await;
        let active = system.users.create_user("load-active@example.com", true).await;
        let inactive = system.users.create_user("load-inactive@example.com", false).await;
        let unknown = 990_000;
        let users = vec![active, active, active, inactive, unknown];
        let orders = &system.orders;
        let load = order_load(&orders.client, users, 6);
        assert_eventually(Duration::from_secs(30), || async { load.count(|a| a.status == Some(201)) >= 20 }, "load is running").await;
        assert_eq!(orders.breaker_state().await, 0.0);

        system.users.stop().await;
        let stopped = Instant::now();
        let opened = assert_eventually(Duration::from_secs(30), || async { orders.breaker_state().await == 2.0 }, "the breaker never opened with user-service gone").await;
        // Orders keep being taken (unverified) while user-service is away, through
        // several open -> half-open -> open rounds (CIRCUIT_BREAKER_TIMEOUT is 0.5 s).
        assert_eventually(Duration::from_secs(30), || async {
            load.count(|a| a.started > stopped && a.status == Some(201)) >= 30
                && stopped.elapsed() >= OUTAGE
        }, "orders were not taken during the outage").await;

        system.users.restart().await;
        let restarted = Instant::now();
        let closed = assert_eventually(Duration::from_secs(30), || async { orders.breaker_state().await == 0.0 }, "the breaker never closed after user-service came back").await;
        let more = load.count(|_| true) + 40;
        poll_until(Duration::from_secs(30), || async { load.count(|_| true) >= more }).await;
        let answers = load.finish().await;

        let statuses = assert_documented(&answers, &[200, 201, 400, 404], REQUEST_TIMEOUT + SLACK);
        let ids = created_ids(&answers);
        let during_outage = answers.iter().filter(|a| a.started > stopped && a.started < restarted && a.created_id().is_some()).count();
        let settled = poll_until(SETTLE, || async {
            stored_orders(orders.database_url()).await.iter().all(|o| o.user_verified)
        }).await;
        let stored = stored_orders(orders.database_url()).await;
        let unsettled: Vec<_> = stored.iter().filter(|o| !o.user_verified).collect();
        assert!(settled.is_some(), "unverified {SETTLE:?} after the load stopped: {unsettled:?}");

        // Each acknowledged order exactly once, and nothing but them.
        let by_id: HashMap<i64, _> = stored.iter().map(|o| (o.id, o)).collect();
        assert_eq!(stored.len(), ids.len(), "orders in the database vs 201 answers");
        for id in &ids {
            let order = by_id.get(id).unwrap_or_else(|| panic!("acknowledged order {id} lost"));
            let (status, reason) = (order.status.as_str(), order.status_reason.as_deref());
            match order.user_id {
                u if u == active => assert_eq!((status, reason), ("pending", None), "{order:?}"),
                u if u == inactive => assert_eq!((status, reason), ("cancelled", Some("user is not active")), "{order:?}"),
                _ => assert_eq!((status, reason), ("cancelled", Some("user not found")), "{order:?}"),
            }
        }
        println!(
            "FIGURES user_service_dies {backend:?}: answers {statuses:?}, {} orders created ({during_outage} during the outage), \
             breaker open {:?} after stop, closed {:?} after restart, outage lasted {:?}, all settled {:?} after the load stopped",
            ids.len(),
            opened,
            closed,
            restarted - stopped,
            settled.unwrap_or_default(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_database_going_away_under_load_is_503_then_recovers_within_5s_losing_nothing() {
    const RECOVERY: Duration = Duration::from_secs(5);
    let postgres = TemporaryPostgres::start().await;
    let url = postgres.url("postgres");
    let stand_in = StandIn::start(200, Duration::ZERO).await;
    let orders = OrderService::start_on(&url, &stand_in.url(), &[]).await;
    let load = order_load(&orders.client, vec![1, 2, 3], 6);

    // As a crash: no clean shutdown of the sessions.
    let outage = database_outage_under_load(
        &postgres,
        "immediate",
        &orders.client,
        load,
        ("POST /orders", "GET /orders"),
        RECOVERY,
        REQUEST_TIMEOUT + SLACK,
    )
    .await;
    let ids = &outage.created;
    let stored: HashSet<i64> = stored_orders(&url).await.iter().map(|o| o.id).collect();
    let lost: Vec<_> = ids.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged orders lost: {lost:?}");
    println!(
        "FIGURES order_db_away: answers {:?}, {} orders created, ready failed {:?} after stop, \
         recovered {:?} after restart, down for {:?}",
        outage.statuses,
        ids.len(),
        outage.ready_failed_after,
        outage.recovered_after,
        outage.up - outage.down,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_against_a_slow_user_service_are_cut_at_the_timeout_then_verified_when_it_is_fast_again()
 {
    let slow = StandIn::start(200, Duration::from_secs(10)).await;
    let orders = OrderService::start(
        platform::testing::Backend::Sqlite,
        &slow.url(),
        &[("ORDER_SERVICE_USER_SERVICE_TIMEOUT_MS", "1000")],
    )
    .await;
    // Twelve at once: every lookup times out (or is rejected once the breaker opens).
    let posts = (0..12).map(|i| order_step(orders.client.clone(), 100 + i));
    let answers: Vec<Answer> = futures::future::join_all(posts)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_documented(&answers, &[200, 201], REQUEST_TIMEOUT + SLACK);
    let created: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.created_id().is_some())
        .collect();
    assert_eq!(
        created.len(),
        12,
        "every order is taken despite the slow dependency"
    );
    for answer in &created {
        assert_eq!(answer.body["data"]["user_verified"], false);
        // Bounded by the 1 s client timeout, not the 10 s the stand-in takes.
        assert!(
            answer.latency() < Duration::from_secs(1) + SLACK,
            "{:?}",
            answer.latency()
        );
    }
    let slowest = created
        .iter()
        .map(|a| a.latency())
        .max()
        .unwrap_or_default();
    assert_eventually(
        Duration::from_secs(10),
        || async { orders.breaker_state().await == 2.0 },
        "timeouts did not trip the breaker",
    )
    .await;

    slow.state.lock().unwrap().delay = Duration::ZERO;
    let closed = assert_eventually(
        Duration::from_secs(30),
        || async { orders.breaker_state().await == 0.0 },
        "the breaker never closed once user-service was fast",
    )
    .await;
    let settled = assert_eventually(
        SETTLE,
        || async {
            stored_orders(orders.database_url())
                .await
                .iter()
                .all(|o| o.user_verified && o.status == "pending")
        },
        "the timed-out orders were not verified",
    )
    .await;
    println!(
        "FIGURES slow_dependency: 12 concurrent orders, slowest {slowest:?} (client timeout 1 s, stand-in 10 s), \
         breaker closed {:?} after the stand-in turned fast, all verified {:?} later",
        closed, settled,
    );
}
