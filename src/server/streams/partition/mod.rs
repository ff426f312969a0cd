//! A partition this shard owns: its log, and the appends waiting for it.
//!
//! A partition is known as soon as its stream is, but its log is opened (recovered) only when
//! something needs it: the first append, read, info, consumer attach or retention round, or the
//! start's pass over the partitions that keep consumers (see `restore_consumers_at_start`). Until
//! then nothing of it is in memory but this struct, so a broker with a hundred thousand quiet
//! streams restarts without reading them. Everything that touches the log waits for `ready`,
//! which starts the opening, and the opening rebuilds the publish checks and the consumers before
//! any queued append is written: nothing is served from a partition that is half recovered.

mod consumers;
mod jetstream;
pub(super) mod kafka;
mod removal;
mod replicated;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::jetstream::seq::seq_of;
use sluice_protocol::op::AckKind;
use sluice_protocol::{ArchivedOp, ErrorCode, Frame};
use sluice_storage::wake::{Event, Latch};
use sluice_storage::{LogConfig, PartitionLog, StorageError};

use super::checks::{Incoming, Limits, Position, PublishChecks, Removal, Verdict};
use super::consumer::{Delivered, Member, PartConsumer};
use super::deleted::Deleted;
use super::items::{AckOutcome, PurgeTo};
use super::replica::{self, Group};
use super::state::{self, SavedState};
use super::StreamShard;
use super::{resolve, Done};
use crate::api::{
    ConsumerConfig, ConsumerPartitionInfo, PartitionInfo, StoredMessage, StreamConfig,
};
use crate::server::core::backlog::{Backlog, Congestion};
use crate::server::ShardId;

/// Segments per retention limit: retention deletes whole segments, so a partition keeps between
/// its limit and a quarter more.
const SEGMENTS_PER_LIMIT: u64 = 4;

/// The log settings of a stream's partitions: its retention limits, and segments small enough
/// (a quarter of a limit, within the log's bounds) for retention to act in steps.
fn log_config(fsync: sluice_storage::FsyncPolicy, stream: &StreamConfig) -> LogConfig {
    let defaults = LogConfig::default();
    let segment_bytes_max = stream.max_bytes.map_or(defaults.segment_bytes_max, |b| {
        (b / SEGMENTS_PER_LIMIT).clamp(SEGMENT_BYTES_MIN, defaults.segment_bytes_max)
    });
    // The API refuses an age whose nanoseconds would wrap; one in a registry written before that
    // check is kept as the longest age there can be rather than wrapped into a short one.
    let retention_age_max = stream.retention_age().unwrap_or_else(|_| {
        stream
            .max_age_secs
            .map(|_| Duration::from_secs(crate::api::MAX_AGE_SECS_MAX))
    });
    let segment_age_max = retention_age_max.map_or(defaults.segment_age_max, |age| {
        (age / SEGMENTS_PER_LIMIT as u32).clamp(SEGMENT_AGE_MIN, defaults.segment_age_max)
    });
    LogConfig {
        fsync,
        segment_bytes_max,
        segment_age_max,
        retention_age_max,
        retention_bytes_max: stream.max_bytes,
        ..defaults
    }
}

/// Smallest segment a retention limit makes (1 MiB): smaller ones would mostly be file overhead.
const SEGMENT_BYTES_MIN: u64 = 1024 * 1024;

/// Shortest segment age a retention limit makes.
const SEGMENT_AGE_MIN: Duration = Duration::from_millis(250);

/// Bytes stored in a partition's queue or its log and not yet durable, past which the publishers
/// feeding it wait (their reads pause): a slow disk slows its writers instead of growing memory.
/// Thirty-two group-commit rounds of 512 KiB: far more than keeps the disk busy.
pub const UNSYNCED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A partition is congested while `UNSYNCED_BYTES_MAX` bytes wait to be durable; `synced` is
/// notified as they become so.
impl Congestion for Partition {
    fn is_congested(&self) -> bool {
        Partition::is_congested(self)
    }

    fn changed(&self) -> &Event {
        &self.synced
    }
}

/// One owned partition.
pub struct Partition {
    pub config: Arc<StreamConfig>,
    pub index: u32,
    dir: PathBuf,
    log: RefCell<Option<Rc<PartitionLog>>>,
    /// Set if the log could not be opened: appends fail with it.
    failed: RefCell<Option<String>>,
    pending: RefCell<Vec<Queued>>,
    /// Whether the partition is on the shard's dirty list.
    queued: Cell<bool>,
    removed: Cell<bool>,
    /// What opening the log needs.
    opener: Opener,
    /// Where the log is in its life: closed until first use, and closed again when idle.
    state: Cell<LogState>,
    /// Operations under way that use the log (see `ready`): an idle log is not closed under them.
    users: Cell<u32>,
    /// Notified when a log that was being closed is closed.
    closed: Event,
    /// While the log is closed: when its oldest message reaches `max_age` (nanoseconds since the
    /// epoch), 0 if not known (never opened since the start), `u64::MAX` if it holds none.
    /// Retention opens a closed log only once it is due.
    expiry_due_ns: Cell<u64>,
    /// Set once opening has finished, well or not.
    opened: Latch,
    /// Notified whenever appends become durable, for consumers waiting at the end.
    appended: Rc<Event>,
    consumers: RefCell<HashMap<String, Rc<PartConsumer>>>,
    /// Bytes enqueued and not yet durable (or failed).
    unsynced_bytes: Cell<usize>,
    /// Notified when `unsynced_bytes` falls, for publishers waiting for room.
    synced: Event,
    /// Members whose attach waits for the log to open or the consumer to start, with what their
    /// home granted meanwhile. A member that leaves before its attach is done is dropped from here,
    /// so the attach finds nothing to join.
    joining: RefCell<Vec<Joining>>,
    /// Consumers whose saved state could not be read: when one is attached again it starts from
    /// the log's first offset, so that it redelivers rather than skips.
    damaged: RefCell<HashSet<String>>,
    /// Consumers whose first state write is under way; `created` is notified when one is done.
    creating: RefCell<HashSet<String>>,
    created: Event,
    /// A JetStream stream's memory of message ids and subjects, to check publishes against; set
    /// once the log is open and read back.
    checks: Rc<RefCell<Option<PublishChecks>>>,
    /// The log's first offset when the checks last forgot removed subjects.
    checks_first: Cell<u64>,
    /// A replicated JetStream partition's subjects as its agreed records left them, kept on
    /// every copy alike: what the limits per subject and rollups remove is derived from these,
    /// in the log's order, so every copy removes the same messages.
    agreed: Rc<RefCell<Option<PublishChecks>>>,
    /// One past the last record `agreed` took in.
    agreed_end: Cell<u64>,
    /// Whether agreed records are being taken in.
    agreeing: Cell<bool>,
    /// Set once a removed partition's log is closed and its data deleted.
    gone: Cell<bool>,
    /// Where a replicated partition's leader checked publishes up to: the offsets its proposals
    /// in flight will take are past the log's end. 0 once a proposal failed (the log's end
    /// is used until the next checks).
    proposed_end: Cell<u64>,
    /// Messages deleted from the middle of the partition: readers skip them.
    deleted: Rc<RefCell<Deleted>>,
    /// Idempotent Kafka producers' latest batches, to drop their retries and refuse gaps.
    producers: RefCell<kafka::Producers>,
    /// A replicated partition's consensus group, once its log is open.
    group: RefCell<Option<Rc<Group>>>,
    /// A new leader's publish checks are being read back (see `refresh_checks`).
    checks_restoring: Cell<bool>,
    /// Consumer states other nodes sent and not yet written down, by consumer (empty: deleted),
    /// and whether they are being written.
    shipped: RefCell<HashMap<String, Vec<u8>>>,
    shipped_writing: Cell<bool>,
    /// The states of this node's consumers sent to the other nodes, and which each keeps (see
    /// `consumer_ack_kept`), by consumer.
    sent: RefCell<HashMap<String, consumers::Sent>>,
    /// Notified when another node says it keeps a state this node sent.
    held: Event,
    /// Consumers whose state is about to be sent for acks waiting to be kept (`ship_now`), with
    /// the number it will go under once sent.
    shipping: RefCell<HashMap<String, Rc<consumers::Shipping>>>,
    /// Consumers this node asked the other nodes' states of, with the answers so far (`None`: that
    /// node keeps none), and the event their answers notify.
    asks: RefCell<HashMap<String, Vec<Option<SavedState>>>>,
    answered: Event,
}

/// A body waiting for the next append: the offsets it takes (a Kafka record batch takes one per
/// record, a publish one) and who waits for its ack.
pub(super) struct Queued {
    pub body: Bytes,
    pub count: u32,
    pub done: Option<Done>,
    /// Offsets before this body's own that its ack reports as its first: the last piece of a
    /// Kafka batch a replicated partition stores as one entry per record answers for the batch.
    pub back: u32,
}

/// Idle partitions looked at, to close their logs, each time one opens past the bound.
const CLOSE_IDLE_TRIES_PER_OPEN: usize = 4;

/// Bytes read at a time while rebuilding publish checks.
const RESTORE_READ_BYTES: usize = 1024 * 1024;

/// Longest a new leader waits for its entries to become durable before it checks publishes
/// without the rest (a sync that never ends stops the group anyway).
const LEADER_RESTORE_WAIT_MAX: Duration = Duration::from_secs(10);

/// How long a node taking a consumer up waits for the other nodes to say which state of it they
/// keep.
const CONSUMER_ASK_WAIT: Duration = Duration::from_millis(500);

/// The subject, header block and payload of a stored publish frame.
fn publish_parts(frame: &Frame) -> Option<(&str, &[u8], &[u8])> {
    match frame.op() {
        ArchivedOp::Pub(publish) => Some((publish.subject(), publish.headers(), publish.payload())),
        _ => None,
    }
}

/// Where a partition's log is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogState {
    /// Not open: opened on first use.
    Closed,
    Opening,
    /// Open, or failed to open (then `failed` says why).
    Open,
    /// Being closed because it was idle (`close_if_idle`); opened again on next use.
    Closing,
}

/// An operation using a partition's log: while one is alive the log is not closed for idleness.
pub(super) struct InUse<'a>(&'a Partition);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.users.set(self.0.users.get() - 1);
    }
}

/// What a partition needs to open its log later, on first use.
struct Opener {
    shard: Weak<StreamShard>,
    log_config: LogConfig,
    me: Weak<Partition>,
}

/// A member on its way in.
struct Joining {
    consumer: String,
    member: Member,
    grant: u64,
}

impl Partition {
    /// The partition's directory under the data directory.
    /// A name becomes a path only once it is checked: it can never lead out of the data directory.
    pub fn dir_of(
        data_dir: &std::path::Path,
        stream: &str,
        index: u32,
    ) -> Result<PathBuf, sluice_protocol::name::NameError> {
        super::check_stream_name(stream)?;
        Ok(data_dir
            .join("streams")
            .join(stream)
            .join(format!("{index:04}")))
    }

    /// The partition, its log not opened yet: `open` (or anything that needs the log) opens it,
    /// and appends queue until it is open.
    pub fn new(shard: &Rc<StreamShard>, config: Arc<StreamConfig>, index: u32) -> Rc<Partition> {
        let (dir, refused) =
            match Partition::dir_of(&shard.core.config.data_dir, &config.name, index) {
                Ok(dir) => (dir, None),
                Err(e) => (
                    PathBuf::new(),
                    Some(format!("stream name {:?}: {e}", config.name)),
                ),
            };
        let log_config = log_config(shard.core.config.fsync, &config);
        let part = Rc::new_cyclic(|me| Partition {
            config,
            index,
            dir,
            log: RefCell::new(None),
            failed: RefCell::new(None),
            pending: RefCell::new(Vec::new()),
            queued: Cell::new(false),
            removed: Cell::new(false),
            opener: Opener {
                shard: Rc::downgrade(shard),
                log_config,
                me: me.clone(),
            },
            state: Cell::new(LogState::Closed),
            users: Cell::new(0),
            closed: Event::default(),
            expiry_due_ns: Cell::new(0),
            opened: Latch::default(),
            appended: Rc::new(Event::default()),
            consumers: RefCell::new(HashMap::new()),
            unsynced_bytes: Cell::new(0),
            synced: Event::default(),
            joining: RefCell::new(Vec::new()),
            damaged: RefCell::new(HashSet::new()),
            creating: RefCell::new(HashSet::new()),
            created: Event::default(),
            checks: Rc::new(RefCell::new(None)),
            producers: RefCell::new(kafka::Producers::default()),
            checks_first: Cell::new(0),
            agreed: Rc::new(RefCell::new(None)),
            agreed_end: Cell::new(0),
            agreeing: Cell::new(false),
            proposed_end: Cell::new(0),
            gone: Cell::new(false),
            deleted: Rc::new(RefCell::new(Deleted::default())),
            group: RefCell::new(None),
            checks_restoring: Cell::new(false),
            shipped: RefCell::new(HashMap::new()),
            shipped_writing: Cell::new(false),
            sent: RefCell::new(HashMap::new()),
            held: Event::default(),
            shipping: RefCell::new(HashMap::new()),
            asks: RefCell::new(HashMap::new()),
            answered: Event::default(),
        });
        if let Some(why) = refused {
            tracing::error!(stream = %part.config.name, partition = index, %why, "partition refused");
            part.state.set(LogState::Open);
            *part.failed.borrow_mut() = Some(why);
            part.opened.set();
        }
        part
    }

    /// Starts opening (and recovering) the log, unless that has started already: the log is read,
    /// then the publish checks and the consumers are rebuilt from it, then queued appends go.
    pub fn open(&self) {
        if self.state.get() != LogState::Closed {
            return;
        }
        if self.removed.get() {
            self.opened.set();
            return;
        }
        let (Some(shard), Some(opening)) = (self.opener.shard.upgrade(), self.opener.me.upgrade())
        else {
            return; // The shard is going away.
        };
        self.state.set(LogState::Opening);
        shard
            .opened_logs
            .borrow_mut()
            .push_back(Rc::downgrade(&opening));
        super::close_idle_logs(&shard, CLOSE_IDLE_TRIES_PER_OPEN);
        let log_config = self.opener.log_config.clone();
        glommio::spawn_local(async move {
            // Its stream was removed and added again: the old partition's files go first.
            loop {
                let removing = shard.removing.borrow().get(&opening.dir).cloned();
                match removing {
                    Some(old) if !Rc::ptr_eq(&old, &opening) => old.wait_gone().await,
                    _ => break,
                }
            }
            match PartitionLog::open(&opening.dir, log_config).await {
                Ok(log) => {
                    tracing::debug!(stream = %opening.config.name, partition = opening.index,
                        next_offset = log.next_offset(), "partition open");
                    let log = Rc::new(log);
                    *opening.log.borrow_mut() = Some(log.clone());
                    if opening.config.is_replicated() {
                        opening.start_group(&shard, &log).await;
                    }
                    opening.restore_checks(&log).await;
                    opening.restore_producers(&log).await;
                    opening.restore_consumers(&shard, log).await;
                }
                Err(e) => {
                    tracing::error!(stream = %opening.config.name, partition = opening.index,
                        error = %e, "partition failed to open");
                    *opening.failed.borrow_mut() = Some(e.to_string());
                }
            }
            opening.state.set(LogState::Open);
            opening.opened.set();
            opening.flush(&shard);
        })
        .detach();
    }

    /// The partition's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Wakes consumers waiting at the end of the log: more of it can be read.
    pub fn notify_appended(&self) {
        self.appended.notify_all();
    }

    /// Opens the log if it is not yet, and waits until that is done (well or not). The log stays
    /// open while the returned guard lives.
    pub(super) async fn ready(&self) -> InUse<'_> {
        self.users.set(self.users.get() + 1);
        let in_use = InUse(self);
        self.open();
        self.opened.wait().await;
        in_use
    }

    /// Marks the log as in use, without waiting for it to open (for background work that only
    /// runs on an open log).
    fn in_use(&self) -> InUse<'_> {
        self.users.set(self.users.get() + 1);
        InUse(self)
    }

    /// Whether nothing uses the log: no consumer, no member on its way in, no append queued or
    /// waiting to be durable, no operation under way.
    fn is_idle(&self) -> bool {
        // A replicated partition's group keeps its log open.
        self.group.borrow().is_none()
            && self.users.get() == 0
            && self.consumers.borrow().is_empty()
            && self.joining.borrow().is_empty()
            && self.creating.borrow().is_empty()
            && self.pending.borrow().is_empty()
            && !self.queued.get()
            && self.unsynced_bytes.get() == 0
    }

    /// Whether the log is open (or failed to open) and not closing.
    pub(super) fn holds_log(&self) -> bool {
        matches!(self.state.get(), LogState::Open | LogState::Opening) && !self.removed.get()
    }

    /// Closes the log of an idle partition to give its file back; the partition opens again on its
    /// next use exactly as after a restart (the log recovered, the publish checks and the deleted
    /// list read back). Returns whether it started closing.
    pub(super) fn close_if_idle(&self) -> bool {
        if self.state.get() != LogState::Open || self.removed.get() || !self.is_idle() {
            return false;
        }
        let Some(log) = self.log.borrow_mut().take() else {
            return false; // Failed to open: nothing to give back.
        };
        let Some(part) = self.opener.me.upgrade() else {
            return false;
        };
        self.state.set(LogState::Closing);
        self.opened.reset();
        *self.checks.borrow_mut() = None;
        self.checks_first.set(0);
        *self.deleted.borrow_mut() = Deleted::default();
        self.damaged.borrow_mut().clear();
        glommio::spawn_local(async move {
            part.expiry_due_ns.set(part.expiry_due(&log).await);
            if let Err(e) = log.close().await {
                tracing::warn!(stream = %part.config.name, partition = part.index, error = %e,
                    "closing an idle partition failed");
            }
            drop(log);
            part.state.set(LogState::Closed);
            part.closed.notify_all();
            // Someone asked for it while it was closing: open it again at once.
            if part.users.get() > 0 || !part.pending.borrow().is_empty() || part.removed.get() {
                part.open();
            }
        })
        .detach();
        true
    }

    /// When the oldest message of the log reaches the stream's `max_age`: its first record's
    /// timestamp (a deleted first message only makes it earlier, never late) plus the age;
    /// `u64::MAX` if there is no age or no message, 0 (due now) if the record cannot be read.
    async fn expiry_due(&self, log: &PartitionLog) -> u64 {
        let Some(age) = self.max_age_ns() else {
            return u64::MAX;
        };
        if log.first_offset() >= log.next_offset() {
            return u64::MAX;
        }
        match log.read(log.first_offset(), 1).await {
            Ok(records) => records
                .first()
                .map_or(0, |r| r.timestamp_ns.saturating_add(age)),
            Err(_) => 0,
        }
    }

    /// The directory of the partition's saved consumers.
    pub fn consumers_dir(&self) -> PathBuf {
        state::consumers_dir(&self.dir)
    }

    /// Whether the log has not been asked for since the start: nothing of it is in memory.
    pub fn is_unopened(&self) -> bool {
        matches!(self.state.get(), LogState::Closed | LogState::Closing)
    }

    /// Whether publishers feeding this partition should wait before sending more.
    pub fn is_congested(&self) -> bool {
        self.unsynced_bytes.get() >= UNSYNCED_BYTES_MAX
    }

    /// Waits until everything enqueued so far is durable (or failed).
    pub async fn wait_synced(&self) {
        self.synced
            .wait_until(|| self.unsynced_bytes.get() == 0)
            .await
    }

    pub(super) fn synced_bytes(&self, bytes: usize) {
        self.unsynced_bytes
            .set(self.unsynced_bytes.get().saturating_sub(bytes));
        self.synced.notify_all();
    }

    /// Queues a body for the next append.
    pub fn enqueue(self: &Rc<Self>, shard: &Rc<StreamShard>, body: Bytes, done: Option<Done>) {
        self.enqueue_span(shard, body, 1, done);
    }

    /// Queues a body that takes `count` offsets (a Kafka record batch) for the next append.
    pub fn enqueue_span(
        self: &Rc<Self>,
        shard: &Rc<StreamShard>,
        body: Bytes,
        count: u32,
        done: Option<Done>,
    ) {
        self.open();
        self.unsynced_bytes
            .set(self.unsynced_bytes.get() + body.len());
        self.pending.borrow_mut().push(Queued {
            body,
            count: count.max(1),
            done,
            back: 0,
        });
        if self.is_congested() {
            shard.core.note_backlog(Backlog::Congested(self.clone()));
        }
        if !self.queued.replace(true) {
            shard.dirty_partitions.borrow_mut().push(self.clone());
        }
    }

    /// Appends everything queued as one batch, if the log is open; acks follow durability.
    pub fn flush(self: &Rc<Self>, shard: &Rc<StreamShard>) {
        self.queued.set(false);
        let failed = self.failed.borrow().clone();
        let log = self.log.borrow().clone();
        let group = self.group.borrow().clone();
        // A replicated partition's records go through its group alone: while the group starts
        // (its log already open) nothing may be appended around it.
        let starting = self.config.is_replicated() && group.is_none();
        if (log.is_none() || starting) && failed.is_none() && !self.removed.get() {
            return; // Still opening: the opener flushes.
        }
        let items = std::mem::take(&mut *self.pending.borrow_mut());
        if items.is_empty() {
            return;
        }
        let batch_bytes: usize = items.iter().map(|q| q.body.len()).sum();
        let stream: Arc<str> = Arc::from(self.config.name.as_str());
        let fail_all = |shard: &Rc<StreamShard>, items: Vec<Queued>, why: String| {
            for q in items {
                if let Some(done) = q.done {
                    resolve(
                        shard,
                        done,
                        AckOutcome::plain(
                            stream.clone(),
                            self.index,
                            Err((ErrorCode::StorageFailed, why.clone())),
                        ),
                    );
                }
            }
        };
        let Some(log) = log.filter(|_| !starting) else {
            let why = failed.unwrap_or_else(|| "the stream was removed".into());
            fail_all(shard, items, why);
            self.synced_bytes(batch_bytes);
            return;
        };
        if let Some(group) = group {
            self.submit_to_group(shard, &log, &group, items);
            return;
        }
        let (items, duplicates, removal) = self.apply_checks(shard, &log, items);
        let bodies: Vec<Bytes> = items.iter().map(|q| q.body.clone()).collect();
        match log.append_spans(&bodies, |i| items[i].count) {
            Err(e) => {
                let duplicates = duplicates.into_iter().map(|(_, done)| Queued {
                    body: Bytes::new(),
                    count: 1,
                    done: Some(done),
                    back: 0,
                });
                fail_all(
                    shard,
                    items.into_iter().chain(duplicates).collect(),
                    e.to_string(),
                );
                self.synced_bytes(batch_bytes);
            }
            Ok(ticket) => {
                // Those that asked for an answer once ordered get it now, with their offsets.
                let mut offset = ticket.first_offset();
                let mut items = items;
                for q in &mut items {
                    if let Some(Done::Ordered { .. }) = q.done {
                        if let Some(done) = q.done.take() {
                            let outcome = AckOutcome::plain(stream.clone(), self.index, Ok(offset));
                            resolve(shard, done, outcome);
                        }
                    }
                    offset += u64::from(q.count);
                }
                let part = self.clone();
                let shard = shard.clone();
                let index = self.index;
                let appended = self.appended.clone();
                glommio::spawn_local(async move {
                    let result = ticket.durable().await;
                    if result.is_ok() {
                        part.apply_removal(&log, removal).await;
                    }
                    part.trim_to_max_msgs(&log, log.next_offset()).await;
                    part.synced_bytes(batch_bytes);
                    appended.notify_all();
                    if let Err(e) = &result {
                        tracing::warn!(stream = %stream, partition = index, error = %e,
                            "append failed");
                    }
                    let mut offset = result.as_ref().map_or(0, |first| *first);
                    for q in items {
                        let at = offset;
                        offset += u64::from(q.count);
                        let Some(done) = q.done else { continue };
                        let result = match &result {
                            Ok(_) => Ok(at),
                            Err(e) => Err((ErrorCode::StorageFailed, e.to_string())),
                        };
                        resolve(
                            &shard,
                            done,
                            AckOutcome::plain(stream.clone(), index, result),
                        );
                    }
                    // A duplicate is answered once what it repeats is durable: it was stored in
                    // this batch or an earlier one, which group commit makes durable first.
                    for (offset, done) in duplicates {
                        let mut outcome = AckOutcome::plain(
                            stream.clone(),
                            index,
                            result
                                .as_ref()
                                .map(|_| offset)
                                .map_err(|e| (ErrorCode::StorageFailed, e.to_string())),
                        );
                        outcome.duplicate = true;
                        resolve(&shard, done, outcome);
                    }
                })
                .detach();
            }
        }
    }

    /// Whether opening (recovering) the log has finished.
    pub fn is_open(&self) -> bool {
        self.opened.is_set()
    }

    /// The log's latency histograms, once it is open.
    pub fn log_metrics(&self) -> Option<sluice_storage::LogMetricsSnapshot> {
        self.log.borrow().as_ref().map(|log| log.metrics())
    }

    pub async fn info(&self) -> PartitionInfo {
        let _in_use = self.ready().await;
        match self.log.borrow().as_ref() {
            Some(log) => {
                let deleted_list = self.deleted.borrow();
                // The first message still there: deleted ones at the front do not count.
                let mut first = log.first_offset();
                let next = log.next_offset();
                while first < next && deleted_list.contains(first) {
                    first += 1;
                }
                let deleted = deleted_list.count_from(first);
                drop(deleted_list);
                PartitionInfo {
                    partition: self.index,
                    // A replica whose log restarted where its leader's starts is empty, with its
                    // first offset past the agreed end it shows, until its group agrees there.
                    messages: next.saturating_sub(first).saturating_sub(deleted),
                    bytes: log.size_bytes(),
                    first_offset: first,
                    last_offset: next.checked_sub(1).filter(|_| next > first),
                }
            }
            None => PartitionInfo {
                partition: self.index,
                messages: 0,
                bytes: 0,
                first_offset: 0,
                last_offset: None,
            },
        }
    }

    /// Reads the message at `offset`.
    pub async fn get(&self, offset: u64) -> Result<StoredMessage, (ErrorCode, String)> {
        let _in_use = self.ready().await;
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            return Err((ErrorCode::NotFound, "partition is not open".into()));
        };
        if offset < log.first_offset() {
            return Err((
                ErrorCode::NotFound,
                format!("no message at offset {offset}: it was removed"),
            ));
        }
        let records = log
            .read(offset, 1)
            .await
            .map_err(|e: StorageError| (ErrorCode::StorageFailed, e.to_string()))?;
        let records = kafka::as_publishes(records, offset, || {
            crate::server::streams::kafka::subject_of(&self.config)
        });
        let record = records
            .into_iter()
            .next()
            .filter(|r| r.offset == offset && !self.deleted.borrow().contains(offset))
            .ok_or_else(|| {
                (
                    ErrorCode::NotFound,
                    format!("no message at offset {offset}"),
                )
            })?;
        let frame = Frame::check(record.body.clone(), u32::MAX)
            .map_err(|e| (ErrorCode::StorageFailed, format!("stored frame: {e}")))?;
        let ArchivedOp::Pub(publish) = frame.op() else {
            return Err((
                ErrorCode::StorageFailed,
                "stored frame is not a publish".into(),
            ));
        };
        Ok(StoredMessage {
            partition: self.index,
            offset,
            timestamp_ns: record.timestamp_ns,
            subject: publish.subject().to_string(),
            headers: publish.headers().to_vec(),
            payload: publish.payload().to_vec(),
        })
    }

    /// Applies the stream's retention limits: whole segments past their age or the byte limit,
    /// and then each message older than `max_age`, so that none outlives it by more than a
    /// retention round.
    pub async fn apply_retention(&self) {
        if self.is_unopened() {
            // Only age removes messages from a partition nothing writes to: open those whose
            // oldest message is due (or not known since the start); the next round applies it.
            let due = self.max_age_ns().is_some()
                && self.state.get() == LogState::Closed
                && sluice_storage::now_ns() >= self.expiry_due_ns.get();
            if due {
                self.open();
            }
            return;
        }
        let _in_use = self.in_use();
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            return;
        };
        let now = sluice_storage::now_ns();
        let result = log.apply_retention(now).await;
        match result {
            Ok(gone) if gone.segments > 0 => {
                tracing::info!(stream = %self.config.name, partition = self.index,
                    segments = gone.segments, bytes = gone.bytes, "retention deleted segments");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %self.config.name, partition = self.index,
                error = %e, "retention failed"),
        }
        if let Some(age) = self.max_age_ns() {
            match log.offset_for_time(now.saturating_sub(age)).await {
                Ok(young) if young > log.first_offset() => {
                    if let Err((_, e)) = self.remove_below(&log, young).await {
                        tracing::warn!(stream = %self.config.name, partition = self.index,
                            error = %e, "expiring messages failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(stream = %self.config.name, partition = self.index,
                    error = %e, "expiring messages failed"),
            }
        }
        self.checks_follow(log.first_offset());
        self.forget_deleted_below(log.first_offset()).await;
    }

    /// The stream's `max_age` in nanoseconds: a JetStream stream's own, to the nanosecond.
    fn max_age_ns(&self) -> Option<u64> {
        let exact = self.config.jetstream.as_ref().map(|j| j.max_age);
        match exact {
            Some(ns) => u64::try_from(ns).ok().filter(|&ns| ns > 0),
            None => self
                .config
                .max_age_secs
                .map(|secs| secs.saturating_mul(1_000_000_000)),
        }
    }

    /// Closes the log and deletes the partition's data (its stream was removed).
    pub fn remove(self: &Rc<Self>, shard: &Rc<StreamShard>) {
        self.removed.set(true);
        shard
            .removing
            .borrow_mut()
            .insert(self.dir.clone(), self.clone());
        if let Some(group) = self.group.borrow_mut().take() {
            group.stop();
        }
        if self.state.get() == LogState::Closed {
            // Not open: nothing waits for a log that will not be opened now.
            self.opened.set();
        }
        let consumers: Vec<Rc<PartConsumer>> = self
            .consumers
            .borrow_mut()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in &consumers {
            c.stop();
            super::host::gone(shard, self.index, &c.config);
        }
        self.flush(shard);
        let log = self.log.borrow_mut().take();
        let dir = self.dir.clone();
        let part = self.clone();
        glommio::spawn_local(async move {
            // A save under way would write into the directory after it is deleted.
            for c in consumers {
                c.wait_saved().await;
            }
            part.created
                .wait_until(|| part.creating.borrow().is_empty())
                .await;
            part.closed
                .wait_until(|| part.state.get() != LogState::Closing)
                .await;
            if let Some(log) = log {
                let _ = log.close().await;
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not delete partition data");
            }
            if let Some(stream_dir) = dir.parent() {
                let _ = std::fs::remove_dir(stream_dir);
            }
            part.gone.set(true);
            part.closed.notify_all();
            if let Some(shard) = part.opener.shard.upgrade() {
                let mut removing = shard.removing.borrow_mut();
                if removing
                    .get(&part.dir)
                    .is_some_and(|p| Rc::ptr_eq(p, &part))
                {
                    removing.remove(&part.dir);
                }
            }
        })
        .detach();
    }

    /// Waits until a removed partition's log is closed and its data deleted.
    pub async fn wait_gone(&self) {
        self.closed.wait_until(|| self.gone.get()).await;
    }

    /// Closes the log cleanly (at shutdown).
    pub async fn close(&self) {
        if let Some(group) = self.group.borrow_mut().take() {
            group.stop();
        }
        let consumers: Vec<Rc<PartConsumer>> = self.consumers.borrow().values().cloned().collect();
        for c in consumers {
            c.stop_and_save().await;
        }
        let log = self.log.borrow_mut().take();
        if let Some(log) = log {
            if let Err(e) = log.close().await {
                tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                    "closing the partition failed");
            }
        }
    }
}
