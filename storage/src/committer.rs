//! The committer: the one task per log that makes appends durable.
//!
//! It takes the pending appends in rounds (at most `ROUND_BYTES_MAX`, at least one append), starts
//! each round's direct writes, and keeps up to `ROUNDS_IN_FLIGHT_MAX` rounds in flight; it completes
//! them in order (waiting for the writes, and under `FsyncPolicy::Always` one `fdatasync` per round),
//! moving the commit point and waking the appends that are now durable. It also rolls segments,
//! persists their indexes and applies truncations (see [`crate::truncate`]) when nothing is pending
//! or in flight. Every change to the active segment goes through here.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use crate::appender::{Appender, Writes};
use crate::config::FsyncPolicy;
use crate::error::StorageError;
use crate::index::IndexEntry;
use crate::log::{Inner, Pending, FAILURES_REMEMBERED, INDEX_PERSIST_ENTRIES};
use crate::segment::{self, Segment};
use crate::truncate;

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
    /// When each of its appends was called.
    queued: Vec<Instant>,
}

pub(crate) async fn run_committer(inner: Rc<Inner>) {
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
                    fail(&inner, &mut appender, e).await;
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
                    fail(&inner, &mut appender, e).await;
                }
            }
            inner.wake_appenders(false);
            if appender.is_some() {
                persist_index(&inner, false).await;
            }
            continue;
        }
        // Nothing pending, nothing in flight: the moment a truncation needs (and before closing, so
        // that one handed over is applied even if the log closes meanwhile).
        if let Some(request) = truncate::requested(&inner) {
            truncate::apply(&inner, &mut appender, request).await;
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
                        let started = Instant::now();
                        match a.sync().await {
                            Ok(()) => inner.metrics.fsync.record(started.elapsed()),
                            Err(e) => tracing::warn!(error = %e, "periodic sync failed"),
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
        persist_index(&inner, true).await;
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
    let age_max = u64::try_from(inner.config.segment_age_max.as_nanos()).unwrap_or(u64::MAX);
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
        queued: batches.iter().map(|b| b.queued).collect(),
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
            let started = Instant::now();
            a.sync().await?;
            inner.metrics.fsync.record(started.elapsed());
        }
    }
    let now = Instant::now();
    for queued in &round.queued {
        inner.metrics.append.record(now - *queued);
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
async fn fail(inner: &Inner, appender: &mut Option<Appender>, error: StorageError) {
    tracing::error!(dir = %inner.dir.display(), error = %error, "append failed");
    // The next write reopens the segment and cuts it back to the commit point; the appender is
    // closed once its writes are over, after the failure is in the state.
    let failed = appender.take();
    record_failure(inner, error);
    inner.wake_appenders(true);
    if let Some(a) = failed {
        a.discard().await;
    }
}

/// Ends the appends' epoch with `error`: those not committed fail, their offsets are handed out
/// again, and the active segment's index forgets what was never committed.
fn record_failure(inner: &Inner, error: StorageError) {
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
        active.last_record_offset = b.last_record_offset;
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
        persist_index(inner, true).await;
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
    let last_offset = active.last_record_offset;
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

/// Writes the active segment's index entries that are not yet in the files: once enough have piled
/// up, or all of them if `all`.
async fn persist_index(inner: &Inner, all: bool) {
    let work = {
        let mut st = inner.state.borrow_mut();
        let active = st.segments.last_mut().expect("an active segment");
        if all || active.index.unpersisted() >= INDEX_PERSIST_ENTRIES {
            active.index.take_unpersisted().map(|w| (active.base, w))
        } else {
            None
        }
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
