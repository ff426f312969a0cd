//! Named failure points that tests can trip, as Redpanda's storage names its own: a point is a
//! place in the write path (`fsync`, `write`) where a test can make the log slow.
//!
//! Points are set once per process from the `SLUICE_FAILPOINTS` environment variable, a comma-separated
//! list of `NAME=delay:MILLISECONDS`, e.g. `SLUICE_FAILPOINTS=fsync=delay:200`. Unset, every point
//! costs one branch on a value read once.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable that sets failure points.
pub const FAILPOINTS_ENV: &str = "SLUICE_FAILPOINTS";

/// A place in the write path where a test may inject a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before each `fdatasync` of a segment.
    Fsync,
    /// Before each direct-I/O write of a round.
    Write,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Fsync => "fsync",
            Point::Write => "write",
        }
    }
}

/// The delays set for each point, read once.
fn delays() -> &'static [(Point, Duration)] {
    static DELAYS: OnceLock<Vec<(Point, Duration)>> = OnceLock::new();
    DELAYS.get_or_init(|| {
        std::env::var(FAILPOINTS_ENV)
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

/// Parses `NAME=delay:MS[,...]`; entries that do not parse are ignored with a log line.
fn parse(spec: &str) -> Vec<(Point, Duration)> {
    let mut delays = Vec::new();
    for entry in spec.split(',').filter(|e| !e.trim().is_empty()) {
        let parsed = entry.split_once('=').and_then(|(name, action)| {
            let point = [Point::Fsync, Point::Write]
                .into_iter()
                .find(|p| p.name() == name.trim())?;
            let ms = action.trim().strip_prefix("delay:")?.parse::<u64>().ok()?;
            Some((point, Duration::from_millis(ms)))
        });
        match parsed {
            Some(delay) => {
                tracing::warn!(point = ?delay.0, delay = ?delay.1, "failure point set");
                delays.push(delay);
            }
            None => tracing::warn!(entry, "unreadable failure point ignored"),
        }
    }
    delays
}

/// Passes a failure point: waits for its delay, if one is set.
pub async fn hit(point: Point) {
    let delay = delays().iter().find(|(p, _)| *p == point).map(|(_, d)| *d);
    if let Some(delay) = delay {
        glommio::timer::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failpoint_spec_names_points_and_delays() {
        assert_eq!(
            parse("fsync=delay:200, write=delay:5"),
            vec![
                (Point::Fsync, Duration::from_millis(200)),
                (Point::Write, Duration::from_millis(5))
            ]
        );
        assert!(parse("fsync=explode,nothing=delay:1,").is_empty());
    }
}
