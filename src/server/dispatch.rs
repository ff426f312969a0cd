//! The mesh receivers: each item from another shard goes to the layer it concerns, and the batch's
//! bytes go back to its sender once what it made congested has drained.

use std::rc::Rc;

use glommio::channels::shared_channel::ConnectedReceiver;

use super::core::mesh::{self, CoreItem, MeshBatch, PeerQueue};
use super::session::{self, SessionShard};
use super::streams::{self, CallItem, StreamItem};

/// One thing a shard tells another, by concern. Everything for one peer goes through one queue,
/// so items keep their order whatever layer sent them.
pub enum MeshItem {
    /// Routing and interest.
    Core(CoreItem),
    /// Storing and consuming.
    Stream(StreamItem),
    /// API requests and questions about partitions, with their answers.
    Call(CallItem),
}

impl mesh::MeshItem for MeshItem {
    fn bytes(&self) -> usize {
        match self {
            MeshItem::Core(CoreItem::Forward { frame, .. }) => frame.len(),
            MeshItem::Stream(StreamItem::Append { body, .. }) => body.len(),
            MeshItem::Stream(StreamItem::Deliver { frame, .. }) => frame.len(),
            _ => 0,
        }
    }
}

impl From<CoreItem> for MeshItem {
    fn from(item: CoreItem) -> MeshItem {
        MeshItem::Core(item)
    }
}

/// The streams' items go into the same queue as core's.
impl streams::Peer for PeerQueue<MeshItem> {
    fn push(&self, item: streams::Item) {
        match item {
            streams::Item::Stream(item) => PeerQueue::push(self, MeshItem::Stream(item)),
            streams::Item::Call(item) => PeerQueue::push(self, MeshItem::Call(item)),
        }
    }
}

/// Receives batches from one peer until the mesh closes. After each batch, the receiver waits
/// for the subscribers and partitions it made congested (a subscriber's wait is bounded by the
/// write deadline) and only then gives the peer its bytes back (`Consumed`): a slow subscriber
/// slows the publishers on other shards that feed it, through their peer queue's bound, as it
/// slows those on this one.
pub async fn receive_from(shard: Rc<SessionShard>, stream: ConnectedReceiver<MeshBatch<MeshItem>>) {
    while let Some(batch) = stream.recv().await {
        let (from, bytes) = (batch.from, batch.bytes);
        receive(&shard, batch);
        let core = &shard.core;
        core.wait_drained(core.take_congested()).await;
        if bytes > 0 {
            core.push_to(from, CoreItem::Consumed { bytes });
        }
    }
}

/// Applies a batch from another shard, in order: core items by the core shard, the rest by the
/// streams, acks for this shard's connections by the session; then appends what the batch queued for this shard's partitions.
fn receive(shard: &Rc<SessionShard>, batch: MeshBatch<MeshItem>) {
    let from = batch.from;
    for item in batch.items {
        match item {
            MeshItem::Core(item) => shard.core.receive_core(from, item),
            MeshItem::Stream(StreamItem::Appended { conn, seq, ack }) => {
                session::appended(shard, conn, seq, &ack)
            }
            MeshItem::Stream(item) => streams::receive(&shard.streams, from, item),
            MeshItem::Call(item) => streams::receive_call(&shard.streams, from, item),
        }
    }
    streams::flush_appends(&shard.streams);
}
