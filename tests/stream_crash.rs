//! Crash test: publish with acks under load, SIGKILL the broker at a random moment, restart, and
//! check that every acknowledged (partition, offset) holds the right payload. 20 rounds on one data
//! directory.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, DataDir};
use sluice::api::StreamConfig;

const ROUNDS: usize = 20;
const PUBLISHERS: usize = 4;
/// Reads per round of the newest acknowledged messages (the ones a crash puts most at risk).
const CHECKS_NEWEST: usize = 100;
/// Reads per round of acknowledged messages picked at random.
const CHECKS_SAMPLED: usize = 100;

#[test]
fn every_acknowledged_publish_survives_sigkill() {
    let data = DataDir::new();
    {
        let broker = Broker::start_in(&data.path, &[]);
        let config = StreamConfig {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            partitions: 4,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        };
        broker.client().stream_add(&config).unwrap();
    }
    let acked: Arc<Mutex<HashMap<(u32, u64), String>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut broker = Broker::start_in(&data.path, &[]);
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let addr = broker.addr.clone();
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let Ok(client) = sluice::client::Client::connect(&addr) else {
                        return;
                    };
                    let mut window = std::collections::VecDeque::new();
                    for i in 0.. {
                        let payload = format!("r{round}-p{p}-m{i}");
                        let subject = format!("jobs.{p}.{}", i % 13);
                        match client.publish_with_ack(&subject, &payload) {
                            Ok(waiter) => window.push_back((payload, waiter)),
                            Err(_) => return,
                        }
                        if window.len() >= 64 {
                            let (payload, waiter) = window.pop_front().unwrap();
                            match waiter.wait() {
                                Ok(ack) => {
                                    let old = acked
                                        .lock()
                                        .unwrap()
                                        .insert((ack.partition, ack.offset), payload);
                                    assert!(old.is_none(), "offset acked twice");
                                }
                                Err(_) => return,
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + fastrand::u64(..300)));
        broker.kill();
        for p in publishers {
            p.join().unwrap();
        }
        let broker = Broker::start_in(&data.path, &[]);
        let client = broker.client();
        let expected = acked.lock().unwrap().clone();
        let info = client.stream_info("jobs").unwrap();
        // Every acked offset is within its partition after recovery...
        for (partition, offset) in expected.keys() {
            let last = info.partitions[*partition as usize].last_offset;
            assert!(
                last.is_some_and(|l| l >= *offset),
                "round {round}: partition {partition} ends at {last:?}, offset {offset} was acked"
            );
        }
        // ...and holds its payload: this round's newest acks and a random sample of the rest (a
        // read is one API round trip).
        let mut keys: Vec<&(u32, u64)> = expected.keys().collect();
        keys.sort_unstable_by_key(|(p, o)| (std::cmp::Reverse(*o), *p));
        let mut checked: Vec<&(u32, u64)> = keys.iter().take(CHECKS_NEWEST).copied().collect();
        for _ in 0..CHECKS_SAMPLED.min(keys.len()) {
            checked.push(keys[fastrand::usize(..keys.len())]);
        }
        for key in checked {
            let message = client.stream_get("jobs", key.0, key.1).unwrap();
            assert_eq!(
                message.payload,
                expected[key].as_bytes(),
                "round {round}: {key:?}"
            );
        }
        drop(broker);
    }
    let total = acked.lock().unwrap().len();
    println!("{total} acknowledged publishes over {ROUNDS} rounds");
    assert!(total > 1000, "only {total} publishes were acknowledged");
}
