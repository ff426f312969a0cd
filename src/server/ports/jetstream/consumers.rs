//! Pull consumers through the JetStream API: create, info, names, list; pull requests
//! (`CONSUMER.MSG.NEXT`) and acks (`$JS.ACK.`).
//!
//! A JetStream consumer is a Sluice durable consumer that keeps the JetStream config it was given.
//! A connection that creates one, or pulls from it, is attached to it as a member, with a
//! [`Puller`] as its delivery sink: the pull requests it sent wait in order, each delivery is
//! written to the head request's reply subject as a NATS `MSG` (the stored subject, the reply
//! subscription's sid, an ack subject that says where it came from), and a request ends when its
//! batch is filled, or with a `408`/`404` status when it expires or, with `no_wait`, runs dry. The
//! credit a member holds is what its open requests still want.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::BytesMut;
use sluice_protocol::jetstream::ack::{parse_ack, parse_pull, AckBody};
use sluice_protocol::jetstream::headers::status_block;
use sluice_protocol::jetstream::json::{
    self, ApiError, ConsumerCreateRequest, ConsumerInfo, ConsumerNames, DeliverPolicy, ListRequest,
    SequenceInfo, LIST_PAGE, NAMES_PAGE,
};
use sluice_protocol::jetstream::seq::{position_of, seq_of};
use sluice_protocol::jetstream::subject::{AckReply, CreateForm};
use sluice_protocol::jetstream::time::{format_time_ns, parse_time_ns, ZERO_TIME};
use sluice_protocol::op::AckKind;

use super::pull::Puller;
use super::streams::{may_read, native_call};
use crate::api::{self, ConsumerName};
use crate::server::core::client::Client;
use crate::server::core::shard::Shard;
use crate::server::session::connection::Conn;
use crate::server::session::{self, AckAt, SessionShard};
use crate::server::streams::DeliverySink;

type Answer = Result<Vec<u8>, ApiError>;

/// Subscription ids the broker gives its JetStream members on a connection: far above the
/// decimal ids clients choose, so they never collide.
const MEMBER_SID_BASE: u64 = 1 << 62;

/// Longest ack wait, in milliseconds, a JetStream consumer may ask for.
const ACK_WAIT_MS_MAX: u64 = crate::api::ACK_WAIT_MS_MAX;

/// CONSUMER.CREATE, every form.
pub async fn create(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    stream: &str,
    form: CreateForm<'_>,
    body: &[u8],
) -> Answer {
    let request: ConsumerCreateRequest = json::parse_request(body)?;
    if !request.stream_name.is_empty() && request.stream_name != stream {
        return Err(ApiError::stream_name_mismatch());
    }
    may_read(shard, conn, stream)?;
    let mut config = request.config;
    let name = consumer_name(&mut config, form)?;
    api::check_stream_name(&name)
        .map_err(|e| ApiError::bad_request(format!("invalid consumer name: {e}")))?;
    let config = config.effective();
    if config.flow_control && !config.is_push() {
        return Err(ApiError::new(
            400,
            10089,
            "consumer flow control requires a push based consumer",
        ));
    }
    if config.flow_control && config.idle_heartbeat <= 0 {
        return Err(ApiError::new(
            400,
            10108,
            "consumer with flow control also needs heartbeats",
        ));
    }
    let existing = info_of(shard, stream, &name).await?;
    if let Some(existing) = &existing {
        let same = existing_config(existing).is_some_and(|c| *c == config);
        if same || request.action != "create" {
            // The same consumer again; an update of one is taken as it stands.
            let native = native_config(shard, stream, &name, &config).await?;
            join(shard, conn, stream, &name, native, &config).await?;
            let info = info_of(shard, stream, &name).await?;
            return Ok(json::response(
                "consumer_create",
                &consumer_info(&info.unwrap_or_else(|| existing.clone())),
            ));
        }
        return Err(ApiError::consumer_exists());
    }
    if request.action == "update" {
        return Err(ApiError::consumer_does_not_exist());
    }
    let native = native_config(shard, stream, &name, &config).await?;
    join(shard, conn, stream, &name, native, &config).await?;
    tracing::info!(stream, consumer = %name, "consumer created through the JetStream API");
    let info = info_of(shard, stream, &name)
        .await?
        .ok_or_else(ApiError::consumer_not_found)?;
    Ok(json::response("consumer_create", &consumer_info(&info)))
}

/// The consumer's name from the create subject and the config, as nats-server reads them.
fn consumer_name(
    config: &mut json::ConsumerConfig,
    form: CreateForm<'_>,
) -> Result<String, ApiError> {
    let given = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    match form {
        CreateForm::Durable(durable) => {
            match given(&config.durable_name) {
                Some(d) if d != durable => return Err(ApiError::durable_name_mismatch()),
                _ => config.durable_name = Some(durable.to_owned()),
            }
            Ok(durable.to_owned())
        }
        CreateForm::Named { name, filter } => {
            if let Some(filter) = filter {
                if config
                    .filter_subjects
                    .as_ref()
                    .is_some_and(|f| !f.is_empty())
                {
                    return Err(ApiError::multiple_filters_with_subject());
                }
                if config.filter_subject.as_deref() != Some(filter) {
                    return Err(ApiError::filter_mismatch());
                }
            }
            if let Some(durable) = given(&config.durable_name) {
                if durable != name {
                    return Err(ApiError::durable_name_mismatch());
                }
            }
            config.name = Some(name.to_owned());
            Ok(name.to_owned())
        }
        CreateForm::Unnamed => {
            if given(&config.durable_name).is_some() && given(&config.name).is_none() {
                return Err(ApiError::ephemeral_with_durable());
            }
            let name = given(&config.name)
                .unwrap_or_else(|| (0..8).map(|_| fastrand::alphanumeric()).collect::<String>());
            config.name = Some(name.clone());
            Ok(name)
        }
    }
}

/// Attaches the creating connection: to a push consumer through a pusher, to a pull consumer
/// through a puller.
async fn join(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    stream: &str,
    name: &str,
    native: api::ConsumerConfig,
    config: &json::ConsumerConfig,
) -> Result<(), ApiError> {
    if config.is_push() {
        super::push::attach(shard, conn, stream, name, native, config).await
    } else {
        attach(shard, conn, stream, name, native).await.map(|_| ())
    }
}

/// The native consumer for a JetStream config.
async fn native_config(
    shard: &Rc<SessionShard>,
    stream: &str,
    name: &str,
    config: &json::ConsumerConfig,
) -> Result<api::ConsumerConfig, ApiError> {
    let deliver = match config.deliver_policy {
        DeliverPolicy::All => api::DeliverPolicy::All,
        DeliverPolicy::New => api::DeliverPolicy::New,
        DeliverPolicy::ByStartSequence => {
            let seq = config.opt_start_seq.unwrap_or(1).max(1);
            api::DeliverPolicy::Offset(seq - 1)
        }
        DeliverPolicy::ByStartTime => {
            let at = config
                .opt_start_time
                .as_deref()
                .and_then(parse_time_ns)
                .ok_or_else(|| ApiError::bad_request("opt_start_time is missing or not a time"))?;
            api::DeliverPolicy::Time(at)
        }
        DeliverPolicy::Last => {
            let info: api::StreamInfo = super::streams::native_info(shard, stream).await?;
            let last = info.partitions.iter().filter_map(|p| p.last_offset).max();
            api::DeliverPolicy::Offset(last.unwrap_or(0))
        }
        DeliverPolicy::LastPerSubject => api::DeliverPolicy::LastPerSubject,
    };
    let ack_pending_max = shard.core.config.ack_pending_max;
    Ok(api::ConsumerConfig {
        stream: stream.to_owned(),
        name: name.to_owned(),
        deliver,
        ack_wait_ms: (u64::try_from(config.ack_wait).unwrap_or(0) / 1_000_000)
            .clamp(1, ACK_WAIT_MS_MAX),
        max_deliver: u32::try_from(config.max_deliver).unwrap_or(u32::MAX),
        max_ack_pending: u32::try_from(config.max_ack_pending)
            .unwrap_or(ack_pending_max)
            .min(ack_pending_max),
        sid: 0,
        jetstream: Some(Box::new(config.clone())),
    })
}

/// Attaches the connection to the consumer (creating it), with a puller as its delivery sink,
/// unless it is attached already.
async fn attach(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    stream: &str,
    consumer: &str,
    config: api::ConsumerConfig,
) -> Result<Rc<Puller>, ApiError> {
    if let Some(puller) = puller_of(conn, stream, consumer) {
        return Ok(puller);
    }
    let ephemeral = config
        .jetstream
        .as_ref()
        .filter(|j| !j.is_durable())
        .map(|_| super::push::Ephemeral {
            shard: shard.clone(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
        });
    let client = conn.client.clone();
    join_as_member(shard, conn, stream, consumer, config, |sid, partitions| {
        Puller {
            _ephemeral: ephemeral,
            shard: Rc::downgrade(shard),
            client,
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            sid,
            partitions,
            requests: RefCell::new(VecDeque::new()),
            last: Cell::new((0, 0)),
            next_request: Cell::new(1),
        }
    })
    .await
}

/// Makes the connection a member of the consumer (creating it) with the delivery sink `make`
/// builds from the member's subscription id and the stream's partitions; answers once every
/// partition owner has the consumer, and keeps the sink with the connection.
pub(super) async fn join_as_member<S: DeliverySink + 'static>(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    stream: &str,
    consumer: &str,
    mut config: api::ConsumerConfig,
    make: impl FnOnce(u64, u32) -> S,
) -> Result<Rc<S>, ApiError> {
    let sid = member_sid(conn);
    config.sid = sid;
    let partitions = shard
        .streams
        .streams
        .borrow()
        .config(stream)
        .map_or(1, |c| c.partitions);
    let member = Rc::new(make(sid, partitions));
    let sink: Rc<dyn DeliverySink> = member.clone();
    let joins = session::consumer_attach(shard, conn, config, Some(sink))
        .map_err(|(_, message)| ApiError::server_error(message))?;
    joins
        .wait(&shard.streams)
        .await
        .map_err(|(_, message)| ApiError::server_error(message))?;
    conn.pullers
        .borrow_mut()
        .push(((stream.to_owned(), consumer.to_owned()), member.clone()));
    Ok(member)
}

/// A subscription id for a new membership of this connection, never used on it before.
fn member_sid(conn: &Conn) -> u64 {
    let made = conn.memberships_made.get() + 1;
    conn.memberships_made.set(made);
    MEMBER_SID_BASE + made
}

fn puller_of(conn: &Conn, stream: &str, consumer: &str) -> Option<Rc<Puller>> {
    conn.pullers
        .borrow()
        .iter()
        .find(|((s, c), _)| s == stream && c == consumer)
        .and_then(|(_, p)| p.clone().downcast::<Puller>().ok())
}

/// CONSUMER.INFO.
pub async fn info(shard: &Rc<SessionShard>, conn: &Conn, stream: &str, consumer: &str) -> Answer {
    may_read(shard, conn, stream)?;
    let info = info_of(shard, stream, consumer)
        .await?
        .ok_or_else(ApiError::consumer_not_found)?;
    Ok(json::response("consumer_info", &consumer_info(&info)))
}

/// CONSUMER.DELETE: the consumer stops delivering and its state goes; this connection's open pull
/// requests on it end with `409 Consumer Deleted`.
pub async fn delete(shard: &Rc<SessionShard>, conn: &Conn, stream: &str, consumer: &str) -> Answer {
    may_read(shard, conn, stream)?;
    let body = serde_json::to_vec(&ConsumerName {
        stream: stream.to_owned(),
        name: consumer.to_owned(),
    })
    .map_err(|e| ApiError::server_error(e.to_string()))?;
    match native_call::<serde_json::Value>(shard, api::CONSUMER_DELETE, &body).await {
        Ok(_) => {}
        Err(e) if e.err_code == ApiError::stream_not_found().err_code => {
            return Err(match shard.streams.streams.borrow().config(stream) {
                Some(_) => ApiError::consumer_not_found(),
                None => e,
            });
        }
        Err(e) => return Err(e),
    }
    if let Some(puller) = puller_of(conn, stream, consumer) {
        let open: Vec<u64> = puller.requests.borrow().iter().map(|r| r.id).collect();
        for id in open {
            puller.end(id, 409, "Consumer Deleted");
        }
        conn.pullers
            .borrow_mut()
            .retain(|((s, c), _)| !(s == stream && c == consumer));
    }
    Ok(json::response(
        "consumer_delete",
        &json::Success { success: true },
    ))
}

/// CONSUMER.NAMES.
pub async fn names(shard: &Rc<SessionShard>, conn: &Conn, stream: &str, body: &[u8]) -> Answer {
    let request: ListRequest = json::parse_request(body)?;
    may_read(shard, conn, stream)?;
    let all = consumers_of(shard, stream).await?;
    let total = all.len();
    let consumers = all
        .into_iter()
        .skip(request.offset)
        .take(NAMES_PAGE)
        .map(|c| c.name)
        .collect();
    let names = ConsumerNames {
        total,
        offset: request.offset,
        limit: NAMES_PAGE,
        consumers,
    };
    Ok(json::response("consumer_names", &names))
}

/// CONSUMER.LIST.
pub async fn list(shard: &Rc<SessionShard>, conn: &Conn, stream: &str, body: &[u8]) -> Answer {
    let request: ListRequest = json::parse_request(body)?;
    may_read(shard, conn, stream)?;
    let all = consumers_of(shard, stream).await?;
    let total = all.len();
    // As the stream's info has them: asking each one's info would start here a consumer that
    // runs on another node.
    let consumers = all
        .iter()
        .skip(request.offset)
        .take(LIST_PAGE)
        .map(consumer_info)
        .collect();
    let list = json::ConsumerList {
        total,
        offset: request.offset,
        limit: LIST_PAGE,
        consumers,
    };
    Ok(json::response("consumer_list", &list))
}

/// The consumers of a stream, by name (dead-letter bookkeeping aside).
async fn consumers_of(
    shard: &Rc<SessionShard>,
    stream: &str,
) -> Result<Vec<api::ConsumerInfo>, ApiError> {
    let info = super::streams::native_info(shard, stream).await?;
    let mut consumers = info.consumers;
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(consumers)
}

/// A consumer's native info, or `None` when it does not exist.
async fn info_of(
    shard: &Rc<SessionShard>,
    stream: &str,
    consumer: &str,
) -> Result<Option<api::ConsumerInfo>, ApiError> {
    let body = serde_json::to_vec(&ConsumerName {
        stream: stream.to_owned(),
        name: consumer.to_owned(),
    })
    .map_err(|e| ApiError::server_error(e.to_string()))?;
    match native_call::<api::ConsumerInfo>(shard, api::CONSUMER_INFO, &body).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.err_code == ApiError::stream_not_found().err_code => {
            // The stream is there (may_read found it): it is the consumer that is not.
            if shard.streams.streams.borrow().config(stream).is_some() {
                Ok(None)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

fn existing_config(info: &api::ConsumerInfo) -> Option<&json::ConsumerConfig> {
    info.partitions
        .iter()
        .find_map(|p| p.config.as_ref())
        .and_then(|c| c.jetstream.as_deref())
}

/// A native consumer info as JetStream's.
fn consumer_info(info: &api::ConsumerInfo) -> ConsumerInfo {
    let config = existing_config(info).cloned().unwrap_or_else(|| {
        json::ConsumerConfig {
            durable_name: Some(info.name.clone()),
            ..json::ConsumerConfig::default()
        }
        .effective()
    });
    let partitions = u32::try_from(info.partitions.len()).unwrap_or(1).max(1);
    // On a one-partition stream (every stream the JetStream API makes) these are exact.
    let delivered_seq: u64 = info.partitions.iter().map(|p| p.delivered_seq).sum();
    // The stream sequences of the offsets just below a per-partition mark (next, ack floor).
    let below = |mark: fn(&api::ConsumerPartitionInfo) -> u64| {
        info.partitions
            .iter()
            .filter(move |p| mark(p) > 0)
            .filter_map(move |p| seq_of(p.partition, mark(p) - 1, partitions))
    };
    let last_delivered = below(|p| p.next).max().unwrap_or(0);
    let floor = below(|p| p.ack_floor).min().unwrap_or(0);
    ConsumerInfo {
        stream_name: info.stream.clone(),
        name: info.name.clone(),
        created: ZERO_TIME.to_owned(),
        config,
        delivered: SequenceInfo {
            consumer_seq: delivered_seq,
            stream_seq: last_delivered,
            last_active: None,
        },
        ack_floor: SequenceInfo {
            consumer_seq: delivered_seq.saturating_sub(info.ack_pending()),
            stream_seq: floor,
            last_active: None,
        },
        num_ack_pending: info.ack_pending(),
        num_redelivered: info.partitions.iter().map(|p| p.redelivered).sum(),
        num_waiting: 0,
        num_pending: info.pending(),
        push_bound: false,
        ts: format_time_ns(sluice_storage::now_ns()),
    }
}

/// `CONSUMER.MSG.NEXT`: a pull request whose messages go to `reply`.
pub async fn next(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    stream: &str,
    consumer: &str,
    reply: &str,
    body: &[u8],
) {
    let status = |code: u16, description: &str| {
        respond_status(
            &shard.core,
            &conn.client,
            reply,
            &status_block(code, description),
        );
    };
    let request = match parse_pull(body) {
        Ok(request) => request,
        Err(e) => return status(400, &format!("Bad Request - {e}")),
    };
    if may_read(shard, conn, stream).is_err() {
        return status(409, "Consumer Deleted");
    }
    let puller = match puller_of(conn, stream, consumer) {
        Some(puller) => puller,
        None => {
            let existing = match info_of(shard, stream, consumer).await {
                Ok(Some(info)) => info,
                // No such consumer: nobody answers, as on nats-server.
                _ => return status(503, ""),
            };
            let Some(config) = existing
                .partitions
                .iter()
                .find_map(|p| p.config.as_ref())
                .map(|c| (**c).clone())
            else {
                return status(503, "");
            };
            match attach(shard, conn, stream, consumer, config).await {
                Ok(puller) => puller,
                Err(e) => return status(409, &e.description),
            }
        }
    };
    puller.add(shard, conn, reply, request);
}

/// A publish to a `$JS.ACK.` subject: the ack of a delivered message. With a reply subject (an
/// ack that wants to know it was applied), an empty message goes back once it was, and for an
/// ack once it is kept (`session::consumer_ack_kept`).
pub fn ack(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    at: &AckReply<'_>,
    reply: Option<&str>,
    body: &[u8],
) {
    let partitions = shard
        .streams
        .streams
        .borrow()
        .config(at.stream)
        .map_or(1, |c| c.partitions);
    let Some((partition, offset)) = position_of(at.stream_seq, partitions) else {
        return;
    };
    let (kind, delay_ms, then_pull) = match parse_ack(body) {
        AckBody::Ack => (AckKind::Ack, 0, None),
        AckBody::Nak { delay_ns } => (AckKind::Nak, delay_ns.unwrap_or(0) / 1_000_000, None),
        AckBody::Progress => (AckKind::Progress, 0, None),
        AckBody::Term { .. } => (AckKind::Term, 0, None),
        AckBody::Next { request } => (AckKind::Ack, 0, Some(request.to_vec())),
        AckBody::Unknown => return,
    };
    let target = AckAt {
        stream: at.stream,
        consumer: at.consumer,
        partition,
        offset,
    };
    if let Err(refusal) = session::consumer_ack_as_reader(shard, conn, target, kind, delay_ms) {
        tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, %refusal, "ack refused");
        return;
    }
    let Some(reply) = reply else {
        return;
    };
    if then_pull.is_none() && kind != AckKind::Ack {
        respond_status(&shard.core, &conn.client, reply, b"");
        return;
    }
    let (shard, conn) = (shard.clone(), conn.clone());
    let (stream, consumer, reply) = (
        at.stream.to_owned(),
        at.consumer.to_owned(),
        reply.to_owned(),
    );
    glommio::spawn_local(async move {
        match then_pull {
            Some(request) => next(&shard, &conn, &stream, &consumer, &reply, &request).await,
            // Answered once the ack is kept, as nats-server answers once it is replicated: a
            // client that heard back never gets the message again, whichever node takes the
            // consumer up.
            None => {
                if session::consumer_ack_kept(&shard, &stream, &consumer, partition).await {
                    respond_status(&shard.core, &conn.client, &reply, b"");
                }
            }
        }
    })
    .detach();
}

/// An empty message (or a status) on a reply subject, for this connection's subscription to it.
fn respond_status(core: &Shard, client: &Client, reply: &str, headers: &[u8]) {
    for sub in core.subs_of(client.id, reply) {
        let Some(sid) = &sub.nats_sid else { continue };
        let mut line = BytesMut::new();
        sluice_protocol::nats::encode_msg(&mut line, reply.as_bytes(), sid, None, headers, b"");
        client.out.push(&line);
        return;
    }
}
