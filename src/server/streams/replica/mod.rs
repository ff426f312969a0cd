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
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{Config, RawNode, StateRole};
use sluice_protocol::cluster::ClusterFrame;
use sluice_protocol::ErrorCode;
use sluice_storage::wake::Notify;
use sluice_storage::PartitionLog;

use self::store::{Cached, Saved, Store, FETCH_BYTES_MAX};
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
    names: Vec<(u64, String)>,
    inbox: RefCell<VecDeque<Message>>,
    wake: Notify,
    /// Publishes handed over by the partition, not yet proposed or forwarded.
    submitted: RefCell<VecDeque<(Queued, Instant)>>,
    /// Publishes proposed here as leader, by index.
    proposed: RefCell<BTreeMap<u64, Waiting>>,
    /// Publishes forwarded to the leader, by forward id.
    forwarded: RefCell<HashMap<u64, Waiting>>,
    status: RefCell<GroupStatus>,
    stopped: Cell<bool>,
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
    pub(super) fn submit(&self, items: Vec<Queued>) {
        let deadline = Instant::now() + DECIDE_TIMEOUT;
        self.submitted
            .borrow_mut()
            .extend(items.into_iter().map(|q| (q, deadline)));
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
        }
        if let Some(done) = waiting.done {
            resolve(
                shard,
                done,
                AckOutcome::plain(self.stream.clone(), self.partition, result),
            );
        }
    }

    fn name_of(&self, id: u64) -> Option<&str> {
        self.names
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, n)| n.as_str())
    }

    /// Sends consensus messages to their nodes.
    fn send(&self, shard: &StreamShard, messages: Vec<Message>) {
        let mut encoded = self.encoded.borrow_mut();
        for message in messages {
            let Some(to) = self.name_of(message.to) else {
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
            let items: Vec<(Queued, Instant)> = self.submitted.borrow_mut().drain(..).collect();
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
        let Some(leader) = self.name_of(leader).map(str::to_string) else {
            return; // No leader yet: wait for one (or the deadline).
        };
        let items: Vec<(Queued, Instant)> = self.submitted.borrow_mut().drain(..).collect();
        for (q, deadline) in items {
            let id = shard.next_forward_id();
            let mut out = BytesMut::with_capacity(q.body.len() + 64);
            ClusterFrame::Forward {
                stream: &self.stream,
                partition: self.partition,
                id,
                count: q.count,
                body: &q.body,
            }
            .encode(&mut out);
            shard.cluster_send(&leader, out.freeze());
            self.forwarded.borrow_mut().insert(
                id,
                Waiting {
                    term: 0,
                    done: q.done,
                    bytes: q.body.len(),
                    deadline,
                },
            );
            shard.note_forward(id, self);
        }
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
                Ok(offset - 1)
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
        let expired: Vec<(Queued, Instant)> = {
            let mut submitted = self.submitted.borrow_mut();
            let keep = submitted
                .iter()
                .position(|(_, d)| *d > now)
                .unwrap_or(submitted.len());
            submitted.drain(..keep).collect()
        };
        for (q, deadline) in expired {
            let waiting = Waiting {
                term: 0,
                done: q.done,
                bytes: q.body.len(),
                deadline,
            };
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
                .map(|(q, deadline)| Waiting {
                    term: 0,
                    done: q.done,
                    bytes: q.body.len(),
                    deadline,
                }),
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
    let saved = store::load(&dir)?;
    if saved.terms == terms::Terms::default() && log.durable_offset() > 0 {
        return Err("the log holds records but no consensus terms".into());
    }
    let names: Vec<(u64, String)> = config
        .placement
        .iter()
        .map(|n| (node_id(n), n.clone()))
        .collect();
    let voters = names.iter().map(|(id, _)| *id).collect();
    let store = Store::new(&saved, voters, log.first_offset(), log.durable_offset());
    let last_index = store.0.borrow().last_index;
    let applied = saved.commit.min(last_index);
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
        names,
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
        encoded: RefCell::new(Vec::new()),
    });
    glommio::spawn_local(drive(shard.clone(), group.clone(), node, store, saved)).detach();
    Ok(group)
}

/// Reads entries `[low, high)` back from the log (about `FETCH_BYTES_MAX` of them).
async fn read_entries(
    log: &PartitionLog,
    store: &Store,
    low: u64,
    high: u64,
) -> Result<Vec<Cached>, String> {
    let (from, terms) = {
        let state = store.0.borrow();
        (state.terms.end_offset(low - 1), state.terms.clone())
    };
    let records = if from < log.durable_offset() {
        log.read_durable(from, FETCH_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    let mut records = records.into_iter().peekable();
    let mut out = Vec::new();
    for index in low..high {
        let term = terms.term_of(index);
        if terms.is_start(index) {
            out.push(Cached {
                index,
                term,
                data: Bytes::new(),
                stamp: Bytes::new(),
            });
            continue;
        }
        let offset = terms.end_offset(index) - 1;
        while records.peek().is_some_and(|r| r.offset < offset) {
            records.next();
        }
        match records.next() {
            Some(record) if record.offset == offset => out.push(Cached {
                index,
                term,
                data: record.body,
                stamp: store::stamp(record.timestamp_ns),
            }),
            _ => break,
        }
    }
    Ok(out)
}

/// Runs a group until it stops: ticks, steps what arrives, proposes or forwards what is
/// submitted, and handles what the library has ready.
async fn drive(
    shard: Rc<StreamShard>,
    group: Rc<Group>,
    mut node: RawNode<Store>,
    store: Store,
    mut saved: Saved,
) {
    let mut next_tick = Instant::now() + TICK;
    let mut commit_saved_at = Instant::now();
    let mut commit_seen = 0;
    loop {
        if group.stopped.get() || shard.core.stopping.is_set() {
            break;
        }
        let until_tick = next_tick.saturating_duration_since(Instant::now());
        or(
            or(group.wake.wait(), glommio::timer::sleep(until_tick)),
            shard.core.stopping.wait(),
        )
        .await;
        loop {
            let message = group.inbox.borrow_mut().pop_front();
            let Some(message) = message else { break };
            let _ = node.step(message);
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick = Instant::now() + TICK;
            group.expire(&shard);
        }
        group.dispatch(&shard, &mut node);
        // Retention may have removed old segments since.
        store.0.borrow_mut().first_offset = group.log.first_offset();
        if let Err(e) = handle_ready(&shard, &group, &mut node, &store, &mut saved).await {
            tracing::error!(stream = %group.stream, partition = group.partition, error = %e,
                "a replicated partition's log failed; its group stops");
            break;
        }
        fetch(&group, &mut node, &store).await;
        if node.has_ready() {
            // Fetched entries, or what advancing made ready: handled at once, not at the tick.
            group.wake.notify();
        }
        let commit = node.raft.raft_log.committed;
        if commit != commit_seen {
            commit_seen = commit;
            let end = store.0.borrow().terms.end_offset(commit);
            group.log.set_visible_end(end);
            if let Some(part) = group.part.upgrade() {
                part.notify_appended();
            }
            if commit_saved_at.elapsed() >= COMMIT_SAVE_INTERVAL {
                saved.commit = commit;
                if save(&group, &store, &mut saved).await.is_ok() {
                    commit_saved_at = Instant::now();
                }
            }
        }
        group.settle(&shard, &store, commit);
        store.0.borrow_mut().trim(node.raft.raft_log.applied);
        let was_leader = group.is_leader();
        *group.status.borrow_mut() = GroupStatus {
            leader: node.raft.leader_id,
            role: match node.raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate | StateRole::PreCandidate => "candidate",
            },
            term: node.raft.term,
            commit,
            last_index: store.0.borrow().last_index,
        };
        if group.is_leader() && !was_leader {
            if let Some(part) = group.part.upgrade() {
                part.refresh_checks();
            }
        }
    }
    group.stopped.set(true);
    group.refuse_all(&shard, "the partition's group stopped");
}

/// Handles one `Ready`: sends what may go at once, appends the new entries to the log and makes
/// the vote durable, then sends what had to wait for that, and advances.
async fn handle_ready(
    shard: &Rc<StreamShard>,
    group: &Group,
    node: &mut RawNode<Store>,
    store: &Store,
    saved: &mut Saved,
) -> Result<(), String> {
    if !node.has_ready() {
        return Ok(());
    }
    let mut ready = node.ready();
    group.send(shard, ready.take_messages());
    if !ready.snapshot().is_empty() {
        return Err("a snapshot arrived, and snapshots are not supported".into());
    }
    let _ = ready.take_committed_entries();
    append(group, store, saved, ready.take_entries()).await?;
    if let Some(hard) = ready.hs() {
        store.0.borrow_mut().hard = hard.clone();
        if hard.term != saved.term || hard.vote != saved.vote {
            saved.term = hard.term;
            saved.vote = hard.vote;
            saved.commit = hard.commit;
            save(group, store, saved).await?;
        }
    }
    group.send(shard, ready.take_persisted_messages());
    let mut light = node.advance(ready);
    group.send(shard, light.take_messages());
    let _ = light.take_committed_entries();
    node.advance_apply();
    Ok(())
}

/// Writes the group's state file durably, with the term table as it is now.
async fn save(group: &Group, store: &Store, saved: &mut Saved) -> Result<(), String> {
    saved.terms = store.0.borrow().terms.clone();
    store::save(&group.dir, saved.clone()).await
}

/// Appends entries to the log, cutting a conflicting tail first; a changed term table is made
/// durable before the records it describes are written.
async fn append(
    group: &Group,
    store: &Store,
    saved: &mut Saved,
    entries: Vec<Entry>,
) -> Result<(), String> {
    let Some(first) = entries.first().map(|e| e.index) else {
        return Ok(());
    };
    let mut changed = false;
    let cut = {
        let state = store.0.borrow();
        (first <= state.last_index).then(|| state.terms.end_offset(first - 1))
    };
    if let Some(offset) = cut {
        tracing::info!(stream = %group.stream, partition = group.partition, from_entry = first,
            from_offset = offset, "cutting a conflicting tail: entries not agreed on");
        group
            .log
            .truncate_from(offset)
            .await
            .map_err(|e| e.to_string())?;
        store.0.borrow_mut().forget_from(first);
        changed = true;
    }
    // Records with the same stamp go in one append, stamped with it.
    let mut runs: Vec<(Option<u64>, Vec<Bytes>)> = Vec::new();
    let mut cached = Vec::with_capacity(entries.len());
    let mut first_offset = None;
    {
        let mut state = store.0.borrow_mut();
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal {
                return Err(format!("entry {} is a membership change", entry.index));
            }
            let offset = state.terms.end_offset(entry.index - 1);
            if entry.term != state.terms.last_term() {
                if !entry.data.is_empty() {
                    return Err(format!(
                        "entry {} starts a term and carries data",
                        entry.index
                    ));
                }
                state.terms.push(TermStart {
                    term: entry.term,
                    index: entry.index,
                    offset,
                });
                changed = true;
            } else if entry.data.is_empty() {
                return Err(format!("entry {} is empty", entry.index));
            } else {
                first_offset.get_or_insert(offset);
                let stamp = store::stamped(&entry.context);
                match runs.last_mut() {
                    Some((at, bodies)) if *at == stamp => bodies.push(entry.data.clone()),
                    _ => runs.push((stamp, vec![entry.data.clone()])),
                }
            }
            cached.push(Cached {
                index: entry.index,
                term: entry.term,
                data: entry.data,
                stamp: entry.context,
            });
        }
    }
    if changed {
        save(group, store, saved).await?;
    }
    if let Some(expected) = first_offset {
        let mut tickets = Vec::with_capacity(runs.len());
        for (stamp, bodies) in &runs {
            let ticket = match stamp {
                Some(at) => group.log.append_stamped(bodies, *at),
                None => group.log.append_ordered(bodies),
            };
            tickets.push(ticket.map_err(|e| e.to_string())?);
        }
        let mut at = None;
        for ticket in tickets {
            let first = ticket.durable().await.map_err(|e| e.to_string())?;
            at.get_or_insert(first);
        }
        let at = at.unwrap_or(expected);
        if at != expected {
            return Err(format!(
                "records went to offset {at}, where the group expected {expected}"
            ));
        }
    }
    store.0.borrow_mut().remember(cached);
    Ok(())
}

/// Reads back from the log the entries the library asked for and could not have at once.
async fn fetch(group: &Group, node: &mut RawNode<Store>, store: &Store) {
    let fetches = std::mem::take(&mut store.0.borrow_mut().fetches);
    for request in fetches {
        match read_entries(&group.log, store, request.low, request.high).await {
            Ok(entries) if !entries.is_empty() => {
                store.0.borrow_mut().fetched = entries;
                node.on_entries_fetched(request.context);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %group.stream, partition = group.partition,
                error = %e, "reading entries back for a follower failed"),
        }
    }
}

/// A replicated partition's group as this node sees it, for `sluice cluster info` and `/metrics`.
pub fn group_info(part: &Partition) -> Option<crate::api::GroupInfo> {
    let group = part.group()?;
    let status = group.status();
    Some(crate::api::GroupInfo {
        stream: part.config.name.clone(),
        partition: part.index,
        leader: group.name_of(status.leader).map(str::to_string),
        role: status.role.to_string(),
        term: status.term,
        commit: status.commit,
        last_index: status.last_index,
    })
}

/// The shard owning a stream's partition.
fn owner(shard: &StreamShard, stream: &str, partition: u32) -> ShardId {
    ShardId(shard_for(stream, partition, shard.core.shards as u32))
}

/// On shard 0: hands what the links bring for the partitions' groups to the shards owning them,
/// until the shard stops.
pub async fn route_from_links(shard: Rc<StreamShard>, cluster: Rc<Cluster>) {
    loop {
        let next = or(async { Some(cluster.next_group_item().await) }, async {
            shard.core.stopping.wait().await;
            None
        })
        .await;
        let Some(item) = next else { return };
        let to = match &item {
            GroupIn::Group {
                stream, partition, ..
            }
            | GroupIn::Forward {
                stream, partition, ..
            }
            | GroupIn::Consumer {
                stream, partition, ..
            } => owner(&shard, stream, *partition),
            GroupIn::Forwarded { id, .. } => ShardId((id >> FORWARD_SHARD_SHIFT) as u32),
        };
        if to == shard.core.id {
            receive(&shard, item);
            super::flush_appends(&shard);
        } else {
            shard.push_to(to, StreamItem::FromPeer(item));
        }
    }
}

/// Where a forward id keeps the shard that forwarded it.
pub const FORWARD_SHARD_SHIFT: u32 = 48;

/// On the shard owning the partition: a frame for one of its groups.
pub fn receive(shard: &Rc<StreamShard>, item: GroupIn) {
    match item {
        GroupIn::Group {
            stream,
            partition,
            message,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            let Some(part) = part else {
                return; // A stream this node does not know (yet): the sender retries.
            };
            match Message::parse_from_bytes(&message) {
                Ok(message) => match part.group() {
                    Some(group) => group.step(message),
                    None => part.open(), // Its group starts with the log; the sender retries.
                },
                Err(e) => tracing::warn!(%stream, partition, error = %e,
                    "unreadable consensus message"),
            }
        }
        GroupIn::Forward {
            from,
            stream,
            partition,
            id,
            count,
            body,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            let Some(part) = part else {
                let reply = forwarded_frame(
                    id,
                    Err((ErrorCode::NotFound.as_u16(), &format!("no stream {stream}"))),
                );
                shard.cluster_send(&from, reply);
                return;
            };
            part.enqueue_span(shard, body, count, Some(Done::Peer { node: from, id }));
        }
        GroupIn::Forwarded { id, result } => {
            if let Some(group) = shard.take_forward(id) {
                group.forward_answered(shard, id, result);
            }
        }
        GroupIn::Consumer {
            stream,
            partition,
            consumer,
            state,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            if let Some(part) = part {
                part.keep_shipped_state(consumer, state);
            }
        }
    }
}

/// Sends a consumer's state (or its deletion, with `state` empty) to the other nodes holding a
/// copy of the partition: a client that reconnects to one of them finds the consumer there,
/// where it left it.
pub fn ship_consumer_state(
    shard: &StreamShard,
    config: &StreamConfig,
    partition: u32,
    consumer: &str,
    state: &[u8],
) {
    let Some(me) = shard.core.config.cluster.as_ref().map(|c| c.name.as_str()) else {
        return;
    };
    let mut out = BytesMut::with_capacity(state.len() + 64);
    ClusterFrame::Consumer {
        stream: &config.name,
        partition,
        consumer,
        state,
    }
    .encode(&mut out);
    let frame = out.freeze();
    for node in config.placement.iter().filter(|n| n.as_str() != me) {
        shard.cluster_send(node, frame.clone());
    }
}

/// The frame answering the forwarded publish `id`.
pub fn forwarded_frame(id: u64, result: Result<u64, (u16, &str)>) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    ClusterFrame::Forwarded { id, result }.encode(&mut out);
    out.freeze()
}
