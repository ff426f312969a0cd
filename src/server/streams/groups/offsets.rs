//! A group's committed offsets: kept in memory on the coordinator, made durable before a commit
//! is answered, in `<data dir>/kafka-groups/<hex of the group id>.json` (a group id is any
//! string, so it never becomes a path itself). Commits that arrive while a write is under way
//! go to disk together in the next one.
//!
//! In a cluster, the coordinator sends a group's offsets to the other nodes after each commit,
//! and each node sends all it keeps to a node that comes up; a node keeps whichever of its own
//! and the sent offsets were committed last. Whichever node coordinates the group next (one dies,
//! or comes back) starts from them.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sluice_protocol::kafka::code;

use super::machine::{Group, State};
use super::{Commit, Committed, StreamShard};
use crate::server::streams::state::{json_files, write_durably};

/// A group's offsets, by topic and partition.
pub type Offsets = BTreeMap<(String, i32), Committed>;

/// A group's file, and what a coordinator sends to the other nodes of its cluster.
#[derive(Serialize, Deserialize)]
struct Saved {
    group: String,
    /// When the offsets were committed (see `Group::stamp`); 0 in files written before stamps.
    #[serde(default)]
    stamp: u64,
    offsets: Vec<SavedOffset>,
}

impl Saved {
    fn of(name: &str, group: &Group) -> Saved {
        Saved {
            group: name.to_string(),
            stamp: group.stamp,
            offsets: group
                .offsets
                .iter()
                .map(|((topic, partition), committed)| SavedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    committed: committed.clone(),
                })
                .collect(),
        }
    }

    fn offsets(self) -> Offsets {
        self.offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.committed))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct SavedOffset {
    topic: String,
    partition: i32,
    #[serde(flatten)]
    committed: Committed,
}

fn file_name(group: &str) -> String {
    let mut name = String::with_capacity(group.len() * 2 + 5);
    for byte in group.bytes() {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(".json");
    name
}

/// Every saved group that `mine` keeps, with its offsets and their stamp. Blocking.
pub fn load(dir: &Path, mine: impl Fn(&str) -> bool) -> Vec<(String, Offsets, u64)> {
    let mut found = Vec::new();
    for path in json_files(dir) {
        let saved: Saved = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        {
            Ok(saved) => saved,
            Err(error) => {
                tracing::error!(path = %path.display(), %error,
                    "a group's committed offsets cannot be read; the group starts without them");
                continue;
            }
        };
        if !mine(&saved.group) {
            continue;
        }
        let (group, stamp) = (saved.group.clone(), saved.stamp);
        found.push((group, saved.offsets(), stamp));
    }
    found
}

/// Every saved group's file, as it is sent to a node that comes up. Blocking.
pub fn all_saved(dir: &Path) -> Vec<(String, Vec<u8>)> {
    json_files(dir)
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).ok()?;
            let saved: Saved = serde_json::from_slice(&bytes).ok()?;
            Some((saved.group, bytes))
        })
        .collect()
}

/// Whether a commit may be stored, as Kafka decides it: a client outside any group (generation
/// −1) commits only while the group has no members; a member commits for its generation, also
/// while a rebalance gathers the members (clients commit what they processed before they join
/// again), but not while the new generation's assignments are being handed out.
fn admitted(group: Option<&Group>, commit: &Commit) -> i16 {
    let Some(group) = group else {
        return if commit.generation < 0 {
            code::NONE
        } else {
            code::UNKNOWN_MEMBER_ID
        };
    };
    if commit.generation < 0 && group.members.is_empty() {
        return code::NONE;
    }
    if !group.members.iter().any(|m| m.id == commit.member_id) {
        return code::UNKNOWN_MEMBER_ID;
    }
    if commit.generation != group.generation {
        return code::ILLEGAL_GENERATION;
    }
    if group.state == State::CompletingRebalance {
        return code::REBALANCE_IN_PROGRESS;
    }
    code::NONE
}

/// Stores a commit and answers once it is durable.
pub async fn commit(shard: &Rc<StreamShard>, commit: Commit) -> i16 {
    let coordinator = &shard.groups;
    let version = {
        let mut groups = coordinator.groups.borrow_mut();
        let admitted = admitted(groups.get(&commit.group), &commit);
        if admitted != code::NONE {
            return admitted;
        }
        let group = groups.entry(commit.group.clone()).or_default();
        if let Some(member) = group.members.iter_mut().find(|m| m.id == commit.member_id) {
            member.heard();
        }
        for (topic, partition, committed) in commit.offsets {
            group.offsets.insert((topic, partition), committed);
        }
        let now_ms = sluice_storage::now_ns() / 1_000_000;
        group.stamp = now_ms.max(group.stamp + 1);
        group.version += 1;
        let start = !group.writing;
        group.writing = true;
        (group.version, start)
    };
    let (version, start) = version;
    if start {
        glommio::spawn_local(write(shard.clone(), commit.group.clone())).detach();
    }
    let outcome = std::cell::Cell::new(None);
    coordinator
        .written
        .wait_until(|| {
            let groups = coordinator.groups.borrow();
            let Some(group) = groups.get(&commit.group) else {
                outcome.set(Some(code::COORDINATOR_NOT_AVAILABLE));
                return true;
            };
            if group.written >= version {
                outcome.set(Some(code::NONE));
            } else if group.failed >= version {
                outcome.set(Some(code::COORDINATOR_NOT_AVAILABLE));
            }
            outcome.get().is_some()
        })
        .await;
    let outcome = outcome.get().unwrap_or(code::COORDINATOR_NOT_AVAILABLE);
    if outcome == code::NONE {
        ship(shard, &commit.group);
    }
    outcome
}

/// In a cluster: sends a group's offsets, as committed here, to the other nodes up now.
fn ship(shard: &StreamShard, name: &str) {
    let Some(me) = shard.core.config.cluster.as_ref().map(|c| c.name.as_str()) else {
        return;
    };
    let saved = {
        let groups = shard.groups.groups.borrow();
        let Some(group) = groups.get(name) else {
            return;
        };
        Saved::of(name, group)
    };
    let Ok(json) = serde_json::to_vec(&saved) else {
        return;
    };
    let frame = offsets_frame(name, &json);
    let nodes = shard.kafka_nodes.borrow();
    for (node, _) in nodes.iter().filter(|(node, _)| node != me) {
        shard.cluster_send(node, frame.clone());
    }
}

/// The frame that carries a group's saved offsets to another node.
pub fn offsets_frame(group: &str, saved: &[u8]) -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(saved.len() + group.len() + 16);
    sluice_protocol::cluster::ClusterFrame::Offsets { group, saved }.encode(&mut out);
    out.freeze()
}

/// On the group's coordinator shard: offsets another node sent, kept if they were committed after
/// the ones here (and written down as a commit here would be).
pub fn take_shipped(shard: &Rc<StreamShard>, saved: &[u8]) {
    let saved: Saved = match serde_json::from_slice(saved) {
        Ok(saved) => saved,
        Err(error) => {
            tracing::warn!(%error, "a peer sent a group's offsets that cannot be read");
            return;
        }
    };
    let name = saved.group.clone();
    let start = {
        let mut groups = shard.groups.groups.borrow_mut();
        let group = groups.entry(name.clone()).or_default();
        if saved.stamp <= group.stamp {
            return;
        }
        group.stamp = saved.stamp;
        group.offsets = saved.offsets();
        group.version += 1;
        !std::mem::replace(&mut group.writing, true)
    };
    if start {
        glommio::spawn_local(write(shard.clone(), name)).detach();
    }
}

/// Writes a group's offsets until what is on disk is what is in memory.
async fn write(shard: Rc<StreamShard>, name: String) {
    let coordinator = &shard.groups;
    let path = coordinator.dir.join(file_name(&name));
    loop {
        let (version, saved) = {
            let groups = coordinator.groups.borrow();
            let Some(group) = groups.get(&name) else {
                return;
            };
            (group.version, Saved::of(&name, group))
        };
        let target = path.clone();
        let result = glommio::executor()
            .spawn_blocking(move || write_durably(&target, &saved))
            .await;
        let more = {
            let mut groups = coordinator.groups.borrow_mut();
            let Some(group) = groups.get_mut(&name) else {
                return;
            };
            match result {
                Ok(()) => group.written = version,
                Err(error) => {
                    tracing::error!(group = %name, %error, "committed offsets not written");
                    group.failed = version;
                }
            }
            let more = group.version > version;
            group.writing = more;
            more
        };
        coordinator.written.notify_all();
        if !more {
            return;
        }
    }
}

/// Committed offsets of the partitions asked, or all of the group's.
pub fn fetch(
    shard: &StreamShard,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, i32, Option<Committed>)> {
    let groups = shard.groups.groups.borrow();
    let offsets = groups.get(group).map(|g| &g.offsets);
    match topics {
        Some(topics) => topics
            .into_iter()
            .flat_map(|(topic, partitions)| partitions.into_iter().map(move |p| (topic.clone(), p)))
            .map(|(topic, partition)| {
                let found = offsets.and_then(|o| o.get(&(topic.clone(), partition)).cloned());
                (topic, partition, found)
            })
            .collect(),
        None => offsets
            .into_iter()
            .flatten()
            .map(|((topic, partition), c)| (topic.clone(), *partition, Some(c.clone())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_group_id_is_a_plain_file_name() {
        assert_eq!(file_name("g1"), "6731.json");
        let odd = file_name("../../etc/passwd");
        assert!(!odd.contains('/') && !odd.contains(".."));
    }

    #[test]
    fn saved_offsets_load_back_for_their_coordinator_only() {
        let dir = std::env::temp_dir().join(format!("sluice-groups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for group in ["a", "b"] {
            let saved = Saved {
                group: group.into(),
                stamp: 7,
                offsets: vec![SavedOffset {
                    topic: "t".into(),
                    partition: 2,
                    committed: Committed {
                        offset: 42,
                        leader_epoch: -1,
                        metadata: String::new(),
                    },
                }],
            };
            write_durably(&dir.join(file_name(group)), &saved).unwrap();
        }
        std::fs::write(dir.join("bad.json"), b"{").unwrap();
        let loaded = load(&dir, |g| g == "b");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, "b");
        assert_eq!(loaded[0].1[&("t".to_string(), 2)].offset, 42);
        assert_eq!(loaded[0].2, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
