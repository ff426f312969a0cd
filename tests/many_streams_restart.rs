//! Thousands of streams survive a SIGKILL: after the restart every acknowledged message reads back,
//! the partitions (opened on first use) take publishes at the offsets that follow, new consumers
//! read them from the start, and a consumer saved before the crash resumes where it was.
//!
//! The broker runs under a low open-file limit, so that it keeps far fewer logs open than there
//! are streams: partitions are closed when idle and opened again on their next use, before the
//! crash and after it.
//!
//! `SLUICE_RESTART_STREAMS=N` sets the number of streams (2,000 by default, so that a debug build
//! stays quick).

mod common;

use std::time::Duration;

use common::{Broker, DataDir};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::Client;

/// The open-file limit the broker inherits: its shards keep half of it for logs of two files each,
/// 128 open logs per shard, far fewer than the streams.
const OPEN_FILES_MAX: u64 = 1024;

/// Lowers this process's open-file limit, soft and hard, for the broker it starts to inherit.
fn lower_open_files_limit() {
    let limit = libc::rlimit {
        rlim_cur: OPEN_FILES_MAX,
        rlim_max: OPEN_FILES_MAX,
    };
    // SAFETY: setrlimit(2) only reads the struct it is given.
    let lowered = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(lowered, 0, "lower the open-file limit");
}

/// Streams created by default.
const STREAMS_DEFAULT: usize = 2_000;

/// Messages published to each stream before the crash.
const MSGS: u64 = 3;

/// Client threads that create and publish at once, each with its own connection: stream adds in
/// flight together share the registry's syncs.
const CLIENTS: usize = 8;

fn user_stream(n: usize) -> StreamConfig {
    StreamConfig::new(format!("user{n}"), vec![format!("users.{n}.>")])
}

fn consumer(stream: &str, name: &str, deliver: DeliverPolicy) -> ConsumerConfig {
    ConsumerConfig {
        stream: stream.into(),
        name: name.into(),
        deliver,
        ack_wait_ms: 30_000,
        max_deliver: 5,
        max_ack_pending: 100,
        sid: 0,
        jetstream: None,
    }
}

/// Runs `work` for every stream number, spread over `CLIENTS` connections.
fn on_every_stream(broker: &Broker, streams: usize, work: impl Fn(&Client, usize) + Sync) {
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let work = &work;
            let client = broker.client();
            s.spawn(move || {
                for n in (t..streams).step_by(CLIENTS) {
                    work(&client, n);
                }
            });
        }
    });
}

/// Takes `count` messages from a consumer, acking each; returns their payloads.
fn take(consumer: &sluice::client::Consumer, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let Some(m) = consumer.next_timeout(common::PATIENCE) else {
            break;
        };
        consumer.ack(&m).unwrap();
        got.push(String::from_utf8_lossy(m.payload()).into_owned());
    }
    got
}

#[test]
fn every_acked_message_of_thousands_of_streams_survives_a_sigkill() {
    let streams: usize = std::env::var("SLUICE_RESTART_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(STREAMS_DEFAULT);
    lower_open_files_limit();
    let data = DataDir::new();
    let mut broker = Broker::start_in(&data.path, &[]);
    on_every_stream(&broker, streams, |client, n| {
        let info = client.stream_add(&user_stream(n)).unwrap();
        assert_eq!(info.messages(), 0);
        for m in 0..MSGS {
            let ack = client
                .publish_durable(&format!("users.{n}.m"), format!("{n}-{m}"))
                .unwrap();
            assert_eq!(ack.offset, m);
        }
    });
    // A consumer of user1 takes and acks the first message; its state is saved.
    {
        let client = broker.client();
        let c = client
            .consume(consumer("user1", "saved", DeliverPolicy::All))
            .unwrap();
        assert_eq!(take(&c, 1), vec!["1-0"]);
        // The ack is saved in the consumer's state file (written after the ack, not with it).
        let state = data.path.join("streams/user1/0000/consumers/saved.json");
        let deadline = std::time::Instant::now() + common::PATIENCE;
        let saved_floor = || -> u64 {
            std::fs::read(&state)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["floor"].as_u64())
                .unwrap_or(0)
        };
        while saved_floor() < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the ack was not saved"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    broker.kill();

    let broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    let users = client
        .stream_list()
        .unwrap()
        .iter()
        .filter(|s| s.name.starts_with("user"))
        .count();
    assert_eq!(
        users, streams,
        "every stream is listed (the consumer's dead-letter one too)"
    );
    // Every acked message reads back, from partitions opened as they are asked.
    on_every_stream(&broker, streams, |client, n| {
        let name = format!("user{n}");
        assert_eq!(
            client.stream_info(&name).unwrap().messages(),
            MSGS,
            "{name}"
        );
        for m in 0..MSGS {
            let message = client.stream_get(&name, 0, m).unwrap();
            assert_eq!(message.payload, format!("{n}-{m}").into_bytes());
        }
    });
    // A stream not touched since the restart takes a publish at the next offset first thing, and
    // a new consumer reads it all.
    let last = streams - 1;
    let ack = client
        .publish_durable(&format!("users.{last}.m"), "after")
        .unwrap();
    assert_eq!(ack.offset, MSGS);
    let fresh = client
        .consume(consumer(
            &format!("user{last}"),
            "fresh",
            DeliverPolicy::All,
        ))
        .unwrap();
    let expected: Vec<String> = (0..MSGS)
        .map(|m| format!("{last}-{m}"))
        .chain(["after".to_string()])
        .collect();
    assert_eq!(take(&fresh, expected.len()), expected);
    // The saved consumer resumes after what it acked.
    let saved = client
        .consume(consumer("user1", "saved", DeliverPolicy::All))
        .unwrap();
    assert_eq!(take(&saved, 2), vec!["1-1", "1-2"]);
}
