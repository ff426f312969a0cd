//! What a run reports: the table, the JSON result, the progress line and the server's memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::load::Shared;
use super::{BenchError, Plan};

/// What the load threads measured.
pub struct Outcome {
    pub elapsed: Duration,
    /// Messages published (or read, for the consume scenario).
    pub messages: u64,
    /// Messages received over all subscribers (replies or acks for request and stream).
    pub deliveries: u64,
    pub lost: u64,
    pub errors: u64,
    /// Nanoseconds.
    pub latency: Histogram<u64>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

/// One run, as printed, written with `--json` and read back for plots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub label: String,
    pub scenario: String,
    pub protocol: String,
    pub server: String,
    pub msgs: u64,
    pub size: usize,
    pub pubs: usize,
    pub subs: usize,
    pub in_flight: usize,
    pub rate: Option<f64>,
    pub subjects: u64,
    pub elapsed_s: f64,
    /// Messages published (or consumed) per second, until the last one was delivered or acked.
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Messages received per second over all subscribers.
    pub deliveries_per_s: f64,
    pub lost: u64,
    pub errors: u64,
    /// The server's resident memory after the run, if its process id is known.
    pub rss_bytes: Option<u64>,
    /// One-way latency (pub/sub), round trip (request) or publish-to-ack (stream); none for consume.
    pub latency_us: Option<Latency>,
    /// (percentile, microseconds) pairs for plots.
    pub percentiles: Vec<(f64, f64)>,
}

/// Percentiles drawn in plots: 0 to 99.9999, evenly spread on the log scale of 1/(1-p).
fn plot_quantiles() -> Vec<f64> {
    (0..=60)
        .map(|i| 1.0 - 10f64.powf(-(i as f64) / 10.0))
        .collect()
}

impl RunResult {
    pub fn new(label: String, plan: &Plan, outcome: &Outcome, rss: Option<u64>) -> RunResult {
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let h = &outcome.latency;
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let (latency, percentiles) = if h.is_empty() {
            (None, Vec::new())
        } else {
            (
                Some(Latency {
                    p50: us(0.5),
                    p90: us(0.9),
                    p99: us(0.99),
                    p999: us(0.999),
                    p9999: us(0.9999),
                    max: h.max() as f64 / 1e3,
                }),
                plot_quantiles()
                    .into_iter()
                    .map(|q| (q * 100.0, us(q)))
                    .collect(),
            )
        };
        RunResult {
            label,
            scenario: plan.scenario.name().into(),
            protocol: format!("{:?}", plan.protocol).to_lowercase(),
            server: plan.addr.clone(),
            msgs: plan.msgs,
            size: plan.size,
            pubs: plan.pubs,
            subs: plan.subs,
            in_flight: plan.in_flight,
            rate: plan.rate,
            subjects: plan.subjects,
            elapsed_s: secs,
            msgs_per_s: outcome.messages as f64 / secs,
            mb_per_s: outcome.messages as f64 * plan.size as f64 / secs / 1e6,
            deliveries_per_s: outcome.deliveries as f64 / secs,
            lost: outcome.lost,
            errors: outcome.errors,
            rss_bytes: rss,
            latency_us: latency,
            percentiles,
        }
    }
}

/// Prints runs as a table.
pub fn print_table(runs: &[RunResult]) {
    println!(
        "{:<34} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}{}",
        "run",
        "msgs/s",
        "MB/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99us",
        "max us",
        if runs.iter().any(|r| r.rss_bytes.is_some()) {
            "  server RSS"
        } else {
            ""
        }
    );
    for r in runs {
        let l = |f: fn(&Latency) -> f64| {
            r.latency_us
                .as_ref()
                .map_or("-".to_string(), |l| format!("{:.1}", f(l)))
        };
        println!(
            "{:<34} {:>11.0} {:>8.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}{}",
            r.label,
            r.msgs_per_s,
            r.mb_per_s,
            l(|l| l.p50),
            l(|l| l.p90),
            l(|l| l.p99),
            l(|l| l.p999),
            l(|l| l.p9999),
            l(|l| l.max),
            r.rss_bytes.map_or(String::new(), |b| format!(
                "  {:.1} MiB",
                b as f64 / 1048576.0
            )),
        );
        if r.lost > 0 || r.errors > 0 {
            println!("  {} lost, {} errors", r.lost, r.errors);
        }
    }
}

pub fn write_json(path: &Path, run: &RunResult) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(run).map_err(|e| BenchError::Setup(e.to_string()))?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

/// Reads `--json` results back.
pub fn load_runs(paths: &[PathBuf]) -> Result<Vec<RunResult>, BenchError> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)?;
            serde_json::from_str(&text)
                .map_err(|e| BenchError::Setup(format!("{}: {e}", p.display())))
        })
        .collect()
}

/// Resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A line on stderr every second while the load runs.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(shared: Arc<Shared>, quiet: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!quiet).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let t0 = shared.now_ns();
                let mut last = (0u64, t0);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10 {
                        std::thread::sleep(Duration::from_millis(100));
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    let now = shared.now_ns();
                    let sent = shared.sent.load(Ordering::Relaxed);
                    let received = shared.received.load(Ordering::Relaxed);
                    let rate = (received - last.0) as f64 / ((now - last.1) as f64 / 1e9);
                    last = (received, now);
                    let text = format!(
                        "{:6.1}s  sent {sent:>10}  received {received:>10}  {rate:>10.0}/s",
                        (now - t0) as f64 / 1e9
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = if tty {
                        write!(err, "\r{text}")
                    } else {
                        writeln!(err, "{text}")
                    };
                }
                if tty {
                    let _ = writeln!(std::io::stderr());
                }
            })
        });
        Progress { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
