//! Domain events: what changed, who did it, and where. A service writes each
//! event into its outbox in the same transaction as the change ([`outbox`]); a
//! relay publishes the outbox to NATS JetStream in order ([`relay`]); consumers
//! receive them at least once and store them idempotently ([`consumer`]).
//!
//! Without a broker, the one-process launcher delivers events in-process through
//! the same outbox and relay ([`bus::InProcessBus`]), so nothing is lost there
//! either; a service run alone without `NATS_URL` keeps them in its outbox.

pub mod broadcast;
pub mod bus;
pub mod consumer;
pub mod outbox;
pub mod relay;
mod trace;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Caller;

pub use bus::{Bus, EventSettings, Handler, InProcessBus, NatsBus};

/// The JetStream stream every service publishes to and consumers read from
/// (`NATS_STREAM` changes it).
pub const STREAM: &str = "EVENTS";
/// The subjects of [`STREAM`]: `events.<domain>.<what>` (`NATS_SUBJECT_PREFIX`
/// replaces `events`).
pub const SUBJECTS: [&str; 3] = ["events.users.*", "events.orders.*", "events.auth.*"];

/// One thing that happened. Never holds a password, hash or token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// UUID v7: unique, and ordered by time of creation.
    #[schema(value_type = String, format = "uuid")]
    pub id: Uuid,
    /// `user.created`, `order.status_changed`, ...
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(serialize_with = "crate::timestamp::rfc3339")]
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    /// `user`, `order` or `auth`.
    pub resource_type: String,
    pub resource_id: String,
    /// The `X-Request-ID` of the request that caused it, if any.
    pub request_id: Option<String>,
    /// What changed (the resource as answered, or from/to for a status).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Who caused an event: a token's subject and roles, `anonymous` (no token,
/// e.g. self-registration or a failed login) or `system` (background work).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub sub: String,
    pub roles: Vec<String>,
}

impl Actor {
    pub fn of(caller: &Caller) -> Self {
        Self {
            sub: caller.subject().to_owned(),
            roles: caller
                .roles()
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
        }
    }

    /// The caller, or `anonymous` for a request without a token.
    pub fn of_optional(caller: Option<&Caller>) -> Self {
        caller.map_or_else(
            || Self {
                sub: "anonymous".to_owned(),
                roles: Vec::new(),
            },
            Self::of,
        )
    }

    /// Background work of the service itself.
    pub fn system() -> Self {
        Self {
            sub: "system".to_owned(),
            roles: Vec::new(),
        }
    }
}

/// Where a change comes from: who (the actor) and which request. Stores take it
/// to write the change's event and its `created_by` / `updated_by`.
#[derive(Debug, Clone)]
pub struct Origin {
    pub actor: Actor,
    pub request_id: Option<String>,
}

impl Origin {
    /// A request's origin: its caller (or anonymous) and its request id.
    pub fn request(caller: Option<&Caller>, request_id: Option<String>) -> Self {
        Self {
            actor: Actor::of_optional(caller),
            request_id,
        }
    }

    /// Background work of the service itself.
    pub fn system() -> Self {
        Self {
            actor: Actor::system(),
            request_id: None,
        }
    }

    /// The subject recorded as `created_by` / `updated_by`; none for anonymous.
    pub fn subject(&self) -> Option<String> {
        (self.actor.sub != "anonymous").then(|| self.actor.sub.clone())
    }

    /// An event of this origin.
    pub fn event(
        &self,
        event_type: &str,
        resource: (&str, String),
        payload: serde_json::Value,
    ) -> Event {
        Event::new(
            event_type,
            self.actor.clone(),
            resource,
            self.request_id.clone(),
            payload,
        )
    }
}

impl Event {
    /// A new event, now, with a fresh id.
    pub fn new(
        event_type: &str,
        actor: Actor,
        resource: (&str, String),
        request_id: Option<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            occurred_at: crate::db::now(),
            actor,
            resource_type: resource.0.to_owned(),
            resource_id: resource.1,
            request_id,
            payload,
        }
    }

    /// The subject it is published on: `user.created` -> `events.users.created`.
    pub fn subject(&self) -> String {
        let (domain, what) = self
            .event_type
            .split_once('.')
            .unwrap_or(("misc", self.event_type.as_str()));
        let domain = match domain {
            "user" => "users",
            "order" => "orders",
            other => other,
        };
        format!("events.{domain}.{what}")
    }
}

/// The longest pause before reaching the bus again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sleeps `pause`; `true` when shutdown came first.
async fn sleep_or_stop(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// The pauses of a subscriber between interruptions: from 200 ms, doubling up
/// to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(200))
    }

    /// Sleeps the pause (the next is twice as long); `true` when shutdown came first.
    async fn sleep_or_stop(&mut self, shutdown: &CancellationToken) -> bool {
        let pause = self.0;
        self.0 = (pause * 2).min(MAX_BACKOFF);
        sleep_or_stop(pause, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_stream_layout_and_ids_are_v7() {
        let event = Event::new(
            "order.status_changed",
            Actor::system(),
            ("order", "7".to_owned()),
            None,
            serde_json::json!({"from": "pending", "to": "cancelled"}),
        );
        assert_eq!(event.subject(), "events.orders.status_changed");
        assert_eq!(event.id.get_version_num(), 7);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "order.status_changed");
        assert_eq!(json["actor"]["sub"], "system");
        for (event_type, resource, subject) in [
            ("user.created", "user", "events.users.created"),
            ("auth.login_failed", "auth", "events.auth.login_failed"),
        ] {
            let event = Event::new(
                event_type,
                Actor::system(),
                (resource, "1".into()),
                None,
                serde_json::Value::Null,
            );
            assert_eq!(event.subject(), subject);
        }
    }
}

/// The JSON Schema (2020-12) of an event, as committed in
/// `docs/events/event.schema.json`; generated from [`Event`] so they cannot drift.
pub fn json_schema() -> serde_json::Value {
    use utoipa::PartialSchema;
    let mut schema = serde_json::to_value(Event::schema()).unwrap_or_default();
    let object = schema.as_object_mut().expect("an object schema");
    object.insert(
        "$schema".to_owned(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    object.insert(
        "$id".to_owned(),
        "https://microservices.example/events/event.schema.json".into(),
    );
    object.insert("title".to_owned(), "Event".into());
    object.insert(
        "$defs".to_owned(),
        serde_json::json!({ "Actor": serde_json::to_value(Actor::schema()).unwrap_or_default() }),
    );
    let text = schema
        .to_string()
        .replace("#/components/schemas/", "#/$defs/");
    serde_json::from_str(&text).unwrap_or_default()
}

#[cfg(test)]
mod schema_tests {
    /// `UPDATE_EVENT_SCHEMA=1 cargo test -p platform committed_event_schema` rewrites it.
    #[test]
    fn committed_event_schema_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/events/event.schema.json");
        let generated = super::json_schema();
        if std::env::var_os("UPDATE_EVENT_SCHEMA").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
        let committed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path).expect("docs/events/event.schema.json"),
        )
        .expect("JSON");
        assert!(
            committed == generated,
            "docs/events/event.schema.json is stale: UPDATE_EVENT_SCHEMA=1 cargo test -p platform committed_event_schema"
        );
    }
}
