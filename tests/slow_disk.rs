//! A slow disk slows the publishers instead of growing the broker's memory: with every fsync made
//! slow by a named failure point, publishers that send acked publishes as fast as they can are held
//! to the disk's pace, and the broker's memory levels off.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Broker;
use sluice::api::StreamConfig;

/// How long the publishers run.
const RUN: Duration = Duration::from_secs(8);

#[test]
fn memory_levels_off_when_the_disk_is_slower_than_the_publishers() {
    // The only test in this binary: the failure point reaches the broker through the environment.
    std::env::set_var("SLUICE_FAILPOINTS", "fsync=delay:100");
    let broker = Broker::start(&[]);
    broker
        .client()
        .stream_add(&StreamConfig {
            partitions: 2,
            ..StreamConfig::new("uploads", vec!["uploads.>".into()])
        })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..2u32)
        .map(|shard| {
            let client = broker.client_on_shard(shard);
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let payload = vec![b'u'; 16 * 1024];
                let mut waiters = std::collections::VecDeque::new();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // As many in flight as the client likes: only the broker holds it back.
                    let subject = format!("uploads.{}", sent % 8);
                    waiters.push_back(client.publish_with_ack(&subject, &payload).unwrap());
                    sent += 1;
                    while waiters.len() > 100_000 {
                        waiters.pop_front().unwrap().wait().unwrap();
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for waiter in waiters {
                    if waiter.wait().is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < RUN {
        std::thread::sleep(Duration::from_millis(250));
        samples.push((started.elapsed(), broker.rss_kib()));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = publishers.into_iter().map(|p| p.join().unwrap()).sum();
    let acked = acked.load(Ordering::Relaxed);
    let at = |secs: u64| {
        samples
            .iter()
            .filter(|(t, _)| *t >= Duration::from_secs(secs))
            .map(|(_, rss)| *rss)
            .max()
            .unwrap_or(0)
    };
    let (early, late) = (at(2).min(at(3)), samples.iter().map(|s| s.1).max().unwrap());
    eprintln!(
        "sent {sent}, acked {acked}; RSS after 2-3 s {early} KiB, highest {late} KiB; {samples:?}"
    );
    assert!(acked > 0, "the disk made progress");
    assert_eq!(
        acked, sent,
        "every publish was acked once the publishers stopped"
    );
    // Held to the disk's pace, the broker needs no more memory later than it did early on; had
    // it taken everything the publishers sent, it would have grown by hundreds of MiB.
    assert!(
        late < early + 64 * 1024,
        "memory grew from {early} KiB to {late} KiB under a slow disk"
    );
}
