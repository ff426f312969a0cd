//! Cost per operation of the hot-path pieces of the protocol: encoding a publish, cutting and checking
//! it out of a buffer, and matching a subject against many subscriptions.
//!
//! `cargo bench --bench codec` measures; under `cargo test` it runs a few iterations as a smoke test.

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use sluice_protocol::frame::{decode, FrameEncoder};
use sluice_protocol::op::{Op, Publish};
use sluice_protocol::sublist::Sublist;

fn measure(name: &str, iterations: u64, mut f: impl FnMut(u64)) {
    let start = Instant::now();
    for i in 0..iterations {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{name:<44} {ns:>9.1} ns/op  {:>12.0} ops/s", 1e9 / ns);
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = if full { 5_000_000 } else { 1_000 };
    let mut encoder = FrameEncoder::new();

    for size in [16usize, 1024] {
        let payload = vec![b'x'; size];
        let mut out = Vec::with_capacity(64 * 1024 * 1024);
        measure(&format!("encode publish, {size} B payload"), n, |_| {
            if out.len() > 60 * 1024 * 1024 {
                out.clear();
            }
            encoder.encode(
                &Op::Pub(Publish {
                    subject: "user.42.audio",
                    reply: None,
                    headers: b"",
                    payload: &payload,
                    ack: false,
                }),
                &mut out,
            );
        });

        let mut one = Vec::new();
        encoder.encode(
            &Op::Pub(Publish {
                subject: "user.42.audio",
                reply: None,
                headers: b"",
                payload: &payload,
                ack: false,
            }),
            &mut one,
        );
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let mut buf = BytesMut::new();
        measure(
            &format!("decode + check publish, {size} B payload"),
            n,
            |i| {
                if i % 1000 == 0 {
                    buf = BytesMut::from(&batch[..]);
                }
                black_box(decode(&mut buf, 1 << 20).unwrap());
            },
        );
    }

    let mut list = Sublist::new();
    for user in 0..10_000u32 {
        list.insert(&format!("user.{user}.audio"), user);
    }
    list.insert("user.*.text", 1_000_000);
    list.insert("user.>", 1_000_001);
    let subjects: Vec<String> = (0..1024).map(|u| format!("user.{}.audio", u * 7)).collect();
    measure("match among 10,002 patterns", n, |i| {
        let mut hits = 0;
        list.for_each_match(&subjects[(i % 1024) as usize], |_| hits += 1);
        black_box(hits);
    });
}
