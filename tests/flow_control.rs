//! Flow control instead of disconnects, at the broker's default settings: a publisher sending as fast
//! as it can is slowed to its subscribers' pace, and every message reaches every subscriber; only a
//! subscriber whose socket takes nothing for the write deadline is cut off, and then its queue group
//! stops picking it at once.

mod common;

use std::time::{Duration, Instant};

use common::Broker;
use futures::StreamExt;
use sluice_protocol::op::{Op, Subscribe};
use sluice_protocol::ArchivedOp;

const PAYLOAD_BYTES: usize = 1024;

async fn nats(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        // The client's own per-subscription queue: large enough that the client never drops
        // messages itself, so that what is counted is what the broker delivered.
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .expect("connect with async-nats")
}

/// An async-nats publisher sends `messages` of 1 KiB flat out to `subscribers` async-nats
/// subscribers; each must receive every one, in order: on Sluice (which cuts nobody off), and on
/// the reference nats-server where `./test` installed it.
async fn nats_flat_out(subscribers: usize, messages: usize) {
    let broker = Broker::start(&[]);
    nats_flat_out_on(
        &format!("nats://{}", broker.nats_addr),
        subscribers,
        messages,
    )
    .await;
    assert!(!broker.logged("slow consumer"), "no subscriber was cut off");
    if let Some(reference) = common::ReferenceNats::start() {
        nats_flat_out_on(&format!("nats://{}", reference.addr), subscribers, messages).await;
    }
}

async fn nats_flat_out_on(url: &str, subscribers: usize, messages: usize) {
    let publisher = nats(url).await;
    let mut subs = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let client = nats(url).await;
        subs.push(client.subscribe("firehose").await.unwrap());
        clients.push(client);
    }
    let mut probed: Vec<&mut async_nats::Subscriber> = subs.iter_mut().collect();
    common::until_subscribed(&publisher, "firehose", &mut probed).await;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut received = 0usize;
                while received < messages {
                    let next = tokio::time::timeout(common::PATIENCE, sub.next()).await;
                    let Ok(Some(message)) = next else { break };
                    if message.payload.len() != PAYLOAD_BYTES {
                        continue; // A late probe.
                    }
                    let n = u64::from_le_bytes(message.payload[..8].try_into().unwrap());
                    assert_eq!(
                        n as usize, received,
                        "messages arrive in order, none missing"
                    );
                    received += 1;
                }
                received
            })
        })
        .collect();
    let mut payload = vec![b'x'; PAYLOAD_BYTES];
    let started = Instant::now();
    for n in 0..messages as u64 {
        payload[..8].copy_from_slice(&n.to_le_bytes());
        publisher
            .publish("firehose", payload.clone().into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), messages, "every message delivered");
    }
    eprintln!(
        "{url}: {messages} messages to {subscribers} subscriber(s) in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_async_nats_publisher_flat_out_reaches_one_subscriber_with_every_message() {
    nats_flat_out(1, 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_async_nats_publisher_flat_out_reaches_four_subscribers_with_every_message() {
    nats_flat_out(4, 40_000).await;
}

/// The same with Sluice's own client, which publishes without waiting for anything.
fn native_flat_out(subscribers: usize, messages: usize) {
    let broker = Broker::start(&[]);
    let publisher = broker.client_on_shard(0);
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let client = broker.client_on_shard(i as u32 % 2);
        let sub = client.subscribe("firehose").unwrap();
        client.flush().unwrap();
        readers.push(std::thread::spawn(move || {
            let mut received = 0usize;
            while received < messages {
                let Some(message) = sub.next_timeout(common::PATIENCE) else {
                    break;
                };
                let n = u64::from_le_bytes(message.payload()[..8].try_into().unwrap());
                assert_eq!(
                    n as usize, received,
                    "messages arrive in order, none missing"
                );
                received += 1;
            }
            received
        }));
        clients.push(client);
    }
    publisher.flush().unwrap();
    let mut payload = vec![b'x'; PAYLOAD_BYTES];
    for n in 0..messages as u64 {
        payload[..8].copy_from_slice(&n.to_le_bytes());
        publisher.publish("firehose", &payload).unwrap();
    }
    publisher.flush().unwrap();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), messages, "every message delivered");
    }
    assert!(!broker.logged("slow consumer"), "no subscriber was cut off");
}

#[test]
fn a_native_publisher_flat_out_reaches_one_subscriber_with_every_message() {
    native_flat_out(1, 100_000);
}

#[test]
fn a_native_publisher_flat_out_reaches_four_subscribers_with_every_message() {
    native_flat_out(4, 40_000);
}

/// A queue member that subscribes and then never reads again is cut off within the write deadline
/// (10 s by default); from then on its peer receives every message.
#[test]
fn a_queue_member_that_stops_reading_is_cut_off_and_its_peer_gets_everything_after() {
    let broker = Broker::start(&[]);
    let mut stuck = broker.raw_on_shard(0);
    stuck.send(&Op::Sub(Subscribe {
        sid: 1,
        subject: "jobs",
        queue: Some("workers"),
    }));
    stuck.send(&Op::Ping);
    assert!(matches!(stuck.read_frame().unwrap().op(), ArchivedOp::Pong));
    let worker_client = broker.client_on_shard(1);
    let worker = worker_client.queue_subscribe("jobs", "workers").unwrap();
    worker_client.flush().unwrap();

    // Publish until the broker has cut the stuck member off; the worker keeps reading meanwhile.
    let publisher = broker.client_on_shard(0);
    let payload = vec![b'j'; 16 * 1024];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut worker_got = 0usize;
    while !broker.logged("slow consumer") {
        assert!(
            Instant::now() < deadline,
            "the stuck member was never cut off"
        );
        for _ in 0..64 {
            publisher.publish("jobs", &payload).unwrap();
        }
        // The publisher may wait for the stuck member up to the write deadline, no longer.
        publisher.flush_timeout(common::PATIENCE).unwrap();
        while worker.try_next().is_some() {
            worker_got += 1;
        }
    }
    let cut_after = started.elapsed();
    while worker.next_timeout(Duration::from_millis(500)).is_some() {
        worker_got += 1;
    }
    eprintln!("stuck member cut off after {cut_after:?}; worker had {worker_got} messages");
    assert!(
        worker_got > 0,
        "the worker was served while the member was stuck"
    );

    // Everything published from now on reaches the worker.
    let after = 2_000;
    for n in 0..after as u64 {
        publisher.publish("jobs", n.to_le_bytes()).unwrap();
    }
    publisher.flush().unwrap();
    for n in 0..after as u64 {
        let message = worker
            .next_timeout(common::PATIENCE)
            .unwrap_or_else(|| panic!("message {n} of {after} reached the worker"));
        assert_eq!(message.payload(), n.to_le_bytes());
    }
}
