//! The stream API: requests from clients, answered by shard 0 (which keeps the registry) with help
//! from the shards that own the partitions.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_protocol::jetstream::seq::seq_of;
use sluice_protocol::op::{ApiReply, Op};
use sluice_protocol::ErrorCode;
use sluice_storage::wake::Latch;

mod cluster;

pub use self::cluster::apply_decided;
use self::cluster::{cluster_info, member_change, placed, replicated_removal, stream_move};
use super::items::{CallItem, PartitionReply, PartitionRequest, PurgeTo, StreamItem};
use super::registry::{self, RegistryError};
use super::{apply_snapshot, Partition, StreamShard};
use crate::api::{self, MessageLocation, StreamConfig, StreamInfo, StreamList, StreamName};
use crate::server::ShardId;

/// How long shard 0 waits for another shard to answer about a partition.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Answer = (u16, Vec<u8>);

/// Sends an API request from connection `conn` of this shard to shard 0, whose answer comes back
/// as a `CallItem::ApiReply` and is written to the connection's output.
pub fn send_api(shard: &StreamShard, conn: u64, id: u64, verb: &str, body: &[u8]) {
    shard.push_to(
        ShardId(0),
        CallItem::Api {
            conn,
            id,
            verb: verb.to_string(),
            body: body.to_vec(),
        },
    );
}

/// The `ApiReply` frame; `code` 0 is success.
pub fn reply_frame(shard: &StreamShard, id: u64, code: u16, body: &[u8]) -> bytes::Bytes {
    shard
        .core
        .encode(&Op::ApiReply(ApiReply { id, code, body }))
}

/// Answers an API request on shard 0: code 0 and a JSON body, or an error code and its message.
/// On a node in a cluster, changes of the registry are decided by the meta group first, and
/// applied by every node in its order (`apply_decided`); the answer is this node's.
pub async fn handle_api_here(shard: &Rc<StreamShard>, verb: &str, body: &[u8]) -> Answer {
    if matches!(verb, api::CLUSTER_ADD | api::CLUSTER_REMOVE) {
        return match member_change(shard, verb, body).await {
            Ok(answer) => answer,
            Err((code, message)) => (code.as_u16(), message.into_bytes()),
        };
    }
    if matches!(
        verb,
        api::STREAM_ADD | api::STREAM_UPDATE | api::STREAM_REMOVE | api::STREAM_MOVE
    ) {
        if let Some(cluster) = shard.cluster.get() {
            if verb == api::STREAM_ADD {
                // Where a new stream's copies live is decided here, once, and travels with the
                // change: every node applies the same placement, whatever the members are when
                // it applies it (a node that joins later replays the change).
                let placed = placed(shard, body).map(|config| serde_json::to_vec(&config));
                return match placed {
                    Ok(Ok(body)) => cluster.propose(verb, &body).await,
                    Ok(Err(e)) => (ErrorCode::BadRequest.as_u16(), e.to_string().into_bytes()),
                    Err((code, message)) => (code.as_u16(), message.into_bytes()),
                };
            }
            return cluster.propose(verb, body).await;
        }
    }
    if let Some(cluster) = shard.cluster.get() {
        if let Some(body) = replicated_removal(shard, verb, body).await {
            return cluster.propose(verb, &body).await;
        }
    }
    handle_here(shard, verb, body).await
}

/// Answers an API request from this node's registry and partitions alone.
async fn handle_here(shard: &Rc<StreamShard>, verb: &str, body: &[u8]) -> Answer {
    let result = match verb {
        api::STREAM_ADD => stream_add(shard, body).await,
        api::STREAM_UPDATE => stream_update(shard, body).await,
        api::STREAM_MOVE => stream_move(shard, body).await,
        api::STREAM_PURGE => stream_purge(shard, body).await,
        api::STREAM_DELETE_MESSAGE => stream_delete_message(shard, body).await,
        api::CONSUMER_DELETE => consumer_delete(shard, body).await,
        api::STREAM_REMOVE => stream_remove(shard, body).await,
        api::STREAM_LIST => stream_list(shard),
        api::STREAM_INFO => stream_info(shard, body).await,
        api::STREAM_GET => stream_get(shard, body).await,
        api::CONSUMER_INFO => consumer_info(shard, body).await,
        api::CLUSTER_INFO => cluster_info(shard).await,
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
pub fn publish_registry(shard: &Rc<StreamShard>) {
    let streams: Arc<Vec<StreamConfig>> = Arc::new(
        shard
            .registry
            .borrow()
            .as_ref()
            .map(|r| r.streams().cloned().collect())
            .unwrap_or_default(),
    );
    shard.broadcast(|| StreamItem::StreamsChanged(streams.clone()));
    apply_snapshot(shard, &streams);
}

/// Tells every shard, and this one, of one stream added: only that stream travels.
fn publish_added(shard: &Rc<StreamShard>, name: &str) {
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

async fn stream_add(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let mut config: StreamConfig = parse(body)?;
    if shard.streams.borrow().config(&config.name).is_some() {
        keep_placement(shard, &mut config)?;
    } else if shard.cluster.get().is_none() || config.placement.is_empty() {
        // Decided when the change was asked for, if it went through the meta group.
        super::replica::place(shard, &mut config)?;
    }
    let name = config.name.clone();
    let partitions_max = shard.core.config.partitions_max;
    if config.partitions > partitions_max {
        return Err((
            ErrorCode::LimitReached,
            format!(
                "stream {name}: {} partitions, more than a stream may have ({partitions_max}, \
                 max_partitions)",
                config.partitions
            ),
        ));
    }
    let max = shard.core.config.streams_max;
    let mut created = None;
    let ticket = with_registry(shard, |r| {
        let new = r.get(&config.name).is_none();
        if new && r.len() >= max {
            return Err(RegistryError::Limit(format!(
                "the server holds its most streams ({max}, max_streams)"
            )));
        }
        // A new stream of its own holds nothing yet: its info is known without opening its
        // partitions, which then open on first use (a hundred thousand added streams need no
        // files until they are written). A replicated one opens them to start its groups.
        if new && !config.is_replicated() {
            created = Some(config.clone());
        }
        r.add(config)
    })?;
    registry::durable(shard, ticket)
        .await
        .map_err(registry_error)?;
    publish_added(shard, &name);
    tracing::info!(stream = %name, "stream added");
    match created {
        Some(config) => json(&empty_info(config)),
        None => json(&info(shard, &name).await?),
    }
}

/// The info of a stream that holds nothing yet.
fn empty_info(config: StreamConfig) -> StreamInfo {
    let partitions = (0..config.partitions)
        .map(|partition| api::PartitionInfo {
            partition,
            messages: 0,
            bytes: 0,
            first_offset: 0,
            last_offset: None,
        })
        .collect();
    StreamInfo {
        config,
        partitions,
        consumers: Vec::new(),
    }
}

async fn stream_update(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let mut config: StreamConfig = parse(body)?;
    keep_placement(shard, &mut config)?;
    let name = config.name.clone();
    reconfigure(shard, config).await?;
    tracing::info!(stream = %name, "stream configured again");
    json(&info(shard, &name).await?)
}

/// Changes a stream in the registry, durably, and tells every shard.
async fn reconfigure(
    shard: &Rc<StreamShard>,
    config: StreamConfig,
) -> Result<(), (ErrorCode, String)> {
    let name = config.name.clone();
    let ticket = with_registry(shard, |r| r.update(config))?;
    registry::durable(shard, ticket)
        .await
        .map_err(registry_error)?;
    publish_added(shard, &name);
    Ok(())
}

/// A stream configured again keeps its replicas where they are; their number cannot change.
fn keep_placement(
    shard: &StreamShard,
    config: &mut StreamConfig,
) -> Result<(), (ErrorCode, String)> {
    let Some(existing) = shard.streams.borrow().config(&config.name) else {
        return Ok(()); // The registry refuses an update of a stream it does not hold.
    };
    if existing.replicas != config.replicas {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "stream {}: its replicas cannot change ({} now, {} asked)",
                config.name, existing.replicas, config.replicas
            ),
        ));
    }
    config.placement = existing.placement.clone();
    Ok(())
}

async fn stream_purge(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let request: api::StreamPurge = parse(body)?;
    let config = config_of(shard, &request.name)?;
    let mut purged = 0;
    for partition in 0..config.partitions {
        // The first offset of this partition whose stream sequence is at or past `seq`.
        let below = |seq: u64| {
            seq.saturating_sub(1 + u64::from(partition))
                .div_ceil(u64::from(config.partitions))
        };
        let decided = request.below.get(partition as usize).copied();
        let to = match (&request.filter, request.seq, request.keep) {
            _ if !request.below.is_empty() => PurgeTo::Below(decided.unwrap_or(0)),
            (Some(filter), seq, keep) => PurgeTo::Subjects {
                filter: filter.clone(),
                keep: keep.unwrap_or(0),
                below: seq.map(below),
            },
            (None, _, Some(keep)) => PurgeTo::Keep(keep),
            (None, Some(seq), None) => PurgeTo::Below(below(seq)),
            (None, None, None) => PurgeTo::All,
        };
        let request = PartitionRequest::Purge {
            stream: request.name.clone(),
            partition,
            to,
        };
        match ask(shard, &config, partition, request).await? {
            PartitionReply::Purged(result) => purged += result?,
            _ => return Err((ErrorCode::StorageFailed, "mismatched answer".into())),
        }
    }
    tracing::info!(stream = %request.name, purged, "stream purged");
    json(&api::Purged { purged })
}

async fn consumer_delete(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let api::ConsumerName { stream, name } = parse(body)?;
    let config = config_of(shard, &stream)?;
    let mut found = false;
    for partition in 0..config.partitions {
        let request = PartitionRequest::ConsumerDelete {
            stream: stream.clone(),
            partition,
            consumer: name.clone(),
        };
        if let PartitionReply::Deleted(Ok(true)) = ask(shard, &config, partition, request).await? {
            found = true;
        }
    }
    if !found {
        return Err((
            ErrorCode::NotFound,
            format!("consumer {name} of {stream} does not exist"),
        ));
    }
    tracing::info!(stream = %stream, consumer = %name, "consumer deleted");
    json(&serde_json::json!({}))
}

/// Refuses a message location past the stream's partitions.
fn has_partition(config: &StreamConfig, at: &MessageLocation) -> Result<(), (ErrorCode, String)> {
    if at.partition >= config.partitions {
        return Err((
            ErrorCode::NotFound,
            format!("stream {} has no partition {}", at.name, at.partition),
        ));
    }
    Ok(())
}

async fn stream_delete_message(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let at: MessageLocation = parse(body)?;
    let config = config_of(shard, &at.name)?;
    has_partition(&config, &at)?;
    let request = PartitionRequest::DeleteMessage {
        stream: at.name.clone(),
        partition: at.partition,
        offset: at.offset,
    };
    match ask(shard, &config, at.partition, request).await? {
        PartitionReply::Deleted(Ok(true)) => json(&serde_json::json!({})),
        PartitionReply::Deleted(Ok(false)) => Err((
            ErrorCode::NotFound,
            format!(
                "no message at offset {} of partition {}",
                at.offset, at.partition
            ),
        )),
        PartitionReply::Deleted(Err(e)) => Err(e),
        _ => Err((ErrorCode::StorageFailed, "mismatched answer".into())),
    }
}

async fn stream_remove(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let StreamName { name } = parse(body)?;
    let ticket = with_registry(shard, |r| r.remove(&name))?;
    registry::durable(shard, ticket)
        .await
        .map_err(registry_error)?;
    let gone: Arc<str> = Arc::from(name.as_str());
    shard.broadcast(|| StreamItem::StreamRemoved(gone.clone()));
    super::apply_removed(shard, &name);
    tracing::info!(stream = %name, "stream removed");
    json(&serde_json::json!({}))
}

fn stream_list(shard: &Rc<StreamShard>) -> ApiResult {
    let streams = shard
        .registry
        .borrow()
        .as_ref()
        .map(|r| r.streams().cloned().collect())
        .unwrap_or_default();
    json(&StreamList { streams })
}

async fn stream_info(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let StreamName { name } = parse(body)?;
    json(&info(shard, &name).await?)
}

async fn stream_get(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
    let at: MessageLocation = parse(body)?;
    let config = config_of(shard, &at.name)?;
    if let Some(subject) = at.last_by_subject {
        let partition = api::partition_for(&subject, config.partitions);
        let request = PartitionRequest::GetLast {
            stream: at.name.clone(),
            partition,
            subject,
        };
        return match ask(shard, &config, partition, request).await? {
            PartitionReply::Get(result) => json(&result?),
            _ => Err((ErrorCode::StorageFailed, "mismatched answer".into())),
        };
    }
    has_partition(&config, &at)?;
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

async fn consumer_info(shard: &Rc<StreamShard>, body: &[u8]) -> ApiResult {
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
        if let Some(group) = kafka_group_info(shard, &config, &name).await? {
            return json(&group);
        }
        return Err((
            ErrorCode::NotFound,
            format!("consumer {name} of {stream} does not exist"),
        ));
    }
    json(&api::ConsumerInfo {
        stream,
        name,
        partitions,
        kafka_group: false,
    })
}

/// A Kafka consumer group's progress on a stream, as a consumer's: its committed offset is the
/// partition's ack floor, and what lies beyond it (the group's lag) is pending. `None` if the
/// group committed nothing for the stream's topic.
async fn kafka_group_info(
    shard: &Rc<StreamShard>,
    config: &StreamConfig,
    group: &str,
) -> Result<Option<api::ConsumerInfo>, (ErrorCode, String)> {
    let call = super::groups::GroupCall::Fetch {
        group: group.to_string(),
        topics: None,
    };
    let Ok(super::groups::GroupAnswer::Fetched(committed)) = super::groups::call(shard, call).await
    else {
        return Ok(None);
    };
    let topic = config.name.replace('~', ".");
    let mut partitions = Vec::new();
    for (_, partition, committed) in committed
        .into_iter()
        .filter(|(t, _, _)| *t == topic || *t == config.name)
    {
        let (Ok(partition), Some(committed)) = (u32::try_from(partition), committed) else {
            continue;
        };
        if partition >= config.partitions {
            continue;
        }
        let request = PartitionRequest::Stats {
            stream: config.name.clone(),
            partition,
        };
        let PartitionReply::Stats(info, _) = ask(shard, config, partition, request).await? else {
            return Err((ErrorCode::StorageFailed, "mismatched answer".into()));
        };
        let next = info.last_offset.map_or(info.first_offset, |last| last + 1);
        let floor = u64::try_from(committed.offset).unwrap_or(0);
        partitions.push(api::ConsumerPartitionInfo {
            partition,
            pending: next.saturating_sub(floor),
            ack_pending: 0,
            redelivered: 0,
            ack_floor: floor,
            dead_lettered: 0,
            next: floor,
            delivered_seq: 0,
            config: None,
        });
    }
    if partitions.is_empty() {
        return Ok(None);
    }
    partitions.sort_by_key(|p| p.partition);
    Ok(Some(api::ConsumerInfo {
        stream: config.name.clone(),
        name: group.to_string(),
        partitions,
        kafka_group: true,
    }))
}

fn with_registry<T>(
    shard: &StreamShard,
    f: impl FnOnce(&mut super::Registry) -> Result<T, RegistryError>,
) -> Result<T, (ErrorCode, String)> {
    let mut registry = shard.registry.borrow_mut();
    let registry = registry.as_mut().ok_or((
        ErrorCode::StorageFailed,
        "the registry is not loaded".to_string(),
    ))?;
    f(registry).map_err(registry_error)
}

fn config_of(shard: &StreamShard, name: &str) -> Result<StreamConfig, (ErrorCode, String)> {
    shard
        .registry
        .borrow()
        .as_ref()
        .and_then(|r| r.get(name).cloned())
        .ok_or((ErrorCode::NotFound, format!("stream {name} does not exist")))
}

async fn info(shard: &Rc<StreamShard>, name: &str) -> Result<StreamInfo, (ErrorCode, String)> {
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
                            kafka_group: false,
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
    shard: &Rc<StreamShard>,
    config: &StreamConfig,
    partition: u32,
    request: PartitionRequest,
) -> Result<PartitionReply, (ErrorCode, String)> {
    let owner = api::shard_for(&config.name, partition, shard.core.shards as u32);
    ask_shard(shard, ShardId(owner), request).await
}

/// The figures of another shard, for /metrics and /readyz; `None` if it does not answer in time.
pub async fn ask_shard_metrics(
    shard: &Rc<StreamShard>,
    target: ShardId,
) -> Option<super::metrics::ShardMetrics> {
    match ask_shard(shard, target, PartitionRequest::ShardMetrics).await {
        Ok(PartitionReply::ShardMetrics(m)) => Some(*m),
        _ => None,
    }
}

/// Asks `target` (this shard or another) and waits for the answer.
async fn ask_shard(
    shard: &Rc<StreamShard>,
    target: ShardId,
    request: PartitionRequest,
) -> Result<PartitionReply, (ErrorCode, String)> {
    ask_shard_within(shard, target, request, CALL_TIMEOUT).await
}

/// Asks `target` (this shard or another) and waits for the answer, at most `within`.
pub async fn ask_shard_within(
    shard: &Rc<StreamShard>,
    target: ShardId,
    request: PartitionRequest,
    within: Duration,
) -> Result<PartitionReply, (ErrorCode, String)> {
    let owner = target.0;
    if owner == shard.core.id.0 {
        return Ok(answer(shard, request).await);
    }
    let slot = Rc::new(CallSlot::default());
    let call = shard.register_call(slot.clone());
    shard.push_to(ShardId(owner), CallItem::Call { call, request });
    let reply = shard.await_call(&slot, call, within).await;
    reply.ok_or((
        ErrorCode::StorageFailed,
        format!("shard {owner} did not answer"),
    ))
}

/// Calls the stream API from any shard: answered here on shard 0, else asked of shard 0.
pub async fn call_api(shard: &Rc<StreamShard>, verb: &str, body: &[u8]) -> Answer {
    if shard.core.id.0 == 0 {
        return handle_api_here(shard, verb, body).await;
    }
    let request = PartitionRequest::Api {
        verb: verb.to_owned(),
        body: body.to_vec(),
    };
    match ask_shard(shard, ShardId(0), request).await {
        Ok(PartitionReply::Api(code, body)) => (code, body),
        Ok(_) => (
            ErrorCode::StorageFailed.as_u16(),
            b"mismatched answer".to_vec(),
        ),
        Err((code, message)) => (code.as_u16(), message.into_bytes()),
    }
}

/// A pending question to another shard.
#[derive(Default)]
pub struct CallSlot {
    pub reply: RefCell<Option<PartitionReply>>,
    pub done: Latch,
}

/// Answers a question about a partition this shard owns.
pub async fn answer(shard: &Rc<StreamShard>, request: PartitionRequest) -> PartitionReply {
    match request {
        PartitionRequest::Api { verb, body } => {
            // Boxed: the API asks partitions in turn, through this function.
            let (code, body) = Box::pin(handle_api_here(shard, &verb, &body)).await;
            PartitionReply::Api(code, body)
        }
        PartitionRequest::ShardMetrics => {
            PartitionReply::ShardMetrics(Box::new(super::metrics::snapshot(shard).await))
        }
        PartitionRequest::Read {
            stream,
            partition,
            offset,
            max_bytes,
            wait_ms,
        } => PartitionReply::Read(match owned(shard, &stream, partition) {
            Some(part) => part.kafka_read(offset, max_bytes, wait_ms).await,
            None => Err(super::kafka::ReadError::NotHere),
        }),
        PartitionRequest::Group(call) => {
            PartitionReply::Group(super::groups::answer_here(shard, call).await)
        }
        PartitionRequest::Offsets {
            stream,
            partition,
            time_ms,
        } => PartitionReply::Offsets(match owned(shard, &stream, partition) {
            Some(part) => part.kafka_offsets(time_ms).await,
            None => Err((
                ErrorCode::NotFound,
                format!("partition {partition} of {stream} is not here"),
            )),
        }),
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
        PartitionRequest::Purge {
            stream,
            partition,
            to,
        } => match owned(shard, &stream, partition) {
            Some(part) => PartitionReply::Purged(part.purge(to).await),
            None => PartitionReply::Purged(Ok(0)),
        },
        PartitionRequest::ConsumerDelete {
            stream,
            partition,
            consumer,
        } => match owned(shard, &stream, partition) {
            Some(part) => PartitionReply::Deleted(Ok(part.delete_consumer(shard, &consumer).await)),
            None => PartitionReply::Deleted(Ok(false)),
        },
        PartitionRequest::DeleteMessage {
            stream,
            partition,
            offset,
        } => match owned(shard, &stream, partition) {
            Some(part) => PartitionReply::Deleted(part.delete_message(offset).await),
            None => PartitionReply::Deleted(Ok(false)),
        },
        PartitionRequest::GetLast {
            stream,
            partition,
            subject,
        } => match owned(shard, &stream, partition) {
            Some(part) => match part.last_of_subject(&subject).await {
                Some(offset) => PartitionReply::Get(part.get(offset).await),
                None => PartitionReply::Get(Err((
                    ErrorCode::NotFound,
                    format!("no message on {subject} in {stream}"),
                ))),
            },
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
        PartitionRequest::AckKept {
            stream,
            partition,
            consumer,
            within,
        } => PartitionReply::AckKept(match owned(shard, &stream, partition) {
            Some(part) => part.consumer_ack_kept(&consumer, within).await,
            None => true,
        }),
    }
}

fn owned(shard: &Rc<StreamShard>, stream: &str, partition: u32) -> Option<Rc<Partition>> {
    shard.streams.borrow().owned(stream, partition)
}

/// Answers another shard's question in the background.
pub fn answer_call(shard: &Rc<StreamShard>, from: ShardId, call: u64, request: PartitionRequest) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let reply = answer(&shard, request).await;
        shard.push_to(from, CallItem::CallReply { call, reply });
    })
    .detach();
}
