//! What the streams tell other shards: captured publishes on their way to their partition's owner,
//! acks on the way back, consumers' members, credit and deliveries (`StreamItem`); API requests,
//! questions about partitions and their answers (`CallItem`). They travel in the same peer queues
//! as core's items, in order with them (`MeshItem` in `server/dispatch.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::op::AckKind;
use sluice_protocol::ErrorCode;

use super::metrics::ShardMetrics;
use super::{Delivered, Member, ReplyTo};
use crate::api::{
    ConsumerConfig, ConsumerPartitionInfo, PartitionInfo, StoredMessage, StreamConfig,
};

/// Storing and consuming: captured publishes on their way to their partition's owner, their acks on
/// the way back, and consumers' members, credit and deliveries.
pub enum StreamItem {
    /// Every stream there is now (from shard 0, which keeps the registry).
    StreamsChanged(Arc<Vec<StreamConfig>>),
    /// A stream was added or configured again (from shard 0).
    StreamAdded(Arc<StreamConfig>),
    /// A stream was removed (from shard 0).
    StreamRemoved(Arc<str>),
    /// Store a captured publish in a partition this peer owns; answer with `Appended` if `reply`
    /// names the publishing connection and its ack sequence number.
    Append {
        stream: Arc<StreamConfig>,
        partition: u32,
        body: Bytes,
        /// Offsets the body takes: 1 for a publish, the record count for a Kafka record batch.
        count: u32,
        reply: Option<ReplyTo>,
    },
    /// The outcome of an `Append`, for connection `conn`'s ack number `seq`.
    Appended {
        conn: u64,
        seq: u64,
        ack: AckOutcome,
    },
    /// Attach a member to a consumer of a partition the peer owns; answered with `CallReply`
    /// (`PartitionReply::Joined`) once the consumer exists there and its state is durable.
    ConsumerJoin {
        call: u64,
        stream: Arc<StreamConfig>,
        config: Arc<ConsumerConfig>,
        partition: u32,
        member: Member,
    },
    /// A client's ack (or nak, progress, term) for a partition the peer owns.
    ConsumerAck {
        stream: String,
        consumer: String,
        partition: u32,
        offset: u64,
        kind: AckKind,
        delay_ms: u64,
    },
    /// A connection of the sending shard closed: it is no longer a member of any consumer.
    MemberGone { conn: u64 },
    /// A consumer's message for a member homed on the receiving shard, which counts it against
    /// the member's credit (or hands it back with `ConsumerReturn`).
    Deliver { delivery: Delivered, frame: Bytes },
    /// A delivery its member's home could not take (no credit left, connection gone), back to the
    /// partition's owner: first in line again, as if never sent.
    ConsumerReturn { delivery: Delivered },
    /// What a member may still take, from its home to a partition's owner (0: stop).
    ConsumerGrant {
        stream: Arc<str>,
        consumer: Arc<str>,
        partition: u32,
        member: Member,
        credit: u64,
    },
    /// A frame from another node for a partition group the receiving shard owns (from shard 0,
    /// which keeps the cluster links).
    FromPeer(crate::server::cluster::GroupIn),
    /// A frame for another node, for shard 0 to send over its links.
    ToPeer { node: String, frame: Bytes },
    /// Where NATS clients reach the nodes of the cluster now, and Kafka clients those up now, by
    /// node name (from shard 0).
    ClientAddrs {
        nats: Vec<String>,
        kafka: Vec<(String, String)>,
    },
    /// A replicated partition's group has a new leader, with its term (none: unknown), from the
    /// shard that owns it.
    GroupLeader {
        stream: Arc<str>,
        partition: u32,
        leader: Option<(String, u64)>,
    },
}

/// Requests to shard 0's stream API, questions to a partition's owner, and their answers.
pub enum CallItem {
    /// An API request from connection `conn`, for shard 0.
    Api {
        conn: u64,
        id: u64,
        verb: String,
        body: Vec<u8>,
    },
    /// The answer to an `Api` (code 0 is success), for the shard of connection `conn`.
    ApiReply {
        conn: u64,
        id: u64,
        code: u16,
        body: Vec<u8>,
    },
    /// A question about a partition the peer owns; answered with `CallReply`.
    Call {
        call: u64,
        request: PartitionRequest,
    },
    CallReply {
        call: u64,
        reply: PartitionReply,
    },
}

/// Where a stored publish went, or why it was not stored.
#[derive(Debug, Clone)]
pub struct AckOutcome {
    pub stream: Arc<str>,
    pub partition: u32,
    pub result: Result<u64, (ErrorCode, String)>,
    /// The publish repeated a message id seen within the stream's duplicate window: nothing was
    /// stored, and `result` is where the first one was.
    pub duplicate: bool,
    /// What a JetStream client is told of a refusal, when the refusal is JetStream's own (an
    /// expectation in the publish's headers that did not hold).
    pub api_error: Option<Box<sluice_protocol::jetstream::json::ApiError>>,
    /// What a Kafka producer is told of a refusal that is Kafka's own (a sequence out of order,
    /// an old producer epoch).
    pub kafka_error: Option<i16>,
}

impl AckOutcome {
    /// A message stored (or refused for `code`) with nothing JetStream would add.
    pub fn plain(
        stream: Arc<str>,
        partition: u32,
        result: Result<u64, (ErrorCode, String)>,
    ) -> AckOutcome {
        AckOutcome {
            stream,
            partition,
            result,
            duplicate: false,
            api_error: None,
            kafka_error: None,
        }
    }
}

/// Questions one shard asks another about a partition.
#[derive(Debug, Clone)]
pub enum PartitionRequest {
    Stats {
        stream: String,
        partition: u32,
    },
    Get {
        stream: String,
        partition: u32,
        offset: u64,
    },
    /// Remove the partition's messages below an offset, or all but the newest few.
    Purge {
        stream: String,
        partition: u32,
        to: PurgeTo,
    },
    /// Delete a consumer's share of the partition.
    ConsumerDelete {
        stream: String,
        partition: u32,
        consumer: String,
    },
    /// Delete one message from the middle of the partition.
    DeleteMessage {
        stream: String,
        partition: u32,
        offset: u64,
    },
    /// The last message stored on a subject.
    GetLast {
        stream: String,
        partition: u32,
        subject: String,
    },
    ConsumerInfo {
        stream: String,
        partition: u32,
        consumer: String,
    },
    /// Answered once the consumer's acks applied before it are kept (see
    /// `Partition::consumer_ack_kept`), or `within` passed.
    AckKept {
        stream: String,
        partition: u32,
        consumer: String,
        within: Duration,
    },
    /// The shard's figures for /metrics and /readyz.
    ShardMetrics,
    /// A stream API call, for shard 0.
    Api {
        verb: String,
        body: Vec<u8>,
    },
    /// Stored records from an offset for a Kafka fetch, waiting up to `wait_ms` for the first
    /// one if there is none yet.
    Read {
        stream: String,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait_ms: u64,
    },
    /// The partition's first and next offsets and, for a time (Kafka milliseconds), the first
    /// offset stored at or after it.
    Offsets {
        stream: String,
        partition: u32,
        time_ms: Option<i64>,
    },
    /// A Kafka consumer group question, for the group's coordinator.
    Group(super::groups::GroupCall),
}

/// Where a purge stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTo {
    /// Everything stored.
    All,
    /// Everything below this offset.
    Below(u64),
    /// All but the newest this many.
    Keep(u64),
    /// The messages on the subjects a filter matches: all but the newest `keep` of each subject,
    /// and only those below `below` when it is set.
    Subjects {
        filter: String,
        keep: u64,
        below: Option<u64>,
    },
}

/// Their answers.
#[derive(Debug, Clone)]
pub enum PartitionReply {
    /// The partition's counts and each of its consumers' counts.
    Stats(PartitionInfo, Vec<(String, ConsumerPartitionInfo)>),
    Get(Result<StoredMessage, (ErrorCode, String)>),
    ShardMetrics(Box<ShardMetrics>),
    ConsumerInfo(Option<ConsumerPartitionInfo>),
    /// Where a store the broker made itself went (a dead letter's copy).
    Appended(AckOutcome),
    /// A consumer join is done: the consumer exists in the partition and its state is durable.
    Joined(Result<(), (ErrorCode, String)>),
    /// A stream API call's code (0: success) and JSON answer or error message.
    Api(u16, Vec<u8>),
    /// How many messages a purge removed.
    Purged(Result<u64, (ErrorCode, String)>),
    Read(Result<super::kafka::Read, super::kafka::ReadError>),
    Offsets(Result<super::kafka::Offsets, (ErrorCode, String)>),
    /// Whether a message delete found the message.
    Deleted(Result<bool, (ErrorCode, String)>),
    Group(super::groups::GroupAnswer),
    /// Whether a consumer's acks are kept.
    AckKept(bool),
}

/// A stream or call item, as the streams hand it to a peer queue.
pub enum Item {
    Stream(StreamItem),
    Call(CallItem),
}

impl From<StreamItem> for Item {
    fn from(item: StreamItem) -> Item {
        Item::Stream(item)
    }
}

impl From<CallItem> for Item {
    fn from(item: CallItem) -> Item {
        Item::Call(item)
    }
}

/// The queue to one peer shard, as the streams see it: the items go in order with everything
/// else queued for that peer.
pub trait Peer {
    fn push(&self, item: Item);
}
