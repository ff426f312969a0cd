//! Bounds of the protocol. Each one has a reason; the server announces the ones a client must know.

/// The protocol version this crate speaks. A client that connects with another version is refused,
/// because the archived layout of the operations is only stable within one version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes in a frame header: `u32 length` then `u32 crc32c`, both little-endian.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Default largest payload of one message (8 MiB). Large enough for a second of audio or a prompt with
/// context, small enough that one message cannot take a shard's memory.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u32 = 8 * 1024 * 1024;

/// Room in a frame beyond the payload for the subject, reply subject, headers and archive overhead.
/// A frame longer than `max_payload + FRAME_OVERHEAD_BYTES_MAX` is refused before it is read in full.
pub const FRAME_OVERHEAD_BYTES_MAX: u32 = 64 * 1024;

/// Longest subject or pattern in bytes. Subjects are routing keys, not payloads; a bound keeps the
/// matcher's work per message small.
pub const SUBJECT_BYTES_MAX: usize = 1024;

/// Most tokens in one subject. Bounds the depth of the matcher's recursion.
pub const SUBJECT_TOKENS_MAX: usize = 64;

/// Longest queue group name in bytes.
pub const QUEUE_BYTES_MAX: usize = 256;

/// Largest frame body accepted for a given payload limit.
pub fn frame_body_bytes_max(payload_bytes_max: u32) -> u32 {
    payload_bytes_max.saturating_add(FRAME_OVERHEAD_BYTES_MAX)
}
