//! The stream API: requests from clients, answered by shard 0 (which keeps the registry) with help
//! from the shards that own the partitions.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_protocol::op::{ApiReply, Op};
use sluice_protocol::ErrorCode;
use sluice_storage::wake::Latch;

use super::registry::RegistryError;
use super::{apply_snapshot, Partition};
use crate::api::{self, MessageLocation, StreamConfig, StreamInfo, StreamList, StreamName};
use crate::server::core::mesh::{CallItem, PartitionReply, PartitionRequest, StreamItem};
use crate::server::core::shard::Shard;
use crate::server::session::connection::Conn;
use crate::server::ShardId;

/// How long shard 0 waits for another shard to answer about a partition.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Answer = (u16, Vec<u8>);

/// An API request from a connection on this shard: answered here on shard 0, else sent to shard 0.
pub fn handle_api(shard: &Rc<Shard>, conn: &Rc<Conn>, id: u64, verb: &str, body: &[u8]) {
    if let Err(message) = api_allowed(shard, conn, verb, body) {
        crate::server::core::stats::add(&shard.stats.permission_errors, 1);
        let code = ErrorCode::PermissionDenied.as_u16();
        conn.out
            .push(&reply_frame(shard, id, code, message.as_bytes()));
        return;
    }
    if verb == api::STREAM_LIST {
        // Every shard has every stream's configuration: answered here, showing a user only the
        // streams it may read.
        let streams = visible_streams(shard, conn);
        let (code, reply) = match serde_json::to_vec(&api::StreamList { streams }) {
            Ok(body) => (0, body),
            Err(e) => (ErrorCode::BadRequest.as_u16(), e.to_string().into_bytes()),
        };
        conn.out.push(&reply_frame(shard, id, code, &reply));
        return;
    }
    if verb == api::CONSUMER_ATTACH {
        // Attaching is about this connection: the shard that holds it does it, and answers once
        // every partition owner has the consumer durably.
        let joins = parse::<api::ConsumerConfig>(body)
            .and_then(|config| super::attach_consumer(shard, conn, config));
        let (shard, conn) = (shard.clone(), conn.clone());
        glommio::spawn_local(async move {
            let result = match joins {
                Ok(joins) => joins.wait(&shard).await,
                Err(e) => Err(e),
            };
            let (code, reply) = match result {
                Ok(()) => (0, b"{}".to_vec()),
                Err((code, message)) => (code.as_u16(), message.into_bytes()),
            };
            conn.out.push(&reply_frame(&shard, id, code, &reply));
        })
        .detach();
        return;
    }
    if shard.id.0 == 0 {
        let shard = shard.clone();
        let conn = conn.clone();
        let (verb, body) = (verb.to_string(), body.to_vec());
        glommio::spawn_local(async move {
            let (code, reply) = handle_api_here(&shard, &verb, &body).await;
            conn.out.push(&reply_frame(&shard, id, code, &reply));
        })
        .detach();
    } else {
        shard.push_to(
            ShardId(0),
            CallItem::Api {
                conn: conn.id,
                id,
                verb: verb.to_string(),
                body: body.to_vec(),
            },
        );
    }
}

/// The streams a connection may see: all of them without users, else those whose every subject
/// its user may subscribe to.
fn visible_streams(shard: &Shard, conn: &Conn) -> Vec<api::StreamConfig> {
    let all = shard.streams.borrow().all();
    let user = conn.user.borrow();
    match user.as_ref() {
        None => all,
        Some(user) => all
            .into_iter()
            .filter(|s| {
                s.subjects
                    .iter()
                    .all(|p| user.permissions.subscribe.allows_pattern(p))
            })
            .collect(),
    }
}

/// A user reaches a stream's messages through the API only within its permissions: reading a
/// stream (info, get, consumers) needs subscribe permission for every subject it captures; creating
/// or removing one needs publish and subscribe permission for them.
fn api_allowed(shard: &Shard, conn: &Conn, verb: &str, body: &[u8]) -> Result<(), String> {
    let user = conn.user.borrow();
    let Some(user) = user.as_ref() else {
        return Ok(());
    };
    if verb == api::STREAM_LIST {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| value[k].as_str().map(str::to_string);
    let (name, subjects) = if verb == api::STREAM_ADD {
        let subjects = value["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (text("name").unwrap_or_default(), subjects)
    } else {
        let name = if verb.starts_with("consumer.") {
            text("stream")
        } else {
            text("name").or_else(|| text("stream"))
        };
        let name = name.unwrap_or_default();
        match shard.streams.borrow().config(&name) {
            Some(config) => (name, config.subjects.clone()),
            // Unknown streams are answered by the API itself.
            None => return Ok(()),
        }
    };
    let writes = verb == api::STREAM_ADD || verb == api::STREAM_REMOVE;
    let perms = &user.permissions;
    let allowed = subjects
        .iter()
        .all(|p| perms.subscribe.allows_pattern(p) && (!writes || perms.publish.allows_pattern(p)));
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "permission denied: {verb} on stream {name:?} needs permission for its subjects {subjects:?}"
        ))
    }
}

/// The `ApiReply` frame; `code` 0 is success.
pub fn reply_frame(shard: &Shard, id: u64, code: u16, body: &[u8]) -> bytes::Bytes {
    shard.encode(&Op::ApiReply(ApiReply { id, code, body }))
}

/// Answers an API request on shard 0: code 0 and a JSON body, or an error code and its message.
pub async fn handle_api_here(shard: &Rc<Shard>, verb: &str, body: &[u8]) -> Answer {
    let result = match verb {
        api::STREAM_ADD => stream_add(shard, body).await,
        api::STREAM_REMOVE => stream_remove(shard, body),
        api::STREAM_LIST => stream_list(shard),
        api::STREAM_INFO => stream_info(shard, body).await,
        api::STREAM_GET => stream_get(shard, body).await,
        api::CONSUMER_INFO => consumer_info(shard, body).await,
        other => Err((ErrorCode::BadRequest, format!("unknown API verb {other:?}"))),
    };
    match result {
        Ok(json) => (0, json),
        Err((code, message)) => (code.as_u16(), message.into_bytes()),
    }
}

type ApiResult = Result<Vec<u8>, (ErrorCode, String)>;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, (ErrorCode, String)> {
    serde_json::from_slice(body).map_err(|e| (ErrorCode::BadRequest, format!("bad request: {e}")))
}

fn json<T: Serialize>(value: &T) -> ApiResult {
    serde_json::to_vec(value).map_err(|e| (ErrorCode::BadRequest, e.to_string()))
}

fn registry_error(e: RegistryError) -> (ErrorCode, String) {
    match e {
        RegistryError::NotFound(_) => (ErrorCode::NotFound, e.to_string()),
        RegistryError::Invalid(_) | RegistryError::Config(_) => {
            (ErrorCode::BadRequest, e.to_string())
        }
        RegistryError::Limit(_) => (ErrorCode::LimitReached, e.to_string()),
        RegistryError::Io { .. } => (ErrorCode::StorageFailed, e.to_string()),
    }
}

/// Sends the registry's streams to every shard and applies them here.
pub fn publish_registry(shard: &Rc<Shard>) {
    let streams: Arc<Vec<StreamConfig>> = Arc::new(
        shard
            .registry
            .borrow()
            .as_ref()
            .map(|r| r.streams().to_vec())
            .unwrap_or_default(),
    );
    shard.broadcast(|| StreamItem::StreamsChanged(streams.clone()));
    apply_snapshot(shard, &streams);
}

/// Tells every shard, and this one, of one stream added: only that stream travels.
fn publish_added(shard: &Rc<Shard>, name: &str) {
    let Some(config) = shard
        .registry
        .borrow()
        .as_ref()
        .and_then(|r| r.get(name).cloned())
    else {
        return;
    };
    let config = Arc::new(config);
    shard.broadcast(|| StreamItem::StreamAdded(config.clone()));
    super::apply_added(shard, &config);
}

async fn stream_add(shard: &Rc<Shard>, body: &[u8]) -> ApiResult {
    let config: StreamConfig = parse(body)?;
    let name = config.name.clone();
    let max = shard.config.streams_max;
    with_registry(shard, |r| {
        if r.get(&config.name).is_none() && r.streams().len() >= max {
            return Err(RegistryError::Limit(format!(
                "the server holds its most streams ({max}, max_streams)"
            )));
        }
        r.add(config)
    })?;
    publish_added(shard, &name);
    tracing::info!(stream = %name, "stream added");
    json(&info(shard, &name).await?)
}

fn stream_remove(shard: &Rc<Shard>, body: &[u8]) -> ApiResult {
    let StreamName { name } = parse(body)?;
    with_registry(shard, |r| r.remove(&name))?;
    let gone: Arc<str> = Arc::from(name.as_str());
    shard.broadcast(|| StreamItem::StreamRemoved(gone.clone()));
    super::apply_removed(shard, &name);
    tracing::info!(stream = %name, "stream removed");
    json(&serde_json::json!({}))
}

fn stream_list(shard: &Rc<Shard>) -> ApiResult {
    let streams = shard
        .registry
        .borrow()
        .as_ref()
        .map(|r| r.streams().to_vec())
        .unwrap_or_default();
    json(&StreamList { streams })
}

async fn stream_info(shard: &Rc<Shard>, body: &[u8]) -> ApiResult {
    let StreamName { name } = parse(body)?;
    json(&info(shard, &name).await?)
}

async fn stream_get(shard: &Rc<Shard>, body: &[u8]) -> ApiResult {
    let at: MessageLocation = parse(body)?;
    let config = config_of(shard, &at.name)?;
    if at.partition >= config.partitions {
        return Err((
            ErrorCode::NotFound,
            format!("stream {} has no partition {}", at.name, at.partition),
        ));
    }
    let request = PartitionRequest::Get {
        stream: at.name.clone(),
        partition: at.partition,
        offset: at.offset,
    };
    match ask(shard, &config, at.partition, request).await? {
        PartitionReply::Get(result) => json(&result?),
        _ => Err((ErrorCode::StorageFailed, "mismatched answer".into())),
    }
}

async fn consumer_info(shard: &Rc<Shard>, body: &[u8]) -> ApiResult {
    let api::ConsumerName { stream, name } = parse(body)?;
    let config = config_of(shard, &stream)?;
    let mut partitions = Vec::new();
    for partition in 0..config.partitions {
        let request = PartitionRequest::ConsumerInfo {
            stream: stream.clone(),
            partition,
            consumer: name.clone(),
        };
        if let PartitionReply::ConsumerInfo(Some(info)) =
            ask(shard, &config, partition, request).await?
        {
            partitions.push(info);
        }
    }
    if partitions.is_empty() {
        return Err((
            ErrorCode::NotFound,
            format!("consumer {name} of {stream} does not exist"),
        ));
    }
    json(&api::ConsumerInfo {
        stream,
        name,
        partitions,
    })
}

fn with_registry<T>(
    shard: &Shard,
    f: impl FnOnce(&mut super::Registry) -> Result<T, RegistryError>,
) -> Result<T, (ErrorCode, String)> {
    let mut registry = shard.registry.borrow_mut();
    let registry = registry.as_mut().ok_or((
        ErrorCode::StorageFailed,
        "the registry is not loaded".to_string(),
    ))?;
    f(registry).map_err(registry_error)
}

fn config_of(shard: &Shard, name: &str) -> Result<StreamConfig, (ErrorCode, String)> {
    shard
        .registry
        .borrow()
        .as_ref()
        .and_then(|r| r.get(name).cloned())
        .ok_or((ErrorCode::NotFound, format!("stream {name} does not exist")))
}

async fn info(shard: &Rc<Shard>, name: &str) -> Result<StreamInfo, (ErrorCode, String)> {
    let config = config_of(shard, name)?;
    let mut partitions = Vec::with_capacity(config.partitions as usize);
    let mut consumers: Vec<api::ConsumerInfo> = Vec::new();
    for partition in 0..config.partitions {
        let request = PartitionRequest::Stats {
            stream: name.to_string(),
            partition,
        };
        match ask(shard, &config, partition, request).await? {
            PartitionReply::Stats(info, consumer_infos) => {
                partitions.push(info);
                for (consumer, info) in consumer_infos {
                    match consumers.iter_mut().find(|c| c.name == consumer) {
                        Some(c) => c.partitions.push(info),
                        None => consumers.push(api::ConsumerInfo {
                            stream: name.to_string(),
                            name: consumer,
                            partitions: vec![info],
                        }),
                    }
                }
            }
            _ => return Err((ErrorCode::StorageFailed, "mismatched answer".into())),
        }
    }
    Ok(StreamInfo {
        config,
        partitions,
        consumers,
    })
}

/// Asks the partition's owner (this shard or another).
async fn ask(
    shard: &Rc<Shard>,
    config: &StreamConfig,
    partition: u32,
    request: PartitionRequest,
) -> Result<PartitionReply, (ErrorCode, String)> {
    let owner = api::shard_for(&config.name, partition, shard.shards as u32);
    ask_shard(shard, ShardId(owner), request).await
}

/// The figures of another shard, for /metrics and /readyz; `None` if it does not answer in time.
pub async fn ask_shard_metrics(
    shard: &Rc<Shard>,
    target: ShardId,
) -> Option<super::metrics::ShardMetrics> {
    match ask_shard(shard, target, PartitionRequest::ShardMetrics).await {
        Ok(PartitionReply::ShardMetrics(m)) => Some(*m),
        _ => None,
    }
}

/// Asks `target` (this shard or another) and waits for the answer.
async fn ask_shard(
    shard: &Rc<Shard>,
    target: ShardId,
    request: PartitionRequest,
) -> Result<PartitionReply, (ErrorCode, String)> {
    let owner = target.0;
    if owner == shard.id.0 {
        return Ok(answer(shard, request).await);
    }
    let slot = Rc::new(CallSlot::default());
    let call = shard.register_call(slot.clone());
    shard.push_to(ShardId(owner), CallItem::Call { call, request });
    let waited = glommio::timer::timeout(CALL_TIMEOUT, async {
        slot.done.wait().await;
        Ok(())
    })
    .await;
    shard.forget_call(call);
    if waited.is_err() {
        return Err((
            ErrorCode::StorageFailed,
            format!("shard {owner} did not answer"),
        ));
    }
    let reply = slot.reply.borrow_mut().take();
    reply.ok_or((
        ErrorCode::StorageFailed,
        format!("shard {owner} did not answer"),
    ))
}

/// A pending question to another shard.
#[derive(Default)]
pub struct CallSlot {
    pub reply: RefCell<Option<PartitionReply>>,
    pub done: Latch,
}

/// Answers a question about a partition this shard owns.
pub async fn answer(shard: &Rc<Shard>, request: PartitionRequest) -> PartitionReply {
    match request {
        PartitionRequest::ShardMetrics => {
            PartitionReply::ShardMetrics(Box::new(super::metrics::snapshot(shard).await))
        }
        PartitionRequest::Stats { stream, partition } => match owned(shard, &stream, partition) {
            Some(part) => PartitionReply::Stats(part.info().await, part.consumer_infos().await),
            None => PartitionReply::Stats(
                crate::api::PartitionInfo {
                    partition,
                    messages: 0,
                    bytes: 0,
                    first_offset: 0,
                    last_offset: None,
                },
                Vec::new(),
            ),
        },
        PartitionRequest::Get {
            stream,
            partition,
            offset,
        } => match owned(shard, &stream, partition) {
            Some(part) => PartitionReply::Get(part.get(offset).await),
            None => PartitionReply::Get(Err((
                ErrorCode::NotFound,
                format!("partition {partition} of {stream} is not here"),
            ))),
        },
        PartitionRequest::ConsumerInfo {
            stream,
            partition,
            consumer,
        } => PartitionReply::ConsumerInfo(match owned(shard, &stream, partition) {
            Some(part) => part.consumer_info(&consumer).await,
            None => None,
        }),
    }
}

fn owned(shard: &Rc<Shard>, stream: &str, partition: u32) -> Option<Rc<Partition>> {
    shard.streams.borrow().owned(stream, partition)
}

/// Answers another shard's question in the background.
pub fn answer_call(shard: &Rc<Shard>, from: ShardId, call: u64, request: PartitionRequest) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let reply = answer(&shard, request).await;
        shard.push_to(from, CallItem::CallReply { call, reply });
    })
    .detach();
}
