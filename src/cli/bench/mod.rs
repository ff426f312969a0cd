//! `sluice bench`: drives a server with Sluice's own load generator and reports throughput and
//! latency percentiles.
//!
//! The load runs on its own pinned CPUs, one thread per connection, over the native protocol or the
//! NATS protocol (the same generator against nats-server and against Sluice's NATS port). Every
//! payload starts with its send time, so subscribers measure one-way latency; with `--rate` the send
//! time is the intended one (open loop, no coordinated omission).

mod embedded;
mod load;
mod plot;
mod report;
mod wire;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use thiserror::Error;

use self::load::Shared;
use self::report::Outcome;
pub use self::wire::Protocol;
use super::cpus;

/// What a benchmark run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// P publishers and S subscribers on one subject: every subscriber gets every message.
    Pubsub,
    /// Each publisher on its own subject, S subscribers on a wildcard over all of them.
    Fanout,
    /// P publishers, S subscribers in one queue group: each message reaches one of them.
    Queue,
    /// P requesters with W requests in flight each, S responders in a queue group echoing them.
    Request,
    /// Durable publish: P publishers, W publishes in flight each, every ack awaited.
    Stream,
    /// Publish N messages to a stream, then drain them through S consumers with acks.
    Consume,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "pubsub")]
    scenario: Scenario,
    /// Messages to publish (over all publishers).
    #[arg(long, default_value_t = 1_000_000)]
    msgs: u64,
    /// Payload bytes per message (at least 8: the send time).
    #[arg(long, default_value_t = 16)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    pubs: usize,
    #[arg(long, default_value_t = 1)]
    subs: usize,
    /// Requests or durable publishes in flight per publisher.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Open loop: publish at this many messages per second in all (default: as fast as the
    /// subscribers or acks allow).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct subjects a stream publisher spreads its messages over (1 if not given). When given,
    /// even as 1, the publisher encodes every message as it sends it instead of patching one
    /// template, so that runs with different counts cost the client the same.
    #[arg(long)]
    subjects: Option<u64>,
    #[arg(long, value_enum, default_value = "native")]
    protocol: Protocol,
    /// Server address (default: the protocol's default port on loopback).
    #[arg(short, long, conflicts_with = "embedded")]
    server: Option<String>,
    /// Start a broker on the other CPUs with a temporary data directory, and stop it afterwards.
    #[arg(long)]
    embedded: bool,
    /// CPUs for the embedded broker (default: the first half of this process's CPUs).
    #[arg(long)]
    server_cpus: Option<String>,
    /// CPUs for the load threads (default: the CPUs the embedded broker does not use, or all).
    #[arg(long)]
    load_cpus: Option<String>,
    /// The embedded broker's fsync policy.
    #[arg(long, default_value = "always")]
    fsync: sluice_storage::FsyncPolicy,
    /// Stream the `stream` and `consume` scenarios use (created if missing).
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// Process id of the server, to report its memory (RSS) after the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of this run in tables, JSON and plots.
    #[arg(long)]
    label: Option<String>,
    /// Write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency percentiles as SVG, with the runs of every `--overlay` file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Earlier `--json` results to draw in the same plot (repeatable).
    #[arg(long)]
    overlay: Vec<PathBuf>,
    /// Do not run: only draw `--plot` from the `--overlay` files.
    #[arg(long, requires = "plot")]
    plot_only: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

/// What can stop a benchmark.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Setup(String),
    #[error("client: {0}")]
    Client(#[from] crate::client::ClientError),
}

/// Everything a load thread needs to know.
pub struct Plan {
    pub scenario: Scenario,
    pub protocol: Protocol,
    pub addr: String,
    pub msgs: u64,
    pub size: usize,
    pub pubs: usize,
    pub subs: usize,
    pub in_flight: usize,
    pub rate: Option<f64>,
    pub subjects: u64,
    /// Whether each message is encoded as it is sent (`--subjects` given), not patched from a
    /// template.
    pub encode_each: bool,
    pub stream: String,
}

impl Plan {
    /// The subject publisher `index` sends on.
    pub fn core_subject(&self, index: usize) -> String {
        match self.scenario {
            Scenario::Fanout => format!("bench.fanout.{index}"),
            Scenario::Stream | Scenario::Consume => format!("{}.0", self.subject_root()),
            s => format!("bench.{}", s.name()),
        }
    }

    /// The pattern subscribers and responders use.
    pub fn core_pattern(&self) -> String {
        match self.scenario {
            Scenario::Fanout => "bench.fanout.*".into(),
            s => format!("bench.{}", s.name()),
        }
    }

    /// Where stream publishes go: `<root>.<n>`.
    pub fn subject_root(&self) -> String {
        format!("stream.{}", self.stream.to_lowercase())
    }

    /// How many subscribers receive each message.
    pub fn deliveries_per_message(&self) -> u64 {
        match self.scenario {
            Scenario::Pubsub | Scenario::Fanout => self.subs as u64,
            _ => 1,
        }
    }

    /// Closed-loop flow control: messages the publishers may be ahead of the readers, about 2 MiB
    /// of them, so that the run measures delivery rather than buffering in the server.
    pub fn window_messages(&self) -> u64 {
        ((2 << 20) / (self.size as u64 + 64)).max(256)
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pubsub => "pubsub",
            Scenario::Fanout => "fanout",
            Scenario::Queue => "queue",
            Scenario::Request => "request",
            Scenario::Stream => "stream",
            Scenario::Consume => "consume",
        }
    }
}

/// Runs `sluice bench`.
pub fn run(args: BenchArgs) -> Result<(), String> {
    run_inner(args).map_err(|e| e.to_string())
}

fn run_inner(args: BenchArgs) -> Result<(), BenchError> {
    if args.plot_only {
        let runs = report::load_runs(&args.overlay)?;
        let path = args.plot.as_ref().expect("clap requires --plot");
        plot::draw(path, &runs)?;
        println!("plot: {}", path.display());
        return Ok(());
    }
    if args.size < wire::STAMP_BYTES {
        return Err(BenchError::Setup(format!(
            "--size must be at least {} bytes (the send time)",
            wire::STAMP_BYTES
        )));
    }
    if args.scenario == Scenario::Consume && args.protocol == Protocol::Nats {
        return Err(BenchError::Setup(
            "the consume scenario speaks the native protocol".into(),
        ));
    }
    let allowed = cpus::allowed();
    let mut server: Option<embedded::Embedded> = None;
    let (addr, load_cpus, server_pid) = if args.embedded {
        let server_cpus = match &args.server_cpus {
            Some(list) => cpus::parse_list(list).map_err(BenchError::Setup)?,
            None => allowed[..allowed.len().div_ceil(2).min(allowed.len())].to_vec(),
        };
        let load = match &args.load_cpus {
            Some(list) => cpus::parse_list(list).map_err(BenchError::Setup)?,
            None => {
                let rest: Vec<usize> = allowed
                    .iter()
                    .copied()
                    .filter(|c| !server_cpus.contains(c))
                    .collect();
                if rest.is_empty() {
                    allowed.clone()
                } else {
                    rest
                }
            }
        };
        let s = embedded::Embedded::start(&server_cpus, args.fsync)?;
        let addr = match args.protocol {
            Protocol::Native => s.native.clone(),
            Protocol::Nats => s.nats.clone(),
        };
        let pid = s.pid();
        eprintln!(
            "embedded broker: pid {pid}, {} shard(s) on CPUs {server_cpus:?}, load on CPUs {load:?}",
            server_cpus.len()
        );
        server = Some(s);
        (addr, load, Some(pid))
    } else {
        let addr = args.server.clone().unwrap_or_else(|| match args.protocol {
            Protocol::Native => super::NATIVE_ADDR_DEFAULT.to_string(),
            Protocol::Nats => super::NATS_ADDR_DEFAULT.to_string(),
        });
        let load = match &args.load_cpus {
            Some(list) => cpus::parse_list(list).map_err(BenchError::Setup)?,
            None => allowed.clone(),
        };
        (addr, load, args.server_pid)
    };
    let plan = Arc::new(Plan {
        scenario: args.scenario,
        protocol: args.protocol,
        addr,
        msgs: args.msgs,
        size: args.size,
        pubs: args.pubs.max(1),
        subs: args.subs.max(1),
        in_flight: args.in_flight.max(1),
        rate: args.rate,
        subjects: args.subjects.unwrap_or(1).max(1),
        encode_each: args.subjects.is_some(),
        stream: args.stream.clone(),
    });
    if matches!(plan.scenario, Scenario::Stream | Scenario::Consume) {
        // An embedded broker gets its stream through its native port whatever the load speaks.
        match &server {
            Some(s) => embedded::ensure_stream(&Plan {
                protocol: Protocol::Native,
                addr: s.native.clone(),
                stream: plan.stream.clone(),
                ..*plan
            })?,
            None => embedded::ensure_stream(&plan)?,
        }
    }
    let outcome = execute(&plan, &load_cpus, args.quiet)?;
    let rss = server_pid.and_then(report::rss_bytes);
    let label = args.label.clone().unwrap_or_else(|| {
        format!(
            "{} {} {} B{}",
            plan.protocol_name(),
            plan.scenario.name(),
            plan.size,
            if plan.scenario == Scenario::Stream {
                format!(", {} in flight", plan.in_flight)
            } else {
                String::new()
            }
        )
    });
    let result = report::RunResult::new(label, &plan, &outcome, rss);
    report::print_table(std::slice::from_ref(&result));
    if let Some(path) = &args.json {
        report::write_json(path, &result)?;
    }
    if let Some(path) = &args.plot {
        let mut runs = report::load_runs(&args.overlay)?;
        runs.push(result.clone());
        plot::draw(path, &runs)?;
        eprintln!("plot: {}", path.display());
    }
    drop(server);
    if outcome.lost > 0 || outcome.errors > 0 {
        return Err(BenchError::Setup(format!(
            "{} messages not delivered, {} errors",
            outcome.lost, outcome.errors
        )));
    }
    Ok(())
}

impl Plan {
    fn protocol_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Native => "native",
            Protocol::Nats => "nats",
        }
    }
}

/// Runs the load threads of the plan's scenario and waits for them.
fn execute(plan: &Arc<Plan>, load_cpus: &[usize], quiet: bool) -> Result<Outcome, BenchError> {
    if plan.scenario == Scenario::Consume {
        return embedded::consume(plan, load_cpus, quiet);
    }
    let (writers, readers) = match plan.scenario {
        Scenario::Stream => (plan.pubs, 0),
        _ => (plan.pubs, plan.subs),
    };
    let shared = Arc::new(Shared::new(writers + readers + 1));
    let expected_total = plan.msgs * plan.deliveries_per_message();
    let mut cpu_of = {
        let mut next = 0usize;
        let cpus = load_cpus.to_vec();
        move || {
            let cpu = cpus.get(next % cpus.len().max(1)).copied();
            next += 1;
            cpu
        }
    };
    let mut reader_threads = Vec::new();
    for index in 0..readers {
        let (plan, shared, cpu) = (plan.clone(), shared.clone(), cpu_of());
        let expected = match plan.scenario {
            Scenario::Pubsub | Scenario::Fanout => Some(plan.msgs),
            _ => None,
        };
        reader_threads.push(std::thread::spawn(move || {
            load::pin(cpu);
            let result = match plan.scenario {
                Scenario::Request => load::responder(&plan, &shared).map(|()| None),
                _ => load::subscriber(&plan, &shared, index, expected).map(Some),
            };
            if result.is_err() {
                shared.start_failed();
            }
            result
        }));
    }
    let mut writer_threads = Vec::new();
    for index in 0..writers {
        let (plan, shared, cpu) = (plan.clone(), shared.clone(), cpu_of());
        writer_threads.push(std::thread::spawn(move || {
            load::pin(cpu);
            let result = match plan.scenario {
                Scenario::Request | Scenario::Stream => {
                    load::requester(&plan, &shared, index).map(Some)
                }
                _ => load::publisher(&plan, &shared, index).map(|()| None),
            };
            if result.is_err() {
                shared.start_failed();
            }
            result
        }));
    }
    let started = shared.start.wait();
    let t0 = shared.now_ns();
    shared.started_ns.store(t0, Ordering::Relaxed);
    let progress = report::Progress::start(shared.clone(), quiet);
    let mut hist = load::histogram();
    let mut first_error = None;
    for t in writer_threads {
        match t.join().expect("a load thread panicked") {
            Ok(Some(h)) => hist.add(&h).expect("same histogram bounds"),
            Ok(None) => {}
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let is_echo = plan.scenario == Scenario::Request;
    // Wait for the subscribers to take everything, giving up after 10 s without progress.
    if !is_echo && readers > 0 && first_error.is_none() {
        shared.wait_for_received(expected_total);
    }
    let t1 = shared.now_ns();
    shared.done.store(true, Ordering::Relaxed);
    for t in reader_threads {
        match t.join().expect("a load thread panicked") {
            Ok(Some(h)) => hist.add(&h).expect("same histogram bounds"),
            Ok(None) => {}
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    progress.stop();
    if let Some(e) = first_error.or(started.err()) {
        return Err(e);
    }
    let received = shared.received.load(Ordering::Relaxed);
    let expected = if is_echo || plan.scenario == Scenario::Stream {
        plan.msgs
    } else {
        expected_total
    };
    Ok(Outcome {
        elapsed: Duration::from_nanos(t1 - t0),
        messages: plan.msgs,
        deliveries: received,
        lost: expected.saturating_sub(received),
        errors: shared.errors.load(Ordering::Relaxed),
        latency: hist,
    })
}
