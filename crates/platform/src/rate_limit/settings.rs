//! What the limits are and where they live, from the environment.

use crate::config::{ConfigError, Env};

/// The limits beyond the per-IP rate (`<P>_RATE_LIMIT`), and where they live.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    /// `<P>_RATE_LIMIT_PER_SUBJECT`: requests per second per token subject; 0 (the default) turns it off.
    pub per_subject: u32,
    /// `<P>_RATE_LIMIT_AUTH`: requests per second per IP on the login and token endpoints.
    pub auth: u32,
    /// `REDIS_URL` (shared by every service): the buckets live there when set.
    pub redis_url: Option<String>,
    /// `<P>_RATE_LIMIT_REDIS_PREFIX`: the start of this service's keys in Redis.
    pub redis_prefix: String,
    /// `<P>_RATE_LIMIT_FAIL_CLOSED`: refuse (503) instead of limiting in-process while Redis is away.
    pub fail_closed: bool,
}

impl LimitSettings {
    /// # Errors
    /// A [`ConfigError`] naming the variable that is set but invalid.
    pub fn from_env(env: &Env<'_>, service_name: &str) -> Result<Self, ConfigError> {
        // Not prefixed: one Redis for every service, as NATS_URL.
        let shared = env.with_prefix("");
        Ok(Self {
            per_subject: env.parse_or("RATE_LIMIT_PER_SUBJECT", 0)?,
            auth: env.parse_or("RATE_LIMIT_AUTH", 10)?,
            redis_url: shared.raw("REDIS_URL"),
            redis_prefix: env
                .raw("RATE_LIMIT_REDIS_PREFIX")
                .unwrap_or_else(|| format!("ratelimit:{service_name}:")),
            fail_closed: env.parse_or("RATE_LIMIT_FAIL_CLOSED", false)?,
        })
    }
}
