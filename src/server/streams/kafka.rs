//! What the Kafka port asks of the streams: record batches appended to a partition wherever it
//! is owned, records read from an offset (waiting for new ones, as a Kafka fetch does), and a
//! partition's offsets. A Kafka topic is a stream and its offsets are the log's: a batch is one
//! stored record that takes one offset per Kafka record.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::kafka::code;
use sluice_protocol::ErrorCode;
use sluice_storage::Record;

use super::api::{ask_shard_within, CallSlot};
use super::capture::ReplyTo;
use super::items::{PartitionReply, PartitionRequest, StreamItem};
use super::{ensure_partition, Done, StreamShard};
use crate::api::{shard_for, StreamConfig};
use crate::server::ShardId;

/// Longest a produce waits for its batches to be durable before it is answered as timed out.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for an answer from another shard beyond a fetch's own wait.
const READ_SLACK: Duration = Duration::from_secs(10);

/// Records read for a fetch, and where the partition stands.
#[derive(Debug, Clone)]
pub struct Read {
    /// Committed records from the one that holds the offset asked for (a batch may start
    /// below it); deleted messages are left out.
    pub records: Vec<Record>,
    /// The partition's next offset (Kafka's high watermark: every record below it is durable).
    pub next_offset: u64,
    /// The first offset still stored (Kafka's log start offset).
    pub first_offset: u64,
}

/// Why a read found nothing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The offset is below the first stored or past the next: Kafka's OFFSET_OUT_OF_RANGE.
    OutOfRange { first: u64, next: u64 },
    /// The partition is not owned where it was asked (a stream being removed).
    NotHere,
    /// The log failed.
    Storage(String),
}

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub first: u64,
    pub next: u64,
    /// For a time asked: the first offset whose record was created at or after it, with that
    /// record's time (milliseconds); `None` if every record is older.
    pub at_time: Option<(u64, i64)>,
}

/// The subject a stream's Kafka records are read on from the other ports: the stream's first
/// subject if it names a single subject, else the topic's name.
pub fn subject_of(config: &StreamConfig) -> String {
    config
        .subjects
        .first()
        .filter(|s| !s.split('.').any(|token| token == "*" || token == ">"))
        .cloned()
        .unwrap_or_else(|| config.name.replace('~', "."))
}

/// The shard that owns a partition.
fn owner(shard: &StreamShard, stream: &str, partition: u32) -> ShardId {
    ShardId(shard_for(stream, partition, shard.core.shards as u32))
}

/// When a produce is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Never (acks=0).
    None,
    /// Once the batch has its offset, before it is durable (acks=1).
    Ordered,
    /// Once the batch is durable (acks=all).
    Durable,
}

/// Queues a Kafka record batch (taking `count` offsets) for partition `partition` of `stream`,
/// on whichever shard owns it, behind everything queued for it before from this shard. Resolves
/// with the batch's first offset as `ack` asks, at once with `None` for `Ack::None`. A refusal
/// carries its Kafka error code.
pub fn append_batch(
    shard: &Rc<StreamShard>,
    stream: Arc<StreamConfig>,
    partition: u32,
    batch: Bytes,
    count: u32,
    ack: Ack,
) -> impl std::future::Future<Output = Result<Option<u64>, (i16, String)>> + 'static {
    let slot = (ack != Ack::None).then(|| Rc::new(CallSlot::default()));
    let call = slot.as_ref().map(|slot| shard.register_call(slot.clone()));
    let to = owner(shard, &stream.name, partition);
    let ordered = ack == Ack::Ordered;
    if to == shard.core.id {
        let own = shard.core.id;
        let done = call.map(|call| match ordered {
            true => Done::Ordered { shard: own, call },
            false => Done::Call { shard: own, call },
        });
        ensure_partition(shard, &stream, partition).enqueue_span(shard, batch, count, done);
    } else {
        let reply = call.map(|call| match ordered {
            true => ReplyTo::Ordered(call),
            false => ReplyTo::Call(call),
        });
        shard.push_to(
            to,
            StreamItem::Append {
                stream,
                partition,
                body: batch,
                count,
                reply,
            },
        );
    }
    let shard = shard.clone();
    async move {
        let (Some(slot), Some(call)) = (slot, call) else {
            return Ok(None);
        };
        match shard.await_call(&slot, call, APPEND_TIMEOUT).await {
            Some(PartitionReply::Appended(outcome)) => match outcome.result {
                Ok(offset) => Ok(Some(offset)),
                // A replicated partition without a leader within reach: the client asks
                // Metadata again, and finds the new leader.
                Err((ErrorCode::Unavailable, why)) if outcome.kafka_error.is_none() => {
                    Err((code::NOT_LEADER_OR_FOLLOWER, why))
                }
                Err((_, why)) => Err((
                    outcome.kafka_error.unwrap_or(code::KAFKA_STORAGE_ERROR),
                    why,
                )),
            },
            Some(_) => Err((code::UNKNOWN_SERVER_ERROR, "mismatched answer".into())),
            None => Err((
                code::REQUEST_TIMED_OUT,
                "the append was not answered in time".into(),
            )),
        }
    }
}

/// Reads committed records of a partition from `offset`, about `max_bytes` (at least one
/// record), waiting up to `wait_ms` for one if there is none yet.
pub async fn read(
    shard: &Rc<StreamShard>,
    stream: &str,
    partition: u32,
    offset: u64,
    max_bytes: usize,
    wait_ms: u64,
) -> Result<Read, ReadError> {
    let request = PartitionRequest::Read {
        stream: stream.to_string(),
        partition,
        offset,
        max_bytes,
        wait_ms,
    };
    let within = Duration::from_millis(wait_ms) + READ_SLACK;
    match ask_shard_within(shard, owner(shard, stream, partition), request, within).await {
        Ok(PartitionReply::Read(result)) => result,
        Ok(_) => Err(ReadError::Storage("mismatched answer".into())),
        Err((_, why)) => Err(ReadError::Storage(why)),
    }
}

/// A partition's first and next offsets and, for `time_ms`, the first offset at or after it.
pub async fn offsets(
    shard: &Rc<StreamShard>,
    stream: &str,
    partition: u32,
    time_ms: Option<i64>,
) -> Result<Offsets, (ErrorCode, String)> {
    let request = PartitionRequest::Offsets {
        stream: stream.to_string(),
        partition,
        time_ms,
    };
    match ask_shard_within(shard, owner(shard, stream, partition), request, READ_SLACK).await? {
        PartitionReply::Offsets(result) => result,
        _ => Err((ErrorCode::StorageFailed, "mismatched answer".into())),
    }
}
