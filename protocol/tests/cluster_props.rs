//! Property tests of the cluster link frames: round trips of any hello, and arbitrary bytes.

use bytes::BytesMut;
use proptest::prelude::*;
use sluice_protocol::cluster::{ClusterFrame, Hello, Refusal};

proptest! {
    #[test]
    fn any_hello_round_trips(
        version in any::<u16>(),
        node in "[a-z0-9._-]{1,128}",
        addr in ".{0,64}",
        shards in any::<u16>(),
        proof in proptest::collection::vec(any::<u8>(), 0..64),
        instance in any::<u64>(),
        welcome in any::<bool>(),
    ) {
        let hello = Hello { version, node: &node, cluster_addr: &addr, shards, proof: &proof, instance };
        let frame = if welcome { ClusterFrame::Welcome(hello) } else { ClusterFrame::Hello(hello) };
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        let (decoded, used) = ClusterFrame::decode(&out).unwrap().unwrap();
        prop_assert_eq!(decoded, frame);
        prop_assert_eq!(used, out.len());
    }

    #[test]
    fn any_refusal_round_trips(reason in ".{0,200}") {
        let frame = ClusterFrame::Refuse(Refusal::Other(&reason));
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        prop_assert_eq!(ClusterFrame::decode(&out).unwrap().unwrap().0, frame);
    }

    #[test]
    fn any_group_forward_and_outcome_round_trips(
        stream in "[A-Za-z0-9_-]{1,64}",
        partition in any::<u32>(),
        id in any::<u64>(),
        count in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        offset in any::<u64>(),
        code in any::<u16>(),
        reason in ".{0,100}",
    ) {
        let frames = [
            ClusterFrame::Group { stream: &stream, partition, message: &body },
            ClusterFrame::Forward { stream: &stream, partition, id, count, deadline_ms: offset, body: &body },
            ClusterFrame::Forwarded { id, result: Ok(offset) },
            ClusterFrame::Forwarded { id, result: Err((code, &reason)) },
            ClusterFrame::Clients { native: &reason, nats: &stream, kafka: &reason },
            ClusterFrame::Consumer { stream: &stream, partition, consumer: &reason, seq: id, state: &body },
            ClusterFrame::Held { stream: &stream, partition, consumer: &reason, seq: id },
            ClusterFrame::Ask { stream: &stream, partition, consumer: &reason },
            ClusterFrame::Offsets { group: &reason, saved: &body },
        ];
        for frame in frames {
            let mut out = BytesMut::new();
            frame.encode(&mut out);
            let (decoded, used) = ClusterFrame::decode(&out).unwrap().unwrap();
            prop_assert_eq!(decoded, frame);
            prop_assert_eq!(used, out.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some((_, used))) = ClusterFrame::decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }

    /// Noise behind a valid checksum reaches the field decoder: it must refuse, never panic.
    #[test]
    fn checksummed_noise_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut framed = Vec::with_capacity(body.len() + 8);
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        framed.extend_from_slice(&body);
        let _ = ClusterFrame::decode(&framed);
    }
}
