//! The outbox table of a service: events written in the transaction of the
//! change they describe, read back in order by the relay, marked published, and
//! pruned after a retention period. The table is the platform's migration
//! ([`crate::db::shared::OUTBOX`]), listed by each service that writes events.

use chrono::{DateTime, Utc};

use super::{Event, Origin};
use crate::db::{Database, DbError, Row, Transaction, now};
use crate::idempotency::Recorder;

const INSERT: &str = "INSERT INTO outbox (event_id, subject, event, created_at, trace_context) \
                      VALUES ($1, $2, $3, $4, $5)";

const UNPUBLISHED: &str = "SELECT seq, event_id, subject, event, trace_context FROM outbox \
                           WHERE published_at IS NULL ORDER BY seq LIMIT $1";

/// Marks a batch published in one statement: its sequence numbers go as one
/// JSON array, which each backend reads as a set.
const MARK_PUBLISHED_POSTGRES: &str = "UPDATE outbox SET published_at = $2 WHERE seq IN \
     (SELECT value::bigint FROM json_array_elements_text($1::text::json) AS value)";
const MARK_PUBLISHED_SQLITE: &str =
    "UPDATE outbox SET published_at = $2 WHERE seq IN (SELECT value FROM json_each($1))";

const COUNT_FAILURE: &str = "UPDATE outbox SET attempts = attempts + 1 WHERE seq = $1";

const PRUNE: &str = "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1";

const BACKLOG: &str = "SELECT count(*) AS backlog FROM outbox WHERE published_at IS NULL";

const OLDEST: &str =
    "SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1";

/// An event as its outbox row holds it.
struct OutboxRow {
    event_id: String,
    subject: String,
    json: String,
    occurred_at: DateTime<Utc>,
    trace_context: Option<String>,
}

impl OutboxRow {
    fn of(event: &Event) -> Result<Self, DbError> {
        Ok(Self {
            event_id: event.id.to_string(),
            subject: event.subject(),
            json: serde_json::to_string(event)
                .map_err(|e| DbError::Other(format!("event does not serialize: {e}")))?,
            occurred_at: event.occurred_at,
            // The relay publishes later, in another task: the trace goes along in the row.
            trace_context: crate::otel::traceparent(&tracing::Span::current()),
        })
    }

    fn params(&self) -> [&dyn crate::db::SqlParam; 5] {
        [
            &self.event_id,
            &self.subject,
            &self.json,
            &self.occurred_at,
            &self.trace_context,
        ]
    }
}

/// Writes `event` into the outbox, inside the transaction of its change: both
/// are committed, or neither.
///
/// # Errors
/// When the insert fails (the caller's transaction then rolls back).
#[tracing::instrument(level = "debug", skip_all, fields(event_type = %event.event_type))]
pub async fn record(transaction: &mut Transaction, event: &Event) -> Result<(), DbError> {
    let row = OutboxRow::of(event)?;
    transaction.execute(INSERT, &row.params()).await?;
    Ok(())
}

/// Writes `event` as the last statement of its change's transaction, and
/// commits (in one round trip on PostgreSQL).
///
/// # Errors
/// When the insert or the commit fails; then nothing is kept.
#[tracing::instrument(level = "debug", skip_all, fields(event_type = %event.event_type))]
pub async fn record_and_commit(transaction: Transaction, event: &Event) -> Result<(), DbError> {
    let row = OutboxRow::of(event)?;
    transaction
        .execute_and_commit(INSERT, &row.params())
        .await?;
    Ok(())
}

/// Writes `event`, and the answer to an idempotent request about `written` when
/// `recorder` is given, then commits: the change, its event and its answer are
/// kept together or not at all.
///
/// # Errors
/// When a write or the commit fails; then nothing is kept.
pub async fn commit_with<T>(
    mut transaction: Transaction,
    event: &Event,
    recorder: Option<&Recorder<'_, T>>,
    written: &T,
) -> Result<(), DbError> {
    let Some(recorder) = recorder else {
        return record_and_commit(transaction, event).await;
    };
    record(&mut transaction, event).await?;
    recorder.record(&mut transaction, written).await?;
    transaction.commit().await
}

/// Runs `sql`, the soft delete of the live `kind` row `$1` (`$2` the time, `$3`
/// who), with its `<kind>.deleted` event; `false` when no live row has the id.
///
/// # Errors
/// When the database cannot take it.
pub async fn soft_delete(
    db: &Database,
    sql: &str,
    kind: &str,
    id: i64,
    origin: &Origin,
) -> Result<bool, DbError> {
    let mut transaction = db.begin().await?;
    if transaction
        .execute(sql, &[&id, &now(), &origin.subject()])
        .await?
        == 0
    {
        return Ok(false);
    }
    let event = origin.event(
        &format!("{kind}.deleted"),
        (kind, id.to_string()),
        serde_json::json!({"id": id}),
    );
    record_and_commit(transaction, &event).await?;
    Ok(true)
}

/// Writes `event` in a transaction of its own (an event without a row change,
/// such as a failed login).
///
/// # Errors
/// When the database cannot take it.
pub async fn record_alone(db: &Database, event: &Event) -> Result<(), DbError> {
    record_and_commit(db.begin().await?, event).await
}

/// An outbox row waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub event_id: String,
    pub subject: String,
    /// The event as JSON: published as it was written.
    pub event: String,
    /// The `traceparent` of the span that wrote it, when traces are exported.
    pub trace_context: Option<String>,
}

/// What an event is about, as its JSON names it: the unit whose events must
/// reach the bus in the order they were written.
#[derive(Debug, PartialEq, Eq, Hash, serde::Deserialize)]
pub(super) struct Aggregate<'a> {
    #[serde(borrow)]
    resource_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    resource_id: std::borrow::Cow<'a, str>,
}

impl Pending {
    /// The event's aggregate; `None` for JSON that does not name one (the
    /// relay then treats the event as sharing an aggregate with every other
    /// such event, which keeps their order).
    pub(super) fn aggregate(&self) -> Option<Aggregate<'_>> {
        serde_json::from_str(&self.event).ok()
    }

    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            seq: row.get("seq")?,
            event_id: row.get("event_id")?,
            subject: row.get("subject")?,
            event: row.get("event")?,
            trace_context: row.get("trace_context")?,
        })
    }
}

/// The oldest `limit` unpublished events, in the order they were written.
///
/// # Errors
/// See [`DbError`].
pub async fn unpublished(
    connection: &mut crate::db::Connection,
    limit: i64,
) -> Result<Vec<Pending>, DbError> {
    let rows = connection.query(UNPUBLISHED, &[&limit]).await?;
    rows.iter().map(Pending::from_row).collect()
}

/// Marks the events with these sequence numbers published.
///
/// # Errors
/// See [`DbError`].
pub async fn mark_published(
    connection: &mut crate::db::Connection,
    seqs: &[i64],
) -> Result<(), DbError> {
    if seqs.is_empty() {
        return Ok(());
    }
    let sql = match connection {
        crate::db::Connection::Postgres(_) => MARK_PUBLISHED_POSTGRES,
        crate::db::Connection::Sqlite(_) => MARK_PUBLISHED_SQLITE,
    };
    let seqs = serde_json::to_string(seqs).expect("numbers serialize");
    connection.execute(sql, &[&seqs, &now()]).await?;
    Ok(())
}

/// # Errors
/// See [`DbError`].
pub async fn count_failure(db: &Database, seq: i64) -> Result<(), DbError> {
    db.execute(COUNT_FAILURE, &[&seq]).await?;
    Ok(())
}

/// Deletes events published before `before`; returns how many.
///
/// # Errors
/// See [`DbError`].
pub async fn prune(db: &Database, before: DateTime<Utc>) -> Result<u64, DbError> {
    db.execute(PRUNE, &[&before]).await
}

/// How many events wait, and since when the oldest.
///
/// # Errors
/// See [`DbError`].
pub async fn backlog(db: &Database) -> Result<(i64, Option<DateTime<Utc>>), DbError> {
    let count: i64 = db.query_one(BACKLOG, &[]).await?.get("backlog")?;
    let oldest = match db.query_opt(OLDEST, &[]).await? {
        Some(row) => Some(row.get("created_at")?),
        None => None,
    };
    Ok((count, oldest))
}
