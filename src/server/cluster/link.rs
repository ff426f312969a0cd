//! The links' tasks: shard 0 serves the cluster address and dials every route; each link opens
//! with hellos, then pings out and sends what waits for its peer while reading frames in, until it
//! is late, bad or the shard stops.

use super::*;

/// Serves the cluster address and dials every route until the shard stops.
pub async fn run(core: Rc<Shard>, cluster: Rc<Cluster>, listener: TcpListener) {
    if cluster.secret.is_none() {
        tracing::warn!(node = %cluster.name,
            "cluster links are not authenticated: set cluster_secret (or SLUICE_CLUSTER_SECRET) \
             so that only nodes that know it can join");
    }
    glommio::spawn_local(meta::run(core.clone(), cluster.clone())).detach();
    for route in 0..cluster.routes.len() {
        glommio::spawn_local(dial(core.clone(), cluster.clone(), route)).detach();
    }
    crate::server::accept_until_stopped(&core, &listener, |stream| {
        accepted(core.clone(), cluster.clone(), stream)
    })
    .await;
}

/// A link a peer opened: its hello, this node's answer, then pings until it ends.
async fn accepted(core: Rc<Shard>, cluster: Rc<Cluster>, stream: TcpStream) {
    // Frames go out as they come, both ways, as on a dialed link: with Nagle's algorithm a small
    // frame waits for the peer's delayed ack (about 40 ms) whenever one is unacknowledged.
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().ok();
    let socket: Rc<RefCell<Box<dyn Socket>>> = Rc::new(RefCell::new(Box::new(stream)));
    let mut reader = LinkReader::new(Half(socket.clone()));
    let peer = match reader.next(HELLO_TIMEOUT).await {
        Ok(Received::Hello(peer)) => peer,
        Ok(_) => {
            tracing::warn!(?peer_addr, "cluster link opened without a hello; closed");
            return;
        }
        Err(e) => {
            tracing::warn!(?peer_addr, error = %e, "cluster link failed before its hello");
            return;
        }
    };
    let mut writer = Half(socket);
    if let Some(refusal) = cluster.refusal(&peer) {
        if refusal != Refusal::Itself {
            tracing::warn!(peer = %peer.node, ?peer_addr, ?refusal, "cluster link refused");
        }
        let _ = send(&mut writer, &ClusterFrame::Refuse(refusal)).await;
        return;
    }
    if let Err(e) = send(&mut writer, &ClusterFrame::Welcome(cluster.hello())).await {
        tracing::warn!(peer = %peer.node, error = %e, "cluster welcome not sent");
        return;
    }
    cluster.link_up(&peer);
    let why = run_link(&core, &cluster, &peer.node, reader, writer).await;
    cluster.link_down(&peer.node, &why);
}

/// Dials one route until the shard stops: each link it opens runs until it ends, then the route
/// is dialed again.
async fn dial(core: Rc<Shard>, cluster: Rc<Cluster>, route: usize) {
    let target = cluster.routes[route].clone();
    let mut backoff = DIAL_BACKOFF_MIN;
    let mut failures = 0u32;
    while !core.stopping.is_set() {
        match dial_once(&core, &cluster, route, &target).await {
            Err(LinkError::Itself) => {
                tracing::info!(route = %target, "cluster route leads to this node; not dialed");
                cluster.set_route(route, RouteState::Itself);
                return;
            }
            Ok(ended) => {
                // A link that was up: dial again at once.
                tracing::debug!(route = %target, reason = %ended, "cluster link ended");
                backoff = DIAL_BACKOFF_MIN;
                failures = 0;
                cluster.set_route(
                    route,
                    RouteState::Dialing {
                        failures,
                        last_error: Some(ended.to_string()),
                    },
                );
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 30 == 0 {
                    tracing::debug!(route = %target, error = %e, failures, "cluster dial failed");
                }
                cluster.set_route(
                    route,
                    RouteState::Dialing {
                        failures,
                        last_error: Some(e.to_string()),
                    },
                );
            }
        }
        or(glommio::timer::sleep(backoff), core.stopping.wait()).await;
        backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
    }
}

/// One dial: `Ok` with why the link ended once it was open, `Err` if it never opened.
async fn dial_once(
    core: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    route: usize,
    target: &str,
) -> Result<LinkError, LinkError> {
    // Resolved on a blocking thread: a route may be a DNS name (a headless service's).
    let name = target.to_string();
    let addr = glommio::executor()
        .spawn_blocking(move || crate::server::resolve(&name))
        .await
        .map_err(|e| LinkError::Io(std::io::Error::other(e.to_string())))?;
    let stream = TcpStream::connect_timeout(addr, HELLO_TIMEOUT)
        .await
        .map_err(|e| LinkError::Io(std::io::Error::other(e.to_string())))?;
    let _ = stream.set_nodelay(true);
    let socket: Rc<RefCell<Box<dyn Socket>>> = Rc::new(RefCell::new(Box::new(stream)));
    let mut writer = Half(socket.clone());
    send(&mut writer, &ClusterFrame::Hello(cluster.hello())).await?;
    let mut reader = LinkReader::new(Half(socket));
    let peer = match reader.next(HELLO_TIMEOUT).await? {
        Received::Welcome(peer) => peer,
        Received::Refuse(None) => return Err(LinkError::Itself),
        Received::Refuse(Some(reason)) => {
            tracing::warn!(route = %target, %reason, "cluster link refused by the peer");
            return Err(LinkError::Refused(reason));
        }
        Received::Hello(_) => return Err(LinkError::Unexpected("hello")),
        Received::Ping | Received::Raft(_) | Received::Group(_) | Received::Clients { .. } => {
            return Err(LinkError::Unexpected("ping"))
        }
    };
    if peer.instance == cluster.instance {
        return Err(LinkError::Itself);
    }
    if peer.node == cluster.name {
        tracing::warn!(route = %target, "the node at this route has this node's name");
        return Err(LinkError::Refused("the peer has this node's name".into()));
    }
    if !cluster.knows_secret(&peer) {
        tracing::warn!(route = %target, peer = %peer.node, "cluster peer does not prove the secret");
        return Err(LinkError::Refused(
            "the peer does not prove the cluster secret".into(),
        ));
    }
    cluster.link_up(&peer);
    cluster.set_route(route, RouteState::Linked(peer.node.clone()));
    let why = run_link(core, cluster, &peer.node, reader, writer).await;
    cluster.link_down(&peer.node, &why);
    Ok(why)
}

/// An open link: pings out every second and the consensus messages queued for the peer as they
/// come, frames in until one is late or bad, or the shard stops.
async fn run_link(
    core: &Rc<Shard>,
    cluster: &Rc<Cluster>,
    peer: &str,
    mut reader: LinkReader,
    mut writer: Half,
) -> LinkError {
    let writing = async {
        let mut next_ping = Instant::now() + PING_INTERVAL;
        let clients = &cluster.clients;
        let frame = ClusterFrame::Clients {
            native: &clients.native,
            nats: &clients.nats,
            kafka: &clients.kafka,
        };
        if let Err(e) = send(&mut writer, &frame).await {
            return e;
        }
        // Kept between writes: a fresh megabyte each time would be fresh pages each time.
        let mut out = Vec::new();
        loop {
            let frames = cluster.take_outbox(peer, LINK_WRITE_BYTES);
            if !frames.is_empty() {
                out.clear();
                for frame in &frames {
                    out.extend_from_slice(frame);
                }
                if let Err(e) = writer.write_all(&out).await {
                    return e.into();
                }
            }
            if Instant::now() >= next_ping {
                if let Err(e) = send(&mut writer, &ClusterFrame::Ping).await {
                    return e;
                }
                next_ping = Instant::now() + PING_INTERVAL;
            }
            let until_ping = next_ping.saturating_duration_since(Instant::now());
            or(
                cluster
                    .outbox_filled
                    .wait_until(|| !cluster.outbox_empty(peer)),
                glommio::timer::sleep(until_ping),
            )
            .await;
        }
    };
    let reading = async {
        loop {
            match reader.next(LINK_TIMEOUT).await {
                Ok(Received::Ping) => {}
                Ok(Received::Raft(bytes)) => cluster.received_raft(peer, &bytes),
                Ok(Received::Clients { nats, kafka }) => cluster.peer_clients(peer, &nats, &kafka),
                Ok(Received::Group(mut item)) => {
                    if let GroupIn::Forward { from, .. }
                    | GroupIn::Consumer { from, .. }
                    | GroupIn::Held { from, .. }
                    | GroupIn::Ask { from, .. } = &mut item
                    {
                        *from = peer.to_string();
                    }
                    cluster.received_group(item).await
                }
                Ok(Received::Hello(_)) => return LinkError::Unexpected("hello"),
                Ok(Received::Welcome(_)) => return LinkError::Unexpected("welcome"),
                Ok(Received::Refuse(_)) => return LinkError::Unexpected("refuse"),
                Err(e) => return e,
            }
        }
    };
    let stopped = async {
        core.stopping.wait().await;
        LinkError::Closed
    };
    let why = or(or(writing, reading), stopped).await;
    let _ = writer.close().await;
    why
}

pub(super) async fn send(writer: &mut Half, frame: &ClusterFrame<'_>) -> Result<(), LinkError> {
    let mut out = BytesMut::with_capacity(64);
    frame.encode(&mut out);
    writer.write_all(&out).await?;
    Ok(())
}
