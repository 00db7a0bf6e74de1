//! Where events go: NATS JetStream (`NATS_URL`), or, in the one-process
//! launcher without a broker, straight to the in-process subscribers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;

use super::{Event, STREAM, SUBJECTS};
use crate::config::{ConfigError, Env};

/// What a consumer does with one event; an error means "deliver it again".
pub type Handler =
    Arc<dyn Fn(Event) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// Where a service's events go and come from.
#[derive(Clone, Default)]
pub struct EventSettings {
    /// `NATS_URL` (shared by every service).
    pub nats_url: Option<String>,
    /// Set by the one-process launcher when there is no `NATS_URL`.
    pub in_process: Option<Arc<InProcessBus>>,
    /// `EVENTS_OUTBOX_RETENTION` (seconds): how long published rows are kept.
    pub retention: Duration,
    /// `NATS_STREAM` (default `EVENTS`) and `NATS_SUBJECT_PREFIX` (default
    /// `events`): a deployment (or a test) may keep its events apart from
    /// others on a shared NATS.
    pub stream: String,
    pub subject_prefix: String,
}

impl std::fmt::Debug for EventSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSettings")
            .field("nats_url", &self.nats_url)
            .field("in_process", &self.in_process.is_some())
            .field("retention", &self.retention)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

impl EventSettings {
    /// # Errors
    /// When a value cannot be used.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            nats_url: env.raw("NATS_URL"),
            in_process: None,
            retention: env.fractional_seconds_or("EVENTS_OUTBOX_RETENTION", 86_400.0)?,
            stream: env.raw("NATS_STREAM").unwrap_or_else(|| STREAM.to_owned()),
            subject_prefix: env
                .raw("NATS_SUBJECT_PREFIX")
                .unwrap_or_else(|| "events".to_owned()),
        })
    }

    /// The bus these settings name, connecting to NATS in the background (a
    /// broker that is down at start is retried, not fatal); `None` without one.
    pub async fn bus(&self) -> Option<Bus> {
        if let Some(url) = &self.nats_url {
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connection_timeout(Duration::from_secs(2))
                .connect(url.as_str())
                .await;
            return match client {
                Ok(client) => {
                    let mut context = jetstream::new(client);
                    context.set_timeout(Duration::from_secs(2));
                    Some(Bus::Nats(NatsBus {
                        context,
                        stream: self.stream.clone(),
                        prefix: self.subject_prefix.clone(),
                    }))
                }
                Err(err) => {
                    tracing::error!(url, error = %err, "NATS_URL cannot be used");
                    None
                }
            };
        }
        self.in_process.clone().map(Bus::InProcess)
    }
}

/// A bus to publish to and subscribe on.
// A service holds one, made at start and cloned into its relay and consumers,
// never many in a collection: boxing the JetStream side would save no memory
// that matters and add a pointer hop to every publish.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Bus {
    Nats(NatsBus),
    InProcess(Arc<InProcessBus>),
}

/// JetStream, with the stream and subject prefix of this deployment.
#[derive(Clone)]
pub struct NatsBus {
    pub context: jetstream::Context,
    pub stream: String,
    pub prefix: String,
}

impl NatsBus {
    /// The subject on this deployment of a canonical `events.<domain>.<what>`
    /// subject (or filter).
    pub fn subject(&self, canonical: &str) -> String {
        match canonical.strip_prefix("events") {
            Some(rest) => format!("{}{rest}", self.prefix),
            None => canonical.to_owned(),
        }
    }

    /// The stream the consumers read, created first if it is missing.
    pub(super) async fn open_stream(&self) -> anyhow::Result<jetstream::stream::Stream> {
        Bus::Nats(self.clone()).ensure_stream().await?;
        self.context
            .get_stream(&self.stream)
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", self.stream))
    }
}

impl Bus {
    /// Creates the stream if it is missing (every publisher and consumer may).
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses the stream.
    pub async fn ensure_stream(&self) -> anyhow::Result<()> {
        if let Self::Nats(nats) = self {
            nats.context
                .get_or_create_stream(jetstream::stream::Config {
                    name: nats.stream.clone(),
                    subjects: SUBJECTS.iter().map(|s| nats.subject(s)).collect(),
                    // Redeliveries of the same event id within this window are dropped.
                    duplicate_window: Duration::from_secs(120),
                    max_age: Duration::from_secs(7 * 24 * 3600),
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot create stream {}: {e}", nats.stream))?;
        }
        Ok(())
    }

    /// Publishes one event (its JSON as written to the outbox) and waits until
    /// the bus has it: [`Bus::send`], then [`Sent::confirmed`].
    ///
    /// # Errors
    /// When it was not taken; the relay tries again.
    pub async fn publish(&self, subject: &str, event_id: &str, json: &str) -> anyhow::Result<()> {
        self.send(subject, event_id, json).await?.confirmed().await
    }

    /// Hands one event (its JSON as written to the outbox) to the bus without
    /// waiting for the bus to confirm it, so that several can be in flight on
    /// the connection: JetStream stores a connection's messages in the order
    /// they were sent. The event id is the `Nats-Msg-Id`, so a republished event
    /// is stored once; the current span's trace context goes in the
    /// `traceparent` header. In-process, the handlers run here.
    ///
    /// # Errors
    /// When the bus refuses it at once (the connection is gone, a handler failed).
    pub async fn send(&self, subject: &str, event_id: &str, json: &str) -> anyhow::Result<Sent> {
        match self {
            Self::Nats(nats) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", event_id);
                // The publishing span's trace context, for the consumers' spans.
                if let Some(traceparent) = crate::otel::traceparent(&tracing::Span::current()) {
                    headers.insert(crate::otel::propagation::TRACEPARENT, traceparent.as_str());
                }
                let ack = nats
                    .context
                    .publish_with_headers(nats.subject(subject), headers, json.to_owned().into())
                    .await?;
                Ok(Sent::Nats(ack))
            }
            Self::InProcess(bus) => {
                bus.deliver(subject, json).await?;
                Ok(Sent::Delivered)
            }
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Self::Nats(_) => "NATS JetStream",
            Self::InProcess(_) => "in-process (no NATS_URL)",
        }
    }
}

/// An event the bus has been handed ([`Bus::send`]) and may not have
/// confirmed yet.
#[must_use = "an event is published only once confirmed"]
pub enum Sent {
    /// JetStream's acknowledgement, still to come.
    Nats(jetstream::context::PublishAckFuture),
    /// Every in-process handler has run.
    Delivered,
}

impl Sent {
    /// Waits until the bus has the event (JetStream stored it).
    ///
    /// # Errors
    /// When JetStream refused it or did not answer in time: it may or may not
    /// be stored, and is published again (a duplicate is dropped by its id).
    pub async fn confirmed(self) -> anyhow::Result<()> {
        if let Self::Nats(ack) = self {
            ack.await?;
        }
        Ok(())
    }
}

/// The launcher's bus when there is no broker: each published event is handed
/// to every subscriber whose filter matches, and counts as published only once
/// all of them took it.
#[derive(Default)]
pub struct InProcessBus {
    subscribers: RwLock<Vec<(String, Handler)>>,
}

impl InProcessBus {
    pub fn subscribe(&self, filter: &str, handler: Handler) {
        self.subscribers
            .write()
            .expect("subscribers lock")
            .push((filter.to_owned(), handler));
    }

    async fn deliver(&self, subject: &str, json: &str) -> anyhow::Result<()> {
        let event: Event = serde_json::from_str(json)?;
        let handlers: Vec<Handler> = self
            .subscribers
            .read()
            .expect("subscribers lock")
            .iter()
            .filter(|(filter, _)| subject_matches(filter, subject))
            .map(|(_, handler)| Arc::clone(handler))
            .collect();
        for handler in handlers {
            handler(event.clone()).await?;
        }
        Ok(())
    }
}

/// NATS subject matching: `*` is one token, `>` the rest.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (wanted, Some(got)) if wanted == got => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_nats_matches_them() {
        assert!(subject_matches("events.>", "events.users.created"));
        assert!(subject_matches("events.users.*", "events.users.deleted"));
        assert!(!subject_matches("events.users.*", "events.orders.created"));
        assert!(!subject_matches("events.users.*", "events.users"));
        assert!(!subject_matches("events.users", "events.users.created"));
    }
}
