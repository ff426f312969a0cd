//! The sparse index of one segment: every `index_interval_bytes` of log, the offset, byte position and
//! timestamp of a record. A read finds its start by binary search and scans at most one interval.
//!
//! On disk, beside `<base>.log`:
//! - `<base>.index`: entries of `u64 offset | u64 position`;
//! - `<base>.timeindex`: entries of `u64 timestamp_ns | u64 offset`;
//!
//! all little-endian. Both are hints, never the truth: recovery checks each entry against the log and
//! rebuilds what is missing or short.

/// One index point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
    pub timestamp_ns: u64,
}

/// Bytes of one entry in each index file.
pub const INDEX_ENTRY_BYTES: usize = 16;

/// The index of one segment, in memory.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: Vec<IndexEntry>,
    /// How many entries are already in the files.
    persisted: usize,
}

impl Index {
    /// Adds an entry; offsets, positions and timestamps must not go backwards.
    pub fn push(&mut self, entry: IndexEntry) {
        if let Some(last) = self.entries.last() {
            debug_assert!(entry.offset > last.offset && entry.position > last.position);
            if entry.offset <= last.offset || entry.position <= last.position {
                return;
            }
        }
        self.entries.push(entry);
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<&IndexEntry> {
        self.entries.last()
    }

    /// The entry with the greatest offset at or below `offset`.
    pub fn floor_offset(&self, offset: u64) -> Option<&IndexEntry> {
        let n = self.entries.partition_point(|e| e.offset <= offset);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The entry with the greatest timestamp strictly below `timestamp_ns`.
    pub fn floor_time(&self, timestamp_ns: u64) -> Option<&IndexEntry> {
        let n = self
            .entries
            .partition_point(|e| e.timestamp_ns < timestamp_ns);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// Drops entries at or beyond `position` (after a truncation).
    pub fn truncate_at_position(&mut self, position: u64) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// How many entries are already in the files (the first ones).
    pub fn persisted(&self) -> usize {
        self.persisted
    }

    /// How many entries are not yet in the files.
    pub fn unpersisted(&self) -> usize {
        self.entries.len() - self.persisted
    }

    /// The two files' contents for every entry not yet persisted, and marks them persisted.
    pub fn take_unpersisted(&mut self) -> Option<(usize, Vec<u8>, Vec<u8>)> {
        if self.persisted == self.entries.len() {
            return None;
        }
        let from = self.persisted;
        let (offsets, times) = encode(&self.entries[from..]);
        self.persisted = self.entries.len();
        Some((from, offsets, times))
    }

    /// Both files' full contents.
    pub fn encode_all(&self) -> (Vec<u8>, Vec<u8>) {
        encode(&self.entries)
    }

    /// Rebuilds an index from the two files' contents, keeping the longest prefix on which they agree
    /// and which increases. Entries are checked against the log by the caller.
    pub fn decode(offsets: &[u8], times: &[u8]) -> Index {
        let mut index = Index::default();
        let n = (offsets.len() / INDEX_ENTRY_BYTES).min(times.len() / INDEX_ENTRY_BYTES);
        for i in 0..n {
            let at = i * INDEX_ENTRY_BYTES;
            let offset = word(offsets, at);
            let position = word(offsets, at + 8);
            let timestamp_ns = word(times, at);
            if word(times, at + 8) != offset {
                break;
            }
            if let Some(last) = index.entries.last() {
                if offset <= last.offset
                    || position <= last.position
                    || timestamp_ns < last.timestamp_ns
                {
                    break;
                }
            }
            index.entries.push(IndexEntry {
                offset,
                position,
                timestamp_ns,
            });
        }
        index.persisted = index.entries.len();
        index
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn encode(entries: &[IndexEntry]) -> (Vec<u8>, Vec<u8>) {
    let mut offsets = Vec::with_capacity(entries.len() * INDEX_ENTRY_BYTES);
    let mut times = Vec::with_capacity(entries.len() * INDEX_ENTRY_BYTES);
    for e in entries {
        offsets.extend_from_slice(&e.offset.to_le_bytes());
        offsets.extend_from_slice(&e.position.to_le_bytes());
        times.extend_from_slice(&e.timestamp_ns.to_le_bytes());
        times.extend_from_slice(&e.offset.to_le_bytes());
    }
    (offsets, times)
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, position: u64, timestamp_ns: u64) -> IndexEntry {
        IndexEntry {
            offset,
            position,
            timestamp_ns,
        }
    }

    #[test]
    fn lookups_find_the_floor_entry() {
        let mut index = Index::default();
        index.push(entry(0, 0, 10));
        index.push(entry(100, 4096, 20));
        index.push(entry(200, 8192, 30));
        assert_eq!(index.floor_offset(150).unwrap().offset, 100);
        assert_eq!(index.floor_offset(200).unwrap().offset, 200);
        assert_eq!(index.floor_time(20).unwrap().offset, 0);
        assert_eq!(index.floor_time(25).unwrap().offset, 100);
        assert!(index.floor_time(10).is_none());
    }

    #[test]
    fn an_index_survives_its_files_and_a_torn_tail_is_dropped() {
        let mut index = Index::default();
        for i in 0..10 {
            index.push(entry(i * 10, i * 1000 + 1, i * 5));
        }
        let (mut offsets, times) = index.encode_all();
        offsets.truncate(offsets.len() - 3);
        let back = Index::decode(&offsets, &times);
        assert_eq!(back.len(), 9);
        assert_eq!(back.last().unwrap().offset, 80);
    }

    #[test]
    fn truncation_drops_entries_past_the_cut() {
        let mut index = Index::default();
        index.push(entry(0, 0, 1));
        index.push(entry(5, 100, 2));
        index.push(entry(9, 200, 3));
        index.truncate_at_position(150);
        assert_eq!(index.len(), 2);
    }
}
