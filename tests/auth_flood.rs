//! A flood of bad passwords does not hold back durable acks: hashes run on the broker's hashing
//! threads, not on the shards nor on the blocking thread their segment rolls and removes use. And
//! an unknown user name is refused as a known one with a wrong password is.
//!
//! Timing is printed, never asserted (`cargo test --test auth_flood -- --nocapture` shows it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{hash_with_sluice, Broker, DataDir, PATIENCE};
use sluice::api::StreamConfig;
use sluice::client::{Client, ClientError, ClientOptions};
use sluice_protocol::ErrorCode;

/// Durable publishes per phase: 4 KiB each, 1 MiB segments, so each phase rolls a dozen segments and
/// retention removes old ones (both on the shard's blocking thread).
const PUBLISHES: usize = 3000;
const PAYLOAD_BYTES: usize = 4 * 1024;

/// Clients flooding bad passwords at once on the NATS port, and on the native port.
const NATS_FLOODERS: usize = 24;
const NATIVE_FLOODERS: usize = 4;

/// writer and victim, both with argon2 passwords as `sluice passwd` makes them.
fn secured_broker(dir: &DataDir, extra: &[&str]) -> Broker {
    let writer = hash_with_sluice("writer-pw");
    let victim = hash_with_sluice("victim-pw");
    let config = format!(
        "[[users]]\nname = \"writer\"\npassword = \"{writer}\"\n\n\
         [[users]]\nname = \"victim\"\npassword = \"{victim}\"\n"
    );
    let path = dir.path.join("users.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

fn connect(addr: &str, user: &str, password: &str) -> Result<Client, ClientError> {
    Client::connect_with(
        addr,
        ClientOptions {
            user: Some(user.into()),
            password: Some(password.into()),
            timeout: PATIENCE,
            ..ClientOptions::default()
        },
    )
}

/// Connects until it succeeds: right after a flood the hashing queue may still be full.
fn connect_patiently(addr: &str, user: &str, password: &str) -> Client {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match connect(addr, user, password) {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("login of {user} refused ({e}), trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{user} could not log in: {e}"),
        }
    }
}

/// One bad login on the NATS port: the broker answers with an error and closes.
fn bad_nats_login(addr: &str) -> String {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "{line}");
    let connect = "CONNECT {\"user\":\"victim\",\"pass\":\"wrong\",\"verbose\":false}\r\nPING\r\n";
    // The broker may close before it reads everything: a failed write is a refusal too.
    if writer.write_all(connect.as_bytes()).is_err() {
        return String::new();
    }
    line.clear();
    let _ = reader.read_line(&mut line);
    line.trim_end().to_string()
}

/// Floods bad passwords until `stop`; counts the refusals.
fn flood(
    nats: String,
    native: String,
    stop: Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<AtomicU64>) {
    let refused = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..NATS_FLOODERS {
        let (nats, stop, refused) = (nats.clone(), stop.clone(), refused.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = bad_nats_login(&nats);
                assert_ne!(answer, "PONG", "a bad password was let in");
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..NATIVE_FLOODERS {
        let (native, stop, refused) = (native.clone(), stop.clone(), refused.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match connect(&native, "victim", "wrong") {
                    Err(ClientError::Server { code, .. }) => {
                        assert_eq!(code, ErrorCode::AuthorizationFailed)
                    }
                    Err(_) => {} // closed before the refusal was read
                    Ok(_) => panic!("a bad password was let in"),
                }
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    (threads, refused)
}

/// Publishes `PUBLISHES` durable messages one after the other; every ack must arrive, in order.
/// Returns each ack's latency.
fn publish_durably(client: &Client, phase: &str) -> Vec<Duration> {
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut latencies = Vec::with_capacity(PUBLISHES);
    let mut last = None;
    for i in 0..PUBLISHES {
        let start = Instant::now();
        let ack = client
            .publish_with_ack(&format!("orders.{phase}"), &payload)
            .unwrap()
            .wait()
            .unwrap_or_else(|e| panic!("{phase}: publish {i} got no ack: {e}"));
        latencies.push(start.elapsed());
        assert_eq!(ack.stream, "ORDERS");
        if let Some(last) = last {
            assert!(ack.offset > last, "{phase}: acks in order");
        }
        last = Some(ack.offset);
    }
    latencies
}

fn report(phase: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "durable ack latency {phase}: n={} p50={:?} p99={:?} max={:?}",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}

#[test]
fn durable_acks_all_arrive_while_bad_passwords_flood_the_broker() {
    let dir = DataDir::new();
    let broker = secured_broker(&dir, &[]);
    let writer = connect_patiently(&broker.addr, "writer", "writer-pw");
    writer
        .stream_add(&StreamConfig {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            partitions: 1,
            max_age_secs: None,
            // 1 MiB segments, four kept: rolls and removes all along.
            max_bytes: Some(4 * 1024 * 1024),
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();

    report("without flood", publish_durably(&writer, "calm"));

    let stop = Arc::new(AtomicBool::new(false));
    let (flooders, refused) = flood(broker.nats_addr.clone(), broker.addr.clone(), stop.clone());
    // Let the flood fill the hashing queue before measuring.
    let deadline = Instant::now() + PATIENCE;
    while refused.load(Ordering::Relaxed) < NATS_FLOODERS as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = publish_durably(&writer, "flood");
    stop.store(true, Ordering::Relaxed);
    for t in flooders {
        t.join().expect("no bad password was let in");
    }
    report("during flood", during);
    eprintln!(
        "bad logins refused during the run: {}",
        refused.load(Ordering::Relaxed)
    );
    assert!(refused.load(Ordering::Relaxed) > 0);

    // The broker still serves: the stream holds what was acked (within retention), and a good
    // login still gets in.
    let info = writer.stream_info("ORDERS").unwrap();
    assert!(info.messages() > 0);
    let again = connect_patiently(&broker.addr, "victim", "victim-pw");
    again.flush().unwrap();
    assert!(broker.logged("authentication failed"));
}

#[test]
fn an_unknown_user_name_is_refused_as_a_wrong_password_is() {
    let dir = DataDir::new();
    // Debug-build hashes on a busy machine can take longer than the default 2 s to answer: the
    // refusal compared here is the credentials', not the timeout's.
    let broker = secured_broker(&dir, &["--auth-timeout-ms", "30000"]);
    let refusal = |user: &str| match connect(&broker.addr, user, "wrong") {
        Err(ClientError::Server { code, message }) => (code, message),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("{user} got in with a wrong password"),
    };
    // Warm up (first connections, page faults) before timing.
    refusal("victim");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        for (user, times) in [("victim", &mut known), ("nobody", &mut unknown)] {
            let start = Instant::now();
            let answer = refusal(user);
            times.push(start.elapsed());
            assert_eq!(answer.0, ErrorCode::AuthorizationFailed);
            assert_eq!(answer.1, "authorization failed: bad or missing credentials");
        }
    }
    known.sort();
    unknown.sort();
    eprintln!(
        "refused login, median of 5: known user {:?} (min {:?}), unknown user {:?} (min {:?})",
        known[2], known[0], unknown[2], unknown[0]
    );
    let start = Instant::now();
    drop(connect(&broker.addr, "writer", "writer-pw").unwrap());
    let first = start.elapsed();
    let start = Instant::now();
    drop(connect(&broker.addr, "writer", "writer-pw").unwrap());
    eprintln!(
        "good login: first {first:?}, again within the cache's time to live {:?}",
        start.elapsed()
    );
}
