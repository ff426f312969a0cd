//! Nodes of a cluster on loopback, for the tests that need several.

use std::time::{Duration, Instant};

use super::{Broker, DataDir, Ports};
use sluice::api::ClusterInfo;

/// Starts node `name` on `ports`, dialing `routes`.
pub fn node(dir: &DataDir, ports: &Ports, name: &str, routes: &[&Ports]) -> Broker {
    let routes: Vec<&str> = routes.iter().map(|p| p.cluster.as_str()).collect();
    node_dialing(dir, ports, name, &routes)
}

/// Starts node `name` on `ports`, dialing the addresses in `routes` (proxies, for instance).
pub fn node_dialing(dir: &DataDir, ports: &Ports, name: &str, routes: &[&str]) -> Broker {
    let routes = routes.join(",");
    let mut args = vec!["--name", name, "--cluster", &ports.cluster];
    if !routes.is_empty() {
        args.extend(["--routes", &routes]);
    }
    Broker::start_at(&dir.path, ports, &args)
}

/// The payloads of partition 0 of `stream` on `broker`, in offset order.
pub fn payloads(broker: &Broker, stream: &str) -> Vec<String> {
    let client = broker.client();
    let info = client.stream_info(stream).expect("stream info");
    let part = &info.partitions[0];
    let Some(last) = part.last_offset else {
        return Vec::new();
    };
    (part.first_offset..=last)
        .map(|offset| {
            let message = client
                .stream_get(stream, 0, offset)
                .expect("stored message");
            String::from_utf8(message.payload).expect("UTF-8 payload")
        })
        .collect()
}

pub fn info(broker: &Broker) -> ClusterInfo {
    broker.client().cluster_info().expect("cluster info")
}

pub fn signal(broker: &Broker, signal: i32) {
    // SAFETY: kill(2) on the broker's own process id.
    assert_eq!(unsafe { libc::kill(broker.pid() as i32, signal) }, 0);
}

/// Waits until every node in `nodes` names the same meta leader, one of them, which sees itself
/// as leader; returns its name and term.
pub fn wait_for_one_leader(nodes: &[&Broker]) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metas: Vec<_> = nodes.iter().map(|n| info(n)).collect();
        let leaders: Vec<Option<String>> = metas
            .iter()
            .map(|i| i.meta.as_ref().and_then(|m| m.leader.clone()))
            .collect();
        if let Some(Some(leader)) = leaders.first() {
            let agreed = leaders
                .iter()
                .all(|l| l.as_deref() == Some(leader.as_str()));
            let leading = metas
                .iter()
                .find(|i| &i.name == leader)
                .and_then(|i| i.meta.as_ref())
                .filter(|m| m.role == "leader");
            if let (true, Some(meta)) = (agreed, leading) {
                return (leader.clone(), meta.term);
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {metas:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
