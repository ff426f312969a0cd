//! A client retries, through another node, a publish its stream's leader died before answering:
//! the same message id must not store the message twice, even when the first publish reached
//! the other nodes' logs without being agreed before the leader died. nats-py, unchanged; the
//! same script runs against a nats-server cluster.
//!
//! A test binary of its own: its nodes are started with a slow disk (`SLUICE_FAILPOINTS`), set in
//! this process's environment, which every broker it starts inherits.

mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};

use common::replicated::{wait_for_group_leader, Cluster, ReferenceCluster, NAMES};
use common::{python_client, ReferenceNats};

/// The retry client, started against `url`; `None` if nats-py is not installed.
fn start_client(
    url: &str,
    stream: &str,
) -> Option<(Child, ChildStdin, impl Iterator<Item = String>)> {
    let mut child = python_client("retry_after_failover.py")?
        .args([url, stream])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let stdin = child.stdin.take().expect("stdin");
    let lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok);
    Some((child, stdin, lines))
}

/// Drives the client: `leader` names the node to kill from the client's "created" line, `url_of`
/// gives a node's client URL, `kill` kills one. Returns the client's last lines.
fn drive(
    url: &str,
    stream: &str,
    leader: impl FnOnce(&str) -> usize,
    url_of: impl Fn(usize) -> String,
    kill: impl FnOnce(usize),
) -> Option<Vec<String>> {
    let (mut child, mut stdin, mut lines) = start_client(url, stream)?;
    let created = lines.next().expect("the client's first line");
    let named = created.strip_prefix("created ").expect("created");
    let leading = leader(named);
    let other = (leading + 1) % 3;
    writeln!(stdin, "{}", url_of(other)).expect("tell the client");
    assert_eq!(lines.next().as_deref(), Some("sent"));
    kill(leading);
    writeln!(stdin).expect("tell the client");
    let rest: Vec<String> = lines.collect();
    assert!(child.wait().expect("the client").success(), "{rest:?}");
    Some(rest)
}

#[test]
fn a_publish_retried_after_its_leader_died_is_stored_once() {
    // Every fsync takes 1.5 s: the publish reaches the followers' logs, and the leader dies
    // before any of them has it durable, so nothing is agreed when the next leader takes over.
    std::env::set_var("SLUICE_FAILPOINTS", "fsync=delay:1500");
    let cluster = RefCell::new(Cluster::start());
    let stream = "RETRY";
    let ports: Vec<String> = cluster
        .borrow()
        .ports
        .iter()
        .map(|p| p.nats.clone())
        .collect();
    let rest = drive(
        &format!("nats://{}", ports[0]),
        stream,
        |_| {
            let cluster = cluster.borrow();
            cluster.at(&wait_for_group_leader(&cluster, stream))
        },
        |i| format!("nats://{}", ports[i]),
        |i| {
            let node = cluster.borrow_mut().nodes[i].take();
            node.expect("the leader").kill();
        },
    );
    let Some(rest) = rest else {
        return;
    };
    assert_eq!(rest, ["messages 1", "ok"]);

    // The same client against three nats-server processes clustered with JetStream.
    let Some(servers) = ReferenceCluster::new().start_all() else {
        return;
    };
    let servers: Vec<Option<ReferenceNats>> = servers.into_iter().map(Some).collect();
    let addrs: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().expect("a server").addr.clone())
        .collect();
    let servers = RefCell::new(servers);
    let rest = drive(
        &format!("nats://{}", addrs[0]),
        stream,
        |name| {
            NAMES
                .iter()
                .position(|n| *n == name)
                .expect("a leader named")
        },
        |i| format!("nats://{}", addrs[i]),
        |i| drop(servers.borrow_mut()[i].take()),
    );
    assert_eq!(rest.expect("the client ran"), ["messages 1", "ok"]);
}
