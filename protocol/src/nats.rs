//! The NATS client protocol, so that existing NATS clients can talk to Sluice. Text control lines
//! ending in CRLF, payloads counted in bytes:
//!
//! ```text
//! client -> server                                   server -> client
//! CONNECT {json}                                     INFO {json}
//! PUB <subject> [reply] <#bytes>\r\n<payload>        MSG <subject> <sid> [reply] <#bytes>\r\n<payload>
//! HPUB <subject> [reply] <#hdr> <#total>\r\n<h><p>   HMSG <subject> <sid> [reply] <#hdr> <#total>\r\n..
//! SUB <subject> [queue] <sid>                        +OK
//! UNSUB <sid> [max]                                  -ERR '<message>'
//! PING / PONG                                        PING / PONG
//! ```
//! The parser works in place over the read buffer: subjects, headers and payloads of a decoded
//! operation are `Bytes` slices of it, nothing is copied. Operation names are case-insensitive.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

mod connect;
pub use connect::{parse_connect, ConnectError, ConnectOptions};

/// Longest control line accepted by default (as nats-server's `max_control_line`).
pub const CONTROL_LINE_BYTES_MAX: usize = 4096;

/// An operation a NATS client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// The JSON options of `CONNECT`.
    Connect(Bytes),
    Pub {
        subject: Bytes,
        reply: Option<Bytes>,
        /// The header block (`NATS/1.0\r\n...\r\n\r\n`), empty for `PUB`.
        headers: Bytes,
        payload: Bytes,
    },
    Sub {
        subject: Bytes,
        queue: Option<Bytes>,
        sid: Bytes,
    },
    Unsub {
        sid: Bytes,
        max: Option<u64>,
    },
    Ping,
    Pong,
}

/// Why client bytes are not valid NATS protocol. The texts are nats-server's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NatsError {
    #[error("Unknown Protocol Operation")]
    UnknownOperation,
    #[error("Maximum Control Line Exceeded")]
    ControlLineTooLong,
    #[error("Maximum Payload Violation")]
    PayloadTooLarge,
    #[error("invalid {op} arguments")]
    BadArguments { op: &'static str },
}

/// An operation read in place: its fields borrow the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOpRef<'a> {
    Connect(&'a [u8]),
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        headers: &'a [u8],
        payload: &'a [u8],
    },
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    Unsub {
        sid: &'a [u8],
        max: Option<u64>,
    },
    Ping,
    Pong,
}

/// Cuts the next operation out of `buf`: `Ok(None)` means read more.
pub fn decode(
    buf: &mut BytesMut,
    payload_bytes_max: usize,
    control_bytes_max: usize,
) -> Result<Option<ClientOp>, NatsError> {
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let (spans, used) = match decode_in_place(buf, payload_bytes_max, control_bytes_max)? {
        Decoded::Op(op, used) => (
            match op {
                ClientOpRef::Connect(json) => Spans::Connect(at(json)),
                ClientOpRef::Pub {
                    subject,
                    reply,
                    headers,
                    payload,
                } => Spans::Pub(at(subject), reply.map(at), at(headers), at(payload)),
                ClientOpRef::Sub {
                    subject,
                    queue,
                    sid,
                } => Spans::Sub(at(subject), queue.map(at), at(sid)),
                ClientOpRef::Unsub { sid, max } => Spans::Unsub(at(sid), max),
                ClientOpRef::Ping => Spans::Ping,
                ClientOpRef::Pong => Spans::Pong,
            },
            used,
        ),
        Decoded::Incomplete { needed } => {
            buf.reserve(needed.saturating_sub(buf.len()));
            return Ok(None);
        }
    };
    let line = buf.split_to(used).freeze();
    let cut = |(off, len): (usize, usize)| line.slice(off..off + len);
    Ok(Some(match spans {
        Spans::Connect(json) => ClientOp::Connect(cut(json)),
        Spans::Pub(subject, reply, headers, payload) => ClientOp::Pub {
            subject: cut(subject),
            reply: reply.map(cut),
            headers: cut(headers),
            payload: cut(payload),
        },
        Spans::Sub(subject, queue, sid) => ClientOp::Sub {
            subject: cut(subject),
            queue: queue.map(cut),
            sid: cut(sid),
        },
        Spans::Unsub(sid, max) => ClientOp::Unsub { sid: cut(sid), max },
        Spans::Ping => ClientOp::Ping,
        Spans::Pong => ClientOp::Pong,
    }))
}

/// Where the fields of an operation lie in the buffer: (offset, length).
enum Spans {
    Connect((usize, usize)),
    Pub(
        (usize, usize),
        Option<(usize, usize)>,
        (usize, usize),
        (usize, usize),
    ),
    Sub((usize, usize), Option<(usize, usize)>, (usize, usize)),
    Unsub((usize, usize), Option<u64>),
    Ping,
    Pong,
}

/// What [`decode_in_place`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// An operation, and how many bytes it took.
    Op(ClientOpRef<'a>, usize),
    /// Not a whole operation yet; `needed` is how many bytes it takes in all, when known.
    Incomplete { needed: usize },
}

/// Reads the next operation at the start of `buf` without copying or consuming anything: the
/// caller handles it, then drops the bytes it took. The hot path of the NATS port.
pub fn decode_in_place(
    buf: &[u8],
    payload_bytes_max: usize,
    control_bytes_max: usize,
) -> Result<Decoded<'_>, NatsError> {
    let Some(line_end) = find_crlf(buf) else {
        if buf.len() > control_bytes_max {
            return Err(NatsError::ControlLineTooLong);
        }
        return Ok(Decoded::Incomplete { needed: 0 });
    };
    if line_end > control_bytes_max {
        return Err(NatsError::ControlLineTooLong);
    }
    let (op, args_at) = op_name(&buf[..line_end]);
    let args_bytes = &buf[args_at.min(line_end)..line_end];
    let arg = |r: &(usize, usize)| &args_bytes[r.0..r.1];
    let used = line_end + 2;
    match op {
        Name::Pub | Name::Hpub => {
            let with_headers = op == Name::Hpub;
            let name = if with_headers { "HPUB" } else { "PUB" };
            let bad = || NatsError::BadArguments { op: name };
            let args = split_args(args_bytes);
            let len = |r: &(usize, usize)| parse_len(arg(r)).ok_or_else(bad);
            let (subject, reply, header_len, total_len) = match (with_headers, args.as_slice()) {
                (false, [s, n]) => (*s, None, 0, len(n)?),
                (false, [s, r, n]) => (*s, Some(*r), 0, len(n)?),
                (true, [s, h, n]) => (*s, None, len(h)?, len(n)?),
                (true, [s, r, h, n]) => (*s, Some(*r), len(h)?, len(n)?),
                _ => return Err(bad()),
            };
            if header_len > total_len {
                return Err(bad());
            }
            if total_len > payload_bytes_max {
                return Err(NatsError::PayloadTooLarge);
            }
            let need = used + total_len + 2;
            if buf.len() < need {
                return Ok(Decoded::Incomplete { needed: need });
            }
            if &buf[need - 2..need] != b"\r\n" {
                return Err(bad());
            }
            Ok(Decoded::Op(
                ClientOpRef::Pub {
                    subject: arg(&subject),
                    reply: reply.as_ref().map(arg),
                    headers: &buf[used..used + header_len],
                    payload: &buf[used + header_len..used + total_len],
                },
                need,
            ))
        }
        Name::Sub => {
            let args = split_args(args_bytes);
            let op = match args.as_slice() {
                [s, sid] => ClientOpRef::Sub {
                    subject: arg(s),
                    queue: None,
                    sid: arg(sid),
                },
                [s, q, sid] => ClientOpRef::Sub {
                    subject: arg(s),
                    queue: Some(arg(q)),
                    sid: arg(sid),
                },
                _ => return Err(NatsError::BadArguments { op: "SUB" }),
            };
            Ok(Decoded::Op(op, used))
        }
        Name::Unsub => {
            let args = split_args(args_bytes);
            let bad = || NatsError::BadArguments { op: "UNSUB" };
            let op = match args.as_slice() {
                [sid] => ClientOpRef::Unsub {
                    sid: arg(sid),
                    max: None,
                },
                [sid, max] => ClientOpRef::Unsub {
                    sid: arg(sid),
                    max: Some(parse_len(arg(max)).ok_or_else(bad)? as u64),
                },
                _ => return Err(bad()),
            };
            Ok(Decoded::Op(op, used))
        }
        Name::Connect => {
            let json = trim(args_bytes);
            Ok(Decoded::Op(
                ClientOpRef::Connect(&args_bytes[json.0..json.1]),
                used,
            ))
        }
        Name::Ping => Ok(Decoded::Op(ClientOpRef::Ping, used)),
        Name::Pong => Ok(Decoded::Op(ClientOpRef::Pong, used)),
        Name::Unknown => Err(NatsError::UnknownOperation),
    }
}

/// The operations a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Pub,
    Hpub,
    Sub,
    Unsub,
    Connect,
    Ping,
    Pong,
    Unknown,
}

/// Writes `MSG` (or `HMSG` when there are headers) for a delivery.
pub fn encode_msg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    out.extend_from_slice(if headers.is_empty() {
        b"MSG "
    } else {
        b"HMSG "
    });
    out.extend_from_slice(subject);
    out.extend_from_slice(b" ");
    out.extend_from_slice(sid);
    out.extend_from_slice(b" ");
    if let Some(reply) = reply {
        out.extend_from_slice(reply);
        out.extend_from_slice(b" ");
    }
    let mut number = itoa::Buffer::new();
    if !headers.is_empty() {
        out.extend_from_slice(number.format(headers.len()).as_bytes());
        out.extend_from_slice(b" ");
    }
    out.extend_from_slice(number.format(headers.len() + payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Writes `-ERR '<message>'`.
pub fn encode_err(out: &mut BytesMut, message: &str) {
    out.extend_from_slice(b"-ERR '");
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"'\r\n");
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    // memchr for the LF is several times cheaper than building a two-byte substring finder on
    // every call; a lone LF inside the line is skipped.
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}

/// The operation a line starts with (case-insensitive) and where its arguments start.
fn op_name(line: &[u8]) -> (Name, usize) {
    // The common case first: an upper-case publish from a client library.
    if line.starts_with(b"PUB ") {
        return (Name::Pub, 4);
    }
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line[start..]
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .map_or(line.len(), |p| start + p);
    let word = &line[start..end];
    let is = |name: &[u8]| word.eq_ignore_ascii_case(name);
    let name = if is(b"PUB") {
        Name::Pub
    } else if is(b"HPUB") {
        Name::Hpub
    } else if is(b"SUB") {
        Name::Sub
    } else if is(b"UNSUB") {
        Name::Unsub
    } else if is(b"CONNECT") {
        Name::Connect
    } else if is(b"PING") {
        Name::Ping
    } else if is(b"PONG") {
        Name::Pong
    } else {
        Name::Unknown
    };
    (name, end)
}

/// Most arguments an operation takes (HPUB: subject, reply, header size, total size).
const ARGS_MAX: usize = 4;

/// The (start, end) of each space- or tab-separated argument, without allocating; more than
/// `ARGS_MAX` arguments make the list one longer than any operation accepts.
fn split_args(args: &[u8]) -> Args {
    let mut out = Args {
        spans: [(0, 0); ARGS_MAX + 1],
        len: 0,
    };
    let mut i = 0;
    while i < args.len() && out.len <= ARGS_MAX {
        while i < args.len() && (args[i] == b' ' || args[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < args.len() && args[i] != b' ' && args[i] != b'\t' {
            i += 1;
        }
        if i > start {
            out.spans[out.len] = (start, i);
            out.len += 1;
        }
    }
    out
}

/// Argument spans of one control line.
struct Args {
    spans: [(usize, usize); ARGS_MAX + 1],
    len: usize,
}

impl Args {
    fn as_slice(&self) -> &[(usize, usize)] {
        &self.spans[..self.len]
    }
}

fn trim(bytes: &[u8]) -> (usize, usize) {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    (start, end)
}

fn parse_len(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(wire: &[u8]) -> ClientOp {
        let mut buf = BytesMut::from(wire);
        let op = decode(&mut buf, 1 << 20, CONTROL_LINE_BYTES_MAX)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "left {:?}", &buf[..]);
        op
    }

    #[test]
    fn every_client_operation_decodes() {
        assert_eq!(one(b"PING\r\n"), ClientOp::Ping);
        assert_eq!(one(b"pong\r\n"), ClientOp::Pong);
        assert_eq!(
            one(b"CONNECT {\"verbose\":false}\r\n"),
            ClientOp::Connect(Bytes::from_static(b"{\"verbose\":false}"))
        );
        assert_eq!(
            one(b"PUB a.b 5\r\nhello\r\n"),
            ClientOp::Pub {
                subject: "a.b".into(),
                reply: None,
                headers: Bytes::new(),
                payload: "hello".into()
            }
        );
        assert_eq!(
            one(b"PUB a.b _INBOX.1  0\r\n\r\n"),
            ClientOp::Pub {
                subject: "a.b".into(),
                reply: Some("_INBOX.1".into()),
                headers: Bytes::new(),
                payload: Bytes::new()
            }
        );
        assert_eq!(
            one(b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            ClientOp::Pub {
                subject: "a".into(),
                reply: None,
                headers: "NATS/1.0\r\n\r\n".into(),
                payload: "hi".into()
            }
        );
        assert_eq!(
            one(b"SUB foo.* workers 7\r\n"),
            ClientOp::Sub {
                subject: "foo.*".into(),
                queue: Some("workers".into()),
                sid: "7".into()
            }
        );
        assert_eq!(
            one(b"UNSUB 7 10\r\n"),
            ClientOp::Unsub {
                sid: "7".into(),
                max: Some(10)
            }
        );
    }

    #[test]
    fn limits_and_garbage_are_refused() {
        let mut big = BytesMut::from(&b"PUB a 2000000\r\n"[..]);
        assert_eq!(
            decode(&mut big, 1 << 20, CONTROL_LINE_BYTES_MAX),
            Err(NatsError::PayloadTooLarge)
        );
        let mut long = BytesMut::from(&vec![b'x'; 5000][..]);
        assert_eq!(
            decode(&mut long, 1 << 20, CONTROL_LINE_BYTES_MAX),
            Err(NatsError::ControlLineTooLong)
        );
        let mut junk = BytesMut::from(&b"FOO bar\r\n"[..]);
        assert_eq!(
            decode(&mut junk, 1 << 20, CONTROL_LINE_BYTES_MAX),
            Err(NatsError::UnknownOperation)
        );
        let mut bad = BytesMut::from(&b"PUB a x\r\n"[..]);
        assert!(matches!(
            decode(&mut bad, 1 << 20, CONTROL_LINE_BYTES_MAX),
            Err(NatsError::BadArguments { .. })
        ));
    }

    #[test]
    fn msg_lines_are_byte_exact() {
        let mut out = BytesMut::new();
        encode_msg(&mut out, b"a.b", b"7", Some(b"r"), b"", b"hello");
        assert_eq!(&out[..], b"MSG a.b 7 r 5\r\nhello\r\n");
        out.clear();
        encode_msg(&mut out, b"a", b"1", None, b"NATS/1.0\r\n\r\n", b"hi");
        assert_eq!(&out[..], b"HMSG a 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    }
}
