//! Cutting the log's tail: [`PartitionLog::truncate_from`](crate::PartitionLog::truncate_from)
//! removes every record at or after an offset, durably, so that the next append takes that offset
//! (a Raft follower whose uncommitted tail conflicts with its new leader's log).
//!
//! It runs in two stages, like an append:
//! - **prepare**, in the caller's task: appends are refused from now on (`TruncationInProgress`,
//!   since the offsets they would take depend on the cut), the appends already ordered are waited
//!   for until durable or failed, and the cut is found: the segment, and the byte where the record
//!   that takes the offset starts. A span record is kept or cut whole (`NotRecordBoundary`).
//! - **apply**, in the committer, between rounds (it owns the active segment and writes the index
//!   files): the log is first cut in memory, all at once, so that no read started afterwards sees a
//!   cut record; then on disk, in an order where a crash at any step leaves a prefix of the old log,
//!   ending at or after the cut, that recovery opens cleanly:
//!   1. the segments wholly past the cut are deleted newest first, each one's index files before
//!      its log file (an index left without its log could be taken for a later segment's of the
//!      same base), with the directory synced after each, so the segments left never have a hole;
//!   2. the segment that holds the cut is cut to the byte (`ftruncate`, `fdatasync`). The records
//!      past the cut leave the file, not merely the log's bookkeeping: recovery walks the newest
//!      segment until a record does not check or its offset does not follow, and a stale record
//!      left beyond later, shorter appends could pass both checks (its offset may well follow);
//!   3. its index files are cut to the kept entries they already hold, and synced, so that no stale
//!      entry can point into records appended later.
//!
//!   That segment becomes the active one; the committer reopens it on the next append, reserving
//!   space past the cut again (space that reads as zeroes).
//!
//! [`PartitionLog::restart_at`](crate::PartitionLog::restart_at) goes the same way, except that
//! every segment is deleted and the new start offset is written last: a crash midway leaves a
//! prefix of the old log, which the caller (who recorded that it restarts the log) restarts again.
//!
//! `truncate_from` returns once all of that is durable. If the disk fails midway, reads keep the
//! in-memory cut, appends and truncations are refused (`TruncationIncomplete`), and a reopen
//! recovers the prefix the disk holds.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{Directory, DmaFile, OpenOptions};

use crate::appender::Appender;
use crate::error::StorageError;
use crate::index::INDEX_ENTRY_BYTES;
use crate::log::{Inner, State, FAILURES_REMEMBERED};
use crate::recovery::{delete_segments, write_start_offset};
use crate::segment::{self, walk, Segment};
use crate::wake::Latch;

/// Where truncation stands; at most one runs at a time.
#[derive(Default)]
pub(crate) enum Truncation {
    #[default]
    Idle,
    /// The caller waits for earlier appends and looks for the cut.
    Preparing,
    /// Handed to the committer.
    Requested(Rc<Request>),
    /// Failed on the disk midway: this error refuses appends and truncations until a reopen.
    Broken(StorageError),
}

impl Truncation {
    /// Why an append or a truncation must be refused now, if it must.
    pub(crate) fn refusal(&self) -> Option<StorageError> {
        match self {
            Truncation::Idle => None,
            Truncation::Preparing | Truncation::Requested(_) => {
                Some(StorageError::TruncationInProgress)
            }
            Truncation::Broken(error) => Some(error.clone()),
        }
    }
}

/// A cut handed to the committer, and its outcome once applied.
pub(crate) struct Request {
    kind: Kind,
    done: Latch,
    outcome: RefCell<Option<Result<(), StorageError>>>,
}

/// What the committer is asked to do.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Cut the tail.
    Cut(Cut),
    /// Remove every record and start the log, empty, at this offset.
    Restart(u64),
}

impl Kind {
    fn offset(&self) -> u64 {
        match self {
            Kind::Cut(cut) => cut.offset,
            Kind::Restart(offset) => *offset,
        }
    }
}

/// Where the log is cut.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// The first offset removed.
    offset: u64,
    /// The segment that holds it.
    base: u64,
    /// The byte of that segment where the record taking `offset` starts.
    position: u64,
    /// The newest record the segment keeps, if any.
    kept: Option<Kept>,
}

/// The newest record kept in the cut segment.
#[derive(Debug, Clone, Copy)]
struct Kept {
    position: u64,
    offset: u64,
    timestamp_ns: u64,
}

/// What is left to do on disk once the log is cut in memory.
struct Plan {
    /// Segments wholly past the cut, oldest first.
    doomed: Vec<Segment>,
    /// The segment that holds the cut, if one is kept.
    cut: Option<CutFile>,
    /// The log's new start offset, if it restarts.
    start_at: Option<u64>,
}

/// The segment that holds a cut.
struct CutFile {
    log_path: PathBuf,
    base: u64,
    position: u64,
    /// Kept index entries that the index files already hold.
    index_entries: usize,
}

/// `PartitionLog::truncate_from`: prepares the cut, hands it to the committer and waits for it.
pub(crate) async fn truncate_from(inner: &Inner, offset: u64) -> Result<(), StorageError> {
    let Some((end, epoch)) = begin(inner, offset)? else {
        return Ok(());
    };
    // Dropped on every way out before the hand-over (an error, or the caller giving up).
    let preparing = Preparing(inner);
    inner.wait_committed(end, epoch).await;
    let Some(cut) = find_cut(inner, offset).await? else {
        return Ok(());
    };
    let request = hand_over(inner, Kind::Cut(cut))?;
    drop(preparing);
    request.done.wait().await;
    let outcome = request.outcome.borrow_mut().take();
    outcome.unwrap_or(Err(StorageError::Closed))
}

/// `PartitionLog::restart_at`: waits for the appends ordered so far, then has the committer
/// remove every record and start the log, empty, at `offset`.
pub(crate) async fn restart_at(inner: &Inner, offset: u64) -> Result<(), StorageError> {
    let (end, epoch) = {
        let mut st = inner.state.borrow_mut();
        if st.closing {
            return Err(StorageError::Closed);
        }
        if let Some(refusal) = st.truncation.refusal() {
            return Err(refusal);
        }
        st.truncation = Truncation::Preparing;
        (st.assign_next, st.epoch)
    };
    let preparing = Preparing(inner);
    inner.wait_committed(end, epoch).await;
    let request = hand_over(inner, Kind::Restart(offset))?;
    drop(preparing);
    request.done.wait().await;
    let outcome = request.outcome.borrow_mut().take();
    outcome.unwrap_or(Err(StorageError::Closed))
}

/// Checks `offset` against the log as it is and refuses appends from now on. Returns the end and
/// epoch of the appends ordered so far, or `None` if there is nothing to cut.
fn begin(inner: &Inner, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
    let mut st = inner.state.borrow_mut();
    if st.closing {
        return Err(StorageError::Closed);
    }
    if let Some(refusal) = st.truncation.refusal() {
        return Err(refusal);
    }
    check_range(offset, st.start_offset, st.assign_next)?;
    if offset == st.assign_next {
        return Ok(None);
    }
    st.truncation = Truncation::Preparing;
    Ok(Some((st.assign_next, st.epoch)))
}

/// Puts truncation back to idle if it is still being prepared when dropped.
struct Preparing<'a>(&'a Inner);

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.borrow_mut();
        if matches!(st.truncation, Truncation::Preparing) {
            st.truncation = Truncation::Idle;
        }
    }
}

fn check_range(offset: u64, first: u64, next: u64) -> Result<(), StorageError> {
    if offset < first || offset > next {
        return Err(StorageError::TruncationOutOfRange {
            offset,
            first,
            next,
        });
    }
    Ok(())
}

/// Finds the cut for `offset` once every earlier append is durable or failed; `None` if nothing is
/// left to cut (failed appends took the records that were to go).
async fn find_cut(inner: &Inner, offset: u64) -> Result<Option<Cut>, StorageError> {
    let (path, base, size_bytes, floor) = {
        let st = inner.state.borrow();
        if st.closing {
            return Err(StorageError::Closed);
        }
        // Appends are refused and the earlier ones are done: the commit point is the log's end.
        check_range(offset, st.start_offset, st.committed)?;
        if offset == st.committed {
            return Ok(None);
        }
        let Some(seg) = st.segments.iter().rev().find(|s| s.base <= offset) else {
            return Err(StorageError::TruncationOutOfRange {
                offset,
                first: st.start_offset,
                next: st.committed,
            });
        };
        if offset == seg.base {
            let cut = Cut {
                offset,
                base: seg.base,
                position: 0,
                kept: None,
            };
            return Ok(Some(cut));
        }
        // From the entry at or below the record before the cut, so that the walk meets that one.
        let floor = seg
            .index
            .floor_offset(offset - 1)
            .map_or((0, seg.base), |e| (e.position, e.offset));
        (seg.path.clone(), seg.base, seg.size, floor)
    };
    let file = DmaFile::open(&path)
        .await
        .map_err(|e| StorageError::glommio("open", &path, e))?;
    let scanned = scan_to(
        &file,
        &path,
        floor,
        size_bytes,
        offset,
        inner.body_bytes_max,
    )
    .await;
    let _ = file.close().await;
    let (position, kept) = scanned?;
    Ok(Some(Cut {
        offset,
        base,
        position,
        kept: Some(kept),
    }))
}

/// Walks a segment from an index floor `(position, offset)` to the record that takes `offset`:
/// returns where that record starts and the record before it.
async fn scan_to(
    file: &DmaFile,
    path: &Path,
    (floor_position, floor_offset): (u64, u64),
    size_bytes: u64,
    offset: u64,
    body_bytes_max: u32,
) -> Result<(u64, Kept), StorageError> {
    let mut kept = None;
    let mut found = None;
    let mut straddled = None;
    let end = walk(
        file,
        path,
        floor_position,
        size_bytes,
        floor_offset,
        body_bytes_max,
        |visit| {
            let record_end = visit.offset + u64::from(visit.count);
            if visit.offset >= offset {
                found = Some(visit.position);
            } else if record_end > offset {
                straddled = Some((visit.offset, record_end));
            } else {
                kept = Some(Kept {
                    position: visit.position,
                    offset: visit.offset,
                    timestamp_ns: visit.timestamp_ns,
                });
            }
            found.is_none() && straddled.is_none()
        },
    )
    .await?;
    if let Some((record_offset, record_end)) = straddled {
        return Err(StorageError::NotRecordBoundary {
            offset,
            record_offset,
            record_end,
        });
    }
    match (found, kept) {
        (Some(position), Some(kept)) => Ok((position, kept)),
        _ => Err(StorageError::Corruption {
            path: path.to_path_buf(),
            position: end.position,
            reason: end.invalid.map_or_else(
                || format!("segment ends before offset {offset}"),
                |(_, r)| r,
            ),
        }),
    }
}

/// Hands the cut to the committer, unless the log is closing (the committer may be gone).
fn hand_over(inner: &Inner, kind: Kind) -> Result<Rc<Request>, StorageError> {
    let request = Rc::new(Request {
        kind,
        done: Latch::default(),
        outcome: RefCell::new(None),
    });
    {
        let mut st = inner.state.borrow_mut();
        if st.closing {
            return Err(StorageError::Closed);
        }
        st.truncation = Truncation::Requested(request.clone());
    }
    inner.wake_committer.notify();
    Ok(request)
}

/// The truncation the committer is asked to apply, if any.
pub(crate) fn requested(inner: &Inner) -> Option<Rc<Request>> {
    match &inner.state.borrow().truncation {
        Truncation::Requested(request) if !request.done.is_set() => Some(request.clone()),
        _ => None,
    }
}

/// Applies a truncation. The committer calls it with nothing pending and no write in flight.
pub(crate) async fn apply(inner: &Inner, appender: &mut Option<Appender>, request: Rc<Request>) {
    let offset = request.kind.offset();
    let planned = match &request.kind {
        Kind::Cut(cut) => cut_memory(inner, cut),
        Kind::Restart(offset) => Ok(restart_memory(inner, *offset)),
    };
    let outcome = match planned {
        Err(refused) => Err(refused),
        Ok(plan) => {
            inner.wake_appenders(true);
            // Its file is about to be cut or deleted under it; the next append reopens the
            // segment that is active now.
            if let Some(a) = appender.take() {
                a.discard().await;
            }
            cut_disk(&inner.dir, plan)
                .await
                .map_err(|cause| StorageError::TruncationIncomplete {
                    offset,
                    cause: Box::new(cause),
                })
        }
    };
    finish(inner, &request, outcome);
}

/// Records the outcome, leaves truncation idle (or broken), and wakes the caller.
fn finish(inner: &Inner, request: &Request, outcome: Result<(), StorageError>) {
    let dir = inner.dir.display();
    let next = match &outcome {
        Ok(()) => {
            tracing::debug!(%dir, offset = request.kind.offset(), "log truncated");
            Truncation::Idle
        }
        Err(e @ StorageError::TruncationIncomplete { .. }) => {
            tracing::error!(%dir, error = %e, "truncation failed midway");
            Truncation::Broken(e.clone())
        }
        Err(e) => {
            tracing::warn!(%dir, error = %e, "truncation refused");
            Truncation::Idle
        }
    };
    inner.state.borrow_mut().truncation = next;
    *request.outcome.borrow_mut() = Some(outcome);
    request.done.set();
}

/// Cuts the log in memory, all at once: reads end at the cut from now on, the cut segment is the
/// active one, and the appends' epoch ends as a failure ends it, so that a ticket of a cut append
/// waited on only now reports `Truncated` instead of waiting for someone else's records.
fn cut_memory(inner: &Inner, cut: &Cut) -> Result<Plan, StorageError> {
    let mut guard = inner.state.borrow_mut();
    let st = &mut *guard;
    // Retention may have moved the start, or deleted the segment, since the cut was found.
    let at = st.segments.iter().position(|s| s.base == cut.base);
    let (Some(at), true) = (at, still_valid(st, cut)) else {
        return Err(StorageError::TruncationOutOfRange {
            offset: cut.offset,
            first: st.start_offset,
            next: st.assign_next,
        });
    };
    let doomed = st.segments.split_off(at + 1);
    let seg = &mut st.segments[at];
    cut_segment(seg, cut);
    let plan = Plan {
        doomed,
        cut: Some(CutFile {
            log_path: seg.path.clone(),
            base: seg.base,
            position: cut.position,
            index_entries: seg.index.persisted(),
        }),
        start_at: None,
    };
    st.committed = cut.offset;
    st.assign_next = cut.offset;
    st.cache.truncate_from(cut.offset);
    // What a reopen would find: new timestamps follow the records kept, not the ones cut.
    st.last_timestamp_ns = st
        .segments
        .iter()
        .map(|s| s.max_timestamp_ns)
        .max()
        .unwrap_or(0);
    st.truncations += 1;
    end_epoch(st, cut.offset);
    Ok(plan)
}

/// Empties the log in memory, all at once, and starts it at `offset`: one empty segment there,
/// which becomes the active one, and the appends' epoch ended as a cut ends it.
fn restart_memory(inner: &Inner, offset: u64) -> Plan {
    let mut guard = inner.state.borrow_mut();
    let st = &mut *guard;
    let doomed = std::mem::replace(&mut st.segments, vec![Segment::empty(&inner.dir, offset)]);
    let removed_from = st.start_offset;
    st.start_offset = offset;
    st.committed = offset;
    st.assign_next = offset;
    st.cache.clear();
    st.truncations += 1;
    end_epoch(st, removed_from.min(offset));
    Plan {
        doomed,
        cut: None,
        start_at: Some(offset),
    }
}

/// Whether the cut still lies inside the log: nothing may have been appended since it was found.
fn still_valid(st: &State, cut: &Cut) -> bool {
    st.start_offset <= cut.offset
        && cut.offset < st.committed
        && st.assign_next == st.committed
        && st.pending.is_empty()
}

/// Shortens the segment's bookkeeping to the records before the cut.
fn cut_segment(seg: &mut Segment, cut: &Cut) {
    seg.size = cut.position;
    seg.next_offset = cut.offset;
    seg.index.truncate_at_position(cut.position);
    seg.indexed_position = seg.index.last().map_or(0, |e| e.position);
    match cut.kept {
        Some(kept) => {
            // Timestamps never go back along the log, so the newest kept record has the largest.
            seg.max_timestamp_ns = kept.timestamp_ns;
            seg.last_record_position = kept.position;
            seg.last_record_offset = kept.offset;
            // A sealed segment read back does not know its first timestamp; close enough for
            // rolling by age, as in recovery.
            let first_entry = seg.index.entries().first().map(|e| e.timestamp_ns);
            seg.first_timestamp_ns = seg
                .first_timestamp_ns
                .or(first_entry)
                .or(Some(kept.timestamp_ns));
        }
        None => {
            seg.first_timestamp_ns = None;
            seg.max_timestamp_ns = 0;
            seg.last_record_position = 0;
            seg.last_record_offset = 0;
        }
    }
}

/// Ends the appends' epoch at the cut: tickets of it ending at or before the cut are durable,
/// the others were truncated.
fn end_epoch(st: &mut State, offset: u64) {
    let epoch = st.epoch;
    st.failures
        .push_back((epoch, offset, StorageError::Truncated { offset }));
    if st.failures.len() > FAILURES_REMEMBERED {
        st.failures.pop_front();
    }
    st.epoch += 1;
}

/// The disk side, in the order the module's docs explain.
async fn cut_disk(dir: &Path, plan: Plan) -> Result<(), StorageError> {
    for seg in plan.doomed.into_iter().rev() {
        delete_segments(dir, vec![seg]).await?;
        sync_dir(dir).await?;
    }
    if let Some(cut) = plan.cut {
        cut_log_file(&cut.log_path, cut.position).await?;
        let index_bytes = (cut.index_entries * INDEX_ENTRY_BYTES) as u64;
        for path in [
            segment::index_path(dir, cut.base),
            segment::time_index_path(dir, cut.base),
        ] {
            cut_index_file(&path, index_bytes).await?;
        }
    }
    if let Some(offset) = plan.start_at {
        write_start_offset(dir, offset)?;
    }
    Ok(())
}

/// Cuts a segment's log file to `position` bytes, durably.
async fn cut_log_file(path: &Path, position: u64) -> Result<(), StorageError> {
    let opened = OpenOptions::new().write(true).dma_open(path).await;
    let file = match opened.map_err(|e| StorageError::glommio("open", path, e)) {
        Ok(file) => file,
        // A segment that never got a file holds nothing to cut.
        Err(e) if position == 0 && is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let cut = truncate_durably(&file, position, path).await;
    let _ = file.close().await;
    cut
}

/// Cuts a file to `length_bytes` and syncs it.
async fn truncate_durably(
    file: &DmaFile,
    length_bytes: u64,
    path: &Path,
) -> Result<(), StorageError> {
    file.truncate(length_bytes)
        .await
        .map_err(|e| StorageError::glommio("truncate", path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| StorageError::glommio("fdatasync", path, e))
}

/// Cuts an index file to `length_bytes` if it is longer, durably. A missing one is rebuilt on open.
async fn cut_index_file(path: &Path, length_bytes: u64) -> Result<(), StorageError> {
    let opened = OpenOptions::new().write(true).dma_open(path).await;
    let file = match opened.map_err(|e| StorageError::glommio("open", path, e)) {
        Ok(file) => file,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let cut = async {
        let size_bytes = file
            .file_size()
            .await
            .map_err(|e| StorageError::glommio("stat", path, e))?;
        if size_bytes <= length_bytes {
            return Ok(());
        }
        truncate_durably(&file, length_bytes, path).await
    }
    .await;
    let _ = file.close().await;
    cut
}

/// Makes the directory's entries durable: deleted files stay deleted after a crash.
async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = Directory::open(dir)
        .await
        .map_err(|e| StorageError::glommio("open", dir, e))?;
    let synced = handle
        .sync()
        .await
        .map_err(|e| StorageError::glommio("fsync", dir, e));
    let _ = handle.close().await;
    synced
}

fn is_not_found(error: &StorageError) -> bool {
    matches!(error, StorageError::Io { kind, .. } if *kind == std::io::ErrorKind::NotFound)
}
