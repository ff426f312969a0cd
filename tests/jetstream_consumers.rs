//! JetStream consumers driven by clients no one here wrote, unchanged: nats-py and
//! @nats-io/jetstream create pull and push consumers, fetch, ack, nak, term, see redeliveries after
//! the ack wait or a backoff, replay by sequence and by time, and share a consumer between
//! connections. Each script also runs against nats-server with
//! JetStream, so what passes here is NATS's behaviour.

mod common;

use common::{Broker, DataDir, ReferenceNats};

/// The nats-py sections that describe NATS's behaviour (and run against nats-server too).
const PY_SECTIONS: &[&str] = &[
    "pull",
    "redelivery",
    "policies",
    "replay",
    "push",
    "queue",
    "flow",
];

#[test]
fn nats_py_pulls_pushes_acks_replays_and_sees_redeliveries() {
    let broker = Broker::start(&[]);
    let url = format!("nats://{}", broker.nats_addr);
    let mut args = vec![url.as_str()];
    args.extend_from_slice(PY_SECTIONS);
    // Sluice's own: the dead-letter stream, readable through the JetStream API.
    args.push("dead_letters");
    common::run_python_client("js_consumers.py", &args);
}

#[test]
fn nats_js_fetches_and_acks() {
    let broker = Broker::start(&[]);
    common::run_node_client(
        "js_consumers.cjs",
        &[&broker.nats_addr, "pull", "max_bytes", "ack_none_kept"],
    );
}

#[test]
fn nats_js_reads_through_ordered_consumers() {
    let broker = Broker::start(&[]);
    common::run_node_client("js_ordered.cjs", &[&broker.nats_addr]);
}

/// A durable push consumer delivers whoever made it: nats-py makes one and leaves, the broker
/// restarts, and another connection binds to it and gets every message, old and new.
#[test]
fn a_durable_push_consumer_outlives_its_creator_and_a_restart() {
    let dir = DataDir::new();
    let mut broker = Broker::start_in(&dir.path, &[]);
    let url = format!("nats://{}", broker.nats_addr);
    common::run_python_client("js_consumers.py", &[&url, "durable_push_made"]);
    broker.kill();
    let broker = Broker::start_in(&dir.path, &[]);
    let url = format!("nats://{}", broker.nats_addr);
    common::run_python_client("js_consumers.py", &[&url, "durable_push_read"]);
}

#[test]
fn the_consumer_scripts_describe_nats_server() {
    let Some(reference) = ReferenceNats::start_jetstream() else {
        return;
    };
    let url = format!("nats://{}", reference.addr);
    let mut args = vec![url.as_str()];
    args.extend_from_slice(PY_SECTIONS);
    args.extend_from_slice(&["durable_push_made", "durable_push_read"]);
    common::run_python_client("js_consumers.py", &args);
    common::run_node_client(
        "js_consumers.cjs",
        &[&reference.addr, "pull", "max_bytes", "ack_none_kept"],
    );
    common::run_node_client("js_ordered.cjs", &[&reference.addr]);
}
