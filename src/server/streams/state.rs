//! A consumer's saved state in one partition: `<partition dir>/consumers/<name>.json`.
//!
//! Written durably off the shard (on a blocking thread): the JSON goes to `<name>.json.tmp`, which
//! is synced, renamed over `<name>.json`, and the directory is synced, so after a crash the file is
//! either the old state or the new one, never a torn mix. A file that cannot be read anyway (a
//! disk error, someone's editor) must never make a consumer skip what it had not acked: its
//! partition restarts that consumer from the log's first offset instead.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::ConsumerConfig;

/// A consumer's state as written to `<partition dir>/consumers/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedState {
    pub config: ConsumerConfig,
    pub next: u64,
    pub floor: u64,
    /// Acked offsets above the floor.
    pub acked: Vec<u64>,
    /// Delivered, unacked offsets and how often each was delivered.
    pub deliveries: Vec<(u64, u32)>,
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Deliveries made so far (the last delivery's sequence).
    #[serde(default)]
    pub delivered_seq: u64,
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a consumer state: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file a consumer's state is saved in; a name becomes a path only once it is checked.
pub fn state_path(
    partition_dir: &Path,
    name: &str,
) -> Result<PathBuf, sluice_protocol::name::NameError> {
    sluice_protocol::name::validate_name(name)?;
    Ok(consumers_dir(partition_dir).join(format!("{name}.json")))
}

/// Where a consumer's state as another node last sent it is kept (a replicated partition's
/// consumer runs where its clients attach; a node it does not run on keeps its latest state, to
/// take it up from there if a client attaches here).
pub fn shipped_path(
    partition_dir: &Path,
    name: &str,
) -> Result<PathBuf, sluice_protocol::name::NameError> {
    sluice_protocol::name::validate_name(name)?;
    Ok(partition_dir
        .join("consumers.shipped")
        .join(format!("{name}.json")))
}

/// Reads a consumer state file; `None` if there is none. Blocking.
pub fn read_if_there(path: &Path) -> Option<Result<SavedState, StateError>> {
    path.exists().then(|| read(path))
}

/// The directory of a partition's saved consumers.
pub fn consumers_dir(partition_dir: &Path) -> PathBuf {
    partition_dir.join("consumers")
}

/// Writes `state` as JSON to `path` durably: temporary file, fsync, rename, fsync of the
/// directory. Blocking: run it on a blocking thread.
pub fn write_durably<T: Serialize>(path: &Path, state: &T) -> Result<(), StateError> {
    crate::server::files::write_json_durably(path, state).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Every consumer state file in a partition's directory, by consumer name, read or not.
/// Blocking: run it on a blocking thread.
pub fn read_all(partition_dir: &Path) -> Vec<(String, Result<SavedState, StateError>)> {
    let mut found = Vec::new();
    for path in json_files(&consumers_dir(partition_dir)) {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        found.push((name.to_string(), read(&path)));
    }
    found
}

/// The `.json` files of a directory (none if it cannot be read). Blocking.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect()
}

fn read(path: &Path) -> Result<SavedState, StateError> {
    let bytes = std::fs::read(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeliverPolicy;

    fn state() -> SavedState {
        SavedState {
            config: ConsumerConfig {
                stream: "S".into(),
                name: "w".into(),
                deliver: DeliverPolicy::New,
                ack_wait_ms: 1000,
                max_deliver: 3,
                max_ack_pending: 10,
                sid: 1,
                jetstream: None,
            },
            next: 7,
            floor: 3,
            acked: vec![5],
            deliveries: vec![(3, 1), (4, 2), (6, 1)],
            redelivered: 1,
            dead_lettered: 0,
            delivered_seq: 4,
        }
    }

    #[test]
    fn a_durable_write_reads_back_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("sluice-state-{}", fastrand::u64(..)));
        let path = state_path(&dir, "w").unwrap();
        write_durably(&path, &state()).unwrap();
        let all = read_all(&dir);
        assert_eq!(all.len(), 1);
        let (name, read) = &all[0];
        assert_eq!(name, "w");
        let read = read.as_ref().unwrap();
        assert_eq!((read.next, read.floor), (7, 3));
        assert_eq!(read.deliveries, vec![(3, 1), (4, 2), (6, 1)]);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_or_garbage_state_file_is_reported_not_taken_as_a_state() {
        let dir = std::env::temp_dir().join(format!("sluice-state-{}", fastrand::u64(..)));
        std::fs::create_dir_all(dir.join("consumers")).unwrap();
        std::fs::write(state_path(&dir, "empty").unwrap(), b"").unwrap();
        std::fs::write(state_path(&dir, "junk").unwrap(), b"{\"next\": 12, \"flo").unwrap();
        let mut all = read_all(&dir);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all.len(), 2);
        assert!(matches!(all[0].1, Err(StateError::Parse { .. })));
        assert!(matches!(all[1].1, Err(StateError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
