//! Dead letters: a message that exhausted its deliveries is copied to the stream
//! `DLQ.<stream>.<consumer>` (created when the consumer first attaches), and only once the copy is
//! durable is the original marked done and an advisory published.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::op::Op;
use sluice_protocol::Frame;

use super::capture::send_to_partition;
use super::{flush_appends, AckOutcome, AckTo, CallItem, CallSlot};
use super::{handle_api_here, PartitionReply, StreamShard};
use crate::api::{ConsumerConfig, StreamConfig};
use crate::server::ShardId;

/// The replicas of the stream named `stream`, as this shard knows it (1 if it does not).
fn config_replicas(shard: &StreamShard, stream: &str) -> u8 {
    shard
        .streams
        .borrow()
        .config(stream)
        .map_or(1, |c| c.replicas)
}

/// Asks shard 0 to create the consumer's dead-letter stream (nothing happens if it exists).
pub(super) fn ensure_dead_letter_stream(shard: &Rc<StreamShard>, config: &ConsumerConfig) {
    let name = config.dead_letter_stream();
    if shard.streams.borrow().configs.contains_key(&name) {
        return;
    }
    // Dead letters are kept as the stream they come from is: replicated alike.
    let dlq = StreamConfig {
        partitions: 1,
        replicas: config_replicas(shard, &config.stream),
        ..StreamConfig::new(name.clone(), vec![name])
    };
    let body = serde_json::to_vec(&dlq).unwrap_or_default();
    if shard.core.id.0 == 0 {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            handle_api_here(&shard, crate::api::STREAM_ADD, &body).await;
        })
        .detach();
    } else {
        shard.push_to(
            ShardId(0),
            CallItem::Api {
                conn: 0,
                id: 0,
                verb: crate::api::STREAM_ADD.to_string(),
                body,
            },
        );
    }
}

/// Why a dead-letter copy was not stored (the original stays pending and is tried again).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot read the original: {0}")]
    Read(#[from] sluice_storage::StorageError),
    #[error("the original at offset {0} is not a stored publish")]
    NotAPublish(u64),
    #[error("no stream captures {0}")]
    NoStream(String),
    #[error("storing the copy failed: {0}")]
    Store(String),
    #[error("the copy's partition owner did not answer in time")]
    Timeout,
}

/// How long a dead letter waits for its copy to be stored before it counts as failed.
const DEAD_LETTER_STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies a message that exhausted its deliveries to the dead-letter stream and waits until the
/// copy is durable; then publishes an advisory on `$SYS.DLQ.<stream>.<consumer>`.
pub async fn dead_letter(
    shard: &Rc<StreamShard>,
    config: &ConsumerConfig,
    partition: u32,
    offset: u64,
    deliveries: u32,
    log: Rc<sluice_storage::PartitionLog>,
) -> Result<(), DeadLetterError> {
    let records = log.read(offset, 1).await?;
    let original = records
        .into_iter()
        .find(|r| r.offset == offset)
        .and_then(|r| Frame::check(r.body, u32::MAX).ok())
        .ok_or(DeadLetterError::NotAPublish(offset))?;
    let sluice_protocol::ArchivedOp::Pub(p) = original.op() else {
        return Err(DeadLetterError::NotAPublish(offset));
    };
    let (original_subject, payload, headers) = (p.subject(), p.payload(), p.headers());
    let subject = config.dead_letter_stream();
    let copy = shard.core.encode(&Op::Pub(sluice_protocol::op::Publish {
        subject: &subject,
        reply: None,
        headers,
        payload,
        ack: false,
    }));
    store_and_wait(shard, copy, &subject).await?;
    tracing::warn!(stream = %config.stream, consumer = %config.name, partition, offset,
        deliveries, "message dead-lettered");
    let advisory = serde_json::json!({
        "stream": config.stream,
        "consumer": config.name,
        "partition": partition,
        "offset": offset,
        "deliveries": deliveries,
        "subject": original_subject,
    })
    .to_string();
    announce(shard, &format!("$SYS.{subject}"), &advisory);
    if config.jetstream.is_some() {
        max_deliveries_advisory(shard, config, partition, offset, deliveries);
    }
    Ok(())
}

/// Tells JetStream clients that a message ran out of deliveries, as nats-server does, on
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`.
fn max_deliveries_advisory(
    shard: &Rc<StreamShard>,
    config: &ConsumerConfig,
    partition: u32,
    offset: u64,
    deliveries: u32,
) {
    use sluice_protocol::jetstream::{seq::seq_of, time::format_time_ns};
    let partitions = shard
        .streams
        .borrow()
        .config(&config.stream)
        .map_or(1, |c| c.partitions);
    let advisory = serde_json::json!({
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "id": format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..)),
        "timestamp": format_time_ns(sluice_storage::now_ns()),
        "stream": config.stream,
        "consumer": config.name,
        "stream_seq": seq_of(partition, offset, partitions),
        "deliveries": deliveries,
    })
    .to_string();
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        config.stream, config.name
    );
    announce(shard, &subject, &advisory);
}

/// Publishes an advisory the broker makes to whoever listens on `subject`.
fn announce(shard: &StreamShard, subject: &str, advisory: &str) {
    shard.core.route_made(subject, b"", advisory.as_bytes());
}

/// Stores a frame the broker made itself and waits until it is durable, wherever its partition is.
async fn store_and_wait(
    shard: &Rc<StreamShard>,
    body: Bytes,
    subject: &str,
) -> Result<(), DeadLetterError> {
    let stream = shard.streams.borrow().capturing(subject);
    let Some(stream) = stream else {
        return Err(DeadLetterError::NoStream(subject.to_string()));
    };
    let slot = Rc::new(CallSlot::default());
    let call = shard.register_call(slot.clone());
    send_to_partition(shard, stream, subject, body, Some(AckTo::Call(call)));
    flush_appends(shard);
    // Nobody reads on behalf of the broker's own messages: nothing waits for what they fill.
    shard.core.take_congested();
    match shard
        .await_call(&slot, call, DEAD_LETTER_STORE_TIMEOUT)
        .await
    {
        Some(PartitionReply::Appended(AckOutcome { result: Ok(_), .. })) => Ok(()),
        Some(PartitionReply::Appended(AckOutcome {
            result: Err((_, why)),
            ..
        })) => Err(DeadLetterError::Store(why)),
        _ => Err(DeadLetterError::Timeout),
    }
}
