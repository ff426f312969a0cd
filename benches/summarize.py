#!/usr/bin/env python3
"""Turns the runs of benches/compare into medians, ratios, plots and BENCHMARKS.md.

  summarize.py median RUNS GROUP SYSTEM        median msgs/s of one group and system
  summarize.py plots RUNS OUT SLUICE           latency plots (via `sluice bench --plot-only`)
  summarize.py report OUT BENCHMARKS.md SERVER_CPUS LOAD_CPUS ROUNDS
  summarize.py replicated OUT BENCHMARKS.md    the section of benches/replicated, put in place
"""
import glob
import json
import os
import platform
import statistics
import subprocess
import sys


def runs(directory):
    """{group: {system: [run, ...]}} from files GROUP.SYSTEM.ROUND.json."""
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        group, system, _round = name.rsplit(".", 2)
        try:
            with open(path) as f:
                run = json.load(f)
        except (OSError, ValueError):
            continue
        run["_path"] = path
        out.setdefault(group, {}).setdefault(system, []).append(run)
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def lat(run, key):
    latency = run.get("latency_us")
    return latency.get(key) if latency else None


def median_run(rs, key=lambda r: r["msgs_per_s"]):
    """The run whose figure is the median, for plots."""
    ordered = sorted(rs, key=key)
    return ordered[len(ordered) // 2]


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def table(groups, group, systems, baseline, title, latency=True, rss=False):
    rows = groups.get(group, {})
    if not rows:
        return ""
    base = median(r["msgs_per_s"] for r in rows.get(baseline, []))
    lines = [f"#### {title}", ""]
    head = "| system | rounds | msgs/s (median) | MB/s | ratio to " + baseline + " |"
    sep = "|---|---:|---:|---:|---:|"
    if latency:
        head += " p50 us | p99 us | p99.9 us | p99.99 us |"
        sep += "---:|---:|---:|---:|"
    if rss:
        head += " server RSS MiB |"
        sep += "---:|"
    head += " server CPU ns/msg |"
    sep += "---:|"
    lines += [head, sep]
    for system in systems:
        rs = rows.get(system)
        if not rs:
            continue
        rate = median(r["msgs_per_s"] for r in rs)
        ratio = f"{rate / base:.2f}" if base and rate else "-"
        line = (
            f"| {system} | {len(rs)} | {fmt(rate)} | {fmt(median(r['mb_per_s'] for r in rs), 1)}"
            f" | {ratio} |"
        )
        if latency:
            for key in ("p50", "p99", "p999", "p9999"):
                line += f" {fmt(median(lat(r, key) for r in rs), 1)} |"
        if rss:
            line += f" {fmt(median((r.get('rss_bytes') or 0) / 1048576 for r in rs), 1)} |"
        line += f" {fmt(median(r.get('server_cpu_ns_per_msg') for r in rs))} |"
        lines.append(line)
    failed = [s for s in systems if s in rows and any(r.get("lost") or r.get("errors") for r in rows[s])]
    if failed:
        lines.append("")
        lines.append(f"Runs with lost messages or errors: {', '.join(failed)}.")
    return "\n".join(lines) + "\n\n"


def go_table(groups, group, title):
    """Core pub/sub driven by benches/go/natsbench (Debian's nats.go) against both servers."""
    rows = groups.get(group, {})
    if not rows:
        return ""
    base = median(r["msgs_per_s"] for r in rows.get("nats-server", []))
    base_cpu = median(r.get("server_cpu_ns_per_msg") for r in rows.get("nats-server", []))
    lines = [
        f"#### {title}",
        "",
        "| system | rounds | msgs/s (median) | MB/s | ratio to nats-server | p50 us | p99 us "
        "| p99.9 us | server CPU ns/msg | CPU ratio to nats-server |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in ("nats-server", "sluice"):
        rs = rows.get(system)
        if not rs:
            continue
        rate = median(r["msgs_per_s"] for r in rs)
        cpu = median(r.get("server_cpu_ns_per_msg") for r in rs)
        ratio = f"{rate / base:.2f}" if base else "-"
        cpu_ratio = f"{cpu / base_cpu:.2f}" if base_cpu and cpu else "-"
        cells = " | ".join(fmt(median(r.get(k) for r in rs), 1) for k in ("p50_us", "p99_us", "p999_us"))
        lines.append(
            f"| {system} | {len(rs)} | {fmt(rate)} | {fmt(median(r.get('mb_per_s') for r in rs), 1)} "
            f"| {ratio} | {cells} | {fmt(cpu)} | {cpu_ratio} |"
        )
    return "\n".join(lines) + "\n\n"


def plots(directory, out, sluice):
    groups = runs(directory)
    made = []
    for group, name in (
        ("latency", "latency-fixed-rate.svg"),
        ("core-1to1-16", "core-1to1-16.svg"),
        ("durable-16-w256", "durable-16-w256.svg"),
    ):
        systems = groups.get(group, {})
        files = [median_run(rs)["_path"] for rs in systems.values() if rs and rs[0].get("percentiles")]
        if not files:
            continue
        target = os.path.join(out, name)
        args = [sluice, "bench", "--plot-only", "--plot", target]
        for f in files:
            args += ["--overlay", f]
        if subprocess.run(args, stdout=subprocess.DEVNULL).returncode == 0:
            made.append(target)
    return made


def command(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def sluice_version():
    """The commit measured, marked if its sources had changes (generated results do not count)."""
    commit = command(["git", "rev-parse", "--short", "HEAD"])
    changed = command(["git", "status", "--porcelain", "--", "src", "protocol", "storage",
                       "Cargo.toml", "Cargo.lock", "benches/kafka", "benches/go"])
    return commit + (" with uncommitted source changes" if changed else "")


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1048576:.0f} GiB"
    except (OSError, ValueError):
        pass
    return [
        f"- CPU: {model}, {os.cpu_count()} CPUs; memory {mem}",
        f"- kernel: {platform.release()}",
        f"- {command(['nats-server', '--version'])}",
        f"- go: {command(['go', 'version'])}",
        f"- sluice: {sluice_version()} (release build)",
    ]


def jsapi_table(directory, group, title):
    """The JetStream API rows: benches/go/jsbench (Debian's nats.go) against each server."""
    rows = {}
    for path in glob.glob(os.path.join(directory, f"{group}.*.json")):
        system = os.path.basename(path).split(".")[1]
        try:
            with open(path) as f:
                rows.setdefault(system, []).append(json.load(f))
        except (OSError, ValueError):
            pass
    if not rows:
        return ""
    base = median(r["msgs_per_s"] for r in rows.get("jetstream", []))
    lines = [
        f"#### {title}",
        "",
        "| system | rounds | msgs/s (median) | ratio to jetstream | p50 us | p99 us | p99.9 us "
        "| server CPU ns/msg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in ("jetstream", "jetstream-sync-always", "sluice"):
        rs = rows.get(system)
        if not rs:
            continue
        rate = median(r["msgs_per_s"] for r in rs)
        ratio = f"{rate / base:.2f}" if base else "-"
        cells = " | ".join(fmt(median(r.get(k, 0) for r in rs)) for k in ("p50_us", "p99_us", "p999_us"))
        cpu = fmt(median(r.get("server_cpu_ns_per_msg", 0) for r in rs))
        lines.append(f"| {system} | {len(rs)} | {fmt(rate)} | {ratio} | {cells} | {cpu} |")
    return "\n".join(lines) + "\n\n"


REPLICATED = "## Replicated publish (three nodes)"
# benches/replicated's systems: (name, nodes, when a publish is acked, the R1 row it is compared to).
REPLICATED_SYSTEMS = (
    ("sluice-r1", 1, "after fdatasync (group commit)", None),
    ("sluice-r3", 3, "after fdatasync on 2 of 3", "sluice-r1"),
    ("sluice-r3-via-follower", 3, "the same, sent through a follower", "sluice-r1"),
    ("nats-r1", 1, "after the write (fsync every 2 min)", None),
    ("nats-r3", 3, "after the write on 2 of 3 (fsync every 2 min)", "nats-r1"),
    ("nats-r3-via-follower", 3, "the same, sent through a follower", "nats-r1"),
    ("nats-r1-sync-always", 1, "after an fsync per write", None),
    ("nats-r3-sync-always", 3, "after the raft log's fsync on 2 of 3", "nats-r1-sync-always"),
    ("nats-r3-sync-always-via-follower", 3, "the same, sent through a follower",
     "nats-r1-sync-always"),
)


def replicated_limit(rs):
    """What bounded a row, from how busy the servers' and the client's CPUs were: by the system's
    own processes, and by every process (the machine may be shared)."""
    server = median(r.get("server_busy") for r in rs) or 0
    client = median(r.get("client_busy") for r in rs) or 0
    server_all = median(r.get("server_cpus_busy_all") for r in rs) or server
    client_all = median(r.get("load_cpus_busy_all") for r in rs) or client
    if server >= 0.85 or server_all >= 0.9:
        other = max(server_all - server, 0)
        return f"servers' CPU ({server:.0%} theirs" + (f", {other:.0%} other load)" if other >= 0.05 else ")")
    if client >= 0.85 or client_all >= 0.9:
        other = max(client_all - client, 0)
        return f"client CPU ({client:.0%} its own" + (f", {other:.0%} other load)" if other >= 0.05 else ")")
    return f"neither CPU (servers {server:.0%}, client {client:.0%} busy): disk or round trips"


def replicated_section(out):
    """The section of benches/replicated from its runs in OUT/runs, or "" without any."""
    groups = runs(os.path.join(out, "runs"))
    if not any(g.startswith("repl-pub-") for g in groups):
        return ""
    meta = {}
    try:
        with open(os.path.join(out, "replicated.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        pass
    cpus = meta.get("server_cpus", "?")
    load = meta.get("load_cpus", "?")
    lines = [
        REPLICATED,
        "",
        f"Generated by `benches/replicated` ({meta.get('date', '?')}; documented at its top), "
        f"Sluice {meta.get('sluice', '?')} (release build) and nats-server "
        f"{meta.get('nats_server', '?')}. "
        "The JetStream API's asynchronous publish, `benches/go/jsbench` (Debian's nats.go) with "
        f"256 publishes in flight and {meta.get('msgs', 0):,} messages per run, into a stream of one "
        "replica on one node (R1) and into a stream of three replicas created through the API "
        "(`num_replicas: 3`) on three nodes on loopback (R3), each node with its own data "
        "directory on the same disk. Sluice runs one shard per node at its defaults (`--fsync "
        "always`); nats-server at its default sync and with "
        "`sync_interval: always` in its jetstream block: one node then fsyncs each message block "
        "write, and a stream of three replicas fsyncs each write of its raft log, a batch of "
        "entries (its own store then syncs when the log is snapshotted). "
        f"Every server process, the three nodes of a cluster included, is pinned to CPUs {cpus} and "
        f"the client to CPUs {load}: a cluster has the CPUs a single node has, so R3 / R1 is what "
        "the copies cost for one budget. The client connects to the node leading the stream "
        "(Sluice: the partition group's leader in `sluice cluster info`; nats-server: the stream "
        "leader in `/jsz`), so no publish is forwarded, except in the rows \"via-follower\", "
        "where it connects to another node, which forwards (Sluice) or routes (nats-server) each "
        "publish to the leader; each system waits for its meta leader and "
        "then its stream leaders before any run. Servers' CPU is user + system time summed over "
        "every process of the system (from /proc/PID/stat around the run); busy is that time over "
        "the run's wall time and the CPUs given, for the servers and for the client; a row is limited "
        "by a side's CPU when that side kept its CPUs 85% busy, or they were 90% busy with every "
        "process on them counted (/proc/stat: the machine is shared), and \"other load\" is the "
        "share that neither the servers nor the client used.",
        "",
        "```",
        meta.get("command", "benches/replicated"),
        "```",
        "",
    ]
    rates = {}
    for size in ("16", "1024"):
        rows = groups.get(f"repl-pub-{size}", {})
        if not rows:
            continue
        lines += [
            f"#### Asynchronous publish, {size} B, 256 in flight",
            "",
            "| system | nodes | acked | rounds | msgs/s (median) | R3 / R1 | p50 us | p99 us "
            "| p99.9 us | servers' CPU ns/msg | CPU R3 / R1 | limited by |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for system, nodes, acked, r1 in REPLICATED_SYSTEMS:
            rs = rows.get(system)
            if not rs:
                continue
            failed = [r["failed"] for r in rs if r.get("failed")]
            good = [r for r in rs if not r.get("failed")]
            if not good:
                lines.append(f"| {system} | {nodes} | {acked} | {len(rs)} | failed: "
                             f"{', '.join(failed)} | - | - | - | - | - | - | - |")
                continue
            rate = median(r["msgs_per_s"] for r in good)
            cpu = median(r.get("server_cpu_ns_per_msg") for r in good)
            rates[(size, system)] = (rate, cpu)
            base = rates.get((size, r1)) if r1 else None
            ratio = f"{rate / base[0]:.2f}" if base and base[0] else "-"
            cpu_ratio = f"{cpu / base[1]:.2f}" if base and base[1] and cpu else "-"
            cells = " | ".join(fmt(median(r.get(k) for r in good))
                               for k in ("p50_us", "p99_us", "p999_us"))
            note = f" ({len(failed)} failed: {', '.join(failed)})" if failed else ""
            lines.append(f"| {system} | {nodes} | {acked} | {len(good)}{note} | {fmt(rate)} "
                         f"| {ratio} | {cells} | {fmt(cpu)} | {cpu_ratio} | {replicated_limit(good)} |")
        lines.append("")
    ratios = []
    for size in ("16", "1024"):
        s = rates.get((size, "sluice-r3"))
        for nats, label in (("nats-r3", "default sync"), ("nats-r3-sync-always", "sync always")):
            n = rates.get((size, nats))
            if s and n and n[0]:
                cpu = f"{s[1] / n[1]:.2f}" if s[1] and n[1] else "-"
                ratios.append(f"| {size} B | {label} | {s[0] / n[0]:.2f} | {cpu} |")
    if ratios:
        lines += [
            "Sluice R3 against nats-server R3, each at the sync setting shown for nats-server "
            "(Sluice always syncs before it acks):",
            "",
            "| size | nats-server | msgs/s ratio | servers' CPU per message ratio |",
            "|---|---|---:|---:|",
            *ratios,
            "",
        ]
    return "\n".join(lines) + "\n"


def put_section(target, heading, text, after="## The JetStream API"):
    """Replaces the section under `heading` in `target` with `text`; without one, puts `text`
    before the section that follows `after`, or at the end."""
    old = open(target).read() if os.path.exists(target) else ""
    start = old.find(heading + "\n")
    if start >= 0:
        end = old.find("\n## ", start + len(heading))
        end = end + 1 if end >= 0 else len(old)
    else:
        at = old.find(after)
        start = old.find("\n## ", at + len(after)) + 1 if at >= 0 else 0
        if at < 0 or start == 0:
            start = len(old)
        end = start
    with open(target, "w") as f:
        f.write(old[:start] + text.rstrip("\n") + "\n\n" + old[end:].lstrip("\n"))


def kept_section(path, heading):
    """The section under `heading` in the current file, which another script writes
    (`benches/footprint`), so that a new report keeps it."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        old = f.read()
    start = old.find(heading + "\n")
    if start < 0:
        return ""
    end = old.find("\n## ", start + len(heading))
    return old[start:end + 1 if end >= 0 else len(old)].rstrip("\n") + "\n\n"


def report(out, target, server_cpus, load_cpus, rounds, command=None):
    groups = runs(os.path.join(out, "runs"))
    core = ("nats-server", "sluice-nats", "sluice-native")
    durable = (
        "jetstream",
        "jetstream-sync-always",
        "sluice-always-nats",
        "sluice-never-nats",
        "sluice-always-native",
        "sluice-never-native",
    )
    rate = open(os.path.join(out, "latency-rate")).read().strip() if os.path.exists(
        os.path.join(out, "latency-rate")) else "?"
    text = [
        "# Benchmarks",
        "",
        "Generated by `benches/compare` (see benches/README.md); do not edit by hand. Every server ran",
        "at its defaults (Sluice with no setting a peer does not get). Every figure is",
        f"the median of {rounds} rounds; in each round the systems ran one after the other (A B C A B C),",
        f"each server pinned to CPUs {server_cpus} and the load to CPUs {load_cpus}. Ratios compare",
        "medians of the same run. The headline rows use clients no one here wrote: Debian's nats.go",
        "(`benches/go/natsbench` for core, `benches/go/jsbench` for the JetStream API) against both",
        "nats-server and Sluice's NATS port. `sluice bench` drives the rest (NATS protocol for",
        "nats-server, JetStream and Sluice's NATS port; native protocol for Sluice's own port).",
        "Every row gives the server's CPU time per message (user + system, from /proc/PID/stat",
        "around the run, 10 ms ticks) beside msgs/s: on this machine the client is often the limit.",
        "Latency is one-way (publish to delivery) for pub/sub and publish-to-ack for durable publish.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        "## Commands",
        "",
        "```",
        command or ("benches/compare" + (f" --rounds {rounds}" if rounds != "3" else "")),
        "```",
        "",
        "## Core publish/subscribe",
        "",
    ]
    body = "### With an independent client: Debian's nats.go (`benches/go/natsbench`)\n\n"
    body += (
        "One publisher and N subscribers, each on its own connection, flat out; latency is one-way "
        "(the send time travels in the payload) and under saturation mostly measures queueing. "
        "With one load CPU the Go client is often the limit of msgs/s: the server's CPU time per "
        "message, read from /proc around each run, is what the server itself costs. At 1 KiB "
        "1 -> 1, for one, natsbench used 1.0-1.2 s of CPU (`/usr/bin/time`, user + system) "
        "for a million messages in 1.0-1.3 s against either server: its one CPU was full, and "
        "both servers delivered what it could send and take.\n\n"
    )
    for size in ("16", "1024"):
        body += go_table(groups, f"go-1to1-{size}", f"1 -> 1, {size} B, nats.go")
        body += go_table(groups, f"go-1to4-{size}", f"1 -> 4 fan-out, {size} B, nats.go")
    body += "### With `sluice bench` (NATS protocol, and Sluice's native protocol)\n\n"
    for size in ("16", "1024"):
        body += table(groups, f"core-1to1-{size}", core, "nats-server", f"1 -> 1, {size} B")
        body += table(groups, f"core-1to4-{size}", core, "nats-server", f"1 -> 4 fan-out, {size} B")
    body += "## Durable publish (every ack awaited)\n\n"
    body += (
        "JetStream: file store, default settings (it does not fsync each message). "
        "`jetstream-sync-always` needs nats-server 2.10 or later (`sync_interval: always`); "
        "it is missing below when the installed nats-server cannot run it. Sluice `always` acks "
        "after fdatasync (group commit); `never` after the write.\n\n"
    )
    for size in ("16", "1024"):
        for w in ("1", "256"):
            body += table(groups, f"durable-{size}-w{w}", durable, "jetstream",
                          f"{size} B, {w} in flight")
    jsapi = ""
    for size in ("16", "1024"):
        jsapi += jsapi_table(os.path.join(out, "runs"), f"jsapi-pub-{size}",
                             f"Asynchronous publish, {size} B, 256 in flight")
        jsapi += jsapi_table(os.path.join(out, "runs"), f"jsapi-consume-{size}",
                             f"Durable pull consumer, {size} B, fetches of 256, every message acked")
    if jsapi:
        body += "## The JetStream API, with an independent client\n\n"
        body += (
            "`benches/go/jsbench` (Debian's nats.go) against each server's JetStream API: publish "
            "latency is publish to ack, consume latency is per fetch. Sluice runs at its defaults "
            "(fsync always, group commit); the server's CPU time per message is read from /proc "
            "around each run.\n\n"
            "What limits the publish rows: with 256 in flight, the client and the server take "
            "turns. The acks of one window come back together, nats.go then sends the next 256, "
            "and the server checks, writes and syncs them as one group. One window is the "
            "client's CPU for 256 publishes and acks (about 0.47 ms, measured with "
            "`/usr/bin/time` on jsbench), plus the server's CPU for them, plus one `fdatasync` "
            "(about 0.11 ms on this disk, from `/metrics`). So the ratio to JetStream's default "
            "(which does not sync) depends on the server's CPU per publish: at 16 B 1.5x would "
            "need about 0.55 us per publish, synced, where Sluice spends 1.35 us and nats-server "
            "3.0 us. The consume rows are a fetch, then acks, the same way; reads from disk are "
            "read ahead, so the device works while the client acks.\n\n"
        )
        body += jsapi
    # benches/replicated's section: from this run's runs when it ran (`--replicated`), else the
    # one the file has.
    body += replicated_section(out) or kept_section(target, REPLICATED)
    if any(g.startswith("scale-") for g in groups):
        body += "## Across cores\n\n"
        body += (
            "Two nats.go loads at once, each one publisher to one subscriber on its own subject, "
            "with the server and the loads sharing every CPU of the machine: Sluice on one shard "
            "and on one shard per CPU (connections land on shards as the kernel spreads them, so "
            "a publisher and its subscriber are often on different shards and each message "
            "crosses the mesh), nats-server on every CPU. See \"Scaling past this machine\" "
            "below for what the per-message costs mean on more cores.\n\n"
        )
        for size in ("16", "1024"):
            rows = groups.get(f"scale-{size}", {})
            if not rows:
                continue
            body += f"#### {size} B, 2 publishers and 2 subscribers\n\n"
            body += "| system | rounds | msgs/s (sum, median) | MB/s | server CPU ns/msg |\n"
            body += "|---|---:|---:|---:|---:|\n"
            for system in ("sluice-1-shard", "sluice-all-shards", "nats-server"):
                rs = rows.get(system)
                if not rs:
                    continue
                body += (
                    f"| {system} | {len(rs)} | {fmt(median(r['msgs_per_s'] for r in rs))} "
                    f"| {fmt(median(r.get('mb_per_s') for r in rs), 1)} "
                    f"| {fmt(median(r.get('server_cpu_ns_per_msg') for r in rs))} |\n"
                )
            body += "\n"
        scaling = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SCALING.md")
        if os.path.exists(scaling):
            with open(scaling) as f:
                body += f.read() + "\n"
    body += f"## One-way latency at a fixed rate ({rate} msgs/s, half of nats-server's 1 -> 1 maximum)\n\n"
    body += "Open loop: latency counts from each message's intended send time.\n\n"
    body += table(groups, "latency", core, "nats-server", "1 -> 1, 16 B, open loop")
    body += "## Subject scale: one stream, one partition, Sluice `--fsync never`, 256 in flight\n\n"
    scale = {}
    for n in ("1", "1000", "100000", "1000000"):
        g = groups.get(f"subjects-{n}", {}).get("sluice-native")
        if g:
            scale[n] = g
    if scale:
        base = median(r["msgs_per_s"] for r in scale.get("1", []))
        body += "| distinct subjects | msgs/s (median) | share of 1 subject | server RSS MiB |\n"
        body += "|---:|---:|---:|---:|\n"
        for n, rs in scale.items():
            rate_n = median(r["msgs_per_s"] for r in rs)
            share = f"{rate_n / base:.0%}" if base else "-"
            rss = median((r.get("rss_bytes") or 0) / 1048576 for r in rs)
            body += f"| {int(n):,} | {fmt(rate_n)} | {share} | {fmt(rss, 1)} |\n"
        body += "\n"
    if any(g.startswith("kafka-") for g in groups):
        body += "## Kafka protocol: tansu and Sluice's Kafka port\n\n"
        body += (
            "tansu 0.6 (Kafka API; `tansu-rdkafka` keeps its storage on disk in SQLite, "
            "`tansu-memory-rdkafka` in memory only, which is all the prebuilt binary has: nothing "
            "survives a crash there) and Sluice's Kafka port at its defaults (acks=all answered after "
            "fdatasync, acks=1 once ordered), driven by the same client, `sluice-kafka-bench` (librdkafka; "
            "linger.ms=1, batch.size=64 KiB, 256 messages in flight, one partition), beside Sluice's "
            "native port driven by `sluice bench` with the same counts, sizes and window. Latency is "
            "send to acknowledgement; consume reads the produced topic from the start.\n\n"
        )
        tansu = next((t for t in ("tansu-rdkafka", "tansu-memory-rdkafka")
                      if any(t in groups.get(g, {}) for g in groups)), "tansu-rdkafka")
        kafka = (tansu, "sluice-rdkafka", "sluice-native")
        for size in ("16", "1024"):
            for acks in ("all", "1"):
                body += table(groups, f"kafka-produce-{size}-acks{acks}", kafka, tansu,
                              f"produce, {size} B, acks={acks}")
            body += table(groups, f"kafka-consume-{size}", kafka, tansu,
                          f"consume {size} B from the start", latency=False)
    body += kept_section(target, "## Footprint")
    # Measured by hand with benches/many_streams.rs, not by benches/compare: copied in as it stands.
    many_streams = os.path.join(os.path.dirname(os.path.abspath(__file__)), "many_streams.md")
    if os.path.exists(many_streams):
        with open(many_streams) as f:
            body += f.read().rstrip("\n") + "\n\n"
    svgs = sorted(glob.glob(os.path.join(out, "*.svg")))
    if svgs:
        os.makedirs("benches/plots", exist_ok=True)
        body += "## Plots\n\n"
        for svg in svgs:
            name = os.path.basename(svg)
            with open(svg, "rb") as src, open(os.path.join("benches/plots", name), "wb") as dst:
                dst.write(src.read())
            body += f"![{name}](benches/plots/{name})\n\n"
    with open(target, "w") as f:
        f.write("\n".join(text) + body)


def main():
    verb = sys.argv[1]
    if verb == "median":
        rs = runs(sys.argv[2]).get(sys.argv[3], {}).get(sys.argv[4], [])
        print(median(r["msgs_per_s"] for r in rs) or 0)
    elif verb == "plots":
        plots(sys.argv[2], sys.argv[3], sys.argv[4])
    elif verb == "report":
        report(*sys.argv[2:8])
    elif verb == "replicated":
        text = replicated_section(sys.argv[2])
        if not text:
            sys.exit(f"no runs of benches/replicated in {sys.argv[2]}/runs")
        put_section(sys.argv[3], REPLICATED, text)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
