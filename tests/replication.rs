//! Replicated streams on three nodes on loopback: every acknowledged publish survives the death of
//! its partition's leader and is readable, in order, from every node afterwards; a node that
//! cannot reach a majority acknowledges nothing; a node that comes back catches up.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::signal;
use common::replicated::{
    read_all, replicated, stream_on_shard, wait_for_group_leader, Cluster, NAMES,
};
use common::Broker;
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::{Client, ClientError};

/// Publishes `PREFIX-NNNN` for each N of `range`, each acknowledged before the next.
fn publish_numbered(client: &Client, subject: &str, prefix: &str, range: std::ops::Range<u32>) {
    for i in range {
        client
            .publish_durable(subject, format!("{prefix}-{i:04}"))
            .expect("acked");
    }
}

/// Publishes `msg-N` for N from `from` on, one at a time with acks, until `stop` is set; returns
/// the acknowledged payloads and how many publishes were refused or unanswered.
fn publish_until(
    client: Client,
    subject: String,
    from: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> u64 {
    let mut refused = 0;
    let mut n = from;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("msg-{n:06}");
        n += 1;
        match client.publish_durable(&subject, &payload) {
            Ok(_) => acked.lock().unwrap().push(payload),
            Err(e @ (ClientError::Api { .. } | ClientError::Timeout)) => {
                if refused == 0 {
                    eprintln!("first refusal: {e}");
                }
                refused += 1;
            }
            Err(e) => panic!("publishing failed: {e}"),
        }
    }
    refused
}

/// Checks that a node's log holds every acknowledged payload and nothing out of order.
fn check_log(node: &str, log: &[String], acked: &[String]) {
    let mut sorted = log.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        &sorted, log,
        "{node}: the log is out of order or repeats a message"
    );
    let held: HashSet<&String> = log.iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|p| !held.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "{node}: acknowledged messages missing: {missing:?}"
    );
}

#[test]
fn no_acknowledged_message_is_lost_when_the_leader_is_killed() {
    let (mut cluster, stream, leader_at) = Cluster::with_stream("orders", 1, false);
    let leader = NAMES[leader_at];
    let via = (leader_at + 1) % 3;

    // Through a follower, which forwards to the leader.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let client = cluster.node(via).client();
        let (subject, stop, acked) = (format!("{stream}.a"), stop.clone(), acked.clone());
        std::thread::spawn(move || publish_until(client, subject, 0, stop, acked))
    };
    let wait_for_acks = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < n {
            let have = acked.lock().unwrap().len();
            assert!(
                Instant::now() < deadline,
                "{have} publishes acked, {n} wanted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_acks(200);
    let before_kill = acked.lock().unwrap().len();
    cluster.nodes[leader_at].as_mut().expect("leader").kill();
    cluster.nodes[leader_at] = None;
    let new_leader = wait_for_group_leader(&cluster, &stream);
    assert_ne!(new_leader, leader, "a new leader is elected");
    wait_for_acks(before_kill + 200);
    cluster.nodes[leader_at] = Some(cluster.start_node(leader_at));
    wait_for_acks(before_kill + 400);
    stop.store(true, Ordering::Relaxed);
    let refused = publisher.join().expect("publisher");
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} acked, {refused} refused or unanswered while the leader changed",
        acked.len()
    );

    let logs = cluster.logs(&stream, acked.len() as u64);
    for (i, log) in logs.iter().enumerate() {
        check_log(NAMES[i], log, &acked);
    }
    assert_eq!(logs[0], logs[1], "n1 and n2 hold the same log");
    assert_eq!(logs[1], logs[2], "n2 and n3 hold the same log");
    let leaders: u32 = (0..3)
        .map(|i| {
            let metrics = common::http_get(&cluster.ports[i].http, "/metrics");
            let line = format!("sluice_group_leader{{stream=\"{stream}\",partition=\"0\"}} ");
            let value = metrics
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .unwrap_or_else(|| panic!("{}: no {line} in /metrics", NAMES[i]));
            value.trim().parse::<u32>().expect("a number")
        })
        .sum();
    assert_eq!(
        leaders, 1,
        "one node says in /metrics that it leads the group"
    );
}

#[test]
fn a_node_without_a_majority_acknowledges_nothing_and_catches_up_after() {
    let (cluster, stream, _) = Cluster::with_stream("jobs", 0, false);
    let lone = cluster.node(0).client();
    let subject = format!("{stream}.x");
    for i in 0..50 {
        lone.publish_durable(&subject, format!("before-{i:03}"))
            .expect("acked with every node up");
    }

    // n2 and n3 stop answering: n1 alone is a minority.
    signal(cluster.node(1), libc::SIGSTOP);
    signal(cluster.node(2), libc::SIGSTOP);
    match lone.publish_durable(&subject, "alone") {
        Err(ClientError::Api { code, message }) => {
            eprintln!("refused alone: {code:?} {message}");
        }
        Err(ClientError::Timeout) => {}
        other => panic!("a minority acknowledged a publish: {other:?}"),
    }
    signal(cluster.node(1), libc::SIGCONT);
    signal(cluster.node(2), libc::SIGCONT);
    wait_for_group_leader(&cluster, &stream);
    let mut acked: Vec<String> = (0..50).map(|i| format!("before-{i:03}")).collect();
    for i in 0..50 {
        let payload = format!("healed-{i:03}");
        lone.publish_durable(&subject, &payload)
            .expect("acked once healed");
        acked.push(payload);
    }
    let logs = cluster.logs(&stream, acked.len() as u64);
    for (i, log) in logs.iter().enumerate() {
        // "alone" may or may not have been agreed after the nodes came back; either way it is
        // in every log or in none.
        let without: Vec<String> = log.iter().filter(|p| *p != "alone").cloned().collect();
        assert_eq!(
            without, acked,
            "{}: every acknowledged message, in order",
            NAMES[i]
        );
    }
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
}

#[test]
fn a_leader_cut_off_from_the_others_acknowledges_nothing_and_its_extra_entries_are_undone() {
    let (cluster, stream, old) = Cluster::with_stream("cut", 0, true);
    let leader = NAMES[old];
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let subject = format!("{stream}.s");
    let isolated = cluster.node(old).client();
    let majority = cluster.node(others[0]).client();
    let mut acked: Vec<String> = Vec::new();
    for i in 0..20 {
        let payload = format!("before-{i:03}");
        isolated.publish_durable(&subject, &payload).expect("acked");
        acked.push(payload);
    }

    cluster.isolate(old, true);
    // The old leader takes publishes into its log but cannot get them agreed.
    let waiters: Vec<_> = (0..5)
        .map(|i| {
            isolated
                .publish_with_ack(&subject, format!("lost-{i}"))
                .expect("sent")
        })
        .collect();
    for waiter in waiters {
        assert!(
            waiter.wait().is_err(),
            "a cut-off leader acknowledged a publish"
        );
    }
    // The two others elect a leader of their own and go on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while i < 20 {
        let payload = format!("during-{i:03}");
        match majority.publish_durable(&subject, &payload) {
            Ok(_) => {
                acked.push(payload);
                i += 1;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the majority never took publishes: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    cluster.isolate(old, false);
    let healed = wait_for_group_leader(&cluster, &stream);
    for i in 0..20 {
        let payload = format!("after-{i:03}");
        majority
            .publish_durable(&subject, &payload)
            .expect("acked once healed");
        acked.push(payload);
    }
    let logs = cluster.logs(&stream, acked.len() as u64);
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(
            log, &acked,
            "{}: exactly the acknowledged messages, in order",
            NAMES[i]
        );
    }
    eprintln!("the cut-off leader was {leader}; after healing {healed} leads");
    assert!(
        cluster.node(old).logged("cutting a conflicting tail"),
        "the old leader undid the entries it could not get agreed"
    );
}

#[test]
fn a_consumer_on_a_surviving_node_goes_on_after_the_leader_dies_skipping_nothing() {
    let (mut cluster, stream, leader_at) = Cluster::with_stream("tasks", 0, false);
    let via = (leader_at + 1) % 3;
    let publisher = cluster.node(via).client();
    let subject = format!("{stream}.t");
    let publish = |range| publish_numbered(&publisher, &subject, "task", range);
    publish(0..100);
    let consumer_client = cluster.node(via).client();
    let consumer = consumer_client
        .consume(ConsumerConfig {
            stream: stream.clone(),
            name: "workers".into(),
            deliver: DeliverPolicy::All,
            // Longer than the leader's death and the publishes after it take, so that only the
            // messages never acked come again (not those waiting in the client's buffer).
            ack_wait_ms: 10_000,
            max_deliver: 10,
            max_ack_pending: 1_000,
            sid: 0,
            jetstream: None,
        })
        .expect("a consumer");
    let next = || {
        let message = consumer
            .next_timeout(Duration::from_secs(20))
            .expect("a delivery");
        let payload = String::from_utf8(message.payload().to_vec()).expect("UTF-8");
        (message, payload)
    };
    let mut acked = HashSet::new();
    for _ in 0..50 {
        let (message, payload) = next();
        consumer.ack(&message).expect("ack");
        acked.insert(payload);
    }
    // Ten taken and never acked: they come again after the ack wait.
    let unacked: HashSet<String> = (0..10).map(|_| next().1).collect();

    cluster.nodes[leader_at].as_mut().expect("leader").kill();
    cluster.nodes[leader_at] = None;
    wait_for_group_leader(&cluster, &stream);
    publish(100..200);

    let mut seen_again = HashSet::new();
    while acked.len() < 200 {
        let (message, payload) = next();
        assert!(
            !acked.contains(&payload),
            "{payload} was acked and came again ({:?})",
            message.stream_meta()
        );
        if unacked.contains(&payload) {
            seen_again.insert(payload.clone());
        }
        consumer.ack(&message).expect("ack");
        acked.insert(payload);
    }
    assert_eq!(seen_again, unacked, "every unacked message came again");
    let want: HashSet<String> = (0..200).map(|i| format!("task-{i:04}")).collect();
    assert_eq!(acked, want, "nothing skipped");
}

#[test]
fn a_consumer_whose_node_dies_goes_on_through_another_node_from_where_it_was() {
    let (mut cluster, stream, _) = Cluster::with_stream("work", 1, false);
    let publisher = cluster.node(1).client();
    let subject = format!("{stream}.w");
    let publish = |range| publish_numbered(&publisher, &subject, "job", range);
    publish(0..100);
    let config = ConsumerConfig {
        stream: stream.clone(),
        name: "workers".into(),
        deliver: DeliverPolicy::All,
        ack_wait_ms: 30_000,
        max_deliver: 10,
        max_ack_pending: 1_000,
        sid: 0,
        jetstream: None,
    };
    let payload_of = |message: &sluice::client::Message| {
        String::from_utf8(message.payload().to_vec()).expect("UTF-8")
    };
    let mut acked = HashSet::new();
    let mut unacked = HashSet::new();
    {
        let on_first = cluster.node(0).client();
        let consumer = on_first.consume(config.clone()).expect("a consumer");
        for i in 0..60 {
            let message = consumer
                .next_timeout(Duration::from_secs(20))
                .expect("a delivery");
            if i < 50 {
                consumer.ack(&message).expect("ack");
                acked.insert(payload_of(&message));
            } else {
                unacked.insert(payload_of(&message));
            }
        }
        on_first.flush().expect("acks sent");
        // The consumer's state is written down (and sent to the other nodes) every 100 ms.
        std::thread::sleep(Duration::from_millis(500));
        // Another node lists it, as the state it was sent says, without starting it.
        let listed = cluster.node(1).client().stream_info(&stream).expect("info");
        let workers = listed
            .consumers
            .iter()
            .find(|c| c.name == "workers")
            .expect("the consumer listed on another node");
        // The first 50 were acked; what was sent after (taken or still on its way) is not.
        let part = &workers.partitions[0];
        assert_eq!(part.ack_floor, 50, "{workers:?}");
        assert_eq!(part.ack_pending, part.next - 50, "{workers:?}");
    }
    cluster.nodes[0].as_mut().expect("n1").kill();
    cluster.nodes[0] = None;
    wait_for_group_leader(&cluster, &stream);
    publish(100..150);

    // Through another node, the consumer goes on: the messages taken and not acked first, then
    // the rest; never one that was acked.
    let on_second = cluster.node(1).client();
    let consumer = on_second.consume(config).expect("the consumer again");
    let mut seen = HashSet::new();
    while seen.len() < 100 {
        let message = consumer
            .next_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{} of 100 arrived", seen.len()));
        let payload = payload_of(&message);
        assert!(
            !acked.contains(&payload),
            "{payload} was acked and came again"
        );
        consumer.ack(&message).expect("ack");
        seen.insert(payload);
    }
    let want: HashSet<String> = (50..150).map(|i| format!("job-{i:04}")).collect();
    assert_eq!(
        seen, want,
        "every message not acked before, nothing skipped"
    );
    assert!(unacked.is_subset(&seen));
}

#[test]
fn a_purge_or_a_deletion_through_any_node_removes_the_same_messages_everywhere() {
    let (cluster, stream, _) = Cluster::with_stream("purged", 1, false);
    let subject = format!("{stream}.p");
    publish_numbered(&cluster.node(0).client(), &subject, "old", 0..30);
    for i in 0..3 {
        assert_eq!(read_all(cluster.node(i), &stream, 30).len(), 30);
    }
    let at = sluice::api::MessageLocation {
        name: stream.clone(),
        partition: 0,
        offset: 5,
        last_by_subject: None,
    };
    cluster
        .node(1)
        .client()
        .api::<_, serde_json::Value>(sluice::api::STREAM_DELETE_MESSAGE, &at)
        .expect("deleted");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, name) in NAMES.iter().enumerate() {
        let client = cluster.node(i).client();
        while client.stream_get(&stream, 0, 5).is_ok() {
            assert!(Instant::now() < deadline, "{name} still holds offset 5");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let purge = sluice::api::StreamPurge {
        name: stream.clone(),
        filter: None,
        seq: None,
        keep: None,
        below: Vec::new(),
    };
    let purged: sluice::api::Purged = cluster
        .node(2)
        .client()
        .api(sluice::api::STREAM_PURGE, &purge)
        .expect("purged");
    assert_eq!(purged.purged, 29, "the 29 messages left");
    publish_numbered(&cluster.node(0).client(), &subject, "new", 0..10);
    let want: Vec<String> = (0..10).map(|i| format!("new-{i:04}")).collect();
    for (i, name) in NAMES.iter().enumerate() {
        assert_eq!(read_all(cluster.node(i), &stream, 10), want, "{name}");
    }
    // Every copy keeps the time the leader gave each message, so a replay by time is the same
    // on every node.
    let times = |i: usize| -> Vec<u64> {
        let client = cluster.node(i).client();
        (30..40)
            .map(|offset| {
                client
                    .stream_get(&stream, 0, offset)
                    .expect("stored")
                    .timestamp_ns
            })
            .collect()
    };
    assert_eq!(times(0), times(1));
    assert_eq!(times(1), times(2));

    // A purge keeping the newest, asked of one node, and one keeping the newest of a subject,
    // asked of another: every copy keeps the same messages.
    let purge = |node: usize, filter: Option<String>, keep: u64| {
        let purge = sluice::api::StreamPurge {
            name: stream.clone(),
            filter,
            seq: None,
            keep: Some(keep),
            below: Vec::new(),
        };
        let purged: sluice::api::Purged = cluster
            .node(node)
            .client()
            .api(sluice::api::STREAM_PURGE, &purge)
            .expect("purged");
        purged.purged
    };
    // The messages a node holds, skipping those deleted from the middle.
    let held = |i: usize| -> Vec<String> {
        let client = cluster.node(i).client();
        let info = client.stream_info(&stream).expect("stream info");
        let part = &info.partitions[0];
        let Some(last) = part.last_offset else {
            return Vec::new();
        };
        (part.first_offset..=last)
            .filter_map(|offset| client.stream_get(&stream, 0, offset).ok())
            .map(|m| String::from_utf8(m.payload).expect("UTF-8 payload"))
            .collect()
    };
    let each_holds = |want: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, name) in NAMES.iter().enumerate() {
            loop {
                let held = held(i);
                if held == want {
                    break;
                }
                assert!(Instant::now() < deadline, "{name} holds {held:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(purge(1, None, 4), 6);
    let mut want: Vec<String> = (6..10).map(|i| format!("new-{i:04}")).collect();
    each_holds(&want);
    let other = format!("{stream}.q");
    publish_numbered(&cluster.node(2).client(), &other, "q", 0..3);
    publish_numbered(&cluster.node(2).client(), &subject, "p", 0..2);
    assert_eq!(purge(0, Some(other.clone()), 1), 2);
    want.extend(["q-0002", "p-0000", "p-0001"].map(String::from));
    each_holds(&want);
}

#[test]
fn replicas_must_be_one_or_the_cluster_size_and_cannot_change() {
    let cluster = Cluster::start();
    let client = cluster.node(0).client();
    let two = StreamConfig {
        replicas: 2,
        ..StreamConfig::new("two", vec!["two.>".into()])
    };
    let refused = client.stream_add(&two).expect_err("2 of 3 replicas");
    assert!(refused.to_string().contains("replicas"), "{refused}");
    let name = stream_on_shard("moved", 0);
    client.stream_add(&replicated(&name)).expect("3 of 3");
    let one = StreamConfig::new(name.as_str(), vec![format!("{name}.>")]);
    let refused = client
        .api::<_, sluice::api::StreamInfo>(sluice::api::STREAM_UPDATE, &one)
        .expect_err("replicas changed");
    assert!(refused.to_string().contains("cannot change"), "{refused}");
}

#[test]
fn a_single_node_refuses_replicas() {
    let broker = Broker::start(&[]);
    let refused = broker
        .client()
        .stream_add(&replicated("solo"))
        .expect_err("no cluster to replicate in");
    assert!(refused.to_string().contains("cluster"), "{refused}");
}

#[test]
fn a_node_behind_the_leaders_oldest_segment_restarts_its_log_where_the_leaders_starts() {
    let mut cluster = Cluster::start();
    let stream = stream_on_shard("trimmed", 0);
    // 1 MiB segments, of which retention keeps 4 to 5.
    let config = StreamConfig {
        max_bytes: Some(4 * 1024 * 1024),
        ..replicated(&stream)
    };
    cluster
        .node(0)
        .client()
        .stream_add(&config)
        .expect("stream");
    let leader_at = cluster.at(&wait_for_group_leader(&cluster, &stream));
    let behind = (leader_at + 1) % 3;
    let client = cluster.node(leader_at).client();
    let subject = format!("{stream}.x");
    let pad = ".".repeat(16 * 1024);
    let publish = |range: std::ops::Range<u64>| {
        for i in range {
            client
                .publish_durable(&subject, format!("m-{i:04}{pad}"))
                .expect("acked");
        }
    };
    publish(0..10);
    read_all(cluster.node(behind), &stream, 10);

    // 8 MiB while one follower is down: the other two drop the oldest segments, and with them
    // every entry it lacks.
    cluster.nodes[behind] = None;
    publish(10..522);
    let leader_first = || client.stream_info(&stream).expect("info").partitions[0].first_offset;
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_first() <= 10 {
        assert!(
            Instant::now() < deadline,
            "retention never ran on the leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.nodes[behind] = Some(cluster.start_node(behind));
    publish(522..542);

    // Each message's payload names its offset: every node publishes into the same offsets.
    let check = |cluster: &Cluster, last: u64| {
        let node = cluster.node(behind).client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let part = node.stream_info(&stream).expect("info").partitions[0].clone();
            if part.last_offset == Some(last) {
                assert!(
                    part.first_offset > 10,
                    "it restarted past what it held: {part:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} is at {part:?}",
                NAMES[behind]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its own retention may still drop its oldest segment while it is read.
        let mut first = node.stream_info(&stream).expect("info").partitions[0].first_offset;
        let mut offset = first;
        while offset <= last {
            match node.stream_get(&stream, 0, offset) {
                Ok(message) => {
                    let payload = String::from_utf8_lossy(&message.payload);
                    assert_eq!(
                        &payload[..6],
                        format!("m-{offset:04}"),
                        "at offset {offset}"
                    );
                    offset += 1;
                }
                Err(e) => {
                    let now = node.stream_info(&stream).expect("info").partitions[0].first_offset;
                    assert!(now > offset, "offset {offset} is missing: {e}");
                    (first, offset) = (now, now);
                }
            }
        }
        first
    };
    let first = check(&cluster, 541);
    assert!(
        cluster.node(behind).logged("far behind the leader"),
        "the node caught up from the leader's snapshot"
    );
    eprintln!("{} restarted its log at {first}", NAMES[behind]);

    // The restarted log reopens as it was, and the group goes on with it.
    cluster.nodes[behind] = None;
    cluster.nodes[behind] = Some(cluster.start_node(behind));
    wait_for_group_leader(&cluster, &stream);
    let client = cluster.node(leader_at).client();
    for i in 542..552 {
        client
            .publish_durable(&subject, format!("m-{i:04}{pad}"))
            .expect("acked");
    }
    assert!(check(&cluster, 551) >= first);
}
