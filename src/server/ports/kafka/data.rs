//! Produce, Fetch, ListOffsets and InitProducerId: record batches in and out of the logs.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use sluice_protocol::kafka::batch;
use sluice_protocol::kafka::code;
use sluice_protocol::kafka::codec::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use sluice_protocol::kafka::codec::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::kafka::codec::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::kafka::codec::messages::{
    BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName,
};
use sluice_protocol::kafka::codec::protocol::StrBytes;
use sluice_protocol::{ArchivedOp, Frame};
use sluice_storage::wake::Event;
use sluice_storage::Record;

use super::topics::stream_of;
use super::KafkaConn;
use crate::server::streams::kafka::{self as store, ReadError};

/// Longest a fetch waits for data, whatever it asks (Kafka clients ask 100 ms to 500 ms).
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// Most bytes one fetch answer carries, whatever it asks (Kafka's default `fetch.max.bytes`).
const FETCH_BYTES_MAX: usize = 50 * 1024 * 1024;

/// A batch being stored: its first offset (none for acks=0), or a Kafka error.
type Appending = Pin<Box<dyn Future<Output = Result<Option<u64>, (i16, String)>>>>;

/// A partition of a produce: answered already, or waiting for its batches to be stored.
enum Slot {
    Answered(PartitionProduceResponse),
    Appending { index: i32, appends: Vec<Appending> },
}

/// Produce: every batch is checked and queued for its partition now, in request order; the
/// answer comes once each is stored (durable under the fsync policy), with the first offset.
pub fn produce(
    conn: &Rc<KafkaConn>,
    req: ProduceRequest,
) -> impl Future<Output = ProduceResponse> + 'static {
    let streams = conn.shard.streams.clone();
    let ack = match req.acks {
        0 => store::Ack::None,
        1 => store::Ack::Ordered,
        _ => store::Ack::Durable,
    };
    let batch_bytes_max = conn.shard.core.config.payload_bytes_max as usize;
    let mut topics: Vec<(TopicName, Vec<Slot>)> = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = t.name.0.to_string();
        let config = stream_of(conn, &name);
        let mut slots = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let refuse = |error: i16, why: String| {
                Slot::Answered(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(error)
                        .with_error_message(Some(StrBytes::from_string(why))),
                )
            };
            let Some(config) = config
                .clone()
                .filter(|c| (p.index as u32) < c.partitions && p.index >= 0)
            else {
                slots.push(refuse(
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no partition {} of topic {name}", p.index),
                ));
                continue;
            };
            if !conn.may_write(&config) {
                slots.push(refuse(
                    code::TOPIC_AUTHORIZATION_FAILED,
                    format!("not permitted to write to topic {name}"),
                ));
                continue;
            };
            let records = p.records.unwrap_or_default();
            let batches = match batch::split(&records, batch_bytes_max) {
                Ok(batches) => batches,
                Err(e) => {
                    tracing::debug!(topic = %name, partition = p.index, error = %e, "kafka batch refused");
                    slots.push(refuse(e.code(), e.to_string()));
                    continue;
                }
            };
            let appends = batches
                .into_iter()
                .map(|(bytes, header)| {
                    Box::pin(store::append_batch(
                        &streams,
                        config.clone(),
                        p.index as u32,
                        bytes,
                        header.count(),
                        ack,
                    )) as Appending
                })
                .collect();
            slots.push(Slot::Appending {
                index: p.index,
                appends,
            });
        }
        topics.push((t.name, slots));
    }
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, slots) in topics {
            let mut partitions = Vec::with_capacity(slots.len());
            for slot in slots {
                let response = match slot {
                    Slot::Answered(response) => response,
                    Slot::Appending { index, appends } => {
                        let mut first = None;
                        let mut failed = None;
                        for append in appends {
                            match append.await {
                                Ok(offset) => {
                                    first = first.or(offset);
                                }
                                Err(refused) => failed = failed.or(Some(refused)),
                            }
                        }
                        match failed {
                            Some((error, why)) => PartitionProduceResponse::default()
                                .with_index(index)
                                .with_error_code(error)
                                .with_error_message(Some(StrBytes::from_string(why))),
                            None => PartitionProduceResponse::default()
                                .with_index(index)
                                .with_base_offset(first.map_or(-1, |o| o as i64))
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(0),
                        }
                    }
                };
                partitions.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partitions),
            );
        }
        ProduceResponse::default().with_responses(responses)
    }
}

/// One partition a fetch asks for.
struct Wanted {
    topic: usize,
    /// The stream, if the topic and the partition exist.
    stream: Option<String>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// Fetch: stored batches from each offset asked for, re-based; if fewer than `min_bytes` are
/// there, waits up to `max_wait_ms` for any partition asked for to get more.
pub async fn fetch(conn: &Rc<KafkaConn>, _version: i16, req: FetchRequest) -> FetchResponse {
    let mut names = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    for (i, t) in req.topics.into_iter().enumerate() {
        let name = t.topic.0.to_string();
        let config = stream_of(conn, &name).filter(|c| conn.may_read(c));
        for p in t.partitions {
            let stream = config
                .as_ref()
                .filter(|c| p.partition >= 0 && (p.partition as u32) < c.partitions)
                .map(|c| c.name.clone());
            wanted.push(Wanted {
                topic: i,
                stream,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            });
        }
        names.push(t.topic);
    }
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(FETCH_BYTES_MAX)
        .clamp(1, FETCH_BYTES_MAX);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let wait =
        Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let mut answers = read_all(conn, &wanted, max_bytes).await;
    let got: usize = answers.iter().map(answer_bytes).sum();
    if got < min_bytes.max(1) && !wait.is_zero() && !wanted.is_empty() {
        wait_any(conn, &wanted, wait).await;
        answers = read_all(conn, &wanted, max_bytes).await;
    }
    let mut topics: Vec<FetchableTopicResponse> = names
        .into_iter()
        .map(|name| FetchableTopicResponse::default().with_topic(name))
        .collect();
    for (w, answer) in wanted.iter().zip(answers) {
        topics[w.topic].partitions.push(answer);
    }
    FetchResponse::default().with_responses(topics)
}

fn answer_bytes(p: &PartitionData) -> usize {
    p.records.as_ref().map_or(0, |r| r.len())
}

/// Reads every partition asked for, at once, within the answer's byte budget.
async fn read_all(conn: &Rc<KafkaConn>, wanted: &[Wanted], max_bytes: usize) -> Vec<PartitionData> {
    let mut out = Vec::with_capacity(wanted.len());
    let mut left = max_bytes;
    for w in wanted {
        let budget = w.max_bytes.min(left);
        let answer = read_one(conn, w, budget, 0).await;
        left = left.saturating_sub(answer_bytes(&answer));
        out.push(answer);
    }
    out
}

async fn read_one(conn: &Rc<KafkaConn>, w: &Wanted, budget: usize, wait_ms: u64) -> PartitionData {
    let data = PartitionData::default().with_partition_index(w.partition);
    let Some(stream) = &w.stream else {
        return data.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let Ok(offset) = u64::try_from(w.offset) else {
        return data.with_error_code(code::OFFSET_OUT_OF_RANGE);
    };
    let read = store::read(
        &conn.shard.streams,
        stream,
        w.partition as u32,
        offset,
        budget.max(1),
        wait_ms,
    )
    .await;
    match read {
        Ok(read) => {
            let mut records = BytesMut::new();
            for record in &read.records {
                if !records.is_empty() && records.len() + record.body.len() > budget {
                    break;
                }
                put_record(&mut records, record);
            }
            let next = read.next_offset as i64;
            data.with_high_watermark(next)
                .with_last_stable_offset(next)
                .with_log_start_offset(read.first_offset as i64)
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(records.freeze()))
        }
        Err(ReadError::OutOfRange { first, next }) => data
            .with_error_code(code::OFFSET_OUT_OF_RANGE)
            .with_high_watermark(next as i64)
            .with_last_stable_offset(next as i64)
            .with_log_start_offset(first as i64),
        Err(ReadError::NotHere) => data.with_error_code(code::NOT_LEADER_OR_FOLLOWER),
        Err(ReadError::Storage(why)) => {
            tracing::warn!(stream = %stream, partition = w.partition, %why, "kafka fetch failed");
            data.with_error_code(code::UNKNOWN_SERVER_ERROR)
        }
    }
}

/// Waits until any partition asked for has a record past its offset, or `wait` has passed.
async fn wait_any(conn: &Rc<KafkaConn>, wanted: &[Wanted], wait: Duration) {
    let arrived = Rc::new(Event::default());
    let done = Rc::new(Cell::new(false));
    let mut waiting = Vec::with_capacity(wanted.len());
    for w in wanted {
        let (Some(stream), Ok(offset)) = (w.stream.clone(), u64::try_from(w.offset)) else {
            continue;
        };
        let (conn, arrived, done, partition) =
            (conn.clone(), arrived.clone(), done.clone(), w.partition);
        let wait_ms = wait.as_millis() as u64;
        waiting.push(glommio::spawn_local(async move {
            let read = store::read(
                &conn.shard.streams,
                &stream,
                partition as u32,
                offset,
                1,
                wait_ms,
            )
            .await;
            if read.map_or(true, |r| !r.records.is_empty()) {
                done.set(true);
                arrived.notify_all();
            }
        }));
    }
    let _ = glommio::timer::timeout(wait, async {
        arrived.wait_until(|| done.get()).await;
        Ok(())
    })
    .await;
    drop(waiting);
}

/// Appends a stored record to a fetch answer as Kafka record batches: a stored batch re-based;
/// a message another port stored, as a one-record batch.
fn put_record(out: &mut BytesMut, record: &Record) {
    if record.count > 1 || batch::is_batch(&record.body) {
        batch::put_rebased(out, &record.body, record.offset);
        return;
    }
    let Ok(frame) = Frame::check(record.body.clone(), u32::MAX) else {
        return;
    };
    let ArchivedOp::Pub(publish) = frame.op() else {
        return;
    };
    let headers = nats_headers(publish.headers());
    let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, *v)).collect();
    let timestamp_ms = (record.timestamp_ns / 1_000_000) as i64;
    let single = batch::single(timestamp_ms, None, publish.payload(), &pairs);
    batch::put_rebased(out, &single, record.offset);
}

/// The `name: value` lines of a NATS header block.
fn nats_headers(block: &[u8]) -> Vec<(&str, &[u8])> {
    let Ok(text) = std::str::from_utf8(block) else {
        return Vec::new();
    };
    text.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim().as_bytes()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// ListOffsets: the earliest (−2) or latest (−1) offset, or the first record created at or after
/// a time (offset −1 if none).
pub async fn list_offsets(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let config = stream_of(conn, &name).filter(|c| conn.may_read(c));
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            if version >= 4 {
                response = response.with_leader_epoch(0);
            }
            let Some(config) = config
                .as_ref()
                .filter(|c| p.partition_index >= 0 && (p.partition_index as u32) < c.partitions)
            else {
                partitions.push(response.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let time = (p.timestamp >= 0).then_some(p.timestamp);
            let found = store::offsets(
                &conn.shard.streams,
                &config.name,
                p.partition_index as u32,
                time,
            )
            .await;
            let response = match found {
                Err((_, why)) => {
                    tracing::warn!(topic = %name, partition = p.partition_index, %why,
                        "kafka offset lookup failed");
                    response.with_error_code(code::UNKNOWN_SERVER_ERROR)
                }
                Ok(offsets) => match p.timestamp {
                    -2 => response
                        .with_offset(offsets.first as i64)
                        .with_timestamp(-1),
                    t if t >= 0 => match offsets.at_time {
                        Some((offset, ms)) => {
                            response.with_offset(offset as i64).with_timestamp(ms)
                        }
                        None => response.with_offset(-1).with_timestamp(-1),
                    },
                    _ => response.with_offset(offsets.next as i64).with_timestamp(-1),
                },
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

thread_local! {
    /// Producer ids handed out by this shard in the current millisecond.
    static PRODUCER_IDS: RefCell<(u64, u64)> = const { RefCell::new((0, 0)) };
}

/// InitProducerId for an idempotent producer: an id no other producer had, even across
/// restarts (milliseconds since the epoch, the shard and a count), and epoch 0. Transactions
/// are not served.
pub async fn init_producer_id(
    conn: &Rc<KafkaConn>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let (ms, count) = loop {
        let ms = sluice_storage::now_ns() / 1_000_000;
        let count = PRODUCER_IDS.with(|ids| {
            let mut ids = ids.borrow_mut();
            if ids.0 != ms {
                *ids = (ms, 0);
            }
            ids.1 += 1;
            ids.1
        });
        if count <= 255 {
            break (ms, count);
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    };
    let shard = u64::from(conn.shard.core.id.0) & 0xf;
    let id = ((ms & ((1 << 43) - 1)) << 12) | (shard << 8) | (count & 0xff);
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id as i64))
        .with_producer_epoch(0)
}
