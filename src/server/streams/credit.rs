//! A consumer member's credit, kept by its home: the shard that holds its connection.
//!
//! A member receives only what it asked for. Its pulls add to its credit here, and the credit is
//! handed to the partition owners in chunks (a grant): an owner delivers while it holds one. The
//! home counts what arrives from each partition; a partition that used up its chunk gets another
//! while credit is left, and one with nothing to deliver keeps its chunk unused. Chunks may add up
//! to more than the credit (a partition that spent its chunk is never left waiting on the others'),
//! so a delivery that finds no credit left (or a closing connection) goes back to its owner unseen.
//! When the credit reaches zero the owners are told to stop. Everything here is this shard's own
//! state.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::op::{AckKind, Op, StreamMsg};
use sluice_protocol::ErrorCode;

use super::consumer::{Delivered, Member};
use super::items::StreamItem;
use super::StreamShard;
use crate::api::{shard_for, StreamConfig};
use crate::server::core::outbound::Push;
use crate::server::ShardId;

/// Most credit a member may hold: far more than any bound on unacked messages, and far from
/// overflowing the owners' counters.
pub const CREDIT_MAX: u64 = 1 << 40;

/// Smallest chunk of credit a partition is granted: smaller ones would cost a round trip to the
/// home every few messages when a member reads many partitions.
const GRANT_CHUNK_MIN: u64 = 16;

/// How a member's deliveries reach its connection when not as native `StreamMsg` frames: another
/// port's rendering (the JetStream API writes a NATS `MSG` with an ack subject).
pub trait DeliverySink {
    /// Writes a delivery to the connection; false if the member cannot take it now (it then goes
    /// back to its owner unseen).
    fn deliver(&self, delivery: &Delivered, frame: &Bytes) -> bool;
}

/// A member of a consumer whose connection lives on this shard.
pub struct HomeMember {
    stream: Arc<StreamConfig>,
    consumer: Arc<str>,
    conn: u64,
    sid: u64,
    /// Messages it may still receive.
    credit: Cell<u64>,
    /// Counts pulls, so that an expiring pull lapses only if no later pull came.
    pulls: Cell<u64>,
    /// Pulls with an expiry not yet expired.
    expiring: Cell<u32>,
    /// Per partition: granted and not yet arrived. An owner's own count is never above it.
    outstanding: RefCell<Vec<u64>>,
    /// Where its deliveries go, when not as native frames.
    sink: Option<Rc<dyn DeliverySink>>,
    /// Its consumer takes no acks (JetStream's ack none): a message counts as acked once it is
    /// written to the member's connection, not when it leaves its partition, so that one the
    /// member hands back is delivered again rather than lost.
    acks_on_arrival: bool,
}

impl HomeMember {
    fn member(&self, shard: ShardId) -> Member {
        Member {
            shard,
            conn: self.conn,
            sid: self.sid,
        }
    }
}

/// The members homed on this shard, by connection and subscription id.
#[derive(Default)]
pub struct Homes {
    members: HashMap<(u64, u64), Rc<HomeMember>>,
}

/// Registers a member that attaches (with no credit: it receives nothing until it pulls). A
/// connection attached to the same consumer under another sid is replaced.
pub fn register(
    shard: &StreamShard,
    conn: u64,
    sid: u64,
    stream: Arc<StreamConfig>,
    consumer: &str,
    sink: Option<Rc<dyn DeliverySink>>,
    acks_on_arrival: bool,
) {
    let mut streams = shard.streams.borrow_mut();
    let homes = &mut streams.homes.members;
    homes.retain(|&(c, _), m| {
        !(c == conn && m.stream.name == stream.name && &*m.consumer == consumer)
    });
    homes.insert(
        (conn, sid),
        Rc::new(HomeMember {
            consumer: Arc::from(consumer),
            conn,
            sid,
            credit: Cell::new(0),
            pulls: Cell::new(0),
            expiring: Cell::new(0),
            outstanding: RefCell::new(vec![0; stream.partitions as usize]),
            stream,
            sink,
            acks_on_arrival,
        }),
    );
}

/// Forgets the members of a closed connection.
pub fn forget_conn(shard: &StreamShard, conn: u64) {
    shard
        .streams
        .borrow_mut()
        .homes
        .members
        .retain(|&(c, _), _| c != conn);
}

fn home(shard: &StreamShard, conn: u64, sid: u64) -> Option<Rc<HomeMember>> {
    shard
        .streams
        .borrow()
        .homes
        .members
        .get(&(conn, sid))
        .cloned()
}

/// A member asks for `count` more messages; with `expires_ms`, what is left of its credit lapses
/// after that long unless it pulls again.
pub fn pull(
    shard: &Rc<StreamShard>,
    conn: u64,
    (stream, consumer, sid): (&str, &str, u64),
    count: u64,
    expires_ms: u64,
) -> Result<(), (ErrorCode, String)> {
    let member = home(shard, conn, sid)
        .filter(|m| m.stream.name == stream && &*m.consumer == consumer)
        .ok_or_else(|| {
            let message = format!(
                "pull: this connection is not attached to consumer {consumer} of {stream} \
                 with subscription id {sid}"
            );
            (ErrorCode::UnknownSubscription, message)
        })?;
    let waiting_max = shard.core.config.waiting_pulls_max;
    if expires_ms > 0 && member.expiring.get() >= waiting_max {
        return Err((
            ErrorCode::LimitReached,
            format!(
                "pull: {waiting_max} pulls with an expiry are already waiting (max_waiting_pulls)"
            ),
        ));
    }
    member
        .credit
        .set(member.credit.get().saturating_add(count).min(CREDIT_MAX));
    let pulls = member.pulls.get() + 1;
    member.pulls.set(pulls);
    grant_spent(shard, &member);
    if expires_ms > 0 {
        let shard = shard.clone();
        member.expiring.set(member.expiring.get() + 1);
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(
                expires_ms.min(crate::api::ACK_WAIT_MS_MAX),
            ))
            .await;
            member.expiring.set(member.expiring.get().saturating_sub(1));
            if member.pulls.get() == pulls && member.credit.get() > 0 {
                member.credit.set(0);
                stop(&shard, &member);
            }
        })
        .detach();
    }
    Ok(())
}

/// A member gives back `count` of its credit (a pull that ended unfilled); the owners are told to
/// stop when none is left.
pub fn take_back(shard: &Rc<StreamShard>, conn: u64, sid: u64, count: u64) {
    let Some(member) = home(shard, conn, sid) else {
        return;
    };
    let credit = member.credit.get();
    if credit == 0 {
        return;
    }
    member.credit.set(credit.saturating_sub(count));
    if member.credit.get() == 0 {
        stop(shard, &member);
    }
}

/// Grants a chunk of the credit to every partition that has none outstanding (new, or spent).
fn grant_spent(shard: &Rc<StreamShard>, member: &HomeMember) {
    let credit = member.credit.get();
    if credit == 0 {
        return;
    }
    let partitions = member.stream.partitions.max(1) as u64;
    let chunk = credit.div_ceil(partitions).max(GRANT_CHUNK_MIN).min(credit);
    let spent: Vec<u32> = {
        let mut outstanding = member.outstanding.borrow_mut();
        outstanding
            .iter_mut()
            .enumerate()
            .filter(|(_, o)| **o == 0)
            .map(|(p, o)| {
                *o = chunk;
                p as u32
            })
            .collect()
    };
    for partition in spent {
        send_grant(shard, member, partition, chunk);
    }
}

/// Tells every owner still holding a grant to stop.
fn stop(shard: &Rc<StreamShard>, member: &HomeMember) {
    let holding: Vec<u32> = {
        let mut outstanding = member.outstanding.borrow_mut();
        outstanding
            .iter_mut()
            .enumerate()
            .filter(|(_, o)| **o > 0)
            .map(|(p, o)| {
                *o = 0;
                p as u32
            })
            .collect()
    };
    for partition in holding {
        send_grant(shard, member, partition, 0);
    }
}

/// Tells a partition's owner how much the member may take from it.
fn send_grant(shard: &Rc<StreamShard>, member: &HomeMember, partition: u32, credit: u64) {
    let stream = &member.stream;
    let who = member.member(shard.core.id);
    let owner = ShardId(shard_for(&stream.name, partition, shard.core.shards as u32));
    if owner == shard.core.id {
        let part = super::ensure_partition(shard, stream, partition);
        part.grant(&member.consumer, who, credit);
    } else {
        shard.push_to(
            owner,
            StreamItem::ConsumerGrant {
                stream: Arc::from(stream.name.as_str()),
                consumer: member.consumer.clone(),
                partition,
                member: who,
                credit,
            },
        );
    }
}

/// A delivery reaches the member's home: written to the connection if the member has credit,
/// else handed back to its owner.
pub fn arrive(shard: &Rc<StreamShard>, delivery: Delivered, frame: Bytes) {
    let member = home(shard, delivery.member.conn, delivery.member.sid);
    let conn = shard.core.client(delivery.member.conn);
    let (Some(member), Some(conn)) = (member, conn) else {
        give_back(shard, delivery);
        return;
    };
    let credit = member.credit.get();
    if credit == 0 {
        give_back(shard, delivery);
        return;
    }
    if let Some(sink) = &member.sink {
        if !sink.deliver(&delivery, &frame) {
            give_back(shard, delivery);
            return;
        }
    } else {
        let header = shard.core.encode(&Op::StreamMsg(StreamMsg {
            sid: delivery.member.sid,
            partition: delivery.partition,
            offset: delivery.offset,
            delivered: delivery.delivered,
        }));
        match conn.out.push2(&header, &frame) {
            Push::Queued => {}
            // The connection is going away: what it could not take goes to the others.
            Push::Closed | Push::SlowConsumer => {
                give_back(shard, delivery);
                return;
            }
        }
    }
    if member.acks_on_arrival {
        super::consumer_ack(
            shard,
            &delivery.stream,
            &delivery.consumer,
            delivery.partition,
            delivery.offset,
            AckKind::Ack,
            0,
        );
    }
    member.credit.set(credit - 1);
    let spent = {
        let mut outstanding = member.outstanding.borrow_mut();
        match outstanding.get_mut(delivery.partition as usize) {
            Some(o) => {
                *o = o.saturating_sub(1);
                *o == 0
            }
            None => false,
        }
    };
    if credit == 1 {
        stop(shard, &member);
    } else if spent {
        grant_spent(shard, &member);
    }
}

/// Hands a delivery back to the owner of its partition.
fn give_back(shard: &Rc<StreamShard>, delivery: Delivered) {
    let owner = ShardId(shard_for(
        &delivery.stream,
        delivery.partition,
        shard.core.shards as u32,
    ));
    if owner == shard.core.id {
        returned(shard, &delivery);
    } else {
        shard.push_to(owner, StreamItem::ConsumerReturn { delivery });
    }
}

/// A delivery handed back to this shard, which owns its partition.
pub fn returned(shard: &Rc<StreamShard>, delivery: &Delivered) {
    let part = shard
        .streams
        .borrow()
        .owned(&delivery.stream, delivery.partition);
    if let Some(part) = part {
        part.consumer_return(delivery);
    }
}
