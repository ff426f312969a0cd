//! Kafka clients no one here wrote (kafka-python) against a three-node cluster: a topic created
//! with a replication factor of 3 is a replicated stream whose batches take consecutive offsets on
//! every node; a producer told of every node goes on through the new leader when its leader dies.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Stdio};

use common::replicated::Cluster;

/// The stream serving a topic, as the first live node lists it.
fn topic_stream(cluster: &Cluster, topic: &str) -> sluice::api::StreamConfig {
    cluster.live()[0]
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

/// A Kafka client script run with every node's Kafka address and a topic, driven through a node's
/// death: the node its first line names (after `prefix`) is killed, and the client is told the
/// nodes left.
struct Killing {
    child: common::Reaped,
    stdin: ChildStdin,
    lines: Box<dyn Iterator<Item = String>>,
    /// The node killed.
    killed: usize,
}

impl Killing {
    fn start(cluster: &mut Cluster, script: &str, topic: &str, prefix: &str) -> Option<Killing> {
        let mut command = common::python_client(script)?;
        let servers: Vec<String> = (0..3).map(|i| cluster.node(i).kafka_addr.clone()).collect();
        let mut child = common::Reaped(
            command
                .args([servers.join(",").as_str(), topic])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the client"),
        );
        let mut stdin = child.0.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.0.stdout.take().expect("stdout"))
            .lines()
            .map_while(Result::ok);
        let first = lines.next().expect("the client's first line");
        let named = first.strip_prefix(prefix).expect("a node named");
        let killed = servers
            .iter()
            .position(|s| s == named)
            .unwrap_or_else(|| panic!("{named} is none of {servers:?}"));
        cluster.nodes[killed].take().expect("the node named").kill();
        let left: Vec<&str> = (0..3)
            .filter(|i| *i != killed)
            .map(|i| servers[i].as_str())
            .collect();
        writeln!(stdin, "{}", left.join(",")).expect("tell the client");
        Some(Killing {
            child,
            stdin,
            lines: Box::new(lines),
            killed,
        })
    }

    /// Waits for the client, which must end with "ok".
    fn finish(mut self) {
        let rest: Vec<String> = self.lines.collect();
        assert!(
            self.child.0.wait().expect("the client").success(),
            "{rest:?}"
        );
        assert_eq!(rest, ["ok"]);
    }
}

#[test]
fn a_kafka_producer_goes_on_through_the_new_leader_when_its_leader_dies() {
    let mut cluster = Cluster::start();
    let topic = "jobs.failover";
    let Some(client) = Killing::start(&mut cluster, "kafka_failover.py", topic, "leader ") else {
        return;
    };
    // The topic took the cluster's size as its replication factor.
    assert_eq!(topic_stream(&cluster, topic).replicas, 3);
    client.finish();
}

#[test]
fn a_kafka_group_has_one_coordinator_and_its_commits_outlive_the_coordinators_node() {
    let mut cluster = Cluster::start();
    let topic = "jobs.grouped";
    let script = "kafka_groups_cluster.py";
    let Some(mut client) = Killing::start(&mut cluster, script, topic, "coordinator ") else {
        return;
    };
    // Created with a replication factor of 1, the topic is on every node all the same.
    assert_eq!(topic_stream(&cluster, topic).replicas, 3);
    assert_eq!(client.lines.next().as_deref(), Some("resumed"));

    // Back, it coordinates the group again, from the commits made while it was away.
    let at = client.killed;
    cluster.nodes[at] = Some(cluster.start_node(at));
    common::replicated::wait_for_peers_of(&cluster, at);
    writeln!(client.stdin).expect("tell the client");
    client.finish();
}
