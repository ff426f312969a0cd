//! `sluice tune`: what this machine offers the broker (CPUs, NUMA nodes, NIC queues and their IRQs,
//! limits, io_uring and O_DIRECT), and concrete advice. It only reads; it changes nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::cpus;

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The data directory to check direct I/O in.
    #[arg(long, default_value = crate::server::DATA_DIR_DEFAULT)]
    data_dir: PathBuf,
}

/// Locked memory one shard needs, in KiB: its I/O memory, registered with each of its executor's
/// three io_uring rings (the kernel counts every registration).
const LOCKED_KIB_PER_SHARD: u64 = crate::server::IO_MEMORY_BYTES_PER_SHARD as u64 / 1024 * 3;

/// One receive or send queue's interrupt.
struct QueueIrq {
    irq: u32,
    name: String,
    cpus: String,
}

/// A network interface and its queues.
struct Nic {
    name: String,
    device: Option<String>,
    rx_queues: usize,
    tx_queues: usize,
    irqs: Vec<QueueIrq>,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn numa_nodes() -> Vec<(String, String)> {
    let mut nodes = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/devices/system/node") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("node") && name[4..].bytes().all(|b| b.is_ascii_digit()) {
                let cpus = read(entry.path().join("cpulist")).unwrap_or_default();
                nodes.push((name, cpus));
            }
        }
    }
    nodes.sort();
    nodes
}

fn nics() -> Vec<Nic> {
    let interrupts = read("/proc/interrupts").unwrap_or_default();
    let mut nics = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return nics;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // Only interfaces backed by a device (not lo, bridges or ifb).
        let Ok(device) = std::fs::read_link(entry.path().join("device")) else {
            continue;
        };
        let device = device.file_name().map(|d| d.to_string_lossy().to_string());
        let queues = std::fs::read_dir(entry.path().join("queues"))
            .map(|q| {
                q.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut irqs = Vec::new();
        for line in interrupts.lines() {
            let Some((number, rest)) = line.split_once(':') else {
                continue;
            };
            let Ok(irq) = number.trim().parse::<u32>() else {
                continue;
            };
            let label = rest.split_whitespace().last().unwrap_or("").to_string();
            let ours = label == name
                || label.starts_with(&format!("{name}-"))
                || device.as_ref().is_some_and(|d| {
                    label.starts_with(&format!("{d}-input"))
                        || label.starts_with(&format!("{d}-output"))
                });
            if ours {
                let cpus = read(format!("/proc/irq/{irq}/smp_affinity_list")).unwrap_or_default();
                irqs.push(QueueIrq {
                    irq,
                    name: label,
                    cpus,
                });
            }
        }
        nics.push(Nic {
            name,
            device,
            rx_queues: queues.iter().filter(|q| q.starts_with("rx-")).count(),
            tx_queues: queues.iter().filter(|q| q.starts_with("tx-")).count(),
            irqs,
        });
    }
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

fn limit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    // SAFETY: getrlimit fills the struct it is given.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(resource, &mut rl) } != 0 {
        return (0, 0);
    }
    (rl.rlim_cur, rl.rlim_max)
}

fn show_limit(value: u64) -> String {
    if value == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

/// Starts a glommio executor: io_uring works if it runs.
fn io_uring_works() -> Result<(), String> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(crate::server::IO_MEMORY_BYTES_PER_SHARD)
        .spawn(|| async {})
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())
}

/// Opens a file with O_DIRECT in `dir`.
fn direct_io_works(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join(".sluice-tune-probe");
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let _ = std::fs::remove_file(&path);
    opened.map(|_| ()).map_err(|e| e.to_string())
}

/// Prints the report.
pub fn run(args: TuneArgs) -> Result<(), String> {
    let online = read("/sys/devices/system/cpu/online").unwrap_or_else(|| "?".into());
    let allowed = cpus::allowed();
    let mut out = String::new();
    let _ = writeln!(out, "sluice tune: this machine, for the broker");
    let _ = writeln!(
        out,
        "cpus: {} online ({online}); this process may use {:?}",
        num_cpus_online(&online, &allowed),
        allowed
    );
    for (node, cpus) in numa_nodes() {
        let _ = writeln!(out, "numa {node}: cpus {cpus}");
    }
    let (memlock, memlock_max) = limit(libc::RLIMIT_MEMLOCK);
    let (nofile, nofile_max) = limit(libc::RLIMIT_NOFILE);
    let _ = writeln!(
        out,
        "memlock: {} bytes (hard {})",
        show_limit(memlock),
        show_limit(memlock_max)
    );
    let _ = writeln!(
        out,
        "open files: {} (hard {})",
        show_limit(nofile),
        show_limit(nofile_max)
    );
    let _ = writeln!(
        out,
        "io_uring: {}",
        io_uring_works().map_or_else(|e| format!("FAILED: {e}"), |()| "ok".into())
    );
    let _ = writeln!(
        out,
        "O_DIRECT in {}: {}",
        args.data_dir.display(),
        direct_io_works(&args.data_dir).map_or_else(|e| format!("FAILED: {e}"), |()| "ok".into())
    );
    let nics = nics();
    if nics.is_empty() {
        let _ = writeln!(out, "nics: none with a device (loopback only)");
    }
    for nic in &nics {
        let _ = writeln!(
            out,
            "nic {} ({}): {} rx / {} tx queues",
            nic.name,
            nic.device.as_deref().unwrap_or("?"),
            nic.rx_queues,
            nic.tx_queues
        );
        for q in &nic.irqs {
            let _ = writeln!(out, "  irq {} {} -> cpus {}", q.irq, q.name, q.cpus);
        }
    }
    let _ = writeln!(out, "advice:");
    let shards = allowed.len().max(1) as u64;
    let need_kib = shards * LOCKED_KIB_PER_SHARD;
    if memlock != libc::RLIM_INFINITY && memlock / 1024 < need_kib {
        let _ = writeln!(out, "  - raise the locked-memory limit to at least {need_kib} KiB for {shards} shards: ulimit -l {need_kib} (or LimitMEMLOCK= in the unit)");
    }
    if nofile != libc::RLIM_INFINITY && nofile < 65536 {
        let _ = writeln!(
            out,
            "  - raise open files for many connections: ulimit -n 1048576 (or LimitNOFILE=)"
        );
    }
    for nic in &nics {
        let queues = nic
            .irqs
            .iter()
            .filter(|q| {
                q.name.contains("input") || q.name.contains("rx") || q.name.contains("TxRx")
            })
            .collect::<Vec<_>>();
        if queues.is_empty() {
            continue;
        }
        let cpus: Vec<usize> = allowed.iter().copied().take(queues.len()).collect();
        let list = cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(out, "  - {}: one shard per receive queue, on the CPU that services it: sluice serve --cpuset {list}", nic.name);
        for (q, cpu) in queues.iter().zip(&cpus) {
            let _ = writeln!(
                out,
                "    echo {cpu} > /proc/irq/{}/smp_affinity_list   # {}",
                q.irq, q.name
            );
        }
        let _ = writeln!(
            out,
            "    tuning/irq-affinity {} --dry-run   # the same, for every queue (RPS/XPS too)",
            nic.name
        );
    }
    for (key, want, why) in SYSCTLS {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let Some(now) = read(&path).and_then(|v| v.trim().parse::<u64>().ok()) else {
            continue;
        };
        if now < *want {
            let _ = writeln!(
                out,
                "  - sysctl -w {key}={want}   # now {now}; {why} (tuning/sysctl.conf has them all)"
            );
        }
    }
    let _ = writeln!(out, "  - --fsync always (default) survives power loss with group commit; never is faster and survives process crashes only");
    print!("{out}");
    Ok(())
}

/// Kernel settings worth raising for many connections and bursts: (key, at least, why).
const SYSCTLS: &[(&str, u64, &str)] = &[
    (
        "net.core.somaxconn",
        4096,
        "connection bursts at startup or failover",
    ),
    (
        "net.ipv4.tcp_max_syn_backlog",
        8192,
        "the same, before accept",
    ),
    (
        "net.core.netdev_max_backlog",
        16384,
        "packets queued per CPU at high rates",
    ),
    (
        "net.core.rmem_max",
        16777216,
        "room for large socket receive buffers",
    ),
    (
        "net.core.wmem_max",
        16777216,
        "room for large socket send buffers",
    ),
    (
        "fs.file-max",
        2097152,
        "file descriptors over all processes",
    ),
];

fn num_cpus_online(online: &str, allowed: &[usize]) -> usize {
    cpus::parse_list(online).map_or(allowed.len(), |l| l.len())
}
