//! What a log measures about itself: how long each `fdatasync` takes and how long each append waits
//! until it is durable, as histograms with fixed buckets (the Prometheus kind, so that shards and
//! partitions add up).

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; a last bucket holds everything above.
pub const BUCKET_BOUNDS_US: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A histogram one thread writes (a partition's log lives on one shard).
#[derive(Debug, Default)]
pub struct LatencyBuckets {
    counts: [Cell<u64>; BUCKET_BOUNDS_US.len() + 1],
    sum_us: Cell<u64>,
}

impl LatencyBuckets {
    /// Counts one duration.
    pub fn record(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let index = BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        let slot = &self.counts[index];
        slot.set(slot.get() + 1);
        self.sum_us.set(self.sum_us.get().saturating_add(us));
    }

    /// The counts so far, to send to another thread.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// Counts per bucket of [`BUCKET_BOUNDS_US`] (not cumulative; one more than the bounds) and the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl Histogram {
    /// Adds another histogram of the same buckets.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A log's measurements.
#[derive(Debug, Default)]
pub struct LogMetrics {
    /// Each `fdatasync` of the active segment.
    pub fsync: LatencyBuckets,
    /// Each append call, from the call to its records being durable (under the fsync policy).
    pub append: LatencyBuckets,
}

/// A copy of [`LogMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogMetricsSnapshot {
    pub fsync: Histogram,
    pub append: Histogram,
}

impl LogMetrics {
    pub fn snapshot(&self) -> LogMetricsSnapshot {
        LogMetricsSnapshot {
            fsync: self.fsync.snapshot(),
            append: self.append.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let b = LatencyBuckets::default();
        b.record(Duration::from_micros(10));
        b.record(Duration::from_micros(25));
        b.record(Duration::from_micros(26));
        b.record(Duration::from_secs(5));
        let h = b.snapshot();
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[BUCKET_BOUNDS_US.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_us, 10 + 25 + 26 + 5_000_000);
        let mut total = Histogram::default();
        total.merge(&h);
        total.merge(&h);
        assert_eq!(total.count(), 8);
    }
}
