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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::io::DmaFile;

use crate::appender::{Appender, Writes};
use crate::cache::RecordCache;
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::StorageError;
use crate::index::{Index, IndexEntry};
use crate::record::{self, Record};
use crate::segment::{self, walk, Segment};
use crate::wake::Notify;

/// File that keeps the log's start offset after an explicit truncation.
const START_OFFSET_FILE: &str = "start-offset";

/// Unpersisted index entries that trigger a write of the index files.
const INDEX_PERSIST_ENTRIES: usize = 16;

/// Failures remembered so that appenders of a failed round can tell.
const FAILURES_REMEMBERED: usize = 16;

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub segments: usize,
    pub bytes: u64,
}

/// An append-only log of records with consecutive offsets.
pub struct PartitionLog {
    inner: Rc<Inner>,
    committer: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    body_bytes_max: u32,
    state: RefCell<State>,
    wake_committer: Notify,
    /// Appends waiting to be committed: the offset they end at, in order.
    waiters: RefCell<VecDeque<(u64, Waker)>>,
}

impl Inner {
    /// Wakes the appends that are now committed, or every one after a failure or at close.
    fn wake_appenders(&self, all: bool) {
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
}

struct Pending {
    first: u64,
    count: u64,
    bytes: Vec<u8>,
    timestamp_ns: u64,
    /// Position of the last record within `bytes`.
    last_record_at: u64,
}

struct State {
    /// Never empty once open; the last one is the active segment.
    segments: Vec<Segment>,
    start_offset: u64,
    /// The offset the next append will take.
    assign_next: u64,
    committed: u64,
    last_timestamp_ns: u64,
    pending: Vec<Pending>,
    cache: RecordCache,
    /// Bumped by each failure; appends remember the epoch they were ordered in.
    epoch: u64,
    /// For recent failed epochs: the first offset that failed, and why.
    failures: VecDeque<(u64, u64, StorageError)>,
    closing: bool,
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
            last_timestamp_ns,
            segments,
            pending: Vec::new(),
            cache: RecordCache::new(config.cache_bytes_max),
            epoch: 0,
            failures: VecDeque::new(),
            closing: false,
        };
        let inner = Rc::new(Inner {
            dir,
            config,
            body_bytes_max,
            state: RefCell::new(state),
            wake_committer: Notify::default(),
            waiters: RefCell::new(VecDeque::new()),
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
        let inner = &self.inner;
        let (first, end, epoch) = {
            let mut st = inner.state.borrow_mut();
            if st.closing {
                return Err(StorageError::Closed);
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
                return Ok(first);
            }
            let timestamp_ns = now_ns().max(st.last_timestamp_ns);
            st.last_timestamp_ns = timestamp_ns;
            let total: usize = bodies.iter().map(|b| record::encoded_len(b.len())).sum();
            let mut bytes = Vec::with_capacity(total);
            let mut last_record_at = 0;
            for (i, body) in bodies.iter().enumerate() {
                let offset = first + i as u64;
                last_record_at = bytes.len() as u64;
                record::encode(&mut bytes, offset, timestamp_ns, body);
                st.cache.push(Record {
                    offset,
                    timestamp_ns,
                    body: body.clone(),
                });
            }
            let count = bodies.len() as u64;
            st.assign_next += count;
            st.pending.push(Pending {
                first,
                count,
                bytes,
                timestamp_ns,
                last_record_at,
            });
            (first, first + count, st.epoch)
        };
        inner.wake_committer.notify();
        std::future::poll_fn(|cx| {
            let st = inner.state.borrow();
            if st.epoch != epoch || st.committed >= end {
                return Poll::Ready(());
            }
            inner
                .waiters
                .borrow_mut()
                .push_back((end, cx.waker().clone()));
            Poll::Pending
        })
        .await;
        let st = inner.state.borrow();
        if st.epoch == epoch {
            return Ok(first);
        }
        match st.failures.iter().find(|(e, _, _)| *e == epoch) {
            Some((_, failed_from, _)) if end <= *failed_from => Ok(first),
            Some((_, _, error)) => Err(error.clone()),
            None => Err(StorageError::Closed),
        }
    }

    /// The first offset that can be read.
    pub fn first_offset(&self) -> u64 {
        self.inner.state.borrow().start_offset
    }

    /// One past the last committed offset: where the next append's records will start once
    /// committed, and the end of what can be read.
    pub fn next_offset(&self) -> u64 {
        self.inner.state.borrow().committed
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

    /// Records from `from`, about `max_bytes` of bodies but at least one record, committed ones
    /// only. Recent records come from memory; older ones from disk.
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Record>, StorageError> {
        let (committed, start) = {
            let st = self.inner.state.borrow();
            (st.committed, st.start_offset)
        };
        if from < start {
            return Err(StorageError::OffsetOutOfRange {
                requested: from,
                start,
            });
        }
        if from >= committed {
            return Ok(Vec::new());
        }
        if let Some(records) = self
            .inner
            .state
            .borrow()
            .cache
            .read(from, committed, max_bytes)
        {
            return Ok(records);
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next < committed && (out.is_empty() || bytes < max_bytes) {
            let Some(place) = self.locate(next).await? else {
                break;
            };
            let budget = max_bytes;
            let mut stopped = false;
            let end = walk(
                &place.file,
                &place.path,
                place.position,
                place.end,
                place.offset,
                self.inner.body_bytes_max,
                |visit| {
                    if visit.offset >= committed {
                        stopped = true;
                        return false;
                    }
                    if visit.offset < next {
                        return true;
                    }
                    if !out.is_empty() && bytes + visit.body.len() > budget {
                        stopped = true;
                        return false;
                    }
                    bytes += visit.body.len();
                    out.push(Record {
                        offset: visit.offset,
                        timestamp_ns: visit.timestamp_ns,
                        body: visit.body,
                    });
                    true
                },
            )
            .await?;
            if let Some((position, reason)) = end.invalid {
                return Err(StorageError::Corruption {
                    path: place.path,
                    position,
                    reason,
                });
            }
            if stopped {
                break;
            }
            let reached = out.last().map_or(next, |r| r.offset + 1);
            if reached < place.segment_next.min(committed) {
                // The walk ended early without reason: the segment is shorter than it claims.
                return Err(StorageError::Corruption {
                    path: place.path,
                    position: end.position,
                    reason: format!("segment ends before offset {reached}"),
                });
            }
            next = place.segment_next;
        }
        Ok(out)
    }

    /// Where to start reading for `offset`: the segment's file, the index floor, and its bounds.
    async fn locate(&self, offset: u64) -> Result<Option<Place>, StorageError> {
        let (path, cached, position, floor, end, segment_next) = {
            let st = self.inner.state.borrow();
            let Some(seg) = st.segments.iter().rev().find(|s| s.base <= offset) else {
                return Ok(None);
            };
            if offset >= seg.next_offset {
                return Ok(None);
            }
            let (position, floor) = seg
                .index
                .floor_offset(offset)
                .map_or((0, seg.base), |e| (e.position, e.offset));
            (
                seg.path.clone(),
                seg.reader.clone(),
                position,
                floor,
                seg.size,
                seg.next_offset,
            )
        };
        let file = match cached {
            Some(file) => file,
            None => {
                let file = Rc::new(
                    DmaFile::open(&path)
                        .await
                        .map_err(|e| StorageError::glommio("open", &path, e))?,
                );
                let mut st = self.inner.state.borrow_mut();
                if let Some(seg) = st.segments.iter_mut().find(|s| s.path == path) {
                    seg.reader = Some(file.clone());
                }
                file
            }
        };
        Ok(Some(Place {
            file,
            path,
            position,
            offset: floor,
            end,
            segment_next,
        }))
    }

    /// The first offset whose timestamp is at or after `timestamp_ns`; `next_offset()` if none.
    pub async fn offset_for_time(&self, timestamp_ns: u64) -> Result<u64, StorageError> {
        let (committed, start, segment_base) = {
            let st = self.inner.state.borrow();
            let seg = st
                .segments
                .iter()
                .find(|s| !s.is_empty() && s.max_timestamp_ns >= timestamp_ns);
            (st.committed, st.start_offset, seg.map(|s| s.base))
        };
        let Some(base) = segment_base else {
            return Ok(committed);
        };
        let floor = {
            let st = self.inner.state.borrow();
            st.segments
                .iter()
                .find(|s| s.base == base)
                .and_then(|s| s.index.floor_time(timestamp_ns).map(|e| e.offset))
                .unwrap_or(base)
        };
        let mut from = floor.max(start);
        loop {
            let records = self.read(from, 256 * 1024).await?;
            let Some(last) = records.last() else {
                return Ok(committed);
            };
            if let Some(found) = records.iter().find(|r| r.timestamp_ns >= timestamp_ns) {
                return Ok(found.offset);
            }
            from = last.offset + 1;
        }
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

    /// Deletes sealed segments past the configured age or size limits. The active segment is never
    /// deleted.
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
                        .saturating_add(age.as_nanos() as u64)
                        < now_ns
                });
                let too_big = self
                    .inner
                    .config
                    .retention_bytes_max
                    .is_some_and(|max| total > max);
                if !too_old && !too_big {
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

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Without `close`, the committer stops after what is pending; the next open recovers.
        self.inner.state.borrow_mut().closing = true;
        self.inner.wake_committer.notify();
    }
}

struct Place {
    file: Rc<DmaFile>,
    path: PathBuf,
    position: u64,
    offset: u64,
    end: u64,
    segment_next: u64,
}

// ---- the committer ----

/// Rounds of writes in flight at once.
const ROUNDS_IN_FLIGHT_MAX: usize = 4;

/// Bytes one round takes from the pending appends (at least one append). With several rounds in
/// flight, the device stays busy while the appenders of finished rounds prepare the next ones.
const ROUND_BYTES_MAX: usize = 512 * 1024;

/// Writes started for the appends below offset `end`, which end at `position` of the active segment.
struct Round {
    end: u64,
    position: u64,
    writes: Writes,
}

async fn run_committer(inner: Rc<Inner>) {
    let mut appender: Option<Appender> = None;
    let mut rounds: VecDeque<Round> = VecDeque::new();
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        if rounds.len() < ROUNDS_IN_FLIGHT_MAX {
            let planned = appender.as_ref().map(Appender::size);
            let (batches, roll_first) = take_round(&inner, planned);
            if !batches.is_empty() {
                let started = start_round(&inner, &mut appender, &mut rounds, batches, roll_first);
                if let Err(e) = started.await {
                    abandon(&mut rounds).await;
                    fail(&inner, &mut appender, e);
                }
                continue;
            }
        }
        if let Some(round) = rounds.pop_front() {
            let sync = match inner.config.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(every) => last_sync.elapsed() >= every,
                FsyncPolicy::Never => false,
            };
            match complete(&inner, &appender, round, sync).await {
                Ok(()) => {
                    if sync {
                        last_sync = Instant::now();
                    }
                    unsynced = !sync;
                }
                Err(e) => {
                    abandon(&mut rounds).await;
                    fail(&inner, &mut appender, e);
                }
            }
            inner.wake_appenders(false);
            if appender.is_some() {
                persist_index(&inner).await;
            }
            continue;
        }
        if inner.state.borrow().closing {
            break;
        }
        match inner.config.fsync {
            FsyncPolicy::Interval(every) if unsynced => {
                let left = every.saturating_sub(last_sync.elapsed());
                if left.is_zero() {
                    if let Some(a) = &appender {
                        if let Err(e) = a.sync().await {
                            tracing::warn!(error = %e, "periodic sync failed");
                        }
                    }
                    last_sync = Instant::now();
                    unsynced = false;
                } else {
                    let _ = glommio::timer::timeout(left, async {
                        inner.wake_committer.wait().await;
                        Ok(())
                    })
                    .await;
                }
            }
            _ => inner.wake_committer.wait().await,
        }
    }
    if let Some(a) = appender.take() {
        persist_index_all(&inner).await;
        if let Err(e) = a.finish().await {
            tracing::warn!(error = %e, "closing the active segment failed");
        }
    }
    inner.wake_appenders(true);
}

/// Takes the oldest pending appends for one round: those that fit in the active segment, up to
/// `ROUND_BYTES_MAX`. If the oldest does not fit, it comes alone with `true`: roll first.
fn take_round(inner: &Inner, planned_size: Option<u64>) -> (Vec<Pending>, bool) {
    let mut st = inner.state.borrow_mut();
    if st.pending.is_empty() {
        return (Vec::new(), false);
    }
    let active = st.segments.last().expect("an active segment");
    let mut size = planned_size.unwrap_or(active.size);
    let first_ts = active.first_timestamp_ns;
    let age_max = inner.config.segment_age_max.as_nanos() as u64;
    let mut taken_bytes = 0usize;
    let mut n = 0;
    for b in st.pending.iter() {
        let full = size > 0 && size + b.bytes.len() as u64 > inner.config.segment_bytes_max;
        let old = first_ts.is_some_and(|t| b.timestamp_ns.saturating_sub(t) >= age_max);
        if full || old {
            if n == 0 {
                let first = st.pending.remove(0);
                return (vec![first], true);
            }
            break;
        }
        if n > 0 && taken_bytes + b.bytes.len() > ROUND_BYTES_MAX {
            break;
        }
        taken_bytes += b.bytes.len();
        size += b.bytes.len() as u64;
        n += 1;
    }
    (st.pending.drain(..n).collect(), false)
}

/// Starts the writes of one round (rolling first if asked: that waits for every round in flight).
async fn start_round(
    inner: &Rc<Inner>,
    appender: &mut Option<Appender>,
    rounds: &mut VecDeque<Round>,
    batches: Vec<Pending>,
    roll_first: bool,
) -> Result<(), StorageError> {
    if roll_first {
        while let Some(round) = rounds.pop_front() {
            complete(inner, appender, round, true).await?;
        }
        inner.wake_appenders(false);
        roll(inner, appender, batches[0].first).await?;
    }
    if appender.is_none() {
        *appender = Some(open_active(inner).await?);
    }
    let a = appender.as_mut().expect("an appender");
    let start = a.size();
    let parts: Vec<&[u8]> = batches.iter().map(|b| &b.bytes[..]).collect();
    let writes = a.start(&parts).await?;
    record_started(inner, start, &batches);
    let last = batches.last().expect("a round has appends");
    rounds.push_back(Round {
        end: last.first + last.count,
        position: a.size(),
        writes,
    });
    Ok(())
}

/// Waits for a round's writes (and syncs if asked), then commits it: its records become readable
/// and their appends return.
async fn complete(
    inner: &Inner,
    appender: &Option<Appender>,
    round: Round,
    sync: bool,
) -> Result<(), StorageError> {
    round.writes.wait().await?;
    if sync {
        if let Some(a) = appender {
            a.sync().await?;
        }
    }
    let mut st = inner.state.borrow_mut();
    st.committed = round.end;
    st.cache.trim(round.end);
    let active = st.segments.last_mut().expect("an active segment");
    active.size = round.position;
    active.next_offset = round.end;
    Ok(())
}

/// Waits out the writes of rounds that will not be committed.
async fn abandon(rounds: &mut VecDeque<Round>) {
    while let Some(round) = rounds.pop_front() {
        let _ = round.writes.wait().await;
    }
}

/// Every append not yet committed fails; their offsets will be handed out again.
fn fail(inner: &Inner, appender: &mut Option<Appender>, error: StorageError) {
    tracing::error!(dir = %inner.dir.display(), error = %error, "append failed");
    // Drop the appender: the next write reopens the segment and cuts it back to the commit point.
    *appender = None;
    let mut st = inner.state.borrow_mut();
    let committed = st.committed;
    let epoch = st.epoch;
    st.failures.push_back((epoch, committed, error));
    if st.failures.len() > FAILURES_REMEMBERED {
        st.failures.pop_front();
    }
    st.epoch += 1;
    st.assign_next = committed;
    st.pending.clear();
    st.cache.truncate_from(committed);
    if let Some(active) = st.segments.last_mut() {
        // Index entries may point at bytes that were never committed.
        let size = active.size;
        active.index.truncate_at_position(size);
        active.indexed_position = active.index.last().map_or(0, |e| e.position);
    }
    drop(st);
    inner.wake_appenders(true);
}

/// Updates the active segment's index and timestamps for appends whose writes just started. Its
/// size and next offset move only when they are committed.
fn record_started(inner: &Inner, mut position: u64, batches: &[Pending]) {
    let interval = inner.config.index_interval_bytes;
    let mut st = inner.state.borrow_mut();
    let active = st.segments.last_mut().expect("an active segment");
    for b in batches {
        if position > 0 && position - active.indexed_position >= interval {
            active.index.push(IndexEntry {
                offset: b.first,
                position,
                timestamp_ns: b.timestamp_ns,
            });
            active.indexed_position = position;
        }
        active.first_timestamp_ns.get_or_insert(b.timestamp_ns);
        active.max_timestamp_ns = active.max_timestamp_ns.max(b.timestamp_ns);
        active.last_record_position = position + b.last_record_at;
        position += b.bytes.len() as u64;
    }
}

/// Seals the active segment and starts a new one at `base`.
async fn roll(
    inner: &Rc<Inner>,
    appender: &mut Option<Appender>,
    base: u64,
) -> Result<(), StorageError> {
    if let Some(a) = appender.take() {
        seal_index(inner);
        persist_index_all(inner).await;
        a.finish().await?;
    }
    let path = segment::log_path(&inner.dir, base);
    let fresh = Appender::create(&path, inner.config.segment_bytes_max).await?;
    inner
        .state
        .borrow_mut()
        .segments
        .push(Segment::empty(&inner.dir, base));
    *appender = Some(fresh);
    tracing::debug!(dir = %inner.dir.display(), base, "rolled to a new segment");
    Ok(())
}

/// Adds a last index entry for the newest record, so that a reopened sealed segment knows its
/// newest timestamp.
fn seal_index(inner: &Inner) {
    let mut st = inner.state.borrow_mut();
    let active = st.segments.last_mut().expect("an active segment");
    if active.is_empty() {
        return;
    }
    let last_offset = active.next_offset - 1;
    if active.index.last().is_some_and(|e| e.offset >= last_offset)
        || active.last_record_position == 0
    {
        return;
    }
    let entry = IndexEntry {
        offset: last_offset,
        position: active.last_record_position,
        timestamp_ns: active.max_timestamp_ns,
    };
    active.index.push(entry);
}

/// Opens the active segment for appending, cutting it back to the commit point.
async fn open_active(inner: &Rc<Inner>) -> Result<Appender, StorageError> {
    let (path, size, exists) = {
        let st = inner.state.borrow();
        let active = st.segments.last().expect("an active segment");
        (active.path.clone(), active.size, active.path.exists())
    };
    if exists {
        Appender::reopen(&path, size, inner.config.segment_bytes_max).await
    } else {
        Appender::create(&path, inner.config.segment_bytes_max).await
    }
}

/// Writes index entries not yet in the files, when enough have piled up.
async fn persist_index(inner: &Inner) {
    let work = {
        let mut st = inner.state.borrow_mut();
        let active = st.segments.last_mut().expect("an active segment");
        let pending = active.index.len();
        if pending % INDEX_PERSIST_ENTRIES != 0 {
            None
        } else {
            active.index.take_unpersisted().map(|w| (active.base, w))
        }
    };
    if let Some((base, (from, offsets, times))) = work {
        write_index(&inner.dir, base, from, offsets, times).await;
    }
}

async fn persist_index_all(inner: &Inner) {
    let work = {
        let mut st = inner.state.borrow_mut();
        let active = st.segments.last_mut().expect("an active segment");
        active.index.take_unpersisted().map(|w| (active.base, w))
    };
    if let Some((base, (from, offsets, times))) = work {
        write_index(&inner.dir, base, from, offsets, times).await;
    }
}

/// Writes index entries from entry `from` on. Failures are logged: the index is a hint that
/// recovery rebuilds.
async fn write_index(dir: &Path, base: u64, from: usize, offsets: Vec<u8>, times: Vec<u8>) {
    let position = (from * crate::index::INDEX_ENTRY_BYTES) as u64;
    for (path, bytes) in [
        (segment::index_path(dir, base), offsets),
        (segment::time_index_path(dir, base), times),
    ] {
        let written = async {
            let file = glommio::io::OpenOptions::new()
                .write(true)
                .create(true)
                .buffered_open(&path)
                .await?;
            file.write_at(bytes, position).await?;
            file.close().await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "index write failed");
        }
    }
}

// ---- opening ----

/// Makes glommio decide whether the device under `dir` supports polled I/O by reading a file that
/// holds data. glommio probes the first direct-I/O file it opens on a device and remembers the
/// answer for the process; probing an empty file (a segment just created) reads nothing, "succeeds",
/// and sends every later read of that device to the poll ring, where devices without polling
/// support fail them with EOPNOTSUPP.
async fn probe_device(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(".probe");
    std::fs::write(&path, [0u8; 4096]).map_err(|e| StorageError::io("write", &path, &e))?;
    let opened = DmaFile::open(&path).await;
    let _ = std::fs::remove_file(&path);
    let file = opened.map_err(|e| StorageError::glommio("open", &path, e))?;
    let _ = file.close().await;
    Ok(())
}

fn list_bases(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, &e))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, &e))?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_base) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn read_index_files(dir: &Path, base: u64) -> Index {
    let offsets = std::fs::read(segment::index_path(dir, base)).unwrap_or_default();
    let times = std::fs::read(segment::time_index_path(dir, base)).unwrap_or_default();
    Index::decode(&offsets, &times)
}

fn file_size(path: &Path) -> Result<u64, StorageError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| StorageError::io("stat", path, &e))
}

/// A sealed segment: its index is trusted if present, rebuilt by a full walk otherwise.
async fn load_sealed(
    dir: &Path,
    base: u64,
    next_base: u64,
    body_bytes_max: u32,
) -> Result<Segment, StorageError> {
    let mut seg = Segment::empty(dir, base);
    seg.size = file_size(&seg.path)?;
    seg.next_offset = next_base;
    let mut index = read_index_files(dir, base);
    index.truncate_at_position(seg.size);
    if index.is_empty() && seg.size > 0 {
        let file = DmaFile::open(&seg.path)
            .await
            .map_err(|e| StorageError::glommio("open", &seg.path, e))?;
        let (end, rebuilt, first_ts, max_ts, next) = walk_and_index(
            &file,
            &seg.path,
            0,
            seg.size,
            base,
            body_bytes_max,
            64 * 1024,
        )
        .await?;
        let _ = file.close().await;
        if let Some((position, reason)) = end.invalid {
            return Err(StorageError::Corruption {
                path: seg.path,
                position,
                reason,
            });
        }
        if next != next_base {
            return Err(StorageError::Corruption {
                path: seg.path,
                position: end.position,
                reason: format!(
                    "segment ends at offset {next}, the next one starts at {next_base}"
                ),
            });
        }
        index = rebuilt;
        seg.first_timestamp_ns = first_ts;
        seg.max_timestamp_ns = max_ts;
    } else {
        seg.first_timestamp_ns = None;
        seg.max_timestamp_ns = index.last().map_or(0, |e| e.timestamp_ns);
    }
    seg.indexed_position = index.last().map_or(0, |e| e.position);
    seg.index = index;
    Ok(seg)
}

/// The newest segment: walked from its last index entry; a torn tail is cut off.
async fn recover_active(
    dir: &Path,
    base: u64,
    body_bytes_max: u32,
    config: &LogConfig,
) -> Result<Segment, StorageError> {
    let mut seg = Segment::empty(dir, base);
    let file_len = file_size(&seg.path)?;
    let mut index = read_index_files(dir, base);
    index.truncate_at_position(file_len);
    let (position, offset, timestamp) = index
        .last()
        .map_or((0, base, 0), |e| (e.position, e.offset, e.timestamp_ns));
    let file = DmaFile::open(&seg.path)
        .await
        .map_err(|e| StorageError::glommio("open", &seg.path, e))?;
    let (end, more, first_ts, max_ts, next) = walk_and_index(
        &file,
        &seg.path,
        position,
        file_len,
        offset,
        body_bytes_max,
        config.index_interval_bytes,
    )
    .await?;
    let _ = file.close().await;
    if next == offset && position > 0 {
        // The index entry points at no valid record: start over from the beginning.
        return Box::pin(recover_from_scratch(dir, base, body_bytes_max, config)).await;
    }
    for entry in more.entries() {
        index.push(*entry);
    }
    if let Some((at, reason)) = &end.invalid {
        tracing::warn!(path = %seg.path.display(), position = at, %reason,
            "cutting off a torn tail");
    }
    if end.position < file_len {
        let rw = glommio::io::OpenOptions::new()
            .write(true)
            .dma_open(&seg.path)
            .await
            .map_err(|e| StorageError::glommio("open", &seg.path, e))?;
        rw.truncate(end.position)
            .await
            .map_err(|e| StorageError::glommio("truncate", &seg.path, e))?;
        rw.fdatasync()
            .await
            .map_err(|e| StorageError::glommio("fdatasync", &seg.path, e))?;
        let _ = rw.close().await;
    }
    seg.size = end.position;
    seg.next_offset = next;
    // From a mid-segment index entry the first record is not visited; the first entry is close enough
    // for rolling by age.
    seg.first_timestamp_ns = match index.entries().first() {
        Some(e) if position > 0 => Some(e.timestamp_ns),
        _ => first_ts,
    };
    seg.max_timestamp_ns = max_ts.max(timestamp);
    seg.indexed_position = index.last().map_or(0, |e| e.position);
    seg.index = index;
    Ok(seg)
}

async fn recover_from_scratch(
    dir: &Path,
    base: u64,
    body_bytes_max: u32,
    config: &LogConfig,
) -> Result<Segment, StorageError> {
    for path in [
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        let _ = std::fs::remove_file(path);
    }
    recover_active(dir, base, body_bytes_max, config).await
}

/// Walks `[position, end)` and builds index entries every `interval` bytes.
async fn walk_and_index(
    file: &DmaFile,
    path: &Path,
    position: u64,
    end: u64,
    offset: u64,
    body_bytes_max: u32,
    interval: u64,
) -> Result<(segment::WalkEnd, Index, Option<u64>, u64, u64), StorageError> {
    let mut index = Index::default();
    let mut first_ts = None;
    let mut max_ts = 0;
    let mut next = offset;
    let mut indexed = position;
    let walked = walk(file, path, position, end, offset, body_bytes_max, |visit| {
        if visit.position > 0 && visit.position - indexed >= interval {
            index.push(IndexEntry {
                offset: visit.offset,
                position: visit.position,
                timestamp_ns: visit.timestamp_ns,
            });
            indexed = visit.position;
        }
        first_ts.get_or_insert(visit.timestamp_ns);
        max_ts = max_ts.max(visit.timestamp_ns);
        next = visit.offset + 1;
        true
    })
    .await?;
    Ok((walked, index, first_ts, max_ts, next))
}

fn read_start_offset(dir: &Path) -> Result<u64, StorageError> {
    let path = dir.join(START_OFFSET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 8 => {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes);
            Ok(u64::from_le_bytes(w))
        }
        Ok(_) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StorageError::io("read", path, &e)),
    }
}

/// Persists the start offset atomically (write, sync, rename). Explicit truncation is rare; this is
/// the one small synchronous write of the log.
fn write_start_offset(dir: &Path, offset: u64) -> Result<(), StorageError> {
    use std::io::Write;
    let path = dir.join(START_OFFSET_FILE);
    let tmp = dir.join(format!("{START_OFFSET_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&offset.to_le_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| StorageError::io("write", &path, &e))
}

/// Closes read handles that no read holds any more (a read in progress keeps its own and lets it drop).
async fn close_files(files: Vec<Rc<DmaFile>>) {
    for file in files {
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
    }
}

async fn delete_segments(dir: &Path, doomed: Vec<Segment>) -> Result<Retention, StorageError> {
    let mut gone = Retention::default();
    for mut seg in doomed {
        close_files(seg.reader.take().into_iter().collect()).await;
        for path in [
            seg.path.clone(),
            segment::index_path(dir, seg.base),
            segment::time_index_path(dir, seg.base),
        ] {
            match glommio::io::remove(&path).await {
                Ok(()) => {}
                Err(e) => {
                    let e: std::io::Error = e.into();
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(StorageError::io("remove", &path, &e));
                    }
                }
            }
        }
        gone.segments += 1;
        gone.bytes += seg.size;
    }
    Ok(gone)
}
