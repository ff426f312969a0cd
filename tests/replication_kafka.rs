//! Kafka clients no one here wrote (kafka-python) against a three-node cluster: a topic created
//! with a replication factor of 3 is a replicated stream whose batches take consecutive offsets on
//! every node.

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
