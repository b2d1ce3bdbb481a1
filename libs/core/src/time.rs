//! Timestamps as approval artifacts carry them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Read a timestamp: RFC 3339 with `Z` or an offset (`2026-11-21T10:00:00Z`,
/// `2026-11-21T10:00:00+02:00`), or a naive `YYYY-MM-DDTHH:MM:SS[.ffffff]` read as UTC (what
/// Python's `datetime.utcnow().isoformat()` writes). A space may stand for the `T`. Also accepted,
/// as Python's `datetime.fromisoformat` does: `YYYY-MM-DDTHH:MM` and a bare `YYYY-MM-DD`
/// (midnight UTC). Anything else is `None`.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    // Normalise a space separator to 'T' (only at the date/time boundary).
    let owned;
    let s = if s.len() > 10 && s.as_bytes()[10] == b' ' && s.is_char_boundary(10) {
        owned = format!("{}T{}", &s[..10], &s[11..]);
        owned.as_str()
    } else {
        s
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Offsets without a colon ("+0000") or with a naive-looking time part.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if s.len() == 10 {
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        }
    }
    None
}

/// RFC 3339 in UTC to the second with `Z`: `2026-11-21T10:00:00Z`.
pub fn format_rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn forms() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for s in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00z",
            "2026-01-01T00:00:00.000000Z",
            "2026-01-01T02:00:00+02:00",
            "2026-01-01T02:00:00+0200",
            "2025-12-31T23:00:00-01:00",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.000000",
            "2026-01-01 00:00:00",
            "2026-01-01 00:00:00.000",
            "2026-01-01 00:00:00+00:00",
            "2026-01-01T00:00",
            "2026-01-01",
        ] {
            assert_eq!(parse_timestamp(s), Some(t), "{s}");
        }
        let frac = parse_timestamp("2026-01-01T00:00:00.123456").unwrap();
        assert_eq!(frac.timestamp_subsec_micros(), 123456);
        for s in [
            "",
            "not a time",
            "2026-13-01T00:00:00",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00 junk",
            "1767225600",
            "2026-01-01Té00:00:00",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
        assert_eq!(format_rfc3339(t), "2026-01-01T00:00:00Z");
        let with_frac = Utc.timestamp_opt(1_767_225_600, 999_000_000).unwrap();
        assert_eq!(format_rfc3339(with_frac), "2026-01-01T00:00:00Z");
    }
}
