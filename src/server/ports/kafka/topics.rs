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

/// Copies of a topic created without a replication factor (Kafka's `default.replication.factor`):
/// as many as the cluster has nodes, so that a topic is one topic whichever node a client asks (a
/// stream of one replica is a copy of its own on each node), and one on a single node.
const DEFAULT_REPLICAS: u8 = 0;

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
    if let Some(advertised) = config.kafka_advertise.as_deref().and_then(host_port) {
        return advertised;
    }
    match config.kafka_listen {
        Some(addr) if !addr.ip().is_unspecified() => (addr.ip().to_string(), addr.port() as i32),
        Some(addr) => ("127.0.0.1".to_string(), addr.port() as i32),
        None => ("127.0.0.1".to_string(), 9092),
    }
}

/// `host:port` (the host perhaps in brackets) as Kafka's host and port.
fn host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

/// A cluster node's broker id, the same on every node: taken from its name, as nodes have no
/// numbers. A single node is broker 0.
pub fn broker_id(node: &str) -> i32 {
    (crc32c::crc32c(node.as_bytes()) & 0x7fff_ffff) as i32
}

/// This node's broker id.
pub fn own_broker_id(conn: &KafkaConn) -> i32 {
    let cluster = conn.shard.core.config.cluster.as_ref();
    cluster.map_or(NODE_ID, |c| broker_id(&c.name))
}

/// A cluster node as a broker, from its name and the Kafka address it told: id, host and port.
/// This node is where it tells its own clients to connect.
pub fn broker_of(conn: &KafkaConn, node: &str, addr: &str) -> Option<(i32, String, i32)> {
    let id = broker_id(node);
    if id == own_broker_id(conn) {
        let (host, port) = advertised(conn);
        return Some((id, host, port));
    }
    host_port(addr).map(|(host, port)| (id, host, port))
}

/// The brokers clients are told of, as id, host and port: this node first, then, in a cluster,
/// every other node up now whose Kafka port is on.
pub fn brokers(conn: &KafkaConn) -> Vec<(i32, String, i32)> {
    let own = own_broker_id(conn);
    let (host, port) = advertised(conn);
    let mut brokers = vec![(own, host, port)];
    if conn.shard.core.config.cluster.is_some() {
        let nodes = conn.shard.streams.kafka_nodes.borrow();
        let others = nodes
            .iter()
            .filter(|(node, _)| broker_id(node) != own)
            .filter_map(|(node, addr)| broker_of(conn, node, addr));
        brokers.extend(others);
    }
    brokers
}

/// The replication factor of a topic created without one, as DescribeConfigs shows it: 1 on a
/// single node; in a cluster, its size while every node is up (the nodes this one sees).
pub fn default_replicas(conn: &KafkaConn) -> usize {
    match conn.shard.core.config.cluster {
        Some(_) => brokers(conn).len(),
        None => 1,
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

fn topic_metadata(
    conn: &KafkaConn,
    name: &str,
    config: Option<&StreamConfig>,
    error: i16,
    live: &[i32],
) -> MetadataResponseTopic {
    let partitions = config.map_or(0, |c| c.partitions);
    MetadataResponseTopic::default()
        .with_name(Some(topic(name)))
        .with_error_code(error)
        .with_partitions(
            (0..partitions)
                .filter_map(|p| Some(partition_metadata(conn, config?, p, live)))
                .collect(),
        )
}

/// A partition's leader and replicas. A replicated partition's leader is its group's, as this
/// node last heard, with the group's term as the leader epoch; while there is none up, the
/// partition says LEADER_NOT_AVAILABLE, and clients ask again. Every node keeps its own copy of a
/// partition of one replica, so this node leads it.
fn partition_metadata(
    conn: &KafkaConn,
    config: &StreamConfig,
    partition: u32,
    live: &[i32],
) -> MetadataResponsePartition {
    let base = MetadataResponsePartition::default().with_partition_index(partition as i32);
    let own = BrokerId(own_broker_id(conn));
    if !config.is_replicated() || conn.shard.core.config.cluster.is_none() {
        return base
            .with_leader_id(own)
            .with_leader_epoch(0)
            .with_replica_nodes(vec![own])
            .with_isr_nodes(vec![own]);
    }
    let replicas: Vec<BrokerId> = config
        .placement
        .iter()
        .map(|node| BrokerId(broker_id(node)))
        .collect();
    let in_sync = replicas
        .iter()
        .copied()
        .filter(|id| live.contains(&id.0))
        .collect();
    let leaders = conn.shard.streams.group_leaders.borrow();
    let leader = leaders
        .get(config.name.as_str())
        .and_then(|partitions| partitions.get(&partition))
        .map(|(node, term)| (broker_id(node), *term))
        .filter(|(id, _)| live.contains(id));
    let base = base.with_replica_nodes(replicas).with_isr_nodes(in_sync);
    match leader {
        Some((id, term)) => base
            .with_leader_id(BrokerId(id))
            .with_leader_epoch(i32::try_from(term).unwrap_or(i32::MAX)),
        None => base
            .with_error_code(code::LEADER_NOT_AVAILABLE)
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1),
    }
}

/// Metadata: the brokers (this node, and the other nodes of its cluster up now), and the topics
/// asked for (all of them for none, or, from v1 on, for a null list), created first where
/// allowed.
pub async fn metadata(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let wanted: Option<Vec<String>> = match req.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let brokers = brokers(conn);
    let live: Vec<i32> = brokers.iter().map(|(id, _, _)| *id).collect();
    let mut topics = Vec::new();
    match wanted {
        None => {
            let all = conn.shard.streams.streams.borrow().all();
            for config in all {
                if let Some(name) = topic_name(&config.name) {
                    topics.push(topic_metadata(
                        conn,
                        &name,
                        Some(&config),
                        code::NONE,
                        &live,
                    ));
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
                    Some(config) => topic_metadata(conn, &name, Some(&config), code::NONE, &live),
                    None if !valid_topic(&name) => {
                        topic_metadata(conn, &name, None, code::INVALID_TOPIC_EXCEPTION, &live)
                    }
                    None if may_create => {
                        match create_topic(conn, &name, DEFAULT_PARTITIONS, DEFAULT_REPLICAS).await
                        {
                            Ok(config) => {
                                topic_metadata(conn, &name, Some(&config), code::NONE, &live)
                            }
                            Err((error, why)) => {
                                tracing::warn!(topic = %name, %why, "kafka topic not created");
                                topic_metadata(conn, &name, None, error, &live)
                            }
                        }
                    }
                    None => {
                        let error = code::UNKNOWN_TOPIC_OR_PARTITION;
                        topic_metadata(conn, &name, None, error, &live)
                    }
                };
                topics.push(entry);
            }
        }
    }
    let controller = own_broker_id(conn);
    let brokers = brokers
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(controller))
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
        // -1 is the broker's default. In a cluster, 1 takes the default too: one copy on one
        // node is what Kafka would make, and a stream of one replica is a copy of its own on
        // each node, which a client moving between brokers cannot use as one topic; more than 1
        // asks for a replicated stream, of the cluster's size.
        let in_cluster = conn.shard.core.config.cluster.is_some();
        let replicas = match t.replication_factor {
            ..=0 => DEFAULT_REPLICAS,
            1 if in_cluster => DEFAULT_REPLICAS,
            factor => u8::try_from(factor).unwrap_or(u8::MAX),
        };
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
            None if req.validate_only => Ok(replicas.max(1)),
            None => create_topic(conn, &name, partitions, replicas)
                .await
                .map(|config| config.replicas),
        };
        let mut result = CreatableTopicResult::default().with_name(topic(&name));
        match outcome {
            Ok(replicas) => {
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
