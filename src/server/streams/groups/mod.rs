//! Kafka consumer groups, the classic protocol: the coordinator that relays between a group's
//! members (the elected leader client assigns partitions; the coordinator passes the
//! subscriptions to it and its assignments back), and the group's committed offsets.
//!
//! Each group is coordinated by one shard, `crc32c(group) % shards`, whichever shard its members
//! reached: every group request is a question to that shard. Membership lives in memory (after a
//! restart members learn they are unknown and join again, as after a coordinator move in Kafka);
//! committed offsets are durable before a commit is answered, in one file per group under
//! `<data dir>/kafka-groups/`, read back when the coordinator first serves a group request.

mod machine;
mod offsets;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::kafka::code;
use sluice_storage::wake::{Event, Latch};

use super::api::ask_shard_within;
use super::items::{PartitionReply, PartitionRequest};
use super::StreamShard;
use crate::server::ShardId;

pub use machine::GROUP_TIMEOUT_MAX_MS;

/// Time allowed for a coordinator's answer beyond the wait the request itself asks for.
const CALL_SLACK: Duration = Duration::from_secs(10);

/// A committed offset, as OffsetCommit brings it and OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A JoinGroup.
#[derive(Debug, Clone)]
pub struct Join {
    pub group: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// The session timeout for a version-0 join, which has none.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// The assignment protocols the member can use, preferred first, with its subscription.
    pub protocols: Vec<(String, Bytes)>,
    /// Version 4 on: a member without an id is given one and asked to join again with it.
    pub id_round_trip: bool,
}

/// A JoinGroup's answer.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member, with its subscription for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A SyncGroup.
#[derive(Debug, Clone)]
pub struct Sync {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup's answer.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// An OffsetCommit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub group: String,
    /// −1 (with no member id) for a client that assigns partitions itself.
    pub generation: i32,
    pub member_id: String,
    pub offsets: Vec<(String, i32, Committed)>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, or `Dead` (unknown).
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberView>,
}

/// A question to a group's coordinator.
#[derive(Debug, Clone)]
pub enum GroupCall {
    Join(Join),
    Sync(Sync),
    Heartbeat {
        group: String,
        generation: i32,
        member_id: String,
    },
    /// Members leaving (one, or several from version 3 on).
    Leave {
        group: String,
        members: Vec<String>,
    },
    Commit(Commit),
    /// Committed offsets of some partitions, or of all (`None`).
    Fetch {
        group: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe {
        group: String,
    },
    /// Every group this coordinator holds.
    List,
}

/// A coordinator's answer.
#[derive(Debug, Clone)]
pub enum GroupAnswer {
    Joined(Joined),
    Synced(Synced),
    /// One error code (0: done) for a heartbeat or a commit.
    Code(i16),
    /// Per member leaving, in the order asked.
    Left(Vec<i16>),
    /// Per partition asked (or committed, for all): its committed offset, if any.
    Fetched(Vec<(String, i32, Option<Committed>)>),
    Described(GroupView),
    Listed(Vec<GroupView>),
}

impl GroupCall {
    fn group(&self) -> &str {
        match self {
            GroupCall::Join(j) => &j.group,
            GroupCall::Sync(s) => &s.group,
            GroupCall::Commit(c) => &c.group,
            GroupCall::Heartbeat { group, .. }
            | GroupCall::Leave { group, .. }
            | GroupCall::Fetch { group, .. }
            | GroupCall::Describe { group } => group,
            GroupCall::List => "",
        }
    }

    /// How long the coordinator may take to answer: a join waits for the rebalance.
    fn wait(&self) -> Duration {
        match self {
            GroupCall::Join(j) => {
                Duration::from_millis(j.rebalance_timeout_ms.clamp(0, GROUP_TIMEOUT_MAX_MS) as u64)
                    + machine::INITIAL_DELAY
            }
            GroupCall::Sync(_) => Duration::from_millis(GROUP_TIMEOUT_MAX_MS as u64),
            _ => Duration::ZERO,
        }
    }
}

/// On the group's coordinator shard: a group's offsets another node of the cluster sent.
pub async fn take_shipped(shard: Rc<StreamShard>, group: String, saved: Vec<u8>) {
    ready(&shard).await;
    tracing::debug!(%group, "a peer sent a group's offsets");
    offsets::take_shipped(&shard, &saved);
}

/// Every group's saved offsets on this node, as frames for a node that came up.
pub async fn saved_frames(shard: &StreamShard) -> Vec<Bytes> {
    let dir = shard.groups.dir.clone();
    let saved = glommio::executor()
        .spawn_blocking(move || offsets::all_saved(&dir))
        .await;
    saved
        .iter()
        .map(|(group, bytes)| offsets::offsets_frame(group, bytes))
        .collect()
}

/// In a cluster, the node that coordinates a group: of the nodes up now whose Kafka port is on,
/// the one ranked first for the group (rendezvous hashing, so that a node going down or coming
/// up moves only its own groups). `None` on a single node, or before the cluster is known.
pub fn coordinator_node(shard: &StreamShard, group: &str) -> Option<(String, String)> {
    shard.core.config.cluster.as_ref()?;
    let nodes = shard.kafka_nodes.borrow();
    let rank = |node: &str| {
        let mut key = Vec::with_capacity(node.len() + group.len() + 1);
        key.extend_from_slice(node.as_bytes());
        key.push(0);
        key.extend_from_slice(group.as_bytes());
        crc32c::crc32c(&key)
    };
    nodes
        .iter()
        .max_by_key(|(node, _)| (rank(node), node.clone()))
        .cloned()
}

/// Whether this node coordinates a group (always, on a single node).
fn coordinates_here(shard: &StreamShard, group: &str) -> bool {
    let me = shard.core.config.cluster.as_ref().map(|c| c.name.as_str());
    match coordinator_node(shard, group) {
        Some((node, _)) => Some(node.as_str()) == me,
        None => true,
    }
}

/// The shard that coordinates a group.
pub fn coordinator_of(group: &str, shards: usize) -> ShardId {
    ShardId(crc32c::crc32c(group.as_bytes()) % shards.max(1) as u32)
}

/// Asks a group's coordinator; a Kafka error code if it did not answer.
pub async fn call(shard: &Rc<StreamShard>, call: GroupCall) -> Result<GroupAnswer, i16> {
    if !matches!(call, GroupCall::List) && !coordinates_here(shard, call.group()) {
        return Err(code::NOT_COORDINATOR);
    }
    let to = coordinator_of(call.group(), shard.core.shards);
    let within = call.wait() + CALL_SLACK;
    match ask_shard_within(shard, to, PartitionRequest::Group(call), within).await {
        Ok(PartitionReply::Group(answer)) => Ok(answer),
        Ok(_) => Err(code::UNKNOWN_SERVER_ERROR),
        Err(_) => Err(code::COORDINATOR_NOT_AVAILABLE),
    }
}

/// Every group of every coordinator.
pub async fn list_all(shard: &Rc<StreamShard>) -> Result<Vec<GroupView>, i16> {
    let mut all = Vec::new();
    for to in 0..shard.core.shards {
        let request = PartitionRequest::Group(GroupCall::List);
        match ask_shard_within(shard, ShardId(to as u32), request, CALL_SLACK).await {
            Ok(PartitionReply::Group(GroupAnswer::Listed(groups))) => all.extend(groups),
            _ => return Err(code::COORDINATOR_NOT_AVAILABLE),
        }
    }
    all.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(all)
}

/// The groups one shard coordinates.
pub struct Coordinator {
    groups: RefCell<HashMap<String, machine::Group>>,
    /// Where committed offsets are kept.
    dir: PathBuf,
    load_started: Cell<bool>,
    loaded: Latch,
    /// Wakes commits waiting for their group's offsets to be durable.
    written: Event,
    sweeping: Cell<bool>,
}

impl Coordinator {
    pub fn new(data_dir: &std::path::Path) -> Coordinator {
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            dir: data_dir.join("kafka-groups"),
            load_started: Cell::new(false),
            loaded: Latch::default(),
            written: Event::default(),
            sweeping: Cell::new(false),
        }
    }
}

/// Answers a group question on its coordinator.
pub async fn answer_here(shard: &Rc<StreamShard>, call: GroupCall) -> GroupAnswer {
    ready(shard).await;
    match call {
        GroupCall::Join(join) => GroupAnswer::Joined(machine::join(shard, join).await),
        GroupCall::Sync(sync) => GroupAnswer::Synced(machine::sync(shard, sync).await),
        GroupCall::Heartbeat {
            group,
            generation,
            member_id,
        } => GroupAnswer::Code(machine::heartbeat(shard, &group, generation, &member_id)),
        GroupCall::Leave { group, members } => {
            GroupAnswer::Left(machine::leave(shard, &group, &members))
        }
        GroupCall::Commit(commit) => GroupAnswer::Code(offsets::commit(shard, commit).await),
        GroupCall::Fetch { group, topics } => {
            GroupAnswer::Fetched(offsets::fetch(shard, &group, topics))
        }
        GroupCall::Describe { group } => GroupAnswer::Described(machine::describe(shard, &group)),
        GroupCall::List => GroupAnswer::Listed(machine::list(shard)),
    }
}

/// Reads this coordinator's saved offsets the first time, and starts the session sweep.
async fn ready(shard: &Rc<StreamShard>) {
    let groups = &shard.groups;
    if !groups.load_started.replace(true) {
        let dir = groups.dir.clone();
        let shards = shard.core.shards;
        let own = shard.core.id;
        let loaded = glommio::executor()
            .spawn_blocking(move || {
                offsets::load(&dir, |group| coordinator_of(group, shards) == own)
            })
            .await;
        {
            let mut map = groups.groups.borrow_mut();
            for (group, saved, stamp) in loaded {
                let group = map.entry(group).or_default();
                group.offsets = saved;
                group.stamp = stamp;
            }
        }
        groups.loaded.set();
    }
    groups.loaded.wait().await;
    if !groups.sweeping.replace(true) {
        glommio::spawn_local(machine::sweep(shard.clone())).detach();
    }
}
