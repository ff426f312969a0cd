//! Durable publish through the real broker: one client publishing to a 4-partition stream with acks,
//! W publishes in flight, each ack awaited; throughput and publish-to-ack latency.
//!
//! `cargo bench --bench durable` starts `sluice serve --shards 2` (the binary of this build) with a
//! temporary data directory, once per fsync policy. Under `cargo test` it runs briefly as a smoke test.

mod support;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::Client;

fn run(
    client: &Client,
    size: usize,
    in_flight: usize,
    duration: Duration,
) -> (f64, Histogram<u64>) {
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 2).unwrap();
    let payload = vec![b'd'; size];
    let mut window = VecDeque::with_capacity(in_flight);
    let start = Instant::now();
    let mut acked = 0u64;
    let mut i = 0u64;
    while start.elapsed() < duration || !window.is_empty() {
        if start.elapsed() < duration && window.len() < in_flight {
            let subject = format!("bench.{}", i % 64);
            window.push_back((
                Instant::now(),
                client.publish_with_ack(&subject, &payload).unwrap(),
            ));
            i += 1;
            continue;
        }
        let (sent, waiter) = window.pop_front().unwrap();
        waiter.wait().unwrap();
        let _ = hist.record(sent.elapsed().as_nanos() as u64);
        acked += 1;
    }
    (acked as f64 / start.elapsed().as_secs_f64(), hist)
}

/// Reads `count` messages through a new consumer, acking each; returns messages per second.
fn consume(client: &Client, name: &str, count: u64) -> f64 {
    let consumer = client
        .consume(ConsumerConfig {
            stream: "bench".into(),
            name: name.into(),
            deliver: DeliverPolicy::All,
            ack_wait_ms: 30_000,
            max_deliver: 5,
            max_ack_pending: 10_000,
            sid: 0,
            jetstream: None,
        })
        .unwrap();
    let start = Instant::now();
    let mut n = 0;
    while n < count {
        let message = consumer
            .next_timeout(Duration::from_secs(10))
            .expect("a message");
        consumer.ack(&message).unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let duration = Duration::from_millis(if full { 3000 } else { 50 });
    println!(
        "| {:<40} | {:>10} | {:>8} | {:>8} | {:>8} | {:>8} |",
        "case", "msgs/s", "MB/s", "p50 us", "p99 us", "p999 us"
    );
    println!(
        "|{:-<42}|{:->12}|{:->10}|{:->10}|{:->10}|{:->10}|",
        "", "", "", "", "", ""
    );
    for fsync in ["always", "never"] {
        let server = support::Server::start(
            &format!("durable-{fsync}"),
            &[
                "--shards", "2", "--nats", "off", "--kafka", "off", "--fsync", fsync,
            ],
        );
        let client = Client::connect(&server.native).unwrap();
        client
            .stream_add(&StreamConfig {
                name: "bench".into(),
                subjects: vec!["bench.>".into()],
                partitions: 4,
                max_age_secs: None,
                max_bytes: None,
                created_ns: 0,
                jetstream: None,
                replicas: 1,
                placement: Vec::new(),
            })
            .unwrap();
        let mut stored = 0u64;
        for size in [16usize, 1024] {
            for in_flight in [1usize, 64] {
                let (rate, h) = run(&client, size, in_flight, duration);
                stored += (rate * duration.as_secs_f64()) as u64;
                println!(
                    "| {:<40} | {:>10.0} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} |",
                    format!("--fsync {fsync}, {size} B, {in_flight} in flight"),
                    rate,
                    rate * size as f64 / 1e6,
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    h.value_at_quantile(0.99) as f64 / 1e3,
                    h.value_at_quantile(0.999) as f64 / 1e3,
                );
            }
        }
        // Everything stored above, read back through one consumer, each message acked.
        let count = client
            .stream_info("bench")
            .unwrap()
            .messages()
            .min(stored.max(1));
        let rate = consume(&client, &format!("reader-{fsync}"), count);
        println!(
            "| {:<40} | {:>10.0} | {:>8} | {:>8} | {:>8} | {:>8} |",
            format!("--fsync {fsync}, consume {count} with acks"),
            rate,
            "-",
            "-",
            "-",
            "-"
        );
    }
}
