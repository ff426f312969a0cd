//! Durable consumers on the real binary with two shards: everything consumed exactly once, redelivery
//! after the ack wait, naks, dead letters with their advisory, replay by offset and time, members
//! sharing a consumer, pending counts.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{receive, Broker, PATIENCE};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::{Client, Consumer, Message};

fn stream(client: &Client, partitions: u32) {
    client
        .stream_add(&StreamConfig {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            partitions,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
}

fn consumer(client: &Client, name: &str, deliver: DeliverPolicy, ack_wait_ms: u64) -> Consumer {
    client
        .consume(ConsumerConfig {
            stream: "jobs".into(),
            name: name.into(),
            deliver,
            ack_wait_ms,
            max_deliver: 3,
            max_ack_pending: 1000,
            sid: 0,
            jetstream: None,
        })
        .unwrap()
}

/// Publishes `n` messages with acks; returns payload -> (partition, offset).
fn publish(client: &Client, n: usize) -> HashMap<String, (u32, u64)> {
    let waiters: Vec<_> = (0..n)
        .map(|i| {
            let payload = format!("job-{i}");
            let w = client
                .publish_with_ack(&format!("jobs.q{}", i % 11), &payload)
                .unwrap();
            (payload, w)
        })
        .collect();
    waiters
        .into_iter()
        .map(|(p, w)| {
            let ack = w.wait().unwrap();
            (p, (ack.partition, ack.offset))
        })
        .collect()
}

fn drain(consumer: &Consumer, ack: bool) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(m) = consumer.next_timeout(Duration::from_millis(700)) {
        if ack {
            consumer.ack(&m).unwrap();
        }
        got.push(m);
    }
    got
}

#[test]
fn a_consumer_gets_every_stored_message_exactly_once() {
    let broker = Broker::start(&[]);
    let publisher = broker.client_on_shard(0);
    stream(&publisher, 4);
    let stored = publish(&publisher, 1000);
    let reader = broker.client_on_shard(1);
    let c = consumer(&reader, "all", DeliverPolicy::All, 30_000);
    let got = drain(&c, true);
    assert_eq!(got.len(), 1000);
    let mut seen = HashSet::new();
    for m in &got {
        let payload = String::from_utf8(m.payload().to_vec()).unwrap();
        let meta = m.stream_meta().unwrap();
        assert_eq!(stored[&payload], (meta.partition, meta.offset));
        assert_eq!(meta.delivered, 1);
        assert!(seen.insert(payload));
    }
    reader.flush().unwrap();
    let info = reader.consumer_info("jobs", "all").unwrap();
    assert_eq!(info.pending(), 0);
    assert_eq!(info.ack_pending(), 0);
}

#[test]
fn unacked_messages_are_redelivered_after_the_ack_wait_and_naks_sooner() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    stream(&client, 2);
    publish(&client, 2);
    let c = consumer(&client, "slow", DeliverPolicy::All, 300);
    let first = [
        c.next_timeout(PATIENCE).unwrap(),
        c.next_timeout(PATIENCE).unwrap(),
    ];
    assert!(first
        .iter()
        .all(|m| m.stream_meta().unwrap().delivered == 1));
    c.ack(&first[0]).unwrap();
    c.nak(&first[1], Duration::ZERO).unwrap();
    let again = c.next_timeout(PATIENCE).unwrap();
    assert_eq!(again.payload(), first[1].payload());
    assert_eq!(again.stream_meta().unwrap().delivered, 2);
    // Not acked this time: after the ack wait it comes a third time.
    let third = c.next_timeout(PATIENCE).unwrap();
    assert_eq!(third.payload(), first[1].payload());
    assert_eq!(third.stream_meta().unwrap().delivered, 3);
    c.ack(&third).unwrap();
    assert!(c.next_timeout(Duration::from_millis(800)).is_none());
    client.flush().unwrap();
    let info = client.consumer_info("jobs", "slow").unwrap();
    assert_eq!(
        info.partitions.iter().map(|p| p.redelivered).sum::<u64>(),
        2
    );
}

#[test]
fn a_poison_message_goes_to_the_dead_letter_stream_with_an_advisory() {
    let broker = Broker::start(&[]);
    let client = broker.client_on_shard(1);
    stream(&client, 2);
    let advisories = client.subscribe("$SYS.DLQ.jobs.>").unwrap();
    client.flush().unwrap();
    let c = consumer(&client, "picky", DeliverPolicy::All, 100);
    client.flush().unwrap();
    let ack = client.publish_durable("jobs.poison", "bad input").unwrap();
    for attempt in 1..=3 {
        let m = c.next_timeout(PATIENCE).expect("a delivery");
        assert_eq!(m.stream_meta().unwrap().delivered, attempt);
        c.nak(&m, Duration::ZERO).unwrap();
    }
    let advisory = receive(&advisories, 1).remove(0);
    assert_eq!(advisory.subject(), "$SYS.DLQ.jobs.picky");
    let body: serde_json::Value = serde_json::from_slice(advisory.payload()).unwrap();
    assert_eq!(body["offset"], ack.offset);
    assert_eq!(body["partition"], ack.partition);
    assert_eq!(body["deliveries"], 3);
    assert!(
        c.next_timeout(Duration::from_millis(500)).is_none(),
        "not delivered again"
    );
    let dlq = client.stream_info("DLQ.jobs.picky").unwrap();
    assert_eq!(dlq.messages(), 1);
    let copy = client.stream_get("DLQ.jobs.picky", 0, 0).unwrap();
    assert_eq!(copy.payload, b"bad input");
    let info = client.consumer_info("jobs", "picky").unwrap();
    assert_eq!(
        info.partitions.iter().map(|p| p.dead_lettered).sum::<u64>(),
        1
    );
    assert_eq!(
        info.ack_pending(),
        0,
        "the original is no longer pending: {info:?}"
    );
    assert_eq!(info.pending(), 0, "{info:?}");
    let floor = info
        .partitions
        .iter()
        .find(|p| p.partition == ack.partition)
        .unwrap()
        .ack_floor;
    assert_eq!(
        floor,
        ack.offset + 1,
        "the original is done once its copy is stored"
    );
}

#[test]
fn replay_starts_from_an_offset_or_a_time() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    stream(&client, 1);
    publish(&client, 10);
    std::thread::sleep(Duration::from_millis(50));
    let middle = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    std::thread::sleep(Duration::from_millis(50));
    let later: Vec<String> = (0..5).map(|i| format!("late-{i}")).collect();
    for p in &later {
        client.publish_durable("jobs.late", p).unwrap();
    }
    let from_offset = consumer(&client, "from7", DeliverPolicy::Offset(7), 30_000);
    let got: Vec<u64> = drain(&from_offset, true)
        .iter()
        .map(|m| m.stream_meta().unwrap().offset)
        .collect();
    assert_eq!(got, (7..15).collect::<Vec<_>>());
    let from_time = consumer(&client, "recent", DeliverPolicy::Time(middle), 30_000);
    let got: Vec<String> = drain(&from_time, true)
        .iter()
        .map(|m| String::from_utf8(m.payload().to_vec()).unwrap())
        .collect();
    assert_eq!(got, later);
    let new_only = consumer(&client, "new", DeliverPolicy::New, 30_000);
    client.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    client.publish_durable("jobs.x", "fresh").unwrap();
    let got = drain(&new_only, true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload(), b"fresh");
}

#[test]
fn two_clients_on_one_consumer_split_the_messages() {
    let broker = Broker::start(&[]);
    let publisher = broker.client();
    stream(&publisher, 4);
    let a_client = broker.client_on_shard(0);
    let b_client = broker.client_on_shard(1);
    let a = consumer(&a_client, "shared", DeliverPolicy::All, 30_000);
    let b = consumer(&b_client, "shared", DeliverPolicy::All, 30_000);
    a_client.flush().unwrap();
    b_client.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    publish(&publisher, 400);
    let from_a = std::thread::spawn(move || drain(&a, true).len());
    let from_b = drain(&b, true).len();
    let from_a = from_a.join().unwrap();
    assert_eq!(from_a + from_b, 400, "a {from_a}, b {from_b}");
    assert!(from_a > 0 && from_b > 0, "a {from_a}, b {from_b}");
}

#[test]
fn consumer_state_and_stream_data_survive_a_clean_restart() {
    let data = common::DataDir::new();
    let acked: Vec<u64>;
    {
        let mut broker = Broker::start_in(&data.path, &[]);
        let client = broker.client();
        stream(&client, 1);
        publish(&client, 20);
        let c = consumer(&client, "durable", DeliverPolicy::All, 30_000);
        // All 20 are delivered at once (max_ack_pending is 1000); ack the first 8.
        let got: Vec<Message> = (0..12).map(|_| c.next_timeout(PATIENCE).unwrap()).collect();
        for m in &got[..8] {
            c.ack(m).unwrap();
        }
        acked = got[..8]
            .iter()
            .map(|m| m.stream_meta().unwrap().offset)
            .collect();
        client.flush().unwrap();
        let info = client.stream_info("jobs").unwrap();
        assert_eq!(info.consumers.len(), 1);
        assert_eq!(info.consumers[0].name, "durable");
        assert_eq!(info.consumers[0].partitions[0].ack_floor, 8);
        let status = broker
            .terminate(Duration::from_secs(10))
            .expect("a clean stop");
        assert!(status.success());
    }
    let broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    let info = client.consumer_info("jobs", "durable").unwrap();
    assert_eq!(info.partitions[0].ack_floor, 8, "{info:?}");
    assert_eq!(info.ack_pending(), 12);
    let c = consumer(&client, "durable", DeliverPolicy::All, 30_000);
    let got = drain(&c, true);
    let offsets: Vec<u64> = got
        .iter()
        .map(|m| m.stream_meta().unwrap().offset)
        .collect();
    assert_eq!(
        offsets,
        (8..20).collect::<Vec<_>>(),
        "nothing acked comes again"
    );
    assert!(offsets.iter().all(|o| !acked.contains(o)));
    assert!(
        got.iter().all(|m| m.stream_meta().unwrap().delivered == 2),
        "delivery counts survive"
    );
}

#[test]
fn max_ack_pending_pauses_delivery_and_in_progress_holds_a_message() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    stream(&client, 1);
    publish(&client, 20);
    let c = client
        .consume(ConsumerConfig {
            stream: "jobs".into(),
            name: "paced".into(),
            deliver: DeliverPolicy::All,
            ack_wait_ms: 1000,
            max_deliver: 5,
            max_ack_pending: 5,
            sid: 0,
            jetstream: None,
        })
        .unwrap();
    let first: Vec<Message> = (0..5).map(|_| c.next_timeout(PATIENCE).unwrap()).collect();
    assert!(
        c.next_timeout(Duration::from_millis(250)).is_none(),
        "a sixth message while five wait for their ack"
    );
    // Keep the first one in progress past its ack wait; ack the other four.
    for m in &first[1..] {
        c.ack(m).unwrap();
    }
    let mut later = Vec::new();
    // 4 x 300 ms is past the 1 s ack wait: only the progress reports keep it from coming back.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        c.in_progress(&first[0]).unwrap();
        while let Some(m) = c.next_timeout(Duration::from_millis(1)) {
            c.ack(&m).unwrap();
            later.push(m);
        }
    }
    c.ack(&first[0]).unwrap();
    later.extend(drain(&c, true));
    let offsets: Vec<u64> = later
        .iter()
        .map(|m| m.stream_meta().unwrap().offset)
        .collect();
    assert_eq!(
        offsets,
        (5..20).collect::<Vec<_>>(),
        "offset 0 was never redelivered"
    );
}

#[test]
fn a_dead_letter_that_cannot_be_stored_stays_pending_until_its_copy_is_durable() {
    let broker = Broker::start(&[]);
    let client = broker.client_on_shard(0);
    stream(&client, 1);
    let c = consumer(&client, "stuck", DeliverPolicy::All, 100);
    client.flush().unwrap();
    // Wait until attaching made the dead-letter stream, then take it away.
    let deadline = std::time::Instant::now() + PATIENCE;
    while client.stream_info("DLQ.jobs.stuck").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no dead-letter stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    client.stream_remove("DLQ.jobs.stuck").unwrap();
    client.publish_durable("jobs.poison", "bad input").unwrap();
    for _ in 1..=3 {
        let m = c.next_timeout(PATIENCE).expect("a delivery");
        c.nak(&m, Duration::ZERO).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let info = client.consumer_info("jobs", "stuck").unwrap();
    assert_eq!(
        info.ack_pending(),
        1,
        "kept while its copy has nowhere to go: {info:?}"
    );
    assert_eq!(info.partitions[0].dead_lettered, 0, "{info:?}");
    assert_eq!(info.partitions[0].ack_floor, 0, "{info:?}");
    assert!(
        c.next_timeout(Duration::from_millis(200)).is_none(),
        "not delivered a fourth time"
    );
    client
        .stream_add(&StreamConfig {
            name: "DLQ.jobs.stuck".into(),
            subjects: vec!["DLQ.jobs.stuck".into()],
            partitions: 1,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let info = client.consumer_info("jobs", "stuck").unwrap();
        if info.partitions[0].dead_lettered == 1 {
            assert_eq!(info.ack_pending(), 0, "{info:?}");
            assert_eq!(info.partitions[0].ack_floor, 1, "{info:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never retried: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let copy = client.stream_get("DLQ.jobs.stuck", 0, 0).unwrap();
    assert_eq!(copy.payload, b"bad input");
}
