//! Times as the JetStream API writes them: RFC 3339 in UTC, with up to nine fractional digits and
//! `Z` (clients cut the fraction themselves and do not accept an offset). A time never set is
//! `0001-01-01T00:00:00Z`, Go's zero time.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Go's zero time, for times never set.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Nanoseconds since the Unix epoch as RFC 3339 in UTC; 0 is the zero time.
pub fn format_time_ns(ns: u64) -> String {
    if ns == 0 {
        return ZERO_TIME.to_owned();
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ZERO_TIME.to_owned())
}

/// Reads an RFC 3339 time (any offset, 0–9 fractional digits) as nanoseconds since the Unix
/// epoch; times before the epoch (Go's zero time among them) are 0.
pub fn parse_time_ns(text: &str) -> Option<u64> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some(u64::try_from(time.unix_timestamp_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_are_written_in_utc_with_z() {
        assert_eq!(
            format_time_ns(1_795_384_005_075_365_560),
            "2026-11-22T21:46:45.07536556Z"
        );
        assert_eq!(
            format_time_ns(1_795_384_005_000_000_000),
            "2026-11-22T21:46:45Z"
        );
        assert_eq!(format_time_ns(0), ZERO_TIME);
    }

    #[test]
    fn times_with_offsets_and_short_fractions_are_read() {
        assert_eq!(
            parse_time_ns("2026-11-22T21:46:45.075Z"),
            Some(1_795_384_005_075_000_000)
        );
        assert_eq!(
            parse_time_ns("2026-11-22T22:46:45+01:00"),
            Some(1_795_384_005_000_000_000)
        );
        assert_eq!(parse_time_ns(ZERO_TIME), Some(0));
        assert_eq!(parse_time_ns("yesterday"), None);
    }

    proptest! {
        #[test]
        fn times_round_trip(ns in 1u64..4_000_000_000_000_000_000) {
            prop_assert_eq!(parse_time_ns(&format_time_ns(ns)), Some(ns));
        }
    }
}
