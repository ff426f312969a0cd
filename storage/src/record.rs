//! The record format, the unit a segment is made of.
//!
//! ```text
//! 0        4        8                16               24             24 + length
//! +--------+--------+----------------+----------------+--------------+
//! | length | crc32c | offset (u64)   | timestamp_ns   | body         |
//! +--------+--------+----------------+----------------+--------------+
//! ```
//! All integers little-endian. `length` counts the body. `crc32c` covers everything after itself
//! (offset, timestamp and body), so a record copied to the wrong place, a torn write, or zeroed
//! padding never checks. The body is opaque: the broker stores frames exactly as they arrived.
//!
//! A record usually takes one offset. A *span* record takes `count` consecutive offsets from its
//! own (a Kafka record batch, stored whole as it arrived): the top bit of `length` marks it, and
//! a `u32 count` (covered by the checksum) follows the timestamp:
//!
//! ```text
//! | length | 1<<31 | crc32c | offset | timestamp_ns | count (u32) | body |
//! ```

use bytes::Bytes;

/// Bytes before the body of a one-offset record.
pub const RECORD_HEADER_BYTES: usize = 24;

/// Bytes before the body of a span record: the count follows the timestamp.
pub const SPAN_HEADER_BYTES: usize = 28;

/// The bit of `length` that marks a span record.
const SPAN_FLAG: u32 = 1 << 31;

/// One record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Offsets the record takes: 1, or a span's count.
    pub count: u32,
    pub timestamp_ns: u64,
    pub body: Bytes,
}

impl Record {
    /// One past the last offset the record takes.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.count)
    }
}

/// Appends the encoded one-offset record to `out`.
pub fn encode(out: &mut Vec<u8>, offset: u64, timestamp_ns: u64, body: &[u8]) {
    encode_span(out, offset, 1, timestamp_ns, body);
}

/// Appends the encoded record taking `count` offsets from `offset` (a span if `count` > 1).
pub fn encode_span(out: &mut Vec<u8>, offset: u64, count: u32, timestamp_ns: u64, body: &[u8]) {
    let start = out.len();
    let span = count != 1;
    let length = body.len() as u32 | if span { SPAN_FLAG } else { 0 };
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ns.to_le_bytes());
    if span {
        out.extend_from_slice(&count.to_le_bytes());
    }
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes a one-offset record with this body takes on disk.
pub fn encoded_len(body_len: usize) -> usize {
    RECORD_HEADER_BYTES + body_len
}

/// Bytes a record taking `count` offsets with this body takes on disk.
pub fn encoded_span_len(body_len: usize, count: u32) -> usize {
    if count == 1 {
        RECORD_HEADER_BYTES + body_len
    } else {
        SPAN_HEADER_BYTES + body_len
    }
}

/// What is found at a position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole, valid record: its offset, the offsets it takes, its timestamp, and where its
    /// body lies in the input.
    Valid {
        offset: u64,
        count: u32,
        timestamp_ns: u64,
        body_start: usize,
        body_len: usize,
    },
    /// The input ends before the record does: `need` bytes in all.
    Incomplete { need: usize },
    /// The bytes are not a valid record.
    Invalid(Invalid),
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The length exceeds the largest record the log accepts.
    Length { length: u32 },
    /// The checksum does not match.
    Checksum { stored: u32, computed: u32 },
    /// A span record that takes no offset.
    Count,
}

/// Parses the record at the start of `bytes`; `body_bytes_max` bounds the length field.
pub fn parse(bytes: &[u8], body_bytes_max: u32) -> Parsed {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Parsed::Incomplete {
            need: RECORD_HEADER_BYTES,
        };
    }
    let raw = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let span = raw & SPAN_FLAG != 0;
    let length = raw & !SPAN_FLAG;
    if length > body_bytes_max {
        return Parsed::Invalid(Invalid::Length { length });
    }
    let header = if span {
        SPAN_HEADER_BYTES
    } else {
        RECORD_HEADER_BYTES
    };
    let total = header + length as usize;
    if bytes.len() < total {
        return Parsed::Incomplete { need: total };
    }
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let computed = crc32c::crc32c(&bytes[8..total]);
    if stored != computed {
        return Parsed::Invalid(Invalid::Checksum { stored, computed });
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let count = if span {
        u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]])
    } else {
        1
    };
    if count == 0 {
        return Parsed::Invalid(Invalid::Count);
    }
    Parsed::Valid {
        offset: word(8),
        count,
        timestamp_ns: word(16),
        body_start: header,
        body_len: length as usize,
    }
}

/// Bytes of `bytes` taken by whole records in order from `offset`, stopping at `offset_end` or
/// at the first one cut off by the end of `bytes`, and the offset that follows them. Reads the
/// headers only (no checksum): for bytes whose records below `offset_end` were written whole.
pub fn whole_records_len(bytes: &[u8], mut offset: u64, offset_end: u64) -> (usize, u64) {
    let mut at = 0usize;
    while offset < offset_end {
        let rest = &bytes[at..];
        if rest.len() < RECORD_HEADER_BYTES {
            break;
        }
        let raw = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let span = raw & SPAN_FLAG != 0;
        let header = if span {
            SPAN_HEADER_BYTES
        } else {
            RECORD_HEADER_BYTES
        };
        let total = header + (raw & !SPAN_FLAG) as usize;
        if rest.len() < total {
            break;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&rest[8..16]);
        if u64::from_le_bytes(word) != offset {
            break;
        }
        let count = if span {
            u32::from_le_bytes([rest[24], rest[25], rest[26], rest[27]])
        } else {
            1
        };
        if count == 0 {
            break;
        }
        offset += u64::from(count);
        at += total;
    }
    (at, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_records_stop_at_a_cut_record_at_the_trusted_end_and_at_padding() {
        let mut out = Vec::new();
        encode(&mut out, 5, 1, b"one");
        encode_span(&mut out, 6, 3, 1, b"span");
        encode(&mut out, 9, 1, b"three");
        let first = encoded_len(3);
        let two = first + SPAN_HEADER_BYTES + 4;
        assert_eq!(whole_records_len(&out, 5, u64::MAX), (out.len(), 10));
        assert_eq!(
            whole_records_len(&out[..out.len() - 1], 5, u64::MAX),
            (two, 9)
        );
        assert_eq!(whole_records_len(&out, 5, 9), (two, 9));
        assert_eq!(whole_records_len(&out, 5, 6), (first, 6));
        assert_eq!(whole_records_len(&out, 6, u64::MAX), (0, 6));
        out.extend_from_slice(&[0; 64]);
        assert_eq!(whole_records_len(&out, 5, u64::MAX), (out.len() - 64, 10));
    }

    #[test]
    fn a_record_parses_back_to_what_was_encoded() {
        let mut out = Vec::new();
        encode(&mut out, 42, 7, b"body");
        assert_eq!(out.len(), encoded_len(4));
        assert_eq!(
            parse(&out, 1024),
            Parsed::Valid {
                offset: 42,
                count: 1,
                timestamp_ns: 7,
                body_start: 24,
                body_len: 4
            }
        );
    }

    #[test]
    fn a_span_record_parses_back_with_its_count() {
        let mut out = Vec::new();
        encode_span(&mut out, 10, 5, 7, b"batch");
        assert_eq!(out.len(), encoded_span_len(5, 5));
        assert_eq!(
            parse(&out, 1024),
            Parsed::Valid {
                offset: 10,
                count: 5,
                timestamp_ns: 7,
                body_start: SPAN_HEADER_BYTES,
                body_len: 5
            }
        );
        for byte in 4..out.len() {
            let mut bad = out.clone();
            bad[byte] ^= 1;
            assert!(
                matches!(parse(&bad, 1024), Parsed::Invalid(_)),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn zeroed_padding_never_checks() {
        let zeros = [0u8; 64];
        assert!(matches!(
            parse(&zeros, 1024),
            Parsed::Invalid(Invalid::Checksum { .. })
        ));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        encode(&mut out, 1, 2, b"abc");
        for byte in 4..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    matches!(parse(&bad, 1024), Parsed::Invalid(_)),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn a_short_input_asks_for_the_whole_record() {
        let mut out = Vec::new();
        encode(&mut out, 1, 2, b"abcdef");
        assert_eq!(parse(&out[..10], 1024), Parsed::Incomplete { need: 24 });
        assert_eq!(parse(&out[..25], 1024), Parsed::Incomplete { need: 30 });
        assert!(matches!(
            parse(&out, 3),
            Parsed::Invalid(Invalid::Length { length: 6 })
        ));
    }
}
