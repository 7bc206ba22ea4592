//! `google.protobuf.Timestamp` with the proto3 JSON mapping.
//!
//! pbjson-types serialises its Timestamp with chrono's `to_rfc3339()`, which
//! prints `+00:00`; the proto3 JSON mapping (and every other runwire client)
//! prints `Z` and 0, 3, 6 or 9 fractional digits. The generated code maps
//! `google.protobuf.Timestamp` to this type instead (see `codegen/`); every
//! other well-known type comes from pbjson-types, whose mapping is right.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds of 0001-01-01T00:00:00Z, the earliest valid Timestamp.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z, the latest valid Timestamp.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
///
/// Wire-compatible with `google.protobuf.Timestamp`; in JSON an RFC 3339
/// string such as `2026-11-21T20:38:01.123456789Z`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fraction of a second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Converts to a chrono `DateTime`, or `None` outside the range proto3
    /// allows (years 1 to 9999, nanos 0 to 999,999,999).
    pub fn to_datetime(&self) -> Option<DateTime<Utc>> {
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds) {
            return None;
        }
        let nanos = u32::try_from(self.nanos).ok().filter(|n| *n < 1_000_000_000)?;
        DateTime::from_timestamp(self.seconds, nanos)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self {
            seconds: value.timestamp(),
            // Always below 2e9: chrono keeps leap seconds in the nanos.
            nanos: i32::try_from(value.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            // AutoSi prints 0, 3, 6 or 9 fractional digits, as proto3 JSON does.
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "<invalid Timestamp {}s {}ns>", self.seconds, self.nanos),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.to_datetime().is_none() {
            return Err(serde::ser::Error::custom(format!(
                "Timestamp out of range: seconds {} nanos {}",
                self.seconds, self.nanos
            )));
        }
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
        let parsed = DateTime::parse_from_rfc3339(s).map_err(|e| E::custom(format!("invalid Timestamp {s:?}: {e}")))?;
        let ts = Timestamp::from(parsed.with_timezone(&Utc));
        if ts.to_datetime().is_none() {
            return Err(E::custom(format!("Timestamp {s:?} out of range")));
        }
        Ok(ts)
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    fn json(ts: Timestamp) -> String {
        serde_json::to_string(&ts).unwrap()
    }

    #[test]
    fn test_timestamp_json_uses_z_and_si_fraction_digits() {
        let base = 1_795_293_481; // 2026-11-21T20:38:01Z
        assert_eq!(json(Timestamp { seconds: base, nanos: 0 }), r#""2026-11-21T20:38:01Z""#);
        assert_eq!(json(Timestamp { seconds: base, nanos: 120_000_000 }), r#""2026-11-21T20:38:01.120Z""#);
        assert_eq!(json(Timestamp { seconds: base, nanos: 123_456_000 }), r#""2026-11-21T20:38:01.123456Z""#);
        assert_eq!(json(Timestamp { seconds: base, nanos: 123_456_789 }), r#""2026-11-21T20:38:01.123456789Z""#);
    }

    #[test]
    fn test_timestamp_json_parses_offsets_and_rejects_out_of_range() {
        let ts: Timestamp = serde_json::from_str(r#""2026-11-21T21:38:01.5+01:00""#).unwrap();
        assert_eq!(ts, Timestamp { seconds: 1_795_293_481, nanos: 500_000_000 });
        assert!(serde_json::from_str::<Timestamp>(r#""not a time""#).is_err());
        assert!(serde_json::to_string(&Timestamp { seconds: 0, nanos: -1 }).is_err());
        assert!(serde_json::to_string(&Timestamp { seconds: i64::MAX, nanos: 0 }).is_err());
    }
}
