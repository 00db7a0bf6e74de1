//! Users as user-service last described them, kept in this process so that
//! placing and reading an order need no call to user-service: bounded by entries
//! and by age (`ORDER_SERVICE_USER_CACHE_CAPACITY`, `ORDER_SERVICE_USER_CACHE_TTL`),
//! and forgotten as soon as a `user.*` event about them arrives, so a user
//! deactivated or deleted is refused within the event's delivery time, not the TTL.
//!
//! An entry is trusted only while the events are arriving ([`Liveness`]) and only
//! if it was stored in the current subscription session: an event missed while
//! the broker was away cannot leave a stale entry behind. A lookup that an event
//! overtook (invalidation while user-service was answering) does not store its
//! answer. Without an event bus there is nothing to invalidate with, so nothing
//! is cached. Misses go to user-service through the breaker, unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use platform::config::{ConfigError, Env};
use platform::events::Event;
use platform::events::broadcast::Liveness;
use platform::metrics::Metrics;
use prometheus::IntCounterVec;

use crate::user_client::RemoteUser;

/// `ORDER_SERVICE_USER_CACHE_*`.
#[derive(Debug, Clone)]
pub struct UserCacheSettings {
    /// How long an entry is used at most; zero turns the cache off.
    pub ttl: Duration,
    /// How many users are kept at most.
    pub capacity: u64,
}

impl UserCacheSettings {
    /// # Errors
    /// A [`ConfigError`] naming the variable that is set but invalid.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            ttl: env.fractional_seconds_or("USER_CACHE_TTL", 60.0)?,
            capacity: env.parse_or("USER_CACHE_CAPACITY", 10_000)?,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }
}

#[derive(Clone)]
struct Entry {
    session: u64,
    user: RemoteUser,
}

/// Taken before asking user-service; the answer is stored only if nothing was
/// invalidated and the subscription did not restart meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    session: u64,
    invalidations: u64,
}

/// The cache of one order-service process.
pub struct UserCache {
    entries: Option<Cache<i64, Entry>>,
    liveness: Liveness,
    invalidations: AtomicU64,
    outcomes: Option<IntCounterVec>,
}

impl UserCache {
    /// A cache that never holds anything.
    pub fn disabled() -> Self {
        Self {
            entries: None,
            liveness: Liveness::default(),
            invalidations: AtomicU64::new(0),
            outcomes: None,
        }
    }

    /// A cache trusted while `liveness` has a session; registers
    /// `order_service_user_cache_requests_total{outcome="hit|miss"}`.
    pub fn new(settings: &UserCacheSettings, liveness: Liveness, metrics: &Metrics) -> Self {
        if !settings.enabled() {
            return Self::disabled();
        }
        let outcomes = metrics.labelled_counter(
            "order_service_user_cache_requests_total",
            "User lookups answered from the cache (hit) or by user-service (miss)",
            "outcome",
            &["hit", "miss"],
        );
        Self {
            entries: Some(
                Cache::builder()
                    .max_capacity(settings.capacity)
                    .time_to_live(settings.ttl)
                    .build(),
            ),
            liveness,
            invalidations: AtomicU64::new(0),
            outcomes: Some(outcomes),
        }
    }

    /// The user, if held and trustworthy now.
    pub fn get(&self, user_id: i64) -> Option<RemoteUser> {
        let entries = self.entries.as_ref()?;
        let session = self.liveness.session()?;
        let hit = entries
            .get(&user_id)
            .filter(|entry| entry.session == session)
            .map(|entry| entry.user);
        if let Some(outcomes) = &self.outcomes {
            let outcome = if hit.is_some() { "hit" } else { "miss" };
            outcomes.with_label_values(&[outcome]).inc();
        }
        hit
    }

    /// What a lookup about to ask user-service must show to store its answer;
    /// `None` when nothing may be stored now.
    pub fn ticket(&self) -> Option<Ticket> {
        self.entries.as_ref()?;
        Some(Ticket {
            session: self.liveness.session()?,
            invalidations: self.invalidations.load(Ordering::Acquire),
        })
    }

    /// Stores user-service's answer unless an invalidation or a new session came
    /// after `ticket` was taken.
    pub fn store(&self, ticket: Ticket, user: &RemoteUser) {
        let Some(entries) = &self.entries else { return };
        entries.insert(
            user.id,
            Entry {
                session: ticket.session,
                user: user.clone(),
            },
        );
        // Checked after the insert: an invalidation racing with it either ran
        // before (seen here, entry removed) or after (it removes the entry itself).
        let overtaken = self.invalidations.load(Ordering::Acquire) != ticket.invalidations
            || self.liveness.session() != Some(ticket.session);
        if overtaken {
            entries.invalidate(&user.id);
        }
    }

    /// Forgets the user an event is about (every `user.*` event).
    pub fn on_event(&self, event: &Event) {
        if !event.event_type.starts_with("user.") {
            return;
        }
        if let Ok(user_id) = event.resource_id.parse::<i64>() {
            self.invalidate(user_id);
        }
    }

    pub fn invalidate(&self, user_id: i64) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = &self.entries {
            entries.invalidate(&user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, active: bool) -> RemoteUser {
        RemoteUser {
            id,
            email: format!("u{id}@example.com"),
            name: "Cached User".to_owned(),
            active,
        }
    }

    fn cache(ttl: f64, liveness: Liveness) -> UserCache {
        let settings = UserCacheSettings {
            ttl: Duration::from_secs_f64(ttl),
            capacity: 100,
        };
        UserCache::new(&settings, liveness, &Metrics::new("test"))
    }

    fn event(event_type: &str, id: i64) -> Event {
        platform::events::Origin::system().event(
            event_type,
            ("user", id.to_string()),
            serde_json::json!({}),
        )
    }

    #[test]
    fn a_stored_user_is_served_until_an_event_about_it_arrives() {
        let cache = cache(300.0, Liveness::always());
        let ticket = cache.ticket().expect("live");
        cache.store(ticket, &user(7, true));
        assert_eq!(cache.get(7), Some(user(7, true)));
        cache.on_event(&event("order.created", 7));
        assert!(cache.get(7).is_some(), "not a user event");
        cache.on_event(&event("user.deactivated", 7));
        assert_eq!(cache.get(7), None);
    }

    #[test]
    fn an_answer_overtaken_by_an_invalidation_is_not_stored() {
        let cache = cache(300.0, Liveness::always());
        let ticket = cache.ticket().expect("live");
        cache.invalidate(7);
        cache.store(ticket, &user(7, true));
        assert_eq!(cache.get(7), None);
    }

    #[test]
    fn zero_ttl_or_no_event_subscription_caches_nothing() {
        let off = cache(0.0, Liveness::always());
        assert!(off.ticket().is_none());
        assert_eq!(off.get(7), None);
        let deaf = cache(300.0, Liveness::default());
        assert!(deaf.ticket().is_none());
        assert_eq!(deaf.get(7), None);
    }
}
