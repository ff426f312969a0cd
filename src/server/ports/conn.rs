//! One client connection: read frames, act on each, write replies and messages.
//!
//! The reader loop is accept → decode → handle; handling a publish hands it to the shard's router.
//! Writing is a separate task (see `outbound`), so a connection that publishes and subscribes at once
//! never waits on itself.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use sluice_protocol::frame::decode;
use sluice_protocol::limits::{frame_body_bytes_max, PROTOCOL_VERSION};
use sluice_protocol::op::{AckKind, Info, Op};
use sluice_protocol::{ArchivedOp, ErrorCode, Frame};

use super::{nats_conn, stream_api};
use crate::server::auth::{Credentials, Refusal};
use crate::server::core::client::Client;
use crate::server::core::outbound::{run_writer, Outbound, WriteEnd};
use crate::server::core::stats::add;
use crate::server::session;
pub use crate::server::session::connection::Conn;
use crate::server::session::SessionShard;
use crate::server::streams;
use crate::server::tls::CertIdentity;

/// Least spare room asked of the kernel per read, and the read buffer of a connection whose reads
/// trickle or that is idle: a new connection starts with it, so a thousand idle clients hold 4 MiB
/// of read buffers, not 16.
const READ_CHUNK_BYTES_MIN: usize = 4 * 1024;

/// How long a connection with nothing half-read may wait for input while holding a read buffer
/// larger than `READ_CHUNK_BYTES_MIN`; it then waits with a small one. A busy connection's reads
/// come much sooner, so it keeps its buffer; one that went quiet gives it back.
const READ_IDLE_RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Most bytes asked of the kernel per read; the spare room is zeroed first, so this bounds that cost.
const READ_CHUNK_BYTES_MAX: usize = 256 * 1024;

/// Largest frame a native client may send before its connect is accepted: a connect with a name
/// and credentials fits many times over.
const PRE_CONNECT_FRAME_BYTES_MAX: u32 = 4 * 1024;

/// Why a connection ends.
pub(in crate::server) enum Close {
    /// The peer went away or the server is stopping.
    Quiet,
    /// A fatal protocol error, already reported to the client.
    Error,
}

pub(in crate::server) use crate::server::core::socket::{Half, Socket};

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Native,
    Nats,
}

/// How long a client has to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection's stream once secured: the socket, whether the NATS INFO was sent already, and
/// the names of the client's certificate (with `tls_map`).
pub(in crate::server) type Secured = (Box<dyn Socket>, bool, Option<CertIdentity>);

/// Wraps an accepted stream in TLS when the server requires it. A NATS client first gets the INFO
/// line in the clear (announcing `tls_required`), then starts the handshake, as NATS clients do.
/// A handshake that fails (no client certificate where one is required, one from another CA) is
/// counted and logged, and the connection closed.
pub(in crate::server) async fn secure(
    shard: &SessionShard,
    mut stream: TcpStream,
    protocol: Protocol,
    id: u64,
) -> Option<Secured> {
    let Some(tls) = shard.core.config.tls.clone() else {
        return Some((Box::new(stream), false, None));
    };
    if protocol == Protocol::Nats {
        use futures_lite::AsyncWriteExt;
        let info = nats_conn::info_line(shard, id);
        stream.write_all(&info).await.ok()?;
    }
    let acceptor = futures_rustls::TlsAcceptor::from(tls);
    let handshake = glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async {
        acceptor
            .accept(stream)
            .await
            .map_err(glommio::GlommioError::IoError)
    })
    .await;
    match handshake {
        Ok(tls_stream) => {
            let certificate = match shard.core.config.tls_map {
                true => certificate_of(shard, id, &tls_stream),
                false => None,
            };
            Some((
                Box::new(tls_stream),
                protocol == Protocol::Nats,
                certificate,
            ))
        }
        Err(e) => {
            add(&shard.core.stats.protocol_errors, 1);
            add(&shard.core.stats.tls_handshake_failures, 1);
            tracing::warn!(shard = shard.core.id.0, conn = id, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// The names of the certificate a client presented (and the handshake verified).
fn certificate_of(
    shard: &SessionShard,
    id: u64,
    stream: &futures_rustls::server::TlsStream<TcpStream>,
) -> Option<CertIdentity> {
    let der = stream.get_ref().1.peer_certificates()?.first()?;
    match CertIdentity::from_der(der) {
        Ok(identity) => Some(identity),
        Err(e) => {
            tracing::warn!(shard = shard.core.id.0, conn = id, error = %e,
                "unreadable client certificate");
            None
        }
    }
}

/// Serves one accepted connection until it ends.
pub async fn serve(shard: Rc<SessionShard>, stream: TcpStream, protocol: Protocol) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let Some(id) = shard.core.admit() else {
        refuse(&shard, stream, protocol).await;
        return;
    };
    shard.core.handshakes.set(shard.core.handshakes.get() + 1);
    let secured = secure(&shard, stream, protocol, id).await;
    shard.core.handshakes.set(shard.core.handshakes.get() - 1);
    let Some((stream, info_sent, certificate)) = secured else {
        return;
    };
    let out = Outbound::new(
        shard.core.config.pending_bytes_max,
        shard.core.config.write_deadline,
    );
    let conn = Rc::new(Conn::new(
        Rc::new(Client::new(id, out)),
        READ_CHUNK_BYTES_MIN,
        certificate,
    ));
    session::open(&shard, &conn);
    if shard.core.config.users.required() {
        glommio::spawn_local(auth_deadline(shard.clone(), conn.clone(), protocol)).detach();
    }
    tracing::debug!(
        shard = shard.core.id.0,
        conn = id,
        ?peer,
        ?protocol,
        "connection accepted"
    );

    let socket: Rc<RefCell<Box<dyn Socket>>> = Rc::new(RefCell::new(stream));
    let writer = {
        let conn = conn.clone();
        let shard = shard.clone();
        let mut half = Half(socket.clone());
        glommio::spawn_local(async move {
            let slow = || match protocol {
                Protocol::Native => shard.core.error_frame(
                    ErrorCode::SlowConsumer,
                    "slow consumer: the connection fell too far behind",
                ),
                Protocol::Nats => nats_conn::err_line("Slow Consumer"),
            };
            match run_writer(&conn.client.out, &mut half, slow).await {
                WriteEnd::Closed => {}
                WriteEnd::Failed(e) => {
                    tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, error = %e, "write ended");
                }
                WriteEnd::OverLimit => {
                    // Counted and logged where the append failed (`Shard::deliver`).
                }
                WriteEnd::Stalled(deadline) => {
                    add(&shard.core.stats.slow_consumers, 1);
                    tracing::warn!(
                        shard = shard.core.id.0,
                        conn = conn.client.id,
                        ?deadline,
                        "slow consumer: the socket took nothing for the write deadline, disconnecting"
                    );
                }
            }
            shard.core.remove_subs_of(&conn.client);
            conn.client.done.set();
        })
    };

    let close = match protocol {
        Protocol::Native => read_loop(&shard, &conn, Half(socket)).await,
        Protocol::Nats => nats_conn::read_loop(&shard, &conn, Half(socket), info_sent).await,
    };
    if let Close::Error = close {
        add(&shard.core.stats.protocol_errors, 1);
    }
    session::close(&shard, &conn);
    if let Some(user) = conn.user.borrow_mut().take() {
        user.release();
    }
    conn.client.out.close();
    writer.await;
    tracing::debug!(shard = shard.core.id.0, conn = id, "connection closed");
}

/// On a server with users: closes a connection that has not sent its credentials within the auth
/// timeout, with an error that says so. (Checking them is the broker's time, not the client's.)
async fn auth_deadline(shard: Rc<SessionShard>, conn: Rc<Conn>, protocol: Protocol) {
    let timeout = shard.core.config.auth_timeout;
    if !conn.client.sleep_while_open(timeout).await || conn.auth_started.get() {
        return;
    }
    add(&shard.core.stats.auth_failures, 1);
    tracing::warn!(
        shard = shard.core.id.0,
        conn = conn.client.id,
        ?timeout,
        "authentication timeout"
    );
    let frame = match protocol {
        Protocol::Native => shard.core.error_frame(
            ErrorCode::AuthorizationFailed,
            "authentication timeout: no valid connect in time",
        ),
        Protocol::Nats => nats_conn::err_line("Authentication Timeout"),
    };
    conn.client.out.close_with(frame);
}

/// Tells a client over the connection limit so, and closes.
async fn refuse(shard: &SessionShard, mut stream: TcpStream, protocol: Protocol) {
    use futures_lite::AsyncWriteExt;
    tracing::warn!(
        shard = shard.core.id.0,
        "connection refused: at the connection limit"
    );
    let frame = match protocol {
        Protocol::Native => shard
            .core
            .error_frame(ErrorCode::TooManyConnections, "too many connections"),
        Protocol::Nats => nats_conn::err_line("maximum connections exceeded"),
    };
    let _ = stream.write_all(&frame).await;
    let _ = stream.close().await;
}

async fn read_loop(shard: &Rc<SessionShard>, conn: &Rc<Conn>, mut socket: Half) -> Close {
    let body_max = frame_body_bytes_max(shard.core.config.payload_bytes_max);
    let mut buf = BytesMut::new();
    let mut connected = false;
    loop {
        loop {
            // Before its connect is accepted a client may send its connect alone: a frame
            // announced larger is refused from its header, before any of it is buffered.
            let max = if connected {
                body_max
            } else {
                PRE_CONNECT_FRAME_BYTES_MAX
            };
            let frame = match decode(&mut buf, max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(shard = shard.core.id.0, conn = conn.client.id, error = %e, "bad frame");
                    fail(shard, conn, e.code(), &e.to_string());
                    return Close::Error;
                }
            };
            if let Err(close) = handle(shard, conn, &frame, &mut connected).await {
                return close;
            }
        }
        if let Some(close) = read_more(shard, conn, &mut socket, &mut buf).await {
            return close;
        }
    }
}

/// Flushes what the frames handled so far queued, waits for room, and reads more into `buf`;
/// `Some` when the connection ends.
pub(in crate::server) async fn read_more(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    socket: &mut Half,
    buf: &mut BytesMut,
) -> Option<Close> {
    streams::flush_appends(&shard.streams);
    shard.core.wait_for_room().await;
    conn.wait_for_backlog(shard).await;
    let (read, filled, chunk) = loop {
        if buf.is_empty() && conn.read_chunk.get() <= READ_CHUNK_BYTES_MIN {
            if buf.capacity() != READ_CHUNK_BYTES_MIN {
                *buf = BytesMut::with_capacity(READ_CHUNK_BYTES_MIN);
            }
        } else if buf.capacity() - buf.len() < conn.read_chunk.get() {
            // Room for the chunk this connection's reads have grown to: a publisher sending flat
            // out is read in large chunks, one round trip through the ring each.
            buf.reserve(conn.read_chunk.get());
        }
        let filled = buf.len();
        let chunk = (buf.capacity() - filled).min(conn.read_chunk.get());
        let may_release = filled == 0 && buf.capacity() > READ_CHUNK_BYTES_MIN;
        buf.resize(filled + chunk, 0);
        let read = futures_lite::future::or(
            async { Read::Data(socket.read(&mut buf[filled..]).await) },
            async {
                let end = async {
                    futures_lite::future::or(shard.core.stopping.wait(), conn.client.done.wait())
                        .await;
                    Read::End
                };
                let idle = async {
                    match may_release {
                        true => glommio::timer::sleep(READ_IDLE_RELEASE_AFTER).await,
                        false => std::future::pending().await,
                    }
                    Read::Idle
                };
                futures_lite::future::or(end, idle).await
            },
        )
        .await;
        match read {
            // Quiet with an empty, grown buffer: wait again with a small one (nothing was read,
            // so dropping the pending read loses nothing).
            Read::Idle => {
                buf.clear();
                conn.read_chunk.set(READ_CHUNK_BYTES_MIN);
            }
            Read::Data(result) => break (Some(result), filled, chunk),
            Read::End => break (None, filled, chunk),
        }
    };
    match read {
        Some(Ok(n)) if n > 0 => {
            buf.truncate(filled + n);
            // Ask for more while reads fill what was asked; less when they trickle.
            let next = if n == chunk {
                chunk * 2
            } else if n < chunk / 4 {
                chunk / 2
            } else {
                chunk
            };
            conn.read_chunk
                .set(next.clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES_MAX));
            None
        }
        Some(Ok(_)) => {
            buf.truncate(filled);
            if !buf.is_empty() {
                tracing::info!(
                    shard = shard.core.id.0,
                    conn = conn.client.id,
                    bytes = buf.len(),
                    "client went away mid-frame"
                );
            }
            Some(Close::Quiet)
        }
        Some(Err(e)) => {
            tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, error = %e, "read failed");
            Some(Close::Quiet)
        }
        None => {
            if shard.core.stopping.is_set() {
                conn.finish_acks(shard).await;
                conn.client.out.close_with(shutdown_notice(shard, conn));
            }
            Some(Close::Quiet)
        }
    }
}

/// How a read in `read_more` ended.
enum Read {
    Data(std::io::Result<usize>),
    /// Nothing came for `READ_IDLE_RELEASE_AFTER` while the buffer could shrink.
    Idle,
    /// The shard is stopping or the connection is done.
    End,
}

/// What a client is told when the server stops, in its protocol.
fn shutdown_notice(shard: &SessionShard, conn: &Conn) -> bytes::Bytes {
    if conn.nats.borrow().enabled {
        nats_conn::err_line("Server Shutdown")
    } else {
        shard
            .core
            .error_frame(ErrorCode::ShuttingDown, "server shutting down")
    }
}

/// Tells the client why the session refused an operation; closes the connection if that is fatal.
fn refuse_op(shard: &SessionShard, conn: &Conn, refusal: &session::Refusal) -> Result<(), Close> {
    let frame = shard.core.error_frame(refusal.code(), &refusal.to_string());
    if refusal.is_fatal() {
        conn.client.out.close_with(frame);
        return Err(Close::Error);
    }
    conn.client.out.push(&frame);
    Ok(())
}

/// Reports a fatal error to the client and closes.
fn fail(shard: &SessionShard, conn: &Conn, code: ErrorCode, message: &str) {
    conn.client
        .out
        .close_with(shard.core.error_frame(code, message));
}

/// Reports an error the connection survives.
fn warn(shard: &SessionShard, conn: &Conn, code: ErrorCode, message: &str) {
    add(&shard.core.stats.protocol_errors, 1);
    conn.client.out.push(&shard.core.error_frame(code, message));
}

async fn handle(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    frame: &Frame,
    connected: &mut bool,
) -> Result<(), Close> {
    let op = frame.op();
    if !*connected {
        return connect(shard, conn, op).await.map(|()| *connected = true);
    }
    match op {
        ArchivedOp::Pub(publish) => {
            let incoming = session::Incoming {
                subject: publish.subject(),
                reply: publish.reply(),
                body: session::Body::Frame(frame),
                ack: if publish.wants_ack() {
                    session::AckMode::InTurn
                } else {
                    session::AckMode::None
                },
            };
            if let Err(refusal) = session::publish(shard, conn, incoming, || ()) {
                return refuse_op(shard, conn, &refusal);
            }
        }
        ArchivedOp::ConsumerAck(ack) => {
            let Some(kind) = AckKind::from_u8(ack.kind) else {
                warn(shard, conn, ErrorCode::MalformedFrame, "unknown ack kind");
                return Ok(());
            };
            let at = session::AckAt {
                stream: ack.stream.as_str(),
                consumer: ack.consumer.as_str(),
                partition: ack.partition.to_native(),
                offset: ack.offset.to_native(),
            };
            if let Err(refusal) =
                session::consumer_ack(shard, conn, at, kind, ack.delay_ms.to_native())
            {
                return refuse_op(shard, conn, &refusal);
            }
        }
        ArchivedOp::ConsumerPull(pull) => {
            let which = (
                pull.stream.as_str(),
                pull.consumer.as_str(),
                pull.sid.to_native(),
            );
            let count = u64::from(pull.count.to_native());
            let expires_ms = u64::from(pull.expires_ms.to_native());
            if let Err(refusal) = session::consumer_pull(shard, conn, which, count, expires_ms) {
                return refuse_op(shard, conn, &refusal);
            }
        }
        ArchivedOp::Api(request) => {
            stream_api::handle_api(
                shard,
                conn,
                request.id.to_native(),
                request.verb.as_str(),
                &request.body,
            );
        }
        ArchivedOp::Sub(sub) => {
            let new = session::NewSub {
                sid: sub.sid.to_native(),
                pattern: sub.subject.as_str(),
                queue: sub.queue.as_ref().map(|q| q.as_str()),
                nats_sid: None,
            };
            if let Err(refusal) = session::subscribe(shard, conn, new) {
                return refuse_op(shard, conn, &refusal);
            }
        }
        ArchivedOp::Unsub(unsub) => {
            let limit = match unsub.max.as_ref().map(|m| m.to_native()) {
                Some(more) if more > 0 => session::Limit::More(more),
                _ => session::Limit::Now,
            };
            if let Err(refusal) = session::unsubscribe(shard, conn, unsub.sid.to_native(), limit) {
                return refuse_op(shard, conn, &refusal);
            }
        }
        ArchivedOp::Ping => {
            if conn.client.take_interest_changed() {
                shard.core.barrier().await;
            }
            conn.client.out.push(&shard.core.encode(&Op::Pong));
        }
        ArchivedOp::Pong => {}
        ArchivedOp::Err(e) => {
            tracing::info!(
                shard = shard.core.id.0,
                conn = conn.client.id,
                code = e.code.to_native(),
                message = e.message.as_str(),
                "client reported an error"
            );
        }
        ArchivedOp::Connect(_)
        | ArchivedOp::Info(_)
        | ArchivedOp::Msg { .. }
        | ArchivedOp::PubAck(_)
        | ArchivedOp::ApiReply(_)
        | ArchivedOp::StreamMsg(_) => {
            let message = format!("unexpected {} from a client", op.name());
            tracing::warn!(shard = shard.core.id.0, conn = conn.client.id, "{message}");
            fail(shard, conn, ErrorCode::MalformedFrame, &message);
            return Err(Close::Error);
        }
    }
    Ok(())
}

/// The first frame must be a connect with our protocol version (and, on a server with users,
/// valid credentials); the answer is the server info.
async fn connect(shard: &SessionShard, conn: &Conn, op: &ArchivedOp<'_>) -> Result<(), Close> {
    let ArchivedOp::Connect(connect) = op else {
        fail(
            shard,
            conn,
            ErrorCode::ProtocolVersion,
            "the first frame must be a connect",
        );
        return Err(Close::Error);
    };
    let version = connect.version.to_native();
    if version != PROTOCOL_VERSION {
        let message = format!(
            "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
        );
        fail(shard, conn, ErrorCode::ProtocolVersion, &message);
        return Err(Close::Error);
    }
    if shard.core.config.users.required() {
        let creds = Credentials {
            user: connect.user.as_ref().map(|s| s.as_str().to_string()),
            password: connect.password.as_ref().map(|s| s.as_str().to_string()),
            token: connect.token.as_ref().map(|s| s.as_str().to_string()),
        };
        if let Err(refusal) = conn.authenticate(shard, creds).await {
            let message = match refusal {
                Refusal::BadCredentials => "authorization failed: bad or missing credentials",
                Refusal::TooManyConnections => {
                    "authorization failed: the user is at its connection limit"
                }
                Refusal::Busy => "authorization failed: the server is busy checking credentials",
                Refusal::UnknownCertificate => {
                    "authorization failed: the client certificate names no user"
                }
            };
            fail(shard, conn, ErrorCode::AuthorizationFailed, message);
            return Err(Close::Error);
        }
    }
    let info = shard.core.encode(&Op::Info(Info {
        server_id: &shard.core.config.server_id,
        version: env!("CARGO_PKG_VERSION"),
        proto: PROTOCOL_VERSION,
        shard: shard.core.id.0,
        shards: shard.core.shards as u32,
        max_payload: shard.core.config.payload_bytes_max,
    }));
    conn.client.out.push(&info);
    tracing::debug!(
        shard = shard.core.id.0,
        conn = conn.client.id,
        name = connect.name.as_str(),
        "connected"
    );
    Ok(())
}
