//! Topics are streams: Metadata lists them, CreateTopics and DeleteTopics add and remove them
//! through the stream API, and a topic asked for that does not exist is created when the server
//! allows it (as Kafka's `auto.create.topics.enable`, on by default).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::kafka::code;
use sluice_protocol::kafka::codec::messages::create_topics_response::CreatableTopicResult;
use sluice_protocol::kafka::codec::messages::delete_topics_response::DeletableTopicResult;
use sluice_protocol::kafka::codec::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::kafka::codec::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use sluice_protocol::kafka::codec::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use super::KafkaConn;
use crate::api::{self, StreamConfig, StreamName};
use crate::server::streams;

/// The one broker id: every shard of this process is the same Kafka broker.
pub const NODE_ID: i32 = 0;

/// The cluster's id, as Metadata and DescribeCluster give it.
pub const CLUSTER_ID: &str = "sluice";

/// Partitions of a topic created without a count (Kafka's `num.partitions`).
const DEFAULT_PARTITIONS: u32 = 1;

/// How long a created topic may take to reach this shard's view of the streams.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// Whether a topic name is one Kafka accepts: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The stream a new topic becomes: the topic's name with `.` as `~` (stream names are one
/// subject token), capturing the subject that is the topic's name.
pub fn stream_name(topic: &str) -> String {
    topic.replace('.', "~")
}

/// The topic a stream shows as, if its name makes a valid topic name.
pub fn topic_name(stream: &str) -> Option<String> {
    let topic = stream.replace('~', ".");
    valid_topic(&topic).then_some(topic)
}

/// The stream serving a topic, if there is one.
pub fn stream_of(conn: &KafkaConn, topic: &str) -> Option<Arc<StreamConfig>> {
    let view = conn.shard.streams.streams.borrow();
    view.config(&stream_name(topic))
        .or_else(|| view.config(topic))
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The address clients are told to connect to.
pub fn advertised(conn: &KafkaConn) -> (String, i32) {
    let config = &conn.shard.core.config;
    if let Some(advertise) = &config.kafka_advertise {
        if let Some((host, port)) = advertise.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                return (host.trim_matches(['[', ']']).to_string(), port);
            }
        }
    }
    match config.kafka_listen {
        Some(addr) if !addr.ip().is_unspecified() => (addr.ip().to_string(), addr.port() as i32),
        Some(addr) => ("127.0.0.1".to_string(), addr.port() as i32),
        None => ("127.0.0.1".to_string(), 9092),
    }
}

/// Creates a topic as a stream and waits until this shard sees it; the Kafka error if not.
pub async fn create_topic(
    conn: &KafkaConn,
    name: &str,
    partitions: u32,
    replicas: u8,
) -> Result<Arc<StreamConfig>, (i16, String)> {
    if !valid_topic(name) {
        return Err((
            code::INVALID_TOPIC_EXCEPTION,
            format!("{name:?} is not a valid topic name"),
        ));
    }
    let mut config = StreamConfig::new(stream_name(name), vec![name.to_string()]);
    config.partitions = partitions;
    config.replicas = replicas;
    let body = serde_json::to_vec(&config).map_err(|e| (code::INVALID_REQUEST, e.to_string()))?;
    let shard = &conn.shard.streams;
    let (status, reply) = streams::call_api(shard, api::STREAM_ADD, &body).await;
    if status != 0 {
        let why = String::from_utf8_lossy(&reply).into_owned();
        let code = match ErrorCode::from_u16(status) {
            ErrorCode::LimitReached => code::INVALID_PARTITIONS,
            ErrorCode::BadRequest if why.contains("replicas") => code::INVALID_REPLICATION_FACTOR,
            ErrorCode::BadRequest => code::INVALID_REQUEST,
            ErrorCode::Unavailable => code::LEADER_NOT_AVAILABLE,
            _ => code::UNKNOWN_SERVER_ERROR,
        };
        return Err((code, why));
    }
    let deadline = std::time::Instant::now() + VISIBLE_WITHIN;
    loop {
        if let Some(config) = stream_of(conn, name) {
            return Ok(config);
        }
        if std::time::Instant::now() >= deadline {
            return Err((
                code::LEADER_NOT_AVAILABLE,
                format!("topic {name} is not visible yet"),
            ));
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

fn topic_metadata(name: &str, config: Option<&StreamConfig>, error: i16) -> MetadataResponseTopic {
    let partitions = config.map_or(0, |c| c.partitions);
    MetadataResponseTopic::default()
        .with_name(Some(topic(name)))
        .with_error_code(error)
        .with_partitions(
            (0..partitions)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p as i32)
                        .with_leader_id(BrokerId(NODE_ID))
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                })
                .collect(),
        )
}

/// Metadata: the one broker, and the topics asked for (all of them for none, or, from v1 on,
/// for a null list), created first where allowed.
pub async fn metadata(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let (host, port) = advertised(conn);
    let wanted: Option<Vec<String>> = match req.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let mut topics = Vec::new();
    match wanted {
        None => {
            let all = conn.shard.streams.streams.borrow().all();
            for config in all {
                if let Some(name) = topic_name(&config.name) {
                    topics.push(topic_metadata(&name, Some(&config), code::NONE));
                }
            }
        }
        Some(names) => {
            // Version 0–3 have no flag: they create, as Kafka did then.
            let may_create = conn.shard.core.config.kafka_auto_create
                && (version < 4 || req.allow_auto_topic_creation);
            for name in names {
                let found = stream_of(conn, &name);
                let may_create = may_create && conn.may_create(&name);
                let entry = match found {
                    Some(config) => topic_metadata(&name, Some(&config), code::NONE),
                    None if !valid_topic(&name) => {
                        topic_metadata(&name, None, code::INVALID_TOPIC_EXCEPTION)
                    }
                    None if may_create => {
                        match create_topic(conn, &name, DEFAULT_PARTITIONS, 1).await {
                            Ok(config) => topic_metadata(&name, Some(&config), code::NONE),
                            Err((error, why)) => {
                                tracing::warn!(topic = %name, %why, "kafka topic not created");
                                topic_metadata(&name, None, error)
                            }
                        }
                    }
                    None => topic_metadata(&name, None, code::UNKNOWN_TOPIC_OR_PARTITION),
                };
                topics.push(entry);
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

/// CreateTopics: each topic becomes a stream of that many partitions (one when not said).
pub async fn create(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let partitions = if t.num_partitions <= 0 {
            DEFAULT_PARTITIONS
        } else {
            t.num_partitions as u32
        };
        // -1 (the broker's default) and 1 keep one copy on each node; more asks for a
        // replicated stream, of the cluster's size.
        let replicas = u8::try_from(t.replication_factor.max(1)).unwrap_or(u8::MAX);
        let refusal = if !valid_topic(&name) {
            Some((
                code::INVALID_TOPIC_EXCEPTION,
                format!("{name:?} is not a valid topic name"),
            ))
        } else if !conn.may_create(&name) {
            Some((
                code::TOPIC_AUTHORIZATION_FAILED,
                format!("not permitted to create topic {name}"),
            ))
        } else if stream_of(conn, &name).is_some() {
            Some((
                code::TOPIC_ALREADY_EXISTS,
                format!("topic {name} already exists"),
            ))
        } else if t.replication_factor > i16::from(u8::MAX) {
            Some((
                code::INVALID_REPLICATION_FACTOR,
                format!("replication factor {} is too large", t.replication_factor),
            ))
        } else if !t.assignments.is_empty() {
            Some((
                code::INVALID_REQUEST,
                "replica assignments are not supported".into(),
            ))
        } else {
            None
        };
        let outcome = match refusal {
            Some(refused) => Err(refused),
            None if req.validate_only => Ok(()),
            None => create_topic(conn, &name, partitions, replicas)
                .await
                .map(|_| ()),
        };
        let mut result = CreatableTopicResult::default().with_name(topic(&name));
        match outcome {
            Ok(()) => {
                if version >= 5 {
                    result = result
                        .with_num_partitions(partitions as i32)
                        .with_replication_factor(i16::from(replicas))
                        .with_configs(Some(Vec::new()));
                }
            }
            Err((error, why)) => {
                result = result
                    .with_error_code(error)
                    .with_error_message(Some(StrBytes::from_string(why)));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// DeleteTopics: removes the streams, and their data.
pub async fn delete(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<String> = if version >= 6 {
        req.topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| n.0.to_string())
            .collect()
    };
    let mut results = Vec::new();
    for name in names {
        let mut result = DeletableTopicResult::default().with_name(Some(topic(&name)));
        match stream_of(conn, &name) {
            None => {
                result = result.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
            }
            Some(config) if !conn.may_write(&config) => {
                result = result.with_error_code(code::TOPIC_AUTHORIZATION_FAILED);
            }
            Some(config) => {
                let body = serde_json::to_vec(&StreamName {
                    name: config.name.clone(),
                })
                .unwrap_or_default();
                let (status, reply) =
                    streams::call_api(&conn.shard.streams, api::STREAM_REMOVE, &body).await;
                if status != 0 {
                    result = result
                        .with_error_code(code::UNKNOWN_SERVER_ERROR)
                        .with_error_message(Some(StrBytes::from_string(
                            String::from_utf8_lossy(&reply).into_owned(),
                        )));
                }
            }
        }
        results.push(result);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
