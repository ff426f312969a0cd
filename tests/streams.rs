//! Persistent streams on the real binary with two shards: durable publish with acks into a
//! 4-partition stream, reading every message back, the stream API's refusals, and a clean restart.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{receive, Broker, DataDir};
use sluice::api::{partition_for, StreamConfig};
use sluice::client::ClientError;
use sluice_protocol::ErrorCode;

fn orders(partitions: u32) -> StreamConfig {
    StreamConfig {
        name: "orders".into(),
        subjects: vec!["orders.>".into()],
        partitions,
        max_age_secs: None,
        max_bytes: None,
        created_ns: 0,
        jetstream: None,
        replicas: 1,
        placement: Vec::new(),
    }
}

const MESSAGES: u64 = 2000;

/// Publishes with acks from a client on each shard; returns (partition, offset) -> payload.
fn publish_acked(broker: &Broker) -> HashMap<(u32, u64), String> {
    let mut stored = HashMap::new();
    for shard in [0, 1] {
        let client = broker.client_on_shard(shard);
        let waiters: Vec<_> = (0..MESSAGES)
            .map(|i| {
                let subject = format!("orders.customer{}", i % 37);
                let payload = format!("shard{shard}-order{i}");
                let waiter = client.publish_with_ack(&subject, &payload).unwrap();
                (subject, payload, waiter)
            })
            .collect();
        for (subject, payload, waiter) in waiters {
            let ack = waiter.wait().unwrap();
            assert_eq!(ack.stream, "orders");
            assert_eq!(ack.partition, partition_for(&subject, 4), "{subject}");
            assert!(stored
                .insert((ack.partition, ack.offset), payload)
                .is_none());
        }
    }
    stored
}

#[test]
fn acked_publishes_into_four_partitions_read_back_exactly() {
    let broker = Broker::start(&[]);
    let admin = broker.client_on_shard(1);
    let info = admin.stream_add(&orders(4)).unwrap();
    assert_eq!(info.partitions.len(), 4);
    let stored = publish_acked(&broker);
    assert_eq!(stored.len() as u64, 2 * MESSAGES);

    let info = admin.stream_info("orders").unwrap();
    assert_eq!(info.messages(), 2 * MESSAGES);
    for p in &info.partitions {
        let count = stored
            .keys()
            .filter(|(part, _)| *part == p.partition)
            .count() as u64;
        assert_eq!(p.messages, count, "partition {}", p.partition);
        assert_eq!(p.last_offset, count.checked_sub(1));
    }
    // Offsets are dense per partition and each holds exactly what was acked there.
    for (&(partition, offset), payload) in stored.iter().filter(|(k, _)| k.1 % 97 == 0) {
        let message = admin.stream_get("orders", partition, offset).unwrap();
        assert_eq!(message.payload, payload.as_bytes());
        assert_eq!(partition_for(&message.subject, 4), partition);
    }
}

#[test]
fn core_subscribers_still_receive_captured_messages() {
    let broker = Broker::start(&[]);
    let client = broker.client_on_shard(0);
    client.stream_add(&orders(2)).unwrap();
    let sub = client.subscribe("orders.*").unwrap();
    client.flush().unwrap();
    let publisher = broker.client_on_shard(1);
    let ack = publisher.publish_durable("orders.x", "hello").unwrap();
    assert_eq!(receive(&sub, 1)[0].payload(), b"hello");
    assert_eq!(
        client
            .stream_get("orders", ack.partition, ack.offset)
            .unwrap()
            .payload,
        b"hello"
    );
}

#[test]
fn the_api_refuses_what_it_cannot_do_with_clear_errors() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    client.stream_add(&orders(4)).unwrap();
    let overlap = StreamConfig {
        name: "eu".into(),
        subjects: vec!["orders.eu.*".into()],
        ..orders(1)
    };
    let refused = client.stream_add(&overlap).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Api { code: ErrorCode::BadRequest, message } if message.contains("overlap")),
        "{refused}"
    );
    // A retention age whose nanoseconds would wrap is refused, and nothing is created.
    let forever = StreamConfig {
        name: "forever".into(),
        subjects: vec!["forever.>".into()],
        max_age_secs: Some(u64::MAX),
        ..orders(1)
    };
    let refused = client.stream_add(&forever).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Api { code: ErrorCode::BadRequest, message } if message.contains("max_age_secs")),
        "{refused}"
    );
    assert!(client.stream_info("forever").is_err());
    let missing = client.stream_info("nope").unwrap_err();
    assert!(
        matches!(
            missing,
            ClientError::Api {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{missing}"
    );
    let unacked = client.publish_durable("nobody.listens", "x").unwrap_err();
    assert!(
        matches!(
            unacked,
            ClientError::Api {
                code: ErrorCode::NoStream,
                ..
            }
        ),
        "{unacked}"
    );
    // The connection survives all of it.
    assert_eq!(
        client.publish_durable("orders.ok", "fine").unwrap().stream,
        "orders"
    );
    client.stream_remove("orders").unwrap();
    assert!(client.stream_list().unwrap().is_empty());
    assert!(client.publish_durable("orders.ok", "x").is_err());
}

#[test]
fn streams_and_their_data_survive_a_clean_restart() {
    let data = DataDir::new();
    let stored = {
        let mut broker = Broker::start_in(&data.path, &[]);
        broker.client().stream_add(&orders(4)).unwrap();
        let stored = publish_acked(&broker);
        let status = broker
            .terminate(Duration::from_secs(10))
            .expect("a clean stop");
        assert!(status.success());
        stored
    };
    let broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    let names: Vec<String> = client
        .stream_list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["orders".to_string()]);
    assert_eq!(
        client.stream_info("orders").unwrap().messages(),
        2 * MESSAGES
    );
    for (&(partition, offset), payload) in stored.iter().filter(|(k, _)| k.1 % 89 == 0) {
        let message = client.stream_get("orders", partition, offset).unwrap();
        assert_eq!(message.payload, payload.as_bytes());
    }
    // New messages continue the offsets.
    let ack = client.publish_durable("orders.customer0", "after").unwrap();
    let before = stored.keys().filter(|(p, _)| *p == ack.partition).count() as u64;
    assert_eq!(ack.offset, before);
}

#[test]
fn retention_deletes_old_messages_in_the_background() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    client
        .stream_add(&StreamConfig {
            name: "events".into(),
            subjects: vec!["events".into()],
            partitions: 1,
            max_age_secs: Some(1),
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    for i in 0..50 {
        client
            .publish_durable("events", format!("old {i}"))
            .unwrap();
    }
    // Past the age limit: the next publish seals the old segment, and retention then deletes it.
    std::thread::sleep(Duration::from_millis(1500));
    let fresh = client.publish_durable("events", "fresh").unwrap();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let info = client.stream_info("events").unwrap();
        let p = &info.partitions[0];
        if p.first_offset == fresh.offset {
            assert_eq!(p.messages, 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never ran: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        client
            .stream_get("events", 0, fresh.offset)
            .unwrap()
            .payload,
        b"fresh"
    );
}

/// An acked publish refused for its subject gets its error in its own ack slot, so the acks of the
/// publishes after it stay with their publishes.
#[test]
fn a_refused_acked_publish_keeps_later_acks_aligned() {
    use sluice_protocol::op::{Op, Publish};
    use sluice_protocol::ArchivedOp;
    let broker = Broker::start(&[]);
    broker.client().stream_add(&orders(1)).unwrap();
    let mut raw = broker.raw_on_shard(0);
    for subject in ["orders.a", "orders..bad", "orders.b"] {
        raw.send(&Op::Pub(Publish {
            subject,
            reply: None,
            headers: b"",
            payload: b"x",
            ack: true,
        }));
    }
    let mut acks = Vec::new();
    while acks.len() < 3 {
        let frame = raw.read_frame().expect("an ack for every acked publish");
        if let ArchivedOp::PubAck(ack) = frame.op() {
            acks.push((ack.code.to_native(), ack.offset.to_native()));
        }
    }
    assert_eq!(acks[0], (0, 0), "the first publish is stored at offset 0");
    assert_eq!(acks[1].0, ErrorCode::InvalidSubject.as_u16(), "{acks:?}");
    assert_eq!(acks[2], (0, 1), "the third publish is stored at offset 1");
}

#[test]
fn a_stream_removed_and_added_again_at_once_starts_empty_and_keeps_what_it_gets() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    for round in 0..20 {
        let config = sluice::api::StreamConfig::new("again", vec!["again.>".into()]);
        client.stream_add(&config).expect("added");
        for i in 0..5 {
            client
                .publish_durable("again.x", format!("old-{round}-{i}"))
                .expect("acked");
        }
        client.stream_remove("again").expect("removed");
        client.stream_add(&config).expect("added again");
        client
            .publish_durable("again.x", format!("new-{round}"))
            .expect("acked");
        // Give a removal still under way the time to run.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let info = client.stream_info("again").expect("info");
        assert_eq!(info.partitions[0].messages, 1, "round {round}: {info:?}");
        let message = client
            .stream_get("again", 0, info.partitions[0].first_offset)
            .expect("the message");
        assert_eq!(
            message.payload,
            format!("new-{round}").into_bytes(),
            "round {round}"
        );
        client.stream_remove("again").expect("removed");
    }
}
