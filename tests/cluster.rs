//! Nodes of a cluster on loopback: they link with each other through their routes, see a node
//! that stops answering or dies go down and come back, refuse links they cannot take, and a node
//! without a cluster address stays a single node.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::cluster::{info, node, signal, wait_for_one_leader};
use common::{Broker, DataDir, Ports, PATIENCE};
use sluice::api::ClusterInfo;
use sluice_protocol::cluster::{ClusterFrame, Hello, Refusal, CLUSTER_PROTOCOL_VERSION};

/// Waits until `broker` sees exactly the peers in `up` up and those in `down` down.
fn wait_for_peers(broker: &Broker, up: &[&str], down: &[&str]) -> ClusterInfo {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = info(broker);
        let state = |name: &str| info.peers.iter().find(|p| p.name == name).map(|p| p.up);
        if up.iter().all(|n| state(n) == Some(true)) && down.iter().all(|n| state(n) == Some(false))
        {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{} never saw up {up:?} and down {down:?}: {info:?}",
            info.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_link_and_see_a_node_stop_die_and_come_back() {
    let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
    let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
    // n1 also lists itself, as a configuration shared by every node does.
    let n1 = node(
        &dirs[0],
        &ports[0],
        "n1",
        &[&ports[1], &ports[2], &ports[0]],
    );
    // n2 from a settings file, as a deployment would start it.
    let file = dirs[1].path.join("n2.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"n2\"\ncluster = \"{}\"\nroutes = [\"{}\", \"{}\"]\n\
             cluster_advertise = \"localhost:{}\"\n",
            ports[1].cluster,
            ports[0].cluster,
            ports[2].cluster,
            ports[1].cluster.rsplit(':').next().unwrap()
        ),
    )
    .unwrap();
    let n2 = Broker::start_at(
        &dirs[1].path,
        &ports[1],
        &["--config", file.to_str().unwrap()],
    );
    let mut n3 = node(&dirs[2], &ports[2], "n3", &[&ports[0], &ports[1]]);

    let seen = wait_for_peers(&n1, &["n2", "n3"], &[]);
    assert!(seen.clustered && seen.name == "n1", "{seen:?}");
    assert_eq!(seen.cluster_addr, ports[0].cluster);
    // n2 is known at the address it advertises.
    let n2_port = ports[1].cluster.rsplit(':').next().unwrap();
    let n2_seen = seen.peers.iter().find(|p| p.name == "n2").unwrap();
    assert_eq!(n2_seen.addr, format!("localhost:{n2_port}"));
    let own = seen.routes.iter().find(|r| r.route == ports[0].cluster);
    assert_eq!(own.map(|r| r.state.as_str()), Some("this node"), "{seen:?}");
    wait_for_peers(&n2, &["n1", "n3"], &[]);
    wait_for_peers(&n3, &["n1", "n2"], &[]);
    let metrics = common::http_get(&n1.http_addr, "/metrics");
    assert!(metrics.contains("sluice_cluster_peers_up 2"), "{metrics}");
    // The command line shows the same.
    let out = common::sluice_cli()
        .args(["cluster", "info", "-s", &n1.addr])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.starts_with(&format!("node n1 at {}", ports[0].cluster)),
        "{printed}"
    );
    for peer in ["n2", "n3"] {
        assert!(
            printed
                .lines()
                .any(|l| l.starts_with(&format!("peer {peer} ")) && l.contains(" up for ")),
            "{printed}"
        );
    }
    assert!(
        printed.contains(&format!("route {}  this node", ports[0].cluster)),
        "{printed}"
    );
    assert!(
        metrics.contains("sluice_cluster_peer_up{peer=\"n3\"} 1"),
        "{metrics}"
    );

    // A node that stops answering (its process frozen) is down once its links go silent.
    signal(&n3, libc::SIGSTOP);
    wait_for_peers(&n1, &["n2"], &["n3"]);
    wait_for_peers(&n2, &["n1"], &["n3"]);
    signal(&n3, libc::SIGCONT);
    wait_for_peers(&n1, &["n2", "n3"], &[]);
    wait_for_peers(&n3, &["n1", "n2"], &[]);

    // A node that dies is down; started again on its address, it is up again.
    n3.kill();
    wait_for_peers(&n1, &["n2"], &["n3"]);
    let metrics = common::http_get(&n1.http_addr, "/metrics");
    assert!(metrics.contains("sluice_cluster_peers_up 1"), "{metrics}");
    let n3 = node(&dirs[2], &ports[2], "n3", &[&ports[0], &ports[1]]);
    wait_for_peers(&n1, &["n2", "n3"], &[]);
    wait_for_peers(&n2, &["n1", "n3"], &[]);
    wait_for_peers(&n3, &["n1", "n2"], &[]);
}

#[test]
fn the_meta_group_elects_one_leader_fails_over_and_needs_a_majority() {
    let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
    let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
    let all = [&ports[0], &ports[1], &ports[2]];
    let names = ["n1", "n2", "n3"];
    // One routes list for every node, its own address included.
    let start = |i: usize| node(&dirs[i], &ports[i], names[i], &all);
    let mut nodes: Vec<Option<Broker>> = (0..3).map(|i| Some(start(i))).collect();
    let live = |nodes: &[Option<Broker>]| -> Vec<usize> {
        (0..3).filter(|&i| nodes[i].is_some()).collect()
    };
    let (first, term) = wait_for_one_leader(&nodes.iter().flatten().collect::<Vec<_>>());
    // The leader's first entry is committed, and every node learns it with the next heartbeat.
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes.iter().flatten() {
        loop {
            let meta = info(n).meta.expect("meta group started");
            assert_eq!(meta.voters, ["n1", "n2", "n3"]);
            if meta.commit >= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "nothing committed: {meta:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for dir in &dirs {
        let saved = std::fs::read_to_string(dir.path.join("cluster/meta.json")).unwrap();
        assert!(
            saved.contains("\"members\":[\"n1\",\"n2\",\"n3\"]"),
            "{saved}"
        );
    }
    let leader_at = names.iter().position(|n| *n == first).unwrap();
    let leader = nodes[leader_at].as_ref().unwrap();
    let metrics = common::http_get(&leader.http_addr, "/metrics");
    assert!(
        metrics.contains("sluice_cluster_meta_leader 1"),
        "{metrics}"
    );
    assert!(common::http_get(&leader.http_addr, "/readyz").contains("200 OK"));

    // The leader dies: the other two elect one of themselves, in a later term.
    nodes[leader_at].as_mut().unwrap().kill();
    nodes[leader_at] = None;
    let (second, later) = wait_for_one_leader(&nodes.iter().flatten().collect::<Vec<_>>());
    assert_ne!(second, first);
    assert!(later > term, "term {later} after {term}");
    assert_eq!(live(&nodes).len(), 2);

    // It comes back and follows the leader all agree on.
    nodes[leader_at] = Some(start(leader_at));
    let (third, _) = wait_for_one_leader(&nodes.iter().flatten().collect::<Vec<_>>());

    // A node cut off from the other two (both frozen) has no leader and is not ready; once they
    // are back, all three agree again.
    let alone = names.iter().position(|n| *n != third).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != alone).collect();
    for &i in &others {
        signal(nodes[i].as_ref().unwrap(), libc::SIGSTOP);
    }
    let lonely = nodes[alone].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while info(lonely).meta.and_then(|m| m.leader).is_some() {
        assert!(
            Instant::now() < deadline,
            "a node alone still names a leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = common::http_get(&lonely.http_addr, "/readyz");
    assert!(
        ready.contains("503") && ready.contains("no meta leader"),
        "{ready}"
    );
    for &i in &others {
        signal(nodes[i].as_ref().unwrap(), libc::SIGCONT);
    }
    wait_for_one_leader(&nodes.iter().flatten().collect::<Vec<_>>());
}

fn stream_names(broker: &Broker) -> Vec<String> {
    let mut names: Vec<String> = broker
        .client()
        .stream_list()
        .expect("stream list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// Waits until every node lists exactly `want`.
fn wait_for_streams(nodes: &[&Broker], want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lists: Vec<Vec<String>> = nodes.iter().map(|n| stream_names(n)).collect();
        if lists.iter().all(|l| l == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "want {want:?} everywhere: {lists:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stream(name: &str) -> sluice::api::StreamConfig {
    sluice::api::StreamConfig {
        partitions: 2,
        ..sluice::api::StreamConfig::new(name, vec![format!("{name}.>")])
    }
}

#[test]
fn streams_added_or_removed_on_any_node_change_every_node_in_one_order() {
    let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
    let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
    let all = [&ports[0], &ports[1], &ports[2]];
    let names = ["n1", "n2", "n3"];
    let start = |i: usize| node(&dirs[i], &ports[i], names[i], &all);
    let mut nodes: Vec<Broker> = (0..3).map(start).collect();
    let (leader, _) = wait_for_one_leader(&nodes.iter().collect::<Vec<_>>());
    let leader_at = names.iter().position(|n| *n == leader).unwrap();
    let follower = (leader_at + 1) % 3;
    let other = (leader_at + 2) % 3;

    // Added through a follower: its answer comes once its own registry has the stream (each
    // shard's list follows shard 0's within moments).
    nodes[follower]
        .client()
        .stream_add(&stream("orders"))
        .unwrap();
    wait_for_streams(&[&nodes[follower]], &["orders"]);
    wait_for_streams(&nodes.iter().collect::<Vec<_>>(), &["orders"]);
    // The same stream again is accepted as it is; the same name with another configuration,
    // through another node, is refused by the registry there.
    nodes[other].client().stream_add(&stream("orders")).unwrap();
    let mut changed = stream("orders");
    changed.subjects = vec!["elsewhere.>".into()];
    let again = nodes[other].client().stream_add(&changed);
    assert!(again.is_err(), "{again:?}");
    nodes[leader_at]
        .client()
        .stream_add(&stream("events"))
        .unwrap();
    nodes[other].client().stream_remove("orders").unwrap();
    wait_for_streams(&nodes.iter().collect::<Vec<_>>(), &["events"]);

    // A node restarted keeps what was decided and applies nothing twice.
    nodes[other].kill();
    nodes[other] = start(other);
    wait_for_one_leader(&nodes.iter().collect::<Vec<_>>());
    wait_for_streams(&nodes.iter().collect::<Vec<_>>(), &["events"]);

    // A node without a majority cannot change the registry: it says so, within the timeout.
    let alone = follower;
    for i in (0..3).filter(|&i| i != alone) {
        signal(&nodes[i], libc::SIGSTOP);
    }
    // (A client that waits longer than the 4 s the node gives the group, so that the node's
    // answer is what is checked.)
    let patient = sluice::client::Client::connect_with(
        &nodes[alone].addr,
        sluice::client::ClientOptions {
            timeout: Duration::from_secs(15),
            ..Default::default()
        },
    )
    .unwrap();
    let refused = patient.stream_add(&stream("lonely"));
    match refused {
        Err(sluice::client::ClientError::Api { code, message }) => {
            assert_eq!(code, sluice_protocol::ErrorCode::Unavailable, "{message}")
        }
        other => panic!("a minority changed the registry: {other:?}"),
    }
    for i in (0..3).filter(|&i| i != alone) {
        signal(&nodes[i], libc::SIGCONT);
    }
    wait_for_one_leader(&nodes.iter().collect::<Vec<_>>());
    // A change that timed out may still be decided once the leader is back (its request was on
    // the way): either way, every node ends with the same registry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lists: Vec<Vec<String>> = nodes.iter().map(stream_names).collect();
        let agreed = lists.iter().all(|l| l == &lists[0]);
        let known = lists[0] == ["events"] || lists[0] == ["events", "lonely"];
        if agreed && known {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes disagree: {lists:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A topic a Kafka client creates on first use, through one node, is a stream on every node,
    // replicated to all of them.
    if common::kcat().is_some() {
        let (ok, _) = common::kcat_with(
            &nodes[other].kafka_addr,
            &[],
            &["-P", "-t", "kafka.made"],
            "one\n",
        );
        assert!(ok, "kcat produces through a node of the cluster");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nodes
            .iter()
            .all(|n| stream_names(n).contains(&"kafka~made".to_string()))
        {
            assert!(
                Instant::now() < deadline,
                "the Kafka topic is not everywhere"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Kafka's default replication factor in a cluster: every node holds the topic.
        let made = nodes[0]
            .client()
            .stream_list()
            .expect("streams")
            .into_iter()
            .find(|s| s.name == "kafka~made")
            .expect("the topic's stream");
        assert_eq!(made.replicas, 3);
    }
}

/// Sends `hello` to a node's cluster address; returns its answer, or None if it closed.
fn say_hello(addr: &str, hello: Hello<'_>) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    ClusterFrame::Hello(hello).encode(&mut out);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(&out).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(Some(_)) = ClusterFrame::decode(&answer) {
            return Some(answer);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn links_a_node_cannot_take_are_refused_with_the_reason() {
    let dir = DataDir::new();
    let ports = Ports::fixed();
    let n1 = node(&dir, &ports, "n1", &[]);
    let hello = |node: &'static str, shards: u16, version: u16| Hello {
        version,
        node,
        cluster_addr: "127.0.0.1:1",
        shards,
        proof: b"",
        instance: 7,
    };
    let refusal = |answer: Option<Vec<u8>>| -> String {
        let answer = answer.expect("an answer");
        match ClusterFrame::decode(&answer).unwrap().unwrap().0 {
            ClusterFrame::Refuse(Refusal::Itself) => "itself".into(),
            ClusterFrame::Refuse(Refusal::Other(reason)) => reason.into(),
            other => panic!("not a refusal: {other:?}"),
        }
    };
    let v = CLUSTER_PROTOCOL_VERSION;
    // Its own name from another node (another instance) is a misconfiguration, not itself.
    assert!(refusal(say_hello(&ports.cluster, hello("n1", 2, v))).contains("this node's name"));
    assert!(refusal(say_hello(&ports.cluster, hello("n9", 7, v))).contains("shard count"));
    assert!(refusal(say_hello(&ports.cluster, hello("n9", 2, v + 1))).contains("version"));
    assert!(refusal(say_hello(&ports.cluster, hello("a/b", 2, v))).contains("node name"));
    // One it can take is welcomed with the node's own hello.
    let answer = say_hello(&ports.cluster, hello("n9", 2, v)).expect("an answer");
    match ClusterFrame::decode(&answer).unwrap().unwrap().0 {
        ClusterFrame::Welcome(h) => assert_eq!((h.node, h.shards), ("n1", 2)),
        other => panic!("not a welcome: {other:?}"),
    }
    // Garbage closes that link only.
    let mut stream = TcpStream::connect(&ports.cluster).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "garbage got an answer: {rest:?}");
    assert!(n1.wait_for_log("cluster link failed before its hello"));
    assert!(info(&n1).clustered);
}

#[test]
fn with_a_cluster_secret_only_nodes_that_know_it_link() {
    let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
    let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
    let with_secret = |i: usize, name: &str, secret: &str, routes: &[&Ports]| {
        let file = dirs[i].path.join("node.toml");
        let routes: Vec<String> = routes
            .iter()
            .map(|p| format!("\"{}\"", p.cluster))
            .collect();
        std::fs::write(
            &file,
            format!(
                "name = \"{name}\"\ncluster = \"{}\"\nroutes = [{}]\ncluster_secret = \"{secret}\"\n",
                ports[i].cluster,
                routes.join(", ")
            ),
        )
        .unwrap();
        Broker::start_at(
            &dirs[i].path,
            &ports[i],
            &["--config", file.to_str().unwrap()],
        )
    };
    let n1 = with_secret(0, "n1", "s3cret", &[&ports[1], &ports[2]]);
    let n2 = with_secret(1, "n2", "s3cret", &[&ports[0], &ports[2]]);
    // n3 has another secret: it links with nobody, and nobody with it.
    let n3 = with_secret(2, "n3", "guess", &[&ports[0], &ports[1]]);
    wait_for_peers(&n1, &["n2"], &[]);
    wait_for_peers(&n2, &["n1"], &[]);
    assert!(n1.wait_for_log("the hello does not prove the cluster secret"));
    assert!(n3.wait_for_log("does not prove the cluster secret"));
    std::thread::sleep(Duration::from_millis(500));
    for node in [&n1, &n2] {
        let seen = info(node);
        assert!(
            seen.peers.iter().all(|p| p.name != "n3" || !p.up),
            "{seen:?}"
        );
    }
    assert!(info(&n3).peers.iter().all(|p| !p.up));
    // A hello without a proof is refused with the reason.
    let hello = Hello {
        version: CLUSTER_PROTOCOL_VERSION,
        node: "n9",
        cluster_addr: "127.0.0.1:1",
        shards: 2,
        proof: b"",
        instance: 7,
    };
    let answer = say_hello(&ports[0].cluster, hello).expect("an answer");
    match ClusterFrame::decode(&answer).unwrap().unwrap().0 {
        ClusterFrame::Refuse(Refusal::Other(reason)) => {
            assert!(reason.contains("cluster secret"), "{reason}")
        }
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn a_node_without_a_cluster_address_is_a_single_node() {
    let broker = Broker::start(&[]);
    let info = info(&broker);
    assert!(!info.clustered && info.peers.is_empty(), "{info:?}");
    // Routes need a cluster address to dial from.
    let out = common::sluice_cli()
        .args(["serve", "--routes", "127.0.0.1:6222", "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes need a cluster address"), "{stderr}");
}

#[test]
fn the_example_cluster_settings_are_valid_and_list_every_node() {
    for i in 1..=3 {
        let file = format!("{}/deploy/cluster/n{i}.toml", env!("CARGO_MANIFEST_DIR"));
        let out = common::sluice_cli()
            .args(["serve", "--config", &file, "--print-config"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(printed["name"].as_str(), Some(format!("n{i}").as_str()));
        assert_eq!(printed["routes"].as_array().map(Vec::len), Some(3));
    }
}
