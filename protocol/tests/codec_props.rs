//! Property tests of the frame codec: round trips, split points, and arbitrary bytes.

use bytes::BytesMut;
use proptest::prelude::*;
use sluice_protocol::frame::{decode, FrameEncoder};
use sluice_protocol::op::{
    ArchivedOp, ConsumerPull, ErrorFrame, Op, Publish, Subscribe, Unsubscribe,
};

const BODY_MAX: u32 = 1 << 20;

#[derive(Debug, Clone)]
enum Owned {
    Pub {
        subject: String,
        reply: Option<String>,
        headers: Vec<u8>,
        payload: Vec<u8>,
    },
    Sub {
        sid: u64,
        subject: String,
        queue: Option<String>,
    },
    Unsub {
        sid: u64,
        max: Option<u64>,
    },
    Msg {
        sid: u64,
    },
    Err {
        code: u16,
        message: String,
    },
    Ping,
    Pull {
        stream: String,
        consumer: String,
        sid: u64,
        count: u32,
        expires_ms: u32,
    },
}

impl Owned {
    fn op(&self) -> Op<'_> {
        match self {
            Owned::Pub {
                subject,
                reply,
                headers,
                payload,
            } => Op::Pub(Publish {
                subject,
                reply: reply.as_deref(),
                headers,
                payload,
                ack: payload.len() % 2 == 0,
            }),
            Owned::Sub {
                sid,
                subject,
                queue,
            } => Op::Sub(Subscribe {
                sid: *sid,
                subject,
                queue: queue.as_deref(),
            }),
            Owned::Unsub { sid, max } => Op::Unsub(Unsubscribe {
                sid: *sid,
                max: *max,
            }),
            Owned::Msg { sid } => Op::Msg { sid: *sid },
            Owned::Err { code, message } => Op::Err(ErrorFrame {
                code: *code,
                message,
            }),
            Owned::Ping => Op::Ping,
            Owned::Pull {
                stream,
                consumer,
                sid,
                count,
                expires_ms,
            } => Op::ConsumerPull(ConsumerPull {
                stream,
                consumer,
                sid: *sid,
                count: *count,
                expires_ms: *expires_ms,
            }),
        }
    }

    fn matches(&self, op: &ArchivedOp<'_>) -> bool {
        match (self, op) {
            (
                Owned::Pub {
                    subject,
                    reply,
                    headers,
                    payload,
                },
                ArchivedOp::Pub(p),
            ) => {
                p.subject() == subject
                    && p.reply() == reply.as_deref()
                    && p.wants_ack() == (payload.len() % 2 == 0)
                    && p.headers() == &headers[..]
                    && p.payload() == &payload[..]
            }
            (
                Owned::Sub {
                    sid,
                    subject,
                    queue,
                },
                ArchivedOp::Sub(s),
            ) => {
                s.sid.to_native() == *sid
                    && s.subject.as_str() == subject
                    && s.queue.as_ref().map(|q| q.as_str()) == queue.as_deref()
            }
            (Owned::Unsub { sid, max }, ArchivedOp::Unsub(u)) => {
                u.sid.to_native() == *sid && u.max.as_ref().map(|m| m.to_native()) == *max
            }
            (Owned::Msg { sid }, ArchivedOp::Msg { sid: s }) => s.to_native() == *sid,
            (Owned::Err { code, message }, ArchivedOp::Err(e)) => {
                e.code.to_native() == *code && e.message.as_str() == message
            }
            (Owned::Ping, ArchivedOp::Ping) => true,
            (
                Owned::Pull {
                    stream,
                    consumer,
                    sid,
                    count,
                    expires_ms,
                },
                ArchivedOp::ConsumerPull(p),
            ) => {
                p.stream.as_str() == stream
                    && p.consumer.as_str() == consumer
                    && p.sid.to_native() == *sid
                    && p.count.to_native() == *count
                    && p.expires_ms.to_native() == *expires_ms
            }
            _ => false,
        }
    }
}

fn owned_op() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            "[a-z.]{1,40}",
            proptest::option::of("[a-z]{1,20}"),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..2048)
        )
            .prop_map(|(subject, reply, headers, payload)| Owned::Pub {
                subject,
                reply,
                headers,
                payload
            }),
        (
            any::<u64>(),
            "[a-z.*>]{1,40}",
            proptest::option::of("[a-z]{1,10}")
        )
            .prop_map(|(sid, subject, queue)| Owned::Sub {
                sid,
                subject,
                queue
            }),
        (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(sid, max)| Owned::Unsub { sid, max }),
        any::<u64>().prop_map(|sid| Owned::Msg { sid }),
        (any::<u16>(), ".{0,100}").prop_map(|(code, message)| Owned::Err { code, message }),
        Just(Owned::Ping),
        (
            "[A-Z]{1,12}",
            "[a-z]{1,12}",
            any::<u64>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(stream, consumer, sid, count, expires_ms)| Owned::Pull {
                stream,
                consumer,
                sid,
                count,
                expires_ms
            }),
    ]
}

proptest! {
    #[test]
    fn a_stream_of_frames_decodes_to_the_same_ops_whatever_the_read_sizes(
        ops in proptest::collection::vec(owned_op(), 1..20),
        chunk in 1usize..300,
    ) {
        let mut encoder = FrameEncoder::new();
        let mut wire = Vec::new();
        for op in &ops {
            encoder.encode(&op.op(), &mut wire);
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decode(&mut buf, BODY_MAX).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded.len(), ops.len());
        for (op, frame) in ops.iter().zip(&decoded) {
            prop_assert!(op.matches(frame.op()), "{:?} decoded as {}", op, frame.op().name());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = decode(&mut buf, BODY_MAX) {
            let _ = frame.op().name();
        }
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_and_checksum_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let mut wire = Vec::new();
        wire.extend_from_slice(&(body.len() as u32).to_le_bytes());
        wire.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        wire.extend_from_slice(&body);
        let mut buf = BytesMut::from(&wire[..]);
        if let Ok(Some(frame)) = decode(&mut buf, BODY_MAX) {
            let _ = frame.op().name();
        }
    }
}

/// The definition of a valid subject, written for clarity: the validator must agree with it.
fn reference_validate(subject: &str, wildcards: bool) -> bool {
    use sluice_protocol::limits::{SUBJECT_BYTES_MAX, SUBJECT_TOKENS_MAX};
    if subject.is_empty() || subject.len() > SUBJECT_BYTES_MAX {
        return false;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.len() <= SUBJECT_TOKENS_MAX
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.bytes().any(|b| b <= b' ' || b == 0x7f)
                && match *t {
                    "*" => wildcards,
                    ">" => wildcards && i == tokens.len() - 1,
                    _ => !wildcards || !(t.contains('*') || t.contains('>')),
                }
        })
}

proptest! {
    #[test]
    fn subject_validation_agrees_with_its_definition(
        subject in "[a-c.*> \t\u{7f}é]{0,12}",
    ) {
        use sluice_protocol::subject::{validate_pattern, validate_subject};
        prop_assert_eq!(validate_subject(&subject).is_ok(), reference_validate(&subject, false));
        prop_assert_eq!(validate_pattern(&subject).is_ok(), reference_validate(&subject, true));
    }
}

proptest! {
    #[test]
    fn byte_subjects_validate_as_their_text(bytes in proptest::collection::vec(
        proptest::sample::select(vec![b'a', b'.', b'*', b' ', 0xc3, 0xa9, 0xff]), 0..10)) {
        use sluice_protocol::subject::{validate_subject, validate_subject_bytes};
        let expected = std::str::from_utf8(&bytes).ok().filter(|s| validate_subject(s).is_ok());
        prop_assert_eq!(validate_subject_bytes(&bytes).ok(), expected);
    }
}
