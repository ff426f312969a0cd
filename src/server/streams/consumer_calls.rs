//! Consumer calls from the session to the shard owning the partition: grants, pulls, acks and
//! whether they are kept, and a closed connection's memberships.

use std::rc::{Rc, Weak};
use std::time::Duration;

use sluice_protocol::op::AckKind;
use sluice_protocol::ErrorCode;

use super::api;
use super::items::PartitionRequest;
use super::{credit, Member, Partition, PartitionReply, StreamItem, StreamShard};
use crate::api::shard_for;
use crate::server::ShardId;

/// A member's home says how much it may still take from a partition this shard owns.
pub fn consumer_grant(
    shard: &Rc<StreamShard>,
    stream: &str,
    consumer: &str,
    partition: u32,
    member: Member,
    credit: u64,
) {
    let part = shard.streams.borrow().owned(stream, partition);
    if let Some(part) = part {
        part.grant(consumer, member, credit);
    }
}

/// A client asks for more of a consumer's messages.
pub fn consumer_pull(
    shard: &Rc<StreamShard>,
    conn: u64,
    which: (&str, &str, u64),
    count: u64,
    expires_ms: u64,
) -> Result<(), (ErrorCode, String)> {
    credit::pull(shard, conn, which, count, expires_ms)
}

/// Routes a client's ack to the partition's owner.
pub fn consumer_ack(
    shard: &Rc<StreamShard>,
    stream: &str,
    consumer: &str,
    partition: u32,
    offset: u64,
    kind: AckKind,
    delay_ms: u64,
) {
    let owner = ShardId(shard_for(stream, partition, shard.core.shards as u32));
    if owner == shard.core.id {
        if let Some(part) = shard.streams.borrow().owned(stream, partition) {
            // A client's delay is capped as ack waits are: no deadline past what an Instant holds.
            let delay = Duration::from_millis(delay_ms.min(crate::api::ACK_WAIT_MS_MAX));
            part.consumer_ack(consumer, offset, kind, delay);
        }
    } else {
        shard.push_to(
            owner,
            StreamItem::ConsumerAck {
                stream: stream.to_string(),
                consumer: consumer.to_string(),
                partition,
                offset,
                kind,
                delay_ms,
            },
        );
    }
}

/// How long an ack that asks to know it was kept waits for that.
const ACK_KEPT_WITHIN: Duration = Duration::from_secs(2);

/// Whether the acks of a consumer's partition sent before this call are kept: written down with
/// its state and, for a replicated partition, kept by a majority of the copies' nodes (see
/// `Partition::consumer_ack_kept`). Asked after the ack, on the same queue, so it comes after it.
pub async fn consumer_ack_kept(
    shard: &Rc<StreamShard>,
    stream: &str,
    consumer: &str,
    partition: u32,
) -> bool {
    let owner = ShardId(shard_for(stream, partition, shard.core.shards as u32));
    let request = PartitionRequest::AckKept {
        stream: stream.to_string(),
        partition,
        consumer: consumer.to_string(),
        within: ACK_KEPT_WITHIN,
    };
    let within = ACK_KEPT_WITHIN + Duration::from_secs(1);
    matches!(
        api::ask_shard_within(shard, owner, request, within).await,
        Ok(PartitionReply::AckKept(true))
    )
}

/// A connection closed: it leaves every consumer, here and on the other shards, and what it held
/// goes back to delivery.
pub fn member_gone(shard: &Rc<StreamShard>, from: ShardId, conn: u64) {
    if from == shard.core.id {
        credit::forget_conn(shard, conn);
    }
    let parts: Vec<Rc<Partition>> = shard
        .joined
        .borrow()
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for part in &parts {
        part.member_gone(from, conn);
    }
    // A partition left with no member and nothing held is looked at again once one joins.
    shard
        .joined
        .borrow_mut()
        .retain(|_, part| part.upgrade().is_some_and(|p| p.may_have_members()));
    if from == shard.core.id {
        shard.broadcast(|| StreamItem::MemberGone { conn });
    }
}
