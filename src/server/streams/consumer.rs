//! A durable consumer's share of one partition, kept by the partition's owner: what was delivered,
//! to whom, how often, and what was acked; and the task that delivers.
//!
//! Delivery is pushed to the consumer's members (client connections on any shard), one message to
//! one member at a time, round robin, while fewer than `max_ack_pending` messages wait for their ack.
//! A message not acked within `ack_wait` (or nak'ed) is delivered again; after `max_deliver`
//! deliveries it is dead-lettered instead.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::op::{AckKind, Op, StreamMsg};
use sluice_storage::wake::Event;
use sluice_storage::PartitionLog;

use crate::api::{ConsumerConfig, ConsumerPartitionInfo, DeliverPolicy};
use crate::server::mesh::MeshItem;
use crate::server::shard::Shard;
use crate::server::ShardId;

/// How often ack deadlines are checked.
const DEADLINE_TICK: Duration = Duration::from_millis(20);

/// Bytes read from the log per delivery round.
const READ_BYTES: usize = 256 * 1024;

/// How often a consumer whose state changed writes it down.
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// A consumer's state as written to `<partition dir>/consumers/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedState {
    pub config: ConsumerConfig,
    pub next: u64,
    pub floor: u64,
    /// Acked offsets above the floor.
    pub acked: Vec<u64>,
    /// Delivered, unacked offsets and how often each was delivered.
    pub deliveries: Vec<(u64, u32)>,
    pub redelivered: u64,
    pub dead_lettered: u64,
}

/// A client connection attached to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub shard: ShardId,
    pub conn: u64,
    pub sid: u64,
}

struct Delivery {
    count: u32,
    deadline: Instant,
}

/// The consumer's state in one partition.
pub struct PartConsumer {
    pub config: Arc<ConsumerConfig>,
    pub partition: u32,
    log: Rc<PartitionLog>,
    members: RefCell<Vec<Member>>,
    next_member: Cell<usize>,
    /// The next offset never delivered.
    next: Cell<u64>,
    /// Every offset below is acked.
    floor: Cell<u64>,
    acked: RefCell<BTreeSet<u64>>,
    pending: RefCell<BTreeMap<u64, Delivery>>,
    redeliver: RefCell<VecDeque<u64>>,
    redelivered: Cell<u64>,
    dead_lettered: Cell<u64>,
    /// Woken when delivery may proceed: a member joined, an ack freed room, a message is due again,
    /// or new messages were stored.
    pub wake: Event,
    stopped: Cell<bool>,
    /// Where the state is saved, and whether it changed since.
    state_path: PathBuf,
    dirty: Cell<bool>,
}

impl PartConsumer {
    /// The file a consumer's state is saved in.
    pub fn state_path(partition_dir: &Path, name: &str) -> PathBuf {
        partition_dir.join("consumers").join(format!("{name}.json"))
    }

    /// Creates the consumer's state, at the position its deliver policy names or as `saved` left it,
    /// and starts delivering. Messages that were delivered but unacked when it was saved are
    /// delivered again first.
    pub async fn start(
        shard: &Rc<Shard>,
        config: Arc<ConsumerConfig>,
        partition: u32,
        log: Rc<PartitionLog>,
        appended: Rc<Event>,
        state_path: PathBuf,
        saved: Option<SavedState>,
    ) -> Rc<PartConsumer> {
        let start = match config.deliver {
            DeliverPolicy::All => log.first_offset(),
            DeliverPolicy::New => log.next_offset(),
            DeliverPolicy::Offset(o) => o.max(log.first_offset()),
            DeliverPolicy::Time(t) => log.offset_for_time(t).await.unwrap_or(log.next_offset()),
        };
        let now = Instant::now();
        let consumer = Rc::new(PartConsumer {
            config,
            partition,
            log,
            members: RefCell::new(Vec::new()),
            next_member: Cell::new(0),
            next: Cell::new(saved.as_ref().map_or(start, |s| s.next)),
            floor: Cell::new(saved.as_ref().map_or(start, |s| s.floor)),
            acked: RefCell::new(
                saved
                    .as_ref()
                    .map_or_else(BTreeSet::new, |s| s.acked.iter().copied().collect()),
            ),
            pending: RefCell::new(saved.as_ref().map_or_else(BTreeMap::new, |s| {
                s.deliveries
                    .iter()
                    .map(|&(offset, count)| {
                        (
                            offset,
                            Delivery {
                                count,
                                deadline: now,
                            },
                        )
                    })
                    .collect()
            })),
            redeliver: RefCell::new(saved.as_ref().map_or_else(VecDeque::new, |s| {
                s.deliveries.iter().map(|&(offset, _)| offset).collect()
            })),
            redelivered: Cell::new(saved.as_ref().map_or(0, |s| s.redelivered)),
            dead_lettered: Cell::new(saved.as_ref().map_or(0, |s| s.dead_lettered)),
            wake: Event::default(),
            stopped: Cell::new(false),
            state_path,
            dirty: Cell::new(saved.is_none()),
        });
        glommio::spawn_local(deliver_loop(shard.clone(), consumer.clone(), appended)).detach();
        glommio::spawn_local(deadline_loop(shard.clone(), consumer.clone())).detach();
        consumer
    }

    /// Adds a member (again: its subscription id may have changed).
    pub fn join(&self, member: Member) {
        let mut members = self.members.borrow_mut();
        members.retain(|m| !(m.shard == member.shard && m.conn == member.conn));
        members.push(member);
        drop(members);
        self.wake.notify_all();
    }

    /// Removes a connection's membership; what it had not acked is delivered again after ack_wait.
    pub fn leave(&self, shard: ShardId, conn: u64) {
        self.members
            .borrow_mut()
            .retain(|m| !(m.shard == shard && m.conn == conn));
    }

    /// Applies an ack, nak, progress or term for `offset`.
    pub fn on_ack(&self, offset: u64, kind: AckKind, delay: Duration) {
        let now = Instant::now();
        match kind {
            AckKind::Ack | AckKind::Term => {
                if self.pending.borrow_mut().remove(&offset).is_none() {
                    return;
                }
                self.mark_acked(offset);
            }
            AckKind::Nak => {
                if let Some(d) = self.pending.borrow_mut().get_mut(&offset) {
                    d.deadline = now + delay;
                }
            }
            AckKind::Progress => {
                if let Some(d) = self.pending.borrow_mut().get_mut(&offset) {
                    d.deadline = now + self.ack_wait();
                }
            }
        }
        self.wake.notify_all();
    }

    /// Writes the state down (write to a temporary file, then rename). Not synced: after a machine
    /// crash a consumer may redeliver what it had acked, never lose what it had not.
    pub fn save(&self) {
        if !self.dirty.replace(false) {
            return;
        }
        let state = SavedState {
            config: (*self.config).clone(),
            next: self.next.get(),
            floor: self.floor.get(),
            acked: self.acked.borrow().iter().copied().collect(),
            deliveries: self
                .pending
                .borrow()
                .iter()
                .map(|(o, d)| (*o, d.count))
                .collect(),
            redelivered: self.redelivered.get(),
            dead_lettered: self.dead_lettered.get(),
        };
        let written = (|| -> std::io::Result<()> {
            if let Some(dir) = self.state_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.state_path.with_extension("json.tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&state).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&tmp, &self.state_path)
        })();
        if let Err(e) = written {
            self.dirty.set(true);
            tracing::warn!(path = %self.state_path.display(), error = %e, "consumer state not saved");
        }
    }

    fn mark_acked(&self, offset: u64) {
        self.dirty.set(true);
        let mut acked = self.acked.borrow_mut();
        acked.insert(offset);
        let mut floor = self.floor.get();
        while acked.remove(&floor) {
            floor += 1;
        }
        self.floor.set(floor);
    }

    fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.config.ack_wait_ms.max(1))
    }

    /// The consumer's counts in this partition.
    pub fn info(&self) -> ConsumerPartitionInfo {
        let end = self.log.next_offset();
        ConsumerPartitionInfo {
            partition: self.partition,
            pending: end.saturating_sub(self.next.get()) + self.redeliver.borrow().len() as u64,
            ack_pending: self.pending.borrow().len() as u64,
            redelivered: self.redelivered.get(),
            ack_floor: self.floor.get(),
            dead_lettered: self.dead_lettered.get(),
        }
    }

    /// Stops delivering and saves the state (the broker is stopping or the stream going away).
    pub fn stop(&self) {
        self.stopped.set(true);
        self.save();
        self.wake.notify_all();
    }

    fn can_deliver(&self) -> bool {
        !self.members.borrow().is_empty()
            && self.pending.borrow().len() < self.config.max_ack_pending.max(1) as usize
            && (!self.redeliver.borrow().is_empty() || self.next.get() < self.log.next_offset())
    }

    fn pick_member(&self) -> Option<Member> {
        let members = self.members.borrow();
        if members.is_empty() {
            return None;
        }
        let i = self.next_member.get() % members.len();
        self.next_member.set(i + 1);
        Some(members[i])
    }
}

async fn deliver_loop(shard: Rc<Shard>, c: Rc<PartConsumer>, appended: Rc<Event>) {
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
        let again = c.redeliver.borrow_mut().pop_front();
        let from = again.unwrap_or(c.next.get());
        let records = match c.log.read(from, READ_BYTES).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(stream = %c.config.stream, consumer = %c.config.name,
                    partition = c.partition, offset = from, error = %e, "consumer read failed");
                if let sluice_storage::StorageError::OffsetOutOfRange { start, .. } = e {
                    // Retention removed what was not yet delivered: skip to the start.
                    c.next.set(c.next.get().max(start));
                } else {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        for record in records {
            if again.is_some() && record.offset != from {
                break;
            }
            if again.is_none() && record.offset != c.next.get() {
                break;
            }
            if c.pending.borrow().len() >= c.config.max_ack_pending.max(1) as usize
                && again.is_none()
            {
                break;
            }
            let Some(member) = c.pick_member() else {
                if let Some(offset) = again {
                    c.redeliver.borrow_mut().push_front(offset);
                }
                break;
            };
            let count = {
                let mut pending = c.pending.borrow_mut();
                let entry = pending.entry(record.offset).or_insert(Delivery {
                    count: 0,
                    deadline: Instant::now(),
                });
                entry.count += 1;
                entry.deadline = Instant::now() + c.ack_wait();
                entry.count
            };
            if count > 1 {
                c.redelivered.set(c.redelivered.get() + 1);
            }
            c.dirty.set(true);
            if again.is_none() {
                c.next.set(record.offset + 1);
            }
            let header = shard.encode(&Op::StreamMsg(StreamMsg {
                sid: member.sid,
                partition: c.partition,
                offset: record.offset,
                delivered: count,
            }));
            deliver(&shard, member, header, record.body);
            if again.is_some() {
                break;
            }
        }
    }
}

/// Sends a consumer message to a member, here or on its shard.
fn deliver(shard: &Rc<Shard>, member: Member, header: Bytes, frame: Bytes) {
    if member.shard == shard.id {
        if let Some(conn) = shard.conn(member.conn) {
            conn.out.push2(&header, &frame);
        }
    } else {
        shard.push_to(
            member.shard,
            MeshItem::Deliver {
                conn: member.conn,
                header,
                frame,
            },
        );
    }
}

/// Moves messages whose ack wait ran out back to delivery, or to the dead letters.
async fn deadline_loop(shard: Rc<Shard>, c: Rc<PartConsumer>) {
    let mut last_save = Instant::now();
    while !c.stopped.get() {
        glommio::timer::sleep(DEADLINE_TICK).await;
        let now = Instant::now();
        if now.duration_since(last_save) >= SAVE_EVERY {
            c.save();
            last_save = now;
        }
        let due: Vec<(u64, u32)> = c
            .pending
            .borrow()
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(o, d)| (*o, d.count))
            .collect();
        if due.is_empty() {
            continue;
        }
        for (offset, count) in due {
            if count >= c.config.max_deliver.max(1) {
                c.pending.borrow_mut().remove(&offset);
                c.mark_acked(offset);
                c.dead_lettered.set(c.dead_lettered.get() + 1);
                super::dead_letter(&shard, &c.config, c.partition, offset, count, c.log.clone());
            } else if !c.redeliver.borrow().contains(&offset) {
                // Push the deadline out so that it is queued once.
                if let Some(d) = c.pending.borrow_mut().get_mut(&offset) {
                    d.deadline = now + c.ack_wait();
                }
                c.redeliver.borrow_mut().push_back(offset);
            }
        }
        c.wake.notify_all();
    }
}
