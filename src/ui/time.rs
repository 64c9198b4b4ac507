//! Times as people read them: short durations (`1h 5m`), "ago" from an
//! RFC 3339 stamp, and clock times.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A duration in the two largest units: `45s`, `12m 3s`, `2h 5m`, `3d 4h`.
pub fn duration(secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    match secs {
        s if s < MIN => format!("{s}s"),
        s if s < HOUR => two_units(s / MIN, "m", s % MIN, "s"),
        s if s < DAY => two_units(s / HOUR, "h", (s % HOUR) / MIN, "m"),
        s => two_units(s / DAY, "d", (s % DAY) / HOUR, "h"),
    }
}

fn two_units(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit} {small}{small_unit}")
    }
}

/// Parse an RFC 3339 stamp as the daemon writes it.
pub fn parse(stamp: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(stamp, &Rfc3339).ok()
}

/// `5m ago` for a stamp before `now`; the raw text when it does not parse.
pub fn ago(stamp: &str, now: OffsetDateTime) -> String {
    match parse(stamp) {
        Some(t) => {
            let secs = (now - t).whole_seconds().max(0) as u64;
            format!("{} ago", duration(secs))
        }
        None => stamp.to_string(),
    }
}

/// `2024-05-01 12:03:04Z (5m ago)`: absolute and relative, for "since".
pub fn since(stamp: &str, now: OffsetDateTime) -> String {
    match parse(stamp) {
        Some(t) => format!("{} ({})", clock(t), ago(stamp, now)),
        None => stamp.to_string(),
    }
}

/// `2024-05-01 12:03:04Z`, in UTC like the stored stamps.
fn clock(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_two_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(60), "1m");
        assert_eq!(duration(725), "12m 5s");
        assert_eq!(duration(7500), "2h 5m");
        assert_eq!(duration(3 * 86400 + 4 * 3600), "3d 4h");
    }

    #[test]
    fn ago_and_since_read_rfc3339() {
        let now = parse("2024-05-01T12:05:04Z").unwrap();
        assert_eq!(ago("2024-05-01T12:03:04Z", now), "2m ago");
        assert_eq!(
            since("2024-05-01T12:03:04Z", now),
            "2024-05-01 12:03:04Z (2m ago)"
        );
        assert_eq!(ago("not a time", now), "not a time");
    }
}
