//! Checks of what clients send in API requests, made before anything is created: names,
//! partitions, subjects, and every number that later becomes a duration. Pure functions, so that
//! the registry, the consumer attach and the API fuzz target run the very same checks.
//!
//! Durations from clients are counted in seconds or milliseconds, and the broker turns them into
//! nanoseconds (the unit of message timestamps) and into `Instant` deadlines. A value whose
//! nanoseconds do not fit a `u64` would wrap into a tiny one (a retention of minutes instead of
//! centuries), so such values are refused here and the conversions below are checked.

use std::time::Duration;

use sluice_protocol::name::{validate_name, NameError, NAME_BYTES_MAX};
use sluice_protocol::subject::{overlaps, validate_pattern, SubjectError};

use super::{ConsumerConfig, StreamConfig};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;

/// Longest retention age, in seconds (about 584 years): the log compares an age with message
/// timestamps in `u64` nanoseconds, so the age must be one too.
pub const MAX_AGE_SECS_MAX: u64 = u64::MAX / NANOS_PER_SEC;

/// Longest ack wait, in milliseconds (about 584 years), for the same reason: every duration a
/// client gives must be representable in `u64` nanoseconds.
pub const ACK_WAIT_MS_MAX: u64 = u64::MAX / NANOS_PER_MILLI;

/// Why a stream or consumer configuration is refused. The texts are what the client receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid stream name {name:?}: {source}")]
    StreamName { name: String, source: NameError },
    #[error("invalid consumer name {name:?}: {source}")]
    ConsumerName { name: String, source: NameError },
    #[error("dead-letter stream name {name:?} is {bytes} bytes, more than {NAME_BYTES_MAX}: use a shorter stream or consumer name")]
    DeadLetterNameTooLong { name: String, bytes: usize },
    /// A stream needs a partition; the most it may have is the server's `max_partitions`.
    #[error("partitions must be at least 1, not {partitions}")]
    Partitions { partitions: u32 },
    #[error("a stream needs at least one subject")]
    NoSubjects,
    #[error("subject {subject:?}: {source}")]
    Subject {
        subject: String,
        source: SubjectError,
    },
    #[error("subjects {first} and {second} overlap")]
    SubjectsOverlap { first: String, second: String },
    #[error("subjects overlap: {ours} (new stream {stream}) and {theirs} (stream {other})")]
    StreamsOverlap {
        ours: String,
        stream: String,
        theirs: String,
        other: String,
    },
    #[error("{field} must be at most {max}, not {value}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        max: u64,
    },
}

/// Checks a stream name: a name by the one rule for names, or the broker's own dead-letter stream
/// name, `DLQ.<stream>.<consumer>`, whose parts are and which, whole, is no longer than a name (it
/// becomes a directory name).
pub fn check_stream_name(name: &str) -> Result<(), NameError> {
    let dead_letter = name
        .strip_prefix("DLQ.")
        .and_then(|rest| rest.split_once('.'))
        .filter(|(stream, consumer)| {
            validate_name(stream).is_ok() && validate_name(consumer).is_ok()
        });
    match dead_letter {
        Some(_) if name.len() > NAME_BYTES_MAX => Err(NameError::TooLong { bytes: name.len() }),
        Some(_) => Ok(()),
        None => validate_name(name),
    }
}

/// The name of a consumer's dead-letter stream, which is also the subject it captures.
pub fn dead_letter_stream(stream: &str, consumer: &str) -> String {
    format!("DLQ.{stream}.{consumer}")
}

impl StreamConfig {
    /// Checks the configuration on its own: name, partitions, subjects (valid, not overlapping
    /// each other) and retention limits.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Err(source) = check_stream_name(&self.name) {
            return Err(ConfigError::StreamName {
                name: self.name.clone(),
                source,
            });
        }
        if self.partitions == 0 {
            return Err(ConfigError::Partitions {
                partitions: self.partitions,
            });
        }
        if self.subjects.is_empty() {
            return Err(ConfigError::NoSubjects);
        }
        for (i, subject) in self.subjects.iter().enumerate() {
            if let Err(source) = validate_pattern(subject) {
                return Err(ConfigError::Subject {
                    subject: subject.clone(),
                    source,
                });
            }
            if let Some(other) = self.subjects[..i].iter().find(|s| overlaps(s, subject)) {
                return Err(ConfigError::SubjectsOverlap {
                    first: other.clone(),
                    second: subject.clone(),
                });
            }
        }
        self.retention_age()?;
        Ok(())
    }

    /// Checks that no subject of this stream overlaps one of `others` (the streams there are).
    pub fn check_against(&self, others: &[StreamConfig]) -> Result<(), ConfigError> {
        for other in others {
            for theirs in &other.subjects {
                if let Some(ours) = self.subjects.iter().find(|s| overlaps(s, theirs)) {
                    return Err(ConfigError::StreamsOverlap {
                        ours: ours.clone(),
                        stream: self.name.clone(),
                        theirs: theirs.clone(),
                        other: other.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `max_age_secs` as a duration whose nanoseconds fit a `u64`.
    pub fn retention_age(&self) -> Result<Option<Duration>, ConfigError> {
        self.max_age_secs
            .map(|secs| duration_of(secs, NANOS_PER_SEC, "max_age_secs", MAX_AGE_SECS_MAX))
            .transpose()
    }
}

impl ConsumerConfig {
    /// Checks the configuration on its own: names (the consumer's, and the dead-letter stream's
    /// made from both) and the ack wait. Whether the stream exists is the caller's question.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Err(source) = validate_name(&self.name) {
            return Err(ConfigError::ConsumerName {
                name: self.name.clone(),
                source,
            });
        }
        let dead_letter = self.dead_letter_stream();
        if dead_letter.len() > NAME_BYTES_MAX {
            return Err(ConfigError::DeadLetterNameTooLong {
                bytes: dead_letter.len(),
                name: dead_letter,
            });
        }
        self.ack_wait()?;
        Ok(())
    }

    /// The name of this consumer's dead-letter stream, which is also the subject it captures:
    /// `DLQ.<stream>.<consumer>`, or for a consumer made through the JetStream API
    /// `DLQ_<stream>_<consumer>`, one token, so that JetStream clients can name it in API subjects.
    pub fn dead_letter_stream(&self) -> String {
        if self.jetstream.is_some() {
            format!("DLQ_{}_{}", self.stream, self.name)
        } else {
            dead_letter_stream(&self.stream, &self.name)
        }
    }

    /// `ack_wait_ms` as a duration whose nanoseconds fit a `u64` (at least a millisecond).
    pub fn ack_wait(&self) -> Result<Duration, ConfigError> {
        duration_of(
            self.ack_wait_ms.max(1),
            NANOS_PER_MILLI,
            "ack_wait_ms",
            ACK_WAIT_MS_MAX,
        )
    }
}

/// `value` units of `unit_nanos` each, refused past `max` (where the nanoseconds would wrap).
fn duration_of(
    value: u64,
    unit_nanos: u64,
    field: &'static str,
    max: u64,
) -> Result<Duration, ConfigError> {
    let out_of_range = ConfigError::OutOfRange { field, value, max };
    if value > max {
        return Err(out_of_range);
    }
    let nanos = value.checked_mul(unit_nanos).ok_or(out_of_range)?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeliverPolicy;

    fn stream(max_age_secs: Option<u64>) -> StreamConfig {
        StreamConfig {
            partitions: 4,
            max_age_secs,
            max_bytes: Some(u64::MAX),
            ..StreamConfig::new("orders", vec!["orders.>".into()])
        }
    }

    fn consumer(stream: &str, name: &str, ack_wait_ms: u64) -> ConsumerConfig {
        ConsumerConfig {
            stream: stream.into(),
            name: name.into(),
            deliver: DeliverPolicy::All,
            ack_wait_ms,
            max_deliver: u32::MAX,
            max_ack_pending: u32::MAX,
            sid: u64::MAX,
            jetstream: None,
        }
    }

    #[test]
    fn a_retention_age_whose_nanoseconds_would_wrap_is_refused() {
        // u64::MAX / 1e9 + 1 seconds times 1e9 wraps to a few hundred million nanoseconds: without
        // the check a retention of 584 years would delete everything older than half a second.
        let wraps = MAX_AGE_SECS_MAX + 1;
        assert_eq!(
            stream(Some(wraps)).check(),
            Err(ConfigError::OutOfRange {
                field: "max_age_secs",
                value: wraps,
                max: MAX_AGE_SECS_MAX
            })
        );
        assert!(stream(Some(u64::MAX)).check().is_err());
        assert_eq!(
            stream(Some(MAX_AGE_SECS_MAX)).retention_age(),
            Ok(Some(Duration::from_secs(MAX_AGE_SECS_MAX)))
        );
        assert_eq!(stream(Some(0)).check(), Ok(()));
        assert_eq!(stream(None).retention_age(), Ok(None));
        let message = stream(Some(u64::MAX)).check().unwrap_err().to_string();
        assert!(message.contains("max_age_secs"), "{message}");
    }

    #[test]
    fn an_ack_wait_whose_nanoseconds_would_wrap_is_refused() {
        assert_eq!(
            consumer("orders", "worker", ACK_WAIT_MS_MAX + 1).check(),
            Err(ConfigError::OutOfRange {
                field: "ack_wait_ms",
                value: ACK_WAIT_MS_MAX + 1,
                max: ACK_WAIT_MS_MAX
            })
        );
        assert!(consumer("orders", "worker", u64::MAX).check().is_err());
        assert_eq!(
            consumer("orders", "worker", ACK_WAIT_MS_MAX).ack_wait(),
            Ok(Duration::from_millis(ACK_WAIT_MS_MAX))
        );
        assert_eq!(
            consumer("orders", "worker", 0).ack_wait(),
            Ok(Duration::from_millis(1))
        );
        // Counts are only ever widened (u32 to usize), never narrowed: any value is accepted.
        assert_eq!(consumer("orders", "worker", 30_000).check(), Ok(()));
    }

    #[test]
    fn a_consumer_whose_dead_letter_stream_name_would_be_too_long_is_refused() {
        let long = "n".repeat(200);
        assert!(matches!(
            consumer(&long, &long, 1000).check(),
            Err(ConfigError::DeadLetterNameTooLong { bytes: 405, .. })
        ));
        assert!(check_stream_name(&dead_letter_stream(&long, &long)).is_err());
        assert_eq!(
            check_stream_name(&dead_letter_stream("orders", "w")),
            Ok(())
        );
        assert!(consumer("orders", "a.b", 1000).check().is_err());
        assert!(consumer("orders", "", 1000).check().is_err());
    }

    #[test]
    fn stream_configs_keep_the_rules_of_the_registry() {
        let mut config = stream(None);
        assert_eq!(config.check(), Ok(()));
        config.partitions = 0;
        assert_eq!(
            config.check(),
            Err(ConfigError::Partitions { partitions: 0 })
        );
        config.partitions = 1;
        config.subjects = vec!["a.*".into(), "a.b".into()];
        assert_eq!(
            config.check().unwrap_err().to_string(),
            "subjects a.* and a.b overlap"
        );
        config.subjects = vec![];
        assert_eq!(config.check(), Err(ConfigError::NoSubjects));
        config.subjects = vec!["orders.eu".into()];
        assert!(config.check_against(&[stream(None)]).is_err());
        config.name = "../x".into();
        assert!(config.check().is_err());
    }
}
