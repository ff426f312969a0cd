//! Kafka record batches (magic 2), which Sluice stores as they arrive.
//!
//! ```text
//! 0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32 |
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64 |
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```
//! The CRC-32C covers `attributes` to the end, so the broker sets the base offset and the leader
//! epoch (bytes 0–7 and 12–15) without touching it: a stored batch is checked once, kept whole,
//! compressed or not, and sent back with only those bytes rewritten. Readers that are not Kafka
//! clients get its records one by one ([`records`]); messages stored by them reach Kafka clients
//! as one-record batches ([`single`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

/// Bytes of a batch before its records.
pub const HEADER_BYTES: usize = 61;

/// The header fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub magic: i8,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `batch` (no checks).
    pub fn read(batch: &[u8]) -> Option<BatchHeader> {
        if batch.len() < HEADER_BYTES {
            return None;
        }
        let mut b = batch;
        let base_offset = b.get_i64();
        let _length = b.get_i32();
        let _epoch = b.get_i32();
        let magic = b.get_i8();
        let _crc = b.get_u32();
        Some(BatchHeader {
            base_offset,
            magic,
            attributes: b.get_i16(),
            last_offset_delta: b.get_i32(),
            base_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
            record_count: b.get_i32(),
        })
    }

    /// The compression codec (attributes bits 0–2).
    pub fn codec(&self) -> u8 {
        (self.attributes & 0x7) as u8
    }

    /// Offsets the batch takes.
    pub fn count(&self) -> u32 {
        (self.last_offset_delta as u32).wrapping_add(1)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// The sequence number of the batch's last record.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        self.base_sequence.wrapping_add(self.last_offset_delta)
    }
}

/// Why a produced batch is refused; each maps to the Kafka error the partition is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch of magic {0}: only magic 2 is stored")]
    Magic(i8),
    #[error("record batch is cut short")]
    Truncated,
    #[error("record batch checksum does not match")]
    Checksum,
    #[error("record batch counts {count} records but its last offset delta is {delta}")]
    Count { count: i32, delta: i32 },
    #[error("record batch compression codec {0} is unknown")]
    Codec(u8),
    #[error("transactional and control batches are not supported")]
    Transactional,
    #[error("record batch of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("no record batch")]
    Empty,
}

impl BatchError {
    /// The Kafka error code for a partition refused for this.
    pub fn code(&self) -> i16 {
        use super::code;
        match self {
            BatchError::Magic(_) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::Truncated | BatchError::Checksum => code::CORRUPT_MESSAGE,
            BatchError::Count { .. } | BatchError::Empty => code::INVALID_RECORD,
            BatchError::Codec(_) => code::UNSUPPORTED_COMPRESSION_TYPE,
            BatchError::Transactional => code::INVALID_RECORD,
            BatchError::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
        }
    }
}

/// Cuts a Produce request's `records` into batches and checks each (magic, length, checksum,
/// count, codec, no transactions), without decompressing anything. Each batch is a slice of
/// `records`.
pub fn split(
    records: &Bytes,
    batch_bytes_max: usize,
) -> Result<Vec<(Bytes, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < 17 {
            return Err(BatchError::Truncated);
        }
        let magic = rest[16] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        if rest.len() < HEADER_BYTES {
            return Err(BatchError::Truncated);
        }
        let length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let total = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&t| t >= HEADER_BYTES)
            .ok_or(BatchError::Truncated)?;
        if total > batch_bytes_max {
            return Err(BatchError::TooLarge {
                size: total,
                max: batch_bytes_max,
            });
        }
        if rest.len() < total {
            return Err(BatchError::Truncated);
        }
        let stored = u32::from_be_bytes([rest[17], rest[18], rest[19], rest[20]]);
        if crc32c::crc32c(&rest[21..total]) != stored {
            return Err(BatchError::Checksum);
        }
        let header = BatchHeader::read(rest).ok_or(BatchError::Truncated)?;
        if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
            return Err(BatchError::Count {
                count: header.record_count,
                delta: header.last_offset_delta,
            });
        }
        if header.codec() > 4 {
            return Err(BatchError::Codec(header.codec()));
        }
        if header.is_transactional() || header.is_control() {
            return Err(BatchError::Transactional);
        }
        out.push((records.slice(at..at + total), header));
        at += total;
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

/// Whether a stored body is a Kafka record batch (a checked magic-2 batch) rather than a frame
/// another port stored: cheap header checks first, then the checksum.
pub fn is_batch(body: &Bytes) -> bool {
    body.len() >= HEADER_BYTES && body[16] == 2 && split(body, usize::MAX).is_ok()
}

/// Appends a stored batch to a Fetch answer with its base offset set to where it was stored and
/// its leader epoch to 0 (neither is covered by the checksum).
pub fn put_rebased(out: &mut BytesMut, batch: &[u8], base_offset: u64) {
    let start = out.len();
    out.put_slice(batch);
    if batch.len() >= HEADER_BYTES {
        out[start..start + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
        out[start + 12..start + 16].copy_from_slice(&0i32.to_be_bytes());
    }
}

/// One record as a non-Kafka reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub offset_delta: u32,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl KafkaRecord {
    /// The record's key and headers as a NATS header block (empty with neither), for readers on
    /// the other ports: the key as `Kafka-Key`, each header under its own name; a value that is
    /// not one line of text goes base64-encoded under the name with `-Base64` added. Headers
    /// whose names NATS cannot carry are left out.
    pub fn nats_headers(&self) -> Vec<u8> {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut add = |name: &str, value: &[u8]| {
            let valid_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !valid_name {
                return;
            }
            match std::str::from_utf8(value) {
                Ok(text) if !text.chars().any(char::is_control) => {
                    lines.push((name.to_string(), text.to_string()))
                }
                _ => {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                    lines.push((format!("{name}-Base64"), encoded));
                }
            }
        };
        if let Some(key) = &self.key {
            add("Kafka-Key", key);
        }
        for (name, value) in &self.headers {
            add(name, value.as_deref().unwrap_or_default());
        }
        if lines.is_empty() {
            return Vec::new();
        }
        let mut block = b"NATS/1.0\r\n".to_vec();
        for (name, value) in lines {
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"\r\n");
        block
    }
}

/// The records of a stored batch, decompressed if need be (gzip and snappy; lz4 and zstd
/// batches are refused with `Codec`).
pub fn records(batch: &Bytes) -> Result<Vec<KafkaRecord>, BatchError> {
    let header = BatchHeader::read(batch).ok_or(BatchError::Truncated)?;
    let supported = matches!(header.codec(), 0..=2);
    if !supported {
        return Err(BatchError::Codec(header.codec()));
    }
    // The decoder trusts the record count when reserving: bound it by the bytes first.
    if header.record_count < 0 || header.record_count as usize > batch.len() {
        return Err(BatchError::Truncated);
    }
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|_| BatchError::Truncated)?;
    Ok(set
        .records
        .into_iter()
        .map(|r| KafkaRecord {
            offset_delta: (r.offset - header.base_offset).max(0) as u32,
            timestamp_ms: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
        .collect())
}

/// Cuts a checked batch of several records into batches of one uncompressed record each, in
/// order, keeping each record's key, value, headers, timestamp, producer and sequence: how a
/// replicated stream stores a batch, one entry per offset. A batch of one record comes back as
/// it is. Compressed batches are decompressed (gzip and snappy; lz4 and zstd are refused with
/// `Codec`).
pub fn one_per_record(batch: &Bytes) -> Result<Vec<Bytes>, BatchError> {
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let header = BatchHeader::read(batch).ok_or(BatchError::Truncated)?;
    if header.record_count == 1 {
        return Ok(vec![batch.clone()]);
    }
    if !matches!(header.codec(), 0..=2) {
        return Err(BatchError::Codec(header.codec()));
    }
    if header.record_count < 0 || header.record_count as usize > batch.len() {
        return Err(BatchError::Truncated);
    }
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|_| BatchError::Truncated)?;
    if set.records.len() != header.record_count as usize {
        return Err(BatchError::Count {
            count: header.record_count,
            delta: header.last_offset_delta,
        });
    }
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    let mut out = Vec::with_capacity(set.records.len());
    for mut record in set.records {
        record.offset = 0;
        let mut piece = BytesMut::with_capacity(
            HEADER_BYTES + 32 + record.value.as_ref().map_or(0, Bytes::len),
        );
        RecordBatchEncoder::encode(&mut piece, std::slice::from_ref(&record), &options)
            .map_err(|_| BatchError::Truncated)?;
        out.push(piece.freeze());
    }
    Ok(out)
}

/// A batch of one uncompressed record with CreateTime `timestamp_ms`: how a message that was not
/// produced by a Kafka client reaches one. Its base offset is 0; `put_rebased` sets it.
pub fn single(
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> Bytes {
    let mut record = BytesMut::with_capacity(32 + value.len());
    record.put_i8(0); // attributes
    put_varlong(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    match key {
        Some(key) => {
            put_varint(&mut record, key.len() as i32);
            record.put_slice(key);
        }
        None => put_varint(&mut record, -1),
    }
    put_varint(&mut record, value.len() as i32);
    record.put_slice(value);
    put_varint(&mut record, headers.len() as i32);
    for (name, value) in headers {
        put_varint(&mut record, name.len() as i32);
        record.put_slice(name.as_bytes());
        put_varint(&mut record, value.len() as i32);
        record.put_slice(value);
    }
    let mut out = BytesMut::with_capacity(HEADER_BYTES + 5 + record.len());
    out.put_i64(0); // base offset
    out.put_i32(0); // batch length, below
    out.put_i32(0); // partition leader epoch
    out.put_i8(2); // magic
    out.put_u32(0); // crc, below
    out.put_i16(0); // attributes: no compression, CreateTime
    out.put_i32(0); // last offset delta
    out.put_i64(timestamp_ms);
    out.put_i64(timestamp_ms);
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(1); // record count
    put_varint(&mut out, record.len() as i32);
    out.put_slice(&record);
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

fn put_varint(out: &mut BytesMut, value: i32) {
    put_varlong(out, i64::from(value));
}

fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    fn encoded(values: &[&[u8]], compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::copy_from_slice(v)),
                headers: [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"v")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out.freeze()
    }

    #[test]
    fn a_batch_is_cut_into_one_record_batches_that_keep_every_field() {
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy] {
            let batch = encoded(&[b"one", b"two", b"three"], compression);
            let header = BatchHeader::read(&batch).unwrap();
            let pieces = one_per_record(&batch).unwrap();
            assert_eq!(pieces.len(), 3);
            let whole = records(&batch).unwrap();
            for (i, piece) in pieces.iter().enumerate() {
                let checked = split(piece, usize::MAX).unwrap();
                assert_eq!(checked.len(), 1, "one valid batch");
                let h = checked[0].1;
                assert_eq!((h.record_count, h.count(), h.codec()), (1, 1, 0));
                assert_eq!(h.producer_id, header.producer_id);
                assert_eq!(h.producer_epoch, header.producer_epoch);
                assert_eq!(h.base_sequence, header.base_sequence + i as i32);
                let mut record = records(piece).unwrap();
                assert_eq!(record.len(), 1);
                record[0].offset_delta = whole[i].offset_delta;
                assert_eq!(record[0], whole[i]);
            }
        }
        let single = encoded(&[b"alone"], Compression::Gzip);
        assert_eq!(one_per_record(&single).unwrap(), vec![single.clone()]);
    }

    #[test]
    fn a_produced_batch_splits_checks_and_reads_back() {
        let one = encoded(&[b"a", b"bb", b"ccc"], Compression::None);
        let two = encoded(&[b"d"], Compression::Gzip);
        let mut both = BytesMut::new();
        both.put_slice(&one);
        both.put_slice(&two);
        let both = both.freeze();
        let batches = split(&both, 1 << 20).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].1.count(), 3);
        assert_eq!(batches[0].1.producer_id, 7);
        assert_eq!(batches[1].1.codec(), 1);
        let read = records(&batches[0].0).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].value.as_deref(), Some(&b"ccc"[..]));
        assert_eq!(read[2].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(read[2].offset_delta, 2);
        assert_eq!(
            read[0].headers,
            vec![("h".into(), Some(Bytes::from_static(b"v")))]
        );
        let gz = records(&batches[1].0).unwrap();
        assert_eq!(gz[0].value.as_deref(), Some(&b"d"[..]));
    }

    #[test]
    fn keys_and_headers_become_a_nats_header_block() {
        let record = KafkaRecord {
            offset_delta: 0,
            timestamp_ms: 0,
            key: Some(Bytes::from_static(b"user-42")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                ("trace".into(), Some(Bytes::from_static(b"abc"))),
                ("blob".into(), Some(Bytes::from_static(&[0, 255]))),
                ("bad name".into(), Some(Bytes::from_static(b"x"))),
            ],
        };
        assert_eq!(
            record.nats_headers(),
            b"NATS/1.0\r\nKafka-Key: user-42\r\ntrace: abc\r\nblob-Base64: AP8=\r\n\r\n"
        );
        let bare = KafkaRecord {
            key: None,
            headers: Vec::new(),
            ..record
        };
        assert!(bare.nats_headers().is_empty());
    }

    #[test]
    fn damaged_batches_are_refused_with_the_right_error() {
        let good = encoded(&[b"abc"], Compression::None);
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(split(&bad.freeze(), 1 << 20), Err(BatchError::Checksum));
        assert_eq!(
            split(&good.slice(..good.len() - 1), 1 << 20),
            Err(BatchError::Truncated)
        );
        let mut old = BytesMut::from(&good[..]);
        old[16] = 1;
        assert_eq!(split(&old.freeze(), 1 << 20), Err(BatchError::Magic(1)));
        assert!(matches!(split(&good, 10), Err(BatchError::TooLarge { .. })));
        assert_eq!(split(&Bytes::new(), 1 << 20), Err(BatchError::Empty));
    }

    #[test]
    fn rebasing_keeps_the_checksum_valid() {
        let batch = encoded(&[b"x", b"y"], Compression::None);
        let mut out = BytesMut::new();
        put_rebased(&mut out, &batch, 1234);
        let out = out.freeze();
        let (_, header) = split(&out, 1 << 20).unwrap().remove(0);
        assert_eq!(header.base_offset, 1234);
        assert_eq!(records(&out).unwrap()[1].offset_delta, 1);
    }

    proptest! {
        #[test]
        fn single_record_batches_decode_as_kafka_writes_them(
            value in proptest::collection::vec(any::<u8>(), 0..300),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            ts in 0i64..4_000_000_000_000,
        ) {
            let batch = single(ts, key.as_deref(), &value, &[("Nats-Msg-Id", b"x1")]);
            let checked = split(&batch, 1 << 20).unwrap();
            prop_assert_eq!(checked.len(), 1);
            let mut buf = batch.clone();
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            prop_assert_eq!(set.records.len(), 1);
            let r = &set.records[0];
            prop_assert_eq!(r.timestamp, ts);
            prop_assert_eq!(r.value.as_deref(), Some(&value[..]));
            prop_assert_eq!(r.key.as_deref(), key.as_deref());
            prop_assert_eq!(r.headers.len(), 1);
        }

        #[test]
        fn split_never_panics_on_noise(noise in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = split(&Bytes::from(noise.clone()), 1 << 20);
            let _ = one_per_record(&Bytes::from(noise.clone()));
            let _ = records(&Bytes::from(noise));
        }

        #[test]
        fn a_batch_cut_into_records_keeps_every_record_in_order(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..20),
            gzip in any::<bool>(),
        ) {
            let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let compression = if gzip { Compression::Gzip } else { Compression::None };
            let batch = encoded(&values, compression);
            let whole = records(&batch).unwrap();
            let pieces = one_per_record(&batch).unwrap();
            prop_assert_eq!(pieces.len(), values.len());
            for (i, piece) in pieces.iter().enumerate() {
                let checked = split(piece, usize::MAX).unwrap();
                prop_assert_eq!(checked[0].1.count(), 1);
                let mut got = records(piece).unwrap();
                prop_assert_eq!(got.len(), 1);
                got[0].offset_delta = whole[i].offset_delta;
                prop_assert_eq!(&got[0], &whole[i]);
            }
        }
    }
}
