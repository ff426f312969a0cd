//! The segment log's throughput and append-to-durable latency, beside the device's ceiling and a
//! buffered-I/O baseline, all measured in the same run.
//!
//! - `log always|never, B, W in flight`: W tasks each append one record of B bytes at a time to one
//!   partition log and wait for it to be durable under the policy (group commit shares syncs).
//!   `W x N-record appends`: the same with N records per append call, as a broker connection
//!   appends what one read brought in.
//! - `raw O_DIRECT 1 MiB writes`: sequential 1 MiB direct writes, 4 in flight, no sync: the ceiling.
//! - `std::fs append + fdatasync per batch`: buffered writes of W records then one fdatasync, in a
//!   loop: what a simple log without direct I/O or group commit gets.
//!
//! `cargo bench --bench storage` measures (SLUICE_BENCH_DIR picks the disk, default the temp dir);
//! under `cargo test` it runs a few milliseconds of each as a smoke test.

use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

struct Row {
    name: String,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Option<Histogram<u64>>,
}

impl Row {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        let (p50, p99, p999) = match &self.latency {
            Some(h) => (
                format!("{:.1}", h.value_at_quantile(0.50) as f64 / 1000.0),
                format!("{:.1}", h.value_at_quantile(0.99) as f64 / 1000.0),
                format!("{:.1}", h.value_at_quantile(0.999) as f64 / 1000.0),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {:<44} | {:>12.0} | {:>9.1} | {:>9} | {:>9} | {:>9} |",
            self.name,
            self.records as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            p50,
            p99,
            p999
        );
    }
}

/// Whether a case runs: `SLUICE_BENCH_CASE=text` keeps only the cases whose name contains it.
fn selected(name: &str) -> bool {
    std::env::var("SLUICE_BENCH_CASE").map_or(true, |filter| name.contains(&filter))
}

fn bench_dir() -> std::path::PathBuf {
    let base = std::env::var_os("SLUICE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("sluice-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn log_run(
    dir: std::path::PathBuf,
    policy: FsyncPolicy,
    record_bytes: usize,
    in_flight: usize,
    per_append: usize,
    duration: Duration,
) -> Row {
    let config = LogConfig {
        fsync: policy,
        ..LogConfig::default()
    };
    let log = Rc::new(PartitionLog::open(&dir, config).await.unwrap());
    let batch: Vec<Bytes> = (0..per_append)
        .map(|_| Bytes::from(vec![b'x'; record_bytes]))
        .collect();
    // One histogram for all tasks (hundreds of private ones would measure cache misses), and one
    // clock read per append.
    let hist = Rc::new(std::cell::RefCell::new(
        Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 2).unwrap(),
    ));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let log = log.clone();
            let batch = batch.clone();
            let hist = hist.clone();
            glommio::spawn_local(async move {
                let mut n = 0u64;
                let mut t = Instant::now();
                while t < deadline {
                    log.append(&batch).await.unwrap();
                    let now = Instant::now();
                    let _ = hist.borrow_mut().record((now - t).as_nanos() as u64);
                    t = now;
                    n += batch.len() as u64;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await;
    }
    let elapsed = start.elapsed();
    log.close().await.unwrap();
    let policy_name = policy_name(policy);
    Row {
        name: if per_append == 1 {
            format!("log {policy_name}, {record_bytes} B, {in_flight} in flight")
        } else {
            format!(
                "log {policy_name}, {record_bytes} B, {in_flight} x {per_append}-record appends"
            )
        },
        records: total,
        bytes: total * record_bytes as u64,
        elapsed,
        latency: Some(Rc::try_unwrap(hist).ok().unwrap().into_inner()),
    }
}

fn policy_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "always",
        FsyncPolicy::Never => "never",
        FsyncPolicy::Interval(_) => "interval",
    }
}

async fn raw_direct(dir: std::path::PathBuf, duration: Duration) -> Row {
    const WRITE: usize = 1024 * 1024;
    const DEPTH: usize = 4;
    let file = Rc::new(DmaFile::create(dir.join("raw")).await.unwrap());
    let start = Instant::now();
    let mut position = 0u64;
    let mut writes = 0u64;
    while start.elapsed() < duration {
        let batch: Vec<_> = (0..DEPTH)
            .map(|i| {
                let file = file.clone();
                let mut buf = file.alloc_dma_buffer(WRITE);
                buf.as_bytes_mut().fill(b'r');
                let at = position + (i * WRITE) as u64;
                glommio::spawn_local(async move { file.write_at(buf, at).await.unwrap() })
            })
            .collect();
        for w in batch {
            w.await;
        }
        position += (DEPTH * WRITE) as u64;
        writes += DEPTH as u64;
    }
    let elapsed = start.elapsed();
    Rc::try_unwrap(file).ok().unwrap().close().await.unwrap();
    Row {
        name: "raw O_DIRECT 1 MiB writes, 4 in flight".into(),
        records: writes,
        bytes: writes * WRITE as u64,
        elapsed,
        latency: None,
    }
}

fn buffered_baseline(
    dir: &std::path::Path,
    record_bytes: usize,
    batch: usize,
    duration: Duration,
) -> Row {
    let mut file =
        std::fs::File::create(dir.join(format!("buffered-{record_bytes}-{batch}"))).unwrap();
    let record = vec![b'b'; record_bytes + 24];
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let start = Instant::now();
    let mut records = 0u64;
    while start.elapsed() < duration {
        let t = Instant::now();
        for _ in 0..batch {
            file.write_all(&record).unwrap();
        }
        file.sync_data().unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        records += batch as u64;
    }
    Row {
        name: format!("std::fs append + fdatasync, {record_bytes} B, batch {batch}"),
        records,
        bytes: records * record_bytes as u64,
        elapsed: start.elapsed(),
        latency: Some(h),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let duration = if full {
        Duration::from_millis(2000)
    } else {
        Duration::from_millis(20)
    };
    let root = bench_dir();
    let rows = LocalExecutorBuilder::new(Placement::Fixed(0))
        .spawn({
            let root = root.clone();
            move || async move {
                let mut rows = Vec::new();
                let mut case = 0;
                if selected("raw O_DIRECT 1 MiB writes, 4 in flight") {
                    rows.push(raw_direct(root.clone(), duration).await);
                }
                for record_bytes in [100usize, 1024] {
                    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
                        for in_flight in [1usize, 16, 256] {
                            case += 1;
                            let dir = root.join(format!("log-{case}"));
                            let name = format!(
                                "log {}, {record_bytes} B, {in_flight} in flight",
                                policy_name(policy)
                            );
                            if selected(&name) {
                                rows.push(
                                    log_run(dir, policy, record_bytes, in_flight, 1, duration)
                                        .await,
                                );
                            }
                        }
                    }
                }
                // Publishers batch: a connection's read buffer holds many publishes, appended at
                // once. 64 x 64 KiB puts 4 MiB in flight, as the raw test does.
                for in_flight in [16usize, 64] {
                    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
                        case += 1;
                        let dir = root.join(format!("log-{case}"));
                        let name = format!(
                            "log {}, 1024 B, {in_flight} x 64-record appends",
                            policy_name(policy)
                        );
                        if selected(&name) {
                            rows.push(log_run(dir, policy, 1024, in_flight, 64, duration).await);
                        }
                    }
                }
                // The device drifts: measure its ceiling again at the end.
                if selected("raw O_DIRECT 1 MiB writes, 4 in flight") {
                    rows.push(raw_direct(root.clone(), duration).await);
                }
                rows
            }
        })
        .unwrap()
        .join()
        .unwrap();
    println!(
        "| {:<44} | {:>12} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "case", "records/s", "MB/s", "p50 us", "p99 us", "p999 us"
    );
    println!(
        "|{:-<46}|{:->14}|{:->11}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", "", ""
    );
    for row in rows.iter().filter(|r| selected(&r.name)) {
        row.print();
    }
    for record_bytes in [100usize, 1024] {
        for batch in [1usize, 16, 256] {
            let name = format!("std::fs append + fdatasync, {record_bytes} B, batch {batch}");
            if selected(&name) {
                buffered_baseline(&root, record_bytes, batch, duration).print();
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
