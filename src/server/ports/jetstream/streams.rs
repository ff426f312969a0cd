//! Streams through the JetStream API: account info, create, update, info, delete, names, list.
//! Each becomes a call of the native stream API (answered by shard 0, which keeps the registry);
//! the JetStream config a client gave is kept with the stream and reported back as given, with
//! nats-server's defaults filled in.

use std::rc::Rc;

use sluice_protocol::jetstream::headers::{
    status_block, HeaderBuilder, SEQUENCE, STREAM, SUBJECT, TIME_STAMP,
};
use sluice_protocol::jetstream::json::{
    self, AccountInfo, AccountLimits, ApiError, ApiStats, ListRequest, MsgDeleteRequest,
    MsgGetRequest, MsgGetResponse, PurgeRequest, PurgeResponse, StoredMsg, StreamInfoRequest,
    StreamNames, StreamState, Success, LIST_PAGE, NAMES_PAGE,
};
use sluice_protocol::jetstream::seq::{position_of, seq_of};
use sluice_protocol::jetstream::time::{format_time_ns, ZERO_TIME};
use sluice_protocol::subject::{overlaps, validate_pattern};
use sluice_protocol::ErrorCode;

use crate::api::{self, check_stream_name, StreamConfig};
use crate::server::session::connection::Conn;
use crate::server::session::{self, SessionShard};
use crate::server::streams::call_api;

type Answer = Result<Vec<u8>, ApiError>;

/// `$JS.API.INFO`.
pub async fn account_info(shard: &Rc<SessionShard>, conn: &Conn) -> Answer {
    let streams = session::readable_streams(shard, conn);
    let info = AccountInfo {
        streams: streams.len() as u64,
        limits: AccountLimits {
            max_memory: -1,
            max_storage: -1,
            max_streams: i64::try_from(shard.core.config.streams_max).unwrap_or(-1),
            max_consumers: i64::try_from(shard.core.config.consumers_max).unwrap_or(-1),
            max_ack_pending: -1,
            memory_max_stream_bytes: -1,
            storage_max_stream_bytes: -1,
            max_bytes_required: false,
        },
        api: ApiStats {
            level: 1,
            total: 0,
            errors: 0,
        },
        ..AccountInfo::default()
    };
    Ok(json::response("account_info", &info))
}

/// STREAM.CREATE (or STREAM.UPDATE with `update`).
pub async fn create(
    shard: &Rc<SessionShard>,
    conn: &Conn,
    name: &str,
    body: &[u8],
    update: bool,
) -> Answer {
    let kind = if update {
        "stream_update"
    } else {
        "stream_create"
    };
    let mut wanted: json::StreamConfig = json::parse_request(body)?;
    if wanted.name.is_empty() {
        wanted.name = name.to_owned();
    }
    if wanted.name != name {
        return Err(ApiError::stream_name_mismatch());
    }
    check_stream_name(name)
        .map_err(|e| ApiError::bad_request(format!("invalid stream name: {e}")))?;
    let wanted = wanted.effective();
    may_write(shard, conn, &wanted.subjects)?;
    let existing = shard.streams.streams.borrow().config(name);
    let created_ns = match (&existing, update) {
        (Some(existing), false) => {
            if jetstream_config(existing) == wanted {
                let info = native_info(shard, name).await?;
                return Ok(json::response(kind, &stream_info(&info, false)));
            }
            return Err(ApiError::stream_name_in_use());
        }
        (None, true) => return Err(ApiError::stream_not_found()),
        (Some(existing), true) => existing.created_ns,
        (None, false) => sluice_storage::now_ns(),
    };
    let config = StreamConfig {
        name: name.to_owned(),
        subjects: wanted.subjects.clone(),
        partitions: existing.as_ref().map_or(1, |e| e.partitions),
        max_age_secs: u64::try_from(wanted.max_age)
            .ok()
            .filter(|&ns| ns > 0)
            .map(|ns| ns.div_ceil(1_000_000_000)),
        max_bytes: u64::try_from(wanted.max_bytes).ok().filter(|&b| b > 0),
        created_ns,
        replicas: u8::try_from(wanted.num_replicas.clamp(1, i64::from(u8::MAX))).unwrap_or(1),
        placement: Vec::new(),
        jetstream: Some(Box::new(wanted)),
    };
    let verb = if update {
        api::STREAM_UPDATE
    } else {
        api::STREAM_ADD
    };
    let body = serde_json::to_vec(&config).map_err(|e| ApiError::server_error(e.to_string()))?;
    // The registry checks overlaps against its index; only a refusal pays for finding out whether
    // that was the reason, so that adding a stream costs the same however many there are.
    let info: api::StreamInfo = match native_call(shard, verb, &body).await {
        Ok(info) => info,
        Err(refused) if overlaps_another(shard, &config) => {
            tracing::debug!(stream = name, error = ?refused, "stream subjects overlap");
            return Err(ApiError::subjects_overlap());
        }
        Err(refused) => return Err(refused),
    };
    tracing::info!(
        stream = name,
        update,
        "stream configured through the JetStream API"
    );
    Ok(json::response(kind, &stream_info(&info, !update)))
}

/// STREAM.INFO.
pub async fn info(shard: &Rc<SessionShard>, conn: &Conn, name: &str, body: &[u8]) -> Answer {
    let _request: StreamInfoRequest = json::parse_request(body)?;
    may_read(shard, conn, name)?;
    let info = native_info(shard, name).await?;
    Ok(json::response("stream_info", &stream_info(&info, false)))
}

/// STREAM.DELETE: the stream, its data and its consumers.
pub async fn delete(shard: &Rc<SessionShard>, conn: &Conn, name: &str) -> Answer {
    let subjects = match shard.streams.streams.borrow().config(name) {
        Some(config) => config.subjects.clone(),
        None => return Err(ApiError::stream_not_found()),
    };
    may_write(shard, conn, &subjects)?;
    let body = serde_json::to_vec(&api::StreamName {
        name: name.to_owned(),
    })
    .map_err(|e| ApiError::server_error(e.to_string()))?;
    let _: serde_json::Value = native_call(shard, api::STREAM_REMOVE, &body).await?;
    Ok(json::response("stream_delete", &Success { success: true }))
}

/// STREAM.PURGE: everything, everything below a sequence, or all but the newest few; with a
/// filter, only the subjects it matches (and `keep` counts per subject).
pub async fn purge(shard: &Rc<SessionShard>, conn: &Conn, name: &str, body: &[u8]) -> Answer {
    let request: PurgeRequest = json::parse_request(body)?;
    let (config, given) = writable(shard, conn, name)?;
    if given.deny_purge {
        return Err(ApiError::new(500, 10066, "stream purge not permitted"));
    }
    // A filter that covers the whole stream is a purge of the whole stream.
    let filter = request
        .filter
        .filter(|f| !f.is_empty())
        .filter(|f| f != ">" && !(config.subjects.len() == 1 && config.subjects[0] == *f));
    if let Some(filter) = &filter {
        validate_pattern(filter)
            .map_err(|e| ApiError::bad_request(format!("invalid purge filter: {e}")))?;
    }
    let native = api::StreamPurge {
        name: name.to_owned(),
        filter,
        seq: (request.seq > 0).then_some(request.seq),
        keep: (request.keep > 0).then_some(request.keep),
        below: Vec::new(),
    };
    let body = serde_json::to_vec(&native).map_err(|e| ApiError::server_error(e.to_string()))?;
    let purged: api::Purged = native_call(shard, api::STREAM_PURGE, &body).await?;
    Ok(json::response(
        "stream_purge",
        &PurgeResponse {
            success: true,
            purged: purged.purged,
        },
    ))
}

/// STREAM.MSG.DELETE: one message, by sequence.
pub async fn msg_delete(shard: &Rc<SessionShard>, conn: &Conn, name: &str, body: &[u8]) -> Answer {
    let request: MsgDeleteRequest = json::parse_request(body)?;
    let (config, given) = writable(shard, conn, name)?;
    if given.deny_delete {
        return Err(ApiError::delete_not_permitted());
    }
    let not_found = || ApiError::new(400, 10043, format!("sequence {} not found", request.seq));
    let (partition, offset) = position_of(request.seq, config.partitions).ok_or_else(not_found)?;
    let location = api::MessageLocation {
        name: name.to_owned(),
        partition,
        offset,
        last_by_subject: None,
    };
    let body = serde_json::to_vec(&location).map_err(|e| ApiError::server_error(e.to_string()))?;
    match native_call::<serde_json::Value>(shard, api::STREAM_DELETE_MESSAGE, &body).await {
        Ok(_) => Ok(json::response(
            "stream_msg_delete",
            &Success { success: true },
        )),
        Err(e) if e.err_code == ApiError::stream_not_found().err_code => Err(not_found()),
        Err(e) => Err(e),
    }
}

/// STREAM.NAMES: the names a user may read, a page at a time; `subject` keeps those whose
/// subjects collide with it.
pub fn names(shard: &Rc<SessionShard>, conn: &Conn, body: &[u8]) -> Answer {
    let request: ListRequest = json::parse_request(body)?;
    let matching = matching(shard, conn, &request);
    let total = matching.len();
    let page: Vec<String> = matching
        .into_iter()
        .skip(request.offset)
        .take(NAMES_PAGE)
        .map(|s| s.name)
        .collect();
    let names = StreamNames {
        total,
        offset: request.offset,
        limit: NAMES_PAGE,
        streams: (!page.is_empty()).then_some(page),
    };
    Ok(json::response("stream_names", &names))
}

/// STREAM.LIST: the infos of the streams a user may read, a page at a time.
pub async fn list(shard: &Rc<SessionShard>, conn: &Conn, body: &[u8]) -> Answer {
    let request: ListRequest = json::parse_request(body)?;
    let matching = matching(shard, conn, &request);
    let total = matching.len();
    let mut streams = Vec::new();
    for config in matching.into_iter().skip(request.offset).take(LIST_PAGE) {
        match native_info(shard, &config.name).await {
            Ok(info) => streams.push(stream_info(&info, false)),
            // Removed since the names were read.
            Err(e) if e.err_code == ApiError::stream_not_found().err_code => {}
            Err(e) => return Err(e),
        }
    }
    let list = json::StreamList {
        total,
        offset: request.offset,
        limit: LIST_PAGE,
        streams,
    };
    Ok(json::response("stream_list", &list))
}

/// STREAM.MSG.GET: a message by sequence, as JSON with its headers and data in base64.
pub async fn msg_get(shard: &Rc<SessionShard>, conn: &Conn, name: &str, body: &[u8]) -> Answer {
    let request: MsgGetRequest = json::parse_request(body)?;
    may_read(shard, conn, name)?;
    let (message, seq) = get(shard, name, &request).await?;
    let stored = StoredMsg::new(
        &message.subject,
        seq,
        &message.headers,
        &message.payload,
        message.timestamp_ns,
    );
    Ok(json::response(
        "stream_msg_get",
        &MsgGetResponse { message: stored },
    ))
}

/// DIRECT.GET: a message by sequence, as itself, with headers that say where it is stored.
/// Returns the header block and payload of the answer (a `404` status when there is none).
pub async fn direct_get(
    shard: &Rc<SessionShard>,
    conn: &Conn,
    name: &str,
    last_by_subject: Option<&str>,
    body: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let request = match last_by_subject {
        Some(subject) => MsgGetRequest {
            last_by_subj: Some(subject.to_owned()),
            ..MsgGetRequest::default()
        },
        None if body.trim_ascii().is_empty() => {
            return (status_block(408, "Empty Request"), Vec::new());
        }
        None => match json::parse_request::<MsgGetRequest>(body) {
            Ok(request) => request,
            Err(_) => return (status_block(408, "Malformed Request"), Vec::new()),
        },
    };
    if may_read(shard, conn, name).is_err() {
        return (status_block(404, "Message Not Found"), Vec::new());
    }
    match get(shard, name, &request).await {
        Ok((message, seq)) => {
            let mut headers = HeaderBuilder::from_block(&message.headers);
            headers
                .add(STREAM, name)
                .add(SUBJECT, &message.subject)
                .add_u64(SEQUENCE, seq)
                .add(TIME_STAMP, &format_time_ns(message.timestamp_ns));
            (headers.build(), message.payload)
        }
        Err(_) => (status_block(404, "Message Not Found"), Vec::new()),
    }
}

/// Reads the message a get request names: by sequence, or the last on a subject. Returns it with
/// its sequence.
async fn get(
    shard: &Rc<SessionShard>,
    name: &str,
    request: &MsgGetRequest,
) -> Result<(api::StoredMessage, u64), ApiError> {
    if request.next_by_subj.is_some() {
        return Err(ApiError::bad_request(
            "getting the next message on a subject is not supported by this server",
        ));
    }
    let partitions = shard
        .streams
        .streams
        .borrow()
        .config(name)
        .map(|c| c.partitions)
        .ok_or_else(ApiError::stream_not_found)?;
    let location = match &request.last_by_subj {
        Some(subject) => api::MessageLocation {
            name: name.to_owned(),
            partition: 0,
            offset: 0,
            last_by_subject: Some(subject.clone()),
        },
        None => {
            let Some((partition, offset)) = position_of(request.seq, partitions) else {
                return Err(ApiError::no_message_found());
            };
            api::MessageLocation {
                name: name.to_owned(),
                partition,
                offset,
                last_by_subject: None,
            }
        }
    };
    let body = serde_json::to_vec(&location).map_err(|e| ApiError::server_error(e.to_string()))?;
    let message: api::StoredMessage =
        native_call(shard, api::STREAM_GET, &body)
            .await
            .map_err(|e| {
                if e.err_code == ApiError::stream_not_found().err_code {
                    ApiError::no_message_found()
                } else {
                    e
                }
            })?;
    let seq = seq_of(message.partition, message.offset, partitions).unwrap_or(u64::MAX);
    Ok((message, seq))
}

/// Whether a stream answers DIRECT.GET (it was made with `allow_direct`).
pub fn allows_direct(shard: &SessionShard, name: &str) -> bool {
    shard
        .streams
        .streams
        .borrow()
        .config(name)
        .and_then(|c| c.jetstream.as_ref().map(|j| j.allow_direct))
        .unwrap_or(false)
}

/// The streams a user may read that match a names or list request, by name.
fn matching(shard: &SessionShard, conn: &Conn, request: &ListRequest) -> Vec<StreamConfig> {
    let mut streams: Vec<StreamConfig> = session::readable_streams(shard, conn)
        .into_iter()
        .filter(|s| match &request.subject {
            Some(subject) => s.subjects.iter().any(|p| overlaps(p, subject)),
            None => true,
        })
        .collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    streams
}

/// Reading a stream needs subscribe permission for every subject it captures. An unknown stream
/// is answered as not found. Returns the stream's config.
pub(super) fn may_read(
    shard: &SessionShard,
    conn: &Conn,
    name: &str,
) -> Result<std::sync::Arc<StreamConfig>, ApiError> {
    let Some(config) = shard.streams.streams.borrow().config(name) else {
        return Err(ApiError::stream_not_found());
    };
    if conn.may_read_stream(&config) {
        Ok(config)
    } else {
        Err(permission_denied())
    }
}

/// A stream the connection may change, with its JetStream config.
fn writable(
    shard: &SessionShard,
    conn: &Conn,
    name: &str,
) -> Result<(std::sync::Arc<StreamConfig>, json::StreamConfig), ApiError> {
    let config = shard
        .streams
        .streams
        .borrow()
        .config(name)
        .ok_or_else(ApiError::stream_not_found)?;
    may_write(shard, conn, &config.subjects)?;
    let given = jetstream_config(&config);
    Ok((config, given))
}

/// Creating, changing or removing a stream needs publish and subscribe permission for its
/// subjects.
fn may_write(_shard: &SessionShard, conn: &Conn, subjects: &[String]) -> Result<(), ApiError> {
    let user = conn.user.borrow();
    let Some(user) = user.as_ref() else {
        return Ok(());
    };
    let perms = &user.permissions;
    if subjects
        .iter()
        .all(|p| perms.subscribe.allows_pattern(p) && perms.publish.allows_pattern(p))
    {
        Ok(())
    } else {
        Err(permission_denied())
    }
}

fn permission_denied() -> ApiError {
    ApiError::new(403, 10003, "permission denied for the stream's subjects")
}

/// A native API call, its answer read as `T` or mapped to a JetStream error.
/// Whether another stream captures a subject `config` would capture.
fn overlaps_another(shard: &Rc<SessionShard>, config: &StreamConfig) -> bool {
    let others: Vec<StreamConfig> = shard
        .streams
        .streams
        .borrow()
        .all()
        .into_iter()
        .filter(|s| s.name != config.name)
        .collect();
    config.check_against(&others).is_err()
}

pub(super) async fn native_call<T: serde::de::DeserializeOwned>(
    shard: &Rc<SessionShard>,
    verb: &str,
    body: &[u8],
) -> Result<T, ApiError> {
    let (code, answer) = call_api(&shard.streams, verb, body).await;
    if code == 0 {
        return serde_json::from_slice(&answer).map_err(|e| ApiError::server_error(e.to_string()));
    }
    let message = String::from_utf8_lossy(&answer).into_owned();
    Err(match ErrorCode::from_u16(code) {
        ErrorCode::NotFound => ApiError::stream_not_found(),
        ErrorCode::LimitReached => ApiError::new(400, 10027, message),
        ErrorCode::BadRequest => ApiError::bad_request(message),
        // nats-server's "JetStream system temporarily unavailable".
        ErrorCode::Unavailable => ApiError::new(503, 10008, message),
        _ => ApiError::server_error(message),
    })
}

pub(super) async fn native_info(
    shard: &Rc<SessionShard>,
    name: &str,
) -> Result<api::StreamInfo, ApiError> {
    let body = serde_json::to_vec(&api::StreamName {
        name: name.to_owned(),
    })
    .map_err(|e| ApiError::server_error(e.to_string()))?;
    native_call(shard, api::STREAM_INFO, &body).await
}

/// The JetStream config of a stream: the one a client gave, or, for a stream made with the native
/// API, one that says what it keeps.
pub fn jetstream_config(config: &StreamConfig) -> json::StreamConfig {
    if let Some(given) = &config.jetstream {
        return (**given).clone();
    }
    json::StreamConfig {
        name: config.name.clone(),
        subjects: config.subjects.clone(),
        max_age: config.max_age_secs.map_or(0, |s| {
            i64::try_from(s.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX)
        }),
        max_bytes: config
            .max_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        ..json::StreamConfig::default()
    }
    .effective()
}

/// A native stream info as JetStream's.
fn stream_info(native: &api::StreamInfo, did_create: bool) -> json::StreamInfo {
    let partitions = native.config.partitions;
    let mut first_seq = u64::MAX;
    let mut last_seq = 0;
    for part in &native.partitions {
        // A partition emptied by a purge or retention still counts its sequence on: its first is
        // one past its last, as JetStream reports a purged stream.
        let next = part.last_offset.map_or(part.first_offset, |last| last + 1);
        if next == 0 {
            continue;
        }
        let last = seq_of(part.partition, next - 1, partitions).unwrap_or(u64::MAX);
        let first = seq_of(part.partition, part.first_offset, partitions).unwrap_or(u64::MAX);
        last_seq = last_seq.max(last);
        first_seq = first_seq.min(first);
    }
    if first_seq == u64::MAX {
        first_seq = 0;
    }
    json::StreamInfo {
        config: jetstream_config(&native.config),
        created: format_time_ns(native.config.created_ns),
        state: StreamState {
            messages: native.messages(),
            bytes: native.bytes(),
            first_seq,
            first_ts: ZERO_TIME.to_owned(),
            last_seq,
            last_ts: ZERO_TIME.to_owned(),
            consumer_count: native.consumers.len() as u64,
            ..StreamState::default()
        },
        ts: format_time_ns(sluice_storage::now_ns()),
        did_create,
    }
}
