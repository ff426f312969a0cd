//! What shards tell each other, and the tasks that carry it over glommio's channel mesh.
//!
//! Each shard keeps one outgoing queue per peer. Producers (connections, the mesh receivers) append
//! without waiting; one sender task per peer takes everything queued and sends it as one batch, so a
//! busy shard sends few, large batches. A connection waits for room before reading more when a queue
//! is over its bound (backpressure reaches the publisher through TCP); the mesh receivers never wait
//! for room, so two shards can never block each other.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use glommio::channels::channel_mesh::Senders;
use sluice_protocol::{ErrorCode, Frame};

use sluice_protocol::op::AckKind;

use crate::api::{
    ConsumerConfig, ConsumerPartitionInfo, PartitionInfo, StoredMessage, StreamConfig,
};
use crate::server::streams::{Delivered, Member, ReplyTo};

use crate::server::ShardId;
use sluice_storage::wake::Notify;

/// Channel capacity between two shards, in batches.
pub const MESH_CHANNEL_BATCHES: usize = 1024;

/// Items queued for one peer before publishers on this shard wait. Bounds the memory a fast
/// publisher can pin while a peer shard is busy.
pub const PEER_QUEUE_ITEMS_MAX: usize = 64 * 1024;

/// Message bytes sent to one peer and not yet handled there (queued here, in the channel, or held
/// by the peer while it waits for a congested subscriber) before publishers on this shard wait.
/// About 30 ms of traffic at 1 GB/s: enough to keep the channel busy, little enough that a
/// slow subscriber on the peer slows its publishers here within that much.
pub const PEER_IN_FLIGHT_BYTES_MAX: usize = 32 * 1024 * 1024;

/// One thing a shard tells another, by concern.
pub enum MeshItem {
    /// Routing and interest.
    Core(CoreItem),
    /// Storing and consuming.
    Stream(StreamItem),
    /// API requests and questions about partitions, with their answers.
    Call(CallItem),
}

/// Routing and interest: what core pub/sub needs from the other shards.
pub enum CoreItem {
    /// A published message for the peer's subscribers: its plain subscribers if `plain`, and one
    /// member of each named queue group.
    Forward {
        frame: Frame,
        plain: bool,
        queues: Vec<Arc<str>>,
        /// How many shards already tried to place it with one of their queue members.
        hops: u8,
    },
    /// The receiver handled this many message bytes of the sender's batches.
    Consumed {
        bytes: usize,
    },
    /// A subscription was added on the sending shard.
    InterestAdd {
        pattern: Arc<str>,
        queue: Option<Arc<str>>,
    },
    /// A subscription was removed on the sending shard.
    InterestRemove {
        pattern: Arc<str>,
        queue: Option<Arc<str>>,
    },
    /// Answer with `BarrierAck` once everything sent before this is applied.
    Barrier {
        id: u64,
    },
    BarrierAck {
        id: u64,
    },
}

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

impl From<CoreItem> for MeshItem {
    fn from(item: CoreItem) -> MeshItem {
        MeshItem::Core(item)
    }
}

impl From<StreamItem> for MeshItem {
    fn from(item: StreamItem) -> MeshItem {
        MeshItem::Stream(item)
    }
}

impl From<CallItem> for MeshItem {
    fn from(item: CallItem) -> MeshItem {
        MeshItem::Call(item)
    }
}

/// Where a stored publish went, or why it was not stored.
#[derive(Debug, Clone)]
pub struct AckOutcome {
    pub stream: Arc<str>,
    pub partition: u32,
    pub result: Result<u64, (ErrorCode, String)>,
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
    ConsumerInfo {
        stream: String,
        partition: u32,
        consumer: String,
    },
    /// The shard's figures for /metrics and /readyz.
    ShardMetrics,
}

/// Their answers.
#[derive(Debug, Clone)]
pub enum PartitionReply {
    /// The partition's counts and each of its consumers' counts.
    Stats(PartitionInfo, Vec<(String, ConsumerPartitionInfo)>),
    Get(Result<StoredMessage, (ErrorCode, String)>),
    ShardMetrics(Box<crate::server::streams::metrics::ShardMetrics>),
    ConsumerInfo(Option<ConsumerPartitionInfo>),
    /// Where a store the broker made itself went (a dead letter's copy).
    Appended(AckOutcome),
    /// A consumer join is done: the consumer exists in the partition and its state is durable.
    Joined(Result<(), (ErrorCode, String)>),
}

impl MeshItem {
    /// The message bytes it carries, counted against `PEER_IN_FLIGHT_BYTES_MAX`.
    fn bytes(&self) -> usize {
        match self {
            MeshItem::Core(CoreItem::Forward { frame, .. }) => frame.len(),
            MeshItem::Stream(StreamItem::Append { body, .. }) => body.len(),
            MeshItem::Stream(StreamItem::Deliver { frame, .. }) => frame.len(),
            _ => 0,
        }
    }
}

/// Items from one shard to another, in the order they were queued.
pub struct MeshBatch {
    pub from: ShardId,
    pub items: Vec<MeshItem>,
    /// The message bytes of the items, given back with `Consumed` once handled.
    pub bytes: usize,
}

/// The outgoing queue to one peer.
#[derive(Default)]
pub struct PeerQueue {
    items: RefCell<Vec<MeshItem>>,
    /// Message bytes of `items`.
    queued_bytes: Cell<usize>,
    /// Message bytes queued or sent and not yet handled by the peer.
    in_flight_bytes: Cell<usize>,
    notify: Notify,
    /// Set once the peer is gone (its channel closed): nothing more is queued for it.
    gone: Cell<bool>,
}

impl PeerQueue {
    /// Queues an item for the peer.
    pub fn push(&self, item: impl Into<MeshItem>) {
        let item = item.into();
        if self.gone.get() {
            return;
        }
        let bytes = item.bytes();
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        self.in_flight_bytes.set(self.in_flight_bytes.get() + bytes);
        let mut items = self.items.borrow_mut();
        items.push(item);
        if items.len() == 1 {
            self.notify.notify();
        }
    }

    /// Whether publishers may queue more.
    pub fn has_room(&self) -> bool {
        self.gone.get()
            || (self.items.borrow().len() < PEER_QUEUE_ITEMS_MAX
                && self.in_flight_bytes.get() < PEER_IN_FLIGHT_BYTES_MAX)
    }

    /// The peer handled `bytes` of what was sent.
    pub fn consumed(&self, bytes: usize) {
        self.in_flight_bytes
            .set(self.in_flight_bytes.get().saturating_sub(bytes));
    }
}

/// Sends the queue to `peer` until the mesh closes. `on_sent` runs after each batch (to wake
/// publishers waiting for room).
pub async fn run_sender(
    from: ShardId,
    peer: usize,
    queue: Rc<PeerQueue>,
    senders: Rc<Senders<MeshBatch>>,
    on_sent: impl Fn(),
) {
    loop {
        let items = std::mem::take(&mut *queue.items.borrow_mut());
        if items.is_empty() {
            queue.notify.wait().await;
            continue;
        }
        let bytes = queue.queued_bytes.replace(0);
        let batch = MeshBatch { from, items, bytes };
        if senders.send_to(peer, batch).await.is_err() {
            queue.gone.set(true);
            queue.items.borrow_mut().clear();
            queue.queued_bytes.set(0);
            on_sent();
            return;
        }
        on_sent();
    }
}
