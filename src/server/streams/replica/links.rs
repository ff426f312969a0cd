//! What a group sends and receives through the cluster links: shard 0 hands what the links bring
//! to the shard owning the partition, which steps consensus messages, takes forwarded publishes
//! and their answers, and keeps consumer states other nodes sent.

use super::*;

/// The shard owning a stream's partition.
fn owner(shard: &StreamShard, stream: &str, partition: u32) -> ShardId {
    ShardId(shard_for(stream, partition, shard.core.shards as u32))
}

/// On shard 0: hands what the links bring for the partitions' groups to the shards owning them,
/// until the shard stops.
pub async fn route_from_links(shard: Rc<StreamShard>, cluster: Rc<Cluster>) {
    loop {
        let next = or(async { Some(cluster.next_group_item().await) }, async {
            shard.core.stopping.wait().await;
            None
        })
        .await;
        let Some(item) = next else { return };
        let to = match &item {
            GroupIn::Group {
                stream, partition, ..
            }
            | GroupIn::Forward {
                stream, partition, ..
            }
            | GroupIn::Consumer {
                stream, partition, ..
            }
            | GroupIn::Held {
                stream, partition, ..
            }
            | GroupIn::Ask {
                stream, partition, ..
            } => owner(&shard, stream, *partition),
            GroupIn::Forwarded { id, .. } => ShardId((id >> FORWARD_SHARD_SHIFT) as u32),
            GroupIn::Offsets { group, .. } => {
                crate::server::streams::groups::coordinator_of(group, shard.core.shards)
            }
        };
        if to == shard.core.id {
            receive(&shard, item);
            crate::server::streams::flush_appends(&shard);
        } else {
            shard.push_to(to, StreamItem::FromPeer(item));
        }
    }
}

/// Where a forward id keeps the shard that forwarded it.
pub const FORWARD_SHARD_SHIFT: u32 = 48;

/// On the shard owning the partition: a frame for one of its groups.
pub fn receive(shard: &Rc<StreamShard>, item: GroupIn) {
    match item {
        GroupIn::Group {
            stream,
            partition,
            message,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            let Some(part) = part else {
                return; // A stream this node does not know (yet): the sender retries.
            };
            match Message::parse_from_bytes(&message) {
                Ok(message) => match part.group() {
                    Some(group) => group.step(message),
                    None => part.open(), // Its group starts with the log; the sender retries.
                },
                Err(e) => tracing::warn!(%stream, partition, error = %e,
                    "unreadable consensus message"),
            }
        }
        GroupIn::Forward {
            from,
            stream,
            partition,
            id,
            count,
            deadline_ms,
            body,
        } => {
            // A publish that comes after its publisher stopped waiting (it waited in a link's
            // queue while the link was down) is not stored: its publisher has gone on, and it
            // would be stored after what came next.
            let left = deadline_ms.saturating_sub(now_ms());
            let part = shard.streams.borrow().owned(&stream, partition);
            let refused = match part {
                _ if left == 0 => Some((
                    ErrorCode::Unavailable,
                    "the publish reached the partition's leader after its deadline".to_string(),
                )),
                None => Some((ErrorCode::NotFound, format!("no stream {stream}"))),
                Some(_) => None,
            };
            if let Some((code, why)) = refused {
                shard.cluster_send(&from, forwarded_frame(id, Err((code.as_u16(), &why))));
                return;
            }
            let deadline = Instant::now() + Duration::from_millis(left);
            let done = Done::Peer {
                node: from,
                id,
                deadline,
            };
            if let Some(part) = part {
                part.enqueue_span(shard, body, count, Some(done));
            }
        }
        GroupIn::Forwarded { id, result } => {
            if let Some(group) = shard.take_forward(id) {
                group.forward_answered(shard, id, result);
            }
        }
        GroupIn::Consumer {
            from,
            stream,
            partition,
            consumer,
            seq,
            state,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            match part {
                Some(part) if seq == 0 => part.consumer_state_answer(&consumer, &state),
                Some(part) => part.keep_shipped_state(consumer, state, Some((from, seq))),
                None => {}
            }
        }
        GroupIn::Ask {
            from,
            stream,
            partition,
            consumer,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            if let Some(part) = part {
                part.answer_consumer_ask(from, consumer);
            }
        }
        GroupIn::Held {
            from,
            stream,
            partition,
            consumer,
            seq,
        } => {
            let part = shard.streams.borrow().owned(&stream, partition);
            if let Some(part) = part {
                part.consumer_state_held(&consumer, from, seq);
            }
        }
        GroupIn::Offsets { group, saved } => {
            glommio::spawn_local(crate::server::streams::groups::take_shipped(
                shard.clone(),
                group,
                saved,
            ))
            .detach();
        }
    }
}

/// Sends a consumer's state (or its deletion, with `state` empty), numbered `seq`, to the other
/// nodes holding a copy of the partition: a client that reconnects to one of them finds the
/// consumer there, where it left it. Each answers with `Held` as it takes it in.
pub fn ship_consumer_state(
    shard: &StreamShard,
    config: &StreamConfig,
    partition: u32,
    consumer: &str,
    seq: u64,
    state: &[u8],
) {
    let Some(me) = shard.core.config.cluster.as_ref().map(|c| c.name.as_str()) else {
        return;
    };
    let mut out = BytesMut::with_capacity(state.len() + 64);
    ClusterFrame::Consumer {
        stream: &config.name,
        partition,
        consumer,
        seq,
        state,
    }
    .encode(&mut out);
    let frame = out.freeze();
    for node in config.placement.iter().filter(|n| n.as_str() != me) {
        shard.cluster_send(node, frame.clone());
    }
}

/// Sends one frame about a consumer to node `to`.
fn send_to(shard: &StreamShard, to: &str, frame: ClusterFrame<'_>) {
    let mut out = BytesMut::with_capacity(256);
    frame.encode(&mut out);
    shard.cluster_send(to, out.freeze());
}

/// Asks node `to` which state of a consumer it keeps.
pub fn ask_consumer_state(
    shard: &StreamShard,
    to: &str,
    stream: &str,
    partition: u32,
    consumer: &str,
) {
    let frame = ClusterFrame::Ask {
        stream,
        partition,
        consumer,
    };
    send_to(shard, to, frame);
}

/// Answers node `to`'s `Ask` with the state of a consumer this node keeps (empty: none).
pub fn answer_consumer_state(
    shard: &StreamShard,
    to: &str,
    stream: &str,
    partition: u32,
    consumer: &str,
    state: &[u8],
) {
    let frame = ClusterFrame::Consumer {
        stream,
        partition,
        consumer,
        seq: 0,
        state,
    };
    send_to(shard, to, frame);
}

/// Tells node `to` that this node holds a consumer's state it sent, numbered `seq`.
pub fn confirm_consumer_state(
    shard: &StreamShard,
    to: &str,
    stream: &str,
    partition: u32,
    consumer: &str,
    seq: u64,
) {
    let frame = ClusterFrame::Held {
        stream,
        partition,
        consumer,
        seq,
    };
    send_to(shard, to, frame);
}

/// Milliseconds since the Unix epoch: forwarded publishes carry their deadline so.
pub fn now_ms() -> u64 {
    sluice_storage::now_ns() / 1_000_000
}

/// The frame answering the forwarded publish `id`.
pub fn forwarded_frame(id: u64, result: Result<u64, (u16, &str)>) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    ClusterFrame::Forwarded { id, result }.encode(&mut out);
    out.freeze()
}
