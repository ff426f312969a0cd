//! What a benchmark needs besides the load: a broker of its own (`--embedded`), the stream the
//! durable scenarios write to, and the consume scenario, which reads through the Sluice client.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{self, Shared};
use super::report::{Outcome, Progress};
use super::wire::{Event, Protocol, Wire};
use super::{BenchError, Plan, Scenario};
use crate::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use crate::client::Client;

/// A `sluice serve` child with a temporary data directory, stopped and removed when dropped.
pub struct Embedded {
    child: Child,
    dir: PathBuf,
    pub native: String,
    pub nats: String,
}

impl Embedded {
    /// Starts this executable's broker on `cpus` and waits for its ready line.
    pub fn start(
        cpus: &[usize],
        fsync: sluice_storage::FsyncPolicy,
    ) -> Result<Embedded, BenchError> {
        let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("broker.log"))?;
        let list = cpus
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--nats", "127.0.0.1:0"])
            .args(["--kafka", "off"])
            .args(["--http", "127.0.0.1:0"])
            .args(["--cpuset", &list, "--max-pending", "1073741824"])
            .arg("--fsync")
            .arg(fsync.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        let (Some(native), Some(nats)) = (field("native="), field("nats=")) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Setup(format!(
                "the embedded broker did not start; see {}",
                dir.join("broker.log").display()
            )));
        };
        Ok(Embedded {
            child,
            dir,
            native,
            nats,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes sure the plan's stream exists: through Sluice's API on the native port, through
/// JetStream's API on a NATS port (a server without JetStream must already have it).
pub fn ensure_stream(plan: &Plan) -> Result<(), BenchError> {
    let pattern = format!("{}.>", plan.subject_root());
    match plan.protocol {
        Protocol::Native => {
            let client = Client::connect(&plan.addr)?;
            if client.stream_info(&plan.stream).is_err() {
                let partitions = client.info().shards.max(1);
                client.stream_add(&StreamConfig {
                    partitions,
                    ..StreamConfig::new(plan.stream.clone(), vec![pattern])
                })?;
            }
            Ok(())
        }
        Protocol::Nats => {
            let mut wire = Wire::connect(&plan.addr, Protocol::Nats, "bench-setup")?;
            let inbox = format!("_INBOX.bench-setup.{}", std::process::id());
            wire.subscribe(1, &inbox, None);
            let config = serde_json::json!({
                "name": plan.stream, "subjects": [pattern], "storage": "file",
                "retention": "limits", "discard": "old", "num_replicas": 1,
            });
            let body = serde_json::to_vec(&config).unwrap_or_default();
            let subject = format!("$JS.API.STREAM.CREATE.{}", plan.stream);
            wire.publish(&subject, Some(&inbox), &body, false);
            wire.flush()?;
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut answer = None;
            while answer.is_none() && Instant::now() < deadline {
                wire.poll(Some(Duration::from_millis(100)), |event| match event {
                    Event::Msg { payload, .. } => {
                        answer = Some(String::from_utf8_lossy(payload).into_owned())
                    }
                    Event::Error(e) => answer = Some(format!("error: {e}")),
                    _ => {}
                })?;
            }
            match answer {
                Some(a) if a.contains("\"error\"") && !a.contains("already in use") => Err(
                    BenchError::Setup(format!("JetStream refused the stream: {a}")),
                ),
                Some(a) if a.starts_with("error") => {
                    tracing::debug!(
                        "no JetStream API here; the stream {} must exist",
                        plan.stream
                    );
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    }
}

/// Fills the stream up to `plan.msgs` messages if it holds fewer, then drains that many through
/// `plan.subs` members of one durable consumer, acking each.
pub fn consume(plan: &Arc<Plan>, load_cpus: &[usize], quiet: bool) -> Result<Outcome, BenchError> {
    let client = Client::connect(&plan.addr)?;
    let held = client.stream_info(&plan.stream)?.messages();
    if held < plan.msgs {
        let fill = Plan {
            scenario: Scenario::Stream,
            msgs: plan.msgs - held,
            in_flight: plan.in_flight.max(256),
            rate: None,
            addr: plan.addr.clone(),
            stream: plan.stream.clone(),
            ..**plan
        };
        super::execute(&Arc::new(fill), load_cpus, true)?;
    }
    let name = format!("bench-{}-{}", std::process::id(), fastrand::u32(..));
    let shared = Arc::new(Shared::new(plan.subs + 1));
    let mut threads = Vec::new();
    for index in 0..plan.subs {
        let (plan, shared, name) = (plan.clone(), shared.clone(), name.clone());
        let cpu = load_cpus.get(index % load_cpus.len().max(1)).copied();
        threads.push(std::thread::spawn(move || -> Result<(), BenchError> {
            load::pin(cpu);
            let client = Client::connect(&plan.addr)?;
            let consumer = client.consume(ConsumerConfig {
                stream: plan.stream.clone(),
                name,
                deliver: DeliverPolicy::All,
                ack_wait_ms: 30_000,
                max_deliver: 5,
                max_ack_pending: 10_000,
                sid: 0,
                jetstream: None,
            });
            let consumer = match consumer {
                Ok(c) => c,
                Err(e) => {
                    shared.start_failed();
                    return Err(e.into());
                }
            };
            shared.start.wait()?;
            while shared.received.load(Ordering::Relaxed) < plan.msgs
                && !shared.done.load(Ordering::Relaxed)
            {
                if let Some(message) = consumer.next_timeout(Duration::from_millis(100)) {
                    consumer.ack(&message)?;
                    shared.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            client.flush()?;
            Ok(())
        }));
    }
    let started = shared.start.wait();
    let t0 = shared.now_ns();
    let progress = Progress::start(shared.clone(), quiet);
    if started.is_ok() {
        shared.wait_for_received(plan.msgs);
    }
    let t1 = shared.now_ns();
    shared.done.store(true, Ordering::Relaxed);
    let mut first_error = started.err();
    for t in threads {
        if let Err(e) = t.join().expect("a consumer thread panicked") {
            first_error = first_error.or(Some(e));
        }
    }
    progress.stop();
    if let Some(e) = first_error {
        return Err(e);
    }
    let received = shared.received.load(Ordering::Relaxed);
    Ok(Outcome {
        elapsed: Duration::from_nanos(t1 - t0),
        messages: received,
        deliveries: received,
        lost: plan.msgs.saturating_sub(received),
        errors: 0,
        latency: load::histogram(),
    })
}
