//! The list of streams, kept by shard 0 and sent to every shard.
//!
//! On disk: `<data-dir>/streams.json`, a snapshot of the list written atomically, and
//! `<data-dir>/streams.journal`, one JSON line per change since (`{"add":{..}}` or
//! `{"remove":".."}`), each made durable before the change is answered. Changes made while the
//! journal is being written wait for the next write and share its sync (group commit), so a client
//! adding streams from many connections at once pays one sync per round, not one per stream. A
//! change costs one short append however many streams there are; the journal is folded into the
//! snapshot once it holds as many entries as there are streams, so the rewrite is paid once per
//! that many changes. Replaying a change twice is harmless, so a crash between writing the
//! snapshot and emptying the journal loses nothing; a torn last line (a crash mid-append, never
//! answered) is cut at load.
//!
//! A change is applied to the list in memory when it is checked, so that the next one is checked
//! against it, and is announced to the shards only once it is durable (`durable`). If the journal
//! cannot be written, every change not yet durable is undone, newest first, and refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sluice_storage::wake::Event;

use super::overlap::SubjectIndex;
use super::StreamShard;
use crate::api::{ConfigError, StreamConfig};

/// Journal entries below which the journal is never folded into the snapshot, however few streams
/// there are: folding costs a rewrite of the list and two syncs.
const JOURNAL_ENTRIES_MIN: usize = 1024;

/// Why a change to the registry was refused.
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("cannot write {path}: {message}")]
    Io { path: PathBuf, message: String },
}

fn io_error(path: &Path, e: &std::io::Error) -> RegistryError {
    RegistryError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// One change, as a journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Add(StreamConfig),
    Remove(String),
}

/// A change's number in the journal: what `durable` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Shard 0's registry.
pub struct Registry {
    path: PathBuf,
    journal_path: PathBuf,
    streams: BTreeMap<String, StreamConfig>,
    subjects: SubjectIndex,
    journal: Journal,
    /// Notified after every journal write, well or not.
    written: Rc<Event>,
}

/// The journal's changes on their way to the disk.
#[derive(Default)]
struct Journal {
    /// Lines recorded and not yet taken by a write.
    queued: Vec<u8>,
    /// What each queued change replaced, oldest first, to undo it if the write fails.
    undo: Vec<(String, Option<StreamConfig>)>,
    /// The number of the last change recorded, and of the last one durable.
    recorded: u64,
    durable: u64,
    /// The changes up to this number were undone, and why.
    failed: Option<(u64, RegistryError)>,
    /// Entries in the journal file since the last fold.
    entries: usize,
    /// Whether a write task is running.
    writing: bool,
}

/// One round of the journal writer: the changes it makes durable.
struct Batch {
    entries: usize,
    through: u64,
    undo: Vec<(String, Option<StreamConfig>)>,
}

/// What a round writes, on a blocking thread: the lines to append and, when the journal is due to
/// be folded, the list to write as the snapshot (the list as it stands once these lines are
/// durable).
struct JournalWrite {
    lines: Vec<u8>,
    snapshot: Option<Vec<StreamConfig>>,
    journal_path: PathBuf,
    path: PathBuf,
}

impl Registry {
    /// Loads the registry (the snapshot, then the journal's changes), or starts an empty one.
    pub fn load(data_dir: &Path) -> Result<Registry, RegistryError> {
        let path = data_dir.join("streams.json");
        std::fs::create_dir_all(data_dir).map_err(|e| io_error(data_dir, &e))?;
        let list: Vec<StreamConfig> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Invalid(format!("{} is not a stream list: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&path, &e)),
        };
        let mut registry = Registry {
            journal_path: data_dir.join("streams.journal"),
            path,
            streams: BTreeMap::new(),
            subjects: SubjectIndex::default(),
            journal: Journal::default(),
            written: Rc::new(Event::default()),
        };
        for config in list {
            registry.apply(Change::Add(config));
        }
        registry.journal.entries = registry.replay()?;
        Ok(registry)
    }

    /// Applies the journal's changes; returns how many there were. A last line that does not parse
    /// was torn by a crash before it was answered: it is cut off, so that the next change appended
    /// starts a line of its own.
    fn replay(&mut self) -> Result<usize, RegistryError> {
        let bytes = match std::fs::read(&self.journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&self.journal_path, &e)),
        };
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let mut applied = 0;
        let mut good_bytes = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                good_bytes += 1;
                continue;
            }
            match serde_json::from_slice::<Change>(line) {
                Ok(change) => {
                    self.apply(change);
                    applied += 1;
                    good_bytes += line.len() + 1;
                }
                Err(_) if i + 1 == lines.len() => {
                    tracing::warn!(path = %self.journal_path.display(),
                        "torn last line of the stream journal cut");
                    let cut = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&self.journal_path)
                        .and_then(|f| {
                            f.set_len(good_bytes.min(bytes.len()) as u64)?;
                            f.sync_all()
                        });
                    cut.map_err(|e| io_error(&self.journal_path, &e))?;
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

    /// Applies a change to the list in memory (and to the subject index); applying one twice
    /// changes nothing more. Returns what the stream was before.
    fn apply(&mut self, change: Change) -> (String, Option<StreamConfig>) {
        let (name, previous) = match change {
            Change::Add(config) => {
                let name = config.name.clone();
                for pattern in &config.subjects {
                    self.subjects.insert(pattern, &name);
                }
                let previous = self.streams.insert(name.clone(), config);
                (name, previous)
            }
            Change::Remove(name) => {
                let previous = self.streams.remove(&name);
                (name, previous)
            }
        };
        if let Some(previous) = &previous {
            let now = self.streams.get(&name);
            for pattern in &previous.subjects {
                if now.is_none_or(|c| !c.subjects.contains(pattern)) {
                    self.subjects.remove(pattern, &name);
                }
            }
        }
        (name, previous)
    }

    /// Puts a stream back as it was before a change that could not be made durable.
    fn undo(&mut self, name: String, previous: Option<StreamConfig>) {
        match previous {
            Some(config) => {
                self.apply(Change::Add(config));
            }
            None => {
                self.apply(Change::Remove(name));
            }
        }
    }

    /// Every stream, by name.
    pub fn streams(&self) -> impl Iterator<Item = &StreamConfig> {
        self.streams.values()
    }

    /// How many streams there are.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// A stream by name.
    pub fn get(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.get(name)
    }

    /// Checks that no other stream captures a subject `config` would.
    fn check_overlaps(&self, config: &StreamConfig) -> Result<(), ConfigError> {
        for ours in &config.subjects {
            if let Some((theirs, other)) = self.subjects.overlapping(ours, &config.name) {
                return Err(ConfigError::StreamsOverlap {
                    ours: ours.clone(),
                    stream: config.name.clone(),
                    theirs: theirs.to_string(),
                    other: other.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Adds a stream (the same config again is accepted as is). The change is durable once
    /// `durable` returns for the ticket.
    pub fn add(&mut self, config: StreamConfig) -> Result<Ticket, RegistryError> {
        config.check()?;
        if let Some(existing) = self.get(&config.name) {
            if *existing == config {
                // It may not be durable yet: wait for everything recorded so far.
                return Ok(Ticket(self.journal.recorded));
            }
            return Err(RegistryError::Invalid(format!(
                "stream {} exists with another configuration",
                config.name
            )));
        }
        self.check_overlaps(&config)?;
        self.record(Change::Add(config))
    }

    /// Changes an existing stream's configuration; its partitions stay as they are.
    pub fn update(&mut self, config: StreamConfig) -> Result<Ticket, RegistryError> {
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
            return Ok(Ticket(self.journal.recorded));
        }
        self.check_overlaps(&config)?;
        self.record(Change::Add(config))
    }

    /// Removes a stream.
    pub fn remove(&mut self, name: &str) -> Result<Ticket, RegistryError> {
        if self.get(name).is_none() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        self.record(Change::Remove(name.to_string()))
    }

    /// Applies a change in memory and queues its journal line.
    fn record(&mut self, change: Change) -> Result<Ticket, RegistryError> {
        let mut line =
            serde_json::to_vec(&change).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        line.push(b'\n');
        let undo = self.apply(change);
        self.journal.queued.extend_from_slice(&line);
        self.journal.undo.push(undo);
        self.journal.recorded += 1;
        Ok(Ticket(self.journal.recorded))
    }

    /// Whether the change is durable (`Some(Ok)`), undone (`Some(Err)`), or still on its way.
    fn settled(&self, ticket: Ticket) -> Option<Result<(), RegistryError>> {
        if ticket.0 <= self.journal.durable {
            return Some(Ok(()));
        }
        match &self.journal.failed {
            Some((through, e)) if ticket.0 <= *through => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// Takes what is queued for one write, with the snapshot if the journal is due to be folded.
    fn take_batch(&mut self) -> Option<(Batch, JournalWrite)> {
        if self.journal.undo.is_empty() {
            return None;
        }
        let entries = self.journal.undo.len();
        let due = self.journal.entries + entries >= self.streams.len().max(JOURNAL_ENTRIES_MIN);
        let batch = Batch {
            entries,
            through: self.journal.recorded,
            undo: std::mem::take(&mut self.journal.undo),
        };
        let write = JournalWrite {
            lines: std::mem::take(&mut self.journal.queued),
            snapshot: due.then(|| self.streams.values().cloned().collect()),
            journal_path: self.journal_path.clone(),
            path: self.path.clone(),
        };
        Some((batch, write))
    }

    /// Takes the outcome of a write: its changes are durable, or they and every change queued
    /// since are undone and refused.
    fn finish(&mut self, batch: Batch, written: Result<bool, RegistryError>) {
        match written {
            Ok(folded) => {
                self.journal.durable = batch.through;
                self.journal.entries = if folded {
                    0
                } else {
                    self.journal.entries + batch.entries
                };
            }
            Err(e) => {
                tracing::error!(error = %e, changes = batch.entries + self.journal.undo.len(),
                    "the stream journal could not be written: changes undone");
                let later = std::mem::take(&mut self.journal.undo);
                self.journal.queued.clear();
                for (name, previous) in batch.undo.into_iter().chain(later).rev() {
                    self.undo(name, previous);
                }
                self.journal.failed = Some((self.journal.recorded, e));
            }
        }
    }
}

impl JournalWrite {
    /// Appends the lines and syncs them; then, if due, folds. Returns whether it folded.
    /// Blocking: run it on a blocking thread.
    fn write(&self) -> Result<bool, RegistryError> {
        let journal = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)?;
            file.write_all(&self.lines)?;
            file.sync_data()
        };
        journal().map_err(|e| io_error(&self.journal_path, &e))?;
        let Some(snapshot) = &self.snapshot else {
            return Ok(false);
        };
        // The lines are durable: a fold that fails leaves the journal to be folded next time.
        match fold(&self.path, &self.journal_path, snapshot) {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::warn!(error = %e, "folding the stream journal failed");
                Ok(false)
            }
        }
    }
}

/// Writes the snapshot atomically and durably (temp file, sync, rename, sync the directory), then
/// empties the journal.
fn fold(path: &Path, journal_path: &Path, streams: &[StreamConfig]) -> Result<(), RegistryError> {
    let io = |e: std::io::Error| io_error(path, &e);
    let tmp = path.with_extension("json.tmp");
    let json =
        serde_json::to_vec_pretty(streams).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(&json).map_err(io)?;
    file.sync_data().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    let journal = File::create(journal_path).map_err(io)?;
    journal.sync_all().map_err(io)?;
    Ok(())
}

/// Waits until the change is durable (or undone). Starts the journal writer if none runs: changes
/// recorded while it writes go in its next round, with one sync for all of them.
pub async fn durable(shard: &Rc<StreamShard>, ticket: Ticket) -> Result<(), RegistryError> {
    let (written, start_writer) = {
        let mut registry = shard.registry.borrow_mut();
        let Some(registry) = registry.as_mut() else {
            return Err(RegistryError::Invalid("the registry is not loaded".into()));
        };
        if let Some(settled) = registry.settled(ticket) {
            return settled;
        }
        let idle = !registry.journal.writing;
        registry.journal.writing = true;
        (registry.written.clone(), idle)
    };
    if start_writer {
        glommio::spawn_local(write_journal(shard.clone())).detach();
    }
    let settled = || {
        shard
            .registry
            .borrow()
            .as_ref()
            .and_then(|r| r.settled(ticket))
    };
    written.wait_until(|| settled().is_some()).await;
    settled().unwrap_or_else(|| Err(RegistryError::Invalid("the registry was unloaded".into())))
}

/// Writes the journal, one round per batch of queued changes, until none is left.
async fn write_journal(shard: Rc<StreamShard>) {
    loop {
        let taken = shard.registry.borrow_mut().as_mut().map(|r| {
            let round = r.take_batch();
            if round.is_none() {
                r.journal.writing = false;
            }
            (round, r.written.clone())
        });
        let Some((Some((batch, write)), written)) = taken else {
            return;
        };
        let result = glommio::executor()
            .spawn_blocking(move || write.write())
            .await;
        if let Some(registry) = shard.registry.borrow_mut().as_mut() {
            registry.finish(batch, result);
        }
        written.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Registry {
        /// Makes what is queued durable at once, as the journal writer would.
        fn sync(&mut self) {
            if let Some((batch, write)) = self.take_batch() {
                let written = write.write();
                self.finish(batch, written);
            }
        }

        fn add_now(&mut self, config: StreamConfig) -> Result<(), RegistryError> {
            let ticket = self.add(config)?;
            self.sync();
            self.settled(ticket).unwrap_or(Ok(()))
        }

        fn update_now(&mut self, config: StreamConfig) -> Result<(), RegistryError> {
            let ticket = self.update(config)?;
            self.sync();
            self.settled(ticket).unwrap_or(Ok(()))
        }

        fn remove_now(&mut self, name: &str) -> Result<(), RegistryError> {
            let ticket = self.remove(name)?;
            self.sync();
            self.settled(ticket).unwrap_or(Ok(()))
        }
    }

    fn stream(name: &str, subjects: &[&str]) -> StreamConfig {
        StreamConfig {
            partitions: 4,
            ..StreamConfig::new(name, subjects.iter().map(|s| s.to_string()).collect())
        }
    }

    #[test]
    fn overlapping_streams_are_refused_and_the_registry_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-registry-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        registry.add_now(stream("orders", &["orders.>"])).unwrap();
        registry.add_now(stream("orders", &["orders.>"])).unwrap();
        assert!(registry.add_now(stream("orders", &["other"])).is_err());
        assert!(registry.add_now(stream("eu", &["orders.eu.*"])).is_err());
        assert!(registry.add_now(stream("bad name", &["x"])).is_err());
        assert!(registry.add_now(stream("self", &["a.*", "a.b"])).is_err());
        registry
            .add_now(stream("users", &["users.*.events"]))
            .unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.len(), 2);
        let mut again = again;
        again.remove_now("orders").unwrap();
        assert!(matches!(
            again.remove_now("orders"),
            Err(RegistryError::NotFound(_))
        ));
        assert_eq!(Registry::load(&dir).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_update_changes_a_stream_in_place_and_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-update-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        registry.add_now(stream("orders", &["orders.>"])).unwrap();
        registry.add_now(stream("users", &["users.>"])).unwrap();
        assert!(matches!(
            registry.update_now(stream("missing", &["m.>"])),
            Err(RegistryError::NotFound(_))
        ));
        assert!(registry.update_now(stream("orders", &["users.x"])).is_err());
        let mut fewer = stream("orders", &["orders.>"]);
        fewer.partitions = 2;
        assert!(registry.update_now(fewer).is_err());
        let mut wider = stream("orders", &["orders.>", "returns.>"]);
        wider.max_bytes = Some(1 << 30);
        registry.update_now(wider.clone()).unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.get("orders"), Some(&wider));
        assert_eq!(again.len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_journal_survives_a_torn_last_line_a_double_replay_and_folding() {
        let dir = std::env::temp_dir().join(format!("sluice-journal-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        for i in 0..(JOURNAL_ENTRIES_MIN + 10) {
            registry
                .add_now(stream(&format!("s{i}"), &[&format!("s{i}.>")]))
                .unwrap();
        }
        registry.remove_now("s3").unwrap();
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
        let names: Vec<String> = again.streams().map(|s| s.name.clone()).collect();
        assert_eq!(
            names.len(),
            JOURNAL_ENTRIES_MIN + 10 - 2,
            "s3 and s4 are gone"
        );
        assert!(!names.iter().any(|n| n == "s3" || n == "s4"));
        assert!(names.iter().any(|n| n == "s5"));
        // Loading cut the torn line: a change appended after it reads back.
        let mut again = again;
        again.add_now(stream("later", &["later.>"])).unwrap();
        let reloaded = Registry::load(&dir).unwrap();
        assert_eq!(reloaded.len(), names.len() + 1);
        assert!(reloaded.get("later").is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn changes_recorded_together_share_one_write() {
        let dir = std::env::temp_dir().join(format!("sluice-group-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        let tickets: Vec<Ticket> = (0..3)
            .map(|i| registry.add(stream(&format!("s{i}"), &[&format!("s{i}.>")])))
            .collect::<Result<_, _>>()
            .unwrap();
        // The same stream again waits for what is already recorded.
        assert_eq!(registry.add(stream("s2", &["s2.>"])).unwrap(), tickets[2]);
        let (batch, write) = registry.take_batch().unwrap();
        assert_eq!(batch.entries, 3);
        assert!(registry.take_batch().is_none(), "one write took them all");
        assert!(tickets.iter().all(|t| registry.settled(*t).is_none()));
        let written = write.write();
        registry.finish(batch, written);
        assert!(tickets
            .iter()
            .all(|t| matches!(registry.settled(*t), Some(Ok(())))));
        assert_eq!(Registry::load(&dir).unwrap().len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_journal_write_undoes_every_change_not_yet_durable() {
        let dir = std::env::temp_dir().join(format!("sluice-undo-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        registry.add_now(stream("kept", &["kept.>"])).unwrap();
        let mut wider = stream("kept", &["kept.>", "more.>"]);
        wider.max_bytes = Some(1 << 20);
        let updated = registry.update(wider).unwrap();
        let (batch, write) = registry.take_batch().unwrap();
        // Recorded while the write is under way: it depends on what is being written.
        let added = registry.add(stream("new", &["new.>"])).unwrap();
        drop(write);
        registry.finish(
            batch,
            Err(RegistryError::Invalid("the disk is gone".into())),
        );
        assert!(matches!(registry.settled(updated), Some(Err(_))));
        assert!(matches!(registry.settled(added), Some(Err(_))));
        assert!(registry.get("new").is_none());
        assert_eq!(
            registry.get("kept").unwrap().subjects,
            vec!["kept.>".to_string()]
        );
        // The undone subjects are free again, and nothing undone reached the disk.
        registry.add_now(stream("more", &["more.>"])).unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get("kept").unwrap().max_bytes, None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
