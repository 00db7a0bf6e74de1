//! Redis for the rate-limit tests: a key prefix of the test's own on the
//! machine's shared server (the throwaway one to stop under load is in
//! `throwaway.rs`).

/// The shared server for the Redis tests; `TEST_REDIS_URL` overrides it.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses (its keys expire by themselves).
pub fn redis_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}
