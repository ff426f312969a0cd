//! JetStream pull consumers driven by clients no one here wrote, unchanged: nats-py and
//! @nats-io/jetstream create consumers, fetch, ack, nak, term, see redeliveries after the ack wait
//! and share a consumer between connections. Each script also runs against nats-server with
//! JetStream, so what passes here is NATS's behaviour.

mod common;

use common::{Broker, ReferenceNats};

#[test]
fn nats_py_pulls_acks_and_sees_redeliveries() {
    let broker = Broker::start(&[]);
    let url = format!("nats://{}", broker.nats_addr);
    common::run_python_client("js_consumers.py", &[&url, "pull", "redelivery", "policies"]);
}

#[test]
fn nats_js_fetches_and_acks() {
    let broker = Broker::start(&[]);
    common::run_node_client("js_consumers.cjs", &[&broker.nats_addr, "pull"]);
}

#[test]
fn the_consumer_scripts_describe_nats_server() {
    let Some(reference) = ReferenceNats::start_jetstream() else {
        return;
    };
    let url = format!("nats://{}", reference.addr);
    common::run_python_client("js_consumers.py", &[&url, "pull", "redelivery", "policies"]);
    common::run_node_client("js_consumers.cjs", &[&reference.addr, "pull"]);
}
