//! How a log is configured.

use std::time::Duration;

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After `fdatasync`; one sync covers every append that arrived while the previous one ran.
    Always,
    /// After the write reaches the file; a sync runs at least this often.
    Interval(Duration),
    /// After the write reaches the file; never synced by the log (survives a process crash only).
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
        }
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<FsyncPolicy, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "invalid fsync policy {s:?}: expected always, never or interval:MS"
                )),
            },
        }
    }
}

/// Default segment size (256 MiB): large enough that rolls are rare, small enough that retention
/// frees space in useful steps.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Default segment age before it rolls (one day), so that retention by age can act on quiet logs.
pub const SEGMENT_AGE_MAX_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// Default bytes of newest records kept in memory per partition (8 MiB): tailing consumers read
/// from memory, never from disk.
pub const CACHE_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;

/// Default largest record body (16 MiB): above the broker's largest frame.
pub const RECORD_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// Default bytes between index entries (64 KiB): a read scans at most this much to find its offset,
/// and the index costs 16 bytes per 64 KiB of log in memory.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u64 = 64 * 1024;

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub fsync: FsyncPolicy,
    pub segment_bytes_max: u64,
    pub segment_age_max: Duration,
    pub cache_bytes_max: usize,
    pub record_bytes_max: usize,
    pub index_interval_bytes: u64,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_age_max: Option<Duration>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes_max: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            segment_age_max: SEGMENT_AGE_MAX_DEFAULT,
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            retention_age_max: None,
            retention_bytes_max: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policies_parse_from_the_command_line_form() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval:50".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(50)))
        );
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
