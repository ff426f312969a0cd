//! Persistent streams on a shard.
//!
//! Every shard keeps a copy of every stream's configuration (sent by shard 0, which keeps the
//! registry) and matches publishes against their subjects. A captured publish goes to the partition
//! its subject hashes to, on the shard that owns that partition, where it is appended to the
//! partition's log exactly as it arrived; the ack goes back to the publishing connection, in order.

mod api;
mod partition;
mod registry;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::op::{Op, PubAck};
use sluice_protocol::sublist::Sublist;
use sluice_protocol::ErrorCode;

pub use api::{answer_call, handle_api, handle_api_here, publish_registry, reply_frame, CallSlot};
pub use partition::Partition;
pub use registry::Registry;

use super::conn::Conn;
use super::mesh::{AckOutcome, MeshItem};
use super::shard::Shard;
use super::ShardId;
use crate::api::{partition_for, shard_for, StreamConfig};

/// Who waits for a stored publish's ack.
pub enum Done {
    /// A connection on this shard, and its ack number.
    Local { conn: Rc<Conn>, seq: u64 },
    /// A connection on another shard.
    Remote { shard: ShardId, conn: u64, seq: u64 },
}

/// A shard's view of the streams.
#[derive(Default)]
pub struct Streams {
    configs: HashMap<String, Arc<StreamConfig>>,
    capture: Sublist<Arc<StreamConfig>>,
    /// The partitions this shard owns, by stream name and index.
    owned: HashMap<(String, u32), Rc<Partition>>,
}

impl Streams {
    /// The stream that captures `subject`, if any.
    pub fn capturing(&self, subject: &str) -> Option<Arc<StreamConfig>> {
        let mut found = None;
        self.capture
            .for_each_match(subject, |s| found = Some(s.clone()));
        found
    }

    /// An owned partition.
    pub fn owned(&self, name: &str, partition: u32) -> Option<Rc<Partition>> {
        self.owned.get(&(name.to_string(), partition)).cloned()
    }
}

/// Stores a publish that a stream captures; with `ack`, the connection gets a `PubAck` in order.
pub fn capture(shard: &Rc<Shard>, conn: &Rc<Conn>, body: &Bytes, subject: &str, ack: bool) {
    let stream = shard.streams.borrow().capturing(subject);
    let seq = ack.then(|| conn.next_ack());
    let Some(stream) = stream else {
        if let Some(seq) = seq {
            let frame = ack_frame(
                shard,
                &AckOutcome {
                    stream: Arc::from(""),
                    partition: 0,
                    result: Err((
                        ErrorCode::NoStream,
                        format!("no stream captures subject {subject}"),
                    )),
                },
            );
            conn.complete_ack(seq, frame);
        }
        return;
    };
    let partition = partition_for(subject, stream.partitions);
    let owner = ShardId(shard_for(&stream.name, partition, shard.shards as u32));
    if owner == shard.id {
        let done = seq.map(|seq| Done::Local {
            conn: conn.clone(),
            seq,
        });
        let part = ensure_partition(shard, &stream, partition);
        part.enqueue(shard, body.clone(), done);
    } else {
        shard.push_to(
            owner,
            MeshItem::Append {
                stream,
                partition,
                body: body.clone(),
                reply: seq.map(|seq| (conn.id, seq)),
            },
        );
    }
}

/// Stores a publish that another shard captured for a partition this shard owns.
pub fn append_from_peer(
    shard: &Rc<Shard>,
    from: ShardId,
    stream: Arc<StreamConfig>,
    partition: u32,
    body: Bytes,
    reply: Option<(u64, u64)>,
) {
    let done = reply.map(|(conn, seq)| Done::Remote {
        shard: from,
        conn,
        seq,
    });
    let part = ensure_partition(shard, &stream, partition);
    part.enqueue(shard, body, done);
}

/// Delivers an ack to whoever waits for it.
pub fn resolve(shard: &Rc<Shard>, done: Done, outcome: AckOutcome) {
    match done {
        Done::Local { conn, seq } => conn.complete_ack(seq, ack_frame(shard, &outcome)),
        Done::Remote {
            shard: to,
            conn,
            seq,
        } => shard.push_to(
            to,
            MeshItem::Appended {
                conn,
                seq,
                ack: outcome,
            },
        ),
    }
}

/// An ack from another shard for a connection here.
pub fn appended(shard: &Rc<Shard>, conn: u64, seq: u64, outcome: &AckOutcome) {
    if let Some(conn) = shard.conn(conn) {
        conn.complete_ack(seq, ack_frame(shard, outcome));
    }
}

/// The `PubAck` frame for an outcome.
pub fn ack_frame(shard: &Shard, outcome: &AckOutcome) -> Bytes {
    let (offset, code, error) = match &outcome.result {
        Ok(offset) => (*offset, 0, ""),
        Err((code, message)) => (0, code.as_u16(), message.as_str()),
    };
    shard.encode(&Op::PubAck(PubAck {
        stream: &outcome.stream,
        partition: outcome.partition,
        offset,
        code,
        error,
    }))
}

/// The owned partition, opened (in the background) on first use.
pub fn ensure_partition(
    shard: &Rc<Shard>,
    stream: &Arc<StreamConfig>,
    index: u32,
) -> Rc<Partition> {
    let key = (stream.name.clone(), index);
    if let Some(part) = shard.streams.borrow().owned.get(&key) {
        return part.clone();
    }
    let part = Partition::open(shard, stream.clone(), index);
    shard.streams.borrow_mut().owned.insert(key, part.clone());
    part
}

/// Appends what connections and peers queued since the last call, one append per partition.
pub fn flush_appends(shard: &Rc<Shard>) {
    let dirty = std::mem::take(&mut *shard.dirty_partitions.borrow_mut());
    for part in dirty {
        part.flush(shard);
    }
}

/// Applies shard 0's list of streams: new capture rules, partitions to open here, removed streams'
/// partitions to close and delete.
pub fn apply_snapshot(shard: &Rc<Shard>, streams: &[StreamConfig]) {
    let shards = shard.shards as u32;
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
        let keep: Vec<(String, u32)> = view
            .owned
            .keys()
            .filter(|(name, _)| view.configs.contains_key(name))
            .cloned()
            .collect();
        let mut removed = Vec::new();
        view.owned.retain(|key, part| {
            let kept = keep.contains(key);
            if !kept {
                removed.push(part.clone());
            }
            kept
        });
        removed
    };
    for part in removed {
        part.remove(shard);
    }
    let configs: Vec<Arc<StreamConfig>> =
        shard.streams.borrow().configs.values().cloned().collect();
    for config in configs {
        for index in 0..config.partitions {
            if shard_for(&config.name, index, shards) == shard.id.0 {
                ensure_partition(shard, &config, index);
            }
        }
    }
}

/// Runs retention on every owned partition.
pub async fn apply_retention(shard: &Rc<Shard>) {
    let parts: Vec<Rc<Partition>> = shard.streams.borrow().owned.values().cloned().collect();
    for part in parts {
        part.apply_retention().await;
    }
}

/// Closes every owned partition cleanly (at shutdown).
pub async fn close_all(shard: &Rc<Shard>) {
    let parts: Vec<Rc<Partition>> = shard.streams.borrow().owned.values().cloned().collect();
    for part in parts {
        part.close().await;
    }
}
