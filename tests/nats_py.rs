//! Sluice's NATS port driven by nats-py, a NATS client in another language: pub/sub, wildcards,
//! headers, queue groups, request/reply, no responders and auto-unsubscribe. `./test` installs
//! nats-py into a virtual environment and names its interpreter in `SLUICE_PYTHON`.

mod common;

use common::Broker;

#[test]
fn nats_py_works_unchanged() {
    let broker = Broker::start(&[]);
    common::run_python_client("nats_client.py", &[&format!("nats://{}", broker.nats_addr)]);
}
