//! A crash under JetStream load: async-nats publishes with acks and a pull consumer fetches and
//! acks (waiting for the server to confirm each ack) while the broker is SIGKILLed at random
//! moments and restarted at once on the same ports. At the end, every acknowledged publish has
//! been delivered, and a message whose ack the server confirmed is delivered again only after a
//! kill that came soon after that ack (its ack was not yet written down: the at-least-once
//! contract). The seed is printed; `SLUICE_CRASH_SEED=N` replays a run's timings.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, stream};
use common::{Broker, DataDir, Ports};
use futures::StreamExt;

const ROUNDS: usize = 8;
const STREAM: &str = "JOBS";
const DURABLE: &str = "workers";
/// How long the load runs before a kill, at least and at most.
const LOAD_MIN_MS: u64 = 150;
const LOAD_MAX_MS: u64 = 500;
/// How long after a confirmed ack a kill may still lose it: the consumer writes its state down
/// every 100 ms, and a loaded machine may take longer.
const ACK_SAVE_MARGIN: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Seen {
    /// Payloads whose publish was acknowledged.
    published: HashSet<String>,
    /// Every delivery of each payload, in order.
    delivered: HashMap<String, Vec<Instant>>,
    /// When the server confirmed each payload's ack.
    confirmed: HashMap<String, Instant>,
}

async fn publish(addr: String, round: usize, seen: Arc<Mutex<Seen>>) {
    let Ok(client) = async_nats::connect(&addr).await else {
        return;
    };
    let js = jetstream::new(client);
    for i in 0.. {
        let payload = format!("r{round}-m{i}");
        let Ok(ack) = js.publish("jobs.train", payload.clone().into()).await else {
            return;
        };
        if ack.await.is_err() {
            return;
        }
        seen.lock().unwrap().published.insert(payload);
    }
}

/// Fetches and acks until the connection breaks, or (with `until_idle`) until fetches come back
/// empty for a while.
async fn consume(addr: String, seen: Arc<Mutex<Seen>>, until_idle: Option<Duration>) {
    let Ok(client) = async_nats::connect(&addr).await else {
        return;
    };
    let js = jetstream::new(client);
    let Ok(stream) = js.get_stream(STREAM).await else {
        return;
    };
    let Ok(consumer): Result<PullConsumer, _> = stream.get_consumer(DURABLE).await else {
        return;
    };
    let mut idle_since = Instant::now();
    loop {
        let Ok(mut batch) = consumer
            .fetch()
            .max_messages(50)
            .expires(Duration::from_millis(200))
            .messages()
            .await
        else {
            return;
        };
        let mut any = false;
        while let Some(message) = batch.next().await {
            let Ok(message) = message else {
                return;
            };
            any = true;
            let payload = String::from_utf8_lossy(&message.payload).into_owned();
            seen.lock()
                .unwrap()
                .delivered
                .entry(payload.clone())
                .or_default()
                .push(Instant::now());
            if message.double_ack().await.is_err() {
                return;
            }
            seen.lock()
                .unwrap()
                .confirmed
                .insert(payload, Instant::now());
        }
        match until_idle {
            Some(idle) if !any && idle_since.elapsed() > idle => return,
            _ if any => idle_since = Instant::now(),
            _ => {}
        }
    }
}

#[test]
fn jetstream_publishes_and_acks_survive_sigkill() {
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("jetstream crash seed {seed} (replay with SLUICE_CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let data = DataDir::new();
    let ports = Ports::fixed();
    let mut broker = Broker::start_at(&data.path, &ports, &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let client = async_nats::connect(broker.nats_addr.as_str())
            .await
            .expect("connect");
        let js = jetstream::new(client);
        let stream = js
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["jobs.>".into()],
                ..Default::default()
            })
            .await
            .expect("create stream");
        stream
            .create_consumer(pull::Config {
                durable_name: Some(DURABLE.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .expect("create consumer");
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        let addr = broker.nats_addr.clone();
        let publisher = rt.spawn(publish(addr.clone(), round, seen.clone()));
        let consumer = rt.spawn(consume(addr, seen.clone(), None));
        std::thread::sleep(Duration::from_millis(rng.u64(LOAD_MIN_MS..LOAD_MAX_MS)));
        broker.kill();
        kills.push(Instant::now());
        publisher.abort();
        consumer.abort();
        broker = Broker::start_at(&data.path, &ports, &[]);
    }
    // What a killed consumer held comes back after its ack wait: drain until it stays empty.
    let drain = rt.spawn(consume(
        broker.nats_addr.clone(),
        seen.clone(),
        Some(Duration::from_secs(3)),
    ));
    rt.block_on(drain).expect("the drain");
    let seen = seen.lock().unwrap();
    assert!(
        seen.published.len() > ROUNDS,
        "only {} publishes were acknowledged",
        seen.published.len()
    );
    let lost: Vec<&String> = seen
        .published
        .iter()
        .filter(|p| !seen.delivered.contains_key(*p))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged publishes never delivered: {lost:?}"
    );
    let mut again = 0;
    for (payload, acked_at) in &seen.confirmed {
        let redelivered = seen.delivered[payload].iter().any(|at| at > acked_at);
        if redelivered {
            again += 1;
            let lost_by_a_kill = kills
                .iter()
                .any(|k| k >= acked_at && *k < *acked_at + ACK_SAVE_MARGIN);
            assert!(
                lost_by_a_kill,
                "{payload} was delivered again after its ack was confirmed, with no kill soon after"
            );
        }
    }
    let deliveries: usize = seen.delivered.values().map(Vec::len).sum();
    println!(
        "{} rounds: {} publishes acknowledged, {} deliveries, {} confirmed acks, {} delivered again \
         after a confirmed ack lost to a kill",
        ROUNDS,
        seen.published.len(),
        deliveries,
        seen.confirmed.len(),
        again
    );
}
