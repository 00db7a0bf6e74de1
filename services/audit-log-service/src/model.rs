//! An audit entry, the list query with its keyset cursor, and the values a
//! query may hold.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

use platform::cursor::{Cursor, CursorText};
use platform::db::{DbError, Row};
use platform::events::Actor;
use platform::pagination::PageSize;
use platform::validation::Text;

/// Entries per page when the query does not say.
pub const DEFAULT_PAGE_SIZE: i64 = 20;

/// One stored event: who did what to which resource, when, and when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditLog {
    /// The event's id (UUID v7).
    #[schema(value_type = String, format = "uuid")]
    pub id: Uuid,
    /// The event type: `user.created`, `order.status_changed`, ...
    pub action: String,
    pub actor: Actor,
    /// `user`, `order` or `auth`.
    pub resource_type: String,
    pub resource_id: String,
    /// The `X-Request-ID` of the request that caused it, if any.
    pub request_id: Option<String>,
    #[serde(serialize_with = "platform::timestamp::rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// What changed, as the event carried it.
    pub payload: serde_json::Value,
    /// When this service stored it.
    #[serde(serialize_with = "platform::timestamp::rfc3339")]
    pub recorded_at: DateTime<Utc>,
}

impl AuditLog {
    /// The columns [`AuditLog::from_row`] reads.
    pub const COLUMNS: &str = "id, action, actor_sub, actor_roles, resource_type, resource_id, \
        request_id, occurred_at, payload, recorded_at";

    /// # Errors
    /// When a column is missing or does not hold what the service wrote (a bug).
    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        let id: String = row.get("id")?;
        let roles: String = row.get("actor_roles")?;
        let payload: String = row.get("payload")?;
        let corrupt = |what: &str, err: &dyn std::fmt::Display| {
            DbError::Other(format!("audit entry {id}: unreadable {what}: {err}"))
        };
        Ok(Self {
            id: id.parse().map_err(|e| corrupt("id", &e))?,
            action: row.get("action")?,
            actor: Actor {
                sub: row.get("actor_sub")?,
                roles: serde_json::from_str(&roles).map_err(|e| corrupt("actor_roles", &e))?,
            },
            resource_type: row.get("resource_type")?,
            resource_id: row.get("resource_id")?,
            request_id: row.get("request_id")?,
            occurred_at: row.get("occurred_at")?,
            payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", &e))?,
            recorded_at: row.get("recorded_at")?,
        })
    }

    /// Where the page after this entry starts.
    pub fn cursor(&self) -> Cursor<Uuid> {
        Cursor {
            at: self.occurred_at,
            id: self.id,
        }
    }
}

/// The query of `GET /api/v1/audit-logs`: filters (all exact matches, all
/// optional, combined with AND) and the keyset page.
#[derive(Debug, Clone, Default, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditLogQuery {
    /// Only events of this actor: a token's `sub` (a user id or a client id), `system` or `anonymous`
    #[param(inline)]
    pub actor: Option<Text<1, 255>>,
    /// Only this event type, e.g. `order.status_changed`
    #[param(inline)]
    pub action: Option<Text<1, 100>>,
    /// Only events about this kind of resource: `user`, `order` or `auth`
    #[param(inline)]
    pub resource_type: Option<Text<1, 50>>,
    /// Only events about the resource with this id
    #[param(inline)]
    pub resource_id: Option<Text<1, 255>>,
    /// Only events that occurred at or after this instant
    #[param(inline)]
    pub from: Option<Timestamp>,
    /// Only events that occurred before this instant
    #[param(inline)]
    pub to: Option<Timestamp>,
    /// Where the page starts: the `meta.next_cursor` of the page before (same filters)
    #[param(inline)]
    pub cursor: Option<CursorText>,
    /// Entries per page, default 20
    #[param(inline)]
    pub page_size: Option<PageSize>,
}

impl AuditLogQuery {
    /// The list and filters a cursor is bound to (see [`platform::cursor`]).
    pub fn scope(&self) -> String {
        let at = |t: &Option<Timestamp>| t.map(|t| t.0.timestamp_micros());
        format!(
            "audit-logs|actor={:?}|action={:?}|resource_type={:?}|resource_id={:?}|from={:?}|to={:?}",
            self.actor.as_deref(),
            self.action.as_deref(),
            self.resource_type.as_deref(),
            self.resource_id.as_deref(),
            at(&self.from),
            at(&self.to),
        )
    }
}

/// The instants both backends store and order correctly: years 1 to 9999.
/// Anything outside is moved to the nearest bound, which selects the same
/// entries (nothing happened before year 1 or after 9999).
fn clamp(at: DateTime<Utc>) -> DateTime<Utc> {
    let first = NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("the first instant of year 1 exists")
        .and_utc();
    let last = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .expect("the last instant of 9999 exists")
        .and_utc();
    at.clamp(first, last)
}

/// An instant in a query: RFC 3339 with any offset (`2026-12-04T10:00:00Z`;
/// a `+` offset must be sent as `%2B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| Self(clamp(at.to_utc())))
            .map_err(|_| {
                serde::de::Error::custom(
                    "must be an RFC 3339 timestamp such as 2026-12-04T10:00:00Z \
                     (send a + offset as %2B)",
                )
            })
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some("An RFC 3339 timestamp"))
            .into()
    }
}

impl ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_take_any_offset_and_name_the_format_when_wrong() {
        let Timestamp(at) = serde_json::from_str(r#""2026-12-04T11:30:00+01:30""#).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-12-04T10:00:00+00:00");
        let Timestamp(edge) = serde_json::from_str(r#""0001-01-01T00:00:00+23:59""#).unwrap();
        assert_eq!(edge.to_rfc3339(), "0001-01-01T00:00:00+00:00");
        for bad in [r#""yesterday""#, r#""2026-13-01T00:00:00Z""#] {
            let err = serde_json::from_str::<Timestamp>(bad).unwrap_err();
            assert!(err.to_string().contains("RFC 3339"), "{bad}: {err}");
        }
    }
}
