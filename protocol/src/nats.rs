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

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

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

/// Cuts the next operation out of `buf`: `Ok(None)` means read more.
pub fn decode(
    buf: &mut BytesMut,
    payload_bytes_max: usize,
    control_bytes_max: usize,
) -> Result<Option<ClientOp>, NatsError> {
    let Some(line_end) = find_crlf(buf) else {
        if buf.len() > control_bytes_max {
            return Err(NatsError::ControlLineTooLong);
        }
        return Ok(None);
    };
    if line_end > control_bytes_max {
        return Err(NatsError::ControlLineTooLong);
    }
    let (op, args_at) = op_name(&buf[..line_end]);
    match op {
        Name::Pub | Name::Hpub => {
            let with_headers = op == Name::Hpub;
            let name = if with_headers { "HPUB" } else { "PUB" };
            let bad = || NatsError::BadArguments { op: name };
            let args_bytes = &buf[args_at..line_end];
            let args = split_args(args_bytes);
            let len = |r: &(usize, usize)| parse_len(&args_bytes[r.0..r.1]).ok_or_else(bad);
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
            let need = line_end + 2 + total_len + 2;
            if buf.len() < need {
                buf.reserve(need - buf.len());
                return Ok(None);
            }
            if &buf[need - 2..need] != b"\r\n" {
                return Err(bad());
            }
            let frame = buf.split_to(need).freeze();
            let body = line_end + 2;
            Ok(Some(ClientOp::Pub {
                subject: frame.slice(args_at + subject.0..args_at + subject.1),
                reply: reply.map(|r| frame.slice(args_at + r.0..args_at + r.1)),
                headers: frame.slice(body..body + header_len),
                payload: frame.slice(body + header_len..body + total_len),
            }))
        }
        Name::Sub => {
            let args = split_args(&buf[args_at..line_end]);
            let line = buf.split_to(line_end + 2).freeze();
            let slice = |r: &(usize, usize)| line.slice(args_at + r.0..args_at + r.1);
            match args.as_slice() {
                [s, sid] => Ok(Some(ClientOp::Sub {
                    subject: slice(s),
                    queue: None,
                    sid: slice(sid),
                })),
                [s, q, sid] => Ok(Some(ClientOp::Sub {
                    subject: slice(s),
                    queue: Some(slice(q)),
                    sid: slice(sid),
                })),
                _ => Err(NatsError::BadArguments { op: "SUB" }),
            }
        }
        Name::Unsub => {
            let args = split_args(&buf[args_at..line_end]);
            let line = buf.split_to(line_end + 2).freeze();
            let slice = |r: &(usize, usize)| line.slice(args_at + r.0..args_at + r.1);
            let bad = || NatsError::BadArguments { op: "UNSUB" };
            match args.as_slice() {
                [sid] => Ok(Some(ClientOp::Unsub {
                    sid: slice(sid),
                    max: None,
                })),
                [sid, max] => Ok(Some(ClientOp::Unsub {
                    sid: slice(sid),
                    max: Some(
                        parse_len(&line[args_at + max.0..args_at + max.1]).ok_or_else(bad)? as u64,
                    ),
                })),
                _ => Err(bad()),
            }
        }
        Name::Connect => {
            let line = buf.split_to(line_end + 2).freeze();
            let json = trim(&line[args_at..line_end]);
            Ok(Some(ClientOp::Connect(
                line.slice(json.0 + args_at..json.1 + args_at),
            )))
        }
        Name::Ping => {
            buf.advance(line_end + 2);
            Ok(Some(ClientOp::Ping))
        }
        Name::Pong => {
            buf.advance(line_end + 2);
            Ok(Some(ClientOp::Pong))
        }
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
    memchr::memmem::find(buf, b"\r\n")
}

/// The operation a line starts with (case-insensitive) and where its arguments start.
fn op_name(line: &[u8]) -> (Name, usize) {
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
