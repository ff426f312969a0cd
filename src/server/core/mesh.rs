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

use glommio::channels::channel_mesh::Senders;
use sluice_protocol::Frame;

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
        /// The subject to route it by, when not its own (a JetStream push consumer's deliveries
        /// go to its deliver subject and keep their stored subject).
        to: Option<Arc<str>>,
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

/// What a peer queue carries: core's items and those of the layers above, in one enum that the
/// wiring defines (`MeshItem` in `server/dispatch.rs`), so that items for one peer keep their
/// order whatever their concern.
pub trait MeshItem: From<CoreItem> + Send + 'static {
    /// The message bytes it carries, counted against `PEER_IN_FLIGHT_BYTES_MAX`.
    fn bytes(&self) -> usize;
}

/// The queue to one peer, as core sees it: one virtual call per push, whatever the item type.
pub trait Peer {
    /// Queues a core item for the peer.
    fn push_core(&self, item: CoreItem);
    /// Whether publishers may queue more.
    fn has_room(&self) -> bool;
    /// The peer handled `bytes` of what was sent.
    fn consumed(&self, bytes: usize);
}

impl<I: MeshItem> Peer for PeerQueue<I> {
    fn push_core(&self, item: CoreItem) {
        self.push(item);
    }

    fn has_room(&self) -> bool {
        PeerQueue::has_room(self)
    }

    fn consumed(&self, bytes: usize) {
        PeerQueue::consumed(self, bytes)
    }
}

/// Items from one shard to another, in the order they were queued.
pub struct MeshBatch<I> {
    pub from: ShardId,
    pub items: Vec<I>,
    /// The message bytes of the items, given back with `Consumed` once handled.
    pub bytes: usize,
}

/// The outgoing queue to one peer.
pub struct PeerQueue<I> {
    items: RefCell<Vec<I>>,
    /// Message bytes of `items`.
    queued_bytes: Cell<usize>,
    /// Message bytes queued or sent and not yet handled by the peer.
    in_flight_bytes: Cell<usize>,
    notify: Notify,
    /// Set once the peer is gone (its channel closed): nothing more is queued for it.
    gone: Cell<bool>,
}

impl<I> Default for PeerQueue<I> {
    fn default() -> Self {
        PeerQueue {
            items: RefCell::new(Vec::new()),
            queued_bytes: Cell::new(0),
            in_flight_bytes: Cell::new(0),
            notify: Notify::default(),
            gone: Cell::new(false),
        }
    }
}

impl<I: MeshItem> PeerQueue<I> {
    /// Queues an item for the peer.
    pub fn push(&self, item: impl Into<I>) {
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
pub async fn run_sender<I: MeshItem>(
    from: ShardId,
    peer: usize,
    queue: Rc<PeerQueue<I>>,
    senders: Rc<Senders<MeshBatch<I>>>,
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
