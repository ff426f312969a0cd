//! Core pub/sub on the real binary with two shards: across shards, wildcards, unsubscribe after N,
//! and invalid subjects.

mod common;

use std::time::Duration;

use common::{receive, Broker};
use sluice_protocol::ErrorCode;

#[test]
fn a_subscriber_and_a_publisher_on_different_shards_exchange_messages() {
    let broker = Broker::start(&[]);
    let subscriber = broker.client_on_shard(0);
    let publisher = broker.client_on_shard(1);
    assert_eq!(subscriber.info().shards, 2);
    let sub = subscriber.subscribe("user.42.audio").unwrap();
    subscriber.flush().unwrap();
    for i in 0..100 {
        publisher
            .publish("user.42.audio", format!("chunk-{i}"))
            .unwrap();
    }
    publisher.flush().unwrap();
    let got = receive(&sub, 100);
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.subject(), "user.42.audio");
        assert_eq!(
            message.payload(),
            format!("chunk-{i}").as_bytes(),
            "in order"
        );
    }
    assert!(sub.next_timeout(Duration::from_millis(200)).is_none());
}

#[test]
fn wildcards_star_and_full_match_as_documented() {
    let broker = Broker::start(&[]);
    let a = broker.client_on_shard(0);
    let b = broker.client_on_shard(1);
    let star = a.subscribe("user.*.audio").unwrap();
    let full = b.subscribe("user.>").unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    let publisher = broker.client_on_shard(1);
    for subject in [
        "user.1.audio",
        "user.2.text",
        "user.3.audio.raw",
        "user",
        "other.1",
    ] {
        publisher.publish(subject, subject).unwrap();
    }
    publisher.flush().unwrap();
    let star_got: Vec<String> = receive(&star, 1)
        .iter()
        .map(|m| m.subject().to_string())
        .collect();
    assert_eq!(star_got, vec!["user.1.audio"]);
    let full_got: Vec<String> = receive(&full, 3)
        .iter()
        .map(|m| m.subject().to_string())
        .collect();
    assert_eq!(
        full_got,
        vec!["user.1.audio", "user.2.text", "user.3.audio.raw"]
    );
    assert!(star.next_timeout(Duration::from_millis(200)).is_none());
    assert!(full.next_timeout(Duration::from_millis(200)).is_none());
}

#[test]
fn unsubscribe_after_n_delivers_exactly_n_more() {
    let broker = Broker::start(&[]);
    let subscriber = broker.client_on_shard(0);
    let publisher = broker.client_on_shard(1);
    let sub = subscriber.subscribe("jobs.done").unwrap();
    sub.unsubscribe_after(5).unwrap();
    subscriber.flush().unwrap();
    for i in 0..20 {
        publisher.publish("jobs.done", format!("{i}")).unwrap();
    }
    publisher.flush().unwrap();
    let got = receive(&sub, 5);
    assert_eq!(got.last().unwrap().payload(), b"4");
    assert!(sub.next_timeout(Duration::from_millis(300)).is_none());
    // The interest is gone on both shards: a new subscriber sees only new messages.
    let later = subscriber.subscribe("jobs.done").unwrap();
    subscriber.flush().unwrap();
    publisher.publish("jobs.done", "after").unwrap();
    publisher.flush().unwrap();
    assert_eq!(receive(&later, 1)[0].payload(), b"after");
}

#[test]
fn unsubscribe_stops_delivery_on_every_shard() {
    let broker = Broker::start(&[]);
    let subscriber = broker.client_on_shard(0);
    let publisher = broker.client_on_shard(1);
    let sub = subscriber.subscribe("x").unwrap();
    subscriber.flush().unwrap();
    publisher.publish("x", "one").unwrap();
    publisher.flush().unwrap();
    assert_eq!(receive(&sub, 1)[0].payload(), b"one");
    sub.unsubscribe().unwrap();
    subscriber.flush().unwrap();
    publisher.publish("x", "two").unwrap();
    publisher.flush().unwrap();
    assert!(sub.next_timeout(Duration::from_millis(300)).is_none());
}

#[test]
fn an_invalid_subject_gets_an_error_and_the_connection_stays_open() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    let bad = client.subscribe("a..b").unwrap();
    client.publish("a.*", "wildcard publish").unwrap();
    client.flush().unwrap();
    let errors = client.take_errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors
        .iter()
        .all(|(code, _)| *code == ErrorCode::InvalidSubject));
    drop(bad);
    let good = client.subscribe("a.b").unwrap();
    client.flush().unwrap();
    client.publish("a.b", "fine").unwrap();
    client.flush().unwrap();
    assert_eq!(receive(&good, 1)[0].payload(), b"fine");
    assert!(!client.is_closed());
}

#[test]
fn headers_and_reply_subjects_arrive_as_sent() {
    let broker = Broker::start(&[]);
    let subscriber = broker.client_on_shard(0);
    let publisher = broker.client_on_shard(1);
    let sub = subscriber.subscribe("h").unwrap();
    subscriber.flush().unwrap();
    let headers = b"NATS/1.0\r\nTrace: 7\r\n\r\n";
    publisher
        .publish_full("h", Some("answers.here"), headers, b"body")
        .unwrap();
    publisher.flush().unwrap();
    let message = &receive(&sub, 1)[0];
    assert_eq!(message.headers(), headers);
    assert_eq!(message.reply(), Some("answers.here"));
    assert_eq!(message.payload(), b"body");
}
