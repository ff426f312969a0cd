//! A blocking Rust client for Sluice's native protocol.
//!
//! ```no_run
//! use sluice::client::Client;
//! let client = Client::connect("127.0.0.1:4280")?;
//! let sub = client.subscribe("user.*.audio")?;
//! client.flush()?; // the subscription is now in force on every shard
//! client.publish("user.42.audio", b"chunk")?;
//! let msg = sub.next().expect("a message");
//! assert_eq!(msg.payload(), b"chunk");
//! # Ok::<(), sluice::client::ClientError>(())
//! ```
//!
//! Three threads make a connection: the caller's, a writer that sends whatever publishes piled up
//! since its last write (one syscall for many messages), and a reader that hands messages to
//! subscriptions over channels. Publishing waits only when the outgoing buffer is full.

mod conn;
mod message;
mod streams;

use std::time::Duration;

use sluice_protocol::{DecodeError, ErrorCode};
use thiserror::Error;

pub use conn::{Client, ClientOptions, ServerInfo, Subscription};
pub use message::{Message, StreamMeta};
pub use streams::{AckWaiter, Consumer, PULL_BATCH};

/// Default time allowed for connecting, flushing and requests.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// What can go wrong for a client.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid frame from the server: {0}")]
    Decode(#[from] DecodeError),
    #[error("server error {code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("the server sent {0} where info was expected")]
    Handshake(&'static str),
    #[error("timed out")]
    Timeout,
    #[error("no answer: nobody replied before the timeout")]
    NoReply,
    #[error("the connection is closed")]
    Closed,
    #[error("{code:?}: {message}")]
    Api { code: ErrorCode, message: String },
}
