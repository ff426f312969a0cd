//! The Sluice wire format. This crate does no I/O.
//!
//! Map of the modules, in the order data flows through them:
//! - [`frame`]: cutting `u32 length | u32 crc32c | body` frames out of a byte buffer, checking them
//!   once, and encoding them.
//! - [`op`]: the operations a frame body carries (rkyv-archived, read in place).
//! - [`subject`]: subject and pattern validation.
//! - [`sublist`]: a trie that matches subjects against subscription patterns with `*` and `>`.
//! - [`jetstream`]: the JetStream API's subjects, JSON, acks, pulls, headers and times.
//! - [`kafka`]: the Kafka wire protocol: request framing and headers, the versions Sluice
//!   serves, record batches (checked, counted, re-based, built) and the message codec.
//! - [`cluster`]: the frames nodes of a cluster exchange on their links.
//! - [`error`]: typed decode errors and the codes the server sends back.
//! - [`limits`]: every bound of the protocol, named, with the reason for it.

pub mod cluster;
pub mod error;
pub mod frame;
pub mod jetstream;
pub mod kafka;
pub mod limits;
pub mod name;
pub mod nats;
pub mod op;
pub mod subject;
pub mod sublist;

pub use error::{DecodeError, ErrorCode};
pub use frame::{Frame, FrameEncoder};
pub use op::{ArchivedOp, Op};
