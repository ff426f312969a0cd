//! Messages deleted from the middle of a partition (a message delete, a subject's oldest revision
//! past `max_msgs_per_subject`, a rollup, a purge by subject). The log is append-only and its
//! offsets are the stream's sequences, so a deleted message keeps its place in the log and is
//! listed here; readers skip it. Deleting from the front is the log's own first offset, not this.
//!
//! On disk: `<partition dir>/deleted`, records of `u64 offset (LE) | u32 crc32c of those 8 bytes
//! (LE)`, appended and synced before a delete is answered. A torn last record (a crash mid-append,
//! never answered) is ignored. Once most records are below the log's first offset the file is
//! rewritten with the rest (write, fsync, rename, fsync the directory).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bytes of one record.
const RECORD_BYTES: usize = 12;

/// Records below the first offset past which the file is rewritten without them.
const STALE_RECORDS_MAX: usize = 4096;

/// The deleted offsets of a partition at or past its first offset.
#[derive(Debug, Default, Clone)]
pub struct Deleted {
    set: BTreeSet<u64>,
    /// Records in the file, stale ones included.
    file_records: usize,
}

impl Deleted {
    /// The file of a partition directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("deleted")
    }

    /// Reads the file (blocking); a missing file is an empty set.
    pub fn load(dir: &Path, first_offset: u64) -> std::io::Result<Deleted> {
        let mut bytes = Vec::new();
        match File::open(Deleted::path(dir)) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut deleted = Deleted::default();
        for record in bytes.chunks_exact(RECORD_BYTES) {
            let (offset, crc) = record.split_at(8);
            let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
            if crc32c::crc32c(offset) != crc {
                // Only a last record can be torn; a bad one stops the reading either way.
                tracing::warn!(dir = %dir.display(), "torn record in the deleted list ignored");
                break;
            }
            deleted.file_records += 1;
            let offset = u64::from_le_bytes(offset.try_into().unwrap_or_default());
            if offset >= first_offset {
                deleted.set.insert(offset);
            }
        }
        Ok(deleted)
    }

    /// Appends offsets to the file and syncs it (blocking).
    pub fn append_durably(dir: &Path, offsets: &[u64]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(offsets.len() * RECORD_BYTES);
        for offset in offsets {
            let le = offset.to_le_bytes();
            bytes.extend_from_slice(&le);
            bytes.extend_from_slice(&crc32c::crc32c(&le).to_le_bytes());
        }
        let path = Deleted::path(dir);
        let created = !path.exists();
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        if created {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Rewrites the file with only `live` (blocking): write, fsync, rename, fsync the directory.
    pub fn rewrite_durably(dir: &Path, live: &[u64]) -> std::io::Result<()> {
        let temporary = dir.join("deleted.new");
        {
            let mut file = File::create(&temporary)?;
            let mut bytes = Vec::with_capacity(live.len() * RECORD_BYTES);
            for offset in live {
                let le = offset.to_le_bytes();
                bytes.extend_from_slice(&le);
                bytes.extend_from_slice(&crc32c::crc32c(&le).to_le_bytes());
            }
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, Deleted::path(dir))?;
        File::open(dir)?.sync_all()
    }

    /// Notes offsets whose deletion is durable.
    pub fn insert(&mut self, offsets: &[u64]) {
        self.file_records += offsets.len();
        self.set.extend(offsets.iter().copied());
    }

    /// Whether the message at `offset` was deleted.
    pub fn contains(&self, offset: u64) -> bool {
        self.set.contains(&offset)
    }

    /// Deleted messages at or past `first_offset`.
    pub fn count_from(&self, first_offset: u64) -> u64 {
        self.set.range(first_offset..).count() as u64
    }

    /// Forgets what is below the log's first offset; returns the offsets to rewrite the file with
    /// when enough of it went stale.
    pub fn forget_below(&mut self, first_offset: u64) -> Option<Vec<u64>> {
        self.set = self.set.split_off(&first_offset);
        if self.file_records - self.set.len() < STALE_RECORDS_MAX {
            return None;
        }
        self.file_records = self.set.len();
        Some(self.set.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-deleted-{:x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn deletes_survive_a_reload_and_a_torn_last_record_is_ignored() {
        let dir = temp_dir();
        Deleted::append_durably(&dir, &[3, 7]).unwrap();
        Deleted::append_durably(&dir, &[9]).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(Deleted::path(&dir))
            .unwrap();
        file.write_all(&11u64.to_le_bytes()).unwrap(); // torn: no crc
        drop(file);
        let deleted = Deleted::load(&dir, 5).unwrap();
        assert!(!deleted.contains(3), "below the first offset");
        assert!(deleted.contains(7) && deleted.contains(9));
        assert!(!deleted.contains(11));
        assert_eq!(deleted.count_from(8), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_mostly_below_the_first_offset_is_rewritten() {
        let dir = temp_dir();
        let offsets: Vec<u64> = (0..(STALE_RECORDS_MAX as u64 + 10)).collect();
        Deleted::append_durably(&dir, &offsets).unwrap();
        let mut deleted = Deleted::load(&dir, 0).unwrap();
        let live = deleted
            .forget_below(STALE_RECORDS_MAX as u64 + 5)
            .expect("a rewrite is due");
        assert_eq!(live.len(), 5);
        Deleted::rewrite_durably(&dir, &live).unwrap();
        let again = Deleted::load(&dir, 0).unwrap();
        assert_eq!(again.count_from(0), 5);
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest! {
        /// Against a model: what was appended and is at or past the first offset is deleted.
        #[test]
        fn loads_what_was_appended(
            batches in proptest::collection::vec(proptest::collection::vec(0u64..500, 0..20), 0..10),
            first in 0u64..500,
        ) {
            let dir = temp_dir();
            let mut model = BTreeSet::new();
            for batch in &batches {
                Deleted::append_durably(&dir, batch).unwrap();
                model.extend(batch.iter().copied().filter(|&o| o >= first));
            }
            let deleted = Deleted::load(&dir, first).unwrap();
            prop_assert_eq!(deleted.count_from(0), model.len() as u64);
            for offset in 0..500 {
                prop_assert_eq!(deleted.contains(offset), model.contains(&offset));
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
