//! The API's cluster side: membership changes, moving a stream's copy, where a new stream's
//! copies live, removals that every copy must make alike, the meta group's decided changes, and
//! the cluster's info.

use super::*;

/// Adds a node to the cluster's members, or removes one, through the meta group. A node is added
/// once it is linked (started with this cluster's nodes as its routes); a node is removed once it
/// holds no copy of any stream (`stream.move` first).
pub(super) async fn member_change(
    shard: &Rc<StreamShard>,
    verb: &str,
    body: &[u8],
) -> Result<Answer, (ErrorCode, String)> {
    let request: api::ClusterMember = parse(body)?;
    let Some(cluster) = shard.cluster.get() else {
        return Err((
            ErrorCode::BadRequest,
            "this node is not in a cluster".into(),
        ));
    };
    let node = request.node;
    if !sluice_protocol::cluster::valid_node_name(&node) {
        return Err((
            ErrorCode::BadRequest,
            format!("{node:?} is not a valid node name"),
        ));
    }
    let members = cluster.members().unwrap_or_default();
    if verb == api::CLUSTER_ADD {
        if members.contains(&node) {
            return Err((ErrorCode::BadRequest, format!("{node} is a member already")));
        }
        if !cluster.is_up(&node) {
            return Err((
                ErrorCode::NotFound,
                format!("{node} is not linked to {}: start it with this cluster's nodes as its routes first", cluster.name()),
            ));
        }
    } else {
        if !members.contains(&node) {
            return Err((ErrorCode::NotFound, format!("{node} is not a member")));
        }
        let holding: Vec<String> = shard
            .streams
            .borrow()
            .configs
            .values()
            .filter(|c| c.placement.contains(&node))
            .map(|c| c.name.clone())
            .collect();
        if !holding.is_empty() {
            return Err((
                ErrorCode::BadRequest,
                format!(
                    "{node} holds copies of {}: move them first (sluice stream move)",
                    holding.join(", ")
                ),
            ));
        }
        if members.len() <= 1 {
            return Err((
                ErrorCode::BadRequest,
                "the last member cannot be removed".into(),
            ));
        }
        // The groups on this node that still count it (a move not agreed yet).
        let moving: Vec<String> = replica_groups(shard)
            .await
            .into_iter()
            .filter(|g| g.voters.contains(&node))
            .map(|g| format!("{}/{}", g.stream, g.partition))
            .collect();
        if !moving.is_empty() {
            return Err((
                ErrorCode::BadRequest,
                format!(
                    "the groups of {} still count {node} among their members: wait until their \
                     moves are agreed (sluice cluster info shows each group's voters)",
                    moving.join(", ")
                ),
            ));
        }
    }
    Ok(cluster.propose(verb, node.as_bytes()).await)
}

/// A purge or a message deletion of a replicated stream, made the same on every node: it goes
/// through the meta group, and a purge of everything becomes a purge below the stream's end as
/// this node sees it, so that every node removes the same messages. `None` for anything else,
/// which this node does alone (a purge keeping the newest N of each subject, whose result
/// depends on what each node holds, stays local).
pub(super) async fn replicated_removal(
    shard: &Rc<StreamShard>,
    verb: &str,
    body: &[u8],
) -> Option<Vec<u8>> {
    let stream_of = |name: &str| shard.streams.borrow().config(name);
    match verb {
        api::STREAM_DELETE_MESSAGE => {
            let at: MessageLocation = serde_json::from_slice(body).ok()?;
            stream_of(&at.name)?.is_replicated().then(|| body.to_vec())
        }
        api::STREAM_PURGE => {
            let mut request: api::StreamPurge = serde_json::from_slice(body).ok()?;
            let config = stream_of(&request.name)?;
            if !config.is_replicated() {
                return None;
            }
            // What the purge removes is decided here, from the messages this node sees (those
            // agreed), so that every copy removes the same ones.
            let stream = info(shard, &request.name).await.ok()?;
            match (&request.filter, request.keep) {
                (None, Some(keep)) => {
                    request.below = (0..config.partitions)
                        .map(|p| {
                            let part = stream.partitions.iter().find(|i| i.partition == p);
                            let next =
                                part.map_or(0, |i| i.last_offset.map_or(i.first_offset, |l| l + 1));
                            next.saturating_sub(keep)
                        })
                        .collect();
                    request.keep = None;
                }
                _ if request.seq.is_none() => {
                    let end = stream.partitions.iter().filter_map(|p| {
                        let last = p.last_offset?;
                        seq_of(p.partition, last, config.partitions)
                    });
                    request.seq = Some(end.max().unwrap_or(0) + 1);
                }
                _ => {}
            }
            serde_json::to_vec(&request).ok()
        }
        _ => None,
    }
}

/// Applies the registry changes the meta group decided, in its order, until the shard stops;
/// answers those asked for on this node.
pub async fn apply_decided(shard: Rc<StreamShard>, cluster: Rc<crate::server::cluster::Cluster>) {
    use futures_lite::future::or;
    loop {
        let next = or(async { Some(cluster.next_decided().await) }, async {
            shard.core.stopping.wait().await;
            None
        })
        .await;
        let Some((index, op)) = next else { return };
        let answer = Box::pin(handle_here(&shard, &op.verb, op.body.as_bytes())).await;
        if answer.0 != 0 {
            tracing::debug!(index, verb = %op.verb, origin = %op.origin,
                reason = %String::from_utf8_lossy(&answer.1), "a decided registry change was refused");
        }
        cluster.answer(&op, answer);
        or(cluster.applied(index), shard.core.stopping.wait()).await;
    }
}

pub(super) async fn cluster_info(shard: &Rc<StreamShard>) -> ApiResult {
    match shard.cluster.get() {
        Some(cluster) => {
            let mut info = cluster.info();
            info.groups = replica_groups(shard).await;
            json(&info)
        }
        None => json(&api::ClusterInfo {
            clustered: false,
            name: shard.core.config.server_id.clone(),
            cluster_addr: String::new(),
            peers: Vec::new(),
            routes: Vec::new(),
            meta: None,
            groups: Vec::new(),
        }),
    }
}

/// The groups of every replicated partition this node holds, from every shard.
async fn replica_groups(shard: &Rc<StreamShard>) -> Vec<api::GroupInfo> {
    let mut groups = Vec::new();
    for id in 0..shard.core.shards as u32 {
        let metrics = if id == shard.core.id.0 {
            Some(crate::server::streams::metrics::snapshot(shard).await)
        } else {
            ask_shard_metrics(shard, ShardId(id)).await
        };
        let parts = metrics.into_iter().flat_map(|m| m.partitions);
        groups.extend(parts.filter_map(|p| p.group));
    }
    groups.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
    groups
}

/// A stream to add with its placement decided, if it is new (an existing one keeps its own).
pub(super) fn placed(
    shard: &StreamShard,
    body: &[u8],
) -> Result<StreamConfig, (ErrorCode, String)> {
    let mut config: StreamConfig = parse(body)?;
    if shard.streams.borrow().config(&config.name).is_none() {
        crate::server::streams::replica::place(shard, &mut config)?;
    }
    Ok(config)
}

/// Moves a replicated stream's copy from one node to another: its placement changes here (in the
/// meta group's order on every node), then each partition's group changes its members (see
/// `replica`), the new node catching up from the others.
pub(super) async fn stream_move(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let request: api::StreamMove = parse(body)?;
    let mut config = config_of(shard, &request.name)?;
    let bad = |why: String| {
        Err((
            ErrorCode::BadRequest,
            format!("stream {}: {why}", request.name),
        ))
    };
    if !config.is_replicated() {
        return bad("it is not replicated".into());
    }
    if !config.placement.contains(&request.from) {
        return bad(format!("{} holds no copy of it", request.from));
    }
    if config.placement.contains(&request.to) {
        return bad(format!("{} holds a copy already", request.to));
    }
    let members = shard
        .cluster
        .get()
        .and_then(|c| c.members())
        .unwrap_or_default();
    if !members.contains(&request.to) {
        return bad(format!(
            "{} is not a member of the cluster (sluice cluster add)",
            request.to
        ));
    }
    for node in config.placement.iter_mut() {
        if *node == request.from {
            node.clone_from(&request.to);
        }
    }
    config.placement.sort();
    let name = config.name.clone();
    reconfigure(shard, config).await?;
    tracing::info!(stream = %name, from = %request.from, to = %request.to, "stream copy moving");
    json(&info(shard, &name).await?)
}
