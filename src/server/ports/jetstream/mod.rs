//! The JetStream API on the NATS port: what a NATS client publishes under `$JS.API.` becomes a call
//! on Sluice's streams, and the answer goes back to its reply subject as JSON, the way nats-server
//! answers it. A port: wire formats only; the streams and their registry do the work.
//!
//! A stream made here has one partition, so a JetStream sequence is its offset plus one; a
//! partitioned stream made with the native API shows through here with the sequences of
//! `sluice_protocol::jetstream::seq`.

mod consumers;
mod pull;
mod push;
mod streams;

use std::rc::Rc;

use sluice_protocol::jetstream::json::{self, ApiError};
use sluice_protocol::jetstream::subject::{
    parse_ack_reply, parse_api_subject, ApiSubject, ACK_PREFIX,
};

use crate::server::session::connection::Conn;
use crate::server::session::SessionShard;

/// Makes this shard deliver the durable push consumers whose stream's first partition it owns.
pub fn install(shard: &Rc<SessionShard>) {
    crate::server::streams::set_host(&shard.streams, Rc::new(push::Hosts::new(shard)));
}

/// Handles a NATS publish to a JetStream API subject; returns false when the subject is not one
/// this port answers (it is then an ordinary publish, which nobody answers: a 503 to the client).
pub fn handle_publish(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    subject: &str,
    reply: Option<&str>,
    payload: &[u8],
) -> bool {
    if subject.starts_with(push::FLOW_PREFIX) {
        // An answer to a flow control request: taken here if this connection's own pusher asked;
        // otherwise it travels as a message to the broker's member that did.
        return push::flow_answered(conn, subject);
    }
    if subject.starts_with(ACK_PREFIX) {
        // An ack of a delivered message: the session checks the connection may ack it.
        if let Some(at) = parse_ack_reply(subject) {
            consumers::ack(shard, conn, &at, reply, payload);
            return true;
        }
        return false;
    }
    let Some(request) = parse_api_subject(subject) else {
        return false;
    };
    if !answers(&request) {
        return false;
    }
    if let ApiSubject::DirectGet { stream, .. } = request {
        // Only a stream made with `allow_direct` answers; otherwise nobody does (a 503).
        if !streams::allows_direct(shard, stream) {
            return false;
        }
    }
    // A request the user may not publish is refused by the session, as any publish.
    if !conn.may_publish(shard, subject) {
        return false;
    }
    let Some(reply) = reply else {
        // Nowhere to answer: nats-server ignores it too.
        return true;
    };
    // Answered in a task that owns the subject and reads it again there.
    let (shard, conn) = (shard.clone(), conn.clone());
    let (subject, reply, payload) = (subject.to_owned(), reply.to_owned(), payload.to_vec());
    glommio::spawn_local(async move {
        let Some(request) = parse_api_subject(&subject) else {
            return;
        };
        match request {
            // A pull: its messages, or its end, go to the reply subject.
            ApiSubject::ConsumerNext { stream, consumer } => {
                consumers::next(&shard, &conn, stream, consumer, &reply, &payload).await;
            }
            ApiSubject::DirectGet {
                stream,
                last_by_subject,
            } => {
                let (headers, body) =
                    streams::direct_get(&shard, &conn, stream, last_by_subject, &payload).await;
                respond_with(&shard, &reply, &headers, &body);
            }
            request => {
                let answer = answer(&shard, &conn, request, &payload).await;
                respond(&shard, &reply, &answer);
            }
        }
    })
    .detach();
    true
}

/// Whether this port answers the request (the others are left unanswered, as on a server
/// without them).
fn answers(request: &ApiSubject<'_>) -> bool {
    kind(request).is_some()
        || matches!(
            request,
            ApiSubject::ConsumerNext { .. } | ApiSubject::DirectGet { .. }
        )
}

/// The JSON answer to a request.
async fn answer(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    request: ApiSubject<'_>,
    body: &[u8],
) -> Vec<u8> {
    let kind = kind(&request).unwrap_or("error");
    let result = match request {
        ApiSubject::Info => streams::account_info(shard, conn).await,
        ApiSubject::StreamCreate(name) => streams::create(shard, conn, name, body, false).await,
        ApiSubject::StreamUpdate(name) => streams::create(shard, conn, name, body, true).await,
        ApiSubject::StreamInfo(name) => streams::info(shard, conn, name, body).await,
        ApiSubject::StreamDelete(name) => streams::delete(shard, conn, name).await,
        ApiSubject::StreamNames => streams::names(shard, conn, body),
        ApiSubject::StreamList => streams::list(shard, conn, body).await,
        ApiSubject::StreamMsgGet(name) => streams::msg_get(shard, conn, name, body).await,
        ApiSubject::StreamPurge(name) => streams::purge(shard, conn, name, body).await,
        ApiSubject::StreamMsgDelete(name) => streams::msg_delete(shard, conn, name, body).await,
        ApiSubject::ConsumerCreate { stream, form } => {
            consumers::create(shard, conn, stream, form, body).await
        }
        ApiSubject::ConsumerInfo { stream, consumer } => {
            consumers::info(shard, conn, stream, consumer).await
        }
        ApiSubject::ConsumerDelete { stream, consumer } => {
            consumers::delete(shard, conn, stream, consumer).await
        }
        ApiSubject::ConsumerNames(stream) => consumers::names(shard, conn, stream, body).await,
        ApiSubject::ConsumerList(stream) => consumers::list(shard, conn, stream, body).await,
        _ => Err(ApiError::bad_request("not supported by this server")),
    };
    result.unwrap_or_else(|error| {
        tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, kind, code = error.err_code,
            description = %error.description, "JetStream API request refused");
        json::error_response(kind, &error)
    })
}

/// The `<kind>` of a request's `io.nats.jetstream.api.v1.<kind>_response`, for the requests
/// answered with JSON.
fn kind(request: &ApiSubject<'_>) -> Option<&'static str> {
    Some(match request {
        ApiSubject::Info => "account_info",
        ApiSubject::StreamCreate(_) => "stream_create",
        ApiSubject::StreamUpdate(_) => "stream_update",
        ApiSubject::StreamInfo(_) => "stream_info",
        ApiSubject::StreamDelete(_) => "stream_delete",
        ApiSubject::StreamNames => "stream_names",
        ApiSubject::StreamList => "stream_list",
        ApiSubject::StreamMsgGet(_) => "stream_msg_get",
        ApiSubject::StreamPurge(_) => "stream_purge",
        ApiSubject::StreamMsgDelete(_) => "stream_msg_delete",
        ApiSubject::ConsumerCreate { .. } => "consumer_create",
        ApiSubject::ConsumerInfo { .. } => "consumer_info",
        ApiSubject::ConsumerDelete { .. } => "consumer_delete",
        ApiSubject::ConsumerNames(_) => "consumer_names",
        ApiSubject::ConsumerList(_) => "consumer_list",
        _ => return None,
    })
}

/// Publishes an answer on the request's reply subject.
fn respond(shard: &SessionShard, reply: &str, body: &[u8]) {
    respond_with(shard, reply, b"", body);
}

/// Publishes an answer with headers on the request's reply subject.
fn respond_with(shard: &SessionShard, reply: &str, headers: &[u8], body: &[u8]) {
    shard.core.route_made(reply, headers, body);
}
