//! Queue groups: each message reaches exactly one member, whichever shards the members are on.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Broker;

const MESSAGES: usize = 20_000;

#[test]
fn a_queue_group_across_both_shards_gets_each_message_exactly_once() {
    let broker = Broker::start(&[]);
    let members: Vec<_> = [0, 0, 1, 1]
        .iter()
        .map(|&shard| {
            let client = broker.client_on_shard(shard);
            let sub = client.queue_subscribe("work.>", "workers").unwrap();
            client.flush().unwrap();
            (client, sub)
        })
        .collect();
    // A plain subscriber beside the group still sees every message.
    let watcher_client = broker.client_on_shard(1);
    let watcher = watcher_client.subscribe("work.>").unwrap();
    watcher_client.flush().unwrap();

    let publisher = broker.client_on_shard(0);
    for i in 0..MESSAGES {
        publisher.publish("work.item", i.to_string()).unwrap();
    }
    publisher.flush().unwrap();

    let mut seen = HashSet::new();
    let mut per_member = Vec::new();
    for (_, sub) in &members {
        let mut count = 0;
        while let Some(message) = sub.next_timeout(Duration::from_millis(500)) {
            let n: usize = std::str::from_utf8(message.payload())
                .unwrap()
                .parse()
                .unwrap();
            assert!(seen.insert(n), "message {n} delivered twice");
            count += 1;
        }
        per_member.push(count);
    }
    assert_eq!(seen.len(), MESSAGES, "per member: {per_member:?}");
    assert!(
        per_member.iter().all(|&c| c > 0),
        "every member takes a share: {per_member:?}"
    );
    let mut watched = 0;
    while watcher.next_timeout(Duration::from_millis(500)).is_some() {
        watched += 1;
    }
    assert_eq!(watched, MESSAGES);
}

#[test]
fn two_groups_on_one_subject_each_get_every_message_once() {
    let broker = Broker::start(&[]);
    let a0 = broker.client_on_shard(0);
    let b1 = broker.client_on_shard(1);
    let group_a = a0.queue_subscribe("events", "a").unwrap();
    let group_b = b1.queue_subscribe("events", "b").unwrap();
    a0.flush().unwrap();
    b1.flush().unwrap();
    let publisher = broker.client();
    for i in 0..1000 {
        publisher.publish("events", i.to_string()).unwrap();
    }
    publisher.flush().unwrap();
    for sub in [&group_a, &group_b] {
        let mut count = 0;
        while sub.next_timeout(Duration::from_millis(500)).is_some() {
            count += 1;
        }
        assert_eq!(count, 1000);
    }
}
