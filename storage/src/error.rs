//! Typed errors of the log.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong in a partition log.
#[derive(Debug, Clone, Error)]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{op} {path}: {message}")]
    Io {
        op: &'static str,
        path: PathBuf,
        kind: std::io::ErrorKind,
        message: String,
    },
    /// The file system is full. The log stays readable and consistent; appends fail until there is room.
    #[error("no space left on device writing {path}")]
    DiskFull { path: PathBuf },
    /// A sealed segment holds bytes that do not check: reported, never skipped or returned as data.
    #[error("corrupt record in {path} at byte {position}: {reason}")]
    Corruption {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// A record body is larger than the log accepts.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// A read asked for an offset below the start of the log.
    #[error("offset {requested} is below the start of the log ({start})")]
    OffsetOutOfRange { requested: u64, start: u64 },
    /// The log has been closed.
    #[error("the log is closed")]
    Closed,
    /// A truncation asked for an offset the log does not hold: below its first offset or past the
    /// offset its next append will take.
    #[error("cannot truncate from offset {offset}: the log holds offsets {first} to {next}")]
    TruncationOutOfRange { offset: u64, first: u64, next: u64 },
    /// A truncation asked for an offset inside a span record, which is kept or cut whole.
    #[error(
        "offset {offset} is inside the record that takes offsets {record_offset} to {record_end}"
    )]
    NotRecordBoundary {
        offset: u64,
        record_offset: u64,
        record_end: u64,
    },
    /// An append or a truncation arrived while a truncation runs: the offsets it would take depend
    /// on where the log is cut, so it is refused rather than guessed.
    #[error("a truncation of the log is under way")]
    TruncationInProgress,
    /// The records asked for were cut by a truncation: an append that was durable before it, or a
    /// read that kept meeting truncations.
    #[error("records from offset {offset} on were truncated")]
    Truncated { offset: u64 },
    /// A truncation failed on the disk midway. The disk holds a prefix of the log that ends at or
    /// after `offset`; appends and truncations are refused until the log is reopened, which
    /// recovers that prefix.
    #[error("truncation from offset {offset} failed midway, reopen the log: {cause}")]
    TruncationIncomplete {
        offset: u64,
        cause: Box<StorageError>,
    },
}

impl StorageError {
    /// Wraps an I/O error, recognising a full disk.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, error: &std::io::Error) -> StorageError {
        let path = path.into();
        if error.raw_os_error() == Some(libc::ENOSPC)
            || error.kind() == std::io::ErrorKind::StorageFull
        {
            return StorageError::DiskFull { path };
        }
        StorageError::Io {
            op,
            path,
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    /// Wraps a glommio error.
    pub fn glommio<T>(
        op: &'static str,
        path: impl Into<PathBuf>,
        error: glommio::GlommioError<T>,
    ) -> StorageError {
        let error: std::io::Error = error.into();
        StorageError::io(op, path, &error)
    }
}
