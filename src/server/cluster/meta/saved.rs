//! The meta group's durable state: a small state file (`cluster/meta.json`: term, vote, commit,
//! members) and the journal of its entries beside it (`cluster/meta.entries`, one JSON line
//! each), and the consensus library's storage rebuilt from them at start.

use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use raft::storage::MemStorage;
use serde::{Deserialize, Serialize};

use super::node_id;

/// The group's durable state, as written to its file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Saved {
    pub(super) term: u64,
    pub(super) vote: u64,
    pub(super) commit: u64,
    /// The last change the registry applied (and made durable).
    #[serde(default)]
    pub(super) applied: u64,
    /// Voting members, by name.
    pub(super) members: Vec<String>,
    /// Nodes removed from the members, still told of what they missed (their removal).
    #[serde(default)]
    pub(super) leaving: Vec<String>,
    /// The last membership change applied.
    #[serde(default)]
    pub(super) conf_applied: u64,
    /// The entries, in the journal beside the state file (a state file written before the
    /// journal existed holds them itself, and is read as such).
    #[serde(default, skip_serializing)]
    pub(super) entries: Vec<SavedEntry>,
}

impl Saved {
    /// The state without its entries: what the state file holds.
    pub(super) fn head(&self) -> Saved {
        Saved {
            members: self.members.clone(),
            leaving: self.leaving.clone(),
            entries: Vec::new(),
            ..*self
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SavedEntry {
    pub(super) index: u64,
    pub(super) term: u64,
    /// A membership change, rather than a normal entry.
    #[serde(default)]
    pub(super) conf_change: bool,
    /// The entry's bytes, in base64 in the file.
    #[serde(default, with = "base64_bytes")]
    pub(super) data: Vec<u8>,
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(input)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

pub(super) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("meta.json")
}

/// The journal of the group's entries, one JSON line each, beside the state file: a change
/// appends its entries (written once), rather than the whole log being written again.
pub(super) fn journal_path(state: &Path) -> PathBuf {
    state.with_file_name("meta.entries")
}

/// Reads the state and its entries. A journal's torn last line (a crash mid-append) is left
/// out and the journal written again without it, as is a journal made from a state file of the
/// format before the journal.
pub(super) fn load(path: &Path) -> Result<Option<Saved>, String> {
    let mut saved: Saved = match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let journal = journal_path(path);
    match std::fs::read(&journal) {
        Ok(bytes) => {
            let mut entries = Vec::new();
            let mut torn = false;
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<SavedEntry>(line) {
                    Ok(entry) => entries.push(entry),
                    Err(_) => {
                        torn = true;
                        break;
                    }
                }
            }
            saved.entries = entries;
            if torn {
                tracing::warn!(path = %journal.display(), "the meta journal's last line is torn; dropped");
                write_journal(&journal, &saved.entries)
                    .map_err(|e| format!("{}: {e}", journal.display()))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_journal(&journal, &saved.entries)
                .map_err(|e| format!("{}: {e}", journal.display()))?;
        }
        Err(e) => return Err(format!("{}: {e}", journal.display())),
    }
    Ok(Some(saved))
}

/// Writes the whole journal durably (temporary file, sync, rename, sync of the directory).
pub(super) fn write_journal(path: &Path, entries: &[SavedEntry]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut out, entry).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    let tmp = path.with_extension("entries.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&out)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new("."))).and_then(|d| d.sync_all())
}

/// Appends entries to the journal durably.
pub(super) fn append_journal(path: &Path, entries: &[SavedEntry]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut out, entry).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    file.write_all(&out)?;
    file.sync_data()
}

/// Writes new entries to the journal, on a blocking thread: appended, or the whole journal again
/// when they replace some of it (a conflicting tail, which is rare).
pub(super) async fn journal(
    state: &Path,
    entries: Vec<SavedEntry>,
    whole: bool,
) -> Result<(), String> {
    let path = journal_path(state);
    glommio::executor()
        .spawn_blocking(move || {
            // A node's first entries can come before its first state (a follower's first Ready
            // may bring both): the directory may not be there yet.
            if let Some(dir) = path.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    return Err(format!("{}: {e}", dir.display()));
                }
            }
            let written = if whole {
                write_journal(&path, &entries)
            } else {
                append_journal(&path, &entries)
            };
            written.map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
}

/// Writes the state (without its entries) durably, on a blocking thread.
pub(super) async fn store(path: PathBuf, saved: Saved) -> Result<(), String> {
    glommio::executor()
        .spawn_blocking(move || {
            crate::server::files::write_json_durably(&path, &saved)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
}

/// A storage holding what was saved.
pub(super) fn restore(saved: &Saved) -> MemStorage {
    let voters: Vec<u64> = saved.members.iter().map(|n| node_id(n)).collect();
    let storage = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
    {
        let mut core = storage.wl();
        let entries: Vec<Entry> = saved
            .entries
            .iter()
            .map(|e| {
                let mut entry = Entry {
                    index: e.index,
                    term: e.term,
                    ..Entry::default()
                };
                entry.set_entry_type(if e.conf_change {
                    EntryType::EntryConfChange
                } else {
                    EntryType::EntryNormal
                });
                entry.data = e.data.clone().into();
                entry
            })
            .collect();
        if !entries.is_empty() {
            let _ = core.append(&entries);
        }
        core.set_hardstate(HardState {
            term: saved.term,
            vote: saved.vote,
            commit: saved.commit,
            ..HardState::default()
        });
    }
    storage
}
