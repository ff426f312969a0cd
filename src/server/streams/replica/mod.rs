//! Replicated partitions: each partition of a stream with `replicas` > 1 is one consensus group
//! over the nodes of its placement, driven by the shard that owns the partition on each node.
//!
//! The group's log is the partition's log (see `terms.rs` for how entries map to offsets), so a
//! message is written once per replica. A publish reaching the leader is proposed; the leader
//! appends it to its own log while its followers do the same, and answers once a majority has it
//! durable (the group commits it). Readers on every node see a record only once it is committed:
//! the log's visible end follows the group's commit. A publish reaching a follower is forwarded to
//! the leader over the cluster links, and answered when the leader's answer comes back.
//!
//! Consensus messages, forwarded publishes and their answers go through shard 0's links to the
//! peer's shard 0, which hands them to the shard owning the partition there: every node has the
//! same shard count, so the partition's replicas live on the same shard of every node.

mod driver;
mod links;
mod store;
pub mod terms;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future::or;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, Message, MessageType, Snapshot,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole};
use sluice_protocol::cluster::ClusterFrame;
use sluice_protocol::ErrorCode;
use sluice_storage::wake::Notify;
use sluice_storage::PartitionLog;

use self::driver::{drive, read_entries};
pub use self::links::{
    answer_consumer_state, ask_consumer_state, confirm_consumer_state, forwarded_frame, receive,
    route_from_links, ship_consumer_state, FORWARD_SHARD_SHIFT,
};
use self::store::{Cached, Saved, SavedConf, Store, FETCH_BYTES_MAX};
use self::terms::TermStart;
use super::items::AckOutcome;
use super::partition::{Partition, Queued};
use super::{resolve, Done, StreamItem, StreamShard};
use crate::api::{shard_for, StreamConfig};
use crate::server::cluster::meta::node_id;
use crate::server::cluster::{Cluster, GroupIn};
use crate::server::ShardId;

/// One consensus tick.
const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's word before a follower stands (1 s to 2 s, randomized).
const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// Largest batch of entries in one message, under the link's frame limit.
const MESSAGE_BYTES_MAX: u64 = 512 * 1024;
/// Append messages in flight to one follower.
const INFLIGHT_MESSAGES_MAX: usize = 256;
/// How long a publish waits for its group to decide it: under the 5 s clients wait for an ack,
/// so that they hear why.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the commit is written to the state file when nothing else changes: a node that
/// restarts shows what it knew to be committed up to then, until its leader tells it more.
const COMMIT_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Decides where a new stream's copies live, or refuses its `replicas`: 1 (each node keeps its
/// own), or every node of the cluster.
pub fn place(shard: &StreamShard, config: &mut StreamConfig) -> Result<(), (ErrorCode, String)> {
    if config.replicas == 0 {
        let members = shard.cluster.get().and_then(|c| c.members());
        config.replicas = members.map_or(1, |m| u8::try_from(m.len()).unwrap_or(u8::MAX).max(1));
    }
    if !config.is_replicated() {
        config.placement.clear();
        return Ok(());
    }
    let members = shard.cluster.get().and_then(|c| c.members());
    let Some(mut members) = members else {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "stream {}: {} replicas need a cluster of {} nodes; this node is not in one",
                config.name, config.replicas, config.replicas
            ),
        ));
    };
    if usize::from(config.replicas) != members.len() {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "stream {}: replicas must be 1 or the cluster's size ({}), not {}",
                config.name,
                members.len(),
                config.replicas
            ),
        ));
    }
    members.sort();
    config.placement = members;
    Ok(())
}

/// A publish waiting for its group: proposed at an index (and term) on the leader, or forwarded
/// to the leader.
struct Waiting {
    term: u64,
    done: Option<Done>,
    bytes: usize,
    deadline: Instant,
    /// Offsets before the entry's own that the answer reports (see `Queued::back`).
    back: u64,
}

impl Waiting {
    /// A publish that is not proposed here: forwarded to the leader, or refused before it left.
    fn unsent(q: Queued, deadline: Instant) -> Waiting {
        Waiting {
            term: 0,
            done: q.done,
            bytes: q.body.len(),
            deadline,
            back: 0,
        }
    }
}

/// What a group shows in `sluice cluster info`, as its driver last saw it (set after every round,
/// so it holds no name: `leader` is the leader's id, 0 for none).
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupStatus {
    pub leader: u64,
    pub role: &'static str,
    pub term: u64,
    pub commit: u64,
    pub last_index: u64,
}

/// One replicated partition's group on this node.
pub struct Group {
    stream: Arc<str>,
    partition: u32,
    dir: PathBuf,
    log: Rc<PartitionLog>,
    part: Weak<Partition>,
    /// Every node that held or holds a copy, by id: the members, and those joining or leaving.
    names: RefCell<Vec<(u64, String)>>,
    /// The members the stream's placement asks for; the leader changes the group's membership
    /// to them (a replica moved).
    placement: RefCell<Vec<u64>>,
    /// The members as last applied.
    members: RefCell<Vec<u64>>,
    inbox: RefCell<VecDeque<Message>>,
    wake: Notify,
    /// Publishes handed over by the partition, not yet proposed or forwarded.
    /// Each with its deadline, and whether the leader's checks ran on it.
    submitted: RefCell<VecDeque<(Queued, Instant, bool)>>,
    /// Publishes proposed here as leader, by index.
    proposed: RefCell<BTreeMap<u64, Waiting>>,
    /// Publishes forwarded to the leader, by forward id.
    forwarded: RefCell<HashMap<u64, Waiting>>,
    status: RefCell<GroupStatus>,
    stopped: Cell<bool>,
    /// This node is no longer a member: its copy goes.
    left: Cell<bool>,
    /// Where a consensus message is encoded before it is framed, kept between messages.
    encoded: RefCell<Vec<u8>>,
}

/// Most consensus messages waiting for a group's driver: past it the oldest go.
const INBOX_MAX: usize = 4096;

impl Group {
    /// Whether this node leads the group now.
    pub fn is_leader(&self) -> bool {
        self.status.borrow().role == "leader"
    }

    pub fn status(&self) -> GroupStatus {
        *self.status.borrow()
    }

    /// Wakes the group's driver.
    pub fn wake(&self) {
        self.wake.notify();
    }

    /// A consensus message from a peer.
    pub fn step(&self, message: Message) {
        let mut inbox = self.inbox.borrow_mut();
        if inbox.len() >= INBOX_MAX {
            inbox.pop_front();
        }
        inbox.push_back(message);
        drop(inbox);
        self.wake.notify();
    }

    /// Takes publishes for the group: proposed if this node leads, else forwarded to the leader.
    /// `checked`: the leader's checks ran on them (and Kafka batches were cut into records).
    pub(super) fn submit(&self, items: Vec<Queued>, checked: bool) {
        let deadline = Instant::now() + DECIDE_TIMEOUT;
        // A publish forwarded from another node keeps its publisher's deadline.
        let deadline_of = |q: &Queued| match &q.done {
            Some(Done::Peer { deadline: peer, .. }) => deadline.min(*peer),
            _ => deadline,
        };
        self.submitted
            .borrow_mut()
            .extend(items.into_iter().map(|q| {
                let deadline = deadline_of(&q);
                (q, deadline, checked)
            }));
        self.wake.notify();
    }

    /// Stops the group: what waits for it is refused.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake.notify();
    }

    /// The answer to a publish this node forwarded.
    fn forward_answered(
        &self,
        shard: &Rc<StreamShard>,
        id: u64,
        result: Result<u64, (u16, String)>,
    ) {
        let Some(waiting) = self.forwarded.borrow_mut().remove(&id) else {
            return; // Timed out already.
        };
        let result = result.map_err(|(code, why)| (ErrorCode::from_u16(code), why));
        self.finish(shard, waiting, result);
    }

    fn finish(
        &self,
        shard: &Rc<StreamShard>,
        waiting: Waiting,
        result: Result<u64, (ErrorCode, String)>,
    ) {
        if let Some(part) = self.part.upgrade() {
            part.synced_bytes(waiting.bytes);
            if result.is_err() {
                part.forget_proposed();
            }
        }
        if let Some(done) = waiting.done {
            resolve(
                shard,
                done,
                AckOutcome::plain(self.stream.clone(), self.partition, result),
            );
        }
    }

    fn name_of(&self, id: u64) -> Option<String> {
        name_in(&self.names.borrow(), id).map(str::to_string)
    }

    /// The names of nodes `ids`, for the log.
    fn names_of(&self, ids: &[u64]) -> Vec<String> {
        let names = self.names.borrow();
        ids.iter()
            .map(|id| name_in(&names, *id).map_or_else(|| id.to_string(), str::to_string))
            .collect()
    }

    /// As leader, moves the group's membership towards the placement, one change at a time: a
    /// joint change adding the new members and removing the old ones (the library leaves the
    /// joint state by itself once it is applied). A leader that is not to stay a member hands
    /// its leadership to the member furthest along first.
    fn reconcile(&self, node: &mut RawNode<Store>, store: &Store) {
        if node.raft.state != StateRole::Leader || node.raft.has_pending_conf() {
            return;
        }
        let conf = store.0.borrow().conf.clone();
        if !conf.voters_outgoing.is_empty() {
            // A joint state the library did not leave (its leader changed meanwhile).
            let _ = node.propose_conf_change(Vec::new(), ConfChangeV2::default());
            return;
        }
        let mut want = self.placement.borrow().clone();
        want.sort_unstable();
        let mut now = conf.voters.clone();
        now.sort_unstable();
        if want == now || want.is_empty() {
            return;
        }
        let me = node.raft.id;
        if !want.contains(&me) {
            let heir = now
                .iter()
                .filter(|id| **id != me && want.contains(id))
                .max_by_key(|id| node.raft.prs().get(**id).map_or(0, |p| p.matched));
            if let Some(&heir) = heir {
                tracing::info!(stream = %self.stream, partition = self.partition,
                    to = ?self.name_of(heir), "leaving the group: handing its leadership over");
                node.transfer_leader(heir);
            }
            return;
        }
        let single = |id: u64, kind: ConfChangeType| {
            let mut one = ConfChangeSingle {
                node_id: id,
                ..ConfChangeSingle::default()
            };
            one.set_change_type(kind);
            one
        };
        let mut change = ConfChangeV2::default();
        change.set_transition(ConfChangeTransition::Auto);
        let added = want.iter().filter(|id| !now.contains(id));
        let removed = now.iter().filter(|id| !want.contains(id));
        let mut changes: Vec<ConfChangeSingle> = added
            .map(|id| single(*id, ConfChangeType::AddNode))
            .collect();
        changes.extend(removed.map(|id| single(*id, ConfChangeType::RemoveNode)));
        change.set_changes(changes.into());
        tracing::info!(stream = %self.stream, partition = self.partition,
            from = ?self.names_of(&now), to = ?self.names_of(&want), "moving the group's members");
        if let Err(e) = node.propose_conf_change(Vec::new(), change) {
            tracing::warn!(stream = %self.stream, partition = self.partition, error = %e,
                "the membership change was not proposed");
        }
    }

    /// The stream's placement changed (a replica moved): the group's leader changes the
    /// membership to it, and a node joining learns the others' names.
    pub fn set_placement(&self, placement: &[String]) {
        let mut names = self.names.borrow_mut();
        for name in placement {
            let id = node_id(name);
            if name_in(&names, id).is_none() {
                names.push((id, name.clone()));
            }
        }
        *self.placement.borrow_mut() = placement.iter().map(|n| node_id(n)).collect();
        drop(names);
        self.wake.notify();
    }

    /// Sends consensus messages to their nodes.
    fn send(&self, shard: &StreamShard, messages: Vec<Message>) {
        let mut encoded = self.encoded.borrow_mut();
        let names = self.names.borrow();
        for message in messages {
            let Some(to) = name_in(&names, message.to) else {
                continue;
            };
            encoded.clear();
            if message.write_to_vec(&mut encoded).is_err() {
                continue;
            }
            let mut out = BytesMut::with_capacity(encoded.len() + 64);
            ClusterFrame::Group {
                stream: &self.stream,
                partition: self.partition,
                message: &encoded,
            }
            .encode(&mut out);
            shard.cluster_send(to, out.freeze());
        }
    }

    /// Proposes (as leader) or forwards (to a known leader) what was submitted; holds it while
    /// there is no leader, until its deadline.
    fn dispatch(self: &Rc<Self>, shard: &Rc<StreamShard>, node: &mut RawNode<Store>) {
        if self.submitted.borrow().is_empty() {
            return;
        }
        if node.raft.state == StateRole::Leader {
            if self.part.upgrade().is_some_and(|p| p.checks_restoring()) {
                return; // Checked once the checks are read back (`Partition::refresh_checks`).
            }
            let items = self.checked_here(shard);
            let first = node.raft.raft_log.last_index() + 1;
            let term = node.raft.term;
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgPropose);
            message.from = node.raft.id;
            // Every copy stores the time the leader took the batch.
            let stamp = store::stamp(sluice_storage::now_ns());
            message.entries = items
                .iter()
                .map(|(q, _)| Entry {
                    data: q.body.clone(),
                    context: stamp.clone(),
                    ..Entry::default()
                })
                .collect();
            let proposed = node.step(message);
            let mut waiting = self.proposed.borrow_mut();
            for (i, (q, deadline)) in items.into_iter().enumerate() {
                let waiting_for = Waiting {
                    term,
                    done: q.done,
                    bytes: q.body.len(),
                    deadline,
                    back: u64::from(q.back),
                };
                match &proposed {
                    Ok(()) => {
                        waiting.insert(first + i as u64, waiting_for);
                    }
                    Err(e) => {
                        let why = format!("the partition's group refused the publish: {e}");
                        self.finish(shard, waiting_for, Err((ErrorCode::Unavailable, why)));
                    }
                }
            }
            return;
        }
        let leader = node.raft.leader_id;
        let Some(leader) = self.name_of(leader) else {
            return; // No leader yet: wait for one (or the deadline).
        };
        let items: Vec<(Queued, Instant, bool)> = self.submitted.borrow_mut().drain(..).collect();
        let (now, now_ms) = (Instant::now(), links::now_ms());
        for (q, deadline, _) in items {
            let id = shard.next_forward_id();
            let mut out = BytesMut::with_capacity(q.body.len() + 64);
            let left = deadline.saturating_duration_since(now).as_millis() as u64;
            ClusterFrame::Forward {
                stream: &self.stream,
                partition: self.partition,
                id,
                count: q.count,
                deadline_ms: now_ms + left,
                body: &q.body,
            }
            .encode(&mut out);
            shard.cluster_send(&leader, out.freeze());
            self.forwarded
                .borrow_mut()
                .insert(id, Waiting::unsent(q, deadline));
            shard.note_forward(id, self);
        }
    }

    /// What was submitted, ready for this node to propose as leader: what was handed over while
    /// it followed goes through the leader's checks now (in its place in the order).
    fn checked_here(&self, shard: &Rc<StreamShard>) -> Vec<(Queued, Instant)> {
        let all: Vec<(Queued, Instant, bool)> = self.submitted.borrow_mut().drain(..).collect();
        let mut out = Vec::with_capacity(all.len());
        let mut run: Vec<(Queued, Instant)> = Vec::new();
        let check = |run: &mut Vec<(Queued, Instant)>, out: &mut Vec<(Queued, Instant)>| {
            let Some(deadline) = run.first().map(|(_, d)| *d) else {
                return;
            };
            let items: Vec<Queued> = run.drain(..).map(|(q, _)| q).collect();
            let part = self.part.upgrade();
            match part.as_ref().and_then(|p| p.open_log().map(|log| (p, log))) {
                Some((part, log)) => out.extend(
                    part.checked_for_group(shard, &log, items)
                        .into_iter()
                        .map(|q| (q, deadline)),
                ),
                None => {
                    for q in items {
                        let why = "the partition is closing".to_string();
                        let waiting = Waiting::unsent(q, deadline);
                        self.finish(shard, waiting, Err((ErrorCode::Unavailable, why)));
                    }
                }
            }
        };
        for (q, deadline, checked) in all {
            if checked {
                check(&mut run, &mut out);
                out.push((q, deadline));
            } else {
                run.push((q, deadline));
            }
        }
        check(&mut run, &mut out);
        out
    }

    /// Answers the proposals the group committed, and refuses those past their deadline.
    fn settle(&self, shard: &Rc<StreamShard>, store: &Store, commit: u64) {
        let decided: Vec<(u64, Waiting)> = {
            let mut proposed = self.proposed.borrow_mut();
            let rest = proposed.split_off(&(commit + 1));
            std::mem::replace(&mut *proposed, rest)
                .into_iter()
                .collect()
        };
        for (index, waiting) in decided {
            let (term, offset) = {
                let state = store.0.borrow();
                (state.terms.term_of(index), state.terms.end_offset(index))
            };
            let result = if term == waiting.term {
                Ok((offset - 1).saturating_sub(waiting.back))
            } else {
                Err((
                    ErrorCode::Unavailable,
                    "the partition's leader changed before the publish was agreed: it was not \
                     stored"
                        .to_string(),
                ))
            };
            self.finish(shard, waiting, result);
        }
        self.expire(shard);
    }

    /// Refuses what waited past its deadline.
    fn expire(&self, shard: &Rc<StreamShard>) {
        let now = Instant::now();
        let late = |why: &str| Err((ErrorCode::Unavailable, why.to_string()));
        let expired: Vec<(Queued, Instant, bool)> = {
            let mut submitted = self.submitted.borrow_mut();
            let keep = submitted
                .iter()
                .position(|(_, d, _)| *d > now)
                .unwrap_or(submitted.len());
            submitted.drain(..keep).collect()
        };
        for (q, deadline, _) in expired {
            let waiting = Waiting::unsent(q, deadline);
            self.finish(
                shard,
                waiting,
                late("the partition has no leader within reach"),
            );
        }
        let proposed: Vec<Waiting> = {
            let mut map = self.proposed.borrow_mut();
            let keys = late_keys(map.iter(), now);
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        let forwarded: Vec<Waiting> = {
            let mut map = self.forwarded.borrow_mut();
            let keys = late_keys(map.iter(), now);
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        let unsure = |who: &str| format!("{who} within 4 s; it may still be stored");
        for waiting in proposed {
            let why = unsure("the partition's replicas did not agree");
            self.finish(shard, waiting, late(&why));
        }
        for waiting in forwarded {
            let why = unsure("the partition's leader did not answer");
            self.finish(shard, waiting, late(&why));
        }
    }

    /// Refuses everything waiting (the group stopped).
    fn refuse_all(&self, shard: &Rc<StreamShard>, why: &str) {
        let mut all: Vec<Waiting> = Vec::new();
        all.extend(
            self.submitted
                .borrow_mut()
                .drain(..)
                .map(|(q, deadline, _)| Waiting::unsent(q, deadline)),
        );
        all.extend(std::mem::take(&mut *self.proposed.borrow_mut()).into_values());
        all.extend(self.forwarded.borrow_mut().drain().map(|(_, w)| w));
        for waiting in all {
            self.finish(
                shard,
                waiting,
                Err((ErrorCode::Unavailable, why.to_string())),
            );
        }
    }
}

/// The name of node `id` among `names`.
fn name_in(names: &[(u64, String)], id: u64) -> Option<&str> {
    names
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, n)| n.as_str())
}

/// The keys of the publishes past their deadline.
fn late_keys<'a>(waiting: impl Iterator<Item = (&'a u64, &'a Waiting)>, now: Instant) -> Vec<u64> {
    waiting
        .filter(|(_, w)| w.deadline <= now)
        .map(|(&k, _)| k)
        .collect()
}

/// Starts the group of a replicated partition whose log has just opened. `None` (with the reason
/// logged) if it cannot: the partition then refuses publishes.
pub async fn start(
    shard: &Rc<StreamShard>,
    part: &Rc<Partition>,
    log: Rc<PartitionLog>,
) -> Result<Rc<Group>, String> {
    let config = &part.config;
    let me = shard
        .core
        .config
        .cluster
        .as_ref()
        .map(|c| c.name.clone())
        .ok_or("a replicated stream on a node that is not in a cluster")?;
    if !config.placement.contains(&me) {
        return Err(format!("this node ({me}) holds no copy of the stream"));
    }
    let dir = part.dir().to_path_buf();
    let mut saved = store::load(&dir)?;
    if let Some(offset) = saved.restart_at {
        tracing::info!(stream = %config.name, partition = part.index, offset,
            "finishing a restart of the log from the leader's snapshot");
        log.restart_at(offset).await.map_err(|e| e.to_string())?;
        saved.restart_at = None;
        store::save(&dir, saved.clone()).await?;
    }
    if saved.terms == terms::Terms::default() && log.durable_offset() > 0 {
        return Err("the log holds records but no consensus terms".into());
    }
    let names: Vec<(u64, String)> = config
        .placement
        .iter()
        .map(|n| (node_id(n), n.clone()))
        .collect();
    let voters: Vec<u64> = names.iter().map(|(id, _)| *id).collect();
    // A group in the middle of a membership change may have a member the placement no longer
    // names: every node of the cluster is known by name.
    let mut names = names;
    let members = shard.cluster.get().and_then(|c| c.members());
    for name in members.unwrap_or_default() {
        let id = node_id(&name);
        if name_in(&names, id).is_none() {
            names.push((id, name));
        }
    }
    let conf = saved.conf.clone().map_or_else(
        || ConfState::from((voters.clone(), vec![])),
        ConfState::from,
    );
    let store = Store::new(&saved, conf, log.first_offset(), log.durable_offset());
    let (first_index, last_index) = {
        let state = store.0.borrow();
        (state.first_index(), state.last_index)
    };
    // Entries before the log's first one were agreed (retention keeps what is not), even if the
    // commit saved last is older.
    let applied = saved.commit.max(first_index - 1).min(last_index);
    {
        let mut state = store.0.borrow_mut();
        state.hard.commit = state.hard.commit.max(applied);
    }
    // Everything after the applied entry must be in memory (the library hands it back as
    // committed): read it back from the log.
    let mut next = applied + 1;
    while next <= last_index {
        let entries = read_entries(&log, &store, next, last_index + 1).await?;
        let Some(last) = entries.last() else {
            return Err(format!("entries from {next} are missing from the log"));
        };
        next = last.index + 1;
        let mut state = store.0.borrow_mut();
        if state.tail.is_empty() {
            // `remember` extends the tail from the entry before.
            state.last_index = entries[0].index - 1;
        }
        state.remember(entries);
    }
    store.0.borrow_mut().last_index = last_index;
    log.set_visible_end(store.0.borrow().terms.end_offset(applied));
    let raft_config = Config {
        id: node_id(&me),
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        max_size_per_msg: MESSAGE_BYTES_MAX,
        max_inflight_msgs: INFLIGHT_MESSAGES_MAX,
        check_quorum: true,
        pre_vote: true,
        applied,
        ..Config::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let node = RawNode::new(&raft_config, store.clone(), &logger).map_err(|e| e.to_string())?;
    let group = Rc::new(Group {
        stream: Arc::from(config.name.as_str()),
        partition: part.index,
        dir,
        log,
        part: Rc::downgrade(part),
        names: RefCell::new(names),
        members: RefCell::new(store.0.borrow().conf.voters.clone()),
        placement: RefCell::new(voters),
        inbox: RefCell::default(),
        wake: Notify::default(),
        submitted: RefCell::default(),
        proposed: RefCell::default(),
        forwarded: RefCell::default(),
        status: RefCell::new(GroupStatus {
            role: "follower",
            ..GroupStatus::default()
        }),
        stopped: Cell::new(false),
        left: Cell::new(false),
        encoded: RefCell::new(Vec::new()),
    });
    glommio::spawn_local(drive(shard.clone(), group.clone(), node, store, saved)).detach();
    Ok(group)
}

/// A replicated partition's group as this node sees it, for `sluice cluster info` and `/metrics`.
pub fn group_info(part: &Partition) -> Option<crate::api::GroupInfo> {
    let group = part.group()?;
    let status = group.status();
    Some(crate::api::GroupInfo {
        stream: part.config.name.clone(),
        partition: part.index,
        leader: group.name_of(status.leader),
        role: status.role.to_string(),
        term: status.term,
        commit: status.commit,
        last_index: status.last_index,
        voters: {
            let members = group.members.borrow().clone();
            group.names_of(&members)
        },
    })
}
