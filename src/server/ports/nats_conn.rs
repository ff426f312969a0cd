//! A NATS client connection: the NATS text protocol over the same shards, subjects and queue groups
//! as the native protocol. A publish becomes a native publish frame (so native subscribers, streams
//! and NATS subscribers all see the same message); a delivery to a NATS subscriber is a `MSG` line.

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use sluice_protocol::nats::{
    decode_in_place, encode_err, parse_connect, ClientOpRef, Decoded, CONTROL_LINE_BYTES_MAX,
};

use super::conn::{read_more, Close, Conn, Half};
use crate::server::auth::Credentials;
use crate::server::core::stats::add;
use crate::server::session::SessionShard;
use crate::server::session::{self, Refusal};

/// `-ERR '<message>'` as bytes.
pub fn err_line(message: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode_err(&mut out, message);
    out.freeze()
}

/// The nats-server version whose client protocol and JetStream API the NATS port speaks.
pub const NATS_VERSION: &str = "2.11.0";

/// The INFO line sent when a client connects.
pub(in crate::server) fn info_line(shard: &SessionShard, conn_id: u64) -> Bytes {
    let mut info = serde_json::json!({
        "server_id": shard.core.config.server_id,
        "server_name": "sluice",
        // NATS clients choose the JetStream API forms they use by this version: Sluice answers
        // those of nats-server 2.11.
        "version": NATS_VERSION,
        "sluice_version": env!("CARGO_PKG_VERSION"),
        "jetstream": true,
        "proto": 1,
        "host": shard.core.config.nats_listen.map(|a| a.ip().to_string()),
        "port": shard.core.config.nats_listen.map(|a| a.port()),
        "headers": true,
        "max_payload": shard.core.config.payload_bytes_max,
        "client_id": conn_id,
        "auth_required": shard.core.config.users.required(),
        "tls_required": shard.core.config.tls.is_some(),
    });
    let urls = shard.core.connect_urls();
    if !urls.is_empty() {
        // The cluster's nodes: a client reconnects to another when this one goes.
        info["connect_urls"] = serde_json::json!(*urls);
    }
    Bytes::from(format!("INFO {info}\r\n"))
}

/// Sends the client a new INFO each time the cluster's nodes change (one came, or said where its
/// clients connect), as nats-server does, so that its list of servers to reconnect to stays
/// current. Runs until the connection closes.
async fn announce_nodes(shard: Rc<SessionShard>, conn: Rc<Conn>) {
    use futures_lite::future::or;
    let mut seen = shard.core.connect_urls_version();
    loop {
        let changed = or(
            async {
                let core = &shard.core;
                (core.connect_urls_changed)
                    .wait_until(|| core.connect_urls_version() != seen)
                    .await;
                true
            },
            async {
                conn.client.done.wait().await;
                false
            },
        )
        .await;
        if !changed {
            return;
        }
        seen = shard.core.connect_urls_version();
        conn.client.out.push(&info_line(&shard, conn.client.id));
    }
}

/// Unanswered server pings after which a NATS connection is stale (nats-server's default).
const PINGS_OUT_MAX: u32 = 2;

/// Pings the client every interval; closes the connection once it leaves too many unanswered.
async fn keepalive(shard: Rc<SessionShard>, conn: Rc<Conn>) {
    let interval = shard.core.config.nats_ping_interval;
    loop {
        if !conn.client.sleep_while_open(interval).await {
            return;
        }
        let mut nats = conn.nats.borrow_mut();
        if nats.pings_out >= PINGS_OUT_MAX {
            drop(nats);
            tracing::info!(
                shard = shard.core.id.0,
                conn = conn.client.id,
                "stale NATS connection closed"
            );
            conn.client.out.close_with(err_line("Stale Connection"));
            return;
        }
        nats.pings_out += 1;
        drop(nats);
        conn.client.out.push(b"PING\r\n");
    }
}

pub(in crate::server) async fn read_loop(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    mut socket: Half,
    info_sent: bool,
) -> Close {
    conn.nats.borrow_mut().enabled = true;
    if !info_sent {
        conn.client.out.push(&info_line(shard, conn.client.id));
    }
    glommio::spawn_local(keepalive(shard.clone(), conn.clone())).detach();
    if shard.core.config.cluster.is_some() {
        glommio::spawn_local(announce_nodes(shard.clone(), conn.clone())).detach();
    }
    let payload_max = shard.core.config.payload_bytes_max as usize;
    let must_authenticate = shard.core.config.users.required();
    let mut buf = BytesMut::new();
    loop {
        // PONGs wait until everything read so far is handled, as nats-server answers a read: some
        // clients (nats-py) write their PING straight to the socket, ahead of SUBs still in their
        // buffer, and expect those SUBs in force when the PONG comes.
        let mut pongs = 0usize;
        loop {
            // On a server with users, a client that has not authenticated may send its CONNECT
            // line and nothing with a payload: no large buffer is reserved for it.
            let max = if must_authenticate && !conn.nats.borrow().connected {
                0
            } else {
                payload_max
            };
            match decode_in_place(&buf, max, CONTROL_LINE_BYTES_MAX) {
                Ok(Decoded::Op(ClientOpRef::Ping, used)) => {
                    pongs += 1;
                    buf.advance(used);
                }
                Ok(Decoded::Op(op, used)) => {
                    if let Err(close) = handle(shard, conn, op).await {
                        return close;
                    }
                    buf.advance(used);
                }
                Ok(Decoded::Incomplete { needed }) => {
                    buf.reserve(needed.saturating_sub(buf.len()));
                    if pongs > 0 {
                        if conn.client.take_interest_changed() {
                            shard.core.barrier().await;
                        }
                        for _ in 0..pongs {
                            conn.client.out.push(b"PONG\r\n");
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(shard = shard.core.id.0, conn = conn.client.id, error = %e, "bad NATS input");
                    conn.client.out.close_with(err_line(&e.to_string()));
                    return Close::Error;
                }
            }
        }
        if let Some(close) = read_more(shard, conn, &mut socket, &mut buf).await {
            return close;
        }
    }
}

fn ok(conn: &Conn) {
    if conn.nats.borrow().verbose {
        conn.client.out.push(b"+OK\r\n");
    }
}

/// An error the connection survives.
fn warn(shard: &SessionShard, conn: &Conn, message: &str) {
    add(&shard.core.stats.protocol_errors, 1);
    conn.client.out.push(&err_line(message));
}

async fn handle(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    op: ClientOpRef<'_>,
) -> Result<(), Close> {
    let authenticating = shard.core.config.users.required();
    if authenticating
        && !conn.nats.borrow().connected
        && !matches!(op, ClientOpRef::Connect(_) | ClientOpRef::Pong)
    {
        add(&shard.core.stats.auth_failures, 1);
        conn.client
            .out
            .close_with(err_line("Authorization Violation"));
        return Err(Close::Error);
    }
    match op {
        ClientOpRef::Connect(json) => {
            let options = match parse_connect(json) {
                Ok(options) => options,
                Err(e) => {
                    // nats-server drops such a client too; the -ERR tells it why.
                    add(&shard.core.stats.protocol_errors, 1);
                    conn.client.out.close_with(err_line(&e.to_string()));
                    return Err(Close::Error);
                }
            };
            if authenticating {
                let creds = Credentials {
                    user: options.user,
                    password: options.pass,
                    token: options.auth_token,
                };
                if conn.authenticate(shard, creds).await.is_err() {
                    conn.client
                        .out
                        .close_with(err_line("Authorization Violation"));
                    return Err(Close::Error);
                }
            }
            let mut nats = conn.nats.borrow_mut();
            nats.verbose = options.verbose;
            nats.echo = options.echo;
            nats.no_responders = options.no_responders && options.headers;
            nats.connected = true;
            drop(nats);
            ok(conn);
        }
        ClientOpRef::Pub {
            subject,
            reply,
            headers,
            payload,
        } => return publish(shard, conn, subject, reply, headers, payload),
        ClientOpRef::Sub {
            subject,
            queue,
            sid,
        } => return subscribe(shard, conn, subject, queue, sid),
        ClientOpRef::Unsub { sid, max } => return unsubscribe(shard, conn, sid, max),
        // Answered once the read is handled: see `read_loop`.
        ClientOpRef::Ping => {}
        ClientOpRef::Pong => conn.nats.borrow_mut().pings_out = 0,
    }
    Ok(())
}

fn publish(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) -> Result<(), Close> {
    let (Ok(subject), Ok(reply)) = (text(subject), reply.map(text).transpose()) else {
        add(&shard.core.stats.msgs_in, 1);
        return refuse(shard, conn, &Refusal::InvalidSubject("not UTF-8".into()));
    };
    if subject.starts_with("$JS.")
        && super::jetstream::handle_publish(shard, conn, subject, reply, payload)
    {
        add(&shard.core.stats.msgs_in, 1);
        ok(conn);
        return Ok(());
    }
    let incoming = session::Incoming {
        subject,
        reply,
        body: session::Body::Parts { headers, payload },
        ack: session::AckMode::OnReply,
    };
    // As nats-server: the +OK comes before the message reaches anyone (the publisher included).
    match session::publish(shard, conn, incoming, || ok(conn)) {
        Ok(published) => {
            let no_responders = conn.nats.borrow().no_responders;
            if !published.interested && !published.stored && no_responders {
                if let Some(reply) = reply {
                    no_responders_status(shard, conn, reply);
                }
            }
            Ok(())
        }
        Err(refusal) => refuse(shard, conn, &refusal),
    }
}

/// A subject as text: all-ASCII subjects, the usual case, without a full UTF-8 check.
fn text(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

/// Tells the client why the session refused an operation, as nats-server words it; closes the
/// connection if that is fatal.
fn refuse(_shard: &SessionShard, conn: &Conn, refusal: &Refusal) -> Result<(), Close> {
    let line = err_line(&refusal.nats_text());
    if refusal.is_fatal() {
        conn.client.out.close_with(line);
        return Err(Close::Error);
    }
    conn.client.out.push(&line);
    Ok(())
}

/// Tells a requester that nobody is listening: a 503 status on its reply subject.
fn no_responders_status(shard: &SessionShard, conn: &Conn, reply: &str) {
    for sub in shard.core.subs_of(conn.client.id, reply) {
        let Some(sid) = &sub.nats_sid else { continue };
        let mut line = BytesMut::new();
        sluice_protocol::nats::encode_msg(
            &mut line,
            reply.as_bytes(),
            sid,
            None,
            b"NATS/1.0 503\r\n\r\n",
            b"",
        );
        conn.client.out.push(&line);
    }
}

fn subscribe(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    subject: &[u8],
    queue: Option<&[u8]>,
    sid: &[u8],
) -> Result<(), Close> {
    let Some(id) = parse_sid(sid) else {
        warn(shard, conn, "Invalid Subscription ID");
        return Ok(());
    };
    let Ok(pattern) = std::str::from_utf8(subject) else {
        return refuse(
            shard,
            conn,
            &Refusal::InvalidPattern {
                pattern: String::from_utf8_lossy(subject).into_owned(),
                why: "not UTF-8".into(),
            },
        );
    };
    let Ok(queue) = queue.map(std::str::from_utf8).transpose() else {
        return refuse(shard, conn, &Refusal::InvalidQueue("not UTF-8".into()));
    };
    let new = session::NewSub {
        sid: id,
        pattern,
        queue,
        nats_sid: Some(Bytes::copy_from_slice(sid)),
    };
    match session::subscribe(shard, conn, new) {
        Ok(()) => {
            ok(conn);
            Ok(())
        }
        Err(refusal) => refuse(shard, conn, &refusal),
    }
}

/// A subscription id as NATS clients write it: a decimal number.
fn parse_sid(sid: &[u8]) -> Option<u64> {
    std::str::from_utf8(sid).ok()?.parse().ok()
}

/// NATS counts `max` over the whole subscription, not from now on; an unknown sid is ignored, as
/// nats-server does.
fn unsubscribe(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    sid: &[u8],
    max: Option<u64>,
) -> Result<(), Close> {
    let Some(id) = parse_sid(sid) else {
        warn(shard, conn, "Invalid Subscription ID");
        return Ok(());
    };
    let limit = max.map_or(session::Limit::Now, session::Limit::Total);
    match session::unsubscribe(shard, conn, id, limit) {
        Ok(()) | Err(Refusal::UnknownSid(_)) => {
            ok(conn);
            Ok(())
        }
        Err(refusal) => refuse(shard, conn, &refusal),
    }
}
