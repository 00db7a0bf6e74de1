//! Consuming events: a durable JetStream pull consumer (or an in-process
//! subscription in the launcher) that hands each event to a handler and
//! acknowledges it only after the handler succeeded. Delivery is at least once:
//! handlers must be idempotent (by event id), and a failing one gets the event
//! again after a pause.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::bus::{Bus, Handler, NatsBus};
use super::trace::consume_span;
use super::{Backoff, Event, EventSettings};
use crate::app::BackgroundTask;

/// How long JetStream waits for an acknowledgement before delivering again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A handler's failure: the event comes back after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Subscribes `handler` to the events whose subject matches `filter`, as the
/// durable consumer `durable` (its position survives restarts). In-process
/// subscriptions are registered now, so they exist before any relay runs; a
/// JetStream consumer runs as the returned background task. Without any bus
/// nothing is consumed, and that is said once.
pub fn subscribe(
    settings: &EventSettings,
    durable: &'static str,
    filter: &'static str,
    handler: Handler,
) -> Option<BackgroundTask> {
    if settings.nats_url.is_some() {
        let settings = settings.clone();
        return Some(Box::new(move |shutdown| {
            tokio::spawn(async move {
                if let Some(bus) = settings.bus().await {
                    consume(bus, durable, filter, handler, shutdown).await;
                }
            })
        }));
    }
    if let Some(bus) = &settings.in_process {
        bus.subscribe(filter, super::trace::traced_handler(durable, handler));
        tracing::info!(durable, filter, "consuming events in-process (no NATS_URL)");
    } else {
        tracing::warn!(
            durable,
            filter,
            "no NATS_URL: these events are not consumed"
        );
    }
    None
}

/// Consumes until shutdown, (re)creating the consumer whenever the connection
/// or the stream goes away.
async fn consume(
    bus: Bus,
    durable: &'static str,
    filter: &'static str,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let Bus::Nats(nats) = bus else {
        return;
    };
    let mut backoff = Backoff::new();
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = consume_once(&nats, durable, filter, &handler, &shutdown) => result,
        };
        match result {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(durable, error = %format!("{err:#}"), "event consumer interrupted; resuming");
                if backoff.sleep_or_stop(&shutdown).await {
                    return;
                }
            }
        }
    }
}

async fn consume_once(
    nats: &NatsBus,
    durable: &str,
    filter: &str,
    handler: &Handler,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let stream = nats.open_stream().await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: nats.subject(filter),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer {durable}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("consumer {durable}: {e}"))?;
    tracing::info!(durable, filter, "consuming events from NATS JetStream");
    while let Some(message) = messages.next().await {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let event: Event = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                // Never becomes readable: stop its redelivery, keep it in the log.
                tracing::error!(durable, subject = %message.subject, error = %err, "unreadable event dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let id = event.id;
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::otel::propagation::TRACEPARENT))
            .map(|v| v.as_str());
        let span = consume_span(
            durable,
            message.subject.as_str(),
            &id.to_string(),
            traceparent,
        );
        match handler(event).instrument(span).await {
            Ok(()) => message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack of {id}: {e}"))?,
            Err(err) => {
                tracing::warn!(durable, event_id = %id, error = %format!("{err:#}"), "event handler failed; it will be delivered again");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
            }
        }
    }
    anyhow::bail!("the message stream ended")
}
