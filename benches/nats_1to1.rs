//! One publisher to one subscriber, 16-byte messages, over the NATS protocol, with the same
//! `async-nats` load program against Sluice's NATS port and against nats-server, in the same run:
//! each server pinned to CPU 0, the load on CPU 1, the two alternated A B A B over three rounds.
//!
//! `cargo bench --bench nats_1to1` (nats-server from Debian's `nats-server` package, if installed;
//! otherwise only Sluice is measured). Under `cargo test` it runs a few thousand messages.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

const SIZE: usize = 16;

/// A nats-server child, killed when dropped.
struct Peer {
    child: Child,
    addr: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server() -> Option<Peer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("taskset")
        .args([
            "-c",
            "0",
            "nats-server",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Some(Peer { child, addr });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Messages per second from the first publish to the subscriber's last message.
async fn one_to_one(addr: &str, messages: u64) -> f64 {
    // A subscription buffer that holds the whole run: async-nats drops messages past it.
    let subscriber = async_nats::ConnectOptions::new()
        .subscription_capacity(messages as usize + 1024)
        .connect(addr)
        .await
        .unwrap();
    let mut sub = subscriber.subscribe("bench.1to1").await.unwrap();
    subscriber.flush().await.unwrap();
    let publisher = async_nats::connect(addr).await.unwrap();
    let payload = bytes::Bytes::from(vec![b'n'; SIZE]);
    let start = Instant::now();
    let receiving = tokio::spawn(async move {
        let mut n = 0;
        while n < messages {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(_)) => n += 1,
                _ => break,
            }
        }
        n
    });
    for _ in 0..messages {
        publisher
            .publish("bench.1to1", payload.clone())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let received = receiving.await.unwrap();
    assert_eq!(received, messages, "every message arrived at {addr}");
    messages as f64 / start.elapsed().as_secs_f64()
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity pins the calling thread (and the threads
    // it spawns afterwards).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let messages: u64 = if full { 1_000_000 } else { 2_000 };
    let rounds = if full { 3 } else { 1 };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        pin_to_cpu(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sluice = support::Server::start(
        "nats",
        &["--cpuset", "0", "--nats", "127.0.0.1:0", "--kafka", "off"],
    );
    let sluice_addr = sluice.nats.clone().expect("the NATS port is on");
    let peer = if full { nats_server() } else { None };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(runtime.block_on(one_to_one(&format!("nats://{sluice_addr}"), messages)));
        if let Some(peer) = &peer {
            theirs.push(runtime.block_on(one_to_one(&format!("nats://{}", peer.addr), messages)));
        }
    }
    println!(
        "1 publisher -> 1 subscriber, {SIZE} B, {messages} messages, async-nats, {rounds} rounds"
    );
    println!(
        "sluice NATS port (1 shard on CPU 0): median {:.0} msgs/s  {ours:.0?}",
        median(ours.clone())
    );
    if !theirs.is_empty() {
        println!(
            "nats-server (CPU 0):                 median {:.0} msgs/s  {theirs:.0?}",
            median(theirs.clone())
        );
        println!(
            "ratio sluice / nats-server: {:.2}",
            median(ours) / median(theirs)
        );
    } else if full {
        println!("nats-server not found: apt-get install nats-server to compare");
    }
}
