//! Typed errors of the wire format and the codes that travel in error frames.

use thiserror::Error;

/// Why bytes could not be decoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The header announces a body longer than the connection accepts.
    #[error("frame body of {length} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { length: u32, max: u32 },
    /// The CRC32C stored in the header does not match the body.
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The body is not a valid archived operation.
    #[error("frame body is not a valid operation: {reason}")]
    InvalidBody { reason: String },
    /// The frame is valid but a Message header was not followed by its publish frame.
    #[error("expected a {expected} frame")]
    UnexpectedOp { expected: &'static str },
}

impl DecodeError {
    /// The code the server sends back for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::ChecksumMismatch { .. }
            | DecodeError::InvalidBody { .. }
            | DecodeError::UnexpectedOp { .. } => ErrorCode::MalformedFrame,
        }
    }
}

/// The codes of error frames. The numbers are part of the protocol and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Bad CRC, bad layout, or an operation that is not valid here. Fatal: the stream cannot be trusted.
    MalformedFrame = 1,
    /// The frame header announced more bytes than the server accepts. Fatal.
    FrameTooLarge = 2,
    /// A publish carried more payload than `max_payload`. Fatal, as in NATS.
    PayloadTooLarge = 3,
    /// A subject, pattern or queue name is not valid. The connection stays open.
    InvalidSubject = 4,
    /// The client speaks another protocol version, or did not connect first. Fatal.
    ProtocolVersion = 5,
    /// The client did not read its messages fast enough. Fatal.
    SlowConsumer = 6,
    /// An unsubscribe named a subscription id that does not exist. The connection stays open.
    UnknownSubscription = 7,
    /// The server is at its connection limit. Fatal.
    TooManyConnections = 8,
    /// The server is shutting down. Fatal.
    ShuttingDown = 9,
    /// A subscription id is already in use on this connection. The connection stays open.
    DuplicateSubscription = 10,
    /// No stream captures the subject of a publish that asked for an ack. The connection stays open.
    NoStream = 11,
    /// The stream could not store the message (disk full, I/O error). The connection stays open.
    StorageFailed = 12,
    /// An API request was refused: bad arguments, unknown stream, overlapping subjects. The
    /// connection stays open.
    BadRequest = 13,
    /// An API request named a stream or consumer that does not exist. The connection stays open.
    NotFound = 14,
    /// The credentials were missing or wrong, or the user is at its connection limit. Fatal.
    AuthorizationFailed = 15,
    /// The user may not publish to that subject or subscribe to that pattern. The connection
    /// stays open.
    PermissionDenied = 16,
    /// A per-client bound was reached (subscriptions per connection, streams, consumers per
    /// stream, credit per consumer member). The connection stays open.
    LimitReached = 17,
    /// The cluster cannot decide now: its meta group has no leader this node reaches, or did not
    /// answer in time. The connection stays open; try again.
    Unavailable = 18,
    /// A code this version does not know.
    Unknown = 0xffff,
}

impl ErrorCode {
    /// Whether the server closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::InvalidSubject
                | ErrorCode::UnknownSubscription
                | ErrorCode::DuplicateSubscription
                | ErrorCode::NoStream
                | ErrorCode::StorageFailed
                | ErrorCode::BadRequest
                | ErrorCode::NotFound
                | ErrorCode::LimitReached
                | ErrorCode::PermissionDenied
                | ErrorCode::Unavailable
        )
    }

    /// The code as it travels on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Maps a wire value back to a code; unknown values become [`ErrorCode::Unknown`].
    pub fn from_u16(value: u16) -> ErrorCode {
        match value {
            1 => ErrorCode::MalformedFrame,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::PayloadTooLarge,
            4 => ErrorCode::InvalidSubject,
            5 => ErrorCode::ProtocolVersion,
            6 => ErrorCode::SlowConsumer,
            7 => ErrorCode::UnknownSubscription,
            15 => ErrorCode::AuthorizationFailed,
            16 => ErrorCode::PermissionDenied,
            17 => ErrorCode::LimitReached,
            18 => ErrorCode::Unavailable,
            8 => ErrorCode::TooManyConnections,
            9 => ErrorCode::ShuttingDown,
            10 => ErrorCode::DuplicateSubscription,
            11 => ErrorCode::NoStream,
            12 => ErrorCode::StorageFailed,
            13 => ErrorCode::BadRequest,
            14 => ErrorCode::NotFound,
            _ => ErrorCode::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_value() {
        for code in [
            ErrorCode::MalformedFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::PayloadTooLarge,
            ErrorCode::InvalidSubject,
            ErrorCode::ProtocolVersion,
            ErrorCode::SlowConsumer,
            ErrorCode::UnknownSubscription,
            ErrorCode::TooManyConnections,
            ErrorCode::ShuttingDown,
            ErrorCode::DuplicateSubscription,
            ErrorCode::NoStream,
            ErrorCode::StorageFailed,
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
        ] {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), code);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown);
    }
}
