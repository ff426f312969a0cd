//! The load generator's connection: one blocking socket driven by one thread, speaking either
//! Sluice's native protocol or the NATS client protocol, so that one program measures both servers.
//!
//! Publishes are encoded into an outgoing buffer and written in large batches; a fixed-subject
//! publish is a template whose timestamp bytes are patched (and, natively, its CRC recomputed), so
//! the generator spends its time on the socket rather than on encoding.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sluice_protocol::frame::decode_in_place;
use sluice_protocol::limits::{frame_body_bytes_max, FRAME_HEADER_BYTES, PROTOCOL_VERSION};
use sluice_protocol::op::{Connect, Op, Publish, Subscribe};
use sluice_protocol::{ArchivedOp, FrameEncoder};

use super::BenchError;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Native,
    Nats,
}

/// Something the server sent.
pub enum Event<'a> {
    /// A message for subscription `sid`.
    Msg {
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// A native acknowledgement of a durable publish; `error` is empty on success.
    PubAck {
        error: &'a str,
    },
    Pong,
    /// An error the server reported.
    Error(String),
}

/// Bytes read per call.
const READ_BYTES: usize = 256 * 1024;

/// A connection owned by one load thread.
pub struct Wire {
    pub protocol: Protocol,
    stream: TcpStream,
    rbuf: BytesMut,
    pub out: Vec<u8>,
    encoder: FrameEncoder,
    body_max: u32,
    /// PINGs from a NATS server, answered at the next write.
    owe_pongs: usize,
}

impl Wire {
    /// Connects and completes the handshake.
    pub fn connect(addr: &str, protocol: Protocol, name: &str) -> Result<Wire, BenchError> {
        let stream = TcpStream::connect(addr).map_err(|e| BenchError::Connect {
            addr: addr.to_string(),
            source: e,
        })?;
        stream.set_nodelay(true)?;
        let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(4 << 20);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(4 << 20);
        let mut wire = Wire {
            protocol,
            stream,
            rbuf: BytesMut::with_capacity(READ_BYTES * 2),
            out: Vec::with_capacity(256 * 1024),
            encoder: FrameEncoder::new(),
            body_max: frame_body_bytes_max(64 << 20),
            owe_pongs: 0,
        };
        match protocol {
            Protocol::Native => {
                let op = Op::Connect(Connect {
                    version: PROTOCOL_VERSION,
                    name,
                    user: None,
                    password: None,
                    token: None,
                });
                wire.encoder.encode(&op, &mut wire.out);
            }
            Protocol::Nats => {
                let connect = format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1,\"headers\":true,\"no_responders\":true}}\r\n",
                    env!("CARGO_PKG_VERSION")
                );
                wire.out.extend_from_slice(connect.as_bytes());
            }
        }
        wire.flush()?;
        Ok(wire)
    }

    /// Subscribes `sid` to `subject`, optionally in a queue group (buffered until the next write).
    pub fn subscribe(&mut self, sid: u64, subject: &str, queue: Option<&str>) {
        match self.protocol {
            Protocol::Native => {
                let op = Op::Sub(Subscribe {
                    sid,
                    subject,
                    queue,
                });
                self.encoder.encode(&op, &mut self.out);
            }
            Protocol::Nats => {
                let line = match queue {
                    Some(q) => format!("SUB {subject} {q} {sid}\r\n"),
                    None => format!("SUB {subject} {sid}\r\n"),
                };
                self.out.extend_from_slice(line.as_bytes());
            }
        }
    }

    /// Encodes one publish (buffered until the next write).
    pub fn publish(&mut self, subject: &str, reply: Option<&str>, payload: &[u8], ack: bool) {
        match self.protocol {
            Protocol::Native => {
                let op = Op::Pub(Publish {
                    subject,
                    reply,
                    headers: b"",
                    payload,
                    ack,
                });
                self.encoder.encode(&op, &mut self.out);
            }
            Protocol::Nats => {
                let mut len = itoa::Buffer::new();
                self.out.extend_from_slice(b"PUB ");
                self.out.extend_from_slice(subject.as_bytes());
                if let Some(reply) = reply {
                    self.out.push(b' ');
                    self.out.extend_from_slice(reply.as_bytes());
                }
                self.out.push(b' ');
                self.out
                    .extend_from_slice(len.format(payload.len()).as_bytes());
                self.out.extend_from_slice(b"\r\n");
                self.out.extend_from_slice(payload);
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A template for publishing to one subject again and again with a fresh timestamp.
    pub fn template(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        size: usize,
        ack: bool,
    ) -> Template {
        let marker = marker_payload(size);
        let start = self.out.len();
        self.publish(subject, reply, &marker, ack);
        let bytes = self.out.split_off(start);
        let probe = &marker[..marker.len().min(32)];
        let at = find(&bytes, probe).expect("the payload is in its frame");
        Template {
            native: self.protocol == Protocol::Native,
            bytes,
            stamp_at: at,
        }
    }

    /// Asks the server to answer with a pong (buffered until the next write).
    pub fn ping(&mut self) {
        match self.protocol {
            Protocol::Native => {
                self.encoder.encode(&Op::Ping, &mut self.out);
            }
            Protocol::Nats => self.out.extend_from_slice(b"PING\r\n"),
        }
    }

    /// Writes everything buffered.
    pub fn flush(&mut self) -> Result<(), BenchError> {
        for _ in 0..std::mem::take(&mut self.owe_pongs) {
            self.out.extend_from_slice(b"PONG\r\n");
        }
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Pings and reads until the pong: everything sent before has been handled by the server.
    pub fn roundtrip(&mut self, timeout: Duration) -> Result<(), BenchError> {
        self.ping();
        self.flush()?;
        let deadline = std::time::Instant::now() + timeout;
        let mut ponged = false;
        while !ponged {
            if std::time::Instant::now() > deadline {
                return Err(BenchError::Timeout("a pong"));
            }
            self.poll(Some(Duration::from_millis(100)), |event| {
                if let Event::Pong = event {
                    ponged = true;
                }
            })?;
        }
        Ok(())
    }

    /// Reads once (waiting at most `timeout`, or forever) and hands every complete event to `f`.
    /// Returns false if the wait timed out with nothing read.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut f: impl FnMut(Event<'_>),
    ) -> Result<bool, BenchError> {
        self.stream.set_read_timeout(timeout)?;
        if self.rbuf.capacity() - self.rbuf.len() < READ_BYTES / 2 {
            self.rbuf.reserve(READ_BYTES);
        }
        let len = self.rbuf.len();
        let room = self.rbuf.capacity() - len;
        // SAFETY: the bytes between len and capacity are only exposed to `read`, which writes them,
        // and the length is raised by exactly the count it reports.
        let n = unsafe {
            self.rbuf.set_len(len + room);
            let n = self.stream.read(&mut self.rbuf[len..]);
            self.rbuf.set_len(len);
            n
        };
        let n = match n {
            Ok(0) => return Err(BenchError::Closed),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        // SAFETY: `read` initialised these n bytes.
        unsafe { self.rbuf.set_len(len + n) };
        match self.protocol {
            Protocol::Native => self.parse_native(&mut f)?,
            Protocol::Nats => self.parse_nats(&mut f)?,
        }
        Ok(true)
    }

    fn parse_native(&mut self, f: &mut impl FnMut(Event<'_>)) -> Result<(), BenchError> {
        // Every frame is checked (CRC and layout) in place; the buffer is advanced once per read.
        let mut at = 0;
        while let Some((op, n)) = decode_in_place(&self.rbuf[at..], self.body_max)
            .map_err(|e| BenchError::Protocol(e.to_string()))?
        {
            at += n;
            match op {
                ArchivedOp::Pub(p) => f(Event::Msg {
                    reply: p.reply().map(str::as_bytes),
                    payload: p.payload(),
                }),
                ArchivedOp::PubAck(a) => f(Event::PubAck {
                    error: a.error.as_str(),
                }),
                ArchivedOp::Pong => f(Event::Pong),
                ArchivedOp::Ping => {
                    self.encoder.encode(&Op::Pong, &mut self.out);
                }
                ArchivedOp::Err(e) => f(Event::Error(e.message.as_str().to_string())),
                // A delivery is a `Msg` header naming the subscription, then the publish: every
                // load connection has one subscription, so the header says nothing new.
                _ => {}
            }
        }
        self.rbuf.advance(at);
        Ok(())
    }

    fn parse_nats(&mut self, f: &mut impl FnMut(Event<'_>)) -> Result<(), BenchError> {
        let mut at = 0;
        let buf = &self.rbuf[..];
        while let Some(eol) = find(&buf[at..], b"\r\n") {
            let line = &buf[at..at + eol];
            let body_at = at + eol + 2;
            if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
                let headers = line[0] == b'H';
                // Up to five arguments, without allocating: this runs per received message.
                let mut args: [&[u8]; 6] = [&[]; 6];
                let mut count = 0;
                for word in line.split(|&b| b == b' ').skip(1) {
                    if count < args.len() {
                        args[count] = word;
                    }
                    count += 1;
                }
                let bad = || BenchError::Protocol(String::from_utf8_lossy(line).into_owned());
                let (total, header_len, reply) = match (headers, count) {
                    (false, 3) => (number(args[2]).ok_or_else(bad)?, 0, None),
                    (false, 4) => (number(args[3]).ok_or_else(bad)?, 0, Some(args[2])),
                    (true, 4) => (
                        number(args[3]).ok_or_else(bad)?,
                        number(args[2]).ok_or_else(bad)?,
                        None,
                    ),
                    (true, 5) => (
                        number(args[4]).ok_or_else(bad)?,
                        number(args[3]).ok_or_else(bad)?,
                        Some(args[2]),
                    ),
                    _ => return Err(bad()),
                };
                if buf.len() < body_at + total + 2 {
                    break;
                }
                let body = &buf[body_at + header_len..body_at + total];
                if headers
                    && header_len > 0
                    && is_no_responders(&buf[body_at..body_at + header_len])
                {
                    f(Event::Error("no responders".into()));
                } else {
                    f(Event::Msg {
                        reply,
                        payload: body,
                    });
                }
                at = body_at + total + 2;
                continue;
            }
            if line == b"PING" {
                self.owe_pongs += 1;
            } else if line == b"PONG" {
                f(Event::Pong);
            } else if line.starts_with(b"-ERR") {
                f(Event::Error(String::from_utf8_lossy(line).into_owned()));
            }
            at = body_at;
        }
        self.rbuf.advance(at);
        Ok(())
    }
}

/// A publish frame with a timestamp slot in its payload.
pub struct Template {
    native: bool,
    bytes: Vec<u8>,
    stamp_at: usize,
}

impl Template {
    /// Appends the publish to `out` with `stamp` (nanoseconds) in the first payload bytes.
    #[inline]
    pub fn emit(&self, out: &mut Vec<u8>, stamp: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let at = start + self.stamp_at;
        let n = STAMP_BYTES.min(out.len() - at);
        out[at..at + n].copy_from_slice(&stamp.to_le_bytes()[..n]);
        if self.native {
            let crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
            out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Bytes of the send timestamp at the start of every payload.
pub const STAMP_BYTES: usize = 8;

/// Reads the send timestamp of a payload (0 if it is too short to carry one).
#[inline]
pub fn stamp_of(payload: &[u8]) -> u64 {
    match payload.get(..STAMP_BYTES) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap_or_default()),
        None => 0,
    }
}

/// A payload of `size` bytes unlikely to appear in a frame's other fields.
fn marker_payload(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| b"Sluice-bench-payload"[i % 20] ^ (i / 20) as u8)
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(haystack.len());
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn number(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 12 {
        return None;
    }
    b.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

fn is_no_responders(headers: &[u8]) -> bool {
    headers.starts_with(b"NATS/1.0 503")
}
