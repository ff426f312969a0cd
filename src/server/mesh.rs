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
use glommio::channels::channel_mesh::{Receivers, Senders};
use sluice_protocol::{ErrorCode, Frame};

use sluice_protocol::op::AckKind;

use super::streams::{Delivered, Member, ReplyTo};
use crate::api::{
    ConsumerConfig, ConsumerPartitionInfo, PartitionInfo, StoredMessage, StreamConfig,
};

use super::ShardId;
use sluice_storage::wake::Notify;

/// Channel capacity between two shards, in batches.
pub const MESH_CHANNEL_BATCHES: usize = 1024;

/// Items queued for one peer before publishers on this shard wait. Bounds the memory a fast
/// publisher can pin while a peer shard is busy.
pub const PEER_QUEUE_ITEMS_MAX: usize = 64 * 1024;

/// One thing a shard tells another.
pub enum MeshItem {
    /// A published message for the peer's subscribers: its plain subscribers if `plain`, and one
    /// member of each named queue group.
    Forward {
        frame: Frame,
        plain: bool,
        queues: Vec<Arc<str>>,
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
    /// Every stream there is now (from shard 0, which keeps the registry).
    StreamsChanged(Arc<Vec<StreamConfig>>),
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
    /// Attach a member to a consumer of a partition the peer owns.
    ConsumerJoin {
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
    MemberGone {
        conn: u64,
    },
    /// A consumer's message for a member homed on the receiving shard, which counts it against
    /// the member's credit (or hands it back with `ConsumerReturn`).
    Deliver {
        delivery: Delivered,
        frame: Bytes,
    },
    /// A delivery its member's home could not take (no credit left, connection gone), back to the
    /// partition's owner: first in line again, as if never sent.
    ConsumerReturn {
        delivery: Delivered,
    },
    /// What a member may still take, from its home to a partition's owner (0: stop).
    ConsumerGrant {
        stream: Arc<str>,
        consumer: Arc<str>,
        partition: u32,
        member: Member,
        credit: u64,
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
    ShardMetrics(Box<super::metrics::ShardMetrics>),
    ConsumerInfo(Option<ConsumerPartitionInfo>),
    /// Where a store the broker made itself went (a dead letter's copy).
    Appended(AckOutcome),
}

/// Items from one shard to another, in the order they were queued.
pub struct MeshBatch {
    pub from: ShardId,
    pub items: Vec<MeshItem>,
}

/// The outgoing queue to one peer.
#[derive(Default)]
pub struct PeerQueue {
    items: RefCell<Vec<MeshItem>>,
    notify: Notify,
    /// Set once the peer is gone (its channel closed): nothing more is queued for it.
    gone: Cell<bool>,
}

impl PeerQueue {
    /// Queues an item for the peer.
    pub fn push(&self, item: MeshItem) {
        if self.gone.get() {
            return;
        }
        let mut items = self.items.borrow_mut();
        items.push(item);
        if items.len() == 1 {
            self.notify.notify();
        }
    }

    /// Whether publishers may queue more.
    pub fn has_room(&self) -> bool {
        self.items.borrow().len() < PEER_QUEUE_ITEMS_MAX
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
        let batch = MeshBatch { from, items };
        if senders.send_to(peer, batch).await.is_err() {
            queue.gone.set(true);
            queue.items.borrow_mut().clear();
            on_sent();
            return;
        }
        on_sent();
    }
}

/// Receives batches from every peer and hands each to `handle`, one task per peer.
pub fn spawn_receivers(mut receivers: Receivers<MeshBatch>, handle: Rc<dyn Fn(MeshBatch)>) {
    for (_peer, stream) in receivers.streams() {
        let handle = handle.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = stream.recv().await {
                handle(batch);
            }
        })
        .detach();
    }
}
