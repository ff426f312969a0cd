//! A durable consumer's share of one partition, kept by the partition's owner: what was delivered,
//! to whom, how often, and what was acked; and the tasks that deliver and watch deadlines.
//!
//! Delivery is by credit. A member (a client connection on any shard) asks its own shard for
//! messages; that shard, the member's home, tells every partition owner how much the member may
//! still take (a grant). The owner delivers only to members it holds a grant for, round robin, one
//! message at a time, while fewer than `max_ack_pending` wait for their ack, and counts each
//! delivery against the grant. The home counts what really arrives: a delivery that finds no credit
//! left (several owners spend the same grant) comes back here and goes first in line again, as if
//! it had never been sent. A message not acked within `ack_wait` (or nak'ed) is delivered again;
//! after `max_deliver` deliveries it is dead-lettered instead, and only marked done once the copy
//! is durable. What a member holds when it leaves goes back to delivery at once.
//!
//! `tasks.rs` holds the delivery and deadline tasks.

mod tasks;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::op::AckKind;
use sluice_storage::wake::Event;
use sluice_storage::PartitionLog;

use super::checks::PublishChecks;
use super::deleted::Deleted;
use super::items::StreamItem;
use super::state::{write_durably, SavedState, StateError};
use super::StreamShard;
use crate::api::{ConsumerConfig, ConsumerPartitionInfo, DeliverPolicy};
use crate::server::ShardId;
use tasks::{deadline_loop, deliver_loop};

/// How often ack deadlines are checked.
const DEADLINE_TICK: Duration = Duration::from_millis(20);

/// Most bytes read from the log per delivery round.
const READ_BYTES: usize = 256 * 1024;

/// A guess at a record's size before the first read measures it.
const RECORD_BYTES_GUESS: usize = 1024;

/// How often a consumer whose state changed writes it down.
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// How long a message whose dead-letter copy could not be stored waits before the next try.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// A client connection attached to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub shard: ShardId,
    pub conn: u64,
    pub sid: u64,
}

impl Member {
    fn same_conn(&self, shard: ShardId, conn: u64) -> bool {
        self.shard == shard && self.conn == conn
    }
}

/// One delivery on its way to a member's home shard, or back from it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub stream: Arc<str>,
    pub consumer: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    /// The delivery count it was sent with.
    pub delivered: u32,
    pub member: Member,
    /// This delivery's sequence among the consumer's deliveries in the partition.
    pub consumer_seq: u64,
    /// When the message was stored, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Messages not yet delivered after this one.
    pub pending: u64,
}

/// A member and what its home last said it may still take.
struct Granted {
    member: Member,
    grant: u64,
}

/// A delivered, unacked message (or one whose holder gave it back and that waits in line again).
struct Delivery {
    count: u32,
    deadline: Instant,
    /// Who it was last delivered to.
    holder: Option<Member>,
    /// Whether `holder` still has it; if not, it waits in `redeliver`.
    held: bool,
    /// A dead-letter copy is being stored.
    dead_lettering: bool,
}

/// Where the next delivery comes from.
#[derive(Clone, Copy)]
enum Source {
    /// Handed back unseen by a member's home: first in line, in offset order.
    Returned(u64),
    /// Due again (ack wait, nak, or its member left).
    Redeliver(u64),
    /// Never delivered.
    Next(u64),
}

/// The consumer's state in one partition.
pub struct PartConsumer {
    pub config: Arc<ConsumerConfig>,
    stream: Arc<str>,
    name: Arc<str>,
    pub partition: u32,
    log: Rc<PartitionLog>,
    members: RefCell<Vec<Granted>>,
    next_member: Cell<usize>,
    /// The next offset never delivered.
    next: Cell<u64>,
    /// Every offset below is acked.
    floor: Cell<u64>,
    acked: RefCell<BTreeSet<u64>>,
    pending: RefCell<BTreeMap<u64, Delivery>>,
    redeliver: RefCell<VecDeque<u64>>,
    returned: RefCell<BTreeSet<u64>>,
    redelivered: Cell<u64>,
    dead_lettered: Cell<u64>,
    /// Deliveries made, redeliveries included.
    delivered_seq: Cell<u64>,
    /// Subjects it takes (a JetStream filter); empty: all.
    filters: Vec<String>,
    /// How its deliveries are acked: each (the default), every one up to an acked one, or none.
    ack_policy: sluice_protocol::jetstream::json::AckPolicy,
    /// The ack wait of each delivery, by delivery count (a JetStream backoff); the last one
    /// serves every later delivery. Empty: the ack wait.
    backoff: Vec<Duration>,
    /// The last message of each subject a `LastPerSubject` consumer starts with: first in line,
    /// though below its ack floor, until delivered.
    seeds: RefCell<BTreeSet<u64>>,
    /// The partition's publish checks (a JetStream stream's subjects), to count what a filter
    /// has not yet delivered.
    checks: Rc<RefCell<Option<PublishChecks>>>,
    /// The partition's messages deleted from the middle: never delivered.
    deleted: Rc<RefCell<Deleted>>,
    /// Average record size of the last read: a round reads about what the grants allow.
    record_bytes: Cell<usize>,
    /// Woken when delivery may proceed: a grant came, an ack freed room, a message is due again.
    wake: Event,
    stopped: Cell<bool>,
    /// Where the state is saved, whether it changed since, and whether a save is under way.
    state_path: PathBuf,
    dirty: Cell<bool>,
    saving: Cell<bool>,
    saved: Event,
    /// Called with each state written down: a replicated partition's consumer sends it to the
    /// other nodes.
    on_saved: RefCell<Option<OnSaved>>,
}

/// What a consumer calls with each state it writes down.
pub type OnSaved = Box<dyn Fn(&SavedState)>;

impl PartConsumer {
    /// Creates the consumer's state, at the position its deliver policy names or as `saved` left it,
    /// and starts delivering. Messages that were delivered but unacked when it was saved are
    /// delivered again first. With `from_first` (its saved state was unreadable), it starts at the
    /// log's first offset whatever its policy: redelivering beats skipping.
    ///
    /// A consumer created here for the first time (no `saved`) is written down durably before it
    /// delivers anything, with the start position its policy resolved to now: after a crash it
    /// resumes there, not at a position its policy would name later (`New` would skip what came
    /// in between). If that write fails, nothing is started and the error is returned.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        shard: &Rc<StreamShard>,
        config: Arc<ConsumerConfig>,
        partition: u32,
        log: Rc<PartitionLog>,
        appended: Rc<Event>,
        state_path: PathBuf,
        saved: Option<SavedState>,
        from_first: bool,
        deleted: Rc<RefCell<Deleted>>,
        lasts: Vec<u64>,
        checks: Rc<RefCell<Option<PublishChecks>>>,
    ) -> Result<Rc<PartConsumer>, StateError> {
        let filters = config
            .jetstream
            .as_ref()
            .map(|j| j.filters().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        let ack_policy = config
            .jetstream
            .as_ref()
            .map_or(Default::default(), |j| j.ack_policy);
        let backoff = config
            .jetstream
            .as_ref()
            .and_then(|j| j.backoff.as_ref())
            .map(|b| {
                b.iter()
                    .map(|&ns| Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let start = match config.deliver {
            _ if from_first => log.first_offset(),
            DeliverPolicy::All => log.first_offset(),
            DeliverPolicy::New => log.next_offset(),
            DeliverPolicy::Offset(o) => o.max(log.first_offset()),
            DeliverPolicy::Time(t) => log.offset_for_time(t).await.unwrap_or(log.next_offset()),
            // The last of each subject go first in line (below), then what is new.
            DeliverPolicy::LastPerSubject => log.next_offset(),
        };
        let first_in_line: BTreeSet<u64> = match (&config.deliver, &saved) {
            (DeliverPolicy::LastPerSubject, None) if !from_first => lasts.into_iter().collect(),
            _ => BTreeSet::new(),
        };
        let now = Instant::now();
        let saved_deliveries = saved.as_ref().map_or(&[][..], |s| &s.deliveries[..]);
        let consumer = Rc::new(PartConsumer {
            stream: Arc::from(config.stream.as_str()),
            name: Arc::from(config.name.as_str()),
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
            pending: RefCell::new(
                saved_deliveries
                    .iter()
                    .map(|&(offset, count)| {
                        let d = Delivery {
                            count,
                            deadline: now,
                            holder: None,
                            held: false,
                            dead_lettering: false,
                        };
                        (offset, d)
                    })
                    .collect(),
            ),
            redeliver: RefCell::new(saved_deliveries.iter().map(|&(o, _)| o).collect()),
            seeds: RefCell::new(first_in_line.clone()),
            checks,
            returned: RefCell::new(first_in_line),
            redelivered: Cell::new(saved.as_ref().map_or(0, |s| s.redelivered)),
            dead_lettered: Cell::new(saved.as_ref().map_or(0, |s| s.dead_lettered)),
            delivered_seq: Cell::new(saved.as_ref().map_or(0, |s| s.delivered_seq)),
            filters,
            ack_policy,
            backoff,
            deleted,
            record_bytes: Cell::new(RECORD_BYTES_GUESS),
            wake: Event::default(),
            stopped: Cell::new(false),
            state_path,
            dirty: Cell::new(saved.is_none()),
            saving: Cell::new(false),
            saved: Event::default(),
            on_saved: RefCell::new(None),
        });
        if consumer.dirty.get() {
            // New: durable before the first delivery, so that no delivery outlives its record.
            consumer.write_state().await?;
        }
        glommio::spawn_local(deliver_loop(shard.clone(), consumer.clone(), appended)).detach();
        glommio::spawn_local(deadline_loop(shard.clone(), consumer.clone())).detach();
        Ok(consumer)
    }

    /// Adds a member (again: its subscription id may have changed) with what it may take.
    pub fn join(&self, member: Member, grant: u64) {
        let mut members = self.members.borrow_mut();
        members.retain(|g| !g.member.same_conn(member.shard, member.conn));
        members.push(Granted { member, grant });
        drop(members);
        self.wake.notify_all();
    }

    /// Sets what a member may still take, as its home counts it. Whether the member is here.
    pub fn grant(&self, member: Member, credit: u64) -> bool {
        let mut members = self.members.borrow_mut();
        let Some(g) = members
            .iter_mut()
            .find(|g| g.member.same_conn(member.shard, member.conn))
        else {
            return false;
        };
        g.member = member;
        g.grant = credit;
        drop(members);
        self.wake.notify_all();
        true
    }

    /// Whether it has members, or deliveries a member still holds.
    pub fn may_have_members(&self) -> bool {
        !self.members.borrow().is_empty() || self.pending.borrow().values().any(|d| d.held)
    }

    /// Removes a connection's membership; whatever it held and had not acked goes back to
    /// delivery at once.
    pub fn leave(&self, shard: ShardId, conn: u64) {
        self.members
            .borrow_mut()
            .retain(|g| !g.member.same_conn(shard, conn));
        let now = Instant::now();
        let mut released = 0;
        for (offset, d) in self.pending.borrow_mut().iter_mut() {
            let holds = d.held && d.holder.is_some_and(|m| m.same_conn(shard, conn));
            if holds && !d.dead_lettering {
                d.held = false;
                // Due now: the deadline tick dead-letters it if it is out of deliveries.
                d.deadline = now;
                if d.count < self.max_deliver() {
                    self.redeliver.borrow_mut().push_back(*offset);
                }
                released += 1;
            }
        }
        if released > 0 {
            tracing::debug!(stream = %self.stream, consumer = %self.name, partition = self.partition,
                conn, released, "a member left: what it held goes to the others");
            self.dirty.set(true);
        }
        self.wake.notify_all();
    }

    /// A delivery that reached its member's home with no credit left comes back: it goes first in
    /// line again and its delivery is undone, as if it had never been sent.
    pub fn on_return(&self, back: &Delivered) {
        let mut pending = self.pending.borrow_mut();
        let Some(d) = pending.get_mut(&back.offset) else {
            return;
        };
        if d.holder != Some(back.member) || d.count != back.delivered || d.dead_lettering {
            return; // Delivered again since, or acked: this return is stale.
        }
        d.count -= 1;
        if back.delivered > 1 {
            self.redelivered
                .set(self.redelivered.get().saturating_sub(1));
        }
        let was_held = d.held;
        d.held = false;
        if d.count == 0 {
            pending.remove(&back.offset);
        }
        drop(pending);
        if was_held {
            self.returned.borrow_mut().insert(back.offset);
        }
        self.dirty.set(true);
        self.wake.notify_all();
    }

    /// Applies an ack, nak, progress or term for `offset`.
    pub fn on_ack(&self, offset: u64, kind: AckKind, delay: Duration) {
        let now = Instant::now();
        match kind {
            AckKind::Ack | AckKind::Term
                if self.ack_policy == sluice_protocol::jetstream::json::AckPolicy::All =>
            {
                // An ack covers every delivery up to it.
                let covered: Vec<u64> = self
                    .pending
                    .borrow()
                    .range(..=offset)
                    .filter(|(_, d)| !d.dead_lettering)
                    .map(|(o, _)| *o)
                    .collect();
                for o in covered {
                    self.pending.borrow_mut().remove(&o);
                    self.mark_acked(o);
                }
            }
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

    /// Calls `f` with each state written down from now on, and once now with the current one.
    pub fn on_saved(&self, f: OnSaved) {
        f(&self.snapshot());
        *self.on_saved.borrow_mut() = Some(f);
    }

    fn snapshot(&self) -> SavedState {
        SavedState {
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
            delivered_seq: self.delivered_seq.get(),
        }
    }

    /// Writes the state down if it changed, durably, on a blocking thread; one save at a time.
    /// Returns once this save (or the one under way) is done.
    pub async fn save(&self) {
        if let Err(e) = self.write_state().await {
            tracing::warn!(stream = %self.stream, consumer = %self.name,
                partition = self.partition, error = %e, "consumer state not saved");
        }
    }

    /// The state as it is now (for sending to the other nodes between writes).
    pub fn state_now(&self) -> SavedState {
        self.snapshot()
    }

    /// `save`, returning whether the write failed; the state stays dirty if it did.
    async fn write_state(&self) -> Result<(), StateError> {
        self.saved.wait_until(|| !self.saving.get()).await;
        if !self.dirty.replace(false) {
            return Ok(());
        }
        self.saving.set(true);
        let state = self.snapshot();
        let path = self.state_path.clone();
        let written = glommio::executor()
            .spawn_blocking(move || write_durably(&path, &state).map(|()| state))
            .await;
        self.saving.set(false);
        self.saved.notify_all();
        match written {
            Ok(state) => {
                if let Some(on_saved) = self.on_saved.borrow().as_ref() {
                    on_saved(&state);
                }
                Ok(())
            }
            Err(e) => {
                self.dirty.set(true);
                Err(e)
            }
        }
    }

    fn mark_acked(&self, offset: u64) {
        self.dirty.set(true);
        if offset < self.floor.get() {
            return;
        }
        self.acked.borrow_mut().insert(offset);
        self.walk_floor();
    }

    /// Moves the floor over the acked offsets just above it.
    fn walk_floor(&self) {
        let mut floor = self.floor.get();
        let mut acked = self.acked.borrow_mut();
        while acked.remove(&floor) {
            floor += 1;
        }
        self.floor.set(floor);
    }

    fn is_acked(&self, offset: u64) -> bool {
        offset < self.floor.get() || self.acked.borrow().contains(&offset)
    }

    /// Retention removed messages below the log's first offset: the floor and the next offset move
    /// up to it, and nothing below is acked, pending or waiting any more.
    fn skip_removed(&self) {
        let first = self.log.first_offset();
        if self.floor.get() >= first {
            return;
        }
        tracing::info!(stream = %self.stream, consumer = %self.name, partition = self.partition,
            floor = self.floor.get(), first, "retention passed the ack floor: moving it up");
        self.floor.set(first);
        self.next.set(self.next.get().max(first));
        let above = self.acked.borrow_mut().split_off(&first);
        *self.acked.borrow_mut() = above;
        let above = self.pending.borrow_mut().split_off(&first);
        *self.pending.borrow_mut() = above;
        self.redeliver.borrow_mut().retain(|&o| o >= first);
        let above = self.returned.borrow_mut().split_off(&first);
        *self.returned.borrow_mut() = above;
        self.walk_floor();
        self.dirty.set(true);
        self.wake.notify_all();
    }

    /// The ack wait; the API refuses one too long to convert, so the fallback (the longest wait
    /// there can be) only serves consumers saved before that check.
    fn ack_wait(&self) -> Duration {
        self.config
            .ack_wait()
            .unwrap_or(Duration::from_millis(crate::api::ACK_WAIT_MS_MAX))
    }

    /// How long the `count`th delivery waits for its ack: the backoff's step for it, if any.
    fn wait_for(&self, count: u32) -> Duration {
        let step = usize::try_from(count.saturating_sub(1)).unwrap_or(usize::MAX);
        match self.backoff.get(step).or(self.backoff.last()) {
            Some(wait) if !wait.is_zero() => *wait,
            _ => self.ack_wait(),
        }
    }

    fn max_deliver(&self) -> u32 {
        self.config.max_deliver.max(1)
    }

    fn max_ack_pending(&self) -> usize {
        usize::try_from(self.config.max_ack_pending.max(1)).unwrap_or(usize::MAX)
    }

    /// Whether the consumer passes over a record: deleted, or on a subject outside its filters.
    fn passes_over(&self, record: &sluice_storage::Record) -> bool {
        if self.deleted.borrow().contains(record.offset) {
            return true;
        }
        if self.filters.is_empty() {
            return false;
        }
        let Ok(frame) = sluice_protocol::Frame::check(record.body.clone(), u32::MAX) else {
            return false;
        };
        let sluice_protocol::ArchivedOp::Pub(publish) = frame.op() else {
            return false;
        };
        let subject = publish.subject();
        !self
            .filters
            .iter()
            .any(|f| sluice_protocol::subject::matches(f, subject))
    }

    /// Messages at or past `next` that the consumer takes: all of them without a filter; with
    /// one, those its subjects match, where the partition keeps its subjects' offsets.
    fn undelivered(&self) -> u64 {
        let end = self.log.next_offset();
        let next = self.next.get();
        if !self.filters.is_empty() {
            if let Some(count) = self
                .checks
                .borrow()
                .as_ref()
                .and_then(|c| c.count_matching_from(&self.filters, next))
            {
                return count;
            }
        }
        end.saturating_sub(next)
    }

    /// The consumer's counts in this partition.
    pub fn info(&self) -> ConsumerPartitionInfo {
        let waiting = self.redeliver.borrow().len() + self.returned.borrow().len();
        ConsumerPartitionInfo {
            partition: self.partition,
            pending: self.undelivered() + waiting as u64,
            ack_pending: self.pending.borrow().len() as u64,
            redelivered: self.redelivered.get(),
            ack_floor: self.floor.get(),
            dead_lettered: self.dead_lettered.get(),
            next: self.next.get(),
            delivered_seq: self.delivered_seq.get(),
            config: Some(Box::new((*self.config).clone())),
        }
    }

    /// Stops delivering (the broker is stopping or the stream going away).
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake.notify_all();
    }

    /// Waits until no save is under way (before the partition's files are deleted).
    pub async fn wait_saved(&self) {
        self.saved.wait_until(|| !self.saving.get()).await;
    }

    /// Stops delivering and saves the state.
    pub async fn stop_and_save(&self) {
        self.stop();
        self.save().await;
    }

    fn has_room(&self) -> bool {
        self.pending.borrow().len() < self.max_ack_pending()
    }

    fn can_deliver(&self) -> bool {
        self.members.borrow().iter().any(|g| g.grant > 0)
            && (!self.redeliver.borrow().is_empty()
                || (self.has_room()
                    && (!self.returned.borrow().is_empty()
                        || self.next.get() < self.log.next_offset())))
    }

    /// Bytes worth reading for one round: about what the grants and `max_ack_pending` allow, so
    /// that a small grant does not read a large batch only to leave most of it.
    fn read_bytes(&self) -> usize {
        let granted: u64 = self.members.borrow().iter().map(|g| g.grant).sum();
        let room = self
            .max_ack_pending()
            .saturating_sub(self.pending.borrow().len());
        let records = (granted.min(room as u64) as usize).max(1);
        records
            .saturating_mul(self.record_bytes.get())
            .min(READ_BYTES)
    }

    /// The next member with a grant, round robin; its grant is spent by one.
    fn pick_member(&self) -> Option<Member> {
        let mut members = self.members.borrow_mut();
        let n = members.len();
        let start = self.next_member.get();
        for i in 0..n {
            let index = (start + i) % n;
            let g = &mut members[index];
            if g.grant > 0 {
                g.grant -= 1;
                self.next_member.set(index + 1);
                return Some(g.member);
            }
        }
        None
    }

    /// Where the next delivery comes from; offsets acked or dead-lettered meanwhile are dropped.
    fn next_source(&self) -> Option<Source> {
        loop {
            let Some(&offset) = self.returned.borrow().first() else {
                break;
            };
            let seed = self.seeds.borrow().contains(&offset);
            if (self.is_acked(offset) && !seed) || self.is_dead_lettering(offset) {
                self.returned.borrow_mut().pop_first();
                continue;
            }
            if self.pending.borrow().contains_key(&offset) || self.has_room() {
                return Some(Source::Returned(offset));
            }
            break;
        }
        loop {
            let Some(&offset) = self.redeliver.borrow().front() else {
                break;
            };
            let out_of_deliveries = self
                .pending
                .borrow()
                .get(&offset)
                .is_some_and(|d| d.count >= self.max_deliver() || d.held);
            if self.is_acked(offset) || self.is_dead_lettering(offset) || out_of_deliveries {
                self.redeliver.borrow_mut().pop_front();
                continue;
            }
            return Some(Source::Redeliver(offset));
        }
        (self.has_room() && self.next.get() < self.log.next_offset())
            .then(|| Source::Next(self.next.get()))
    }

    fn is_dead_lettering(&self, offset: u64) -> bool {
        self.pending
            .borrow()
            .get(&offset)
            .is_some_and(|d| d.dead_lettering)
    }

    /// Records the delivery of `offset` to `member`; returns its delivery count.
    fn record_delivery(&self, offset: u64, member: Member) -> u32 {
        let now = Instant::now();
        let count = {
            let mut pending = self.pending.borrow_mut();
            let d = pending.entry(offset).or_insert(Delivery {
                count: 0,
                deadline: now,
                holder: None,
                held: false,
                dead_lettering: false,
            });
            d.count += 1;
            d.deadline = now + self.wait_for(d.count);
            d.holder = Some(member);
            d.held = true;
            d.count
        };
        if count > 1 {
            self.redelivered.set(self.redelivered.get() + 1);
        }
        self.dirty.set(true);
        count
    }
}
