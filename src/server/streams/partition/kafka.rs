//! A partition's side of the Kafka port: reads for fetches (waiting at the end of the log as a
//! long poll) and offset lookups, by time too.

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
