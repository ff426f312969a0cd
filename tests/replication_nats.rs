//! NATS clients no one here wrote (nats-py) against a three-node cluster: they learn the other
//! nodes from INFO `connect_urls`, are told of a node that comes later, and publish and consume on
//! through another node when theirs dies; the same scripts run against a nats-server cluster.

mod common;

use std::cell::RefCell;

use common::cluster::node;
use common::replicated::{read_all, stream_on_shard, Cluster, ReferenceCluster, NAMES};
use common::{python_client, run_python_client, DataDir, Ports, ReferenceNats};

/// What the test does when the client prints a line.
type Step<'a> = (&'a str, Box<dyn FnOnce() + 'a>);

/// Runs a client script with `args`; at each step, once the client prints the step's line, runs
/// its action and tells the client (which reads a line). Checks that it ends with "ok". False if
/// nats-py is not installed.
fn run_stepped_client(script: &str, args: &[&str], steps: Vec<Step<'_>>) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Some(mut command) = python_client(script) else {
        return false;
    };
    let mut client = common::Reaped(
        command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the client"),
    );
    let mut lines = BufReader::new(client.0.stdout.take().expect("stdout")).lines();
    let mut stdin = client.0.stdin.take().expect("stdin");
    for (line, action) in steps {
        let said = lines.next().and_then(Result::ok);
        assert_eq!(said.as_deref(), Some(line), "the client's step");
        action();
        writeln!(stdin).expect("tell the client");
    }
    let last = lines.next().and_then(Result::ok);
    assert!(
        client.0.wait().expect("the client").success(),
        "the client failed"
    );
    assert_eq!(last.as_deref(), Some("ok"));
    true
}

/// Runs a client script with `args`, and calls `kill` once the client prints `first` (the script
/// then reads a line); checks that it ends with "ok". False if nats-py is not installed.
fn run_killing_client(script: &str, args: &[&str], first: &str, kill: impl FnOnce()) -> bool {
    run_stepped_client(script, args, vec![(first, Box::new(kill))])
}

/// Runs `tests/py/replicated_failover.py` against the node at `url` and calls `kill` (which kills
/// that node) once the client says its first half is done; false if nats-py is not installed.
fn run_failover_client(url: &str, stream: &str, kill: impl FnOnce()) -> bool {
    run_killing_client("replicated_failover.py", &[url, stream], "phase 1", kill)
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
    let mut command = python_client("connect_urls.py")?;
    let mut client = command
        .args([url, "2", "3"])
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

/// Runs `tests/py/kv_replicated.py` against the nodes at `urls`.
fn run_kv_client(urls: &[String]) -> bool {
    run_python_client("kv_replicated.py", &[&urls.join(","), "settings"])
}

#[test]
fn a_replicated_key_value_bucket_and_a_limited_stream_keep_the_same_messages_on_every_node() {
    let cluster = Cluster::start();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("nats://{}", cluster.node(i).nats_addr))
        .collect();
    run_kv_client(&urls);
}

#[test]
fn the_key_value_client_behaves_the_same_against_a_nats_server_cluster() {
    let Some(servers) = ReferenceCluster::new().start_all() else {
        return;
    };
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("nats://{}", s.addr))
        .collect();
    run_kv_client(&urls);
}

/// Runs `tests/py/expected_sequence.py` against the node at `url`, with a stream of that name.
fn run_expected_sequence_client(url: &str, stream: &str) -> bool {
    run_python_client("expected_sequence.py", &[url, stream])
}

#[test]
fn publishes_in_flight_each_expecting_the_last_sequence_are_all_stored() {
    let cluster = Cluster::start();
    // Through a follower as well as the leader: the group's leader checks them either way.
    for i in 0..3 {
        let url = format!("nats://{}", cluster.node(i).nats_addr);
        if !run_expected_sequence_client(&url, &format!("SEQ{i}")) {
            return;
        }
    }
}

#[test]
fn the_expected_sequence_client_behaves_the_same_against_a_nats_server_cluster() {
    let Some(servers) = ReferenceCluster::new().start_all() else {
        return;
    };
    for (i, server) in servers.iter().enumerate() {
        run_expected_sequence_client(&format!("nats://{}", server.addr), &format!("SEQ{i}"));
    }
}

#[test]
fn an_ack_answered_to_ack_sync_is_kept_when_the_consumers_node_dies_at_once() {
    let mut cluster = Cluster::start();
    let stream = stream_on_shard("ACKS", 1);
    let urls: Vec<String> = (0..2)
        .map(|i| format!("nats://{}", cluster.ports[i].nats))
        .collect();
    let first = cluster.nodes[0].take();
    run_killing_client(
        "ack_kept.py",
        &[&urls[0], &urls[1], &stream],
        "acked",
        || first.expect("n1").kill(),
    );
}

/// The same client against three nats-server processes clustered with JetStream.
#[test]
fn an_ack_answered_to_ack_sync_is_kept_on_a_nats_server_cluster_too() {
    let Some(servers) = ReferenceCluster::new().start_all() else {
        return;
    };
    let mut servers: Vec<Option<ReferenceNats>> = servers.into_iter().map(Some).collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("nats://{}", s.as_ref().expect("a server").addr))
        .collect();
    let first = servers[0].take();
    run_killing_client(
        "ack_kept.py",
        &[&urls[0], &urls[1], "ACKS"],
        "acked",
        || drop(first),
    );
}

#[test]
fn a_node_taking_a_consumer_up_starts_from_the_acks_a_majority_kept_not_only_its_own() {
    let mut cluster = Cluster::start_with(true);
    let stream = stream_on_shard("TAKEN", 1);
    let urls: Vec<String> = (0..2)
        .map(|i| format!("nats://{}", cluster.ports[i].nats))
        .collect();
    let first = RefCell::new(cluster.nodes[0].take());
    let cluster = &cluster;
    run_stepped_client(
        "ack_kept.py",
        &[&urls[0], &urls[1], &stream, "pause"],
        vec![
            // The consumer's states now reach the third node only: its acks are kept there.
            ("taken", Box::new(|| cluster.cut_between(0, 1, true))),
            (
                "acked",
                Box::new(|| first.borrow_mut().take().expect("n1").kill()),
            ),
        ],
    );
}
