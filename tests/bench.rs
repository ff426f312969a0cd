//! `sluice bench` end to end: every scenario against a broker it starts itself (`--embedded`) or
//! one started beside it, over both protocols, with its JSON result and its plot.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Broker, DataDir};
use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("bench")
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run sluice bench")
}

/// Runs a bench that must succeed and returns its JSON result.
fn bench_json(dir: &Path, name: &str, args: &[&str]) -> Value {
    let path = dir.join(format!("{name}.json"));
    let mut all = args.to_vec();
    all.extend(["--json", path.to_str().unwrap(), "--label", name]);
    let out = bench(&all);
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("msgs/s"), "the table is printed: {stdout}");
    assert!(stdout.contains(name), "the table names the run: {stdout}");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check_counts(result: &Value, msgs: u64, deliveries: u64) {
    assert_eq!(result["msgs"], msgs, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert!(result["msgs_per_s"].as_f64().unwrap() > 0.0, "{result}");
    let rate = result["deliveries_per_s"].as_f64().unwrap();
    let elapsed = result["elapsed_s"].as_f64().unwrap();
    let delivered = (rate * elapsed).round() as u64;
    assert_eq!(delivered, deliveries, "deliveries counted: {result}");
}

fn check_latency(result: &Value) {
    let l = &result["latency_us"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{result}");
    assert!(result["percentiles"].as_array().unwrap().len() > 10);
}

#[test]
fn core_scenarios_embedded() {
    let dir = DataDir::new();
    let n = 20_000u64;
    let msgs = n.to_string();
    let r = bench_json(
        &dir.path,
        "pubsub",
        &[
            "--embedded",
            "--scenario",
            "pubsub",
            "--msgs",
            &msgs,
            "--subs",
            "2",
        ],
    );
    check_counts(&r, n, 2 * n);
    check_latency(&r);
    assert!(
        r["rss_bytes"].as_u64().unwrap() > 1 << 20,
        "server memory: {r}"
    );
    let r = bench_json(
        &dir.path,
        "fanout",
        &[
            "--embedded",
            "--scenario",
            "fanout",
            "--msgs",
            &msgs,
            "--pubs",
            "2",
            "--subs",
            "3",
        ],
    );
    check_counts(&r, n, 3 * n);
    let r = bench_json(
        &dir.path,
        "queue",
        &[
            "--embedded",
            "--scenario",
            "queue",
            "--msgs",
            &msgs,
            "--pubs",
            "2",
            "--subs",
            "3",
            "--size",
            "100",
        ],
    );
    check_counts(&r, n, n);
    assert_eq!(r["size"], 100);
    let r = bench_json(
        &dir.path,
        "request",
        &[
            "--embedded",
            "--scenario",
            "request",
            "--msgs",
            "5000",
            "--in-flight",
            "8",
            "--subs",
            "2",
        ],
    );
    check_counts(&r, 5000, 5000);
    check_latency(&r);
}

#[test]
fn open_loop_rate_is_kept() {
    let dir = DataDir::new();
    // 2,000 messages at 4,000 per second: about half a second, not as fast as possible.
    let r = bench_json(
        &dir.path,
        "rate",
        &["--embedded", "--msgs", "2000", "--rate", "4000"],
    );
    check_counts(&r, 2000, 2000);
    let elapsed = r["elapsed_s"].as_f64().unwrap();
    assert!(elapsed >= 0.45, "paced to the rate: {r}");
    check_latency(&r);
}

#[test]
fn durable_scenarios_on_both_protocols() {
    let dir = DataDir::new();
    let r = bench_json(
        &dir.path,
        "stream",
        &[
            "--embedded",
            "--scenario",
            "stream",
            "--msgs",
            "3000",
            "--in-flight",
            "64",
            "--pubs",
            "2",
            "--subjects",
            "50",
        ],
    );
    check_counts(&r, 3000, 3000);
    check_latency(&r);
    let r = bench_json(
        &dir.path,
        "stream-nats",
        &[
            "--embedded",
            "--protocol",
            "nats",
            "--scenario",
            "stream",
            "--msgs",
            "2000",
            "--in-flight",
            "32",
        ],
    );
    check_counts(&r, 2000, 2000);
    let r = bench_json(
        &dir.path,
        "consume",
        &[
            "--embedded",
            "--scenario",
            "consume",
            "--msgs",
            "3000",
            "--subs",
            "2",
        ],
    );
    check_counts(&r, 3000, 3000);
    assert!(r["latency_us"].is_null());
}

#[test]
fn against_a_running_broker_and_its_stored_messages() {
    let dir = DataDir::new();
    let broker = Broker::start(&[]);
    let nats = broker.nats_addr.clone();
    let r = bench_json(
        &dir.path,
        "nats-pubsub",
        &[
            "--protocol",
            "nats",
            "-s",
            &nats,
            "--msgs",
            "10000",
            "--subs",
            "2",
        ],
    );
    check_counts(&r, 10_000, 20_000);
    let r = bench_json(
        &dir.path,
        "native-stream",
        &[
            "-s",
            &broker.addr,
            "--scenario",
            "stream",
            "--msgs",
            "1500",
            "--in-flight",
            "16",
        ],
    );
    check_counts(&r, 1500, 1500);
    // What the benchmark acknowledged is really in the stream.
    let info = broker.client().stream_info("BENCH").unwrap();
    assert_eq!(info.messages(), 1500);
}

#[test]
fn plots_overlay_runs_with_a_legend() {
    let dir = DataDir::new();
    let a = &dir.path.join("a.json");
    let b = &dir.path.join("b.json");
    let svg = &dir.path.join("both.svg");
    for (path, label) in [(&a, "first-run"), (&b, "second-run")] {
        let out = bench(&[
            "--embedded",
            "--msgs",
            "5000",
            "--label",
            label,
            "--json",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = bench(&[
        "--plot-only",
        "--plot",
        svg.to_str().unwrap(),
        "--overlay",
        a.to_str().unwrap(),
        "--overlay",
        b.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(svg).unwrap();
    assert!(text.starts_with("<svg"), "an SVG file");
    assert!(
        text.contains("first-run") && text.contains("second-run"),
        "a legend entry per run"
    );
    assert!(text.matches("<polyline").count() >= 2, "a line per run");
}

#[test]
fn bad_arguments_and_missing_servers_are_reported() {
    let out = bench(&["--size", "4", "--embedded"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size must be at least 8"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bench(&["-s", &format!("127.0.0.1:{port}"), "--msgs", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    let out = bench(&["--embedded", "--protocol", "nats", "--scenario", "consume"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("native protocol"));
}
