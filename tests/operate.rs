//! Operating the broker: /metrics moving by the right amounts under load, /healthz and /readyz
//! around a restart, the TOML configuration file and JSON logs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, DataDir};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};

/// GET `path` from `addr`: (status code, body).
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    get_with(addr, path, "")
}

/// A GET with extra header lines (each ending in CRLF).
fn get_with(addr: &str, path: &str, headers: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: sluice\r\n{headers}\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The value of one series (name with its labels, exactly as printed).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

fn scrape(broker: &Broker) -> String {
    let (status, body) = get(&broker.http_addr, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200);
    body
}

#[test]
fn metrics_count_what_the_load_did() {
    let broker = Broker::start(&[]);
    let before = scrape(&broker);
    let publisher = broker.client_on_shard(0);
    let subscriber = broker.client_on_shard(1);
    let sub = subscriber.subscribe("metered.*").unwrap();
    subscriber.flush().unwrap();
    let during = scrape(&broker);
    assert_eq!(value(&during, "sluice_subscriptions"), 1.0);
    assert_eq!(value(&during, "sluice_connections"), 2.0);
    for i in 0..1000 {
        publisher
            .publish(&format!("metered.{}", i % 7), b"0123456789")
            .unwrap();
    }
    publisher.flush().unwrap();
    common::receive(&sub, 1000);
    let after = scrape(&broker);
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta("sluice_messages_in_total"), 1000.0);
    assert_eq!(delta("sluice_messages_out_total"), 1000.0);
    assert_eq!(
        delta("sluice_shard_messages_in_total{shard=\"0\"}"),
        1000.0,
        "counted on the publisher's shard"
    );
    assert_eq!(
        delta("sluice_shard_messages_out_total{shard=\"1\"}"),
        1000.0,
        "counted on the subscriber's shard"
    );
    assert!(delta("sluice_forwards_out_total") >= 1.0, "crossed shards");
    assert!(delta("sluice_bytes_in_total") >= 10_000.0);

    // Streams and consumers.
    publisher
        .stream_add(&StreamConfig {
            name: "METERED".into(),
            subjects: vec!["stored.>".into()],
            partitions: 3,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    let acks: Vec<_> = (0..300)
        .map(|i| {
            publisher
                .publish_with_ack(&format!("stored.{i}"), b"payload")
                .unwrap()
        })
        .collect();
    for ack in acks {
        ack.wait().unwrap();
    }
    let consumer = publisher
        .consume(ConsumerConfig {
            stream: "METERED".into(),
            name: "billing".into(),
            deliver: DeliverPolicy::All,
            ack_wait_ms: 30_000,
            max_deliver: 5,
            max_ack_pending: 1000,
            sid: 0,
            jetstream: None,
        })
        .unwrap();
    for _ in 0..100 {
        let m = consumer.next_timeout(Duration::from_secs(10)).unwrap();
        consumer.ack(&m).unwrap();
    }
    publisher.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&broker);
        assert_eq!(
            value(&m, "sluice_stream_messages{stream=\"METERED\"}"),
            300.0
        );
        assert!(value(&m, "sluice_stream_bytes{stream=\"METERED\"}") > 300.0 * 7.0);
        let pending = value(
            &m,
            "sluice_consumer_pending{stream=\"METERED\",consumer=\"billing\"}",
        );
        let ack_pending = value(
            &m,
            "sluice_consumer_ack_pending{stream=\"METERED\",consumer=\"billing\"}",
        );
        // 100 acked; the rest are either not yet delivered or delivered and unacked.
        if pending + ack_pending == 200.0 && ack_pending <= 200.0 {
            assert!(value(&m, "sluice_fsync_duration_seconds_count") >= 1.0);
            assert!(value(&m, "sluice_append_duration_seconds_count") >= 1.0);
            assert!(
                value(&m, "sluice_append_duration_seconds_bucket{le=\"+Inf\"}")
                    == value(&m, "sluice_append_duration_seconds_count")
            );
            break;
        }
        assert!(Instant::now() < deadline, "consumer figures: {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = get(&broker.http_addr, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = get(&broker.http_addr, "/nowhere").unwrap();
    assert_eq!(status, 404);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn readyz_waits_for_every_shard_to_recover_its_consumers_logs() {
    let data = DataDir::new();
    {
        let broker = Broker::start_in(&data.path, &[]);
        let client = broker.client();
        client
            .stream_add(&StreamConfig {
                name: "MANY".into(),
                subjects: vec!["many.>".into()],
                partitions: 512,
                max_age_secs: None,
                max_bytes: None,
                created_ns: 0,
                jetstream: None,
                replicas: 1,
                placement: Vec::new(),
            })
            .unwrap();
        // Partitions open on first use, but those that keep consumers open at start, so that
        // their consumers resume: the broker is ready once they are.
        client
            .consume(ConsumerConfig {
                stream: "MANY".into(),
                name: "kept".into(),
                deliver: DeliverPolicy::All,
                ack_wait_ms: 30_000,
                max_deliver: 5,
                max_ack_pending: 100,
                sid: 0,
                jetstream: None,
            })
            .unwrap();
    }
    // Restart on a known HTTP port and ask from the first moment it accepts.
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--shards",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--nats",
            "off",
            "--kafka",
            "off",
        ])
        .args(["--http", &http])
        .arg("--data-dir")
        .arg(&data.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        match get(&http, "/readyz") {
            Ok((status, _)) => {
                answers.push(status);
                if status == 200 {
                    break;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        answers.first(),
        Some(&503),
        "not ready while recovering: {answers:?}"
    );
    assert_eq!(
        answers.last(),
        Some(&200),
        "ready once recovered: {answers:?}"
    );
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn config_file_round_trip_and_flags_override_it() {
    let dir = DataDir::new();
    let path = dir.path.join("sluice.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nnats = \"off\"\nhttp = \"127.0.0.1:0\"\nshards = 2\n\
         max_payload = 4096\nmax_pending = 1048576\nfsync = \"interval:50\"\n\
         log_format = \"json\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let out = sluice(&[
        "serve",
        "--config",
        file,
        "--max-payload",
        "2048",
        "--print-config",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(
        printed["max_payload"].as_integer(),
        Some(2048),
        "the flag wins"
    );
    assert_eq!(
        printed["max_pending"].as_integer(),
        Some(1_048_576),
        "from the file"
    );
    assert_eq!(printed["fsync"].as_str(), Some("interval:50"));
    assert_eq!(printed["nats"].as_str(), Some("off"));
    assert_eq!(printed["shards"].as_integer(), Some(2));
    assert_eq!(
        printed["data_dir"].as_str(),
        Some("./sluice-data"),
        "a default"
    );
    // What it printed is a valid configuration that prints the same.
    let again = dir.path.join("printed.toml");
    std::fs::write(&again, &out.stdout).unwrap();
    let out2 = sluice(&[
        "serve",
        "--config",
        again.to_str().unwrap(),
        "--print-config",
    ]);
    assert_eq!(out2.stdout, out.stdout);

    // The broker runs with it: the payload limit from the file is what clients are told.
    let data_dir = dir.path.join("data");
    let broker = Broker::start_in(&data_dir, &["--config", file]);
    assert_eq!(broker.client().info().max_payload, 4096);
    assert!(broker.wait_for_log("{\""), "JSON log lines");
    let json_line = broker
        .logged_lines()
        .into_iter()
        .find(|l| l.starts_with('{'))
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json_line).unwrap();
    assert!(
        parsed["level"].is_string() && parsed["fields"].is_object(),
        "{parsed}"
    );
}

#[test]
fn invalid_config_files_name_the_key_and_the_reason() {
    let dir = DataDir::new();
    let cases = [
        ("fsync = \"sometimes\"\n", "fsync"),
        ("max_payload = \"big\"\n", "max_payload"),
        ("colour = \"blue\"\n", "colour"),
        ("listen = \"nowhere:xx\"\n", "listen"),
        ("log_format = \"xml\"\n", "log_format"),
        ("shards = 0\n", "shards"),
        ("name = \"a/b\"\n", "name"),
        ("tls_cert = \"/etc/cert.pem\"\n", "tls_key"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = sluice(&["serve", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{text} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: the error names {key}: {err}");
        assert!(
            err.contains("bad"),
            "{text}: the error names the file: {err}"
        );
    }
    let out = sluice(&["serve", "--config", "/nonexistent/sluice.toml"]);
    assert!(!out.status.success());
}

#[test]
fn the_http_port_can_require_a_bearer_token() {
    let broker = Broker::start(&["--http-token", "s3cret"]);
    let (status, _) = get(&broker.http_addr, "/metrics").unwrap();
    assert_eq!(status, 401, "/metrics without the token");
    let (status, _) = get_with(
        &broker.http_addr,
        "/metrics",
        "Authorization: Bearer wrong\r\n",
    )
    .unwrap();
    assert_eq!(status, 401, "/metrics with a wrong token");
    // Probes (a kubelet's, for one) carry no token; the answers say only up or ready.
    for path in ["/healthz", "/readyz"] {
        let (status, body) = get(&broker.http_addr, path).unwrap();
        assert_eq!(status, 200, "{path} without the token");
        assert!(!body.contains("sluice_"), "{body}");
    }
    let (status, body) = get_with(
        &broker.http_addr,
        "/metrics",
        "Authorization: Bearer s3cret\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("sluice_"), "{body}");
}
