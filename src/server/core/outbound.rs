//! A connection's outbound buffer and the task that writes it to the socket.
//!
//! Anything on the shard (the connection's own replies, other connections' publishes, the mesh)
//! appends to the buffer without waiting; one writer task per connection swaps it with a spare and
//! writes it out, so appends and the socket write overlap and each write carries as much as piled up.
//!
//! Flow control, not disconnects: past `high_water_bytes` the buffer is *congested*, and whoever fed
//! it (a publishing connection, a mesh receiver) waits until the writer has taken the buffer before
//! reading more. A subscriber is a slow consumer only when its socket takes nothing for the write
//! deadline, or when the buffer passes the hard `limit_bytes` (a source that does not wait); it is
//! then told so and disconnected, and nobody waits on it any more.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncWrite, AsyncWriteExt};

use sluice_storage::wake::{Event, Notify};

/// Capacity the two buffers of a writer with nothing to write may keep (a few replies' worth);
/// past it, they are given back after `IDLE_RELEASE_AFTER`. Buffers start empty and grow with
/// what is pushed, so an idle connection holds no more than this.
const IDLE_BYTES_KEPT_MAX: usize = 4 * 1024;

/// How long a writer with nothing to write keeps buffers grown past `IDLE_BYTES_KEPT_MAX`: long
/// enough that a busy connection, whose writer finds its buffer empty between bursts, keeps them
/// (regrowing them costs a copy per doubling); short enough that a burst's memory does not outlive
/// it.
const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Buffered bytes past which a connection's feeders wait. Above the couple of MiB a closed-loop
/// publisher keeps in flight, so that a subscriber that keeps up never pauses its publishers (a
/// paused read lets the sender's window close, and reopening it costs the reader's CPU); far below
/// the 64 MiB hard limit, which still bounds a connection's memory.
const HIGH_WATER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How long the writer keeps trying to deliver what is buffered once the connection closes.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a slow consumer's socket gets to take the error that tells it so: it has just shown
/// that it takes nothing, so nobody should wait on it again.
const SLOW_CONSUMER_NOTICE_TIMEOUT: Duration = Duration::from_millis(100);

/// Where a connection's output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Accepting output.
    Open,
    /// No more output; write what is buffered, then shut the socket down.
    Closing,
    /// Cut off: drop what is buffered, write the error frame, shut down.
    SlowConsumer,
    /// The writer has finished.
    Closed,
}

/// The buffered output of one connection.
pub struct Outbound {
    buf: RefCell<BytesMut>,
    /// A final frame to write after the buffer, whatever the state (an error that ends the connection).
    last_words: RefCell<Option<Bytes>>,
    limit_bytes: usize,
    high_water_bytes: usize,
    write_deadline: Duration,
    state: Cell<State>,
    /// Wakes the writer.
    notify: Notify,
    /// Wakes feeders waiting for the buffer to drain (or the connection to end).
    drained: Event,
}

impl Outbound {
    /// An empty buffer whose feeders wait past a high-water mark (at most half of `limit_bytes`),
    /// and that turns its connection into a slow consumer past `limit_bytes` or when the socket
    /// takes nothing for `write_deadline`.
    pub fn new(limit_bytes: usize, write_deadline: Duration) -> Outbound {
        Outbound {
            buf: RefCell::new(BytesMut::new()),
            last_words: RefCell::new(None),
            limit_bytes,
            high_water_bytes: (limit_bytes / 2).clamp(1, HIGH_WATER_BYTES_MAX),
            write_deadline,
            state: Cell::new(State::Open),
            notify: Notify::default(),
            drained: Event::default(),
        }
    }

    /// Whether the connection still takes output.
    pub fn is_open(&self) -> bool {
        self.state.get() == State::Open
    }

    /// Whether whoever feeds this connection should wait before feeding more.
    pub fn is_congested(&self) -> bool {
        self.is_open() && self.buf.borrow().len() >= self.high_water_bytes
    }

    /// Waits until the connection is no longer congested: the writer took the buffer, or the
    /// connection ended. Bounded by the write deadline, past which the writer cuts the connection.
    pub async fn wait_uncongested(&self) {
        self.drained.wait_until(|| !self.is_congested()).await
    }

    /// Appends a header and a frame.
    pub fn push2(&self, first: &[u8], second: &[u8]) -> Push {
        self.push_with(first.len() + second.len(), |buf| {
            buf.extend_from_slice(first);
            buf.extend_from_slice(second);
        })
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
            self.cut();
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

    /// Takes what is buffered, for an output the broker reads itself instead of a socket.
    pub fn take(&self) -> BytesMut {
        let taken = self.buf.borrow_mut().split();
        self.drained.notify_all();
        taken
    }

    /// Writes `frame` after everything buffered and then closes the connection.
    pub fn close_with(&self, frame: Bytes) {
        *self.last_words.borrow_mut() = Some(frame);
        self.close();
    }

    /// Stops accepting output; what is buffered is still written.
    pub fn close(&self) {
        if self.state.get() == State::Open {
            self.state.set(State::Closing);
        }
        self.notify.notify();
        self.drained.notify_all();
    }

    /// Capacity held by the buffer and the writer's `spare`.
    fn held_bytes(&self, spare: &BytesMut) -> usize {
        self.buf.borrow().capacity() + spare.capacity()
    }

    /// Gives back the capacity of both buffers when nothing is waiting to be written.
    fn give_back(&self, spare: &mut BytesMut) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() && spare.is_empty() {
            *buf = BytesMut::new();
            *spare = BytesMut::new();
        }
    }

    /// Cuts the connection off as a slow consumer.
    fn cut(&self) {
        if matches!(self.state.get(), State::Open | State::Closing) {
            self.state.set(State::SlowConsumer);
        }
        self.notify.notify();
        self.drained.notify_all();
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The append would pass the hard limit: the connection has just been cut off.
    SlowConsumer,
    Closed,
}

/// How a writer ended.
#[derive(Debug)]
pub enum WriteEnd {
    /// The connection closed (what was buffered was delivered or the flush timed out).
    Closed,
    /// The buffer passed its hard limit.
    OverLimit,
    /// The socket took nothing for the write deadline.
    Stalled(Duration),
    /// The socket failed.
    Failed(std::io::Error),
}

/// Writes the buffer to `socket` until the connection closes. `slow_consumer_frame` is what a slow
/// consumer is told before it is cut off.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    out: &Outbound,
    socket: &mut W,
    slow_consumer_frame: impl Fn() -> Bytes,
) -> WriteEnd {
    let mut spare = BytesMut::new();
    let mut end = WriteEnd::Closed;
    loop {
        match out.state.get() {
            State::Open => {}
            State::Closing => break,
            State::SlowConsumer => {
                if matches!(end, WriteEnd::Closed) {
                    end = WriteEnd::OverLimit;
                }
                out.buf.borrow_mut().clear();
                *out.last_words.borrow_mut() = Some(slow_consumer_frame());
                break;
            }
            State::Closed => return end,
        }
        if out.buf.borrow().is_empty() {
            wait_idle(out, &mut spare).await;
            continue;
        }
        std::mem::swap(&mut *out.buf.borrow_mut(), &mut spare);
        out.drained.notify_all();
        let written = write_with_deadline(socket, &spare, out.write_deadline).await;
        spare.clear();
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                end = WriteEnd::Stalled(out.write_deadline);
                out.cut();
            }
            Err(e) => {
                out.state.set(State::Closed);
                out.drained.notify_all();
                return WriteEnd::Failed(e);
            }
        }
    }
    // Closing: one last bounded attempt to deliver what is left and the final frame.
    let grace = if out.state.get() == State::SlowConsumer {
        SLOW_CONSUMER_NOTICE_TIMEOUT
    } else {
        CLOSE_FLUSH_TIMEOUT
    };
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
        glommio::timer::sleep(grace).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out flushing a closing connection",
        ))
    };
    let result = futures_lite::future::or(flush, timeout).await;
    out.state.set(State::Closed);
    out.drained.notify_all();
    match (end, result) {
        (WriteEnd::Closed, Err(e)) => WriteEnd::Failed(e),
        (end, _) => end,
    }
}

/// Waits for something to write; buffers grown past what an idle connection keeps are given back
/// if nothing comes for `IDLE_RELEASE_AFTER`.
async fn wait_idle(out: &Outbound, spare: &mut BytesMut) {
    if out.held_bytes(spare) <= IDLE_BYTES_KEPT_MAX {
        return out.notify.wait().await;
    }
    let woken = futures_lite::future::or(
        async {
            out.notify.wait().await;
            true
        },
        async {
            glommio::timer::sleep(IDLE_RELEASE_AFTER).await;
            false
        },
    )
    .await;
    if !woken {
        out.give_back(spare);
    }
}

/// Writes all of `bytes`, failing with `TimedOut` when one write makes no progress for `deadline`.
async fn write_with_deadline<W: AsyncWrite + Unpin>(
    socket: &mut W,
    bytes: &[u8],
    deadline: Duration,
) -> std::io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let started = Instant::now();
        let attempt = futures_lite::future::or(
            async { Some(socket.write(&bytes[written..]).await) },
            async {
                glommio::timer::sleep(deadline).await;
                None
            },
        )
        .await;
        match attempt {
            Some(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Some(Ok(n)) => written += n,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no progress for {:?}", started.elapsed()),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024 * 1024;
    const DEADLINE: Duration = Duration::from_secs(10);

    /// What the writer does with a full buffer: takes it, writes it, clears it.
    fn take(out: &Outbound, spare: &mut BytesMut) {
        std::mem::swap(&mut *out.buf.borrow_mut(), spare);
        spare.clear();
    }

    #[test]
    fn a_new_outbound_allocates_nothing() {
        let out = Outbound::new(LIMIT, DEADLINE);
        assert_eq!(out.held_bytes(&BytesMut::new()), 0);
    }

    #[test]
    fn an_idle_outbound_gives_its_grown_buffers_back() {
        let out = Outbound::new(LIMIT, DEADLINE);
        let mut spare = BytesMut::new();
        assert_eq!(out.push(&vec![7u8; 1024 * 1024]), Push::Queued);
        take(&out, &mut spare);
        assert_eq!(out.push(&vec![7u8; 512 * 1024]), Push::Queued);
        take(&out, &mut spare);
        assert!(out.held_bytes(&spare) >= 1536 * 1024);
        out.give_back(&mut spare);
        assert_eq!(out.held_bytes(&spare), 0);
        assert_eq!(out.push(b"PONG\r\n"), Push::Queued);
        assert_eq!(&out.buf.borrow()[..], b"PONG\r\n");
    }

    #[test]
    fn buffered_output_is_never_given_back() {
        let out = Outbound::new(LIMIT, DEADLINE);
        let mut spare = BytesMut::new();
        assert_eq!(out.push(&vec![7u8; 64 * 1024]), Push::Queued);
        out.give_back(&mut spare);
        assert_eq!(out.buf.borrow().len(), 64 * 1024);
    }
}
