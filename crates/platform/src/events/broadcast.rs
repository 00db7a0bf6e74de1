//! Events every replica sees, for state each process keeps of its own (a cache
//! to invalidate). The durable consumer of [`super::consumer`] hands each event
//! to one replica; here every replica gets every event, through an ordered,
//! ephemeral JetStream consumer of its own that starts at the newest event (or an
//! in-process subscription in the launcher). Nothing is acknowledged or retried:
//! a handler that needs every event would use the durable consumer.
//!
//! [`Liveness`] says whether events are arriving now: a cache trusts what it holds
//! only while they are, since an event missed while the broker was away would
//! leave an entry stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::bus::{Bus, NatsBus};
use super::{Backoff, Event, EventSettings};
use crate::app::BackgroundTask;

/// What a broadcast subscriber does with one event. Synchronous and infallible:
/// it updates memory, nothing more.
pub type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Whether a broadcast subscription is delivering events now, and since when:
/// each time it (re)starts is a new session, and events of the gap before it may
/// have been missed, so what was learnt in an earlier session is not to be trusted.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<Sessions>);

#[derive(Debug, Default)]
struct Sessions {
    /// The live session's number, 0 while not delivering.
    current: AtomicU64,
    started: AtomicU64,
}

impl Liveness {
    /// The live session, `None` while events are not arriving.
    pub fn session(&self) -> Option<u64> {
        Some(self.0.current.load(Ordering::Acquire)).filter(|s| *s != 0)
    }

    /// A subscription that is always delivering (in-process, or for tests).
    pub fn always() -> Self {
        let liveness = Self::default();
        liveness.start();
        liveness
    }

    fn start(&self) {
        let session = self.0.started.fetch_add(1, Ordering::AcqRel) + 1;
        self.0.current.store(session, Ordering::Release);
    }

    fn stop(&self) {
        self.0.current.store(0, Ordering::Release);
    }
}

/// Subscribes `listener` to every event whose subject matches `filter`, in this
/// process, reporting in `liveness` whether events are arriving. Returns the
/// background task that runs a JetStream subscription. Without any bus nothing
/// is delivered and `liveness` never has a session.
pub fn subscribe_all(
    settings: &EventSettings,
    filter: &'static str,
    liveness: Liveness,
    listener: Listener,
) -> Option<BackgroundTask> {
    if settings.nats_url.is_some() {
        let (settings, live) = (settings.clone(), liveness);
        let task: BackgroundTask = Box::new(move |shutdown| {
            tokio::spawn(async move {
                if let Some(Bus::Nats(nats)) = settings.bus().await {
                    follow(&nats, filter, &listener, &live, &shutdown).await;
                }
            })
        });
        return Some(task);
    }
    if let Some(bus) = &settings.in_process {
        bus.subscribe(
            filter,
            Arc::new(move |event| {
                listener(&event);
                Box::pin(async { Ok(()) })
            }),
        );
        liveness.start();
    }
    None
}

/// Follows the stream until shutdown, subscribing again after any interruption.
async fn follow(
    nats: &NatsBus,
    filter: &str,
    listener: &Listener,
    live: &Liveness,
    shutdown: &CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = follow_once(nats, filter, listener, live) => result,
        };
        live.stop();
        if let Err(err) = result {
            tracing::warn!(filter, error = %format!("{err:#}"), "event broadcast interrupted; subscribing again");
        }
        if backoff.sleep_or_stop(shutdown).await {
            return;
        }
    }
}

async fn follow_once(
    nats: &NatsBus,
    filter: &str,
    listener: &Listener,
    live: &Liveness,
) -> anyhow::Result<()> {
    let stream = nats.open_stream().await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: nats.subject(filter),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("ordered consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("ordered consumer: {e}"))?;
    live.start();
    tracing::info!(filter, "following events from NATS JetStream");
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        match serde_json::from_slice::<Event>(&message.payload) {
            Ok(event) => listener(&event),
            Err(err) => {
                tracing::error!(subject = %message.subject, error = %err, "unreadable event ignored");
            }
        }
    }
    anyhow::bail!("the message stream ended")
}
