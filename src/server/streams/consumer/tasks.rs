//! A consumer's tasks in one partition: delivering what its members' credit allows, and watching
//! the ack deadlines (redelivery, dead letters, saving the state).

use super::*;
use crate::server::streams::kafka::subject_of;
use crate::server::streams::partition::kafka::as_publishes;

pub(super) async fn deliver_loop(shard: Rc<StreamShard>, c: Rc<PartConsumer>, appended: Rc<Event>) {
    loop {
        // New messages wake us through `appended`; everything else through `c.wake`.
        futures_lite::future::or(
            c.wake.wait_until(|| c.stopped.get() || c.can_deliver()),
            appended.wait_until(|| c.stopped.get() || c.can_deliver()),
        )
        .await;
        if c.stopped.get() {
            return;
        }
        let Some(source) = c.next_source() else {
            // Only stale queue entries were left; they are gone now.
            glommio::yield_if_needed().await;
            continue;
        };
        let (from, bytes) = match source {
            Source::Returned(o) | Source::Next(o) => (o, c.read_bytes()),
            Source::Redeliver(o) => (o, 1),
        };
        let records = match c.log.read(from, bytes).await {
            Ok(records) => {
                // Kafka record batches are delivered one Kafka record at a time.
                let records = as_publishes(records, from, || {
                    let config = shard.streams.borrow().config(&c.stream);
                    config.map_or_else(|| c.stream.replace('~', "."), |c| subject_of(&c))
                });
                let total: usize = records.iter().map(|r| r.body.len()).sum();
                if let Some(average) = total.checked_div(records.len()) {
                    c.record_bytes.set(average.max(1));
                }
                records
            }
            Err(e) => {
                tracing::warn!(stream = %c.stream, consumer = %c.name,
                    partition = c.partition, offset = from, error = %e, "consumer read failed");
                if let sluice_storage::StorageError::OffsetOutOfRange { .. } = e {
                    c.skip_removed();
                } else {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        for record in records {
            let offset = record.offset;
            // A message the consumer does not take (deleted, or outside its filter) is passed
            // over as if acked.
            if matches!(source, Source::Next(_)) && c.next.get() == offset && c.passes_over(&record)
            {
                c.next.set(offset + 1);
                c.mark_acked(offset);
                continue;
            }
            let wanted = match source {
                Source::Returned(_) => c.returned.borrow().first() == Some(&offset),
                Source::Redeliver(o) => o == offset,
                Source::Next(_) => c.next.get() == offset,
            };
            let already_pending = c.pending.borrow().contains_key(&offset);
            if !wanted || (!already_pending && !c.has_room()) {
                break;
            }
            let Some(member) = c.pick_member() else {
                break;
            };
            match source {
                Source::Returned(_) => {
                    c.returned.borrow_mut().pop_first();
                    c.seeds.borrow_mut().remove(&offset);
                }
                Source::Redeliver(_) => {
                    c.redeliver.borrow_mut().pop_front();
                }
                Source::Next(_) => c.next.set(offset + 1),
            }
            let count = c.record_delivery(offset, member);
            c.delivered_seq.set(c.delivered_seq.get() + 1);
            let delivery = Delivered {
                stream: c.stream.clone(),
                consumer: c.name.clone(),
                partition: c.partition,
                offset,
                delivered: count,
                member,
                consumer_seq: c.delivered_seq.get(),
                timestamp_ns: record.timestamp_ns,
                // Not yet delivered: what is new, and what waits first in line.
                pending: c.undelivered() + c.returned.borrow().len() as u64,
            };
            // An ack-none consumer's message is acked by its member's home once written there.
            deliver(&shard, delivery, record.body);
            if matches!(source, Source::Redeliver(_)) {
                break;
            }
        }
        glommio::yield_if_needed().await;
    }
}

/// Sends a consumer message to its member's home shard (this one or another), which counts it
/// against the member's credit.
fn deliver(shard: &Rc<StreamShard>, delivery: Delivered, frame: Bytes) {
    if delivery.member.shard == shard.core.id {
        crate::server::streams::credit::arrive(shard, delivery, frame);
    } else {
        shard.push_to(
            delivery.member.shard,
            StreamItem::Deliver { delivery, frame },
        );
    }
}

/// Moves messages whose ack wait ran out back to delivery, or to the dead letters; saves the state
/// now and then.
pub(super) async fn deadline_loop(shard: Rc<StreamShard>, c: Rc<PartConsumer>) {
    let mut last_save = Instant::now();
    while !c.stopped.get() {
        glommio::timer::sleep(DEADLINE_TICK).await;
        let now = Instant::now();
        if now.duration_since(last_save) >= SAVE_EVERY && c.dirty.get() && !c.saving.get() {
            let saving = c.clone();
            glommio::spawn_local(async move { saving.save().await }).detach();
            last_save = now;
        }
        if c.floor.get() < c.log.first_offset() {
            c.skip_removed();
        }
        let due: Vec<(u64, u32, bool)> = c
            .pending
            .borrow()
            .iter()
            .filter(|(_, d)| d.deadline <= now && !d.dead_lettering)
            .map(|(o, d)| (*o, d.count, d.held))
            .collect();
        if due.is_empty() {
            continue;
        }
        for (offset, count, held) in due {
            if count >= c.max_deliver() {
                dead_letter(&shard, &c, offset, count);
            } else if held {
                // Push the deadline out so that it is queued once.
                if let Some(d) = c.pending.borrow_mut().get_mut(&offset) {
                    d.deadline = now + c.ack_wait();
                    d.held = false;
                }
                c.redeliver.borrow_mut().push_back(offset);
            }
        }
        c.wake.notify_all();
    }
}

/// Stores a dead-letter copy of `offset`; the original is done only once the copy is durable, and
/// stays pending (tried again later) if it could not be stored.
fn dead_letter(shard: &Rc<StreamShard>, c: &Rc<PartConsumer>, offset: u64, count: u32) {
    if let Some(d) = c.pending.borrow_mut().get_mut(&offset) {
        d.dead_lettering = true;
        d.held = false;
    }
    let (shard, c) = (shard.clone(), c.clone());
    glommio::spawn_local(async move {
        let stored = crate::server::streams::dead_letter(
            &shard,
            &c.config,
            c.partition,
            offset,
            count,
            c.log.clone(),
        )
        .await;
        match stored {
            Ok(()) => {
                c.pending.borrow_mut().remove(&offset);
                c.mark_acked(offset);
                c.dead_lettered.set(c.dead_lettered.get() + 1);
            }
            Err(e) => {
                tracing::warn!(stream = %c.stream, consumer = %c.name, partition = c.partition,
                    offset, error = %e, "dead-letter copy not stored; the message stays pending");
                if let Some(d) = c.pending.borrow_mut().get_mut(&offset) {
                    d.dead_lettering = false;
                    d.deadline = Instant::now() + DEAD_LETTER_RETRY;
                }
            }
        }
        c.wake.notify_all();
    })
    .detach();
}
