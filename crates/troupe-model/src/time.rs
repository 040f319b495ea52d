//! Timestamps: stored as milliseconds since the epoch, shown as ISO-8601 UTC with exactly three
//! fractional digits and `Z` (what both official clients parse).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2026-08-21T10:23:31.607Z`.
pub fn format_ts(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses the timestamp forms the clients send: RFC 3339 (`…T…Z`, any offset) and Python's
/// `str(datetime)` form `2026-08-21 10:23:31.607000+00:00`; a naive value is taken as UTC.
pub fn parse_ts(s: &str) -> Option<i64> {
    // Years 1-9999 only: what ISO-8601 without extensions can express (and format back).
    parse_any(s).filter(|ms| (-62_135_596_800_000..=253_402_300_799_999).contains(ms))
}

fn parse_any(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts(1_755_771_811_607), "2025-08-21T10:23:31.607Z");
    }

    #[test]
    fn parses_js_and_python_forms() {
        let js = parse_ts("2026-08-21T10:23:31.607Z").unwrap();
        let py = parse_ts("2026-08-21 10:23:31.607000+00:00").unwrap();
        assert_eq!(js, py);
        assert_eq!(parse_ts("2026-08-21"), parse_ts("2026-08-21T00:00:00Z"));
        assert!(parse_ts("yesterday").is_none());
        assert!(parse_ts("-811-1-1").is_none(), "negative years are refused");
        assert!(parse_ts("+10000-01-01T00:00:00Z").is_none());
    }
}
