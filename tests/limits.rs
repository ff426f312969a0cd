//! Every per-client resource has a bound, and reaching it gets the client a clear error while the
//! broker goes on serving: subscriptions per connection, streams, consumers per stream, partitions
//! per stream, unacked messages per consumer, pulls with an expiry waiting per member. Each bound
//! is a setting; the tests set small ones.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Broker;
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::ClientError;
use sluice_protocol::ErrorCode;

fn stream(name: &str) -> StreamConfig {
    StreamConfig::new(name, vec![format!("{name}.>")])
}

fn consumer(stream: &str, name: &str, max_ack_pending: u32) -> ConsumerConfig {
    ConsumerConfig {
        stream: stream.into(),
        name: name.into(),
        deliver: DeliverPolicy::All,
        ack_wait_ms: 30_000,
        max_deliver: 5,
        max_ack_pending,
        sid: 0,
        jetstream: None,
    }
}

fn api_code<T>(result: Result<T, ClientError>) -> ErrorCode {
    api_error(result).0
}

fn api_error<T>(result: Result<T, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Api { code, message }) => (code, message),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted past its bound"),
    }
}

/// Another client still gets what it subscribed to: the broker goes on serving.
fn others_are_served(broker: &Broker) {
    let other = broker.client();
    let sub = other.subscribe("others.x").unwrap();
    other.flush().unwrap();
    other.publish("others.x", "served").unwrap();
    assert_eq!(
        sub.next_timeout(common::PATIENCE).unwrap().payload(),
        b"served"
    );
}

#[test]
fn subscriptions_per_connection_are_bounded_on_both_ports() {
    let broker = Broker::start(&["--max-subscriptions", "3"]);
    let client = broker.client();
    let subs: Vec<_> = (0..3)
        .map(|i| client.subscribe(&format!("s.{i}")).unwrap())
        .collect();
    client.flush().unwrap();
    assert!(client.take_errors().is_empty());
    let _fourth = client.subscribe("s.3").unwrap();
    client.flush().unwrap();
    let errors = client.take_errors();
    assert!(
        errors
            .iter()
            .any(|(code, m)| *code == ErrorCode::LimitReached && m.contains("max_subscriptions")),
        "{errors:?}"
    );
    // The connection and its three subscriptions go on.
    client.publish("s.0", "still here").unwrap();
    assert_eq!(
        subs[0].next_timeout(common::PATIENCE).unwrap().payload(),
        b"still here"
    );

    let mut nats = TcpStream::connect(&broker.nats_addr).unwrap();
    nats.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut lines = BufReader::new(nats.try_clone().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("INFO"));
    nats.write_all(
        b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nSUB b 2\r\nSUB c 3\r\nSUB d 4\r\nPING\r\n",
    )
    .unwrap();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "-ERR 'Maximum Subscriptions Exceeded'"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "PONG");
}

#[test]
fn streams_consumers_and_unacked_messages_are_bounded() {
    let broker = Broker::start(&["--max-streams", "3", "--max-consumers", "1"]);
    let client = broker.client();
    client.stream_add(&stream("first")).unwrap();
    client.stream_add(&stream("second")).unwrap();
    // Attaching makes the consumer's dead-letter stream: the third stream.
    let worker = client.consume(consumer("first", "worker", 100)).unwrap();
    assert_eq!(
        api_code(client.stream_add(&stream("fourth"))),
        ErrorCode::LimitReached
    );
    // Adding an existing stream again is not a new one.
    client.stream_add(&stream("first")).unwrap();

    assert_eq!(
        api_code(client.consume(consumer("first", "another", 100))),
        ErrorCode::LimitReached
    );
    assert_eq!(
        api_code(client.consume(consumer("first", "greedy", u32::MAX))),
        ErrorCode::LimitReached
    );
    // The consumer within its bounds keeps working.
    client.publish_durable("first.1", "job").unwrap();
    let message = worker.next_timeout(common::PATIENCE).expect("delivered");
    worker.ack(&message).unwrap();
}

#[test]
fn partitions_per_stream_and_unacked_messages_per_consumer_are_settings() {
    let broker = Broker::start(&["--max-partitions", "4", "--max-ack-pending", "50"]);
    let client = broker.client();
    let mut wide = stream("wide");
    wide.partitions = 5;
    let (code, message) = api_error(client.stream_add(&wide));
    assert_eq!(code, ErrorCode::LimitReached);
    assert!(message.contains("max_partitions"), "{message}");
    wide.partitions = 4;
    client.stream_add(&wide).unwrap();

    let (code, message) = api_error(client.consume(consumer("wide", "greedy", 51)));
    assert_eq!(code, ErrorCode::LimitReached);
    assert!(message.contains("max_ack_pending"), "{message}");
    // The same client goes on, within the bounds.
    let worker = client.consume(consumer("wide", "worker", 50)).unwrap();
    client.publish_durable("wide.1", "job").unwrap();
    let message = worker.next_timeout(common::PATIENCE).expect("delivered");
    worker.ack(&message).unwrap();
    others_are_served(&broker);
}

#[test]
fn pulls_with_an_expiry_waiting_are_bounded() {
    let broker = Broker::start(&["--max-waiting-pulls", "4"]);
    let client = broker.client();
    client.stream_add(&stream("work")).unwrap();
    let member = client
        .attach_consumer(consumer("work", "puller", 100))
        .unwrap();
    for _ in 0..4 {
        member.pull_expiring(1, Duration::from_secs(60)).unwrap();
    }
    client.flush().unwrap();
    assert!(client.take_errors().is_empty(), "4 pulls may wait");
    member.pull_expiring(1, Duration::from_secs(60)).unwrap();
    client.flush().unwrap();
    let errors = client.take_errors();
    assert!(
        errors
            .iter()
            .any(|(code, m)| *code == ErrorCode::LimitReached && m.contains("max_waiting_pulls")),
        "{errors:?}"
    );
    // The connection goes on: the credit of the pulls that wait brings a message.
    client.publish_durable("work.1", "job").unwrap();
    let message = member.next_timeout(common::PATIENCE).expect("delivered");
    member.ack(&message).unwrap();
    others_are_served(&broker);
}
