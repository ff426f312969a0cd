//! Frames: `u32 length | u32 crc32c | body`, both integers little-endian.
//!
//! ```text
//! 0        4        8                      8 + length
//! +--------+--------+----------------------+
//! | length | crc32c | body (archived Op)   |
//! +--------+--------+----------------------+
//! ```
//! `length` counts the body only; `crc32c` covers the body only. A frame is checked once, when it is
//! cut out of the read buffer ([`decode`]): length bound, checksum, archive layout. A [`Frame`] is
//! proof of that check; from then on its operation is read in place without checking again.

use bytes::{Bytes, BytesMut};
use rkyv::ser::allocator::Arena;
use rkyv::ser::{Positional, Writer};

use crate::error::DecodeError;
use crate::limits::FRAME_HEADER_BYTES;
use crate::op::{ArchivedOp, Op};

/// A whole frame (header and body) whose checksum and layout were checked.
#[derive(Clone)]
pub struct Frame {
    bytes: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("op", &self.op().name())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Frame {
    /// Checks a complete frame: header, length, checksum and archive layout.
    pub fn check(bytes: Bytes, body_bytes_max: u32) -> Result<Frame, DecodeError> {
        let length = match peek_length(&bytes) {
            Some(length) => length,
            None => {
                return Err(DecodeError::InvalidBody {
                    reason: format!("{} bytes is shorter than a frame header", bytes.len()),
                })
            }
        };
        if length > body_bytes_max {
            return Err(DecodeError::FrameTooLarge {
                length,
                max: body_bytes_max,
            });
        }
        if bytes.len() != FRAME_HEADER_BYTES + length as usize {
            return Err(DecodeError::InvalidBody {
                reason: format!(
                    "header announces {length} body bytes, frame has {}",
                    bytes.len() - FRAME_HEADER_BYTES
                ),
            });
        }
        check_body(&bytes)?;
        Ok(Frame { bytes })
    }

    /// The operation, read in place.
    pub fn op(&self) -> &ArchivedOp<'static> {
        // SAFETY: a `Frame` is only built by `Frame::check`, which validated these exact bytes as an
        // `ArchivedOp` with `rkyv::access`; `Bytes` is immutable, so they still hold.
        unsafe { rkyv::access_unchecked::<ArchivedOp<'static>>(&self.bytes[FRAME_HEADER_BYTES..]) }
    }

    /// The whole frame as received, header included: what is forwarded and stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// A `Bytes` view of a slice that lies inside this frame (a payload, a subject), without copying.
    ///
    /// # Panics
    /// If `inner` is not inside the frame: a caller's bug, never input-dependent.
    pub fn slice_ref(&self, inner: &[u8]) -> Bytes {
        self.bytes.slice_ref(inner)
    }

    /// Length of the whole frame in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the frame is empty (never true of a checked frame).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The body length a header announces, if the buffer holds a whole header.
fn peek_length(buf: &[u8]) -> Option<u32> {
    if buf.len() < FRAME_HEADER_BYTES {
        return None;
    }
    Some(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]))
}

/// Cuts the next frame out of `buf`.
///
/// `Ok(None)`: incomplete, read more (and `buf` has room reserved for the rest). `Err`: the stream is
/// invalid and cannot be resynchronised. An oversized length is refused as soon as the header is in,
/// before the body is buffered.
pub fn decode(buf: &mut BytesMut, body_bytes_max: u32) -> Result<Option<Frame>, DecodeError> {
    let Some(frame_bytes) = next_frame_bytes(buf, body_bytes_max)? else {
        return Ok(None);
    };
    if buf.len() < frame_bytes {
        buf.reserve(frame_bytes - buf.len());
        return Ok(None);
    }
    let bytes = buf.split_to(frame_bytes).freeze();
    Frame::check(bytes, body_bytes_max).map(Some)
}

/// The whole length of the frame at the start of `buf` once its header is in; an oversized
/// length is an error as soon as the header shows it.
fn next_frame_bytes(buf: &[u8], body_bytes_max: u32) -> Result<Option<usize>, DecodeError> {
    let Some(length) = peek_length(buf) else {
        return Ok(None);
    };
    if length > body_bytes_max {
        return Err(DecodeError::FrameTooLarge {
            length,
            max: body_bytes_max,
        });
    }
    Ok(Some(FRAME_HEADER_BYTES + length as usize))
}

/// Checks the checksum and archive layout of a whole frame (header included) and reads it in place.
fn check_body(frame: &[u8]) -> Result<&ArchivedOp<'_>, DecodeError> {
    let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let body = &frame[FRAME_HEADER_BYTES..];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    rkyv::access::<ArchivedOp<'_>, rancor::Error>(body).map_err(|e| DecodeError::InvalidBody {
        reason: e.to_string(),
    })
}

/// Like [`decode`], for a reader that handles each operation before reading on: checks the next
/// frame at the start of `buf` and reads it in place, without taking it out of the buffer.
/// `Ok(Some((op, n)))`: the operation and the frame's length; `Ok(None)`: incomplete.
pub fn decode_in_place(
    buf: &[u8],
    body_bytes_max: u32,
) -> Result<Option<(&ArchivedOp<'_>, usize)>, DecodeError> {
    match next_frame_bytes(buf, body_bytes_max)? {
        Some(frame_bytes) if buf.len() >= frame_bytes => {
            check_body(&buf[..frame_bytes]).map(|op| Some((op, frame_bytes)))
        }
        _ => Ok(None),
    }
}

/// Somewhere frames can be encoded into: a growable, contiguous byte buffer.
pub trait FrameSink: std::ops::DerefMut<Target = [u8]> {
    /// Appends bytes at the end.
    fn append(&mut self, bytes: &[u8]);
}

impl FrameSink for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl FrameSink for BytesMut {
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// An rkyv writer that appends to a sink, with positions relative to the start of the body.
struct BodyWriter<'a, S: FrameSink> {
    sink: &'a mut S,
    body_start: usize,
}

impl<S: FrameSink> Positional for BodyWriter<'_, S> {
    fn pos(&self) -> usize {
        self.sink.len() - self.body_start
    }
}

impl<S: FrameSink, E> Writer<E> for BodyWriter<'_, S> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.sink.append(bytes);
        Ok(())
    }
}

/// Bytes of a fresh buffer for [`FrameEncoder::encode_frame_pooled`].
const POOL_BYTES: usize = 64 * 1024;

/// Below this much room a pooled buffer is replaced rather than grown.
const POOL_ROOM_MIN: usize = 2 * 1024;

/// Encodes operations into frames. Keeps its scratch arena between calls, so encoding allocates
/// nothing once warm.
#[derive(Default)]
pub struct FrameEncoder {
    arena: Arena,
}

impl FrameEncoder {
    /// A new encoder.
    pub fn new() -> FrameEncoder {
        FrameEncoder::default()
    }

    /// Appends one frame holding `op` to `sink`; returns the frame's length in bytes.
    pub fn encode<S: FrameSink>(&mut self, op: &Op<'_>, sink: &mut S) -> usize {
        let frame_start = sink.len();
        sink.append(&[0u8; FRAME_HEADER_BYTES]);
        let writer = BodyWriter {
            sink: &mut *sink,
            body_start: frame_start + FRAME_HEADER_BYTES,
        };
        // Serializing borrowed strings and byte slices into an appending writer cannot fail: the
        // writer never errors and the arena grows as needed. `Panic` makes that explicit.
        let result = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Panic>(
            op,
            writer,
            self.arena.acquire(),
        );
        let Ok(_) = result;
        let body = &sink[frame_start + FRAME_HEADER_BYTES..];
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32c::crc32c(body);
        sink[frame_start..frame_start + 4].copy_from_slice(&length.to_le_bytes());
        sink[frame_start + 4..frame_start + 8].copy_from_slice(&crc.to_le_bytes());
        sink.len() - frame_start
    }

    /// Encodes one frame and returns it as a checked [`Frame`] without checking it again: what this
    /// encoder writes is valid by construction (debug builds still check).
    pub fn encode_frame(&mut self, op: &Op<'_>) -> Frame {
        let bytes = self.encode_to_bytes(op);
        debug_assert!(Frame::check(bytes.clone(), u32::MAX).is_ok());
        Frame { bytes }
    }

    /// Encodes one frame into `pool`, a buffer kept by the caller, and cuts it off as a checked
    /// [`Frame`]: frames encoded one after the other share one allocation, so the hot path does not
    /// allocate per frame. `pool` must be empty; it is refilled once it has little room left.
    pub fn encode_frame_pooled(&mut self, op: &Op<'_>, pool: &mut BytesMut) -> Frame {
        debug_assert!(pool.is_empty());
        if pool.capacity() < POOL_ROOM_MIN {
            *pool = BytesMut::with_capacity(POOL_BYTES);
        }
        self.encode(op, pool);
        let bytes = pool.split().freeze();
        debug_assert!(Frame::check(bytes.clone(), u32::MAX).is_ok());
        Frame { bytes }
    }

    /// Encodes one frame into a fresh `Bytes` (for rare frames: info, errors, message headers that
    /// are computed once per subscription).
    pub fn encode_to_bytes(&mut self, op: &Op<'_>) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(op, &mut buf);
        buf.freeze()
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.bytes == other.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ArchivedOp, Publish};

    fn publish_frame(subject: &str, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameEncoder::new().encode(
            &Op::Pub(Publish {
                subject,
                reply: None,
                headers: b"",
                payload,
                ack: false,
            }),
            &mut buf,
        );
        buf
    }

    #[test]
    fn a_frame_decodes_to_what_was_encoded() {
        let mut buf = publish_frame("a.b", b"hello");
        let frame = decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert!(buf.is_empty());
        let ArchivedOp::Pub(p) = frame.op() else {
            panic!("expected pub, got {}", frame.op().name());
        };
        assert_eq!(p.subject(), "a.b");
        assert_eq!(p.payload(), b"hello");
        assert_eq!(p.reply(), None);
    }

    #[test]
    fn an_incomplete_frame_asks_for_more() {
        let full = publish_frame("a", b"xyz");
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert!(
                matches!(decode(&mut buf, 1 << 20), Ok(None)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_body_byte_fails_the_checksum() {
        let mut buf = publish_frame("a", b"xyz");
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        assert!(matches!(
            decode(&mut buf, 1 << 20),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0][..]);
        assert_eq!(
            decode(&mut buf, 1024).unwrap_err(),
            DecodeError::FrameTooLarge {
                length: 0x7fff_ffff,
                max: 1024
            }
        );
    }

    #[test]
    fn a_payload_slice_is_a_view_into_the_frame() {
        let mut buf = publish_frame("a", b"payload-bytes");
        let frame = decode(&mut buf, 1 << 20).unwrap().unwrap();
        let ArchivedOp::Pub(p) = frame.op() else {
            panic!("expected pub");
        };
        let payload = frame.slice_ref(p.payload());
        assert_eq!(&payload[..], b"payload-bytes");
        let start = frame.bytes().as_ptr() as usize;
        let inner = payload.as_ptr() as usize;
        assert!(inner >= start && inner < start + frame.len());
    }
}
