//! Kafka clients no one here wrote (kafka-python) against a three-node cluster: a topic created
//! with a replication factor of 3 is a replicated stream whose batches take consecutive offsets on
//! every node, and a producer given every node goes on through another when its node dies.

mod common;

use common::replicated::Cluster;

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
    let stream = cluster
        .node(0)
        .client()
        .stream_list()
        .expect("streams")
        .into_iter()
        .find(|s| s.subjects == [topic])
        .expect("the topic's stream");
    assert_eq!(stream.replicas, 3);
    let logs = cluster.logs(&stream.name, 300);
    assert_eq!(logs[0].len(), 300);
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
}

#[test]
fn a_kafka_producer_goes_on_through_another_node_when_its_node_dies() {
    use std::io::{BufRead, BufReader, Write};
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!(
            "skipped: SLUICE_PYTHON is not set (./test sets it after installing kafka-python)"
        );
        return;
    };
    let mut cluster = Cluster::start();
    let topic = "jobs.failover";
    let servers: Vec<String> = (0..3).map(|i| cluster.node(i).kafka_addr.clone()).collect();
    let script = format!("{}/tests/py/kafka_failover.py", env!("CARGO_MANIFEST_DIR"));
    let mut client = std::process::Command::new(python)
        .args([script.as_str(), &servers.join(","), topic])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("phase 1"), "the client's first half");
    cluster.nodes[0].take().expect("n1").kill();
    writeln!(client.stdin.take().expect("stdin")).expect("tell the client");
    let last = lines.next().and_then(Result::ok);
    assert!(
        client.wait().expect("the client").success(),
        "the client failed"
    );
    assert_eq!(last.as_deref(), Some("ok"));
    let stream = cluster
        .node(1)
        .client()
        .stream_list()
        .expect("streams")
        .into_iter()
        .find(|s| s.subjects == [topic])
        .expect("the topic's stream");
    let want: Vec<String> = (0..100).map(|i| format!("m-{i:03}")).collect();
    for i in [1, 2] {
        let mut held = common::replicated::read_all(cluster.node(i), &stream.name, 100);
        held.dedup();
        assert_eq!(
            held, want,
            "node {i}: every acknowledged record, in order, once"
        );
    }
}
