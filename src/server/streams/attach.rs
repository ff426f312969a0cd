//! Attaching a member to a durable consumer: the member's home notes it, sends a join to every
//! partition's owner (itself included) and answers the client only once every owner has the
//! consumer and has written its state down. An owner creating the consumer writes it before its
//! first delivery, at the position its deliver policy resolves to then, so an answered attach
//! survives a crash and resumes where it started.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::ErrorCode;

use super::consumer::Member;
use super::items::{CallItem, PartitionReply, StreamItem};
use super::StreamShard;
use super::{credit, ensure_dead_letter_stream, ensure_partition, CallSlot};
use crate::api::{shard_for, ConsumerConfig, StreamConfig};
use crate::server::ShardId;

/// How long an attach waits for every partition owner to have the consumer, durably, before it
/// answers an error.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// The joins an attach sent, one per partition, with the calls their owners answer.
pub struct Joins {
    slots: Vec<(u32, u64, Rc<CallSlot>)>,
}

impl Joins {
    /// Waits until every partition owner (this shard or another) has the consumer and has written
    /// its state down, or `ATTACH_TIMEOUT` passed: a client told its consumer exists finds it
    /// again after a crash, at the position it was created at.
    pub async fn wait(self, shard: &StreamShard) -> Result<(), (ErrorCode, String)> {
        let joined = wait_joined(&self.slots).await;
        for (_, call, _) in &self.slots {
            shard.forget_call(*call);
        }
        joined
    }
}

/// Attaches connection `conn` of this shard to a consumer in every partition of its stream, and
/// makes sure the consumer's dead-letter stream exists. Synchronous, while the connection is known
/// to be open: its home and every owner note the member before a `MemberGone` can follow, so no
/// ghost member stays behind. The answer waits for the returned `Joins`; the caller (the session)
/// notes the membership on the connection when this succeeds.
pub fn attach_consumer(
    shard: &Rc<StreamShard>,
    conn: u64,
    config: ConsumerConfig,
    sink: Option<Rc<dyn credit::DeliverySink>>,
) -> Result<Joins, (ErrorCode, String)> {
    let stream = shard
        .streams
        .borrow()
        .configs
        .get(&config.stream)
        .cloned()
        .ok_or((
            ErrorCode::NotFound,
            format!("stream {} does not exist", config.stream),
        ))?;
    // Names and numbers are checked before anything is created, the dead-letter stream included.
    config
        .check()
        .map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
    let ack_pending_max = shard.core.config.ack_pending_max;
    if config.max_ack_pending > ack_pending_max {
        return Err((
            ErrorCode::LimitReached,
            format!(
                "max_ack_pending {} is over the most a consumer may have ({ack_pending_max}, \
                 the server's max_ack_pending)",
                config.max_ack_pending
            ),
        ));
    }
    // A consumer that never redelivers (JetStream's ack none) has nothing to dead-letter.
    let acks_none = config
        .jetstream
        .as_ref()
        .is_some_and(|j| j.ack_policy == sluice_protocol::jetstream::json::AckPolicy::None);
    if !acks_none {
        ensure_dead_letter_stream(shard, &config);
    }
    let config = Arc::new(config);
    let member = Member {
        shard: shard.core.id,
        conn,
        sid: config.sid,
    };
    credit::register(
        shard,
        conn,
        config.sid,
        stream.clone(),
        &config.name,
        sink,
        acks_none,
    );
    // Every join is sent (and noted by its owner) before anything is awaited, so a pull or a
    // closing connection that follows finds the member on its way in everywhere.
    let mut slots = Vec::with_capacity(stream.partitions as usize);
    for partition in 0..stream.partitions {
        let slot = Rc::new(CallSlot::default());
        let call = shard.register_call(slot.clone());
        let owner = ShardId(shard_for(&stream.name, partition, shard.core.shards as u32));
        if owner == shard.core.id {
            consumer_join(
                shard,
                shard.core.id,
                call,
                stream.clone(),
                config.clone(),
                partition,
                member,
            );
        } else {
            shard.push_to(
                owner,
                StreamItem::ConsumerJoin {
                    call,
                    stream: stream.clone(),
                    config: config.clone(),
                    partition,
                    member,
                },
            );
        }
        slots.push((partition, call, slot));
    }
    Ok(Joins { slots })
}

/// Waits for every partition's answer to a join, within `ATTACH_TIMEOUT` in all.
async fn wait_joined(slots: &[(u32, u64, Rc<CallSlot>)]) -> Result<(), (ErrorCode, String)> {
    let waited = glommio::timer::timeout(ATTACH_TIMEOUT, async {
        for (_, _, slot) in slots {
            slot.done.wait().await;
        }
        Ok(())
    })
    .await;
    for (partition, _, slot) in slots {
        match slot.reply.borrow_mut().take() {
            Some(PartitionReply::Joined(Ok(()))) => {}
            Some(PartitionReply::Joined(Err((code, why)))) => {
                return Err((code, format!("partition {partition}: {why}")));
            }
            Some(_) => {
                return Err((
                    ErrorCode::StorageFailed,
                    format!("partition {partition}: mismatched answer"),
                ));
            }
            None => {
                debug_assert!(waited.is_err(), "a join slot was set without an answer");
                return Err((
                    ErrorCode::StorageFailed,
                    format!(
                        "partition {partition}: its owner did not confirm the consumer within \
                         {ATTACH_TIMEOUT:?}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A member joins a partition this shard owns: noted at once, attached once the partition is open
/// and the consumer exists here durably; then call `call` of shard `from` (the member's home) is
/// answered with `PartitionReply::Joined`.
pub fn consumer_join(
    shard: &Rc<StreamShard>,
    from: ShardId,
    call: u64,
    stream: Arc<StreamConfig>,
    config: Arc<ConsumerConfig>,
    partition: u32,
    member: Member,
) {
    debug_assert_eq!(
        shard_for(&stream.name, partition, shard.core.shards as u32),
        shard.core.id.0,
        "a join for a partition this shard does not own"
    );
    let part = ensure_partition(shard, &stream, partition);
    part.begin_join(&config.name, member);
    shard.joined(&part);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let reply = PartitionReply::Joined(part.attach(&shard, config, member).await);
        if from == shard.core.id {
            shard.answer_call(call, reply);
        } else {
            shard.push_to(from, CallItem::CallReply { call, reply });
        }
    })
    .detach();
}
