//! What `/metrics` and `/readyz` report. Each shard describes itself ([`snapshot`]) from what it
//! owns; shard 0 asks the others over the mesh and writes the Prometheus text ([`render`]).

use std::fmt::Write as _;
use std::rc::Rc;

use sluice_storage::{Histogram, LogMetricsSnapshot, BUCKET_BOUNDS_US};

use super::StreamShard;
use crate::api::ConsumerPartitionInfo;

/// One shard's figures at one moment.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    pub shard: u32,
    /// (name, value, is a counter) in a fixed order.
    pub figures: Vec<(&'static str, u64, bool)>,
    /// Whether every partition this shard owns has recovered its log (and, on shard 0, the
    /// stream registry is loaded).
    pub ready: bool,
    pub partitions: Vec<PartitionMetrics>,
    pub log: LogMetricsSnapshot,
}

/// One owned partition's figures.
#[derive(Debug, Clone)]
pub struct PartitionMetrics {
    pub stream: String,
    pub partition: u32,
    pub messages: u64,
    pub bytes: u64,
    pub consumers: Vec<(String, ConsumerPartitionInfo)>,
    /// A replicated partition's consensus group, as this node sees it.
    pub group: Option<crate::api::GroupInfo>,
}

/// Describes this shard.
pub async fn snapshot(shard: &Rc<StreamShard>) -> ShardMetrics {
    let s = &shard.core.stats;
    let figures = vec![
        ("connections", s.connections_open.get(), false),
        ("connections_accepted", s.connections_accepted.get(), true),
        ("connections_refused", s.connections_refused.get(), true),
        ("subscriptions", s.subscriptions.get(), false),
        ("messages_in", s.msgs_in.get(), true),
        ("bytes_in", s.bytes_in.get(), true),
        ("messages_out", s.msgs_out.get(), true),
        ("bytes_out", s.bytes_out.get(), true),
        ("forwards_out", s.forwards_out.get(), true),
        ("forwards_in", s.forwards_in.get(), true),
        ("slow_consumers", s.slow_consumers.get(), true),
        ("protocol_errors", s.protocol_errors.get(), true),
        ("permission_errors", s.permission_errors.get(), true),
        ("auth_failures", s.auth_failures.get(), true),
        (
            "tls_handshake_failures",
            s.tls_handshake_failures.get(),
            true,
        ),
        ("queue_drops", s.queue_drops.get(), true),
    ];
    let mut ready = (shard.core.id.0 != 0 || shard.registry.borrow().is_some())
        && shard.streams_known.get()
        && shard.consumer_pass.get() == 0;
    let mut partitions = Vec::new();
    let mut log = LogMetricsSnapshot::default();
    for part in super::owned_partitions(shard) {
        if part.is_unopened() {
            continue; // Opened on first use: nothing to report, nothing to wait for.
        }
        if !part.is_open() {
            ready = false;
            continue;
        }
        let info = part.info().await;
        if let Some(m) = part.log_metrics() {
            log.fsync.merge(&m.fsync);
            log.append.merge(&m.append);
        }
        partitions.push(PartitionMetrics {
            stream: part.config.name.clone(),
            partition: part.index,
            messages: info.messages,
            bytes: info.bytes,
            consumers: part.consumer_infos().await,
            group: super::replica::group_info(&part),
        });
    }
    ShardMetrics {
        shard: shard.core.id.0,
        figures,
        ready,
        partitions,
        log,
    }
}

/// The Prometheus text of every shard's figures: per shard (`sluice_shard_*{shard="N"}`) and in
/// total (`sluice_*`), streams and consumers by name, and the log latency histograms.
pub fn render(shards: &[ShardMetrics]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let Some(first) = shards.first() else {
        return out;
    };
    for (i, &(name, _, counter)) in first.figures.iter().enumerate() {
        let (suffix, kind) = if counter {
            ("_total", "counter")
        } else {
            ("", "gauge")
        };
        let total: u64 = shards.iter().map(|s| s.figures[i].1).sum();
        let _ = writeln!(out, "# TYPE sluice_{name}{suffix} {kind}");
        let _ = writeln!(out, "sluice_{name}{suffix} {total}");
        let _ = writeln!(out, "# TYPE sluice_shard_{name}{suffix} {kind}");
        for s in shards {
            let _ = writeln!(
                out,
                "sluice_shard_{name}{suffix}{{shard=\"{}\"}} {}",
                s.shard, s.figures[i].1
            );
        }
    }
    render_streams(&mut out, shards);
    render_groups(&mut out, shards);
    for (name, pick) in [
        (
            "fsync_duration_seconds",
            (|l: &LogMetricsSnapshot| &l.fsync) as fn(&LogMetricsSnapshot) -> &Histogram,
        ),
        ("append_duration_seconds", |l| &l.append),
    ] {
        let mut total = Histogram::default();
        for s in shards {
            total.merge(pick(&s.log));
        }
        let _ = writeln!(out, "# TYPE sluice_{name} histogram");
        histogram(&mut out, &format!("sluice_{name}"), "", &total);
        let _ = writeln!(out, "# TYPE sluice_shard_{name} histogram");
        for s in shards {
            let label = format!("shard=\"{}\",", s.shard);
            histogram(
                &mut out,
                &format!("sluice_shard_{name}"),
                &label,
                pick(&s.log),
            );
        }
    }
    let ready = shards.iter().all(|s| s.ready);
    let _ = writeln!(
        out,
        "# TYPE sluice_ready gauge\nsluice_ready {}",
        u8::from(ready)
    );
    out
}

/// Each replicated partition's group as this node sees it: whether this node leads it, its term,
/// its commit, and the entries this node holds that are not agreed yet (its lag).
fn render_groups(out: &mut String, shards: &[ShardMetrics]) {
    let groups: Vec<&crate::api::GroupInfo> = shards
        .iter()
        .flat_map(|s| &s.partitions)
        .filter_map(|p| p.group.as_ref())
        .collect();
    if groups.is_empty() {
        return;
    }
    for (name, pick) in [
        (
            "leader",
            (|g: &crate::api::GroupInfo| u64::from(g.role == "leader"))
                as fn(&crate::api::GroupInfo) -> u64,
        ),
        ("term", |g| g.term),
        ("commit", |g| g.commit),
        ("lag", |g| g.last_index.saturating_sub(g.commit)),
    ] {
        let _ = writeln!(out, "# TYPE sluice_group_{name} gauge");
        for g in &groups {
            let _ = writeln!(
                out,
                "sluice_group_{name}{{stream=\"{}\",partition=\"{}\"}} {}",
                escape(&g.stream),
                g.partition,
                pick(g)
            );
        }
    }
}

fn render_streams(out: &mut String, shards: &[ShardMetrics]) {
    let parts: Vec<&PartitionMetrics> = shards.iter().flat_map(|s| &s.partitions).collect();
    let mut streams: Vec<&str> = parts.iter().map(|p| p.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    for (name, pick) in [
        (
            "messages",
            (|p: &PartitionMetrics| p.messages) as fn(&PartitionMetrics) -> u64,
        ),
        ("bytes", |p| p.bytes),
    ] {
        let _ = writeln!(out, "# TYPE sluice_stream_{name} gauge");
        for stream in &streams {
            let sum: u64 = parts
                .iter()
                .filter(|p| p.stream == *stream)
                .map(|p| pick(p))
                .sum();
            let _ = writeln!(
                out,
                "sluice_stream_{name}{{stream=\"{}\"}} {sum}",
                escape(stream)
            );
        }
        let _ = writeln!(out, "# TYPE sluice_partition_{name} gauge");
        for p in &parts {
            let _ = writeln!(
                out,
                "sluice_partition_{name}{{stream=\"{}\",partition=\"{}\"}} {}",
                escape(&p.stream),
                p.partition,
                pick(p)
            );
        }
    }
    // Consumers: summed over the partitions of their stream.
    let mut consumers: Vec<(&str, &str, [u64; 4])> = Vec::new();
    for p in &parts {
        for (name, info) in &p.consumers {
            let figures = [
                info.pending,
                info.ack_pending,
                info.redelivered,
                info.dead_lettered,
            ];
            match consumers
                .iter_mut()
                .find(|(s, c, _)| *s == p.stream && *c == name)
            {
                Some((_, _, sums)) => {
                    for (sum, v) in sums.iter_mut().zip(figures) {
                        *sum += v;
                    }
                }
                None => consumers.push((&p.stream, name, figures)),
            }
        }
    }
    consumers.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (i, (name, kind)) in [
        ("pending", "gauge"),
        ("ack_pending", "gauge"),
        ("redelivered_total", "counter"),
        ("dead_lettered_total", "counter"),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(out, "# TYPE sluice_consumer_{name} {kind}");
        for (stream, consumer, figures) in &consumers {
            let _ = writeln!(
                out,
                "sluice_consumer_{name}{{stream=\"{}\",consumer=\"{}\"}} {}",
                escape(stream),
                escape(consumer),
                figures[i]
            );
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, bound) in BUCKET_BOUNDS_US.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let labels = labels.trim_end_matches(',');
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(
        out,
        "{name}_sum{} {}",
        braces(labels),
        h.sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
