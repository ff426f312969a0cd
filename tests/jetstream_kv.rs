//! JetStream key-value buckets driven by nats-py and @nats-io/kv, unchanged: create, put, get,
//! update with a revision, create, delete, purge, older revisions; and keys, history and watchers,
//! which run on ordered push consumers. Each script also runs against
//! nats-server with JetStream, so what passes here is NATS's behaviour. (async-nats's buckets are
//! in `jetstream_async_nats.rs`.)

mod common;

use common::{Broker, ReferenceNats};

#[test]
fn nats_py_uses_a_bucket() {
    let broker = Broker::start(&[]);
    common::run_python_client("js_kv.py", &[&format!("nats://{}", broker.nats_addr)]);
}

#[test]
fn nats_js_uses_a_bucket() {
    let broker = Broker::start(&[]);
    common::run_node_client("js_kv.cjs", &[&broker.nats_addr]);
}

#[test]
fn nats_py_lists_keys_reads_history_and_watches() {
    let broker = Broker::start(&[]);
    common::run_python_client("js_kv_watch.py", &[&format!("nats://{}", broker.nats_addr)]);
}

#[test]
fn nats_js_lists_keys_reads_history_and_watches() {
    let broker = Broker::start(&[]);
    common::run_node_client("js_kv_watch.cjs", &[&broker.nats_addr]);
}

#[test]
fn the_bucket_scripts_describe_nats_server() {
    let Some(reference) = ReferenceNats::start_jetstream() else {
        return;
    };
    common::run_python_client("js_kv.py", &[&format!("nats://{}", reference.addr)]);
    common::run_node_client("js_kv.cjs", &[&reference.addr]);
    common::run_python_client("js_kv_watch.py", &[&format!("nats://{}", reference.addr)]);
    common::run_node_client("js_kv_watch.cjs", &[&reference.addr]);
}
