//! A segment: one file of records, named by the offset of its first record (`<base:020>.log`), with
//! its index beside it. Walking a segment is how it is recovered, indexed and read.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::DmaFile;

use crate::error::StorageError;
use crate::index::Index;
use crate::readahead::{Parts, Preread};
use crate::record::{parse, Invalid, Parsed};

/// Bytes read from disk at a time when walking a segment: the read-ahead of replays.
pub const READ_AHEAD_BYTES: usize = 256 * 1024;

/// The log file of the segment starting at `base`.
pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The offset index file of the segment starting at `base`.
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// The time index file of the segment starting at `base`.
pub fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// The base offset named by a segment's log file name.
pub fn parse_base(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What the log knows of one segment.
pub struct Segment {
    pub base: u64,
    pub path: PathBuf,
    /// Bytes of committed records.
    pub size: u64,
    /// One past the offset of the last committed record.
    pub next_offset: u64,
    /// Timestamp of the first record, if any (for rolling by age).
    pub first_timestamp_ns: Option<u64>,
    /// Timestamp of the newest record (for retention by age).
    pub max_timestamp_ns: u64,
    pub index: Index,
    /// Position of the last index entry (or 0), to know when the next one is due.
    pub indexed_position: u64,
    /// Position of the newest record, for the last index entry written when the segment is sealed.
    pub last_record_position: u64,
    /// Offset of the newest record (below `next_offset - 1` if it is a span).
    pub last_record_offset: u64,
    /// A read handle, opened on first read.
    pub reader: Option<Rc<DmaFile>>,
}

impl Segment {
    /// An empty segment starting at `base`.
    pub fn empty(dir: &Path, base: u64) -> Segment {
        Segment {
            base,
            path: log_path(dir, base),
            size: 0,
            next_offset: base,
            first_timestamp_ns: None,
            max_timestamp_ns: 0,
            index: Index::default(),
            indexed_position: 0,
            last_record_position: 0,
            last_record_offset: 0,
            reader: None,
        }
    }

    /// Whether it holds no records.
    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base
    }
}

/// A record met while walking a segment.
pub struct Visit {
    pub position: u64,
    pub offset: u64,
    /// Offsets the record takes (1, or a span's count).
    pub count: u32,
    pub timestamp_ns: u64,
    pub body: Bytes,
    /// Bytes the record takes in the file.
    pub len: u64,
}

/// Where a walk ended.
#[derive(Debug)]
pub struct WalkEnd {
    /// The position after the last record visited.
    pub position: u64,
    /// Set if the walk stopped at bytes that are not a valid record (before `end`).
    pub invalid: Option<(u64, String)>,
}

/// Walks the records of `file` from `position` to `end`, calling `visit` for each until it returns
/// false. Stops at the first bytes that are not a valid record, or whose offset is not the one that
/// follows (`expected_offset`, then past each record's offsets).
pub async fn walk(
    file: &DmaFile,
    path: &Path,
    position: u64,
    end: u64,
    expected_offset: u64,
    body_bytes_max: u32,
    visit: impl FnMut(Visit) -> bool,
) -> Result<WalkEnd, StorageError> {
    walk_from(
        file,
        path,
        (position, expected_offset),
        end,
        &mut Parts::default(),
        body_bytes_max,
        visit,
    )
    .await
}

/// As [`walk`], taking the bytes it needs from `parts` (read ahead) while they last and follow on,
/// from the disk after. When `visit` says stop, the bytes read from the record it refused on go
/// back to the front of `parts`, for the next read in order.
pub(crate) async fn walk_from(
    file: &DmaFile,
    path: &Path,
    (mut position, mut expected_offset): (u64, u64),
    end: u64,
    parts: &mut Parts,
    body_bytes_max: u32,
    mut visit: impl FnMut(Visit) -> bool,
) -> Result<WalkEnd, StorageError> {
    while position < end {
        // Bytes read now hold every record committed before the read; bytes read ahead, only
        // those below their `offset_end`.
        let (mut chunk, offset_end, from_disk) = match parts.next(position, expected_offset).await {
            Some(pre) => (pre.bytes, pre.offset_end, false),
            None => {
                let want = ((end - position) as usize).min(READ_AHEAD_BYTES);
                let chunk = read(file, path, position, want).await?;
                (chunk, parts.disk_offset_end, true)
            }
        };
        let mut at = 0usize;
        let mut distrusted = false;
        loop {
            if position + at as u64 >= end {
                break;
            }
            if !from_disk && expected_offset >= offset_end {
                // Read ahead before these records were written: read them again.
                distrusted = true;
                break;
            }
            match parse(&chunk[at..], body_bytes_max) {
                Parsed::Valid {
                    offset,
                    count,
                    timestamp_ns,
                    body_start,
                    body_len,
                } => {
                    let record_position = position + at as u64;
                    let len = (body_start + body_len) as u64;
                    if record_position + len > end {
                        return Ok(invalid(record_position, "record runs past the end".into()));
                    }
                    if offset != expected_offset {
                        let reason =
                            format!("offset {offset} where {expected_offset} was expected");
                        return Ok(invalid(record_position, reason));
                    }
                    let body = chunk.slice(at + body_start..at + body_start + body_len);
                    at += len as usize;
                    expected_offset += u64::from(count);
                    let go_on = visit(Visit {
                        position: record_position,
                        offset,
                        count,
                        timestamp_ns,
                        body,
                        len,
                    });
                    if !go_on {
                        let refused = at - len as usize;
                        parts.put_back(Preread {
                            position: record_position,
                            offset,
                            bytes: chunk.slice(refused..),
                            offset_end,
                        });
                        return Ok(WalkEnd {
                            position: position + at as u64,
                            invalid: None,
                        });
                    }
                }
                Parsed::Incomplete { need } => {
                    let record_position = position + at as u64;
                    if record_position + need as u64 > end {
                        let reason = format!("record of {need} bytes runs past the end");
                        return Ok(invalid(record_position, reason));
                    }
                    if at == 0 && from_disk {
                        // A record larger than the read-ahead: read it whole.
                        chunk = read(file, path, record_position, need).await?;
                        if chunk.len() < need {
                            let reason = format!("file ends inside a record of {need} bytes");
                            return Ok(invalid(record_position, reason));
                        }
                        continue;
                    }
                    break;
                }
                Parsed::Invalid(why) => {
                    let reason = match why {
                        Invalid::Length { length } => format!("length {length} is out of range"),
                        Invalid::Checksum { stored, computed } => format!(
                            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                        ),
                        Invalid::Count => "a span record of no offsets".to_string(),
                    };
                    return Ok(invalid(position + at as u64, reason));
                }
            }
        }
        if at == 0 && from_disk && !distrusted {
            // Nothing parsed in a full chunk from the disk: only possible at `end`.
            break;
        }
        position += at as u64;
    }
    Ok(WalkEnd {
        position,
        invalid: None,
    })
}

fn invalid(position: u64, reason: String) -> WalkEnd {
    WalkEnd {
        position,
        invalid: Some((position, reason)),
    }
}

/// Reads up to `len` bytes at `position` into shared bytes (one copy, so that bodies can be slices).
pub(crate) async fn read(
    file: &DmaFile,
    path: &Path,
    position: u64,
    len: usize,
) -> Result<Bytes, StorageError> {
    let result = file
        .read_at(position, len)
        .await
        .map_err(|e| StorageError::glommio("read", path, e))?;
    Ok(Bytes::copy_from_slice(&result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_carry_twenty_digit_base_offsets() {
        let dir = Path::new("/d");
        assert_eq!(
            log_path(dir, 42),
            PathBuf::from("/d/00000000000000000042.log")
        );
        assert_eq!(parse_base("00000000000000000042.log"), Some(42));
        assert_eq!(parse_base("42.log"), None);
        assert_eq!(parse_base("00000000000000000042.index"), None);
    }
}
