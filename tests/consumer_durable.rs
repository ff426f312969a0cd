//! A consumer exists, durably, once its attach is answered: a broker killed with SIGKILL right
//! after a new `DeliverPolicy::New` consumer received messages (unacked) still has the consumer
//! after the restart, at the position it was created at, and redelivers every one of them. Run for
//! several rounds, since the kill races the consumer's first write.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Broker, DataDir, PATIENCE};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};

const ROUNDS: usize = 10;
/// Durable messages published after the attach, received and not acked before the kill.
const MESSAGES: usize = 8;
/// Spread over both shards, so that joins go over the mesh as well as to the attaching shard.
const PARTITIONS: u32 = 4;
const STREAM: &str = "jobs";
const DURABLE: &str = "worker";

fn config() -> ConsumerConfig {
    ConsumerConfig {
        stream: STREAM.into(),
        name: DURABLE.into(),
        deliver: DeliverPolicy::New,
        // Long enough that only the restart brings the messages back.
        ack_wait_ms: 60_000,
        max_deliver: 100,
        max_ack_pending: 1_000,
        sid: 0,
        jetstream: None,
    }
}

/// Receives `n` messages without acking them; returns their (partition, offset).
fn receive(consumer: &sluice::client::Consumer, n: usize) -> BTreeSet<(u32, u64)> {
    let mut got = BTreeSet::new();
    while got.len() < n {
        let message = consumer
            .next_timeout(PATIENCE)
            .unwrap_or_else(|| panic!("received {} of {n} messages: {got:?}", got.len()));
        let meta = message.stream_meta().expect("a consumer's message");
        got.insert((meta.partition, meta.offset));
    }
    got
}

#[test]
fn a_new_consumer_killed_before_its_first_ack_redelivers_everything_after_a_restart() {
    let started = Instant::now();
    for round in 0..ROUNDS {
        let round_started = Instant::now();
        let data = DataDir::new();
        let mut broker = Broker::start_in(&data.path, &[]);
        let client = broker.client();
        client
            .stream_add(&StreamConfig {
                name: STREAM.into(),
                subjects: vec!["jobs.>".into()],
                partitions: PARTITIONS,
                max_age_secs: None,
                max_bytes: None,
                created_ns: 0,
                jetstream: None,
                replicas: 1,
                placement: Vec::new(),
            })
            .unwrap();
        // Something stored before the attach, which `New` must never deliver.
        for i in 0..PARTITIONS {
            client
                .publish_durable(&format!("jobs.old.{i}"), "old")
                .unwrap();
        }
        let consumer = client.consume(config()).unwrap();
        for i in 0..MESSAGES {
            client
                .publish_durable(&format!("jobs.new.{i}"), format!("m{i}"))
                .unwrap();
        }
        let first = receive(&consumer, MESSAGES);
        broker.kill();
        let killed_after = round_started.elapsed();

        let broker = Broker::start_in(&data.path, &[]);
        let client = broker.client();
        let info = client
            .consumer_info(STREAM, DURABLE)
            .unwrap_or_else(|e| panic!("round {round}: the consumer was forgotten: {e}"));
        // Whether the kill came before or after the periodic save that recorded the deliveries,
        // all of them wait: as never delivered, or as due again.
        assert!(info.pending() >= MESSAGES as u64, "round {round}: {info:?}");
        let consumer = client.consume(config()).unwrap();
        let again = receive(&consumer, MESSAGES);
        assert_eq!(again, first, "round {round}: redelivered other messages");
        assert!(
            consumer.next_timeout(Duration::from_millis(300)).is_none(),
            "round {round}: more than the {MESSAGES} messages published after the attach"
        );
        println!(
            "round {round}: killed {killed_after:?} after start, {MESSAGES} redelivered, round \
             took {:?}",
            round_started.elapsed()
        );
    }
    println!("{ROUNDS} rounds in {:?}", started.elapsed());
}
