//! Sluice's segment log: the append-only log each stream partition lives in.
//!
//! It runs inside one glommio executor (one shard) and writes with direct I/O (O_DIRECT through
//! io_uring). It never imports the protocol crate or the broker: bodies are opaque bytes.
//!
//! Map of the modules, in the order an append flows through them:
//! - [`log`]: [`PartitionLog`], the API (`open`, `append`, `read`, `offset_for_time`,
//!   `truncate_before`, `truncate_from`, `apply_retention`, `close`) and the group-committing
//!   writer task.
//! - [`record`]: the on-disk record format.
//! - [`appender`]: direct-I/O appends to one segment file, with its partial last block; it reserves
//!   the file's space in steps as the segment fills (64 KiB first, doubling up to 64 MiB), so a quiet
//!   log costs one small step of disk, not a whole segment.
//! - [`segment`]: segment files, their names, and walking their records (recovery and reads).
//! - [`index`]: the sparse offset and time index of a segment.
//! - [`cache`]: the newest records in memory, for tailing readers.
//! - `truncate`: cutting the log's tail durably (`truncate_from`), and in what order on disk.
//! - [`config`]: [`LogConfig`] and [`FsyncPolicy`].
//! - [`error`]: the typed [`StorageError`].
//! - [`wake`]: single-threaded wake-ups between tasks of one executor.

pub mod appender;
pub mod cache;
mod committer;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod index;
pub mod log;
pub mod metrics;
mod read;
mod readahead;
pub mod record;
mod recovery;
pub mod segment;
mod truncate;
pub mod wake;

pub use config::{FsyncPolicy, LogConfig};
pub use error::StorageError;
pub use log::{now_ns, AppendTicket, PartitionLog, Retention};
pub use metrics::{Histogram, LogMetricsSnapshot, BUCKET_BOUNDS_US};
pub use record::Record;
