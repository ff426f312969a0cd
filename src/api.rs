//! The server's API: what clients send in API requests (as JSON) and get back. Shared by the server,
//! the client and the CLI.

use serde::{Deserialize, Serialize};

mod check;
pub use check::{
    check_stream_name, dead_letter_stream, ConfigError, ACK_WAIT_MS_MAX, MAX_AGE_SECS_MAX,
};

/// Verb: create a stream. Body: [`StreamConfig`]. Reply: [`StreamInfo`].
pub const STREAM_ADD: &str = "stream.add";
/// Verb: describe a stream. Body: [`StreamName`]. Reply: [`StreamInfo`].
pub const STREAM_INFO: &str = "stream.info";
/// Verb: list streams. Body: `{}`. Reply: [`StreamList`].
pub const STREAM_LIST: &str = "stream.list";
/// Verb: change an existing stream's configuration (not its partitions). Body: [`StreamConfig`].
/// Reply: [`StreamInfo`].
pub const STREAM_UPDATE: &str = "stream.update";
/// Verb: remove a stream's oldest messages: all of them, those below a sequence, or all but the
/// newest few. Body: [`StreamPurge`]. Reply: [`Purged`].
pub const STREAM_PURGE: &str = "stream.purge";
/// Verb: delete one message. Body: [`MessageLocation`]. Reply: `{}`, or `NotFound`.
pub const STREAM_DELETE_MESSAGE: &str = "stream.delete_msg";
/// Verb: delete a stream and its data. Body: [`StreamName`]. Reply: `{}`.
pub const STREAM_REMOVE: &str = "stream.rm";

/// A stream: which subjects it captures and how it keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    pub name: String,
    /// Subject patterns captured; no two streams may capture the same subject.
    pub subjects: Vec<String>,
    /// Partitions; a subject always goes to the same one, so one subject stays in order.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Delete whole segments whose newest message is older than this.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// Delete the oldest segments of a partition while it is larger than this.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// When the stream was created, in nanoseconds since the Unix epoch (0: not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_ns: u64,
    /// The configuration a JetStream client gave, kept to be reported back as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<Box<sluice_protocol::jetstream::json::StreamConfig>>,
    /// Copies of each partition, on that many nodes of a cluster: a publish is acknowledged once
    /// a majority of them have it durable. 1: each node keeps its own. 0, when adding: as many as
    /// the cluster has nodes (1 on a single node).
    #[serde(default = "one_replica", skip_serializing_if = "is_one_replica")]
    pub replicas: u8,
    /// The nodes holding a replicated stream's copies, decided when the cluster adds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
}

impl StreamConfig {
    /// A stream of one partition capturing `subjects`, with no limits.
    pub fn new(name: impl Into<String>, subjects: Vec<String>) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subjects,
            partitions: 1,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        }
    }

    /// Whether the stream's partitions are replicated across nodes.
    pub fn is_replicated(&self) -> bool {
        self.replicas > 1
    }
}

fn one_replica() -> u8 {
    1
}

fn is_one_replica(n: &u8) -> bool {
    *n == 1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

/// What to purge from a stream: everything, or (with `seq`) the messages below that stream
/// sequence, or (with `keep`) all but the newest `keep` messages of each partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPurge {
    pub name: String,
    /// Only the messages on subjects this pattern matches (then `keep` counts per subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u64>,
    /// For a replicated stream, set by the node asked: the offset below which each partition is
    /// purged, so that every copy removes the same messages (a purge keeping the newest, as that
    /// node saw them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub below: Vec<u64>,
}

/// Moves a replicated stream's copy on node `from` to node `to`, a member holding none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMove {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// A cluster member to add or remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub node: String,
}

/// How many messages a purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    pub purged: u64,
}

/// Names a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamName {
    pub name: String,
}

/// A stream's configuration and the state of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub partitions: Vec<PartitionInfo>,
    /// The stream's consumers with their pending counts.
    #[serde(default)]
    pub consumers: Vec<ConsumerInfo>,
}

impl StreamInfo {
    /// Messages over all partitions.
    pub fn messages(&self) -> u64 {
        self.partitions.iter().map(|p| p.messages).sum()
    }

    /// Bytes on disk over all partitions.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }
}

/// One partition's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// Messages held (from the first offset to the last).
    pub messages: u64,
    pub bytes: u64,
    pub first_offset: u64,
    /// The last offset, if the partition holds any message.
    pub last_offset: Option<u64>,
}

/// The streams there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamList {
    pub streams: Vec<StreamConfig>,
}

/// Where a stream stored a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
}

/// The partition a subject goes to: CRC32C of the subject modulo the partition count. CRC32C is
/// stable across versions and machines, so a subject keeps its partition (and its order) forever.
pub fn partition_for(subject: &str, partitions: u32) -> u32 {
    crc32c::crc32c(subject.as_bytes()) % partitions.max(1)
}

/// The shard that owns partition `partition` of stream `stream`.
pub fn shard_for(stream: &str, partition: u32, shards: u32) -> u32 {
    let seed = crc32c::crc32c(stream.as_bytes());
    crc32c::crc32c_append(seed, &partition.to_le_bytes()) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_always_lands_on_the_same_partition() {
        assert_eq!(
            partition_for("user.42.audio", 4),
            partition_for("user.42.audio", 4)
        );
        assert!(partition_for("x", 4) < 4);
        assert_eq!(partition_for("anything", 1), 0);
        let spread: std::collections::HashSet<u32> = (0..100)
            .map(|i| partition_for(&format!("user.{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "subjects spread over every partition");
    }

    #[test]
    fn partitions_spread_over_shards() {
        let owners: std::collections::HashSet<u32> =
            (0..16).map(|p| shard_for("orders", p, 2)).collect();
        assert_eq!(owners.len(), 2);
    }
}

/// Verb: read one stored message. Body: [`MessageLocation`]. Reply: [`StoredMessage`].
pub const STREAM_GET: &str = "stream.get";

/// Where a message is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageLocation {
    pub name: String,
    pub partition: u32,
    pub offset: u64,
    /// Instead of `partition` and `offset`: the last message stored on this subject (on streams
    /// made through the JetStream API, which index their subjects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_by_subject: Option<String>,
}

/// A message read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ns: u64,
    pub subject: String,
    /// The header block it was published with (`NATS/1.0\r\n...`), or empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Verb: attach this connection to a durable consumer (created on first use). Body:
/// [`ConsumerConfig`]. Reply: `{}`. Attaching grants no credit: messages arrive on `sid` only as
/// the connection asks for them with the `ConsumerPull` operation, never more.
pub const CONSUMER_ATTACH: &str = "consumer.attach";
/// Verb: delete a consumer (it stops delivering; its state goes). Body: [`ConsumerName`].
/// Reply: `{}`, or `NotFound`.
pub const CONSUMER_DELETE: &str = "consumer.delete";
/// Verb: a consumer's counts. Body: [`ConsumerName`]. Reply: [`ConsumerInfo`].
pub const CONSUMER_INFO: &str = "consumer.info";

/// Where a new consumer starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// From the first message held.
    All,
    /// Only messages stored after the consumer was created.
    New,
    /// From this offset in every partition.
    Offset(u64),
    /// From the first message at or after this time (ns since the Unix epoch).
    Time(u64),
    /// The last message of every subject (that the consumer takes), then what comes next: a
    /// key-value watcher's start (streams made through the JetStream API only).
    LastPerSubject,
}

/// A durable consumer and how it delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    pub stream: String,
    pub name: String,
    pub deliver: DeliverPolicy,
    /// Redeliver a message not acked within this long.
    pub ack_wait_ms: u64,
    /// After this many deliveries, a message goes to the dead-letter stream.
    pub max_deliver: u32,
    /// Most delivered but unacked messages per partition; delivery pauses there.
    pub max_ack_pending: u32,
    /// The client's subscription id for this consumer's messages.
    pub sid: u64,
    /// The configuration a JetStream client gave, kept to be reported back as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<Box<sluice_protocol::jetstream::json::ConsumerConfig>>,
}

/// Names a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerName {
    pub stream: String,
    pub name: String,
}

/// How far behind a consumer is, per partition and in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    pub stream: String,
    pub name: String,
    pub partitions: Vec<ConsumerPartitionInfo>,
    /// A Kafka consumer group on the stream's topic: its committed offsets are the ack floors,
    /// and its lag is what is pending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kafka_group: bool,
}

impl ConsumerInfo {
    /// Messages not yet delivered, over all partitions.
    pub fn pending(&self) -> u64 {
        self.partitions.iter().map(|p| p.pending).sum()
    }

    /// Messages delivered but not yet acked, over all partitions.
    pub fn ack_pending(&self) -> u64 {
        self.partitions.iter().map(|p| p.ack_pending).sum()
    }
}

/// One partition's share of a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerPartitionInfo {
    pub partition: u32,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked.
    pub ack_pending: u64,
    /// Deliveries beyond the first.
    pub redelivered: u64,
    /// Every offset below this one is acked.
    pub ack_floor: u64,
    /// Messages sent to the dead-letter stream.
    pub dead_lettered: u64,
    /// The next offset never delivered.
    #[serde(default)]
    pub next: u64,
    /// Deliveries made so far, redeliveries included: the last delivery's sequence.
    #[serde(default)]
    pub delivered_seq: u64,
    /// The consumer's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Box<ConsumerConfig>>,
}

/// Verb: the cluster as the answering node sees it. Body: `{}`. Reply: [`ClusterInfo`].
pub const CLUSTER_INFO: &str = "cluster.info";
/// Adds a node (`{"node": NAME}`) to the cluster's members; it must be linked already.
pub const CLUSTER_ADD: &str = "cluster.add";
/// Removes a node (`{"node": NAME}`) from the cluster's members; it must hold no copy of a stream.
pub const CLUSTER_REMOVE: &str = "cluster.remove";
/// Moves a replicated stream's copy from one node to another (`StreamMove`).
pub const STREAM_MOVE: &str = "stream.move";

/// A node's view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// False for a single node, started without a cluster address.
    pub clustered: bool,
    /// The node's name.
    pub name: String,
    /// Where it listens for its peers.
    #[serde(default)]
    pub cluster_addr: String,
    /// Every node it has linked with, up or down.
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
    /// Each route it dials, and how that goes.
    #[serde(default)]
    pub routes: Vec<RouteInfo>,
    /// The meta group (the cluster's stream registry), once it has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<MetaInfo>,
    /// The consensus groups of the replicated partitions shard 0 owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupInfo>,
}

/// A replicated partition's consensus group as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub stream: String,
    pub partition: u32,
    /// The leader's name, if there is one this node knows of.
    pub leader: Option<String>,
    /// `leader`, `follower` or `candidate`.
    pub role: String,
    pub term: u64,
    /// The last entry known committed, and the last one this node holds: their difference is
    /// what this node has that is not agreed on yet.
    pub commit: u64,
    pub last_index: u64,
    /// The group's members as this node last applied them (during a move, the new ones).
    #[serde(default)]
    pub voters: Vec<String>,
}

/// The meta group as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaInfo {
    /// The leader's name, if there is one this node knows of.
    pub leader: Option<String>,
    pub term: u64,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    /// Its voting members' names.
    pub voters: Vec<String>,
    /// The last log index known committed.
    pub commit: u64,
}

/// A node linked with, now or before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    /// Its cluster address, as it gave it.
    pub addr: String,
    /// Whether a link to it is open.
    pub up: bool,
    /// Open links to it.
    pub links: u32,
    /// How long it has been up, or down.
    pub since_ms: u64,
}

/// A route a node dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub route: String,
    /// `linked to NODE`, `dialing (N failed)` or `this node`.
    pub state: String,
    /// Why the last link or dial ended, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
