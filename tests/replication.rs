//! Replicated streams on three nodes on loopback: every acknowledged publish survives the death of
//! its partition's leader and is readable, in order, from every node afterwards; a node that
//! cannot reach a majority acknowledges nothing; a node that comes back catches up.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{info, node, node_dialing, payloads, signal, wait_for_one_leader};
use common::proxy::Links;
use common::{Broker, DataDir, Ports, ReferenceNats};
use sluice::api::{shard_for, ConsumerConfig, DeliverPolicy, GroupInfo, StreamConfig};
use sluice::client::{Client, ClientError};

const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// Three nodes listing each other, with an agreed meta leader.
struct Cluster {
    dirs: [DataDir; 3],
    ports: [Ports; 3],
    nodes: Vec<Option<Broker>>,
    /// With `proxied`: the proxies every link goes through.
    links: Option<Links>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(false)
    }

    /// Three nodes; with `proxied`, every link between two goes through a proxy that can cut it.
    fn start_with(proxied: bool) -> Cluster {
        let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
        let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
        let links = proxied.then(|| Links::new(&ports.each_ref().map(|p| p.cluster.as_str())));
        let mut cluster = Cluster {
            dirs,
            ports,
            nodes: Vec::new(),
            links,
        };
        cluster.nodes = (0..3).map(|i| Some(cluster.start_node(i))).collect();
        wait_for_one_leader(&cluster.live());
        cluster
    }

    /// Three nodes with a replicated stream (its partition on `shard`), added through node 0;
    /// the stream's name and the node leading its group.
    fn with_stream(prefix: &str, shard: u32, proxied: bool) -> (Cluster, String, usize) {
        let cluster = Cluster::start_with(proxied);
        let stream = stream_on_shard(prefix, shard);
        cluster
            .node(0)
            .client()
            .stream_add(&replicated(&stream))
            .expect("a replicated stream");
        let leader = wait_for_group_leader(&cluster, &stream);
        let leader_at = cluster.at(&leader);
        (cluster, stream, leader_at)
    }

    fn start_node(&self, i: usize) -> Broker {
        if let Some(links) = &self.links {
            return node_dialing(&self.dirs[i], &self.ports[i], NAMES[i], &links.routes_of(i));
        }
        let all = [&self.ports[0], &self.ports[1], &self.ports[2]];
        node(&self.dirs[i], &self.ports[i], NAMES[i], &all)
    }

    /// Cuts (or heals) every link between node `i` and the others.
    fn isolate(&self, i: usize, cut: bool) {
        self.links
            .as_ref()
            .expect("links through proxies")
            .isolate(i, cut);
    }

    fn live(&self) -> Vec<&Broker> {
        self.nodes.iter().flatten().collect()
    }

    fn at(&self, name: &str) -> usize {
        NAMES
            .iter()
            .position(|n| *n == name)
            .expect("a node's name")
    }

    fn node(&self, i: usize) -> &Broker {
        self.nodes[i].as_ref().expect("a live node")
    }
}

/// A stream name whose only partition is owned by `shard` on a node of two shards: shard 1 has
/// its group's messages pass between shard 0 (which keeps the links) and itself.
fn stream_on_shard(prefix: &str, shard: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| shard_for(name, 0, 2) == shard)
        .expect("some name")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn replicated(name: &str) -> StreamConfig {
    StreamConfig {
        replicas: 3,
        ..StreamConfig::new(name, vec![format!("{name}.>")])
    }
}

/// The group of the stream's partition 0 as `broker` sees it.
fn group(broker: &Broker, stream: &str) -> Option<GroupInfo> {
    info(broker)
        .groups
        .into_iter()
        .find(|g| g.stream == stream && g.partition == 0)
}

/// Waits until every live node names the same leader of the stream's group, which sees itself
/// leading; returns the leader's name.
fn wait_for_group_leader(cluster: &Cluster, stream: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let groups: Vec<Option<GroupInfo>> =
            cluster.live().iter().map(|n| group(n, stream)).collect();
        let leaders: HashSet<Option<String>> = groups
            .iter()
            .map(|g| g.as_ref().and_then(|g| g.leader.clone()))
            .collect();
        if let [Some(leader)] = &leaders.into_iter().collect::<Vec<_>>()[..] {
            let leading = groups
                .iter()
                .flatten()
                .any(|g| g.role == "leader" && g.leader.as_deref() == Some(leader.as_str()));
            if leading {
                return leader.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed group leader: {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every payload of the stream's partition 0 on `broker`, in offset order, once it holds at
/// least `want` messages.
fn read_all(broker: &Broker, stream: &str, want: u64) -> Vec<String> {
    let client = broker.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = client.stream_info(stream).expect("stream info");
        let messages = info.partitions[0].messages;
        if messages >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} holds {messages} messages, {want} wanted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    payloads(broker, stream)
}

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

    let logs: Vec<Vec<String>> = (0..3)
        .map(|i| read_all(cluster.node(i), &stream, acked.len() as u64))
        .collect();
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
    let logs: Vec<Vec<String>> = (0..3)
        .map(|i| read_all(cluster.node(i), &stream, acked.len() as u64))
        .collect();
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
    let logs: Vec<Vec<String>> = (0..3)
        .map(|i| read_all(cluster.node(i), &stream, acked.len() as u64))
        .collect();
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

/// Runs `tests/py/replicated_failover.py` against the node at `url` and calls `kill` (which kills
/// that node) once the client says its first half is done; false if nats-py is not installed.
fn run_failover_client(url: &str, stream: &str, kill: impl FnOnce()) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!("skipped: SLUICE_PYTHON is not set (./test sets it after installing nats-py)");
        return false;
    };
    let script = format!(
        "{}/tests/py/replicated_failover.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut client = std::process::Command::new(python)
        .args([script.as_str(), url, stream])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("phase 1"), "the client's first half");
    kill();
    writeln!(client.stdin.take().expect("stdin")).expect("tell the client");
    let last = lines.next().and_then(Result::ok);
    assert!(
        client.wait().expect("the client").success(),
        "the client failed"
    );
    assert_eq!(last.as_deref(), Some("ok"));
    true
}

#[test]
fn a_nats_client_learns_the_other_nodes_and_publishes_and_consumes_on_after_its_node_dies() {
    let mut cluster = Cluster::start();
    let stream = stream_on_shard("JOBS", 1);
    let url = format!("nats://{}", cluster.ports[0].nats);
    let first = cluster.nodes[0].take();
    let ran = run_failover_client(&url, &stream, || {
        // The node the client is connected to dies.
        first.expect("n1").kill();
    });
    if !ran {
        return;
    }
    let want: Vec<String> = (0..100).map(|i| format!("m-{i:03}")).collect();
    for i in [1, 2] {
        assert_eq!(
            read_all(cluster.node(i), &stream, 100),
            want,
            "{}",
            NAMES[i]
        );
    }
}

/// Runs `tests/py/connect_urls.py` against the node at `url`, which should announce two nodes,
/// and calls `third` to start the third, which it should announce next; false if nats-py is not
/// installed.
fn run_announce_client<T>(url: &str, third: impl FnOnce() -> T) -> Option<T> {
    use std::io::{BufRead, BufReader};
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!("skipped: SLUICE_PYTHON is not set (./test sets it after installing nats-py)");
        return None;
    };
    let script = format!("{}/tests/py/connect_urls.py", env!("CARGO_MANIFEST_DIR"));
    let mut client = std::process::Command::new(python)
        .args([script.as_str(), url, "2", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(
        first.as_deref(),
        Some("have 2"),
        "the two nodes up are announced"
    );
    let started = third();
    let last = lines.next().and_then(Result::ok);
    assert!(
        client.wait().expect("the client").success(),
        "the client failed"
    );
    assert_eq!(
        last.as_deref(),
        Some("ok"),
        "the third node is announced once it comes"
    );
    Some(started)
}

#[test]
fn a_nats_client_is_told_of_a_node_that_comes_later() {
    let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
    let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
    let all = [&ports[0], &ports[1], &ports[2]];
    let _first = node(&dirs[0], &ports[0], NAMES[0], &all);
    let _second = node(&dirs[1], &ports[1], NAMES[1], &all);
    let url = format!("nats://{}", ports[0].nats);
    run_announce_client(&url, || node(&dirs[2], &ports[2], NAMES[2], &all));
}

/// Three nats-server processes on loopback routed to each other, started one at a time.
struct ReferenceCluster {
    ports: Vec<u16>,
    routes: String,
}

impl ReferenceCluster {
    fn new() -> ReferenceCluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        ReferenceCluster {
            ports,
            routes: routes.join(","),
        }
    }

    /// Starts node `i`, with JetStream if asked; `None` where nats-server is not installed.
    fn start(&self, i: usize, jetstream: bool) -> Option<ReferenceNats> {
        let cluster = format!("nats://127.0.0.1:{}", self.ports[i]);
        let args = [
            "--cluster_name",
            "reference",
            "--server_name",
            NAMES[i],
            "--cluster",
            cluster.as_str(),
            "--routes",
            self.routes.as_str(),
        ];
        if jetstream {
            ReferenceNats::start_jetstream_with(&args)
        } else {
            ReferenceNats::start_with(&args)
        }
    }
}

#[test]
fn a_nats_server_cluster_tells_its_clients_of_a_node_that_comes_later_too() {
    let reference = ReferenceCluster::new();
    let (Some(first), Some(_second)) = (reference.start(0, false), reference.start(1, false))
    else {
        return;
    };
    let url = format!("nats://{}", first.addr);
    run_announce_client(&url, || reference.start(2, false));
}

/// The same client against three nats-server processes clustered with JetStream: the script
/// describes NATS's behaviour, not only Sluice's reading of it.
#[test]
fn the_failover_client_behaves_the_same_against_a_nats_server_cluster() {
    let reference = ReferenceCluster::new();
    let mut servers: Vec<Option<ReferenceNats>> = Vec::new();
    for i in 0..3 {
        let Some(server) = reference.start(i, true) else {
            return;
        };
        servers.push(Some(server));
    }
    let url = format!("nats://{}", servers[0].as_ref().expect("n1").addr);
    let first = servers[0].take();
    run_failover_client(&url, "JOBS", || drop(first));
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
