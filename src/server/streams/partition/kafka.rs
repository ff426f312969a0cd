//! A partition's side of the Kafka port: reads for fetches (waiting at the end of the log as a
//! long poll) and offset lookups, by time too.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use sluice_protocol::kafka::batch::{self, BatchHeader};
use sluice_storage::Record;

use super::*;
use crate::server::streams::kafka::{Offsets, Read, ReadError};

/// Bytes read at a time when looking an offset up by time.
const TIME_SCAN_BYTES: usize = 1024 * 1024;

impl Partition {
    /// Committed records from `offset` (the first may be a batch that starts below it), about
    /// `max_bytes`; with none yet, waits up to `wait_ms` for an append to become durable.
    pub async fn kafka_read(
        &self,
        offset: u64,
        max_bytes: usize,
        wait_ms: u64,
    ) -> Result<Read, ReadError> {
        let _in_use = self.ready().await;
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            let why = self.failed.borrow().clone();
            return Err(ReadError::Storage(
                why.unwrap_or_else(|| "the stream was removed".into()),
            ));
        };
        let (first, next) = (log.first_offset(), log.next_offset());
        if offset < first || offset > next {
            return Err(ReadError::OutOfRange { first, next });
        }
        if offset == next && wait_ms > 0 {
            let appended = self.appended.clone();
            let _ = glommio::timer::timeout(Duration::from_millis(wait_ms), async {
                appended
                    .wait_until(|| log.next_offset() > offset || self.removed.get())
                    .await;
                Ok(())
            })
            .await;
        }
        let records = match log.read(offset, max_bytes).await {
            Ok(records) => records,
            Err(StorageError::OffsetOutOfRange { start, .. }) => {
                return Err(ReadError::OutOfRange {
                    first: start,
                    next: log.next_offset(),
                })
            }
            Err(e) => return Err(ReadError::Storage(e.to_string())),
        };
        let deleted = self.deleted.borrow();
        let records = records
            .into_iter()
            .filter(|r| r.count > 1 || !deleted.contains(r.offset))
            .collect();
        Ok(Read {
            records,
            next_offset: log.next_offset(),
            first_offset: log.first_offset(),
        })
    }

    /// The partition's offsets, and for `time_ms` the first record created at or after it.
    pub async fn kafka_offsets(
        &self,
        time_ms: Option<i64>,
    ) -> Result<Offsets, (ErrorCode, String)> {
        let _in_use = self.ready().await;
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            return Err((ErrorCode::StorageFailed, "partition is not open".into()));
        };
        let (first, next) = (log.first_offset(), log.next_offset());
        let mut offsets = Offsets {
            first,
            next,
            at_time: None,
        };
        let Some(time_ms) = time_ms else {
            return Ok(offsets);
        };
        // Creation times need not follow the log's order: every record is looked at.
        let mut from = first;
        while from < next {
            let records = log
                .read(from, TIME_SCAN_BYTES)
                .await
                .map_err(|e| (ErrorCode::StorageFailed, e.to_string()))?;
            let Some(last) = records.last() else { break };
            from = last.end();
            for record in &records {
                if let Some(found) = created_at_or_after(record, time_ms) {
                    if found.0 >= first {
                        offsets.at_time = Some(found);
                        return Ok(offsets);
                    }
                }
            }
        }
        Ok(offsets)
    }
}

/// The first offset in a stored record created at or after `time_ms`, and its time: inside a
/// Kafka batch, the record's own creation time (the batch's first offset for a batch that cannot
/// be read record by record); for a message stored by another port, the time it was stored.
fn created_at_or_after(record: &Record, time_ms: i64) -> Option<(u64, i64)> {
    if record.count == 1 && !batch::is_batch(&record.body) {
        let stored_ms = (record.timestamp_ns / 1_000_000) as i64;
        return (stored_ms >= time_ms).then_some((record.offset, stored_ms));
    }
    let header = BatchHeader::read(&record.body)?;
    if header.max_timestamp < time_ms {
        return None;
    }
    match batch::records(&record.body) {
        Ok(records) => records
            .iter()
            .find(|r| r.timestamp_ms >= time_ms)
            .map(|r| (record.offset + u64::from(r.offset_delta), r.timestamp_ms)),
        Err(_) => Some((record.offset, header.max_timestamp)),
    }
}

/// Stored records as the other ports read them: a Kafka record batch becomes one publish per
/// Kafka record, on the subject `subject` names, at that record's offset, with the value as payload and the key and
/// headers as NATS headers (see `KafkaRecord::nats_headers`); records below `from` are left out.
/// Publishes pass as they are. A batch that cannot be decoded (a codec not built in) still yields
/// one empty publish per offset, marked `Kafka-Unreadable`, so that readers move past it.
pub fn as_publishes(
    records: Vec<Record>,
    from: u64,
    subject: impl FnOnce() -> String,
) -> Vec<Record> {
    if !records
        .iter()
        .any(|r| r.count > 1 || batch::is_batch(&r.body))
    {
        return records;
    }
    let subject = &subject();
    let mut encoder = sluice_protocol::FrameEncoder::new();
    let mut publish = |headers: &[u8], payload: &[u8]| {
        encoder.encode_to_bytes(&sluice_protocol::Op::Pub(sluice_protocol::op::Publish {
            subject,
            reply: None,
            headers,
            payload,
            ack: false,
        }))
    };
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        if record.count <= 1 && !batch::is_batch(&record.body) {
            if record.offset >= from {
                out.push(record);
            }
            continue;
        }
        match batch::records(&record.body) {
            Ok(kafka) => {
                for k in kafka {
                    let offset = record.offset + u64::from(k.offset_delta);
                    if offset < from || offset >= record.end() {
                        continue;
                    }
                    let body = publish(&k.nats_headers(), k.value.as_deref().unwrap_or_default());
                    out.push(Record {
                        offset,
                        count: 1,
                        timestamp_ns: record.timestamp_ns,
                        body,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(offset = record.offset, error = %e,
                    "a stored Kafka batch cannot be read as messages");
                let headers = format!("NATS/1.0\r\nKafka-Unreadable: {e}\r\n\r\n");
                for offset in record.offset.max(from)..record.end() {
                    out.push(Record {
                        offset,
                        count: 1,
                        timestamp_ns: record.timestamp_ns,
                        body: publish(headers.as_bytes(), &[]),
                    });
                }
            }
        }
    }
    out
}

/// Batches remembered per idempotent producer and partition (Kafka's
/// `max.in.flight.requests.per.connection` bound for idempotence).
const PRODUCER_BATCHES: usize = 5;

/// Idempotent producers remembered per partition; past it, the one heard from longest ago is
/// forgotten (its next batch starts it again).
const PRODUCERS_MAX: usize = 4096;

/// A producer's epoch and its latest batches: first and last sequence, and first offset.
struct Producer {
    epoch: i16,
    batches: VecDeque<(i32, i32, u64)>,
    last_used: u64,
}

/// The idempotent producers a partition has seen.
#[derive(Default)]
pub struct Producers {
    by_id: HashMap<i64, Producer>,
    uses: u64,
}

/// What the sequence check makes of a batch.
#[derive(Debug, PartialEq, Eq)]
enum Sequence {
    Store,
    /// A retry of a batch stored at this offset.
    Duplicate(u64),
    /// Refused with this Kafka error.
    Refuse(i16, String),
}

impl Producers {
    /// Checks a batch of producer `header` that would be stored at `at`, and remembers it if it
    /// is to be stored. A producer not seen before starts at whatever sequence it sends (after a
    /// restart, or once forgotten, its state is not known).
    fn check(&mut self, header: &BatchHeader, at: u64) -> Sequence {
        use sluice_protocol::kafka::code;
        self.uses += 1;
        let uses = self.uses;
        let (first, last) = (header.base_sequence, header.last_sequence());
        if !self.by_id.contains_key(&header.producer_id) && self.by_id.len() >= PRODUCERS_MAX {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.by_id.remove(&oldest);
            }
        }
        let producer = self.touch(header, uses);
        if header.producer_epoch < producer.epoch {
            return Sequence::Refuse(
                code::INVALID_PRODUCER_EPOCH,
                format!(
                    "producer {} epoch {} is older than {}",
                    header.producer_id, header.producer_epoch, producer.epoch
                ),
            );
        }
        if header.producer_epoch > producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.batches.clear();
        }
        if let Some(&(_, _, offset)) = producer
            .batches
            .iter()
            .find(|(f, l, _)| *f == first && *l == last)
        {
            return Sequence::Duplicate(offset);
        }
        if let Some(&(_, previous, _)) = producer.batches.back() {
            let expected = if previous == i32::MAX {
                0
            } else {
                previous + 1
            };
            if first != expected {
                return Sequence::Refuse(
                    code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!(
                        "producer {} sent sequence {first}, expected {expected}",
                        header.producer_id
                    ),
                );
            }
        }
        if producer.batches.len() == PRODUCER_BATCHES {
            producer.batches.pop_front();
        }
        producer.batches.push_back((first, last, at));
        Sequence::Store
    }
}

impl Producers {
    /// The state of `header`'s producer, made if new, marked used at `uses`.
    fn touch(&mut self, header: &BatchHeader, uses: u64) -> &mut Producer {
        let producer = self
            .by_id
            .entry(header.producer_id)
            .or_insert_with(|| Producer {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_used: uses,
            });
        producer.last_used = uses;
        producer
    }

    /// Recalls a stored batch of producer `header` at `at`, as the log holds it (when the log
    /// opens): no checks, the latest batches win.
    fn recall(&mut self, header: &BatchHeader, at: u64) {
        self.uses += 1;
        let uses = self.uses;
        let producer = self.touch(header, uses);
        if header.producer_epoch != producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.batches.clear();
        }
        if producer.batches.len() == PRODUCER_BATCHES {
            producer.batches.pop_front();
        }
        producer
            .batches
            .push_back((header.base_sequence, header.last_sequence(), at));
    }
}

/// Offsets read back from the end of a log that ends in Kafka batches, when it opens, to recall
/// idempotent producers' latest batches (a producer whose last batch is older starts afresh).
const PRODUCERS_RESTORE_OFFSETS: u64 = 1 << 16;

impl Partition {
    /// Recalls idempotent producers' latest batches from the end of the log, so that a retry
    /// sent across a restart is still recognised. Nothing is read past the last record unless
    /// it is a Kafka batch.
    pub(super) async fn restore_producers(&self, log: &PartitionLog) {
        let (first, next) = (log.first_offset(), log.next_offset());
        if next == first {
            return;
        }
        let ends_in_batch = match log.read(next - 1, 1).await {
            Ok(records) => records.iter().any(|r| batch::is_batch(&r.body)),
            Err(_) => false,
        };
        if !ends_in_batch {
            return;
        }
        let mut offset = first.max(next.saturating_sub(PRODUCERS_RESTORE_OFFSETS));
        let mut producers = Producers::default();
        while offset < next {
            let records = match log.read(offset, TIME_SCAN_BYTES).await {
                Ok(records) if !records.is_empty() => records,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                        "cannot read back idempotent producers");
                    return;
                }
            };
            for record in &records {
                if !batch::is_batch(&record.body) {
                    continue;
                }
                if let Some(header) = BatchHeader::read(&record.body) {
                    if header.producer_id >= 0 {
                        producers.recall(&header, record.offset);
                    }
                }
            }
            offset = records.last().map_or(next, |r| r.end().max(offset + 1));
        }
        *self.producers.borrow_mut() = producers;
    }

    /// The idempotence check of one queued body that would be stored at `at`: returns it to be
    /// stored, or sets it aside as a duplicate of what is stored, or answers its refusal.
    pub(super) fn producer_check(
        &self,
        shard: &Rc<StreamShard>,
        queued: Queued,
        at: u64,
        duplicates: &mut Vec<(u64, Done)>,
    ) -> Option<Queued> {
        if !batch::is_batch(&queued.body) {
            return Some(queued);
        }
        let header = BatchHeader::read(&queued.body)?;
        if header.producer_id < 0 {
            return Some(queued);
        }
        match self.producers.borrow_mut().check(&header, at) {
            Sequence::Store => Some(queued),
            Sequence::Duplicate(offset) => {
                if let Some(done) = queued.done {
                    duplicates.push((offset, done));
                }
                None
            }
            Sequence::Refuse(code, why) => {
                tracing::debug!(stream = %self.config.name, partition = self.index, %why,
                    "kafka batch refused");
                if let Some(done) = queued.done {
                    let mut outcome = AckOutcome::plain(
                        Arc::from(self.config.name.as_str()),
                        self.index,
                        Err((ErrorCode::BadRequest, why)),
                    );
                    outcome.kafka_error = Some(code);
                    resolve(shard, done, outcome);
                }
                None
            }
        }
    }

    /// The idempotence checks over a batch of a stream without publish checks.
    #[allow(clippy::type_complexity)]
    pub(super) fn apply_producer_checks(
        &self,
        shard: &Rc<StreamShard>,
        log: &PartitionLog,
        items: Vec<Queued>,
    ) -> (Vec<Queued>, Vec<(u64, Done)>, Removal) {
        let mut next = self.checks_start(log);
        let mut keep = Vec::with_capacity(items.len());
        let mut duplicates = Vec::new();
        for queued in items {
            if let Some(queued) = self.producer_check(shard, queued, next, &mut duplicates) {
                next += u64::from(queued.count);
                keep.push(queued);
            }
        }
        self.checked_up_to(next);
        (keep, duplicates, Removal::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::kafka::code;

    fn header(id: i64, epoch: i16, first: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            magic: 2,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: first,
            record_count: count,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut producers = Producers::default();
        assert_eq!(producers.check(&header(7, 0, 0, 3), 100), Sequence::Store);
        assert_eq!(producers.check(&header(7, 0, 3, 2), 103), Sequence::Store);
        // A retry of either batch is answered with where it was stored.
        assert_eq!(
            producers.check(&header(7, 0, 0, 3), 200),
            Sequence::Duplicate(100)
        );
        assert_eq!(
            producers.check(&header(7, 0, 3, 2), 200),
            Sequence::Duplicate(103)
        );
        // A gap, or an old epoch, is refused.
        assert!(matches!(
            producers.check(&header(7, 0, 9, 1), 105),
            Sequence::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
        assert_eq!(producers.check(&header(7, 1, 0, 1), 105), Sequence::Store);
        assert!(matches!(
            producers.check(&header(7, 0, 5, 1), 106),
            Sequence::Refuse(code::INVALID_PRODUCER_EPOCH, _)
        ));
        // Other producers have their own sequences.
        assert_eq!(producers.check(&header(8, 0, 0, 1), 106), Sequence::Store);
    }

    #[test]
    fn recalled_batches_are_checked_as_if_just_stored() {
        let mut producers = Producers::default();
        producers.recall(&header(7, 0, 0, 3), 100);
        producers.recall(&header(7, 0, 3, 2), 103);
        assert_eq!(
            producers.check(&header(7, 0, 3, 2), 200),
            Sequence::Duplicate(103)
        );
        assert_eq!(producers.check(&header(7, 0, 5, 1), 105), Sequence::Store);
        assert!(matches!(
            producers.check(&header(7, 0, 9, 1), 106),
            Sequence::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER, _)
        ));
    }

    #[test]
    fn sequences_wrap_and_only_the_latest_batches_are_remembered() {
        let mut producers = Producers::default();
        assert_eq!(
            producers.check(&header(1, 0, i32::MAX, 1), 0),
            Sequence::Store
        );
        assert_eq!(producers.check(&header(1, 0, 0, 1), 1), Sequence::Store);
        for i in 1..=PRODUCER_BATCHES as i32 {
            assert_eq!(
                producers.check(&header(1, 0, i, 1), 1 + i as u64),
                Sequence::Store
            );
        }
        // The batch at sequence 0 is no longer remembered: not a duplicate, and out of order.
        assert!(matches!(
            producers.check(&header(1, 0, 0, 1), 10),
            Sequence::Refuse(..)
        ));
    }
}
