//! Crash and restart on the same ports: under durable publish load and a durable consumer, SIGKILL
//! the broker at a random moment and start it again at once on the same ports. The restart must
//! bind; at the end every acknowledged publish is stored with its payload, the consumer exists
//! after every restart once its attach was answered, and it has been given every stored message
//! (none skipped). The seed is printed; `SLUICE_CRASH_SEED=N`
//! replays a run's timings.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, DataDir, Ports};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::{Client, ClientError};
use sluice_protocol::ErrorCode;

const ROUNDS: usize = 30;
const PUBLISHERS: usize = 2;
const PARTITIONS: u32 = 4;
/// Publishes a publisher has in flight before it waits for the oldest ack.
const WINDOW: usize = 32;
/// How long the load runs before the kill, at least and at most.
const LOAD_MIN: Duration = Duration::from_millis(80);
const LOAD_MAX: Duration = Duration::from_millis(400);
/// The durable consumer's ack wait: short, so that what a killed connection held comes back within
/// the final drain.
const ACK_WAIT_MS: u64 = 1_000;
/// High enough that no message goes to the dead-letter stream, which would look like a skip.
const MAX_DELIVER: u32 = 1_000;
const STREAM: &str = "orders";
const DURABLE: &str = "billing";
/// The log line the broker writes when it has to wait for an address.
const WAITING: &str = "waiting for the address";

type Stored = HashMap<(u32, u64), String>;

fn consumer_config(name: &str, max_ack_pending: u32) -> ConsumerConfig {
    ConsumerConfig {
        stream: STREAM.into(),
        name: name.into(),
        deliver: DeliverPolicy::All,
        ack_wait_ms: ACK_WAIT_MS,
        max_deliver: MAX_DELIVER,
        max_ack_pending,
        sid: 0,
        jetstream: None,
    }
}

/// Publishes with acks until the connection breaks, recording every acknowledged message.
fn publish_until_killed(addr: String, round: usize, publisher: usize, acked: Arc<Mutex<Stored>>) {
    let Ok(client) = Client::connect(&addr) else {
        return;
    };
    let mut window = std::collections::VecDeque::new();
    let record = |payload: String, waiter: sluice::client::AckWaiter| match waiter.wait() {
        Ok(ack) => {
            let old = acked
                .lock()
                .unwrap()
                .insert((ack.partition, ack.offset), payload);
            assert!(old.is_none(), "offset {ack:?} acknowledged twice");
            true
        }
        Err(_) => false,
    };
    for i in 0.. {
        let payload = format!("r{round}-p{publisher}-m{i}");
        let subject = format!("orders.{publisher}.{}", i % 7);
        match client.publish_with_ack(&subject, &payload) {
            Ok(waiter) => window.push_back((payload, waiter)),
            Err(_) => return,
        }
        if window.len() >= WINDOW {
            let (payload, waiter) = window.pop_front().unwrap();
            if !record(payload, waiter) {
                return;
            }
        }
    }
}

/// Consumes and acks until the connection breaks or `stop` is set (then until nothing came for
/// `idle`), recording every message it acked. Sets `attached` once an attach was answered: from
/// then on the broker must never forget the consumer.
fn consume(
    addr: &str,
    consumed: &Mutex<Stored>,
    attached: &AtomicBool,
    stop: &AtomicBool,
    idle: Duration,
) {
    let Ok(client) = Client::connect(addr) else {
        return;
    };
    let Ok(consumer) = client.consume(consumer_config(DURABLE, 1_000)) else {
        return;
    };
    attached.store(true, Ordering::Relaxed);
    let mut last = Instant::now();
    loop {
        match consumer.next_timeout(Duration::from_millis(20)) {
            Some(message) => {
                last = Instant::now();
                let meta = message.stream_meta().expect("a consumer's message");
                let payload = String::from_utf8(message.payload().to_vec()).unwrap();
                if consumer.ack(&message).is_err() {
                    return;
                }
                let old = consumed
                    .lock()
                    .unwrap()
                    .insert((meta.partition, meta.offset), payload.clone());
                assert!(
                    old.is_none_or(|old| old == payload),
                    "({}, {}) delivered with two payloads",
                    meta.partition,
                    meta.offset
                );
            }
            None if client.is_closed() => return,
            None if stop.load(Ordering::Relaxed) && last.elapsed() >= idle => return,
            None => {}
        }
    }
}

/// Everything the stream holds, read by a fresh consumer from offset 0.
fn read_back(client: &Client, name: &str) -> Stored {
    let info = client.stream_info(STREAM).unwrap();
    let expected: u64 = info
        .partitions
        .iter()
        .map(|p| p.last_offset.map_or(0, |last| last + 1 - p.first_offset))
        .sum();
    let consumer = client.consume(consumer_config(name, 100_000)).unwrap();
    let mut stored = Stored::new();
    while (stored.len() as u64) < expected {
        let message = consumer
            .next_timeout(common::PATIENCE)
            .unwrap_or_else(|| panic!("read back {} of {expected} messages", stored.len()));
        let meta = message.stream_meta().unwrap();
        let payload = String::from_utf8(message.payload().to_vec()).unwrap();
        consumer.ack(&message).unwrap();
        stored.insert((meta.partition, meta.offset), payload);
    }
    stored
}

#[test]
fn a_broker_killed_under_load_restarts_at_once_on_the_same_ports_and_loses_nothing() {
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (SLUICE_CRASH_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let data = DataDir::new();
    let ports = Ports::fixed();
    let mut broker = Broker::start_at(&data.path, &ports, &[]);
    broker
        .client()
        .stream_add(&StreamConfig {
            name: STREAM.into(),
            subjects: vec!["orders.>".into()],
            partitions: PARTITIONS,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    let acked: Arc<Mutex<Stored>> = Arc::default();
    let consumed: Arc<Mutex<Stored>> = Arc::default();
    let attached: Arc<AtomicBool> = Arc::default();
    let mut waits = 0;
    for round in 0..ROUNDS {
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (addr, acked) = (broker.addr.clone(), acked.clone());
                std::thread::spawn(move || publish_until_killed(addr, round, p, acked))
            })
            .collect();
        let consumer = {
            let (addr, consumed, attached) =
                (broker.addr.clone(), consumed.clone(), attached.clone());
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                consume(&addr, &consumed, &attached, &stop, Duration::ZERO)
            })
        };
        let load = LOAD_MIN + (LOAD_MAX - LOAD_MIN).mul_f64(rng.f64());
        std::thread::sleep(load);
        broker.kill();
        let restart = Instant::now();
        broker = Broker::start_at(&data.path, &ports, &[]);
        let ready_in = restart.elapsed();
        for p in publishers {
            p.join().unwrap();
        }
        consumer.join().unwrap();
        let waited = broker.logged(WAITING);
        waits += usize::from(waited);
        let acked = acked.lock().unwrap().clone();
        let consumed = consumed.lock().unwrap().clone();
        println!(
            "round {round}: killed after {load:?}, ready again in {ready_in:?}{}; {} acked \
             publishes, {} consumed",
            if waited { " (waited for a port)" } else { "" },
            acked.len(),
            consumed.len()
        );
        let client = broker.client();
        let info = client.stream_info(STREAM).unwrap();
        for (partition, offset) in acked.keys() {
            let last = info.partitions[*partition as usize].last_offset;
            assert!(
                last.is_some_and(|l| l >= *offset),
                "round {round}: partition {partition} ends at {last:?}, offset {offset} was acked"
            );
        }
        // The consumer's ack floor may only pass offsets the consumer acked: one it passes
        // otherwise is never delivered again.
        let state = match client.consumer_info(STREAM, DURABLE) {
            Ok(state) => state,
            // Only a kill before the first attach was answered may leave no consumer: an answered
            // attach means its state is durable in every partition.
            Err(ClientError::Api {
                code: ErrorCode::NotFound,
                message,
            }) if !attached.load(Ordering::Relaxed) => {
                println!("round {round}: killed before the first attach was answered: {message}");
                continue;
            }
            Err(e) => panic!("round {round}: consumer info: {e}"),
        };
        for p in &state.partitions {
            let first = info.partitions[p.partition as usize].first_offset;
            let skipped: Vec<u64> = (first..p.ack_floor)
                .filter(|o| !consumed.contains_key(&(p.partition, *o)))
                .collect();
            assert!(
                skipped.is_empty(),
                "round {round}: partition {} has ack floor {} but offsets {skipped:?} were never \
                 acked by the consumer",
                p.partition,
                p.ack_floor
            );
        }
    }
    // Whatever the durable consumer has not acked is still delivered to it.
    consume(
        &broker.addr,
        &consumed,
        &attached,
        &AtomicBool::new(true),
        Duration::from_millis(ACK_WAIT_MS * 2),
    );
    let client = broker.client();
    let stored = read_back(&client, "audit");
    let acked = acked.lock().unwrap();
    let consumed = consumed.lock().unwrap();
    for (at, payload) in acked.iter() {
        assert_eq!(
            stored.get(at),
            Some(payload),
            "acknowledged publish at {at:?}"
        );
    }
    let mut missed: Vec<&(u32, u64)> = stored
        .keys()
        .filter(|at| !consumed.contains_key(at))
        .collect();
    missed.sort_unstable();
    assert!(
        missed.is_empty(),
        "{} stored messages never reached the durable consumer: {:?}",
        missed.len(),
        &missed[..missed.len().min(20)]
    );
    for (at, payload) in consumed.iter() {
        assert_eq!(stored.get(at), Some(payload), "consumed message at {at:?}");
    }
    let state = client.consumer_info(STREAM, DURABLE).unwrap();
    assert_eq!((state.pending(), state.ack_pending()), (0, 0), "{state:?}");
    println!(
        "{ROUNDS} rounds in {:?}: {} acknowledged publishes, {} stored, {} consumed; {waits} \
         restarts waited for a port",
        started.elapsed(),
        acked.len(),
        stored.len(),
        consumed.len()
    );
    assert!(
        acked.len() > 1_000,
        "only {} publishes acknowledged",
        acked.len()
    );
}

#[test]
fn a_second_broker_on_the_ports_of_a_live_one_refuses_to_start() {
    let ports = Ports::fixed();
    let (first_data, second_data) = (DataDir::new(), DataDir::new());
    let first = Broker::start_at(&first_data.path, &ports, &[]);
    let started = Instant::now();
    let logs = match Broker::try_start_at(&second_data.path, &ports, &[]) {
        Ok(_) => panic!("a second broker started on {ports:?}"),
        Err(logs) => logs,
    };
    assert!(
        logs.iter().any(|l| l.contains("another process listens")),
        "{logs:?}"
    );
    println!("refused after {:?}", started.elapsed());
    // The first broker still serves.
    first.client().flush().unwrap();
}
