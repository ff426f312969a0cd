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
