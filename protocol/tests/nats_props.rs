//! Property tests of the NATS parser: arbitrary bytes never panic, and where the reads split a stream
//! never changes what it decodes to.

use bytes::BytesMut;
use proptest::prelude::*;
use sluice_protocol::nats::{decode, ClientOp, CONTROL_LINE_BYTES_MAX};

const PAYLOAD_MAX: usize = 1 << 20;

fn decode_all(chunks: &[&[u8]]) -> (Vec<ClientOp>, bool) {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf, PAYLOAD_MAX, CONTROL_LINE_BYTES_MAX) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(_) => return (ops, true),
            }
        }
    }
    (ops, false)
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]{1,8}"
}

fn wire_op() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"PING\r\n".to_vec()),
        Just(b"PONG\r\n".to_vec()),
        Just(b"CONNECT {\"verbose\":false,\"echo\":true}\r\n".to_vec()),
        (
            token(),
            proptest::option::of(token()),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(s, r, p)| {
                let mut w = match r {
                    Some(r) => format!("PUB {s} {r} {}\r\n", p.len()).into_bytes(),
                    None => format!("PUB {s} {}\r\n", p.len()).into_bytes(),
                };
                w.extend_from_slice(&p);
                w.extend_from_slice(b"\r\n");
                w
            }),
        (token(), proptest::collection::vec(any::<u8>(), 0..32)).prop_map(|(s, p)| {
            let h = b"NATS/1.0\r\nK: v\r\n\r\n";
            let mut w = format!("HPUB {s} {} {}\r\n", h.len(), h.len() + p.len()).into_bytes();
            w.extend_from_slice(h);
            w.extend_from_slice(&p);
            w.extend_from_slice(b"\r\n");
            w
        }),
        (token(), proptest::option::of(token()), 1u32..1000).prop_map(|(s, q, sid)| match q {
            Some(q) => format!("SUB {s} {q} {sid}\r\n").into_bytes(),
            None => format!("sub {s} {sid}\r\n").into_bytes(),
        }),
        (1u32..1000, proptest::option::of(0u32..100)).prop_map(|(sid, max)| match max {
            Some(m) => format!("UNSUB {sid} {m}\r\n").into_bytes(),
            None => format!("UNSUB {sid}\r\n").into_bytes(),
        }),
    ]
}

proptest! {
    #[test]
    fn split_points_never_change_the_decoded_operations(
        ops in proptest::collection::vec(wire_op(), 1..20),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let wire: Vec<u8> = ops.concat();
        let (whole, failed) = decode_all(&[&wire]);
        prop_assert!(!failed);
        prop_assert_eq!(whole.len(), ops.len());
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&wire[last..p]);
            last = p;
        }
        chunks.push(&wire[last..]);
        let (pieces, failed) = decode_all(&chunks);
        prop_assert!(!failed);
        prop_assert_eq!(pieces, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_all(&[&bytes]);
    }
}
