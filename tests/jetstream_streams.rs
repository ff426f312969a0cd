//! The JetStream stream API driven by clients no one here wrote, unchanged: nats-py and
//! @nats-io/jetstream create, update, list, find and delete streams and publish with acks. Each
//! script also runs against nats-server with JetStream, so what passes here is NATS's behaviour.

mod common;

use common::{Broker, ReferenceNats};

/// The sections of the scripts that Sluice answers.
const SECTIONS: &[&str] = &["account", "streams", "messages", "dedup"];
/// Every section, for the reference server.
const ALL_SECTIONS: &[&str] = &["account", "streams", "messages", "dedup"];
const PY_ONLY_SECTIONS: &[&str] = &["expectations", "purge", "limits", "deletes", "ages"];

fn args<'a>(url: &'a str, sections: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![url];
    args.extend_from_slice(sections);
    args
}

#[test]
fn nats_py_manages_streams_and_publishes_with_acks() {
    let broker = Broker::start(&[]);
    let url = format!("nats://{}", broker.nats_addr);
    let mut py = SECTIONS.to_vec();
    py.extend_from_slice(PY_ONLY_SECTIONS);
    common::run_python_client("js_streams.py", &args(&url, &py));
}

#[test]
fn nats_js_manages_streams_and_publishes_with_acks() {
    let broker = Broker::start(&[]);
    common::run_node_client("js_streams.cjs", &args(&broker.nats_addr, SECTIONS));
}

#[test]
fn the_stream_scripts_describe_nats_server() {
    let Some(reference) = ReferenceNats::start_jetstream() else {
        return;
    };
    let url = format!("nats://{}", reference.addr);
    let mut py = ALL_SECTIONS.to_vec();
    py.extend_from_slice(PY_ONLY_SECTIONS);
    common::run_python_client("js_streams.py", &args(&url, &py));
    common::run_node_client("js_streams.cjs", &args(&reference.addr, ALL_SECTIONS));
}
