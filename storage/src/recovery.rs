//! Opening a log: finding its segments, trusting or rebuilding their indexes, and cutting the newest
//! one back to its last valid record. Also the log's small file chores: the start offset, deleting
//! segments, closing read handles.

use std::path::Path;
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{Index, IndexEntry};
use crate::log::{Retention, START_OFFSET_FILE};
use crate::segment::{self, walk, Segment};

/// Makes glommio decide whether the device under `dir` supports polled I/O by reading a file that
/// holds data. glommio probes the first direct-I/O file it opens on a device and remembers the
/// answer for the process; probing an empty file (a segment just created) reads nothing, "succeeds",
/// and sends every later read of that device to the poll ring, where devices without polling
/// support fail them with EOPNOTSUPP.
pub(crate) async fn probe_device(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(".probe");
    std::fs::write(&path, [0u8; 4096]).map_err(|e| StorageError::io("write", &path, &e))?;
    let opened = DmaFile::open(&path).await;
    let _ = std::fs::remove_file(&path);
    let file = opened.map_err(|e| StorageError::glommio("open", &path, e))?;
    let _ = file.close().await;
    Ok(())
}

pub(crate) fn list_bases(dir: &Path) -> Result<Vec<u64>, StorageError> {
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
pub(crate) async fn load_sealed(
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

/// The newest segment: walked from its last index entry until a record does not check or its offset
/// does not follow; a torn tail (or reserved zeroes) past that is cut off. No valid record can lie
/// beyond the end found: appends only extend the records, and a truncation cuts the file itself,
/// durably, before any later append (see `truncate.rs`), so stale records are never walked into.
pub(crate) async fn recover_active(
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
        next = visit.offset + u64::from(visit.count);
        true
    })
    .await?;
    Ok((walked, index, first_ts, max_ts, next))
}

pub(crate) fn read_start_offset(dir: &Path) -> Result<u64, StorageError> {
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
pub(crate) fn write_start_offset(dir: &Path, offset: u64) -> Result<(), StorageError> {
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
pub(crate) async fn close_files(files: Vec<Rc<DmaFile>>) {
    for file in files {
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
    }
}

/// Deletes the segments' files, each one's index files before its log file: an index left behind
/// without its log by a crash could be taken, after a truncation, for that of a new segment with
/// the same base, where a log left without its index is only reindexed.
pub(crate) async fn delete_segments(
    dir: &Path,
    doomed: Vec<Segment>,
) -> Result<Retention, StorageError> {
    let mut gone = Retention::default();
    for mut seg in doomed {
        close_files(seg.reader.take().into_iter().collect()).await;
        for path in [
            segment::index_path(dir, seg.base),
            segment::time_index_path(dir, seg.base),
            seg.path.clone(),
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
