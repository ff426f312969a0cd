//! Kafka clients no one here wrote (kafka-python) against a three-node cluster: a topic created
//! with a replication factor of 3 is a replicated stream whose batches take consecutive offsets on
//! every node; a producer told of every node goes on through the new leader when its leader dies.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::replicated::Cluster;

/// The stream serving a topic, as node 0 lists it.
fn topic_stream(cluster: &Cluster, topic: &str) -> sluice::api::StreamConfig {
    cluster
        .node(0)
        .client()
        .stream_list()
        .expect("streams")
        .into_iter()
        .find(|s| s.subjects == [topic])
        .expect("the topic's stream")
}

#[test]
fn kafka_batches_on_a_replicated_topic_take_consecutive_offsets_on_every_node() {
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!(
            "skipped: SLUICE_PYTHON is not set (./test sets it after installing kafka-python)"
        );
        return;
    };
    let cluster = Cluster::start();
    let topic = "jobs.replicated";
    let script = format!(
        "{}/tests/py/kafka_replicated.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let status = std::process::Command::new(python)
        .args([
            script.as_str(),
            &cluster.node(0).kafka_addr,
            &cluster.node(1).kafka_addr,
            topic,
        ])
        .status()
        .expect("run the client");
    assert!(status.success(), "the Kafka client failed");
    // Every node holds the 300 records, each a batch of one, at the same offsets.
    let stream = topic_stream(&cluster, topic);
    assert_eq!(stream.replicas, 3);
    let logs = cluster.logs(&stream.name, 300);
    assert_eq!(logs[0].len(), 300);
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
}

#[test]
fn a_kafka_producer_goes_on_through_the_new_leader_when_its_leader_dies() {
    let Some(command) = common::python_client("kafka_failover.py") else {
        return;
    };
    let mut cluster = Cluster::start();
    let topic = "jobs.failover";
    let servers: Vec<String> = (0..3).map(|i| cluster.node(i).kafka_addr.clone()).collect();
    let mut command = command;
    let mut child = command
        .args([servers.join(",").as_str(), topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok);
    let first = lines.next().expect("the client's first line");
    let leader = first.strip_prefix("leader ").expect("the leader's address");
    let leading = servers
        .iter()
        .position(|s| s == leader)
        .unwrap_or_else(|| panic!("{leader} is none of {servers:?}"));
    // The topic took the cluster's size as its replication factor.
    assert_eq!(topic_stream(&cluster, topic).replicas, 3);

    cluster.nodes[leading].take().expect("the leader").kill();
    let left: Vec<&str> = (0..3)
        .filter(|i| *i != leading)
        .map(|i| servers[i].as_str())
        .collect();
    writeln!(stdin, "{}", left.join(",")).expect("tell the client");
    let rest: Vec<String> = lines.collect();
    assert!(child.wait().expect("the client").success(), "{rest:?}");
    assert_eq!(rest, ["ok"]);
}

#[test]
fn a_kafka_group_has_one_coordinator_and_its_commits_outlive_the_coordinators_node() {
    let Some(mut command) = common::python_client("kafka_groups_cluster.py") else {
        return;
    };
    let mut cluster = Cluster::start();
    let servers: Vec<String> = (0..3).map(|i| cluster.node(i).kafka_addr.clone()).collect();
    let mut child = command
        .args([servers.join(",").as_str(), "jobs.grouped"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok);
    let first = lines.next().expect("the client's first line");
    let coordinator = first.strip_prefix("coordinator ").expect("the coordinator");
    let at = servers
        .iter()
        .position(|s| s == coordinator)
        .unwrap_or_else(|| panic!("{coordinator} is none of {servers:?}"));
    // Created with a replication factor of 1, the topic is on every node all the same.
    assert_eq!(topic_stream(&cluster, "jobs.grouped").replicas, 3);

    cluster.nodes[at].take().expect("the coordinator").kill();
    let left: Vec<&str> = (0..3)
        .filter(|i| *i != at)
        .map(|i| servers[i].as_str())
        .collect();
    writeln!(stdin, "{}", left.join(",")).expect("tell the client");
    assert_eq!(lines.next().as_deref(), Some("resumed"));

    // Back, it coordinates the group again, from the commits made while it was away.
    cluster.nodes[at] = Some(cluster.start_node(at));
    common::replicated::wait_for_peers_of(&cluster, at);
    writeln!(stdin).expect("tell the client");
    let rest: Vec<String> = lines.collect();
    assert!(child.wait().expect("the client").success(), "{rest:?}");
    assert_eq!(rest, ["ok"]);
}
