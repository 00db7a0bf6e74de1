//! Timestamps in answers, written as chrono writes them (RFC 3339, `Z`, as
//! many fractional digits as needed) but formatted into one string first.
//!
//! chrono's own `Serialize` writes through `collect_str`, so serde_json escapes
//! each of the twenty-odd pieces the formatter emits separately: measured with
//! callgrind, the two timestamps of a user were half the cost of its answer.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// `#[serde(serialize_with = "platform::timestamp::rfc3339")]`
///
/// # Errors
/// Only the serializer's own.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[derive(serde::Serialize)]
    struct Both {
        #[serde(serialize_with = "rfc3339")]
        ours: DateTime<Utc>,
        chronos: DateTime<Utc>,
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_writes_them() {
        let whole = Utc.with_ymd_and_hms(2026, 12, 3, 15, 4, 5).unwrap();
        for at in [
            whole,
            whole + chrono::Duration::milliseconds(120),
            whole + chrono::Duration::microseconds(123_456),
            whole + chrono::Duration::nanoseconds(1),
        ] {
            let json = serde_json::to_value(Both {
                ours: at,
                chronos: at,
            })
            .unwrap();
            assert_eq!(json["ours"], json["chronos"], "{json}");
        }
    }
}
