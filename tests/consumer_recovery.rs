//! A consumer whose saved state cannot be read redelivers from the first offset rather than skip
//! what it had not acked; the state files it writes are whole.

mod common;

use std::time::Duration;

use common::{Broker, DataDir, PATIENCE};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::{Client, Consumer};

fn config(name: &str, deliver: DeliverPolicy) -> ConsumerConfig {
    ConsumerConfig {
        stream: "jobs".into(),
        name: name.into(),
        deliver,
        ack_wait_ms: 30_000,
        max_deliver: 5,
        max_ack_pending: 1000,
        sid: 0,
        jetstream: None,
    }
}

fn offsets(consumer: &Consumer, ack: bool) -> Vec<u64> {
    let mut got = Vec::new();
    while let Some(m) = consumer.next_timeout(Duration::from_millis(700)) {
        if ack {
            consumer.ack(&m).unwrap();
        }
        got.push(m.stream_meta().unwrap().offset);
    }
    got
}

fn state_file(data: &DataDir, name: &str) -> std::path::PathBuf {
    data.path
        .join("streams/jobs/0000/consumers")
        .join(format!("{name}.json"))
}

/// Runs a broker in which consumers `empty` and `junk` took 10 messages and acked the first 5.
fn consumed_half(data: &DataDir) {
    let mut broker = Broker::start_in(&data.path, &[]);
    let client: Client = broker.client();
    client
        .stream_add(&StreamConfig {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            partitions: 1,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    for i in 0..10 {
        client.publish_durable("jobs.x", format!("j{i}")).unwrap();
    }
    for name in ["empty", "junk"] {
        let c = client.consume(config(name, DeliverPolicy::All)).unwrap();
        let got: Vec<_> = (0..10).map(|_| c.next_timeout(PATIENCE).unwrap()).collect();
        for m in &got[..5] {
            c.ack(m).unwrap();
        }
    }
    client.flush().unwrap();
    let info = client.consumer_info("jobs", "junk").unwrap();
    assert_eq!(info.partitions[0].ack_floor, 5);
    let status = broker
        .terminate(Duration::from_secs(10))
        .expect("a clean stop");
    assert!(status.success());
}

#[test]
fn an_unreadable_state_file_makes_the_consumer_redeliver_from_the_first_offset() {
    let data = DataDir::new();
    consumed_half(&data);
    let saved = std::fs::read_to_string(state_file(&data, "junk")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&saved).expect("a whole JSON file");
    assert_eq!(parsed["floor"], 5, "{saved}");
    std::fs::write(state_file(&data, "empty"), b"").unwrap();
    std::fs::write(
        state_file(&data, "junk"),
        &saved.as_bytes()[..saved.len() / 2],
    )
    .unwrap();

    let broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    // Even a consumer that asks for new messages only gets everything again, not nothing.
    for name in ["empty", "junk"] {
        let c = client.consume(config(name, DeliverPolicy::New)).unwrap();
        assert_eq!(offsets(&c, true), (0..10).collect::<Vec<_>>(), "{name}");
    }
    assert!(broker.logged("unreadable consumer state"));
    client.flush().unwrap();
    let info = client.consumer_info("jobs", "junk").unwrap();
    assert_eq!(info.partitions[0].ack_floor, 10, "{info:?}");
}

#[test]
fn the_ack_floor_moves_up_past_what_retention_removed() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    client
        .stream_add(&StreamConfig {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            partitions: 1,
            max_age_secs: Some(1),
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    for i in 0..10 {
        client
            .publish_durable("jobs.x", format!("old-{i}"))
            .unwrap();
    }
    let c = client
        .attach_consumer(config("laggard", DeliverPolicy::All))
        .unwrap();
    c.pull(3).unwrap();
    for _ in 0..3 {
        c.next_timeout(PATIENCE).expect("a delivery"); // Held, never acked.
    }
    // Keep appending so that segments roll and the old ones age out.
    let deadline = std::time::Instant::now() + PATIENCE;
    let info = loop {
        client.publish_durable("jobs.x", "new").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let stream = client.stream_info("jobs").unwrap();
        let first = stream.partitions[0].first_offset;
        let info = client.consumer_info("jobs", "laggard").unwrap();
        if first > 10 && info.partitions[0].ack_floor >= first {
            break info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "first offset {first}, {info:?}"
        );
    };
    assert_eq!(
        info.ack_pending(),
        0,
        "held messages removed by retention: {info:?}"
    );
}
