//! Tenants kept apart: a connection may ack or pull only from consumers it attached to, a user's
//! stream list shows only the streams it may read, and `$SYS.>` is the server's.

mod common;

use std::time::Duration;

use common::{Broker, DataDir};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::{Client, ClientOptions};
use sluice_protocol::op::{AckKind, ConsumerAck, Op};
use sluice_protocol::ErrorCode;

/// `ops` may do anything; `alice` may read and write only under `alice.>`.
fn broker(dir: &DataDir) -> Broker {
    let ops = bcrypt::hash("ops-token", 4).unwrap();
    let alice = bcrypt::hash("alice-token", 4).unwrap();
    let config = format!(
        r#"
[[users]]
name = "ops"
token = "{ops}"

[[users]]
name = "alice"
token = "{alice}"
publish = {{ allow = ["alice.>"] }}
subscribe = {{ allow = ["alice.>", "_INBOX.>", "$SYS.>"] }}
"#
    );
    let path = dir.path.join("users.toml");
    std::fs::write(&path, config).unwrap();
    Broker::start(&["--config", path.to_str().unwrap()])
}

fn client(broker: &Broker, token: &str) -> Client {
    Client::connect_with(
        &broker.addr,
        ClientOptions {
            token: Some(token.into()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn stream(name: &str, subject: &str) -> StreamConfig {
    StreamConfig {
        name: name.into(),
        subjects: vec![subject.into()],
        partitions: 1,
        max_age_secs: None,
        max_bytes: None,
        created_ns: 0,
        jetstream: None,
        replicas: 1,
        placement: Vec::new(),
    }
}

#[test]
fn only_a_member_of_a_consumer_can_ack_its_messages() {
    let dir = DataDir::new();
    let broker = broker(&dir);
    let ops = client(&broker, "ops-token");
    ops.stream_add(&stream("billing", "billing.>")).unwrap();
    ops.publish_durable("billing.1", "invoice").unwrap();
    let worker = ops
        .consume(ConsumerConfig {
            stream: "billing".into(),
            name: "payer".into(),
            deliver: DeliverPolicy::All,
            ack_wait_ms: 60_000,
            max_deliver: 5,
            max_ack_pending: 100,
            sid: 0,
            jetstream: None,
        })
        .unwrap();
    let message = worker.next_timeout(common::PATIENCE).expect("delivered");
    let meta = message.stream_meta().unwrap();

    // alice never attached to it: her ack of the same message is refused and changes nothing.
    let mut alice = common::RawConn::connect_with_token(&broker.addr, "alice-token");
    alice.send(&Op::ConsumerAck(ConsumerAck {
        stream: "billing",
        consumer: "payer",
        partition: meta.partition,
        offset: meta.offset,
        kind: AckKind::Term as u8,
        delay_ms: 0,
    }));
    let refusal = alice.read_error().expect("an error for the ack");
    assert_eq!(
        refusal.0,
        ErrorCode::PermissionDenied.as_u16(),
        "{refusal:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    let info = ops.consumer_info("billing", "payer").unwrap();
    assert_eq!(info.ack_pending(), 1, "the message is still the member's");

    // The member itself can.
    worker.ack(&message).unwrap();
    ops.flush().unwrap();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while ops.consumer_info("billing", "payer").unwrap().ack_pending() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the member's ack counts"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_users_stream_list_shows_only_what_it_may_read() {
    let dir = DataDir::new();
    let broker = broker(&dir);
    let ops = client(&broker, "ops-token");
    ops.stream_add(&stream("alice-inbox", "alice.inbox.>"))
        .unwrap();
    ops.stream_add(&stream("payroll", "payroll.>")).unwrap();
    let names = |c: &Client| -> Vec<String> {
        c.stream_list()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names(&client(&broker, "alice-token")), ["alice-inbox"]);
    let mut all = names(&ops);
    all.sort();
    assert_eq!(all, ["alice-inbox", "payroll"]);
}

#[test]
fn only_the_server_publishes_under_sys() {
    let dir = DataDir::new();
    let broker = broker(&dir);
    let ops = client(&broker, "ops-token");
    let watcher = client(&broker, "alice-token");
    let advisories = watcher.subscribe("$SYS.>").unwrap();
    watcher.flush().unwrap();
    ops.publish("$SYS.DLQ.billing.payer", "forged").unwrap();
    ops.flush().unwrap();
    let errors = ops.take_errors();
    assert!(
        errors
            .iter()
            .any(|(code, _)| *code == ErrorCode::PermissionDenied),
        "{errors:?}"
    );
    assert!(
        advisories
            .next_timeout(Duration::from_millis(300))
            .is_none(),
        "a forged advisory was delivered"
    );
}
