//! Durable consumers deliver by credit, on the real binary with two shards: a member gets what it
//! asked for and no more, a CLI run that asks for N leaves nothing behind for the next run, and what
//! a member held when it went away goes to the others at once.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, PATIENCE};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::{Client, Consumer, Message};

/// Far longer than any test: a message that comes back did not wait out its ack wait.
const ACK_WAIT_MS: u64 = 60_000;

fn stream(client: &Client, name: &str, partitions: u32) {
    client
        .stream_add(&StreamConfig {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
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

fn publish(client: &Client, stream: &str, n: usize) {
    let waiters: Vec<_> = (0..n)
        .map(|i| {
            client
                .publish_with_ack(&format!("{stream}.s{}", i % 13), format!("m-{i}"))
                .unwrap()
        })
        .collect();
    for w in waiters {
        w.wait().unwrap();
    }
}

fn config(stream: &str, name: &str) -> ConsumerConfig {
    ConsumerConfig {
        stream: stream.into(),
        name: name.into(),
        deliver: DeliverPolicy::All,
        ack_wait_ms: ACK_WAIT_MS,
        max_deliver: 5,
        max_ack_pending: 1000,
        sid: 0,
        jetstream: None,
    }
}

fn take(consumer: &Consumer, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            consumer
                .next_timeout(PATIENCE)
                .unwrap_or_else(|| panic!("message {i} of {n} did not arrive"))
        })
        .collect()
}

fn payload(m: &Message) -> String {
    String::from_utf8(m.payload().to_vec()).unwrap()
}

#[test]
fn a_member_never_receives_more_than_it_asked_for() {
    let broker = Broker::start(&[]);
    let client = broker.client_on_shard(1);
    stream(&client, "credit", 4);
    publish(&client, "credit", 1000);
    let c = client.attach_consumer(config("credit", "ten")).unwrap();
    assert!(
        c.next_timeout(Duration::from_millis(500)).is_none(),
        "attaching grants nothing"
    );
    c.pull(10).unwrap();
    let first = take(&c, 10);
    assert!(
        c.next_timeout(Duration::from_secs(1)).is_none(),
        "an eleventh message after a pull of 10"
    );
    // What several owners sent beyond the credit went back unseen: only the ten are held.
    let info = client.consumer_info("credit", "ten").unwrap();
    assert_eq!(info.ack_pending(), 10, "{info:?}");
    assert_eq!(info.pending(), 990, "{info:?}");
    c.pull(5).unwrap();
    let more = take(&c, 5);
    assert!(c.next_timeout(Duration::from_secs(1)).is_none());
    let distinct: HashSet<String> = first.iter().chain(&more).map(payload).collect();
    assert_eq!(distinct.len(), 15);
    assert!(
        first
            .iter()
            .chain(&more)
            .all(|m| m.stream_meta().unwrap().delivered == 1),
        "a message handed back is not a redelivery"
    );
}

#[test]
fn consume_with_a_count_run_five_times_prints_that_many_each_time_without_waiting() {
    let broker = Broker::start(&[]);
    let client = broker.client();
    stream(&client, "S", 4);
    publish(&client, "S", 1000);
    let mut seen = HashSet::new();
    let mut times = Vec::new();
    for run in 0..5 {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["consume", "S", "--consumer", "w", "--count", "100", "-s"])
            .arg(&broker.addr)
            .output()
            .expect("run sluice consume");
        let took = started.elapsed();
        times.push(took);
        assert!(out.status.success(), "run {run}: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 100, "run {run} printed {}", lines.len());
        for line in lines {
            let mut fields = line.split('\t');
            let at = (fields.next().unwrap(), fields.next().unwrap());
            assert!(
                seen.insert(format!("{}:{}", at.0, at.1)),
                "run {run}: {line} again"
            );
        }
        // Generous: the old behaviour left the next run waiting out a 30 s ack wait.
        assert!(took < Duration::from_secs(10), "run {run} took {took:?}");
    }
    eprintln!("consume --count 100 runs took {times:?}");
    let info = client.consumer_info("S", "w").unwrap();
    assert_eq!(info.ack_pending(), 0, "{info:?}");
    assert_eq!(info.pending(), 500, "{info:?}");
}

#[test]
fn what_a_member_held_goes_to_the_others_as_soon_as_it_disconnects() {
    let broker = Broker::start(&[]);
    let publisher = broker.client();
    stream(&publisher, "work", 4);
    publish(&publisher, "work", 100);
    let a_client = broker.client_on_shard(0);
    let a = a_client.attach_consumer(config("work", "pool")).unwrap();
    a.pull(40).unwrap();
    let held: HashSet<String> = take(&a, 40).iter().map(payload).collect();
    assert!(a.next_timeout(Duration::from_millis(300)).is_none());
    let b_client = broker.client_on_shard(1);
    let b = b_client.attach_consumer(config("work", "pool")).unwrap();
    b.pull(1000).unwrap();
    let from_b: Vec<Message> = take(&b, 60);
    for m in &from_b {
        b.ack(m).unwrap();
    }
    assert!(
        from_b.iter().all(|m| !held.contains(&payload(m))),
        "b got what a holds while a is connected"
    );
    // A goes away mid-batch, holding 40 unacked messages.
    let gone = Instant::now();
    drop(a);
    drop(a_client);
    let again = take(&b, 40);
    let waited = gone.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "released after {waited:?}, ack wait is {ACK_WAIT_MS} ms"
    );
    eprintln!("a disconnected member's 40 messages reached the other in {waited:?}");
    for m in &again {
        assert_eq!(m.stream_meta().unwrap().delivered, 2);
        b.ack(m).unwrap();
    }
    let again: HashSet<String> = again.iter().map(payload).collect();
    assert_eq!(again, held, "exactly what a held comes again");
    let all: HashSet<String> = from_b.iter().map(payload).chain(again).collect();
    assert_eq!(all.len(), 100, "nothing lost");
    assert!(b.next_timeout(Duration::from_millis(500)).is_none());
    b_client.flush().unwrap();
    let info = b_client.consumer_info("work", "pool").unwrap();
    let redelivered: u64 = info.partitions.iter().map(|p| p.redelivered).sum();
    assert_eq!(redelivered, 40, "{info:?}");
    assert_eq!(info.ack_pending(), 0, "{info:?}");
}
