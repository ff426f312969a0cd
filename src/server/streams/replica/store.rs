//! The consensus library's view of a replicated partition's log (`raft::Storage`): the log itself
//! for the entries, the term table for their terms, and a small state file for the vote.
//!
//! Recent entries are kept in memory (`tail`), as the same buffers the log was given: the leader
//! sends them to its followers from there, and the library reads the entries it must hand back
//! as committed from there too, so everything after the applied entry always stays. A follower
//! that fell further behind is sent older entries read back from the log, fetched asynchronously
//! (`Fetch`) and handed to the library when read.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use serde::{Deserialize, Serialize};

use super::terms::{TermStart, Terms};

/// Most bytes of recent entries kept in memory past the applied one, for followers a little
/// behind; older ones are read back from the log.
const TAIL_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most entries kept so, whatever their size.
const TAIL_ENTRIES_MAX: usize = 16 * 1024;
/// Most entries one fetch from the log reads.
pub const FETCH_ENTRIES_MAX: u64 = 4096;
/// About the bytes one fetch from the log reads.
pub const FETCH_BYTES_MAX: usize = 1024 * 1024;

/// One entry: its index, term and body (empty for a term's start, the encoded change for a
/// membership change), and the time the leader stamped it with (its context).
#[derive(Debug, Clone)]
pub struct Cached {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
    pub stamp: Bytes,
    /// A membership change.
    pub change: bool,
}

impl Cached {
    fn entry(&self) -> Entry {
        let mut entry = Entry {
            index: self.index,
            term: self.term,
            data: self.data.clone(),
            context: self.stamp.clone(),
            ..Entry::default()
        };
        if self.change {
            entry.set_entry_type(EntryType::EntryConfChangeV2);
        }
        entry
    }
}

/// An entry's context: the time its leader took it, in nanoseconds since the epoch.
pub fn stamp(timestamp_ns: u64) -> Bytes {
    Bytes::copy_from_slice(&timestamp_ns.to_le_bytes())
}

/// The time an entry's context holds, if it holds one.
pub fn stamped(context: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(context.try_into().ok()?))
}

/// Entries asked for while not in memory: read them from `low`, then tell the library.
pub struct Fetch {
    pub low: u64,
    pub high: u64,
    pub context: GetEntriesContext,
}

/// What is written to the group's state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    pub terms: Terms,
    /// Set while the log is being restarted at this offset from a leader's snapshot: a node that
    /// stopped midway restarts it again when it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<u64>,
    /// The membership as of the last change applied (the stream's placement until the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<SavedConf>,
}

/// A group's membership, as written to its state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConf {
    pub voters: Vec<u64>,
    /// The members before a change, while it is under way (joint consensus).
    #[serde(default)]
    pub outgoing: Vec<u64>,
    #[serde(default)]
    pub auto_leave: bool,
}

impl From<&ConfState> for SavedConf {
    fn from(conf: &ConfState) -> SavedConf {
        SavedConf {
            voters: conf.voters.clone(),
            outgoing: conf.voters_outgoing.clone(),
            auto_leave: conf.auto_leave,
        }
    }
}

impl From<SavedConf> for ConfState {
    fn from(saved: SavedConf) -> ConfState {
        let mut conf = ConfState::from((saved.voters, vec![]));
        conf.voters_outgoing = saved.outgoing;
        conf.auto_leave = saved.auto_leave;
        conf
    }
}

/// The group's state file in the partition's directory.
pub fn saved_path(dir: &Path) -> PathBuf {
    dir.join("raft.json")
}

pub fn load(dir: &Path) -> Result<Saved, String> {
    let path = saved_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the state durably, on a blocking thread.
pub async fn save(dir: &Path, saved: Saved) -> Result<(), String> {
    let path = saved_path(dir);
    glommio::executor()
        .spawn_blocking(move || {
            crate::server::files::write_json_durably(&path, &saved)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
}

pub struct State {
    pub hard: HardState,
    pub conf: ConfState,
    pub terms: Terms,
    /// The first offset the log still holds.
    pub first_offset: u64,
    pub last_index: u64,
    /// The most recent entries, consecutive, ending at `last_index`.
    pub tail: VecDeque<Cached>,
    tail_bytes: usize,
    /// The last fetch's entries, consecutive.
    pub fetched: Vec<Cached>,
    /// Fetches asked for and not yet made.
    pub fetches: Vec<Fetch>,
}

/// A replicated partition's log as the consensus library sees it; shared with the group's driver.
#[derive(Clone)]
pub struct Store(pub Rc<RefCell<State>>);

impl Store {
    pub fn new(saved: &Saved, conf: ConfState, first_offset: u64, next_offset: u64) -> Store {
        let hard = HardState {
            term: saved.term,
            vote: saved.vote,
            commit: saved.commit,
            ..HardState::default()
        };
        let last_index = saved.terms.last_index(next_offset);
        Store(Rc::new(RefCell::new(State {
            hard,
            conf,
            terms: saved.terms.clone(),
            first_offset,
            last_index,
            tail: VecDeque::new(),
            tail_bytes: 0,
            fetched: Vec::new(),
            fetches: Vec::new(),
        })))
    }
}

impl State {
    /// The first entry the log can give back.
    pub fn first_index(&self) -> u64 {
        if self.first_offset == 0 {
            return 1;
        }
        self.terms
            .index_of_offset(self.first_offset)
            .unwrap_or(self.last_index + 1)
            .max(1)
    }

    /// Appends entries that follow `last_index` to the in-memory tail.
    pub fn remember(&mut self, entries: impl IntoIterator<Item = Cached>) {
        for entry in entries {
            debug_assert!(self.tail.back().is_none_or(|b| b.index + 1 == entry.index));
            self.tail_bytes += entry.data.len();
            self.last_index = entry.index;
            self.tail.push_back(entry);
        }
    }

    /// Forgets the entries from `index` on (a conflicting tail is being cut).
    pub fn forget_from(&mut self, index: u64) {
        while self.tail.back().is_some_and(|e| e.index >= index) {
            if let Some(gone) = self.tail.pop_back() {
                self.tail_bytes -= gone.data.len();
            }
        }
        self.fetched.clear();
        self.terms.truncate_from(index);
        self.last_index = self.last_index.min(index.saturating_sub(1));
    }

    /// Restarts the log, as the consensus library sees it, after entry `index` of term `term`,
    /// whose records end before `offset`: nothing is left in memory, and the table holds only
    /// that entry's term from there.
    pub fn restart_after(&mut self, index: u64, term: u64, offset: u64) {
        self.tail.clear();
        self.tail_bytes = 0;
        self.fetched.clear();
        self.terms = Terms::restarted(TermStart {
            term,
            index,
            offset,
            change: None,
        });
        self.first_offset = offset;
        self.last_index = index;
        self.hard.commit = self.hard.commit.max(index);
    }

    /// Lets old entries go from memory, keeping every one after `applied`.
    pub fn trim(&mut self, applied: u64) {
        while let Some(front) = self.tail.front() {
            let over = self.tail_bytes > TAIL_BYTES_MAX || self.tail.len() > TAIL_ENTRIES_MAX;
            if front.index > applied || !over {
                break;
            }
            self.tail_bytes -= front.data.len();
            self.tail.pop_front();
        }
    }

    /// Entries `[low, high)` from memory, about `max_size` bytes (at least one), if memory holds
    /// `low`.
    fn in_memory(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let at = |run_first: Option<u64>, i: u64| i.checked_sub(run_first?).map(|n| n as usize);
        let tail_first = self.tail.front().map(|e| e.index);
        let fetched_first = self.fetched.first().map(|e| e.index);
        let get = |i: u64| -> Option<&Cached> {
            if tail_first.is_some_and(|f| f <= low) {
                self.tail.get(at(tail_first, i)?)
            } else {
                self.fetched.get(at(fetched_first, i)?)
            }
        };
        get(low)?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for i in low..high {
            let Some(cached) = get(i) else { break };
            bytes += cached.data.len() as u64 + ENTRY_OVERHEAD_BYTES;
            if !out.is_empty() && max_size.is_some_and(|max| bytes > max) {
                break;
            }
            out.push(cached.entry());
        }
        Some(out)
    }
}

/// What the library counts for an entry beyond its data, near enough for its size limits.
const ENTRY_OVERHEAD_BYTES: u64 = 16;

impl raft::Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let state = self.0.borrow();
        Ok(RaftState {
            hard_state: state.hard.clone(),
            conf_state: state.conf.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let mut state = self.0.borrow_mut();
        if low < state.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > state.last_index + 1 {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        if let Some(entries) = state.in_memory(low, high, max_size) {
            return Ok(entries);
        }
        if context.can_async() {
            let high = high.min(low + FETCH_ENTRIES_MAX);
            state.fetches.push(Fetch { low, high, context });
            return Err(raft::Error::Store(
                RaftStorageError::LogTemporarilyUnavailable,
            ));
        }
        // Only entries after the applied one are asked for without a fetch, and those stay in
        // memory; reaching here is a bug, answered as if compacted rather than with a panic.
        tracing::error!(
            low,
            high,
            "entries asked for are neither in memory nor fetchable"
        );
        Err(raft::Error::Store(RaftStorageError::Compacted))
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let state = self.0.borrow();
        if index == 0 {
            return Ok(0);
        }
        if index > state.last_index {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        if index + 1 < state.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        Ok(state.terms.term_of(index))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.0.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.0.borrow().last_index)
    }

    /// A follower further behind than the log's first entry (older segments went by retention or
    /// a purge) is sent where the log starts now: the entry before the first one, its term, and
    /// the offset the first one takes. It restarts its own log there, empty, and takes the entries
    /// from the first one on as usual. The messages before were removed here and are not sent.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let state = self.0.borrow();
        let index = state.first_index() - 1;
        if index == 0 {
            return Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot {
            data: Bytes::copy_from_slice(&state.terms.end_offset(index).to_le_bytes()),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = state.terms.term_of(index);
        meta.set_conf_state(state.conf.clone());
        Ok(snapshot)
    }
}
