//! Many small streams through the real broker: one stream per user, a few messages each. Measures
//! the wall time of each stage (create, write, read back), the server's memory and disk per stream,
//! and two restarts on the same data directory (after SIGTERM and after SIGKILL): the time until
//! the broker prints its ready line, and until every stream answers with all its messages again.
//!
//! ```sh
//! cargo bench --bench many_streams                       # 100,000 streams, 3 messages each
//! SLUICE_MANY_STREAMS=20000 SLUICE_BIN=/path/to/sluice cargo bench --bench many_streams
//! ```
//!
//! `SLUICE_MANY_STREAMS` sets the number of streams, `SLUICE_MANY_STREAMS_MSGS` the messages per
//! stream, `SLUICE_MANY_STREAMS_CLIENTS` the client threads (each its own connection), and
//! `SLUICE_BIN` the broker to measure (this build's by default), and `SLUICE_RESTART_BIN` the broker
//! that restarts on the data (`SLUICE_BIN` by default), to time an older broker's restart on data
//! a newer one made quickly. `SLUICE_MANY_STREAMS_KEEP=1` keeps the data directory (its path is
//! printed) for a broker to be started on by hand. Under `cargo test` it runs with a few hundred streams as a smoke
//! test.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::api::StreamConfig;
use sluice::client::Client;

/// Streams created by `cargo bench` unless `SLUICE_MANY_STREAMS` says otherwise.
const STREAMS_DEFAULT: usize = 100_000;

/// Streams created under `cargo test`: enough to go through every stage.
const STREAMS_SMOKE: usize = 300;

/// Messages written to each stream: "a few", as a new user's stream holds.
const MSGS_DEFAULT: usize = 3;

/// Client threads, each with its own connection, creating, writing and reading at once.
const CLIENTS_DEFAULT: usize = 16;

/// Publishes awaited together by one client thread.
const PUBLISHES_IN_FLIGHT_MAX: usize = 64;

/// How long the broker may take to print its ready line before the run is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A broker on a data directory that outlives it.
struct Broker {
    child: Child,
    native: String,
}

impl Broker {
    /// Starts the broker; returns it and the time its ready line took.
    fn start(bin: &Path, dir: &Path, log: &Path) -> (Broker, Duration) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "off"])
            .args([
                "--nats",
                "off",
                "--kafka",
                "off",
                "--shards",
                "2",
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let ready = started.elapsed();
        assert!(ready < READY_TIMEOUT, "no ready line");
        let native = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("native="))
            .unwrap_or_else(|| panic!("the ready line names the native address: {line:?}"))
            .to_string();
        (Broker { child, native }, ready)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Sends `signal` and waits for the process to end; returns how long that took.
    fn stop(mut self, signal: i32) -> Duration {
        let started = Instant::now();
        // SAFETY: kill(2) on a child this program started and has not reaped.
        unsafe { libc::kill(self.pid() as i32, signal) };
        let _ = self.child.wait();
        started.elapsed()
    }
}

fn user_stream(n: usize) -> StreamConfig {
    StreamConfig::new(format!("user{n}"), vec![format!("users.{n}.>")])
}

/// Runs `work(client, n)` for every stream, spread over `clients` threads with a connection each;
/// returns the wall time.
fn on_every_stream(
    addr: &str,
    streams: usize,
    clients: usize,
    work: impl Fn(&Client, &[usize]) + Sync,
) -> Duration {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..clients {
            let work = &work;
            s.spawn(move || {
                let client = Client::connect(addr).unwrap();
                let mine: Vec<usize> = (t..streams).step_by(clients).collect();
                work(&client, &mine);
            });
        }
    });
    started.elapsed()
}

fn create(client: &Client, mine: &[usize]) {
    for &n in mine {
        client.stream_add(&user_stream(n)).unwrap();
    }
}

fn write(client: &Client, mine: &[usize], msgs: usize) {
    let mut waiters = Vec::with_capacity(PUBLISHES_IN_FLIGHT_MAX);
    for (i, &n) in mine.iter().enumerate() {
        for m in 0..msgs {
            let subject = format!("users.{n}.m{m}");
            waiters.push(client.publish_with_ack(&subject, b"hello").unwrap());
        }
        if waiters.len() >= PUBLISHES_IN_FLIGHT_MAX || i + 1 == mine.len() {
            for waiter in waiters.drain(..) {
                waiter.wait().unwrap();
            }
        }
    }
}

/// Calls `f` until it answers: a broker still recovering may let a request time out. Gives up
/// after `READY_TIMEOUT`.
fn until_answered<T>(mut f: impl FnMut() -> Result<T, sluice::client::ClientError>) -> T {
    let started = Instant::now();
    loop {
        match f() {
            Ok(answer) => return answer,
            Err(e) if started.elapsed() < READY_TIMEOUT => {
                eprintln!("retrying after: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("no answer within {READY_TIMEOUT:?}: {e}"),
        }
    }
}

/// Every stream answers its info with all its messages, and its messages read back.
fn read_back(client: &Client, mine: &[usize], msgs: usize) {
    for &n in mine {
        let name = format!("user{n}");
        let info = until_answered(|| client.stream_info(&name));
        assert_eq!(info.messages(), msgs as u64, "{name}");
        for offset in 0..msgs as u64 {
            let message = until_answered(|| client.stream_get(&name, 0, offset));
            assert_eq!(message.payload, b"hello");
        }
    }
}

/// Bytes the file system allocated under `path` (blocks, not lengths), directories included.
fn allocated_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            total += allocated_bytes(&entry.path());
        }
    }
    total
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let streams = env_or(
        "SLUICE_MANY_STREAMS",
        if full { STREAMS_DEFAULT } else { STREAMS_SMOKE },
    );
    let msgs = env_or("SLUICE_MANY_STREAMS_MSGS", MSGS_DEFAULT);
    let clients = env_or("SLUICE_MANY_STREAMS_CLIENTS", CLIENTS_DEFAULT);
    let bin = std::env::var_os("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    let restart_bin = std::env::var_os("SLUICE_RESTART_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin.clone());
    let root = std::env::temp_dir().join(format!("sluice-many-streams-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (dir, log) = (root.join("data"), root.join("broker.log"));
    println!(
        "many streams: {streams} streams, {msgs} messages each, {clients} client threads, \
         broker {} --shards 2, restarted as {}",
        bin.display(),
        restart_bin.display()
    );
    let row = |stage: &str, figure: String| println!("| {stage:<52} | {figure:>16} |");
    println!("| {:<52} | {:>16} |", "stage", "figure");
    println!("|{:-<54}|{:->18}|", "", "");

    let (broker, _) = Broker::start(&bin, &dir, &log);
    let (rss_empty, disk_empty) = (broker.rss_bytes(), allocated_bytes(&dir));
    let took = on_every_stream(&broker.native, streams, clients, create);
    row(
        "create (stream add, all clients at once)",
        format!(
            "{} ({:.0}/s)",
            secs(took),
            streams as f64 / took.as_secs_f64()
        ),
    );
    let took = on_every_stream(&broker.native, streams, clients, |c, mine| {
        write(c, mine, msgs)
    });
    row(
        &format!("write {msgs} messages to each (acked)"),
        secs(took),
    );
    let took = on_every_stream(&broker.native, streams, clients, |c, mine| {
        read_back(c, mine, msgs)
    });
    row(
        "read back (info + every message of every stream)",
        secs(took),
    );
    let rss = broker.rss_bytes();
    row(
        "server RSS per stream",
        format!(
            "{} B",
            rss.saturating_sub(rss_empty) / streams.max(1) as u64
        ),
    );
    row("server RSS", format!("{} MiB", rss >> 20));
    let disk = allocated_bytes(&dir).saturating_sub(disk_empty);
    row(
        "disk per stream (allocated blocks)",
        format!("{} B", disk / streams.max(1) as u64),
    );

    let mut broker = broker;
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let took = broker.stop(signal);
        row(
            &format!("stop by {name}: until the process ended"),
            secs(took),
        );
        let started = Instant::now();
        let (again, ready) = Broker::start(&restart_bin, &dir, &log);
        row(&format!("restart after {name}: ready line"), secs(ready));
        let rss_ready = again.rss_bytes();
        on_every_stream(&again.native, streams, clients, |c, mine| {
            read_back(c, mine, msgs)
        });
        row(
            &format!("restart after {name}: every stream read back"),
            secs(started.elapsed()),
        );
        row(
            &format!("restart after {name}: RSS at ready / after reads"),
            format!("{} / {} MiB", rss_ready >> 20, again.rss_bytes() >> 20),
        );
        broker = again;
    }
    broker.stop(libc::SIGTERM);
    if std::env::var_os("SLUICE_MANY_STREAMS_KEEP").is_some() {
        println!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    println!(
        "command: SLUICE_MANY_STREAMS={streams} SLUICE_MANY_STREAMS_MSGS={msgs} \
         SLUICE_MANY_STREAMS_CLIENTS={clients} SLUICE_BIN={} SLUICE_RESTART_BIN={} \
         cargo bench --bench many_streams",
        bin.display(),
        restart_bin.display()
    );
}
