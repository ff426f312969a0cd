//! A clean stop: on SIGTERM the broker stops reading, waits for the publishes it already read to
//! become durable, sends their acks, and only then closes the connections; everything acked is
//! there after a restart.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Broker, DataDir};
use sluice::api::StreamConfig;

#[test]
fn sigterm_acks_what_was_read_before_closing() {
    // The only test in this binary: the failure point reaches the broker through the environment.
    // With each fsync slowed, publishes are always in flight when the signal comes.
    std::env::set_var("SLUICE_FAILPOINTS", "fsync=delay:200");
    let data = DataDir::new();
    let mut broker = Broker::start_in(&data.path, &[]);
    let stream = StreamConfig {
        name: "work".into(),
        subjects: vec!["work.>".into()],
        partitions: 2,
        max_age_secs: None,
        max_bytes: None,
        created_ns: 0,
        jetstream: None,
        replicas: 1,
        placement: Vec::new(),
    };
    broker.client().stream_add(&stream).unwrap();
    let client = broker.client_on_shard(0);
    let (waiters_tx, waiters_rx) = mpsc::channel();
    let collector = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for (n, waiter) in waiters_rx {
            let waiter: sluice::client::AckWaiter = waiter;
            match waiter.wait() {
                Ok(ack) => acked.push((n, ack, Instant::now())),
                Err(_) => break, // The connection closed: no more acks come.
            }
        }
        acked
    });
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_millis(700) {
        let Ok(waiter) = client.publish_with_ack(&format!("work.{}", n % 4), n.to_le_bytes())
        else {
            break;
        };
        waiters_tx.send((n, waiter)).unwrap();
        n += 1;
        if n % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let signalled = Instant::now();
    let status = broker
        .terminate(common::PATIENCE)
        .expect("the broker stops");
    assert!(status.success(), "a clean stop exits 0: {status}");
    drop(waiters_tx);
    let acked = collector.join().unwrap();
    let after_signal = acked
        .iter()
        .filter(|(_, _, at)| at.duration_since(signalled) > Duration::from_millis(50))
        .count();
    eprintln!(
        "{n} published, {} acked, {after_signal} of them after the signal",
        acked.len()
    );
    assert!(
        after_signal > 0,
        "publishes in flight at the signal were acked before the connection closed"
    );

    let broker = Broker::start_in(&data.path, &[]);
    let reader = broker.client();
    let stored = reader.stream_info("work").unwrap().messages();
    assert!(
        stored >= acked.len() as u64,
        "{stored} stored, {} acked",
        acked.len()
    );
    // The acks that came last, after the signal, are the ones a hasty stop would lose.
    for (n, ack, _) in acked.iter().rev().take(500) {
        let stored = reader
            .stream_get("work", ack.partition, ack.offset)
            .unwrap_or_else(|e| panic!("acked publish {n} is stored: {e}"));
        assert_eq!(stored.payload, n.to_le_bytes(), "publish {n}");
    }
}
