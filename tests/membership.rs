//! Cluster membership on loopback: a fourth node is added, a replicated stream's copy moves from a
//! dead node to it (the new node catching up from the others), the dead node is removed, and the
//! new node then counts in the majority.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{info, node};
use common::replicated::{group, read_all, Cluster, NAMES};
use common::{Broker, DataDir, Ports};
use sluice::client::{Client, ClientError};

fn publish(client: &Client, subject: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| {
            let payload = format!("m-{i:04}");
            client.publish_durable(subject, &payload).expect("acked");
            payload
        })
        .collect()
}

/// Retries `call` while it is refused, until it succeeds or 30 s pass.
fn until_ok<T>(what: &str, mut call: impl FnMut() -> Result<T, ClientError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call() {
            Ok(value) => return value,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Waits until `broker` sees the stream's group with exactly `voters`.
fn wait_for_voters(broker: &Broker, stream: &str, voters: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = group(broker, stream).map(|g| {
            let mut v = g.voters;
            v.sort();
            v
        });
        if seen.as_deref().is_some_and(|v| v == voters) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group's voters are {seen:?}, not {voters:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fourth node, listing the cluster's three as its routes (not a member until added).
fn fourth_node(cluster: &Cluster) -> (DataDir, Ports, Broker) {
    let dir = DataDir::new();
    let ports = Ports::fixed();
    let routes = [
        &cluster.ports[0],
        &cluster.ports[1],
        &cluster.ports[2],
        &ports,
    ];
    let broker = node(&dir, &ports, "n4", &routes);
    (dir, ports, broker)
}

/// Waits until node `at` no longer holds a copy of `stream` on disk.
fn wait_for_copy_gone(cluster: &Cluster, at: usize, stream: &str) {
    let copy = cluster.dirs[at].path.join("streams").join(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    while copy.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still holds {}",
            NAMES[at],
            copy.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_copy_moves_from_a_dead_node_to_a_new_one_which_then_counts_in_the_majority() {
    let (mut cluster, stream, leader_at) = Cluster::with_stream("moving", 0, false);
    // The leader stays up while a follower dies and is replaced; then the leader dies too.
    let (dead_at, kept_at) = ((leader_at + 1) % 3, (leader_at + 2) % 3);
    let (dead, kept, leader) = (NAMES[dead_at], NAMES[kept_at], NAMES[leader_at]);
    let subject = format!("{stream}.x");
    let client = cluster.node(kept_at).client();
    let mut acked = publish(&client, &subject, 0..50);

    // A fourth node, listing the three as its routes, joins the members.
    let (_dir4, _ports4, n4) = fourth_node(&cluster);
    let members = until_ok("adding n4", || client.cluster_add("n4"));
    assert_eq!(members, ["n1", "n2", "n3", "n4"]);
    // A publish through n4 before it holds a copy is refused, with the reason.
    until_ok("n4 knowing the stream", || n4.client().stream_info(&stream));
    let refused = n4
        .client()
        .publish_durable(&subject, "early")
        .expect_err("n4 holds no copy yet");
    assert!(refused.to_string().contains("no copy"), "{refused}");
    let refused = client.cluster_add("n4").expect_err("added twice");
    assert!(refused.to_string().contains("member already"), "{refused}");

    // A follower dies for good; its copy moves to n4, which catches up from the other two.
    cluster.nodes[dead_at] = None;
    let refused = client
        .cluster_remove(dead)
        .expect_err("it still holds a copy");
    assert!(refused.to_string().contains("move them first"), "{refused}");
    until_ok("moving the copy", || {
        client.stream_move(&stream, dead, "n4")
    });
    acked.extend(publish(&client, &subject, 50..100));
    until_ok("n4 knowing the stream", || n4.client().stream_info(&stream));
    assert_eq!(read_all(&n4, &stream, 100), acked, "n4 caught up, in order");
    let mut voters = vec![leader, kept, "n4"];
    voters.sort();
    wait_for_voters(cluster.node(kept_at), &stream, &voters);
    wait_for_voters(&n4, &stream, &voters);

    let members = until_ok("removing the dead node", || client.cluster_remove(dead));
    assert_eq!(members, voters);
    let meta = info(cluster.node(kept_at)).meta.expect("meta group");
    let mut meta_voters = meta.voters.clone();
    meta_voters.sort();
    assert_eq!(meta_voters, voters);

    // With the leader gone too, the kept node and n4 are a majority of the group and of the
    // cluster: n4 votes.
    cluster.nodes[leader_at] = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.publish_durable(&subject, "after") {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{kept} and n4 acknowledge nothing: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    acked.extend(publish(&client, &subject, 100..110));
    for broker in [cluster.node(kept_at), &n4] {
        let held = read_all(broker, &stream, acked.len() as u64 + 1);
        let held: Vec<String> = held.into_iter().filter(|p| p != "after").collect();
        assert_eq!(held, acked);
    }
    assert!(n4.logged("the group's membership changed"));
}

#[test]
fn the_leaders_copy_moves_to_a_new_node_and_the_old_leader_drops_its_copy() {
    let (cluster, stream, leader_at) = Cluster::with_stream("handed", 0, false);
    let subject = format!("{stream}.x");
    let via = cluster.node((leader_at + 1) % 3).client();
    let mut acked = publish(&via, &subject, 0..30);
    let (_dir4, _ports4, n4) = fourth_node(&cluster);
    until_ok("adding n4", || via.cluster_add("n4"));
    let leader = NAMES[leader_at];
    until_ok("moving the leader's copy", || {
        via.stream_move(&stream, leader, "n4")
    });
    let mut rest: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| *n != leader)
        .chain(["n4"])
        .collect();
    rest.sort();
    wait_for_voters(cluster.node((leader_at + 1) % 3), &stream, &rest);
    acked.extend(publish(&via, &subject, 30..60));
    until_ok("n4 knowing the stream", || n4.client().stream_info(&stream));
    assert_eq!(read_all(&n4, &stream, 60), acked);
    // The old leader handed its leadership over, then dropped its copy once it was out.
    let old = cluster.node(leader_at);
    wait_for_copy_gone(&cluster, leader_at, &stream);
    assert!(old.logged("handing its leadership over"));
    assert!(old.logged("this node left the partition's group"));
}

#[test]
fn a_node_that_was_down_while_its_copy_moved_drops_it_when_it_comes_back() {
    let (mut cluster, stream, leader_at) = Cluster::with_stream("away", 0, false);
    let away_at = (leader_at + 1) % 3;
    let away = NAMES[away_at];
    let subject = format!("{stream}.x");
    let client = cluster.node(leader_at).client();
    let mut acked = publish(&client, &subject, 0..20);
    let (_dir4, _ports4, n4) = fourth_node(&cluster);
    until_ok("adding n4", || client.cluster_add("n4"));
    cluster.nodes[away_at] = None;
    until_ok("moving the copy", || {
        client.stream_move(&stream, away, "n4")
    });
    acked.extend(publish(&client, &subject, 20..40));
    until_ok("n4 knowing the stream", || n4.client().stream_info(&stream));
    assert_eq!(read_all(&n4, &stream, 40), acked);

    // It comes back still a member of the cluster, learns of the move, and drops its copy.
    cluster.nodes[away_at] = Some(cluster.start_node(away_at));
    wait_for_copy_gone(&cluster, away_at, &stream);
    acked.extend(publish(&client, &subject, 40..50));
    assert_eq!(read_all(&n4, &stream, 50), acked);
}
