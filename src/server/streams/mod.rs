//! Persistent streams on a shard.
//!
//! Every shard keeps a copy of every stream's configuration (sent by shard 0, which keeps the
//! registry) and matches publishes against their subjects. A captured publish goes to the partition
//! its subject hashes to, on the shard that owns that partition, where it is appended to the
//! partition's log exactly as it arrived; the ack goes back to the publishing connection, in order.

mod api;
mod attach;
mod capture;
mod checks;
mod cluster_view;
mod consumer;
mod consumer_calls;
mod credit;
mod dead_letter;
mod deleted;
pub mod groups;
mod host;
mod items;
pub mod kafka;
pub mod metrics;
mod overlap;
mod partition;
mod registry;
pub mod replica;
mod state;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::jetstream::json::{ApiError, PubAckError};
use sluice_protocol::jetstream::seq::seq_of;
use sluice_protocol::op::{Op, PubAck};
use sluice_protocol::sublist::Sublist;
use sluice_protocol::ErrorCode;

pub use api::{
    answer_call, apply_decided, ask_shard_metrics, call_api, handle_api_here, publish_registry,
    reply_frame, send_api, CallSlot,
};
pub use attach::{attach_consumer, consumer_join, Joins};
pub use capture::{
    ack_frame, append_from_peer, capture, capture_with_reply, captures, refuse_ack, resolve, AckTo,
    ReplyTo,
};
pub use cluster_view::{share_client_addrs, share_group_leader};
pub use consumer::{Delivered, Member};
pub use consumer_calls::{
    consumer_ack, consumer_ack_kept, consumer_grant, consumer_pull, member_gone,
};
pub use credit::{
    arrive as consumer_arrive, returned as consumer_returned, take_back as consumer_take_back,
    DeliverySink,
};
pub use dead_letter::dead_letter;
use dead_letter::ensure_dead_letter_stream;
pub use host::{set_host, ConsumerHost};
pub use items::{AckOutcome, CallItem, Item, PartitionReply, Peer, StreamItem};
pub use partition::Partition;
pub use registry::Registry;

use crate::api::{check_stream_name, partition_for, shard_for, StreamConfig};
use crate::server::core::shard::Shard;
use crate::server::ShardId;

/// A connection of this shard that waits for its stored publishes' acks, in the order of its
/// publishes (the session's connection).
pub trait AckWaiter {
    /// The connection's id on this shard.
    fn id(&self) -> u64;
    /// Reserves the next ack number.
    fn next_ack(&self) -> u64;
    /// Fills ack `seq`, and writes every ack that is now next in line.
    fn complete_ack(&self, seq: u64, frame: Bytes);
}

/// Who waits for a stored publish's ack.
pub enum Done {
    /// A NATS publisher, answered with a JetStream-style JSON ack on its reply subject.
    Reply { subject: String },
    /// A connection on this shard, and its ack number.
    Local { conn: Rc<dyn AckWaiter>, seq: u64 },
    /// A connection on another shard.
    Remote { shard: ShardId, conn: u64, seq: u64 },
    /// A question the broker asked itself (a dead letter's store), registered with
    /// `StreamShard::register_call` on `shard`.
    Call { shard: ShardId, call: u64 },
    /// As `Call`, answered as soon as the append has its offset, before it is durable (a Kafka
    /// produce with acks=1).
    Ordered { shard: ShardId, call: u64 },
    /// A publish another node forwarded to this one, the partition's leader: answered over the
    /// cluster links. Past `deadline` its publisher no longer waits: it is not stored then.
    Peer {
        node: String,
        id: u64,
        deadline: std::time::Instant,
    },
}

/// The streams' state on one shard, beside the core shard it routes through: the streams' view,
/// the registry (shard 0), the partitions with queued appends and the questions asked of other
/// shards. Owned by the shard's executor like the core shard; every streams function takes it.
pub struct StreamShard {
    pub core: Rc<Shard>,
    /// On shard 0 of a node in a cluster: its links to the other nodes.
    pub cluster: std::cell::OnceCell<Rc<crate::server::cluster::Cluster>>,
    /// One queue per shard (its own slot unused), shared with core: items keep their order.
    peers: Vec<Rc<dyn Peer>>,
    /// This shard's view of the streams, and the partitions it owns.
    pub streams: RefCell<Streams>,
    /// The stream registry: shard 0 only.
    pub registry: RefCell<Option<Registry>>,
    /// Owned partitions with appends queued since the last flush.
    pub dirty_partitions: RefCell<Vec<Rc<Partition>>>,
    calls: RefCell<HashMap<u64, Rc<CallSlot>>>,
    next_call: Cell<u64>,
    /// The port that delivers the consumers the broker hosts (see `host`).
    host: RefCell<Option<Rc<dyn ConsumerHost>>>,
    /// Passes over the partitions with saved consumers still running (see `apply_snapshot`).
    pub consumer_pass: Cell<u32>,
    /// Whether shard 0's list of streams has arrived (and been applied) since the start.
    pub streams_known: Cell<bool>,
    /// The partitions whose logs were opened, oldest first; entries of logs closed since are
    /// dropped as they come up. Past `open_logs_max`, idle ones are closed (see
    /// `close_idle_logs`).
    opened_logs: RefCell<VecDeque<Weak<Partition>>>,
    /// Partitions being removed, by directory: a partition of the same directory (its stream
    /// added again at once) opens its log only once the removal is done.
    removing: RefCell<HashMap<std::path::PathBuf, Rc<Partition>>>,
    /// Partitions owned here that members joined and that may still have some (or deliveries
    /// they hold), by address: a connection that closes is looked for in these only, not in every
    /// partition (a shard may own a hundred thousand).
    joined: RefCell<HashMap<usize, Weak<Partition>>>,
    open_logs_max: usize,
    /// The Kafka consumer groups this shard coordinates.
    pub groups: groups::Coordinator,
    /// Publishes this shard forwarded to their partition's leader on another node, by id: the
    /// group waiting for each answer.
    forwards: RefCell<HashMap<u64, Weak<replica::Group>>>,
    next_forward: Cell<u64>,
    /// In a cluster: where Kafka clients reach the nodes that are up now, by node name (from
    /// shard 0).
    pub kafka_nodes: RefCell<Vec<(String, String)>>,
    /// In a cluster: the node leading each replicated partition's group and its term, by stream
    /// and partition, as this node last heard (from the shard that owns the partition).
    pub group_leaders: RefCell<HashMap<Arc<str>, GroupLeaders>>,
}

/// A replicated stream's partitions' leaders and their terms, by partition.
pub type GroupLeaders = BTreeMap<u32, (String, u64)>;

/// Files an open partition log may hold: its active segment, and an index while it is written.
const FILES_PER_LOG: usize = 2;

/// Open partition logs a shard keeps however low the open-file limit is.
const OPEN_LOGS_MIN: usize = 64;

/// How many partition logs a shard keeps open: half the process's open-file limit, shared by the
/// shards, leaves the other half for connections, consumer states and the registry. A hundred
/// thousand streams cannot each hold a file under a limit of tens of thousands; the idle ones are
/// closed and open again on their next use.
fn open_logs_max(shards: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) only writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 24);
    (soft / 2 / FILES_PER_LOG / shards.max(1)).max(OPEN_LOGS_MIN)
}

/// Closes idle partition logs, oldest opened first, while more than the bound are open; looks at
/// no more than `tries` of them (an open looks at a few, the periodic round at all).
pub fn close_idle_logs(shard: &StreamShard, tries: usize) {
    let mut queue = shard.opened_logs.borrow_mut();
    let mut tried = 0;
    while queue.len() > shard.open_logs_max && tried < tries {
        tried += 1;
        let Some(entry) = queue.pop_front() else {
            break;
        };
        let Some(part) = entry.upgrade() else {
            continue;
        };
        if !part.holds_log() || part.close_if_idle() {
            continue;
        }
        queue.push_back(entry);
    }
}

/// Closes idle partition logs until no more than the bound are open, if enough are idle.
pub fn close_idle_logs_now(shard: &StreamShard) {
    let tries = shard.opened_logs.borrow().len();
    close_idle_logs(shard, tries);
}

impl StreamShard {
    /// Notes that a member joined `part`, so that its connection's end is looked for there.
    pub fn joined(&self, part: &Rc<Partition>) {
        self.joined
            .borrow_mut()
            .insert(Rc::as_ptr(part) as usize, Rc::downgrade(part));
    }

    /// The streams' state of a shard with no streams yet.
    pub fn new(core: Rc<Shard>, peers: Vec<Rc<dyn Peer>>) -> StreamShard {
        let open_logs_max = open_logs_max(core.shards);
        let groups = groups::Coordinator::new(&core.config.data_dir);
        StreamShard {
            core,
            cluster: std::cell::OnceCell::new(),
            peers,
            streams: RefCell::new(Streams::default()),
            registry: RefCell::new(None),
            dirty_partitions: RefCell::new(Vec::new()),
            calls: RefCell::new(HashMap::new()),
            next_call: Cell::new(1),
            host: RefCell::new(None),
            consumer_pass: Cell::new(0),
            streams_known: Cell::new(false),
            opened_logs: RefCell::new(VecDeque::new()),
            removing: RefCell::new(HashMap::new()),
            joined: RefCell::new(HashMap::new()),
            open_logs_max,
            groups,
            forwards: RefCell::new(HashMap::new()),
            kafka_nodes: RefCell::default(),
            group_leaders: RefCell::default(),
            next_forward: Cell::new(1),
        }
    }

    /// Sends an encoded cluster frame to the node of that name, through shard 0's links.
    pub fn cluster_send(&self, to: &str, frame: Bytes) {
        match self.cluster.get() {
            Some(cluster) => {
                cluster.send_encoded(to, frame);
            }
            None if self.core.id.0 != 0 => self.push_to(
                ShardId(0),
                StreamItem::ToPeer {
                    node: to.to_string(),
                    frame,
                },
            ),
            None => {} // Not in a cluster: nobody to send to.
        }
    }

    /// A new id for a forwarded publish: unique on this node, and naming this shard, to which
    /// the answer returns.
    pub fn next_forward_id(&self) -> u64 {
        let n = self.next_forward.get();
        self.next_forward.set(n + 1);
        (u64::from(self.core.id.0) << replica::FORWARD_SHARD_SHIFT)
            | (n & ((1 << replica::FORWARD_SHARD_SHIFT) - 1))
    }

    /// Remembers which group waits for the answer to forward `id`.
    pub fn note_forward(&self, id: u64, group: &Rc<replica::Group>) {
        let mut forwards = self.forwards.borrow_mut();
        forwards.retain(|_, g| g.strong_count() > 0);
        forwards.insert(id, Rc::downgrade(group));
    }

    /// The group waiting for the answer to forward `id`.
    pub fn take_forward(&self, id: u64) -> Option<Rc<replica::Group>> {
        self.forwards.borrow_mut().remove(&id)?.upgrade()
    }

    /// Queues an item for another shard.
    pub fn push_to(&self, to: ShardId, item: impl Into<Item>) {
        debug_assert_ne!(to, self.core.id, "a shard does not send to itself");
        self.peers[to.0 as usize].push(item.into());
    }

    /// Queues an item for every other shard.
    pub fn broadcast<I: Into<Item>>(&self, item: impl Fn() -> I) {
        let own = self.core.id.0 as usize;
        for (_, peer) in self.peers.iter().enumerate().filter(|(i, _)| *i != own) {
            peer.push(item().into());
        }
    }

    /// Registers a question to another shard; its answer fills `slot`.
    pub fn register_call(&self, slot: Rc<CallSlot>) -> u64 {
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        self.calls.borrow_mut().insert(id, slot);
        id
    }

    /// Fills the slot of a question this shard asked (an answer from a peer, or from itself).
    pub fn answer_call(&self, call: u64, reply: PartitionReply) {
        let slot = self.calls.borrow_mut().remove(&call);
        if let Some(slot) = slot {
            *slot.reply.borrow_mut() = Some(reply);
            slot.done.set();
        }
    }

    /// Waits up to `within` for the answer to a question registered as `call`, then forgets the
    /// question; `None` if no answer came in time.
    pub async fn await_call(
        &self,
        slot: &CallSlot,
        call: u64,
        within: Duration,
    ) -> Option<PartitionReply> {
        let waited = glommio::timer::timeout(within, async {
            slot.done.wait().await;
            Ok(())
        })
        .await;
        self.forget_call(call);
        waited.ok()?;
        slot.reply.borrow_mut().take()
    }

    /// Forgets a question (answered or timed out).
    pub fn forget_call(&self, id: u64) {
        self.calls.borrow_mut().remove(&id);
    }
}

/// A shard's view of the streams.
#[derive(Default)]
pub struct Streams {
    configs: HashMap<String, Arc<StreamConfig>>,
    capture: Sublist<Arc<StreamConfig>>,
    /// The partitions this shard owns, by stream name and index.
    owned: OwnedPartitions,
    /// The consumer members whose connections this shard holds, and their credit.
    homes: credit::Homes,
}

impl Streams {
    /// A stream's configuration, by name.
    pub fn config(&self, name: &str) -> Option<Arc<StreamConfig>> {
        self.configs.get(name).cloned()
    }

    /// Every stream's configuration, by name.
    pub fn all(&self) -> Vec<StreamConfig> {
        let mut all: Vec<StreamConfig> = self.configs.values().map(|c| (**c).clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The stream that captures `subject`, if any.
    pub fn capturing(&self, subject: &str) -> Option<Arc<StreamConfig>> {
        if self.capture.is_empty() {
            return None; // No streams: core pub/sub pays nothing for them.
        }
        let mut found = None;
        self.capture
            .for_each_match(subject, |s| found = Some(s.clone()));
        found
    }

    /// An owned partition.
    pub fn owned(&self, name: &str, partition: u32) -> Option<Rc<Partition>> {
        self.owned.get(name, partition)
    }
}

/// The partitions a shard owns, by stream name and index; looked up per stored publish and per ack
/// without building a key.
#[derive(Default)]
struct OwnedPartitions {
    streams: HashMap<String, HashMap<u32, Rc<Partition>>>,
}

impl OwnedPartitions {
    fn get(&self, stream: &str, partition: u32) -> Option<Rc<Partition>> {
        self.streams.get(stream)?.get(&partition).cloned()
    }

    fn insert(&mut self, stream: &str, partition: u32, part: Rc<Partition>) {
        self.streams
            .entry(stream.to_string())
            .or_default()
            .insert(partition, part);
    }

    fn all(&self) -> Vec<Rc<Partition>> {
        self.streams
            .values()
            .flat_map(|parts| parts.values().cloned())
            .collect()
    }

    fn take(&mut self, stream: &str, partition: u32) -> Option<Rc<Partition>> {
        self.streams.get_mut(stream)?.remove(&partition)
    }

    /// Drops the streams `keep` refuses; returns their partitions.
    fn retain_streams(&mut self, keep: impl Fn(&str) -> bool) -> Vec<Rc<Partition>> {
        let mut removed = Vec::new();
        self.streams.retain(|name, parts| {
            let kept = keep(name);
            if !kept {
                removed.extend(parts.values().cloned());
            }
            kept
        });
        removed
    }
}

/// The owned partition; its log is opened (in the background) on first use.
pub fn ensure_partition(
    shard: &Rc<StreamShard>,
    stream: &Arc<StreamConfig>,
    index: u32,
) -> Rc<Partition> {
    if let Some(part) = shard.streams.borrow().owned.get(&stream.name, index) {
        return part;
    }
    let part = Partition::new(shard, stream.clone(), index);
    shard
        .streams
        .borrow_mut()
        .owned
        .insert(&stream.name, index, part.clone());
    part
}

/// Appends what connections and peers queued since the last call, one append per partition.
pub fn flush_appends(shard: &Rc<StreamShard>) {
    let dirty = std::mem::take(&mut *shard.dirty_partitions.borrow_mut());
    for part in dirty {
        part.flush(shard);
    }
}

/// Waits until everything this shard's partitions stored is durable (or failed).
pub async fn wait_synced(shard: &StreamShard) {
    let parts: Vec<Rc<Partition>> = shard.streams.borrow().owned.all();
    for part in parts {
        part.wait_synced().await;
    }
}

/// Applies shard 0's list of streams: new capture rules, partitions to open here, removed streams'
/// partitions to close and delete.
pub fn apply_snapshot(shard: &Rc<StreamShard>, streams: &[StreamConfig]) {
    let shards = shard.core.shards as u32;
    let removed: Vec<Rc<Partition>> = {
        let mut view = shard.streams.borrow_mut();
        view.configs = streams
            .iter()
            .map(|s| (s.name.clone(), Arc::new(s.clone())))
            .collect();
        let mut capture = Sublist::new();
        for config in view.configs.values() {
            for pattern in &config.subjects {
                capture.insert(pattern, config.clone());
            }
        }
        view.capture = capture;
        let view = &mut *view;
        let configs = &view.configs;
        view.owned.retain_streams(|name| configs.contains_key(name))
    };
    for part in removed {
        part.remove(shard);
    }
    let configs: Vec<Arc<StreamConfig>> =
        shard.streams.borrow().configs.values().cloned().collect();
    for config in configs {
        for index in 0..config.partitions {
            if shard_for(&config.name, index, shards) == shard.core.id.0 {
                place_partition(shard, &config, index);
            }
        }
    }
    shard.streams_known.set(true);
    glommio::spawn_local(restore_consumers_at_start(shard.clone())).detach();
}

/// Partitions whose directories are looked at in one go by the start's consumer pass.
const CONSUMER_SCAN_CHUNK: usize = 1024;

/// Opens, in the background, every unopened partition that keeps saved consumers, so that they
/// resume delivering (a hosted JetStream push consumer delivers with no client asking) without
/// waiting for someone to touch their partition. The directories are looked at on a blocking
/// thread, a chunk at a time, and a chunk's partitions are open before the next is looked at;
/// `/readyz` says not ready until the pass is done.
async fn restore_consumers_at_start(shard: Rc<StreamShard>) {
    shard.consumer_pass.set(shard.consumer_pass.get() + 1);
    let unopened: Vec<Rc<Partition>> = owned_partitions(&shard)
        .into_iter()
        .filter(|p| p.is_unopened())
        .collect();
    let mut restored = 0usize;
    for chunk in unopened.chunks(CONSUMER_SCAN_CHUNK) {
        let dirs: Vec<std::path::PathBuf> = chunk.iter().map(|p| p.consumers_dir()).collect();
        let keeping: Vec<bool> = glommio::executor()
            .spawn_blocking(move || {
                dirs.iter()
                    .map(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()))
                    .collect()
            })
            .await;
        let found: Vec<&Rc<Partition>> = chunk
            .iter()
            .zip(keeping)
            .filter_map(|(p, keeps)| keeps.then_some(p))
            .collect();
        for part in &found {
            part.open();
        }
        for part in found {
            part.ready().await;
            restored += 1;
        }
    }
    shard.consumer_pass.set(shard.consumer_pass.get() - 1);
    tracing::info!(
        shard = shard.core.id.0,
        partitions = unopened.len(),
        with_consumers = restored,
        "partitions with saved consumers opened; the others open on first use"
    );
}

/// Applies one stream added (or configured again) on shard 0: its capture rules and the partitions
/// this shard owns. The cost does not grow with the number of streams, so per-user streams by the
/// ten thousand are added at the same pace as the first.
pub fn apply_added(shard: &Rc<StreamShard>, config: &Arc<StreamConfig>) {
    {
        let mut view = shard.streams.borrow_mut();
        let previous = view.configs.insert(config.name.clone(), config.clone());
        if let Some(previous) = previous {
            for pattern in &previous.subjects {
                view.capture.remove(pattern, &previous);
            }
        }
        for pattern in &config.subjects {
            view.capture.insert(pattern, config.clone());
        }
    }
    let shards = shard.core.shards as u32;
    for index in 0..config.partitions {
        if shard_for(&config.name, index, shards) == shard.core.id.0 {
            place_partition(shard, config, index);
        }
    }
}

/// Makes an owned partition match its stream's placement: a partition of a replicated stream is
/// kept (and its group opened) on the nodes of its placement; a node that no longer holds a copy
/// (its replica moved) keeps its group until the group has moved the replica, then drops its
/// copy; a node that gains one starts it afresh.
fn place_partition(shard: &Rc<StreamShard>, config: &Arc<StreamConfig>, index: u32) {
    let me = shard.core.config.cluster.as_ref().map(|c| c.name.as_str());
    let holds = |c: &StreamConfig| {
        !c.is_replicated() || me.is_some_and(|me| c.placement.iter().any(|n| n == me))
    };
    let existing = shard.streams.borrow().owned.get(&config.name, index);
    if let Some(part) = &existing {
        if let Some(group) = part.group() {
            group.set_placement(&config.placement);
        }
    }
    if !holds(config) {
        match existing {
            // Its group drops it once the replica has moved.
            Some(part) if part.group().is_some() => {}
            Some(_) => drop_copy(shard, &config.name, index),
            None => forget_leftover(shard, &config.name, index),
        }
        return;
    }
    if existing.as_ref().is_some_and(|part| !holds(&part.config)) {
        // A copy this node did not hold before (the partition stood for a stream it had no copy
        // of, and held nothing): started afresh, as a member; its log opens once the old
        // partition's files are gone.
        drop_copy(shard, &config.name, index);
    }
    let part = ensure_partition(shard, config, index);
    open_if_replicated(&part);
}

/// Drops this node's copy of a partition and deletes its data: its replica moved elsewhere.
pub fn drop_copy(shard: &Rc<StreamShard>, stream: &str, index: u32) {
    let part = shard.streams.borrow_mut().owned.take(stream, index);
    if let Some(part) = part {
        tracing::info!(%stream, partition = index, "this node no longer holds a copy: dropped");
        part.remove(shard);
    }
}

/// Deletes what a node holds of a partition whose replica moved away while it was down.
fn forget_leftover(shard: &Rc<StreamShard>, stream: &str, index: u32) {
    let Ok(dir) = Partition::dir_of(&shard.core.config.data_dir, stream, index) else {
        return;
    };
    let stream = stream.to_string();
    glommio::spawn_local(async move {
        let gone = glommio::executor()
            .spawn_blocking(move || {
                if !dir.exists() {
                    return Ok(false);
                }
                std::fs::remove_dir_all(&dir).map(|()| true)
            })
            .await;
        match gone {
            Ok(true) => tracing::info!(%stream, partition = index,
                "deleted a copy whose replica moved away"),
            Ok(false) => {}
            Err(e) => tracing::warn!(%stream, partition = index, error = %e,
                "could not delete a copy whose replica moved away"),
        }
    })
    .detach();
}

/// Opens a replicated partition's log at once: its group must take part in elections and
/// follow its leader whether or not anything here uses it.
fn open_if_replicated(part: &Partition) {
    if part.config.is_replicated() {
        part.open();
    }
}

/// Applies one stream removed on shard 0: its capture rules go, and its partitions here are closed
/// and deleted.
pub fn apply_removed(shard: &Rc<StreamShard>, name: &str) {
    shard.group_leaders.borrow_mut().remove(name);
    let removed: Vec<Rc<Partition>> = {
        let mut view = shard.streams.borrow_mut();
        if let Some(config) = view.configs.remove(name) {
            for pattern in &config.subjects {
                view.capture.remove(pattern, &config);
            }
        }
        view.owned.retain_streams(|owned| owned != name)
    };
    for part in removed {
        part.remove(shard);
    }
}

/// Every partition this shard owns.
pub fn owned_partitions(shard: &StreamShard) -> Vec<Rc<Partition>> {
    shard.streams.borrow().owned.all()
}

/// Runs retention on every owned partition.
pub async fn apply_retention(shard: &Rc<StreamShard>) {
    let parts: Vec<Rc<Partition>> = shard.streams.borrow().owned.all();
    for part in parts {
        part.apply_retention().await;
    }
}

/// Closes every owned partition cleanly (at shutdown).
pub async fn close_all(shard: &Rc<StreamShard>) {
    let parts: Vec<Rc<Partition>> = shard.streams.borrow().owned.all();
    for part in parts {
        part.close().await;
    }
}

/// Applies a stream item from another shard.
pub fn receive(shard: &Rc<StreamShard>, from: ShardId, item: StreamItem) {
    match item {
        StreamItem::StreamsChanged(list) => apply_snapshot(shard, &list),
        StreamItem::StreamAdded(config) => apply_added(shard, &config),
        StreamItem::StreamRemoved(name) => apply_removed(shard, &name),
        StreamItem::Append {
            stream,
            partition,
            body,
            count,
            reply,
        } => append_from_peer(shard, from, stream, partition, body, count, reply),
        // Acks for the connections here are the session's: the wiring hands them over.
        StreamItem::Appended { .. } => unreachable!("an ack for a connection reached the streams"),
        StreamItem::FromPeer(item) => replica::receive(shard, item),
        StreamItem::ToPeer { node, frame } => shard.cluster_send(&node, frame),
        StreamItem::ClientAddrs { nats, kafka } => {
            shard.core.set_connect_urls(nats);
            *shard.kafka_nodes.borrow_mut() = kafka;
        }
        StreamItem::GroupLeader {
            stream,
            partition,
            leader,
        } => cluster_view::set_group_leader(shard, stream, partition, leader),
        StreamItem::ConsumerJoin {
            call,
            stream,
            config,
            partition,
            member,
        } => consumer_join(shard, from, call, stream, config, partition, member),
        StreamItem::ConsumerAck {
            stream,
            consumer,
            partition,
            offset,
            kind,
            delay_ms,
        } => consumer_ack(shard, &stream, &consumer, partition, offset, kind, delay_ms),
        StreamItem::MemberGone { conn } => member_gone(shard, from, conn),
        StreamItem::Deliver { delivery, frame } => consumer_arrive(shard, delivery, frame),
        StreamItem::ConsumerReturn { delivery } => consumer_returned(shard, &delivery),
        StreamItem::ConsumerGrant {
            stream,
            consumer,
            partition,
            member,
            credit,
        } => consumer_grant(shard, &stream, &consumer, partition, member, credit),
    }
}

/// Applies an API request, a question about a partition, or an answer, from another shard.
pub fn receive_call(shard: &Rc<StreamShard>, from: ShardId, item: CallItem) {
    match item {
        CallItem::Api {
            conn,
            id,
            verb,
            body,
        } => {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let (code, reply) = handle_api_here(&shard, &verb, &body).await;
                shard.push_to(
                    from,
                    CallItem::ApiReply {
                        conn,
                        id,
                        code,
                        body: reply,
                    },
                );
            })
            .detach();
        }
        CallItem::ApiReply {
            conn,
            id,
            code,
            body,
        } => {
            if conn == 0 {
                return; // A request the broker made itself.
            }
            if let Some(conn) = shard.core.client(conn) {
                conn.out.push(&reply_frame(shard, id, code, &body));
            }
        }
        CallItem::Call { call, request } => answer_call(shard, from, call, request),
        CallItem::CallReply { call, reply } => shard.answer_call(call, reply),
    }
}
