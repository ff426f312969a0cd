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
    parse_ack_reply, parse_api_subject, ApiSubject, CreateForm, ACK_PREFIX,
};
use sluice_protocol::op::{Op, Publish};

use crate::server::session::connection::Conn;
use crate::server::session::SessionShard;

/// Handles a NATS publish to a JetStream API subject; returns false when the subject is not one
/// this port answers (it is then an ordinary publish, which nobody answers: a 503 to the client).
pub fn handle_publish(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    subject: &str,
    reply: Option<&str>,
    payload: &[u8],
) -> bool {
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
    if let ApiSubject::ConsumerNext { stream, consumer } = request {
        // A pull: its messages, or its end, go to the reply subject.
        let (shard, conn) = (shard.clone(), conn.clone());
        let (stream, consumer, reply) = (stream.to_owned(), consumer.to_owned(), reply.to_owned());
        let body = payload.to_vec();
        glommio::spawn_local(async move {
            consumers::next(&shard, &conn, &stream, &consumer, &reply, &body).await;
        })
        .detach();
        return true;
    }
    let (shard, conn) = (shard.clone(), conn.clone());
    let (reply, payload) = (reply.to_owned(), payload.to_vec());
    let request = Request::from(request);
    glommio::spawn_local(async move {
        if let Request::DirectGet(stream, subject) = &request {
            let (headers, body) =
                streams::direct_get(&shard, &conn, stream, subject.as_deref(), &payload).await;
            respond_with(&shard, &reply, &headers, &body);
            return;
        }
        let answer = request.answer(&shard, &conn, &payload).await;
        respond(&shard, &reply, &answer);
    })
    .detach();
    true
}

/// Whether this port answers the request (the others are left unanswered, as on a server
/// without them).
fn answers(request: &ApiSubject<'_>) -> bool {
    matches!(
        request,
        ApiSubject::Info
            | ApiSubject::StreamCreate(_)
            | ApiSubject::StreamUpdate(_)
            | ApiSubject::StreamInfo(_)
            | ApiSubject::StreamDelete(_)
            | ApiSubject::StreamNames
            | ApiSubject::StreamList
            | ApiSubject::StreamMsgGet(_)
            | ApiSubject::StreamPurge(_)
            | ApiSubject::StreamMsgDelete(_)
            | ApiSubject::ConsumerCreate { .. }
            | ApiSubject::ConsumerInfo { .. }
            | ApiSubject::ConsumerDelete { .. }
            | ApiSubject::ConsumerNames(_)
            | ApiSubject::ConsumerList(_)
            | ApiSubject::ConsumerNext { .. }
            | ApiSubject::DirectGet { .. }
    )
}

/// An API request that owns its names, to be answered in a task.
enum Request {
    Info,
    StreamCreate(String),
    StreamUpdate(String),
    StreamInfo(String),
    StreamDelete(String),
    StreamNames,
    StreamList,
    StreamMsgGet(String),
    StreamPurge(String),
    StreamMsgDelete(String),
    ConsumerCreate(String, OwnedForm),
    ConsumerInfo(String, String),
    ConsumerDelete(String, String),
    ConsumerNames(String),
    ConsumerList(String),
    /// A direct get of a stream, and the subject whose last message it wants when the subject
    /// names one.
    DirectGet(String, Option<String>),
    Unsupported,
}

impl From<ApiSubject<'_>> for Request {
    fn from(subject: ApiSubject<'_>) -> Request {
        match subject {
            ApiSubject::Info => Request::Info,
            ApiSubject::StreamCreate(s) => Request::StreamCreate(s.to_owned()),
            ApiSubject::StreamUpdate(s) => Request::StreamUpdate(s.to_owned()),
            ApiSubject::StreamInfo(s) => Request::StreamInfo(s.to_owned()),
            ApiSubject::StreamDelete(s) => Request::StreamDelete(s.to_owned()),
            ApiSubject::StreamNames => Request::StreamNames,
            ApiSubject::StreamList => Request::StreamList,
            ApiSubject::StreamMsgGet(s) => Request::StreamMsgGet(s.to_owned()),
            ApiSubject::StreamPurge(s) => Request::StreamPurge(s.to_owned()),
            ApiSubject::StreamMsgDelete(s) => Request::StreamMsgDelete(s.to_owned()),
            ApiSubject::ConsumerCreate { stream, form } => {
                Request::ConsumerCreate(stream.to_owned(), OwnedForm::from(form))
            }
            ApiSubject::ConsumerInfo { stream, consumer } => {
                Request::ConsumerInfo(stream.to_owned(), consumer.to_owned())
            }
            ApiSubject::ConsumerDelete { stream, consumer } => {
                Request::ConsumerDelete(stream.to_owned(), consumer.to_owned())
            }
            ApiSubject::ConsumerNames(s) => Request::ConsumerNames(s.to_owned()),
            ApiSubject::ConsumerList(s) => Request::ConsumerList(s.to_owned()),
            ApiSubject::DirectGet {
                stream,
                last_by_subject,
            } => Request::DirectGet(stream.to_owned(), last_by_subject.map(str::to_owned)),
            _ => Request::Unsupported,
        }
    }
}

impl Request {
    /// The JSON answer.
    async fn answer(self, shard: &Rc<SessionShard>, conn: &Rc<Conn>, body: &[u8]) -> Vec<u8> {
        let kind = self.kind();
        let result = match self {
            Request::Info => streams::account_info(shard, conn).await,
            Request::StreamCreate(name) => streams::create(shard, conn, &name, body, false).await,
            Request::StreamUpdate(name) => streams::create(shard, conn, &name, body, true).await,
            Request::StreamInfo(name) => streams::info(shard, conn, &name, body).await,
            Request::StreamDelete(name) => streams::delete(shard, conn, &name).await,
            Request::StreamNames => streams::names(shard, conn, body),
            Request::StreamList => streams::list(shard, conn, body).await,
            Request::StreamMsgGet(name) => streams::msg_get(shard, conn, &name, body).await,
            Request::StreamPurge(name) => streams::purge(shard, conn, &name, body).await,
            Request::StreamMsgDelete(name) => streams::msg_delete(shard, conn, &name, body).await,
            Request::ConsumerCreate(stream, form) => {
                consumers::create(shard, conn, &stream, form.borrowed(), body).await
            }
            Request::ConsumerInfo(stream, consumer) => {
                consumers::info(shard, conn, &stream, &consumer).await
            }
            Request::ConsumerDelete(stream, consumer) => {
                consumers::delete(shard, conn, &stream, &consumer).await
            }
            Request::ConsumerNames(stream) => consumers::names(shard, conn, &stream, body).await,
            Request::ConsumerList(stream) => consumers::list(shard, conn, &stream, body).await,
            Request::DirectGet(..) | Request::Unsupported => {
                Err(ApiError::bad_request("not supported by this server"))
            }
        };
        result.unwrap_or_else(|error| {
            tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, kind, code = error.err_code,
                description = %error.description, "JetStream API request refused");
            json::error_response(kind, &error)
        })
    }

    /// The `<kind>` of its `io.nats.jetstream.api.v1.<kind>_response`.
    fn kind(&self) -> &'static str {
        match self {
            Request::Info => "account_info",
            Request::StreamCreate(_) => "stream_create",
            Request::StreamUpdate(_) => "stream_update",
            Request::StreamInfo(_) => "stream_info",
            Request::StreamDelete(_) => "stream_delete",
            Request::StreamNames => "stream_names",
            Request::StreamList => "stream_list",
            Request::StreamMsgGet(_) => "stream_msg_get",
            Request::StreamPurge(_) => "stream_purge",
            Request::StreamMsgDelete(_) => "stream_msg_delete",
            Request::ConsumerCreate(..) => "consumer_create",
            Request::ConsumerInfo(..) => "consumer_info",
            Request::ConsumerDelete(..) => "consumer_delete",
            Request::ConsumerNames(_) => "consumer_names",
            Request::ConsumerList(_) => "consumer_list",
            Request::DirectGet(..) | Request::Unsupported => "error",
        }
    }
}

/// A consumer-create form that owns its names.
enum OwnedForm {
    Unnamed,
    Named {
        name: String,
        filter: Option<String>,
    },
    Durable(String),
}

impl From<CreateForm<'_>> for OwnedForm {
    fn from(form: CreateForm<'_>) -> OwnedForm {
        match form {
            CreateForm::Unnamed => OwnedForm::Unnamed,
            CreateForm::Named { name, filter } => OwnedForm::Named {
                name: name.to_owned(),
                filter: filter.map(str::to_owned),
            },
            CreateForm::Durable(d) => OwnedForm::Durable(d.to_owned()),
        }
    }
}

impl OwnedForm {
    fn borrowed(&self) -> CreateForm<'_> {
        match self {
            OwnedForm::Unnamed => CreateForm::Unnamed,
            OwnedForm::Named { name, filter } => CreateForm::Named {
                name,
                filter: filter.as_deref(),
            },
            OwnedForm::Durable(d) => CreateForm::Durable(d),
        }
    }
}

/// Publishes an answer on the request's reply subject.
fn respond(shard: &SessionShard, reply: &str, body: &[u8]) {
    respond_with(shard, reply, b"", body);
}

/// Publishes an answer with headers on the request's reply subject.
fn respond_with(shard: &SessionShard, reply: &str, headers: &[u8], body: &[u8]) {
    let frame = shard.core.encode_frame(&Op::Pub(Publish {
        subject: reply,
        reply: None,
        headers,
        payload: body,
        ack: false,
    }));
    shard.core.route(&frame, reply);
}
