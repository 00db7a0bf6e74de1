//! SQL for the audit log: one statement text for PostgreSQL and SQLite. The
//! service only inserts and reads; the table refuses the rest (see the migrations).

use std::sync::LazyLock;

use chrono::SubsecRound;
use platform::db::{Connection, Database, DbError, SqlParam, now};
use platform::events::Event;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::error::AuditError;
use crate::model::{AuditLog, AuditLogQuery};
use platform::cursor::Cursor;

/// Idempotent by event id: a redelivered event changes nothing.
const INSERT: &str = "INSERT INTO audit_logs (id, action, actor_sub, actor_roles, resource_type, \
     resource_id, request_id, occurred_at, payload, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING";

static FIND: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM audit_logs WHERE id = $1", AuditLog::COLUMNS));

/// Stores each event unless an entry with its id exists, all in one
/// transaction, each insert in its event's span; per event, true when it was
/// new. Once this returns the entries are durable and the events may be
/// acknowledged.
///
/// # Errors
/// When the database cannot take them (nothing is kept; the events are then
/// delivered again).
pub async fn store_events(db: &Database, batch: &[(Event, Span)]) -> Result<Vec<bool>, DbError> {
    // A lone event's transaction is part of its trace; a batch's is a unit
    // of its own, and each insert is in its event's trace. (The consumer's
    // target, not this module's: the traces leave the stores' spans out.)
    let transaction_span = match batch {
        [(_, span)] => span.clone(),
        _ => tracing::debug_span!(
            target: "audit_log_service::consumer",
            "store events",
            events = batch.len()
        ),
    };
    async {
        let mut transaction = db.begin().await?;
        let mut stored = Vec::with_capacity(batch.len());
        for (event, span) in batch {
            let new = insert(&mut transaction, event)
                .instrument(span.clone())
                .await?;
            stored.push(new);
        }
        transaction.commit().await?;
        Ok(stored)
    }
    .instrument(transaction_span)
    .await
}

async fn insert(connection: &mut Connection, event: &Event) -> Result<bool, DbError> {
    let roles = to_json(event, &event.actor.roles)?;
    let payload = to_json(event, &event.payload)?;
    // Microseconds, as both backends store them, so a cursor built from a
    // stored entry finds that entry again.
    let occurred_at = event.occurred_at.trunc_subsecs(6);
    let params: [&dyn SqlParam; 10] = [
        &event.id.to_string(),
        &event.event_type,
        &event.actor.sub,
        &roles,
        &event.resource_type,
        &event.resource_id,
        &event.request_id,
        &occurred_at,
        &payload,
        &now(),
    ];
    Ok(connection.execute(INSERT, &params).await? == 1)
}

fn to_json(event: &Event, value: &impl serde::Serialize) -> Result<String, DbError> {
    serde_json::to_string(value)
        .map_err(|e| DbError::Other(format!("event {} does not serialize: {e}", event.id)))
}

/// The entry of this event id.
#[tracing::instrument(level = "debug", skip(db))]
pub async fn find(db: &Database, id: Uuid) -> Result<AuditLog, AuditError> {
    match db.lookup(&FIND, &[&id.to_string()]).await? {
        Some(row) => Ok(AuditLog::from_row(&row)?),
        None => Err(AuditError::NotFound(id)),
    }
}

/// One keyset page of the entries `query` selects, newest first (ties by id,
/// descending), and the cursor of the next page when there is one.
#[tracing::instrument(level = "debug", skip(db, after))]
pub async fn list(
    db: &Database,
    query: &AuditLogQuery,
    after: Option<Cursor<Uuid>>,
    page_size: i64,
) -> Result<(Vec<AuditLog>, Option<Cursor<Uuid>>), DbError> {
    let after = after.map(|c| (c.at, c.id.to_string()));
    let from = query.from.map(|t| t.0);
    let to = query.to.map(|t| t.0);
    // One more than the page: whether it exists says whether there is a next page.
    let limit = page_size + 1;
    let mut conditions = Conditions::default();
    let exact = [
        ("actor_sub", query.actor.as_deref()),
        ("action", query.action.as_deref()),
        ("resource_type", query.resource_type.as_deref()),
        ("resource_id", query.resource_id.as_deref()),
    ];
    for (column, value) in exact {
        if let Some(value) = value {
            conditions.add(&format!("{column} = ?"), &[value]);
        }
    }
    if let Some(from) = &from {
        conditions.add("occurred_at >= ?", &[from]);
    }
    if let Some(to) = &to {
        conditions.add("occurred_at < ?", &[to]);
    }
    if let Some((at, id)) = &after {
        conditions.add("(occurred_at, id) < (?, ?)", &[at, id]);
    }
    let (where_clause, mut params) = conditions.finish();
    params.push(&limit);
    let sql = format!(
        "SELECT {} FROM audit_logs {where_clause} ORDER BY occurred_at DESC, id DESC LIMIT ${}",
        AuditLog::COLUMNS,
        params.len()
    );
    let rows = db.query(&sql, &params).await?;
    let mut entries = rows
        .iter()
        .map(AuditLog::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if entries.len() as i64 > page_size {
        entries.truncate(page_size as usize);
        entries.last().map(AuditLog::cursor)
    } else {
        None
    };
    Ok((entries, next))
}

/// A `WHERE` clause whose conditions each bind their own values: every `?`
/// becomes the next `$n`.
#[derive(Default)]
struct Conditions<'a> {
    sql: Vec<String>,
    params: Vec<&'a dyn SqlParam>,
}

impl<'a> Conditions<'a> {
    fn add(&mut self, condition: &str, values: &[&'a dyn SqlParam]) {
        let mut sql = condition.to_owned();
        for value in values {
            self.params.push(*value);
            sql = sql.replacen('?', &format!("${}", self.params.len()), 1);
        }
        self.sql.push(sql);
    }

    fn finish(self) -> (String, Vec<&'a dyn SqlParam>) {
        let clause = if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        };
        (clause, self.params)
    }
}
