//! The list of streams, kept by shard 0 and sent to every shard.
//!
//! On disk: `<data-dir>/streams.json`, a snapshot of the list written atomically, and
//! `<data-dir>/streams.journal`, one JSON line per change since (`{"add":{..}}` or
//! `{"remove":".."}`), each made durable before the change is answered. A change costs one short
//! append however many streams there are; the journal is folded into the snapshot once it holds as
//! many entries as there are streams (and at start), so the rewrite is paid once per that many
//! changes. Replaying a change twice is harmless, so a crash between writing the snapshot and
//! emptying the journal loses nothing; a torn last line (a crash mid-append, never answered) is cut.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{ConfigError, StreamConfig};

/// Journal entries below which the journal is never folded into the snapshot, however few streams
/// there are: folding costs a rewrite of the list and two syncs.
const JOURNAL_ENTRIES_MIN: usize = 1024;

/// Why a change to the registry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("stream {0} does not exist")]
    NotFound(String),
    /// A bound on streams was reached.
    #[error("{0}")]
    Limit(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One change, as a journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Add(StreamConfig),
    Remove(String),
}

/// Shard 0's registry.
pub struct Registry {
    path: PathBuf,
    journal_path: PathBuf,
    journal: Option<File>,
    journal_entries: usize,
    streams: Vec<StreamConfig>,
}

impl Registry {
    /// Loads the registry (the snapshot, then the journal's changes), or starts an empty one.
    pub fn load(data_dir: &Path) -> Result<Registry, RegistryError> {
        let path = data_dir.join("streams.json");
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let streams = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Invalid(format!("{} is not a stream list: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let mut registry = Registry {
            journal_path: data_dir.join("streams.journal"),
            path,
            journal: None,
            journal_entries: 0,
            streams,
        };
        let replayed = registry.replay()?;
        if replayed > 0 {
            registry.fold()?;
        }
        Ok(registry)
    }

    /// Applies the journal's changes; returns how many there were. A last line that does not parse
    /// was torn by a crash before it was answered: it is ignored.
    fn replay(&mut self) -> Result<usize, RegistryError> {
        let bytes = match std::fs::read(&self.journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: self.journal_path.clone(),
                    source,
                })
            }
        };
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let mut applied = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Change>(line) {
                Ok(change) => {
                    self.apply(change);
                    applied += 1;
                }
                Err(_) if i + 1 == lines.len() => {
                    tracing::warn!(path = %self.journal_path.display(),
                        "torn last line of the stream journal ignored");
                }
                Err(e) => {
                    return Err(RegistryError::Invalid(format!(
                        "{} line {}: {e}",
                        self.journal_path.display(),
                        i + 1
                    )))
                }
            }
        }
        Ok(applied)
    }

    /// Applies a change to the list in memory; applying one twice changes nothing more.
    fn apply(&mut self, change: Change) {
        match change {
            Change::Add(config) => match self.streams.iter_mut().find(|s| s.name == config.name) {
                Some(existing) => *existing = config,
                None => self.streams.push(config),
            },
            Change::Remove(name) => self.streams.retain(|s| s.name != name),
        }
    }

    /// Every stream.
    pub fn streams(&self) -> &[StreamConfig] {
        &self.streams
    }

    /// A stream by name.
    pub fn get(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Adds a stream (the same config again is accepted as is).
    pub fn add(&mut self, config: StreamConfig) -> Result<(), RegistryError> {
        config.check()?;
        if let Some(existing) = self.get(&config.name) {
            if *existing == config {
                return Ok(());
            }
            return Err(RegistryError::Invalid(format!(
                "stream {} exists with another configuration",
                config.name
            )));
        }
        config.check_against(&self.streams)?;
        self.record(&Change::Add(config.clone()))?;
        self.streams.push(config);
        self.fold_if_due()
    }

    /// Changes an existing stream's configuration; its partitions stay as they are.
    pub fn update(&mut self, config: StreamConfig) -> Result<(), RegistryError> {
        config.check()?;
        let Some(existing) = self.get(&config.name) else {
            return Err(RegistryError::NotFound(config.name.clone()));
        };
        if existing.partitions != config.partitions {
            return Err(RegistryError::Invalid(format!(
                "stream {} has {} partitions; they cannot change",
                config.name, existing.partitions
            )));
        }
        if *existing == config {
            return Ok(());
        }
        let others: Vec<StreamConfig> = self
            .streams
            .iter()
            .filter(|s| s.name != config.name)
            .cloned()
            .collect();
        config.check_against(&others)?;
        self.record(&Change::Add(config.clone()))?;
        self.apply(Change::Add(config));
        self.fold_if_due()
    }

    /// Removes a stream.
    pub fn remove(&mut self, name: &str) -> Result<(), RegistryError> {
        if self.get(name).is_none() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        self.record(&Change::Remove(name.to_string()))?;
        self.streams.retain(|s| s.name != name);
        self.fold_if_due()
    }

    /// Appends a change to the journal and makes it durable.
    fn record(&mut self, change: &Change) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: self.journal_path.clone(),
            source,
        };
        let mut line =
            serde_json::to_vec(change).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        line.push(b'\n');
        if self.journal.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)
                .map_err(io)?;
            self.journal = Some(file);
        }
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        journal.write_all(&line).map_err(io)?;
        journal.sync_data().map_err(io)?;
        self.journal_entries += 1;
        Ok(())
    }

    /// Folds the journal into the snapshot once it holds as many entries as there are streams.
    fn fold_if_due(&mut self) -> Result<(), RegistryError> {
        if self.journal_entries >= self.streams.len().max(JOURNAL_ENTRIES_MIN) {
            self.fold()?;
        }
        Ok(())
    }

    /// Writes the snapshot atomically and durably (temp file, sync, rename, sync the directory),
    /// then empties the journal.
    fn fold(&mut self) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&self.streams)
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let journal = File::create(&self.journal_path).map_err(io)?;
        journal.sync_all().map_err(io)?;
        self.journal = None;
        self.journal_entries = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, subjects: &[&str]) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            partitions: 4,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
        }
    }

    #[test]
    fn overlapping_streams_are_refused_and_the_registry_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-registry-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        registry.add(stream("orders", &["orders.>"])).unwrap();
        registry.add(stream("orders", &["orders.>"])).unwrap();
        assert!(registry.add(stream("orders", &["other"])).is_err());
        assert!(registry.add(stream("eu", &["orders.eu.*"])).is_err());
        assert!(registry.add(stream("bad name", &["x"])).is_err());
        assert!(registry.add(stream("self", &["a.*", "a.b"])).is_err());
        registry.add(stream("users", &["users.*.events"])).unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.streams().len(), 2);
        let mut again = again;
        again.remove("orders").unwrap();
        assert!(matches!(
            again.remove("orders"),
            Err(RegistryError::NotFound(_))
        ));
        assert_eq!(Registry::load(&dir).unwrap().streams().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_update_changes_a_stream_in_place_and_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-update-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        registry.add(stream("orders", &["orders.>"])).unwrap();
        registry.add(stream("users", &["users.>"])).unwrap();
        assert!(matches!(
            registry.update(stream("missing", &["m.>"])),
            Err(RegistryError::NotFound(_))
        ));
        assert!(registry.update(stream("orders", &["users.x"])).is_err());
        let mut fewer = stream("orders", &["orders.>"]);
        fewer.partitions = 2;
        assert!(registry.update(fewer).is_err());
        let mut wider = stream("orders", &["orders.>", "returns.>"]);
        wider.max_bytes = Some(1 << 30);
        registry.update(wider.clone()).unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.get("orders"), Some(&wider));
        assert_eq!(again.streams().len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_journal_survives_a_torn_last_line_a_double_replay_and_folding() {
        let dir = std::env::temp_dir().join(format!("sluice-journal-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        for i in 0..(JOURNAL_ENTRIES_MIN + 10) {
            registry
                .add(stream(&format!("s{i}"), &[&format!("s{i}.>")]))
                .unwrap();
        }
        registry.remove("s3").unwrap();
        let journal = dir.join("streams.journal");
        let folded = std::fs::metadata(&journal).unwrap().len();
        assert!(folded < 4096, "the journal was folded: {folded} bytes left");
        // A change appended twice (a crash between the snapshot and the empty journal), then a
        // torn line (a crash mid-append).
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        let line = serde_json::to_vec(&Change::Remove("s4".into())).unwrap();
        for _ in 0..2 {
            file.write_all(&line).unwrap();
            file.write_all(b"\n").unwrap();
        }
        file.write_all(b"{\"add\":{\"name\":\"torn").unwrap();
        drop(file);
        let again = Registry::load(&dir).unwrap();
        let names: Vec<&str> = again.streams().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names.len(),
            JOURNAL_ENTRIES_MIN + 10 - 2,
            "s3 and s4 are gone"
        );
        assert!(!names.contains(&"s3") && !names.contains(&"s4"));
        assert!(names.contains(&"s5"));
        // Loading folded the journal: the next load reads the snapshot alone.
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
        assert_eq!(Registry::load(&dir).unwrap().streams().len(), names.len());
        let _ = std::fs::remove_dir_all(dir);
    }
}
