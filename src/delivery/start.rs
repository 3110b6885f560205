//! Where a destination starts reading (`start=`) and where a rewind moves it.
//!
//! `start=` applies only when the destination has no persisted cursor yet; an existing
//! cursor always wins, so restarting with a changed `start=` never moves a running
//! destination (use a rewind for that). The default, `earliest`, is what a new cursor always
//! did: the oldest stored record — with `--wal-retention` that includes retained history.
//! It stays the default because a destination added to the configuration then never misses
//! events accepted between the edit and its first read (the issue asks for `latest` as an
//! option, not as the default), and without retention it reaches back only to what the other
//! destinations have not passed yet. `latest` reads only records appended from now on
//! (LaunchDarkly's Data Export behaviour); a time starts at the first record received at or
//! after it (before the oldest stored record: the oldest stored record).
//!
//! Times are RFC 3339 (`2026-11-01T00:00:00Z`, `2026-11-01T02:00:00+02:00`) and are looked up
//! against the WAL's record receive times ([`Wal::seq_at_time`]).

use std::fmt;
use std::str::FromStr;

use crate::wal::Wal;

/// The `start=` option of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The oldest stored record (the default).
    #[default]
    Earliest,
    /// Only records appended after the cursor is created.
    Latest,
    /// The first record received at or after this Unix time in milliseconds.
    Time(u64),
}

impl StartAt {
    /// The seq a new cursor gets.
    pub fn resolve(self, wal: &Wal) -> u64 {
        match self {
            StartAt::Earliest => wal.first_seq(),
            StartAt::Latest => wal.next_seq(),
            StartAt::Time(unix_ms) => wal.seq_at_time(unix_ms),
        }
    }
}

impl FromStr for StartAt {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ => parse_time(text).map(StartAt::Time).map_err(|err| {
                format!("`{text}` is not `earliest`, `latest` or an RFC 3339 time ({err})")
            }),
        }
    }
}

impl fmt::Display for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartAt::Earliest => f.write_str("earliest"),
            StartAt::Latest => f.write_str("latest"),
            StartAt::Time(unix_ms) => f.write_str(&format_time(*unix_ms)),
        }
    }
}

/// Where a rewind moves a destination's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindTo {
    /// The oldest stored record.
    Earliest,
    /// The first record received at or after this Unix time in milliseconds.
    Time(u64),
    /// This record.
    Seq(u64),
}

/// An RFC 3339 time as Unix milliseconds: `…Z` or with a `±HH:MM` offset, optional fraction.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let (utc, offset_minutes) = split_offset(text)?;
    let time = humantime::parse_rfc3339(&utc).map_err(|err| err.to_string())?;
    let unix_ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the time is before 1970".to_string())?
        .as_millis() as i64;
    u64::try_from(unix_ms - offset_minutes * 60_000).map_err(|_| "the time is before 1970".into())
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds.
pub fn format_time(unix_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Turn a `±HH:MM` suffix into `Z` (humantime reads only UTC) and return the offset.
fn split_offset(text: &str) -> Result<(String, i64), String> {
    if text.ends_with(['Z', 'z']) {
        return Ok((text.to_string(), 0));
    }
    let bytes = text.as_bytes();
    let Some(split) = text.len().checked_sub(6) else {
        return Err("expected a time such as 2026-11-01T00:00:00Z".into());
    };
    let (base, offset) = text.split_at(split);
    let sign = match bytes[split] {
        // A `+` written unescaped in a `--dest` URL's query arrives as a space.
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return Err("a time needs `Z` or an offset such as +02:00".into()),
    };
    let hours = offset.get(1..3).and_then(|h| h.parse::<i64>().ok());
    let minutes = offset.get(4..6).and_then(|m| m.parse::<i64>().ok());
    match (hours, minutes, offset.get(3..4)) {
        (Some(hours), Some(minutes), Some(":")) if hours < 24 && minutes < 60 => {
            Ok((format!("{base}Z"), sign * (hours * 60 + minutes)))
        }
        _ => Err(format!("`{offset}` is not a UTC offset such as +02:00")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keywords_and_times_with_offsets() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!("latest".parse(), Ok(StartAt::Latest));
        let utc = parse_time("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(utc, 1_793_491_200_000);
        assert_eq!(parse_time("2026-11-01T02:00:00+02:00"), Ok(utc));
        assert_eq!(
            parse_time("2026-11-01T02:00:00 02:00"),
            Ok(utc),
            "an unescaped + in a URL"
        );
        assert_eq!(parse_time("2026-10-31T19:30:00.250-04:30"), Ok(utc + 250));
        assert_eq!(format_time(utc + 250), "2026-11-01T00:00:00.250Z");
        for bad in [
            "yesterday",
            "2026-11-01",
            "2026-11-01T00:00:00+2:00",
            "2026-11-01T00:00:00",
        ] {
            let err = bad.parse::<StartAt>().unwrap_err();
            assert!(err.contains(bad) && err.contains("RFC 3339"), "{err}");
        }
    }
}
