//! Times as the API shows them: RFC 3339 in UTC with milliseconds (`2026-12-06T12:00:00.000Z`).
//! Storage keeps unix milliseconds; every JSON answer, of the HTTP API and of the CLI, converts
//! here.

use chrono::{DateTime, SecondsFormat};
use serde::Serializer;

/// `ms` (unix milliseconds) as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// An instant given by a caller: RFC 3339 (any offset) or unix milliseconds.
pub fn parse_instant(text: &str) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // 15 digits reach the year 33658; more is a mistake, not a time.
        return (text.len() <= 15).then(|| text.parse().ok()).flatten();
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `#[serde(serialize_with = "crate::time::serialize")]` on an `i64` of unix milliseconds.
pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// As [`serialize`], for an `Option<i64>` (`null` stays `null`).
pub fn serialize_opt<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => serialize(ms, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_558_400_123), "2026-12-06T12:00:00.123Z");
    }

    #[test]
    fn parses_rfc3339_and_milliseconds_only() {
        assert_eq!(
            parse_instant("2026-12-06T12:00:00.123Z"),
            Some(1_796_558_400_123)
        );
        assert_eq!(
            parse_instant("2026-12-06T13:00:00+01:00"),
            Some(1_796_558_400_000)
        );
        assert_eq!(parse_instant("1796558400123"), Some(1_796_558_400_123));
        for bad in [
            "",
            "yesterday",
            "2026-12-06",
            "-5",
            "1e9",
            "2026-12-06 12:00:00",
            "1234567890123456",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad:?}");
        }
    }
}
