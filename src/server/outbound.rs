//! A connection's outbound buffer and the task that writes it to the socket.
//!
//! Anything on the shard (the connection's own replies, other connections' publishes, the mesh)
//! appends to the buffer without waiting; one writer task per connection swaps it with a spare and
//! writes it out, so appends and the socket write overlap and each write carries as much as piled up.
//! The buffer is bounded: a subscriber that falls more than `limit_bytes` behind is a slow consumer,
//! told so and disconnected, so that publishers and other subscribers never wait for it.

use std::cell::{Cell, RefCell};

use bytes::BytesMut;
use futures_lite::{AsyncWrite, AsyncWriteExt};

use sluice_storage::wake::Notify;

/// Bytes of spare capacity a fresh buffer starts with.
const BUFFER_BYTES_INITIAL: usize = 16 * 1024;

/// How long the writer keeps trying to deliver what is buffered once the connection closes.
const CLOSE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a connection's output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Accepting output.
    Open,
    /// No more output; write what is buffered, then shut the socket down.
    Closing,
    /// Over its limit: drop what is buffered, write the error frame, shut down.
    SlowConsumer,
    /// The writer has finished.
    Closed,
}

/// The buffered output of one connection.
pub struct Outbound {
    buf: RefCell<BytesMut>,
    /// A final frame to write after the buffer, whatever the state (an error that ends the connection).
    last_words: RefCell<Option<bytes::Bytes>>,
    limit_bytes: usize,
    state: Cell<State>,
    notify: Notify,
}

impl Outbound {
    /// An empty buffer that turns a connection into a slow consumer past `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Outbound {
        Outbound {
            buf: RefCell::new(BytesMut::with_capacity(BUFFER_BYTES_INITIAL)),
            last_words: RefCell::new(None),
            limit_bytes,
            state: Cell::new(State::Open),
            notify: Notify::default(),
        }
    }

    /// Appends a header and a frame. Returns false if the connection is not open or has just become
    /// a slow consumer (the caller counts that).
    pub fn push2(&self, first: &[u8], second: &[u8]) -> Push {
        if self.state.get() != State::Open {
            return Push::Closed;
        }
        let mut buf = self.buf.borrow_mut();
        let was_empty = buf.is_empty();
        if buf.len() + first.len() + second.len() > self.limit_bytes {
            drop(buf);
            self.state.set(State::SlowConsumer);
            self.notify.notify();
            return Push::SlowConsumer;
        }
        buf.extend_from_slice(first);
        buf.extend_from_slice(second);
        drop(buf);
        if was_empty {
            self.notify.notify();
        }
        Push::Queued
    }

    /// Appends what `write` encodes, about `len` bytes (the limit is checked against that).
    pub fn push_with(&self, len: usize, write: impl FnOnce(&mut BytesMut)) -> Push {
        if self.state.get() != State::Open {
            return Push::Closed;
        }
        let mut buf = self.buf.borrow_mut();
        let was_empty = buf.is_empty();
        if buf.len() + len > self.limit_bytes {
            drop(buf);
            self.state.set(State::SlowConsumer);
            self.notify.notify();
            return Push::SlowConsumer;
        }
        write(&mut buf);
        drop(buf);
        if was_empty {
            self.notify.notify();
        }
        Push::Queued
    }

    /// Appends one frame.
    pub fn push(&self, frame: &[u8]) -> Push {
        self.push2(frame, &[])
    }

    /// Writes `frame` after everything buffered and then closes the connection.
    pub fn close_with(&self, frame: bytes::Bytes) {
        *self.last_words.borrow_mut() = Some(frame);
        self.close();
    }

    /// Stops accepting output; what is buffered is still written.
    pub fn close(&self) {
        if self.state.get() == State::Open {
            self.state.set(State::Closing);
        }
        self.notify.notify();
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    SlowConsumer,
    Closed,
}

/// Writes the buffer to `socket` until the connection closes. `slow_consumer_frame` is what a slow
/// consumer is told before it is cut off.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    out: &Outbound,
    socket: &mut W,
    slow_consumer_frame: impl Fn() -> bytes::Bytes,
) -> Result<(), std::io::Error> {
    let mut spare = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
    loop {
        match out.state.get() {
            State::Open => {}
            State::Closing => break,
            State::SlowConsumer => {
                out.buf.borrow_mut().clear();
                *out.last_words.borrow_mut() = Some(slow_consumer_frame());
                break;
            }
            State::Closed => return Ok(()),
        }
        if out.buf.borrow().is_empty() {
            out.notify.wait().await;
            continue;
        }
        std::mem::swap(&mut *out.buf.borrow_mut(), &mut spare);
        let written = socket.write_all(&spare).await;
        spare.clear();
        if let Err(e) = written {
            out.state.set(State::Closed);
            return Err(e);
        }
    }
    // Closing: one last bounded attempt to deliver what is left and the final frame.
    let rest = std::mem::take(&mut *out.buf.borrow_mut());
    let last = out.last_words.borrow_mut().take();
    let flush = async {
        socket.write_all(&rest).await?;
        if let Some(last) = last {
            socket.write_all(&last).await?;
        }
        socket.flush().await?;
        socket.close().await
    };
    let timeout = async {
        glommio::timer::sleep(CLOSE_FLUSH_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out flushing a closing connection",
        ))
    };
    let result = futures_lite::future::or(flush, timeout).await;
    out.state.set(State::Closed);
    result
}
