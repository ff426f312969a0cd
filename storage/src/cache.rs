//! The newest records of a partition, kept in memory so that tailing readers never touch the disk
//! (O_DIRECT bypasses the page cache, so nothing else would keep them).

use std::collections::VecDeque;

use crate::record::Record;

/// A window of consecutive records ending at the newest.
pub struct RecordCache {
    records: VecDeque<Record>,
    bytes: usize,
    bytes_max: usize,
}

impl RecordCache {
    /// An empty cache that holds about `bytes_max` of record bodies.
    pub fn new(bytes_max: usize) -> RecordCache {
        RecordCache {
            records: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Adds the next record; it must follow the newest one.
    pub fn push(&mut self, record: Record) {
        if let Some(last) = self.records.back() {
            if record.offset != last.end() {
                self.clear();
            }
        }
        self.bytes += record.body.len();
        self.records.push_back(record);
    }

    /// Drops the oldest records while over budget, but never one at or above `keep_from` (records
    /// not yet durable, which only the cache holds for readers).
    pub fn trim(&mut self, keep_from: u64) {
        while self.bytes > self.bytes_max {
            match self.records.front() {
                Some(front) if front.offset < keep_from => {
                    self.bytes -= front.body.len();
                    self.records.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops every record at or above `offset` (appends that failed).
    pub fn truncate_from(&mut self, offset: u64) {
        while let Some(back) = self.records.back() {
            if back.offset < offset {
                break;
            }
            self.bytes -= back.body.len();
            self.records.pop_back();
        }
    }

    /// Drops every record below `offset`.
    pub fn drop_before(&mut self, offset: u64) {
        while let Some(front) = self.records.front() {
            if front.offset >= offset {
                break;
            }
            self.bytes -= front.body.len();
            self.records.pop_front();
        }
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// The oldest offset held.
    pub fn first_offset(&self) -> Option<u64> {
        self.records.front().map(|r| r.offset)
    }

    /// Records from `from` below `until`, about `max_bytes` of bodies (at least one record), if the
    /// cache holds `from`; the first is the one that takes `from` (a span may start below it).
    pub fn read(
        &self,
        from: u64,
        until: u64,
        max_bytes: usize,
    ) -> Option<Vec<crate::record::Record>> {
        let first = self.first_offset()?;
        if from < first {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Dense offsets index directly; spans need a search for the record that takes `from`.
        let direct = (from - first) as usize;
        let start = match self.records.get(direct) {
            Some(r) if r.offset == from => direct,
            _ => self.records.partition_point(|r| r.end() <= from),
        };
        for record in self.records.iter().skip(start) {
            if record.offset >= until || (!out.is_empty() && bytes + record.body.len() > max_bytes)
            {
                break;
            }
            bytes += record.body.len();
            out.push(record.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(offset: u64, len: usize) -> Record {
        Record {
            offset,
            count: 1,
            timestamp_ns: offset,
            body: Bytes::from(vec![0u8; len]),
        }
    }

    #[test]
    fn the_cache_keeps_the_newest_within_budget_but_never_undurable_records() {
        let mut cache = RecordCache::new(100);
        for i in 0..10 {
            cache.push(record(i, 30));
        }
        cache.trim(5);
        assert_eq!(cache.first_offset(), Some(5));
        cache.trim(10);
        assert_eq!(cache.first_offset(), Some(7));
        assert!(cache.read(6, 10, 1000).is_none());
        let got = cache.read(8, 10, 1000).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![8, 9]);
        let one = cache.read(7, 10, 1).unwrap();
        assert_eq!(one.len(), 1, "at least one record whatever the budget");
        cache.truncate_from(9);
        assert_eq!(cache.read(7, 100, 1000).unwrap().len(), 2);
    }

    #[test]
    fn a_read_inside_a_span_starts_at_the_span() {
        let mut cache = RecordCache::new(1000);
        let span = |offset, count| Record {
            offset,
            count,
            timestamp_ns: 0,
            body: Bytes::from_static(b"batch"),
        };
        cache.push(span(0, 3));
        cache.push(span(3, 1));
        cache.push(span(4, 5));
        let at = |from| -> Vec<u64> {
            let got = cache.read(from, 9, 1000).unwrap();
            got.iter().map(|r| r.offset).collect()
        };
        assert_eq!(at(0), vec![0, 3, 4]);
        assert_eq!(at(2), vec![0, 3, 4]);
        assert_eq!(at(3), vec![3, 4]);
        assert_eq!(at(7), vec![4]);
        assert!(cache.read(9, 9, 1000).unwrap().is_empty());
    }
}
