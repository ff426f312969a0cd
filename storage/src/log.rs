//! A partition log: a directory of segments, appended to by a group-committing task.
//!
//! Appending is split in two stages, as in Redpanda's produce path:
//! - **ordered**: `append` assigns offsets and a timestamp, encodes the records into the pending
//!   queue and puts them in the cache, all without waiting, so the order is fixed at once;
//! - **durable**: the committer task takes everything pending, writes it with one direct-I/O write
//!   (rolling segments as needed) and, under `FsyncPolicy::Always`, one `fdatasync`; then it moves the
//!   commit point and wakes the appenders. Appends that arrive during a sync wait for the next one:
//!   that is the group commit, so throughput grows with concurrency.
//!
//! Readers see records below the commit point only: nothing that could still be lost is ever read.
//! If a write or sync fails, every append not yet committed fails with the error, the offsets they
//! took are handed out again, and the next write first cuts the active segment back to the commit
//! point: the log stays consistent and readable.
//!
//! `truncate_from` cuts the tail instead of the head (`truncate_before`): it waits for the appends
//! already ordered, refuses new ones while it runs, and has the committer cut the segments, durably,
//! so that the next append takes the cut offset and no reopen brings a cut record back (see
//! `truncate.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::io::DmaFile;

use crate::cache::RecordCache;
use crate::committer::run_committer;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::metrics::{LogMetrics, LogMetricsSnapshot};
use crate::readahead::ReadAhead;
use crate::record::{self, Record};
use crate::recovery::{
    close_files, delete_segments, list_bases, load_sealed, probe_device, read_start_offset,
    recover_active, write_start_offset,
};
use crate::segment::Segment;
use crate::truncate::{self, Truncation};
use crate::wake::Notify;

/// File that keeps the log's start offset after an explicit truncation.
pub(crate) const START_OFFSET_FILE: &str = "start-offset";

/// Unpersisted index entries that trigger a write of the index files.
pub(crate) const INDEX_PERSIST_ENTRIES: usize = 16;

/// Failures (and truncations) remembered so that appenders of a failed round can tell.
pub(crate) const FAILURES_REMEMBERED: usize = 16;

/// Attempts of a read from disk that truncations keep landing on. Each retry needs another
/// truncation to finish during the read, and they are rare, so this bound is never the common path.
pub(crate) const READ_ATTEMPTS_MAX: usize = 4;

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub segments: usize,
    pub bytes: u64,
}

/// An append-only log of records with consecutive offsets.
pub struct PartitionLog {
    pub(crate) inner: Rc<Inner>,
    committer: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) body_bytes_max: u32,
    pub(crate) state: RefCell<State>,
    pub(crate) wake_committer: Notify,
    /// Appends waiting to be committed: the offset they end at, in order.
    pub(crate) waiters: RefCell<VecDeque<(u64, Waker)>>,
    pub(crate) metrics: LogMetrics,
    /// Bytes read ahead for the next read in order.
    pub(crate) read_ahead: Rc<ReadAhead>,
}

impl Inner {
    /// Wakes the appends that are now committed, or every one after a failure or at close.
    pub(crate) fn wake_appenders(&self, all: bool) {
        let committed = self.state.borrow().committed;
        let mut woken = Vec::new();
        {
            let mut waiters = self.waiters.borrow_mut();
            if all {
                woken.extend(waiters.drain(..).map(|(_, w)| w));
            } else {
                while waiters.front().is_some_and(|(end, _)| *end <= committed) {
                    woken.extend(waiters.pop_front().map(|(_, w)| w));
                }
            }
        }
        for waker in woken {
            waker.wake();
        }
    }

    /// Waits until the appends of `epoch` below `end` are committed, or that epoch has ended (by a
    /// failure or a truncation).
    pub(crate) async fn wait_committed(&self, end: u64, epoch: u64) {
        std::future::poll_fn(|cx| {
            let st = self.state.borrow();
            if st.epoch != epoch || st.committed >= end {
                return Poll::Ready(());
            }
            self.waiters
                .borrow_mut()
                .push_back((end, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

pub(crate) struct Pending {
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) timestamp_ns: u64,
    /// Position of the last record within `bytes`.
    pub(crate) last_record_at: u64,
    /// Offset of the last record.
    pub(crate) last_record_offset: u64,
    /// When the append was called, for the append latency histogram.
    pub(crate) queued: std::time::Instant,
}

pub(crate) struct State {
    /// Never empty once open; the last one is the active segment.
    pub(crate) segments: Vec<Segment>,
    pub(crate) start_offset: u64,
    /// The offset the next append will take.
    pub(crate) assign_next: u64,
    pub(crate) committed: u64,
    /// Readers see nothing at or past this offset, even once committed: a replicated log's
    /// records become readable only once a quorum has them (`u64::MAX` for a log of its own).
    pub(crate) visible_max: u64,
    pub(crate) last_timestamp_ns: u64,
    pub(crate) pending: Vec<Pending>,
    pub(crate) cache: RecordCache,
    /// Bumped by each failure; appends remember the epoch they were ordered in.
    pub(crate) epoch: u64,
    /// For recent failed (or truncated) epochs: the first offset that failed, and why.
    pub(crate) failures: VecDeque<(u64, u64, StorageError)>,
    pub(crate) closing: bool,
    /// A truncation under way (appends are refused meanwhile), or one that broke.
    pub(crate) truncation: Truncation,
    /// Truncations applied so far, so that a read from disk can tell that one landed during it.
    pub(crate) truncations: u64,
}

impl State {
    /// One past the last offset readers may see: committed and not past the visible bound.
    pub(crate) fn readable_end(&self) -> u64 {
        self.committed.min(self.visible_max)
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering the newest segment: its torn tail, if any, is
    /// cut off. Must run inside a glommio executor; the log lives on that executor.
    pub async fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<PartitionLog, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io("create directory", &dir, &e))?;
        probe_device(&dir).await?;
        let body_bytes_max = u32::try_from(config.record_bytes_max).unwrap_or(u32::MAX);
        let bases = list_bases(&dir)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            match bases.get(i + 1) {
                Some(&next) => segments.push(load_sealed(&dir, base, next, body_bytes_max).await?),
                None => segments.push(recover_active(&dir, base, body_bytes_max, &config).await?),
            }
        }
        let persisted_start = read_start_offset(&dir)?;
        if segments.is_empty() {
            segments.push(Segment::empty(&dir, persisted_start));
        }
        let first_base = segments[0].base;
        let active = segments.last().expect("at least one segment");
        let committed = active.next_offset;
        let last_timestamp_ns = segments
            .iter()
            .map(|s| s.max_timestamp_ns)
            .max()
            .unwrap_or(0);
        let state = State {
            start_offset: persisted_start.max(first_base).min(committed),
            assign_next: committed,
            committed,
            visible_max: u64::MAX,
            last_timestamp_ns,
            segments,
            pending: Vec::new(),
            cache: RecordCache::new(config.cache_bytes_max),
            epoch: 0,
            failures: VecDeque::new(),
            closing: false,
            truncation: Truncation::Idle,
            truncations: 0,
        };
        let inner = Rc::new(Inner {
            dir,
            config,
            body_bytes_max,
            state: RefCell::new(state),
            wake_committer: Notify::default(),
            waiters: RefCell::new(VecDeque::new()),
            metrics: LogMetrics::default(),
            read_ahead: Rc::default(),
        });
        let committer = glommio::spawn_local(run_committer(inner.clone())).detach();
        Ok(PartitionLog {
            inner,
            committer: RefCell::new(Some(committer)),
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends records and returns the offset of the first, once they are durable under the fsync
    /// policy. Records of one call get consecutive offsets and one timestamp.
    pub async fn append(&self, bodies: &[Bytes]) -> Result<u64, StorageError> {
        self.append_ordered(bodies)?.durable().await
    }

    /// The ordered stage of an append, without waiting: offsets are assigned and the records queued
    /// now, so appends keep the order of these calls; the ticket waits for durability.
    pub fn append_ordered(&self, bodies: &[Bytes]) -> Result<AppendTicket, StorageError> {
        self.append_spans(bodies, |_| 1)
    }

    /// `append_ordered` for records that may take several offsets each: record `i` takes
    /// `count(i)` (at least 1) consecutive offsets, as a Kafka record batch takes one per record.
    pub fn append_spans(
        &self,
        bodies: &[Bytes],
        count: impl Fn(usize) -> u32,
    ) -> Result<AppendTicket, StorageError> {
        self.append_at(bodies, count, None)
    }

    /// As `append_ordered`, stamped `timestamp_ns` rather than now (never earlier than the log's
    /// last record): a replica stores a record with the time its leader gave it, so that every
    /// copy answers a replay by time alike.
    pub fn append_stamped(
        &self,
        bodies: &[Bytes],
        timestamp_ns: u64,
    ) -> Result<AppendTicket, StorageError> {
        self.append_at(bodies, |_| 1, Some(timestamp_ns))
    }

    fn append_at(
        &self,
        bodies: &[Bytes],
        count: impl Fn(usize) -> u32,
        stamp_ns: Option<u64>,
    ) -> Result<AppendTicket, StorageError> {
        let inner = &self.inner;
        let (first, end, epoch) = {
            let mut st = inner.state.borrow_mut();
            if st.closing {
                return Err(StorageError::Closed);
            }
            if let Some(refusal) = st.truncation.refusal() {
                return Err(refusal);
            }
            if let Some(big) = bodies
                .iter()
                .find(|b| b.len() > inner.config.record_bytes_max)
            {
                return Err(StorageError::RecordTooLarge {
                    size: big.len(),
                    max: inner.config.record_bytes_max,
                });
            }
            let first = st.assign_next;
            if bodies.is_empty() {
                return Ok(AppendTicket {
                    inner: inner.clone(),
                    first,
                    end: first,
                    epoch: st.epoch,
                });
            }
            let timestamp_ns = stamp_ns.unwrap_or_else(now_ns).max(st.last_timestamp_ns);
            st.last_timestamp_ns = timestamp_ns;
            let total: usize = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| record::encoded_span_len(b.len(), count(i).max(1)))
                .sum();
            let mut bytes = Vec::with_capacity(total);
            let mut last_record_at = 0;
            let mut offset = first;
            let mut last_record_offset = first;
            for (i, body) in bodies.iter().enumerate() {
                let n = count(i).max(1);
                last_record_at = bytes.len() as u64;
                last_record_offset = offset;
                record::encode_span(&mut bytes, offset, n, timestamp_ns, body);
                st.cache.push(Record {
                    offset,
                    count: n,
                    timestamp_ns,
                    body: body.clone(),
                });
                offset += u64::from(n);
            }
            let count = offset - first;
            st.assign_next += count;
            st.pending.push(Pending {
                first,
                count,
                bytes,
                timestamp_ns,
                last_record_at,
                last_record_offset,
                queued: std::time::Instant::now(),
            });
            (first, first + count, st.epoch)
        };
        inner.wake_committer.notify();
        Ok(AppendTicket {
            inner: inner.clone(),
            first,
            end,
            epoch,
        })
    }

    /// The offset the next append will be given (appends ordered and not yet durable count).
    pub fn next_assigned_offset(&self) -> u64 {
        self.inner.state.borrow().assign_next
    }

    /// The first offset that can be read.
    pub fn first_offset(&self) -> u64 {
        self.inner.state.borrow().start_offset
    }

    /// One past the last readable offset: the end of what can be read, which is where the next
    /// append's records start once committed (and, for a replicated log, agreed).
    pub fn next_offset(&self) -> u64 {
        self.inner.state.borrow().readable_end()
    }

    /// One past the last committed (durable) offset, readable or not.
    pub fn durable_offset(&self) -> u64 {
        self.inner.state.borrow().committed
    }

    /// Lets readers see records up to (not including) `end` once they are committed: a replicated
    /// log shows only what a quorum agreed on. `u64::MAX` lifts the bound.
    pub fn set_visible_end(&self, end: u64) {
        self.inner.state.borrow_mut().visible_max = end;
    }

    /// The log's fsync and append latency histograms so far.
    pub fn metrics(&self) -> LogMetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Bytes of all segments on disk.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.size)
            .sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Makes `offset` the first readable offset and deletes the segments wholly below it.
    pub async fn truncate_before(&self, offset: u64) -> Result<Retention, StorageError> {
        let doomed = {
            let mut st = self.inner.state.borrow_mut();
            let offset = offset.min(st.committed);
            if offset <= st.start_offset {
                return Ok(Retention::default());
            }
            st.start_offset = offset;
            st.cache.drop_before(offset);
            let keep_from = st
                .segments
                .iter()
                .position(|s| s.next_offset > offset)
                .unwrap_or(st.segments.len() - 1);
            st.segments.drain(..keep_from).collect::<Vec<_>>()
        };
        write_start_offset(&self.inner.dir, offset)?;
        delete_segments(&self.inner.dir, doomed).await
    }

    /// Removes every record at or after `offset` (durably), so that the next append takes `offset`.
    ///
    /// `offset` must lie between `first_offset()` and `next_assigned_offset()` and start a record:
    /// a span record is never cut in the middle (`NotRecordBoundary`); otherwise
    /// `TruncationOutOfRange`. At `next_assigned_offset()` nothing is cut.
    ///
    /// Appends ordered before the call are waited for first, until durable or failed (those past
    /// `offset` are then cut, and their tickets, if waited on afterwards, report `Truncated`).
    /// Appends and truncations asked for while it runs are refused with `TruncationInProgress`.
    ///
    /// Once it returns, the segments past the cut are deleted, the one holding `offset` is cut to
    /// the byte and is the active one, and all of it is synced: no reopen brings a cut record
    /// back. If the disk fails midway it returns `TruncationIncomplete`, and the log refuses
    /// appends until it is reopened.
    pub async fn truncate_from(&self, offset: u64) -> Result<(), StorageError> {
        truncate::truncate_from(&self.inner, offset).await
    }

    /// Removes every record and starts the log, empty, at `offset` (lower or higher than its end):
    /// the next append takes `offset` (a Raft follower taking its leader's snapshot, whose log
    /// no longer holds what this one lacks).
    ///
    /// Appends ordered before the call are waited for first; appends and truncations asked for
    /// while it runs are refused with `TruncationInProgress`. On disk the segments are deleted
    /// newest first, then the new start is written durably. A crash midway leaves a prefix of the
    /// old log, which a reopen recovers as it is; the caller records that it is restarting the log
    /// and does it again after a reopen.
    pub async fn restart_at(&self, offset: u64) -> Result<(), StorageError> {
        truncate::restart_at(&self.inner, offset).await
    }

    /// Deletes sealed segments past the configured age or size limits. The active segment is never
    /// deleted, nor a segment holding records past the visible end.
    pub async fn apply_retention(&self, now_ns: u64) -> Result<Retention, StorageError> {
        let doomed = {
            let mut st = self.inner.state.borrow_mut();
            let mut doomed = Vec::new();
            let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
            while st.segments.len() > 1 {
                let oldest = &st.segments[0];
                let too_old = self.inner.config.retention_age_max.is_some_and(|age| {
                    oldest
                        .max_timestamp_ns
                        .saturating_add(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX))
                        < now_ns
                });
                let too_big = self
                    .inner
                    .config
                    .retention_bytes_max
                    .is_some_and(|max| total > max);
                // Records past the visible end (not yet agreed by a replicated partition's
                // group) are never removed by retention.
                let visible = oldest.next_offset <= st.readable_end();
                if !too_old && !too_big || !visible {
                    break;
                }
                total -= oldest.size;
                doomed.push(st.segments.remove(0));
            }
            let first = st.segments[0].base;
            if first > st.start_offset {
                st.start_offset = first;
                st.cache.drop_before(first);
            }
            doomed
        };
        delete_segments(&self.inner.dir, doomed).await
    }

    /// Writes what is pending, leaves the active segment clean (no padding, index written) and
    /// stops the committer. Appends after this fail with `Closed`.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.inner.state.borrow_mut().closing = true;
        self.inner.wake_committer.notify();
        let committer = self.committer.borrow_mut().take();
        if let Some(committer) = committer {
            committer.await;
        }
        self.inner.read_ahead.drop_all();
        let readers: Vec<Rc<DmaFile>> = self
            .inner
            .state
            .borrow_mut()
            .segments
            .iter_mut()
            .filter_map(|s| s.reader.take())
            .collect();
        close_files(readers).await;
        let st = self.inner.state.borrow();
        match st.failures.back() {
            Some((epoch, _, error)) if *epoch == st.epoch => Err(error.clone()),
            _ => Ok(()),
        }
    }
}

/// An append whose records have their offsets; `durable` waits until they are committed.
pub struct AppendTicket {
    inner: Rc<Inner>,
    first: u64,
    end: u64,
    epoch: u64,
}

impl AppendTicket {
    /// The offset of the first record.
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    /// Waits until the records are durable under the fsync policy; returns the first offset, or the
    /// error that failed them.
    pub async fn durable(self) -> Result<u64, StorageError> {
        let inner = &self.inner;
        let (end, epoch) = (self.end, self.epoch);
        inner.wait_committed(end, epoch).await;
        let st = inner.state.borrow();
        if st.epoch == epoch {
            return Ok(self.first);
        }
        match st.failures.iter().find(|(e, _, _)| *e == epoch) {
            Some((_, failed_from, _)) if end <= *failed_from => Ok(self.first),
            Some((_, _, error)) => Err(error.clone()),
            None => Err(StorageError::Closed),
        }
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Without `close`, the committer stops after what is pending; the next open recovers.
        self.inner.state.borrow_mut().closing = true;
        self.inner.wake_committer.notify();
    }
}
