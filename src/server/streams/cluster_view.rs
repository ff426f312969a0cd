//! What a node knows of the others in its cluster, shared with every shard: where their NATS
//! and Kafka clients connect (from shard 0, which keeps the links), and which node leads each
//! replicated partition (from the shard that owns it).

use std::rc::Rc;
use std::sync::Arc;

use super::groups;
use super::{StreamItem, StreamShard};

/// On shard 0: tells every shard where NATS and Kafka clients reach the cluster's nodes, each
/// time a peer says where its clients connect or comes up or goes down, until the shard stops.
pub async fn share_client_addrs(
    shard: Rc<StreamShard>,
    cluster: Rc<crate::server::cluster::Cluster>,
) {
    use futures_lite::future::or;
    let me = shard.core.config.cluster.as_ref().map(|c| c.name.clone());
    let mut up: Vec<String> = Vec::new();
    loop {
        let urls = cluster.nats_urls();
        let kafka = cluster.kafka_addrs();
        // A node that came up gets every Kafka group's offsets this node keeps: it may have
        // missed commits while it was away, and may coordinate some of those groups now.
        let came_up: Vec<String> = kafka
            .iter()
            .map(|(node, _)| node)
            .filter(|node| Some(*node) != me.as_ref() && !up.contains(node))
            .cloned()
            .collect();
        up = kafka.iter().map(|(node, _)| node.clone()).collect();
        if !came_up.is_empty() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let frames = groups::saved_frames(&shard).await;
                for node in &came_up {
                    for frame in &frames {
                        shard.cluster_send(node, frame.clone());
                    }
                }
            })
            .detach();
        }
        shard.broadcast(|| StreamItem::ClientAddrs {
            nats: urls.clone(),
            kafka: kafka.clone(),
        });
        shard.core.set_connect_urls(urls);
        *shard.kafka_nodes.borrow_mut() = kafka;
        let changed = or(
            async {
                cluster.clients_changed().await;
                true
            },
            async {
                shard.core.stopping.wait().await;
                false
            },
        )
        .await;
        if !changed {
            return;
        }
    }
}

/// From the shard that owns a replicated partition: records its group's leader (none: not known)
/// here and tells the other shards, for the Kafka port's Metadata.
pub fn share_group_leader(
    shard: &StreamShard,
    stream: &Arc<str>,
    partition: u32,
    leader: Option<(String, u64)>,
) {
    shard.broadcast(|| StreamItem::GroupLeader {
        stream: stream.clone(),
        partition,
        leader: leader.clone(),
    });
    set_group_leader(shard, stream.clone(), partition, leader);
}

pub(super) fn set_group_leader(
    shard: &StreamShard,
    stream: Arc<str>,
    partition: u32,
    leader: Option<(String, u64)>,
) {
    let mut leaders = shard.group_leaders.borrow_mut();
    match leader {
        Some(leader) => {
            leaders.entry(stream).or_default().insert(partition, leader);
        }
        None => {
            if let Some(partitions) = leaders.get_mut(&stream) {
                partitions.remove(&partition);
                if partitions.is_empty() {
                    leaders.remove(&stream);
                }
            }
        }
    }
}
