//! The durable consumer that fills the audit log: every event on `events.>`,
//! stored once by its id, acknowledged only after the insert committed (the
//! platform's consumer acknowledges when the handler returns `Ok`, and delivers
//! again after an `Err`); the events that arrive together are stored in one
//! transaction. Plus a gauge of how far it is behind the stream.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;

use platform::app::BackgroundTask;
use platform::db::Database;
use platform::events::consumer::BatchHandler;
use platform::events::{Bus, EventSettings, consumer};
use platform::metrics::Metrics;

use crate::store;

/// The durable consumer's name: its position in the stream survives restarts.
pub const DURABLE: &str = "audit-log";
/// Every event of every service.
pub const FILTER: &str = "events.>";
/// How often the consumer's lag is read from JetStream.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// `audit_log_service_events_stored_total`, `..._events_duplicate_total` and
/// `..._consumer_lag`.
#[derive(Clone)]
pub struct ConsumerMetrics {
    pub stored: IntCounter,
    pub duplicates: IntCounter,
    pub lag: IntGauge,
}

impl ConsumerMetrics {
    pub fn register(metrics: &Metrics, service: &str) -> Self {
        let add = metrics.for_service(service);
        Self {
            stored: add.counter("events_stored_total", "Events stored in the audit log"),
            duplicates: add.counter(
                "events_duplicate_total",
                "Events delivered again and not stored twice",
            ),
            lag: add.gauge(
                "consumer_lag",
                "Events in the stream the consumer has not acknowledged yet \
                 (pending plus in flight; 0 without NATS)",
            ),
        }
    }
}

/// Stores the events it is handed, a batch in one transaction; an error (the
/// database is away) means "deliver them again".
pub fn handler(db: Database, metrics: ConsumerMetrics) -> BatchHandler {
    Arc::new(move |batch| {
        let (db, metrics) = (db.clone(), metrics.clone());
        Box::pin(async move {
            let stored = store::store_events(&db, &batch).await?;
            for ((event, span), new) in batch.iter().zip(stored) {
                if new {
                    metrics.stored.inc();
                } else {
                    metrics.duplicates.inc();
                    span.in_scope(|| tracing::debug!(event_id = %event.id, "event already stored"));
                }
            }
            Ok(())
        })
    })
}

/// Subscribes the audit log to every event, and watches the lag on JetStream.
pub fn tasks(
    settings: &EventSettings,
    db: Database,
    metrics: &ConsumerMetrics,
) -> Vec<BackgroundTask> {
    let mut tasks: Vec<BackgroundTask> =
        consumer::subscribe_batches(settings, DURABLE, FILTER, handler(db, metrics.clone()))
            .into_iter()
            .collect();
    if settings.nats_url.is_some() {
        let (settings, lag) = (settings.clone(), metrics.lag.clone());
        tasks.push(Box::new(move |shutdown| {
            tokio::spawn(watch_lag(settings, DURABLE, lag, shutdown))
        }));
    }
    tasks
}

/// Sets `lag` to the consumer's pending plus unacknowledged events every few
/// seconds, until shutdown. Missing a reading (NATS away, consumer not yet
/// created) leaves the last value.
pub async fn watch_lag(
    settings: EventSettings,
    durable: &'static str,
    lag: IntGauge,
    shutdown: CancellationToken,
) {
    let watch = async {
        let Some(Bus::Nats(nats)) = settings.bus().await else {
            return;
        };
        loop {
            if let Ok(stream) = nats.context.get_stream(&nats.stream).await
                && let Ok(info) = stream.consumer_info(durable).await
            {
                let behind = info.num_pending.saturating_add(info.num_ack_pending as u64);
                lag.set(i64::try_from(behind).unwrap_or(i64::MAX));
            }
            tokio::time::sleep(LAG_INTERVAL).await;
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = watch => {}
    }
}
