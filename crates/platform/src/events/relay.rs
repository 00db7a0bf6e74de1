//! The outbox relay: a background task that publishes a service's outbox in
//! the order it was written, retries with backoff while the bus is away, and
//! prunes what was published long ago.
//!
//! Several replicas may share one PostgreSQL database: a pass runs only while
//! holding a transaction-scoped advisory lock, so one replica relays at a time
//! and the order of events is the order of commit sequence numbers: per
//! aggregate always, overall while nothing fails (see [`wave_len`]). On
//! SQLite (one process per file) no lock is needed, and the marks are written
//! outside a transaction so writers are never held up.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::bus::Bus;
use super::{EventSettings, MAX_BACKOFF, outbox, sleep_or_stop};
use crate::app::BackgroundTask;
use crate::db::{Connection, Database, now};
use crate::metrics::Metrics;

/// Events per pass; a full pass is followed at once by the next.
const BATCH: i64 = 200;
const POLL: Duration = Duration::from_millis(100);
/// Any constant works: it only has to be the same for every replica.
const RELAY_LOCK: i64 = 0x6f75_7462_6f78;

/// The relay's gauges and counters (`{service}_outbox_*`).
#[derive(Clone)]
pub struct OutboxMetrics {
    backlog: IntGauge,
    oldest_age: Gauge,
    published: IntCounter,
    failures: IntCounter,
}

impl OutboxMetrics {
    pub fn register(metrics: &Metrics, service: &str) -> Self {
        let add = metrics.for_service(service);
        Self {
            backlog: add.gauge("outbox_backlog", "Events written but not yet published"),
            oldest_age: add.gauge(
                "outbox_oldest_unpublished_seconds",
                "Age of the oldest unpublished event (0 when none waits)",
            ),
            published: add.counter("outbox_published_total", "Events published to the bus"),
            failures: add.counter(
                "outbox_publish_failures_total",
                "Publish attempts that failed (the event stays and is retried)",
            ),
        }
    }

    async fn refresh(&self, db: &Database) {
        if let Ok((count, oldest)) = outbox::backlog(db).await {
            self.backlog.set(count);
            let age = oldest.map_or(0.0, |at| (now() - at).as_seconds_f64().max(0.0));
            self.oldest_age.set(age);
        }
    }
}

/// The relay of one service, as a background task.
pub fn task(
    db: Database,
    settings: EventSettings,
    metrics: OutboxMetrics,
    service: &'static str,
) -> BackgroundTask {
    Box::new(move |shutdown| tokio::spawn(run(db, settings, metrics, service, shutdown)))
}

async fn run(
    db: Database,
    settings: EventSettings,
    metrics: OutboxMetrics,
    service: &'static str,
    shutdown: CancellationToken,
) {
    let Some(bus) = settings.bus().await else {
        tracing::warn!(
            service,
            "no NATS_URL: events stay in the outbox until a bus is configured"
        );
        while !sleep_or_stop(Duration::from_secs(5), &shutdown).await {
            metrics.refresh(&db).await;
        }
        return;
    };
    tracing::info!(service, bus = bus.describe(), "relaying the outbox");
    let mut backoff = POLL;
    let mut failing = false;
    let mut stream_ready = false;
    let (mut refreshed, mut pruned) = (Instant::now(), Instant::now());
    loop {
        if !stream_ready {
            stream_ready = bus.ensure_stream().await.is_ok();
        }
        let pause = match pass(&db, &bus).await {
            Ok(published) => {
                if failing {
                    tracing::info!(service, "publishing events again");
                    failing = false;
                }
                backoff = POLL;
                metrics.published.inc_by(published as u64);
                if published as i64 == BATCH {
                    Duration::ZERO
                } else {
                    POLL
                }
            }
            Err(err) => {
                metrics.failures.inc();
                if !failing {
                    tracing::warn!(service, error = %format!("{err:#}"), "cannot publish events; retrying with backoff");
                    failing = true;
                }
                stream_ready = false;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        if refreshed.elapsed() >= Duration::from_secs(1) {
            metrics.refresh(&db).await;
            refreshed = Instant::now();
        }
        if pruned.elapsed() >= Duration::from_secs(60) {
            prune(&db, &settings).await;
            pruned = Instant::now();
        }
        if sleep_or_stop(pause, &shutdown).await {
            return;
        }
    }
}

async fn prune(db: &Database, settings: &EventSettings) {
    let Ok(retention) = chrono::Duration::from_std(settings.retention) else {
        return;
    };
    match outbox::prune(db, now() - retention).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "published events pruned from the outbox"),
        Err(err) => tracing::warn!(error = %err, "outbox pruning failed"),
    }
}

/// One pass: the oldest unpublished events, published in order; stops at the
/// first failure, keeping what was published before it. Returns how many.
async fn pass(db: &Database, bus: &Bus) -> anyhow::Result<usize> {
    match db {
        Database::Postgres(_) => {
            let mut transaction = db.begin().await?;
            let locked: bool = transaction
                .query_one(
                    "SELECT pg_try_advisory_xact_lock($1) AS locked",
                    &[&RELAY_LOCK],
                )
                .await?
                .get("locked")?;
            if !locked {
                // Another replica is relaying.
                return Ok(0);
            }
            let outcome = publish_batch(&mut transaction, bus).await;
            transaction.commit().await?;
            finish(db, outcome).await
        }
        Database::Sqlite(_) => {
            let mut connection = db.connection().await?;
            let outcome = publish_batch(&mut connection, bus).await;
            drop(connection);
            finish(db, outcome).await
        }
    }
}

/// What a batch did: how many were published, and the failure that stopped it.
struct Outcome {
    published: usize,
    failed: Option<(i64, anyhow::Error)>,
}

async fn publish_batch(connection: &mut Connection, bus: &Bus) -> Outcome {
    let batch = match outbox::unpublished(connection, BATCH).await {
        Ok(batch) => batch,
        Err(err) => {
            return Outcome {
                published: 0,
                failed: Some((0, err.into())),
            };
        }
    };
    // Published in order, in waves ([`wave_len`]); a failure ends the pass
    // after its wave, so nothing of the failed event's aggregate goes out
    // before it. Marked together at the end: one statement per batch.
    let mut published = Vec::with_capacity(batch.len());
    let mut failed = None;
    let mut rest = batch.as_slice();
    while failed.is_none() && !rest.is_empty() {
        let (wave, after) = rest.split_at(wave_len(rest));
        rest = after;
        for (pending, result) in wave.iter().zip(publish_wave(bus, wave).await) {
            match result {
                Ok(()) => published.push(pending.seq),
                Err(err) => {
                    failed.get_or_insert((pending.seq, err));
                }
            }
        }
    }
    if let Err(err) = outbox::mark_published(connection, &published).await {
        // Published but not marked: they go out again, and the bus (or the
        // consumer) drops the duplicates by their event ids.
        return Outcome {
            published: 0,
            failed: Some((0, err.into())),
        };
    }
    Outcome {
        published: published.len(),
        failed,
    }
}

/// How many of `batch`'s first events may be in flight together: up to the
/// first whose aggregate is already among them. Within a wave every event is
/// about another aggregate, so if one fails and a later one is stored, no
/// aggregate's events are reordered: the failed event's successors in its
/// aggregate are in later waves, which wait for the next pass.
fn wave_len(batch: &[outbox::Pending]) -> usize {
    let mut aggregates = HashSet::with_capacity(batch.len());
    batch
        .iter()
        .take_while(|pending| aggregates.insert(pending.aggregate()))
        .count()
}

/// Sends a wave's events one after the other without waiting, then waits for
/// each confirmation: one round trip to the bus for the wave rather than one
/// per event. What could not be sent is not in the answer (it waits for the
/// next pass).
async fn publish_wave(bus: &Bus, wave: &[outbox::Pending]) -> Vec<anyhow::Result<()>> {
    let mut sent = Vec::with_capacity(wave.len());
    for pending in wave {
        let span = super::trace::publish_span(pending);
        let handed = bus
            .send(&pending.subject, &pending.event_id, &pending.event)
            .instrument(span.clone())
            .await;
        let refused = handed.is_err();
        sent.push((handed, span));
        if refused {
            break;
        }
    }
    let mut confirmed = Vec::with_capacity(sent.len());
    for (handed, span) in sent {
        confirmed.push(match handed {
            Ok(sent) => sent.confirmed().instrument(span).await,
            Err(err) => Err(err),
        });
    }
    confirmed
}

async fn finish(db: &Database, outcome: Outcome) -> anyhow::Result<usize> {
    match outcome.failed {
        None => Ok(outcome.published),
        Some((seq, err)) => {
            if seq > 0 {
                let _ = outbox::count_failure(db, seq).await;
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seq: i64, event: &str) -> outbox::Pending {
        outbox::Pending {
            seq,
            event_id: format!("e{seq}"),
            subject: "events.users.updated".to_owned(),
            event: event.to_owned(),
            trace_context: None,
        }
    }

    fn about(seq: i64, resource_type: &str, resource_id: &str) -> outbox::Pending {
        pending(
            seq,
            &format!(
                r#"{{"id":"e{seq}","resource_type":"{resource_type}","resource_id":"{resource_id}","payload":{{"id":1}}}}"#
            ),
        )
    }

    #[test]
    fn a_wave_ends_before_the_second_event_of_an_aggregate() {
        let batch = [
            about(1, "user", "7"),
            about(2, "order", "7"),
            about(3, "user", "8"),
            about(4, "user", "7"),
            about(5, "user", "9"),
        ];
        assert_eq!(wave_len(&batch), 3);
        assert_eq!(wave_len(&batch[3..]), 2);
    }

    #[test]
    fn events_whose_aggregate_cannot_be_read_are_never_in_flight_together() {
        let batch = [
            pending(1, "not json"),
            about(2, "user", "1"),
            pending(3, r#"{"resource_type":"user"}"#),
        ];
        assert_eq!(wave_len(&batch), 2);
        assert_eq!(wave_len(&batch[2..]), 1);
    }
}
