//! The rate limit shared in Redis by two replicas of user-service on one
//! PostgreSQL: a burst from one client spread over both is held to one bucket;
//! with Redis stopped under load they keep answering (no 5xx) from their
//! in-process buckets, and share the limit again once it is back.

use std::time::{Duration, Instant};

use platform::testing::{
    Answer, Backend, Load, RunningService, TemporaryServer, TestClient, TestDatabase,
    assert_eventually, metric_value, redis_prefix, redis_url, test_auth, test_config,
};
use reqwest::StatusCode;

/// Requests per second per client; the burst is twice this.
const RATE: u32 = 5;

/// Two replicas over one database, limiting through `redis` with a prefix of their own.
async fn replicas(database: &TestDatabase, redis: &str, prefix: &str) -> [RunningService; 2] {
    let rate = RATE.to_string();
    let overrides = [
        ("USER_SERVICE_RATE_LIMIT", rate.as_str()),
        ("USER_SERVICE_TRUSTED_PROXIES", "127.0.0.1"),
        ("USER_SERVICE_RATE_LIMIT_REDIS_PREFIX", prefix),
        ("REDIS_URL", redis),
    ];
    let start = || async {
        let config = test_config::<user_service::UserService>(&database.url, &overrides);
        let mut service = RunningService::spawn(config).await;
        service.client = service.client.with_token(&test_auth().admin_token());
        service
    };
    [start().await, start().await]
}

/// `GET /api/v1/users` as seen from `client_ip` (forwarded by the trusted proxy).
async fn ask(client: &TestClient, client_ip: &str) -> Answer {
    let request = client
        .http
        .get(client.url("/api/v1/users"))
        .header("x-forwarded-for", client_ip);
    Answer::of("GET /users", request).await
}

/// Sends `count` requests from `client_ip`, alternating replicas; returns how
/// many were let through and how long the burst took.
async fn burst(replicas: &[RunningService; 2], client_ip: &str, count: usize) -> (u64, Duration) {
    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..count {
        let answer = ask(&replicas[i % 2].client, client_ip).await;
        match answer.status {
            Some(200) => allowed += 1,
            Some(429) => {
                assert_eq!(answer.code(), Some("RATE_LIMIT_EXCEEDED"), "{answer:?}");
            }
            _ => panic!("neither served nor limited: {answer:?}"),
        }
    }
    (allowed, started.elapsed())
}

/// The most one bucket lets through in `elapsed`: its burst and what refilled.
fn one_bucket(elapsed: Duration) -> u64 {
    u64::from(2 * RATE) + (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as u64
}

/// Waits until every replica's fallback gauge reads `value` (1 while Redis is
/// away), failing with `failure` after 30 s.
async fn wait_for_fallback(replicas: &[RunningService], value: f64, failure: &str) {
    for replica in replicas {
        assert_eventually(
            Duration::from_secs(30),
            || async { fallback(replica).await == Some(value) },
            failure,
        )
        .await;
    }
}

async fn fallback(service: &RunningService) -> Option<f64> {
    metric_value(
        &service.metrics().await,
        "user_service_rate_limiter_fallback",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spread_over_two_replicas_is_held_to_one_shared_bucket() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let replicas = replicas(&database, &redis_url(), &redis_prefix()).await;
    let (allowed, elapsed) = burst(&replicas, "203.0.113.10", 40).await;
    assert!(
        allowed >= u64::from(2 * RATE) && allowed <= one_bucket(elapsed),
        "{allowed} of 40 let through in {elapsed:?}; one bucket allows {}",
        one_bucket(elapsed)
    );
    // Another client has a bucket of its own.
    assert_eq!(
        ask(&replicas[1].client, "203.0.113.11").await.status,
        Some(200)
    );
    let limited = ask(&replicas[0].client, "203.0.113.10").await;
    assert_eq!(limited.status, Some(429));
    println!("FIGURES shared limit: {allowed} of 40 let through by two replicas in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_under_load_replicas_answer_without_5xx_and_share_the_limit_again() {
    let mut redis = TemporaryServer::redis().await;
    let database = TestDatabase::create(Backend::Postgres).await;
    let replicas = replicas(&database, &redis.url(), &redis_prefix()).await;
    let clients = [replicas[0].client.clone(), replicas[1].client.clone()];
    // Every request from a client of its own: the load itself is never limited.
    let load = Load::start(4, 100_000, move |_, n| {
        let client = clients[(n % 2) as usize].clone();
        async move { vec![ask(&client, &format!("198.18.{}.{}", n / 250 % 250, n % 250)).await] }
    });
    assert_eventually(
        Duration::from_secs(30),
        || async { load.count(Answer::is_success) >= 50 },
        "the load never got going",
    )
    .await;

    redis.stop().await;
    wait_for_fallback(
        &replicas,
        1.0,
        "a replica never fell back to its own limiter",
    )
    .await;
    let down = load.count(|_| true);
    assert_eventually(
        Duration::from_secs(30),
        || async { load.count(|_| true) >= down + 100 },
        "the load stalled while Redis was down",
    )
    .await;

    redis.restart().await;
    wait_for_fallback(&replicas, 0.0, "a replica never returned to Redis").await;
    let answers = load.finish().await;
    for answer in &answers {
        assert!(
            answer.is_success(),
            "a request failed with Redis away: {answer:?}"
        );
    }
    let (allowed, elapsed) = burst(&replicas, "203.0.113.20", 40).await;
    assert!(
        allowed <= one_bucket(elapsed),
        "{allowed} of 40 let through after Redis returned"
    );
    assert_eq!(
        StatusCode::TOO_MANY_REQUESTS.as_u16(),
        ask(&replicas[0].client, "203.0.113.20")
            .await
            .status
            .unwrap()
    );
    println!(
        "FIGURES redis outage: {} answers, all 2xx, with Redis stopped and restarted; then {allowed} of 40 let through by two replicas in {elapsed:?}",
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subject_has_its_own_bucket_whatever_address_it_comes_from() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let overrides = [
        ("USER_SERVICE_RATE_LIMIT", "100"),
        ("USER_SERVICE_RATE_LIMIT_PER_SUBJECT", "1"),
        ("USER_SERVICE_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let config = test_config::<user_service::UserService>(&database.url, &overrides);
    let service = RunningService::spawn(config).await;
    let admin = service.client.with_token(&test_auth().admin_token());
    let statuses: Vec<_> = statuses_from(&admin, 3).await;
    assert_eq!(statuses, [Some(200), Some(200), Some(429)]);
    // Anonymous requests are held to the per-IP limit only.
    assert_eq!(ask(&service.client, "203.0.113.40").await.status, Some(401));
}

/// `count` requests from `client`, each from another forwarded address.
async fn statuses_from(client: &TestClient, count: usize) -> Vec<Option<u16>> {
    let mut statuses = Vec::new();
    for i in 0..count {
        statuses.push(ask(client, &format!("203.0.113.{}", 30 + i)).await.status);
    }
    statuses
}
