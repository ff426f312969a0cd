//! The meta group: one consensus group over every node of the cluster, driven by shard 0. It
//! decides the stream registry's changes (adding, updating and removing streams), which every
//! node's registry applies in the group's order, and shows who leads in `sluice cluster info`.
//!
//! A new cluster's members are this node and every route's node: the group starts once each route
//! has been linked (or found to be this node) once, so every node listing the same nodes starts it
//! with the same members. Its term, vote, commit and members are written to `cluster/meta.json`
//! in the data directory (temporary file, fsync, rename, fsync of the directory), and its entries
//! appended to `cluster/meta.entries`, before the messages that depend on them leave; both are
//! read back at start.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use serde::{Deserialize, Serialize};

mod saved;

use self::saved::{journal, load, path, restore, store, Saved, SavedEntry};
use super::Cluster;
use crate::api::{self, MetaInfo};
use crate::server::core::shard::Shard;
use sluice_protocol::ErrorCode;
use sluice_storage::wake::Latch;
use std::cell::RefCell;

/// How long a registry change waits for the meta group to decide it: below the 5 s clients
/// (Sluice's, nats.go's and nats.py's JetStream API calls) wait for an answer, so that they get
/// the reason rather than a timeout.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(4);
/// One consensus tick.
const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's word before a follower stands (1 s to 2 s, randomized by raft).
const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// Largest batch of entries in one message, under the link's frame limit.
const MESSAGE_BYTES_MAX: u64 = 512 * 1024;

/// A change of the stream registry, as the meta group decides it: an API request (`stream.add`,
/// `stream.update`, `stream.remove`) and the node and id it was asked with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaOp {
    pub origin: String,
    pub id: u64,
    pub verb: String,
    pub body: String,
}

/// A change asked for on this node, waiting for its answer.
#[derive(Default)]
pub(super) struct Waiter {
    pub(super) done: Latch,
    pub(super) answer: RefCell<Option<(u16, Vec<u8>)>>,
}

impl Cluster {
    /// Asks the meta group to decide a registry change, and waits for its answer: the API's
    /// status and body as this node's registry applied it, or `Unavailable`.
    pub async fn propose(&self, verb: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let unavailable = |why: &str| (ErrorCode::Unavailable.as_u16(), why.as_bytes().to_vec());
        if self.meta_status.borrow().is_none() {
            return unavailable("the meta group has not started: not every route has answered");
        }
        let id = self.next_proposal.get();
        self.next_proposal.set(id + 1);
        let waiter = Rc::new(Waiter::default());
        self.waiters.borrow_mut().insert(id, waiter.clone());
        self.proposals.borrow_mut().push_back(MetaOp {
            origin: self.name.clone(),
            id,
            verb: verb.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        self.meta_wake.notify();
        let decided = or(
            async {
                waiter.done.wait().await;
                true
            },
            async {
                glommio::timer::sleep(PROPOSAL_TIMEOUT).await;
                false
            },
        )
        .await;
        self.waiters.borrow_mut().remove(&id);
        let answer = waiter.answer.borrow_mut().take();
        match answer {
            Some(answer) if decided => answer,
            _ => unavailable(
                "the meta group did not decide within 4 s (no leader reachable); \
                 the change may still be decided later",
            ),
        }
    }

    /// Answers a change asked for here, if `op` is one.
    pub fn answer(&self, op: &MetaOp, answer: (u16, Vec<u8>)) {
        if op.origin != self.name {
            return;
        }
        if let Some(waiter) = self.waiters.borrow_mut().remove(&op.id) {
            *waiter.answer.borrow_mut() = Some(answer);
            waiter.done.set();
        }
    }

    /// The next change decided, once there is one: its log index and the change.
    pub async fn next_decided(&self) -> (u64, MetaOp) {
        loop {
            if let Some(next) = self.decided.borrow_mut().pop_front() {
                return next;
            }
            self.decided_ready.wait().await;
        }
    }

    /// The registry applied the change at `index`; returns once that is recorded durably, so
    /// that after a crash at most that one change is applied again.
    pub async fn applied(&self, index: u64) {
        self.applied.set(self.applied.get().max(index));
        self.meta_wake.notify();
        self.applied_written
            .wait_until(|| self.applied_durable.get() >= index)
            .await;
    }
}

/// A node's id in consensus groups: a stable hash of its name (never 0).
pub fn node_id(name: &str) -> u64 {
    use blake2::Digest;
    let digest = blake2::Blake2b512::digest(name.as_bytes());
    let id = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    id.max(1)
}

/// Runs the meta group until the shard stops: waits for its members, then ticks, steps the
/// messages that arrive, and handles what the group has ready.
pub async fn run(core: Rc<Shard>, cluster: Rc<Cluster>) {
    let file = path(&core.config.data_dir);
    let mut saved = match load(&file) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::error!(error = %e, "the meta group's state cannot be read; it does not start");
            return;
        }
    };
    if saved.is_none() {
        // A new cluster: wait until every route has said who it is.
        while !core.stopping.is_set() {
            if let Some(members) = cluster.initial_members() {
                tracing::info!(node = %cluster.name, ?members, "meta group starting");
                saved = Some(Saved {
                    members,
                    ..Saved::default()
                });
                break;
            }
            or(glommio::timer::sleep(TICK), core.stopping.wait()).await;
        }
    }
    let Some(mut saved) = saved else { return };
    let storage = restore(&saved);
    let config = Config {
        id: node_id(&cluster.name),
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        max_size_per_msg: MESSAGE_BYTES_MAX,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        applied: saved.applied.min(saved.commit),
        ..Config::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = match RawNode::new(&config, storage, &logger) {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(error = %e, "the meta group cannot start");
            return;
        }
    };
    let mut next_tick = Instant::now() + TICK;
    while !core.stopping.is_set() {
        let until_tick = next_tick.saturating_duration_since(Instant::now());
        or(
            or(cluster.meta_wake.wait(), glommio::timer::sleep(until_tick)),
            core.stopping.wait(),
        )
        .await;
        loop {
            let message = cluster.meta_inbox.borrow_mut().pop_front();
            let Some(message) = message else { break };
            if let Err(e) = node.step(message) {
                tracing::debug!(error = %e, "meta group message not taken");
            }
        }
        let mut held = Vec::new();
        loop {
            let op = cluster.proposals.borrow_mut().pop_front();
            let Some(op) = op else { break };
            let data = serde_json::to_vec(&op).unwrap_or_default();
            let proposed = match member_change(&op) {
                Some(change) => {
                    if leaves_as_leader(&mut node, &cluster, &saved, &change) {
                        // Proposed once another node leads, through it.
                        held.push(op);
                        continue;
                    }
                    node.propose_conf_change(Vec::new(), change)
                }
                None => node.propose(Vec::new(), data),
            };
            if let Err(e) = proposed {
                let why = format!("no meta leader to decide it: {e}");
                cluster.answer(&op, (ErrorCode::Unavailable.as_u16(), why.into()));
            }
        }
        cluster.proposals.borrow_mut().extend(held);
        if Instant::now() >= next_tick {
            node.tick();
            next_tick = Instant::now() + TICK;
        }
        let applied = cluster.applied.get();
        if applied > saved.applied {
            saved.applied = applied;
            if let Err(e) = store(file.clone(), saved.head()).await {
                tracing::error!(error = %e, "the meta group's state cannot be written; it stops");
                *cluster.meta_status.borrow_mut() = None;
                return;
            }
            cluster.applied_durable.set(applied);
            cluster.applied_written.notify_all();
        }
        if let Err(e) = handle_ready(&mut node, &cluster, &file, &mut saved).await {
            tracing::error!(error = %e, "the meta group's state cannot be written; it stops");
            *cluster.meta_status.borrow_mut() = None;
            return;
        }
        let raft = &node.raft;
        *cluster.meta_status.borrow_mut() = Some(MetaInfo {
            leader: name_among(&saved.members, raft.leader_id),
            term: raft.term,
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            }
            .to_string(),
            voters: saved.members.clone(),
            commit: raft.raft_log.committed,
        });
    }
}

/// Handles one `Ready`: sends what may go at once, makes entries and state durable, then sends
/// what had to wait for that, and advances.
async fn handle_ready(
    node: &mut RawNode<MemStorage>,
    cluster: &Cluster,
    file: &Path,
    saved: &mut Saved,
) -> Result<(), String> {
    if !node.has_ready() {
        return Ok(());
    }
    // Members, and those a change is removing, by id: a removed node still hears of its removal.
    let mut known = saved.members.clone();
    known.extend(saved.leaving.iter().cloned());
    let send = |messages: Vec<Message>| {
        for message in messages {
            if let Some(to) = name_among(&known, message.to) {
                cluster.send_raft(&to, &message);
            }
        }
    };
    let store_handle = node.raft.raft_log.store.clone();
    let mut ready = node.ready();
    send(ready.take_messages());
    let committed = ready.take_committed_entries();
    let mut changed = false;
    if !ready.entries().is_empty() {
        let entries = ready.entries();
        store_handle
            .wl()
            .append(entries)
            .map_err(|e| e.to_string())?;
        let first = entries[0].index;
        let replaces = saved.entries.last().is_some_and(|e| e.index >= first);
        saved.entries.retain(|e| e.index < first);
        let new: Vec<SavedEntry> = entries
            .iter()
            .map(|e| SavedEntry {
                index: e.index,
                term: e.term,
                conf_change: e.get_entry_type() == EntryType::EntryConfChange,
                data: e.data.to_vec(),
            })
            .collect();
        saved.entries.extend(new.iter().cloned());
        if replaces {
            journal(file, saved.entries.clone(), true).await?;
        } else {
            journal(file, new, false).await?;
        }
    }
    if let Some(hard) = ready.hs() {
        store_handle.wl().set_hardstate(hard.clone());
        saved.term = hard.term;
        saved.vote = hard.vote;
        saved.commit = hard.commit;
        changed = true;
    }
    if changed {
        store(file.to_path_buf(), saved.head()).await?;
    }
    send(ready.take_persisted_messages());
    decide(node, cluster, file, saved, committed).await?;
    let mut light = node.advance(ready);
    if let Some(commit) = light.commit_index() {
        store_handle.wl().mut_hard_state().set_commit(commit);
        saved.commit = commit;
    }
    send(light.take_messages());
    let committed = light.take_committed_entries();
    decide(node, cluster, file, saved, committed).await?;
    node.advance_apply();
    Ok(())
}

/// The name of node `id` among `names`.
fn name_among(names: &[String], id: u64) -> Option<String> {
    names.iter().find(|n| node_id(n) == id).cloned()
}

/// The membership change a request asks for, if it asks for one: its node in the context.
fn member_change(op: &MetaOp) -> Option<ConfChange> {
    let kind = match op.verb.as_str() {
        api::CLUSTER_ADD => ConfChangeType::AddNode,
        api::CLUSTER_REMOVE => ConfChangeType::RemoveNode,
        _ => return None,
    };
    let mut change = ConfChange::default();
    change.set_change_type(kind);
    change.node_id = node_id(&op.body);
    // The request travels in the change (the entry's own context is not kept).
    change.context = serde_json::to_vec(op).unwrap_or_default().into();
    Some(change)
}

/// Whether `change` removes this node while it leads: it hands its leadership to another member
/// first (to the one furthest along that is linked), and the change waits for that.
fn leaves_as_leader(
    node: &mut RawNode<MemStorage>,
    cluster: &Cluster,
    saved: &Saved,
    change: &ConfChange,
) -> bool {
    let leaving = change.get_change_type() == ConfChangeType::RemoveNode
        && change.node_id == node.raft.id
        && node.raft.state == StateRole::Leader;
    if !leaving {
        return false;
    }
    let heir = saved
        .members
        .iter()
        .filter(|n| **n != cluster.name && cluster.is_up(n))
        .max_by_key(|n| node.raft.prs().get(node_id(n)).map_or(0, |p| p.matched));
    if let Some(heir) = heir {
        tracing::info!(to = %heir, "leaving the cluster: handing the meta group's leadership over");
        node.transfer_leader(node_id(heir));
    }
    true
}

/// Hands the registry changes among committed entries to the registry, in order, and applies
/// the membership changes (written to the state file before they are answered).
async fn decide(
    node: &mut RawNode<MemStorage>,
    cluster: &Cluster,
    file: &Path,
    saved: &mut Saved,
    entries: Vec<Entry>,
) -> Result<(), String> {
    let mut queued = false;
    for entry in entries {
        if entry.get_entry_type() == EntryType::EntryConfChange {
            // One applied before a restart is in the members the group started with.
            if entry.index > saved.conf_applied {
                apply_member_change(node, cluster, file, saved, &entry).await?;
            }
            continue;
        }
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            continue;
        }
        match serde_json::from_slice::<MetaOp>(&entry.data) {
            Ok(op) => {
                cluster.decided.borrow_mut().push_back((entry.index, op));
                queued = true;
            }
            Err(e) => tracing::warn!(index = entry.index, error = %e, "unreadable meta entry"),
        }
    }
    if queued {
        cluster.decided_ready.notify();
    }
    Ok(())
}

/// Applies a committed membership change of the cluster: the member list (by name, from the
/// request in the entry's context) follows, durably, and the request is answered.
async fn apply_member_change(
    node: &mut RawNode<MemStorage>,
    cluster: &Cluster,
    file: &Path,
    saved: &mut Saved,
    entry: &Entry,
) -> Result<(), String> {
    let Ok(change) = ConfChange::parse_from_bytes(&entry.data) else {
        tracing::warn!(index = entry.index, "unreadable membership change");
        return Ok(());
    };
    let op: Option<MetaOp> = serde_json::from_slice(&change.context).ok();
    let conf = match node.apply_conf_change(&change) {
        Ok(conf) => conf,
        Err(e) => {
            tracing::warn!(index = entry.index, error = %e, "membership change refused");
            if let Some(op) = &op {
                cluster.answer(op, (ErrorCode::BadRequest.as_u16(), e.to_string().into()));
            }
            return Ok(());
        }
    };
    node.raft.raft_log.store.wl().set_conf_state(conf.clone());
    let name = op.as_ref().map(|op| op.body.clone());
    match (change.get_change_type(), name) {
        (ConfChangeType::AddNode, Some(name)) if !saved.members.contains(&name) => {
            saved.leaving.retain(|n| *n != name);
            saved.members.push(name);
        }
        (ConfChangeType::RemoveNode, _) => {
            let gone: Vec<String> = saved
                .members
                .iter()
                .filter(|n| node_id(n) == change.node_id)
                .cloned()
                .collect();
            saved.members.retain(|n| node_id(n) != change.node_id);
            saved.leaving.extend(gone);
        }
        _ => {}
    }
    saved.members.sort();
    saved.members.dedup();
    saved.conf_applied = saved.conf_applied.max(entry.index);
    store(file.to_path_buf(), saved.head()).await?;
    tracing::info!(index = entry.index, members = ?saved.members, voters = conf.voters.len(),
        "the cluster's members changed");
    if let Some(op) = &op {
        let members = serde_json::to_vec(&saved.members).unwrap_or_default();
        cluster.answer(op, (0, members));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::saved::{append_journal, journal_path};
    use super::*;
    use raft::Storage;

    #[test]
    fn node_ids_are_stable_distinct_and_never_zero() {
        let ids: Vec<u64> = ["n1", "n2", "n3", "sluice-0:6222"]
            .iter()
            .map(|n| node_id(n))
            .collect();
        assert!(ids.iter().all(|&id| id != 0));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(node_id("n1"), node_id("n1"));
    }

    fn entry(index: u64) -> SavedEntry {
        SavedEntry {
            index,
            term: 2,
            conf_change: false,
            data: format!("op {index}").into_bytes(),
        }
    }

    #[test]
    fn entries_go_to_a_journal_that_survives_a_torn_line_and_an_older_state_file() {
        let dir = std::env::temp_dir().join(format!("sluice-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("meta.json");
        let saved = Saved {
            term: 2,
            commit: 3,
            members: vec!["n1".into()],
            entries: vec![entry(1), entry(2)],
            ..Saved::default()
        };
        // A state file of the format before the journal holds its entries: they move to it.
        std::fs::write(&state, serde_json::to_vec(&OldSaved(&saved)).unwrap()).unwrap();
        let loaded = load(&state).unwrap().unwrap();
        assert_eq!(loaded.entries.len(), 2);
        assert!(journal_path(&state).exists());
        // The state file written now leaves them out; appends follow, then a torn line.
        crate::server::files::write_json_durably(&state, &saved.head()).unwrap();
        assert!(!std::fs::read_to_string(&state).unwrap().contains("op 1"));
        append_journal(&journal_path(&state), &[entry(3)]).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(&state))
            .unwrap();
        std::io::Write::write_all(&mut file, b"{\"index\":4,\"te").unwrap();
        let loaded = load(&state).unwrap().unwrap();
        let indexes: Vec<u64> = loaded.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 2, 3]);
        assert_eq!(loaded.entries[2].data, b"op 3");
        append_journal(&journal_path(&state), &[entry(4)]).unwrap();
        let indexes: Vec<u64> = load(&state)
            .unwrap()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(
            indexes,
            [1, 2, 3, 4],
            "the torn line was dropped before the next append"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_first_entries_are_written_before_any_state_file() {
        let dir = std::env::temp_dir().join(format!("sluice-meta-first-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = dir.join("cluster").join("meta.json");
        let written = glommio::LocalExecutorBuilder::default()
            .spawn({
                let state = state.clone();
                move || async move { journal(&state, vec![entry(1)], false).await }
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(written, Ok(()));
        let journal = std::fs::read_to_string(journal_path(&state)).unwrap();
        assert!(journal.contains("\"index\":1"), "{journal}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A state file as written before the journal: its entries inside.
    struct OldSaved<'a>(&'a Saved);

    impl Serialize for OldSaved<'_> {
        fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
            let mut value = serde_json::to_value(self.0).map_err(serde::ser::Error::custom)?;
            let entries =
                serde_json::to_value(&self.0.entries).map_err(serde::ser::Error::custom)?;
            value["entries"] = entries;
            value.serialize(out)
        }
    }

    #[test]
    fn what_was_saved_is_what_the_group_restarts_from() {
        let saved = Saved {
            term: 4,
            vote: node_id("n2"),
            commit: 2,
            applied: 1,
            members: vec!["n1".into(), "n2".into(), "n3".into()],
            leaving: Vec::new(),
            conf_applied: 0,
            entries: vec![
                SavedEntry {
                    index: 1,
                    term: 1,
                    conf_change: false,
                    data: vec![],
                },
                SavedEntry {
                    index: 2,
                    term: 4,
                    conf_change: false,
                    data: b"x".to_vec(),
                },
            ],
        };
        // An entry's bytes are base64 in its journal line.
        let json = serde_json::to_string(&saved.entries[1]).unwrap();
        assert!(json.contains("\"data\":\"eA==\""), "{json}");
        let storage = restore(&saved);
        let state = storage.initial_state().unwrap();
        assert_eq!(
            (
                state.hard_state.term,
                state.hard_state.vote,
                state.hard_state.commit
            ),
            (4, node_id("n2"), 2)
        );
        let mut voters = state.conf_state.voters.clone();
        voters.sort();
        let mut want: Vec<u64> = saved.members.iter().map(|n| node_id(n)).collect();
        want.sort();
        assert_eq!(voters, want);
        assert_eq!(storage.last_index().unwrap(), 2);
        assert_eq!(storage.term(2).unwrap(), 4);
    }
}
