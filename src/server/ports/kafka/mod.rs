//! The Kafka port: Kafka clients (librdkafka, kafka-python, kafkajs, Java…) produce, fetch and
//! consume in groups, unchanged.
//!
//! A topic is a stream of the same name (dots, which stream names cannot hold, become `~`), its
//! partitions the stream's, its offsets the log's. A produced record batch is checked once and
//! stored whole as one log record that takes one offset per Kafka record; a fetch sends stored
//! batches back with only their base offset rewritten. Every shard serves the port; a partition is
//! always written and read by the shard that owns it, whichever shard the client reached.
//!
//! Each request is handled in a task of its own as soon as it is read, so a fetch that waits for
//! data does not hold up the requests behind it, and answers go back in request order (Kafka
//! clients match them by order). A produce queues its batches before anything else runs, so the
//! batches of one connection are stored in the order they were sent.

mod configs;
mod data;
mod groups;
mod sasl;
mod topics;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::TcpStream;
use sluice_protocol::kafka::codec::messages::{self as msg, ApiKey};
use sluice_protocol::kafka::codec::protocol::{Encodable, HeaderVersion};
use sluice_protocol::kafka::{
    decode_served, encode_response, request_size, versions, RequestError, RequestHead,
};
use sluice_storage::wake::Latch;

use super::conn::{secure, Half, Protocol, Socket};
use crate::server::session::SessionShard;

/// Requests of one connection read and not yet answered, past which reading pauses (librdkafka
/// keeps up to 1M in flight, Java 5 per connection by default).
const IN_FLIGHT_MAX: usize = 256;

/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The answer to one request: the frame to write (none for a produce with acks=0), or a reason
/// to close the connection.
type Answer = Pin<Box<dyn Future<Output = Result<Option<Bytes>, RequestError>>>>;

/// A request being handled, whose answer the writer waits for in turn.
type Started = glommio::task::JoinHandle<Result<Option<Bytes>, RequestError>>;

/// One Kafka connection.
pub(super) struct KafkaConn {
    pub shard: Rc<SessionShard>,
    pub id: u64,
    /// The client's address, as group members are described.
    pub peer: String,
    /// The user it authenticated as (SASL/PLAIN), whose permissions apply.
    pub user: RefCell<Option<Arc<crate::server::auth::User>>>,
    /// Whether a SaslHandshake chose PLAIN.
    pub sasl_started: Cell<bool>,
    /// A v0 SaslHandshake succeeded: the next frame is a bare token, not a request.
    pub sasl_bare_token: Cell<bool>,
    /// Set when the writer stops (the socket failed, or an answer could not be encoded): the
    /// reader stops too.
    ended: Latch,
}

/// Serves one Kafka connection until the client leaves, sends something unreadable, or the
/// server stops.
pub async fn serve(shard: Rc<SessionShard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let Some(id) = shard.core.admit() else {
        tracing::warn!(
            shard = shard.core.id.0,
            ?peer,
            "kafka connection refused: at the limit"
        );
        return;
    };
    shard.core.handshakes.set(shard.core.handshakes.get() + 1);
    // TLS as on the native port: the client starts the handshake at once.
    let secured = secure(&shard, stream, Protocol::Native, id).await;
    shard.core.handshakes.set(shard.core.handshakes.get() - 1);
    let Some((socket, _, _)) = secured else {
        return;
    };
    let _counted = shard.core.hold_unregistered();
    tracing::debug!(
        shard = shard.core.id.0,
        conn = id,
        ?peer,
        "kafka connection accepted"
    );
    let socket: Rc<RefCell<Box<dyn Socket>>> = Rc::new(RefCell::new(socket));
    let conn = Rc::new(KafkaConn {
        shard,
        id,
        peer: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        user: RefCell::new(None),
        sasl_started: Cell::new(false),
        sasl_bare_token: Cell::new(false),
        ended: Latch::default(),
    });
    let (answers, mut queued) = futures_channel::mpsc::channel::<Started>(IN_FLIGHT_MAX);
    let writer = {
        let mut half = Half(socket.clone());
        let conn = conn.clone();
        glommio::spawn_local(async move {
            write_answers(&conn, &mut half, &mut queued).await;
            conn.ended.set();
        })
    };
    let reason = read_requests(&conn, Half(socket.clone()), answers).await;
    if let Some(reason) = reason {
        tracing::warn!(shard = conn.shard.core.id.0, conn = id, ?peer, %reason,
            "kafka connection closed");
    }
    // The writer sends what was read before, then sees the queue closed.
    writer.await;
    if let Some(user) = conn.user.borrow_mut().take() {
        user.release();
    }
    let _ = futures_lite::future::poll_once(async {
        let mut half = Half(socket);
        half.close().await
    })
    .await;
    tracing::debug!(conn = id, "kafka connection ended");
}

/// Writes each answer, in request order, as it is ready.
async fn write_answers(
    conn: &KafkaConn,
    half: &mut Half,
    queued: &mut futures_channel::mpsc::Receiver<Started>,
) {
    loop {
        let next = futures_lite::future::or(async { queued.next().await }, async {
            conn.ended.wait().await;
            None
        })
        .await;
        let Some(task) = next else {
            return;
        };
        match task.await {
            Some(Ok(Some(frame))) => {
                if let Err(e) = half.write_all(&frame).await {
                    tracing::debug!(conn = conn.id, error = %e, "kafka write failed");
                    return;
                }
            }
            Some(Ok(None)) => {}
            Some(Err(e)) => {
                tracing::warn!(conn = conn.id, error = %e, "kafka request refused; closing");
                return;
            }
            None => return,
        }
    }
}

/// Reads requests and starts each; returns why it stopped, if for a fault of the client.
async fn read_requests(
    conn: &Rc<KafkaConn>,
    mut half: Half,
    mut answers: futures_channel::mpsc::Sender<Started>,
) -> Option<String> {
    use futures_lite::future::or;
    let stopping = &conn.shard.core.stopping;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        while let Some(size) = request_size(&buf) {
            let size = match size {
                Ok(size) => size,
                Err(e) => return Some(e.to_string()),
            };
            if buf.len() < 4 + size {
                buf.reserve(4 + size - buf.len());
                break;
            }
            let mut frame = buf.split_to(4 + size).freeze();
            let request = frame.split_off(4);
            let answer = match start(conn, request) {
                Ok(answer) => answer,
                Err(e) => return Some(e.to_string()),
            };
            // Spawned now, so that its first step (a produce's queueing) runs in request order.
            let task = glommio::spawn_local(answer).detach();
            if std::future::poll_fn(|cx| answers.poll_ready(cx))
                .await
                .is_err()
                || answers.try_send(task).is_err()
            {
                return None;
            }
        }
        // What the requests read queued for partitions here goes to their logs as one append.
        crate::server::streams::flush_appends(&conn.shard.streams);
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let spare = buf.capacity() - buf.len();
        let start = buf.len();
        buf.resize(start + spare, 0);
        let read = or(async { Some(half.read(&mut buf[start..]).await) }, async {
            or(stopping.wait(), conn.ended.wait()).await;
            None
        })
        .await;
        match read {
            None | Some(Ok(0)) => return None,
            Some(Ok(n)) => buf.truncate(start + n),
            Some(Err(e)) => {
                tracing::debug!(conn = conn.id, error = %e, "kafka read failed");
                return None;
            }
        }
    }
}

/// Starts handling one request (the bytes after its size prefix).
fn start(conn: &Rc<KafkaConn>, request: Bytes) -> Result<Answer, RequestError> {
    use msg::RequestKind as Kind;
    if conn.sasl_bare_token.replace(false) {
        let c = conn.clone();
        return Ok(Box::pin(async move { sasl::bare_token(&c, request).await }));
    }
    let head = RequestHead::peek(&request)?;
    if head.api() == Some(ApiKey::ApiVersions)
        && !versions::is_served(ApiKey::ApiVersions, head.version)
    {
        let frame = versions::api_versions_unsupported(head.correlation_id);
        return Ok(Box::pin(async move { Ok(Some(frame)) }));
    }
    let served = head
        .api()
        .is_some_and(|api| versions::is_served(api, head.version));
    if !served && head.api().is_some_and(|api| versions::range(api).is_some()) {
        if let Some(frame) = sluice_protocol::kafka::unsupported::answer(&head, request.clone()) {
            tracing::debug!(
                conn = conn.id,
                api = head.api_key,
                version = head.version,
                "kafka request of a version not served; answered UNSUPPORTED_VERSION"
            );
            return Ok(Box::pin(async move { Ok(Some(frame)) }));
        }
    }
    let (header, request) = decode_served(&head, request)?;
    let sasl = matches!(
        request,
        Kind::ApiVersions(_) | Kind::SaslHandshake(_) | Kind::SaslAuthenticate(_)
    );
    if !sasl && !conn.admitted() {
        return Err(RequestError::Malformed {
            api: head.api_key,
            version: head.version,
            reason: "a request before SASL authentication".into(),
        });
    }
    let (c, v) = (conn.clone(), head.version);
    Ok(match request {
        Kind::ApiVersions(_) => now(&head, versions::api_versions()),
        Kind::SaslHandshake(r) => now(&head, sasl::handshake(&c, v, r)),
        Kind::SaslAuthenticate(r) => later(head, async move { sasl::authenticate(&c, r).await }),
        Kind::Metadata(r) => later(head, async move { topics::metadata(&c, v, r).await }),
        Kind::CreateTopics(r) => later(head, async move { topics::create(&c, v, r).await }),
        Kind::DeleteTopics(r) => later(head, async move { topics::delete(&c, v, r).await }),
        Kind::Produce(r) => {
            let acks = r.acks;
            let answer = data::produce(&c, r);
            Box::pin(async move {
                let response = answer.await;
                if acks == 0 {
                    return Ok(None);
                }
                encode_response(&head, &response).map(Some)
            })
        }
        Kind::Fetch(r) => later(head, async move { data::fetch(&c, v, r).await }),
        Kind::ListOffsets(r) => later(head, async move { data::list_offsets(&c, v, r).await }),
        Kind::InitProducerId(r) => later(head, async move { data::init_producer_id(&c, r).await }),
        Kind::FindCoordinator(r) => now(&head, groups::find_coordinator(&c, v, r)),
        Kind::JoinGroup(r) => later(head, async move {
            groups::join(&c, v, header.client_id, r).await
        }),
        Kind::SyncGroup(r) => later(head, async move { groups::sync(&c, v, r).await }),
        Kind::Heartbeat(r) => later(head, async move { groups::heartbeat(&c, r).await }),
        Kind::LeaveGroup(r) => later(head, async move { groups::leave(&c, v, r).await }),
        Kind::OffsetCommit(r) => later(head, async move { groups::offset_commit(&c, r).await }),
        Kind::OffsetFetch(r) => later(head, async move { groups::offset_fetch(&c, v, r).await }),
        Kind::DescribeGroups(r) => later(head, async move { groups::describe(&c, v, r).await }),
        Kind::ListGroups(r) => later(head, async move { groups::list(&c, v, r).await }),
        Kind::DescribeConfigs(r) => now(&head, configs::describe_configs(&c, v, r)),
        Kind::DescribeCluster(_) => now(&head, configs::describe_cluster(&c, v)),
        _ => {
            return Err(RequestError::Malformed {
                api: head.api_key,
                version: head.version,
                reason: format!("{:?} is not served", head.api()),
            })
        }
    })
}

/// An answer known at once.
fn now<T: Encodable + HeaderVersion>(head: &RequestHead, response: T) -> Answer {
    let encoded = encode_response(head, &response).map(Some);
    Box::pin(async move { encoded })
}

/// An answer that takes waiting for.
fn later<T, F>(head: RequestHead, response: F) -> Answer
where
    T: Encodable + HeaderVersion,
    F: Future<Output = T> + 'static,
{
    Box::pin(async move {
        let response = response.await;
        encode_response(&head, &response).map(Some)
    })
}
