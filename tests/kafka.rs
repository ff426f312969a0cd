//! Sluice's Kafka port driven by Kafka clients no one here wrote: kafka-python and confluent-kafka
//! (from PyPI), kafkajs (from npm) and Debian's kcat (librdkafka 2.0.2), all installed by
//! `./test`. Topics are created, listed and deleted; keyed records are produced with each ack
//! level and read back; groups split partitions and resume from their commits across restarts;
//! an idempotent producer's retry is stored once; offsets are looked up by time; NATS publishes
//! are read as Kafka records and Kafka records by JetStream consumers; and what acks=all
//! acknowledged survives a SIGKILL of the broker.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;

use common::{kcat, Broker, DataDir, Ports};

#[test]
fn kafka_python_works_unchanged() {
    let broker = Broker::start(&[]);
    common::run_python_client(
        "kafka_client.py",
        &[&broker.kafka_addr, &format!("nats://{}", broker.nats_addr)],
    );
}

#[test]
fn every_advertised_version_is_answered_as_kafka_python_decodes_it() {
    let broker = Broker::start(&[]);
    common::run_python_client("kafka_versions.py", &[&broker.kafka_addr]);

    // Again with a user, so that every connection authenticates first, through each version of
    // SaslHandshake and SaslAuthenticate.
    let dir = DataDir::new();
    let hash = common::hash_with_sluice("bob-pw");
    let path = dir.path.join("users.toml");
    std::fs::write(
        &path,
        format!("[[users]]\nname = \"bob\"\npassword = \"{hash}\"\n"),
    )
    .unwrap();
    let broker = Broker::start(&["--config", path.to_str().unwrap()]);
    common::run_python_client("kafka_versions.py", &[&broker.kafka_addr, "bob", "bob-pw"]);
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

#[test]
fn kafka_python_groups_split_partitions_and_resume_from_commits_across_a_restart() {
    let data = DataDir::new();
    let ports = Ports::fixed();
    let mut broker = Broker::start_at(&data.path, &ports, &[]);
    if !common::run_python_client("kafka_groups.py", &[&broker.kafka_addr, "before"]) {
        return;
    }
    broker.kill();
    let broker = Broker::start_at(&data.path, &ports, &[]);
    common::run_python_client("kafka_groups.py", &[&broker.kafka_addr, "after"]);
}

/// Consumes `topic` in group `group` with kcat until every assigned partition is read to its
/// end: `partition:offset` lines. With `from`, starts there where the group has no offset.
fn kcat_group(addr: &str, group: &str, topic: &str, from: Option<&str>) -> std::process::Child {
    let mut command = kcat().unwrap();
    command.args(["-b", addr, "-G", group, "-e", "-f", "%p:%o\\n"]);
    if let Some(from) = from {
        command.args(["-o", from]);
    }
    command
        .arg(topic)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kcat")
}

fn read_lines(child: std::process::Child) -> Vec<(u32, u64)> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kcat -G failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (p, o) = line.split_once(':').expect("partition:offset");
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

#[test]
fn kcat_group_members_split_partitions_and_commits_survive_a_restart() {
    if kcat().is_none() {
        return;
    }
    let data = DataDir::new();
    let ports = Ports::fixed();
    let mut broker = Broker::start_at(&data.path, &ports, &[]);
    broker
        .client()
        .stream_add(&sluice::api::StreamConfig {
            partitions: 4,
            ..sluice::api::StreamConfig::new("work", vec!["work".into()])
        })
        .unwrap();
    let produce = |addr: &str, per_partition: u32| {
        for p in 0..4 {
            let mut child = kcat()
                .unwrap()
                .args(["-b", addr, "-P", "-t", "work", "-p", &p.to_string()])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            for i in 0..per_partition {
                writeln!(stdin, "p{p}-{i}").unwrap();
            }
            drop(stdin);
            assert!(child.wait().unwrap().success());
        }
    };
    produce(&broker.kafka_addr, 50);
    // Two members started together join one generation and split the four partitions.
    let first = kcat_group(&broker.kafka_addr, "workers", "work", Some("beginning"));
    let second = kcat_group(&broker.kafka_addr, "workers", "work", Some("beginning"));
    let (a, b) = (read_lines(first), read_lines(second));
    let parts = |got: &[(u32, u64)]| got.iter().map(|(p, _)| *p).collect::<HashSet<u32>>();
    assert_eq!(a.len() + b.len(), 200);
    assert_eq!(parts(&a).len(), 2, "{:?}", parts(&a));
    assert!(parts(&a).is_disjoint(&parts(&b)));
    // Their offsets were committed as they left: after more records and a broker restart, the
    // group reads only the new ones.
    produce(&broker.kafka_addr, 10);
    broker.kill();
    let broker = Broker::start_at(&data.path, &ports, &[]);
    // The group's progress shows as a consumer's: its commits are the ack floors, its lag pending.
    let info = common::sluice_cli()
        .args(["consumer", "info", "work", "workers", "-s", &broker.addr])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("kafka group workers on work  lag 40"),
        "{info}"
    );
    assert!(info.contains("\n3\t10\t0\t0\t50\t0"), "{info}");
    let rest = read_lines(kcat_group(&broker.kafka_addr, "workers", "work", None));
    let mut want: Vec<(u32, u64)> = (0..4).flat_map(|p| (50..60).map(move |o| (p, o))).collect();
    let mut rest_sorted = rest.clone();
    rest_sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(rest_sorted, want);
}

#[test]
fn an_idempotent_producer_retry_is_stored_once() {
    // The broker advertises a proxy's port; the script's proxy drops the first produce answer.
    let proxy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let advertise = format!("127.0.0.1:{proxy_port}");
    let broker = Broker::start(&["--kafka-advertise", &advertise]);
    common::run_python_client(
        "kafka_idempotence.py",
        &[&broker.kafka_addr, &proxy_port.to_string()],
    );
}

#[test]
fn confluent_kafka_works_unchanged() {
    let broker = Broker::start(&[]);
    common::run_python_client("kafka_confluent.py", &[&broker.kafka_addr]);
}

#[test]
fn kafkajs_works_unchanged() {
    let broker = Broker::start(&[]);
    common::run_node_client("kafka_kafkajs.cjs", &[&broker.kafka_addr]);
}

#[test]
fn kcat_authenticates_with_sasl_plain_and_permissions_apply() {
    if kcat().is_none() {
        return;
    }
    let dir = DataDir::new();
    let alice = common::hash_with_sluice("alice-pw");
    let config = format!(
        r#"
[[users]]
name = "alice"
password = "{alice}"
publish = {{ allow = ["user.alice.>"] }}
subscribe = {{ allow = ["user.alice.>"] }}
"#
    );
    let path = dir.path.join("users.toml");
    std::fs::write(&path, config).unwrap();
    let broker = Broker::start(&["--config", path.to_str().unwrap()]);
    let addr = &broker.kafka_addr;
    let as_user = |user: &str, password: &str, args: &[&str], input: &str| {
        let settings = [
            "security.protocol=SASL_PLAINTEXT".to_string(),
            "sasl.mechanisms=PLAIN".to_string(),
            format!("sasl.username={user}"),
            format!("sasl.password={password}"),
        ];
        common::kcat_with(addr, &settings, args, input)
    };
    // Alice writes and reads under her subjects.
    let (ok, _) = as_user(
        "alice",
        "alice-pw",
        &["-P", "-t", "user.alice.events"],
        "one\ntwo\n",
    );
    assert!(ok, "alice produces to her topic");
    let (ok, read) = as_user(
        "alice",
        "alice-pw",
        &["-C", "-t", "user.alice.events", "-e", "-o", "beginning"],
        "",
    );
    assert!(ok);
    assert_eq!(read, "one\ntwo\n");
    // Not elsewhere, not with a wrong password, and not without authenticating.
    let (ok, _) = as_user("alice", "alice-pw", &["-P", "-t", "orders"], "x\n");
    assert!(!ok, "alice may not create or write to orders");
    let (ok, _) = as_user("alice", "wrong", &["-L"], "");
    assert!(!ok, "a wrong password is refused");
    let plain = kcat()
        .unwrap()
        .args(["-b", addr, "-m", "5", "-L"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "no metadata without authentication"
    );
    assert!(broker.logged("kafka authentication failed"));
}

/// Whether a Kafka connection is served: it answers an ApiVersions (v0) within a second.
fn kafka_answers(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    // Size, then api key 18, version 0, correlation id 1, no client id.
    let request = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).is_ok()
}

#[test]
fn kafka_connections_count_against_the_connection_limit() {
    let broker = Broker::start(&["--max-connections", "4"]);
    let mut open: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..12 {
        let mut stream = std::net::TcpStream::connect(&broker.kafka_addr).unwrap();
        if kafka_answers(&mut stream) {
            open.push(stream);
        }
    }
    // Two shards, two connections each.
    assert!(!open.is_empty() && open.len() <= 4, "{} served", open.len());
    drop(open);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut served = 0;
    for _ in 0..8 {
        let mut stream = std::net::TcpStream::connect(&broker.kafka_addr).unwrap();
        if kafka_answers(&mut stream) {
            served += 1;
        }
    }
    assert!(served >= 1, "closed connections gave their places back");
}
