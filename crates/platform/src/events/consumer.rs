//! Consuming events: a durable JetStream pull consumer (or an in-process
//! subscription in the launcher) that hands events to a handler and
//! acknowledges them only after the handler succeeded. Delivery is at least
//! once: handlers must be idempotent (by event id), and a failing one gets its
//! events again after a pause.
//!
//! The events already waiting when one arrives are handed over together (a
//! batch, up to [`MAX_BATCH`]), so that a handler that stores them can do so in
//! one transaction: under load, one commit for many events instead of one each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::bus::{Bus, Handler, NatsBus};
use super::trace::consume_span;
use super::{Backoff, Event, EventSettings};
use crate::app::BackgroundTask;

/// How long JetStream waits for an acknowledgement before delivering again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a stopping consumer waits for its acknowledgements to go out.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(1);
/// A handler's failure: the event comes back after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The most events handed to a handler at once.
pub const MAX_BATCH: usize = 100;

/// Handles events together, each with the consumer span it is handled in:
/// `Ok` when every one of them is done (they are acknowledged), an error when
/// none should count (they are all delivered again).
pub type BatchHandler = Arc<
    dyn Fn(Vec<(Event, Span)>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
        + Send
        + Sync,
>;

/// Subscribes `handler` to the events whose subject matches `filter`, as the
/// durable consumer `durable`, one event at a time ([`subscribe_batches`]).
pub fn subscribe(
    settings: &EventSettings,
    durable: &'static str,
    filter: &'static str,
    handler: Handler,
) -> Option<BackgroundTask> {
    subscribe_batches(settings, durable, filter, one_at_a_time(handler))
}

/// Subscribes `handler` to the events whose subject matches `filter`, as the
/// durable consumer `durable` (its position survives restarts). In-process
/// subscriptions are registered now, so they exist before any relay runs; a
/// JetStream consumer runs as the returned background task. Without any bus
/// nothing is consumed, and that is said once.
pub fn subscribe_batches(
    settings: &EventSettings,
    durable: &'static str,
    filter: &'static str,
    handler: BatchHandler,
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

/// `handler` on each event of a batch in turn, in the event's span; an error
/// stops the batch (its events come again, the handled ones too: handlers are
/// idempotent).
fn one_at_a_time(handler: Handler) -> BatchHandler {
    Arc::new(move |batch| {
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            for (event, span) in batch {
                handler(event).instrument(span).await?;
            }
            Ok(())
        })
    })
}

/// Consumes until shutdown, (re)creating the consumer whenever the connection
/// or the stream goes away.
async fn consume(
    bus: Bus,
    durable: &'static str,
    filter: &'static str,
    handler: BatchHandler,
    shutdown: CancellationToken,
) {
    let Bus::Nats(nats) = bus else {
        return;
    };
    let mut backoff = Backoff::new();
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            result = consume_once(&nats, durable, filter, &handler, &shutdown) => result,
        };
        match result {
            Ok(()) => {
                // Acknowledgements wait in the client's buffer: sent before the
                // process exits, their events are not delivered again after a restart.
                let client = nats.context.client();
                let _ = tokio::time::timeout(FLUSH_ON_SHUTDOWN, client.flush()).await;
                return;
            }
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
    handler: &BatchHandler,
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
    while let Some(first) = messages.next().await {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let mut received = vec![first.map_err(|e| anyhow::anyhow!("{e}"))?];
        // What has already arrived joins the batch; nothing is waited for.
        while received.len() < MAX_BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => received.push(message.map_err(|e| anyhow::anyhow!("{e}"))?),
                _ => break,
            }
        }
        let mut batch = Vec::with_capacity(received.len());
        let mut handled = Vec::with_capacity(received.len());
        for message in received {
            match read(durable, &message) {
                Some(event) => {
                    batch.push(event);
                    handled.push(message);
                }
                // Never becomes readable: stop its redelivery, keep it in the log.
                None => {
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let first_id = batch[0].0.id;
        match handler(batch).await {
            Ok(()) => {
                for message in handled {
                    message
                        .ack()
                        .await
                        .map_err(|e| anyhow::anyhow!("ack of an event: {e}"))?;
                }
            }
            Err(err) => {
                tracing::warn!(durable, event_id = %first_id, events = handled.len(), error = %format!("{err:#}"), "event handler failed; the events will be delivered again");
                for message in handled {
                    let _ = message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
                }
            }
        }
    }
    anyhow::bail!("the message stream ended")
}

/// The event in `message`, with the consumer span it is handled in; `None`
/// (and an error logged) when it is not an event.
fn read(durable: &str, message: &jetstream::Message) -> Option<(Event, Span)> {
    let event: Event = match serde_json::from_slice(&message.payload) {
        Ok(event) => event,
        Err(err) => {
            tracing::error!(durable, subject = %message.subject, error = %err, "unreadable event dropped");
            return None;
        }
    };
    let traceparent = message
        .headers
        .as_ref()
        .and_then(|h| h.get(crate::otel::propagation::TRACEPARENT))
        .map(|v| v.as_str());
    let span = consume_span(
        durable,
        message.subject.as_str(),
        &event.id.to_string(),
        traceparent,
    );
    Some((event, span))
}
