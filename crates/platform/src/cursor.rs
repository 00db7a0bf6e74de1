//! Keyset cursors: an opaque position in a list ordered newest first by
//! `(created_at, id)`, handed out as `meta.next_cursor` and read back from
//! `?cursor=`.
//!
//! A cursor is base64url (no padding) over a small versioned record: a version
//! byte, the instant in microseconds since 1970 (8 bytes, big-endian), the id
//! (8 bytes for a BIGINT, 16 for a UUID) and a CRC-32 over the list's *scope*
//! (its name and filter) and the bytes before it. The checksum is not a secret:
//! it binds the cursor to the list it came from, so a cursor that was altered,
//! cut short, or taken from another list (or the same list with another filter)
//! is refused with a 400 naming `cursor` instead of silently paging somewhere else.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use uuid::Uuid;

use crate::error::ApiError;

/// The record layout this code writes; any other version is refused.
const VERSION: u8 = 1;

const CRC_32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What a client is told when a cursor is refused.
pub const REFUSED: &str = "must be the meta.next_cursor of an earlier page of this list, \
                           with the same filters";

/// Longest cursor text any list writes (a UUID key), so longer input is refused
/// before it is decoded.
pub const MAX_CURSOR_CHARS: usize = 40;

/// The id half of a sort key, as bytes of a fixed length.
pub trait CursorId: Sized + Copy {
    /// How many bytes the id takes in the record.
    const LEN: usize;
    fn write(&self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Option<Self>;
}

impl CursorId for i64 {
    const LEN: usize = 8;

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(i64::from_be_bytes)
    }
}

impl CursorId for Uuid {
    const LEN: usize = 16;

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok()
    }
}

/// Where a keyset page starts: right after the row with this sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor<Id> {
    pub at: DateTime<Utc>,
    pub id: Id,
}

impl<Id: CursorId> Cursor<Id> {
    /// The record's length in bytes, checksum included.
    const BYTES: usize = 1 + 8 + Id::LEN + 4;

    /// The opaque text of this position in the list named by `scope`.
    pub fn encode(&self, scope: &str) -> String {
        let mut bytes = Vec::with_capacity(Self::BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.at.timestamp_micros().to_be_bytes());
        self.id.write(&mut bytes);
        let crc = checksum(scope, &bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor that [`Cursor::encode`] wrote for the same `scope`.
    ///
    /// # Errors
    /// [`REFUSED`] for anything else: not base64url, another length or version,
    /// or a checksum that does not match this scope.
    pub fn decode(text: &str, scope: &str) -> Result<Self, &'static str> {
        if text.len() > MAX_CURSOR_CHARS {
            return Err(REFUSED);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| REFUSED)?;
        if bytes.len() != Self::BYTES || bytes[0] != VERSION {
            return Err(REFUSED);
        }
        let (record, crc) = bytes.split_at(Self::BYTES - 4);
        if crc != checksum(scope, record).to_be_bytes() {
            return Err(REFUSED);
        }
        let micros = i64::from_be_bytes(record[1..9].try_into().map_err(|_| REFUSED)?);
        // The checksum is no secret: an instant no row can have (outside the
        // years both backends store) is refused, not sent to the database.
        let at = DateTime::from_timestamp_micros(micros)
            .filter(|at| (1..=9999).contains(&at.year()))
            .ok_or(REFUSED)?;
        Ok(Self {
            at,
            id: Id::read(&record[9..]).ok_or(REFUSED)?,
        })
    }

    /// [`Cursor::decode`] for a `cursor` query parameter: a refusal is a 400
    /// naming it.
    ///
    /// # Errors
    /// VALIDATION_ERROR on the field `cursor`.
    pub fn from_param(text: &CursorText, scope: &str) -> Result<Self, ApiError> {
        Self::decode(&text.0, scope).map_err(|message| ApiError::invalid_field("cursor", message))
    }
}

/// A `cursor` query parameter that has the shape of a cursor (base64url of a
/// record of this version); whether it belongs to the list is checked when it is
/// read against the list's scope ([`Cursor::from_param`]). Checking the shape
/// while the query is decoded names a garbled cursor together with the other
/// bad parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CursorText(String);

impl CursorText {
    /// # Errors
    /// [`REFUSED`] when `text` cannot be a cursor of any list.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let shaped = text.len() <= MAX_CURSOR_CHARS
            && URL_SAFE_NO_PAD.decode(text).is_ok_and(|bytes| {
                bytes.first() == Some(&VERSION)
                    && [Cursor::<i64>::BYTES, Cursor::<Uuid>::BYTES].contains(&bytes.len())
            });
        shaped.then(|| Self(text.to_owned())).ok_or(REFUSED)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CursorText {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl utoipa::PartialSchema for CursorText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_CURSOR_CHARS))
            .pattern(Some("^[A-Za-z0-9_-]+$"))
            .description(Some(
                "An opaque position in the list: the meta.next_cursor of an earlier page \
                 of the same list with the same filters",
            ))
            .into()
    }
}

impl utoipa::ToSchema for CursorText {}

fn checksum(scope: &str, record: &[u8]) -> u32 {
    let mut digest = CRC_32.digest();
    digest.update(scope.as_bytes());
    // A separator the scope cannot end in ambiguously with the record.
    digest.update(&[0]);
    digest.update(record);
    digest.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor<i64> {
        Cursor {
            at: crate::db::now(),
            id: 4711,
        }
    }

    #[test]
    fn a_cursor_reads_back_as_written_in_its_own_scope_only() {
        let cursor = sample();
        let text = cursor.encode("users|search=ab");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text, "users|search=ab"), Ok(cursor));
        assert_eq!(
            Cursor::<i64>::decode(&text, "users|search=abc"),
            Err(REFUSED)
        );
        assert_eq!(Cursor::<i64>::decode(&text, "orders"), Err(REFUSED));
        let uuid = Cursor {
            at: cursor.at,
            id: Uuid::now_v7(),
        };
        let text = uuid.encode("audit");
        assert!(text.len() <= MAX_CURSOR_CHARS, "{text}");
        assert_eq!(Cursor::decode(&text, "audit"), Ok(uuid));
    }

    #[test]
    fn altered_or_malformed_cursors_are_refused() {
        let good = sample().encode("users");
        let mut flipped = good.clone().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            "",
            "abc",
            "!!!!",
            &good[1..],
            &format!("{good}AA"),
            &flipped,
            &"A".repeat(28),
            &"é".repeat(10),
            &"A".repeat(1000),
        ] {
            assert_eq!(Cursor::<i64>::decode(bad, "users"), Err(REFUSED), "{bad:?}");
        }
        // The right length for an i64 key is the wrong one for a UUID key.
        assert_eq!(Cursor::<Uuid>::decode(&good, "users"), Err(REFUSED));
    }

    #[test]
    fn only_the_shape_of_a_cursor_passes_as_a_parameter() {
        let good = sample().encode("users");
        assert_eq!(CursorText::parse(&good).unwrap().as_str(), good);
        for bad in [
            "",
            "y",
            "garbage",
            &good[1..],
            &format!("{good}A"),
            &"_".repeat(32),
        ] {
            assert_eq!(CursorText::parse(bad), Err(REFUSED), "{bad:?}");
        }
    }

    #[test]
    fn an_instant_outside_the_storable_years_is_refused() {
        let far = Cursor {
            at: DateTime::<Utc>::MAX_UTC,
            id: 1_i64,
        };
        assert_eq!(Cursor::<i64>::decode(&far.encode("x"), "x"), Err(REFUSED));
    }

    #[test]
    fn a_refused_cursor_is_a_400_naming_cursor() {
        let text = CursorText::parse(&sample().encode("users")).unwrap();
        let err = Cursor::<i64>::from_param(&text, "orders").unwrap_err();
        match err {
            ApiError::Validation { details, .. } => assert_eq!(details[0].field, "cursor"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
