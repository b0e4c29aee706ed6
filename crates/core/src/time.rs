//! Instants and durations as the domain sees them: UTC, millisecond precision, never read from a clock.
//!
//! The core never asks what time it is. Every function that needs "now" takes a [`Timestamp`]
//! argument, so the router, the audit replay and the tests all get exactly the same answers.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC, counted in milliseconds since the Unix epoch.
///
/// Milliseconds are the precision of every timestamp refbus records: fine enough for ordering
/// within a referral (which is ordered by sequence number anyway) and exact in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest instant refbus can represent; used as "no lower bound".
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest instant refbus can represent; used as "never".
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 instant with any offset, e.g. `2026-03-02T09:00:00+08:00`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        if let Some(canonical) = Timestamp::parse_canonical(text) {
            return Ok(canonical);
        }
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|err| TimeError {
            input: text.to_owned(),
            reason: err.to_string(),
        })?;
        Ok(Timestamp(parsed.timestamp_millis()))
    }

    /// The canonical form written by [`Timestamp::to_rfc3339`], `YYYY-MM-DDTHH:MM:SS.mmmZ`,
    /// read without a general parser: every stored event carries several, and readers such as
    /// the router parse millions.
    fn parse_canonical(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 24
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b'T'
            && bytes[13] == b':'
            && bytes[16] == b':'
            && bytes[19] == b'.'
            && bytes[23] == b'Z';
        if !shape_ok {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            bytes[range].iter().try_fold(0u32, |value, &digit| {
                digit
                    .is_ascii_digit()
                    .then(|| value * 10 + u32::from(digit - b'0'))
            })
        };
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::try_from(number(0..4)?).ok()?,
            number(5..7)?,
            number(8..10)?,
        )?;
        let time = chrono::NaiveTime::from_hms_milli_opt(
            number(11..13)?,
            number(14..16)?,
            number(17..19)?,
            number(20..23)?,
        )?;
        Some(Timestamp(date.and_time(time).and_utc().timestamp_millis()))
    }

    /// The canonical text form: UTC, three fractional digits, `Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_chrono()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn to_chrono(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn from_chrono<Tz: TimeZone>(instant: &DateTime<Tz>) -> Self {
        Timestamp(instant.timestamp_millis())
    }

    /// `self + duration`, saturating at [`Timestamp::MAX`].
    pub fn plus(self, duration: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(duration)))
    }

    /// `self - duration`, saturating at [`Timestamp::MIN`].
    pub fn minus(self, duration: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(duration)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is not earlier.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// A text that is not an RFC 3339 instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an RFC 3339 instant (e.g. 2026-03-02T09:00:00+08:00): {reason}")]
pub struct TimeError {
    pub input: String,
    pub reason: String,
}

/// Formats a duration for people: `1h`, `72h`, `2h30m`, `45s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || text.is_empty() {
        text.push_str(&format!("{seconds}s"));
    }
    text
}

/// Serde for durations as whole milliseconds, the unit of the canonical encoding.
pub mod serde_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_is_canonical_utc() {
        let at = Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-03-02T01:00:00.000Z");
        assert_eq!(at.to_string().parse::<Timestamp>().unwrap(), at);
    }

    #[test]
    fn the_canonical_form_reads_back_exactly_and_bad_forms_are_refused() {
        for text in [
            "2026-03-02T01:00:00.000Z",
            "1999-12-31T23:59:59.999Z",
            "2028-02-29T12:00:00.250Z",
        ] {
            let parsed = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!(parsed.to_rfc3339(), text);
            assert_eq!(Some(parsed), Timestamp::parse_canonical(text));
        }
        for bad in [
            "2026-02-30T01:00:00.000Z",
            "2026-03-02T25:00:00.000Z",
            "2026-03-02T01:00:00.00xZ",
        ] {
            assert_eq!(Timestamp::parse_canonical(bad), None, "{bad}");
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Timestamp::MAX.plus(Duration::from_secs(1)), Timestamp::MAX);
        assert_eq!(
            Timestamp::from_millis(5).since(Timestamp::from_millis(9)),
            Duration::ZERO
        );
    }

    #[test]
    fn durations_read_like_a_policy() {
        assert_eq!(format_duration(Duration::from_secs(72 * 3600)), "72h");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
