//! Sluice's Kafka port driven by Kafka clients no one here wrote: kafka-python (from PyPI) and
//! Debian's kcat (librdkafka 2.0.2), both installed by `./test`. Topics are created, listed and
//! deleted; keyed records are produced with each ack level and read back; offsets are looked up
//! by time; a NATS publish is read as a Kafka record; and what acks=all acknowledged survives a
//! SIGKILL of the broker.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Broker, DataDir, Ports};

#[test]
fn kafka_python_works_unchanged() {
    let broker = Broker::start(&[]);
    common::run_python_client(
        "kafka_client.py",
        &[&broker.kafka_addr, &format!("nats://{}", broker.nats_addr)],
    );
}

/// kcat, if it is installed.
fn kcat() -> Option<Command> {
    let found = Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: kcat is not installed (./test installs it)");
        return None;
    }
    Some(Command::new("kcat"))
}

/// Produces `lines` (`key:value`) with kcat at an ack level; kcat exits once each is acknowledged.
fn kcat_produce(addr: &str, topic: &str, acks: &str, lines: &[String]) {
    let mut child = kcat()
        .unwrap()
        .args(["-b", addr, "-P", "-t", topic, "-K", ":", "-X"])
        .arg(format!("acks={acks}"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kcat");
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "kcat produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a topic from the beginning to its end with kcat: `key=value@offset` lines.
fn kcat_consume(addr: &str, topic: &str, from: &str) -> Vec<String> {
    let out = kcat()
        .unwrap()
        .args([
            "-b",
            addr,
            "-C",
            "-t",
            topic,
            "-e",
            "-o",
            from,
            "-f",
            "%k=%s@%o\\n",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kcat consume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kcat_produces_and_consumes_with_librdkafka_2_0() {
    if kcat().is_none() {
        return;
    }
    let broker = Broker::start(&[]);
    let addr = &broker.kafka_addr;
    let lines: Vec<String> = (0..200).map(|i| format!("k{i}:v{i}")).collect();
    kcat_produce(addr, "kcat.events", "1", &lines[..100]);
    kcat_produce(addr, "kcat.events", "all", &lines[100..]);
    let got = kcat_consume(addr, "kcat.events", "beginning");
    let want: Vec<String> = (0..200).map(|i| format!("k{i}=v{i}@{i}")).collect();
    assert_eq!(got, want);
    // A read from inside a stored batch starts exactly there.
    let tail = kcat_consume(addr, "kcat.events", "150");
    assert_eq!(tail, want[150..].to_vec());
    let listing = kcat().unwrap().args(["-b", addr, "-L"]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("topic \"kcat.events\" with 1 partitions"),
        "{listing}"
    );
}

#[test]
fn records_acknowledged_with_acks_all_survive_a_sigkill() {
    if kcat().is_none() {
        return;
    }
    let data = DataDir::new();
    let ports = Ports::fixed();
    let mut broker = Broker::start_at(&data.path, &ports, &[]);
    let lines: Vec<String> = (0..2000).map(|i| format!("k{i}:value-{i}")).collect();
    kcat_produce(&broker.kafka_addr, "durable", "all", &lines);
    broker.kill();
    let broker = Broker::start_at(&data.path, &ports, &[]);
    let got = kcat_consume(&broker.kafka_addr, "durable", "beginning");
    assert_eq!(got.len(), 2000, "every acknowledged record is there");
    assert_eq!(got[1999], "k1999=value-1999@1999");
}
