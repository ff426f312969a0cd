//! Sluice's NATS port driven by nats-py, a NATS client in another language: pub/sub, wildcards,
//! headers, queue groups, request/reply, no responders and auto-unsubscribe. `./test` installs
//! nats-py into a virtual environment and names its interpreter in `SLUICE_PYTHON`.

mod common;

use std::process::Command;

use common::Broker;

#[test]
fn nats_py_works_unchanged() {
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!("skipped: SLUICE_PYTHON is not set (./test sets it after installing nats-py)");
        return;
    };
    let broker = Broker::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/nats_client.py");
    let output = Command::new(python)
        .arg(script)
        .arg(format!("nats://{}", broker.nats_addr))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout.trim(), "ok");
}
