//! DescribeConfigs and DescribeCluster: what admin clients read about a topic, the broker and the
//! cluster. A topic's settings are its stream's (retention by age and size, the largest
//! message); everything else is Kafka's default for what Sluice does.

use std::rc::Rc;

use sluice_protocol::kafka::code;
use sluice_protocol::kafka::codec::messages::describe_cluster_response::DescribeClusterBroker;
use sluice_protocol::kafka::codec::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use sluice_protocol::kafka::codec::messages::*;
use sluice_protocol::kafka::codec::protocol::StrBytes;

use super::topics::{brokers, default_replicas, own_broker_id, stream_of, CLUSTER_ID};
use super::KafkaConn;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Where a setting comes from (Kafka's `ConfigSource`).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// A setting's type (Kafka's `ConfigType`), from version 3.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The settings of a resource: (name, value, source, type).
type Setting = (&'static str, String, i8, i8);

fn topic_settings(conn: &KafkaConn, stream: &crate::api::StreamConfig) -> Vec<Setting> {
    let config = &conn.shard.core.config;
    let (age, age_source) = match stream.max_age_secs {
        Some(secs) => ((secs.saturating_mul(1000)).to_string(), SOURCE_TOPIC),
        None => ("-1".to_string(), SOURCE_DEFAULT),
    };
    let (bytes, bytes_source) = match stream.max_bytes {
        Some(bytes) => (bytes.to_string(), SOURCE_TOPIC),
        None => ("-1".to_string(), SOURCE_DEFAULT),
    };
    vec![
        (
            "cleanup.policy",
            "delete".into(),
            SOURCE_DEFAULT,
            TYPE_STRING,
        ),
        (
            "compression.type",
            "producer".into(),
            SOURCE_DEFAULT,
            TYPE_STRING,
        ),
        (
            "max.message.bytes",
            config.payload_bytes_max.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        ("min.insync.replicas", "1".into(), SOURCE_DEFAULT, TYPE_INT),
        ("retention.bytes", bytes, bytes_source, TYPE_LONG),
        ("retention.ms", age, age_source, TYPE_LONG),
    ]
}

fn broker_settings(conn: &KafkaConn) -> Vec<Setting> {
    let config = &conn.shard.core.config;
    vec![
        (
            "auto.create.topics.enable",
            config.kafka_auto_create.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_BOOLEAN,
        ),
        (
            "broker.id",
            own_broker_id(conn).to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        (
            "default.replication.factor",
            default_replicas(conn).to_string(),
            SOURCE_DEFAULT,
            TYPE_INT,
        ),
        (
            "message.max.bytes",
            config.payload_bytes_max.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        ("num.partitions", "1".into(), SOURCE_DEFAULT, TYPE_INT),
        (
            "offsets.topic.replication.factor",
            "1".into(),
            SOURCE_DEFAULT,
            TYPE_INT,
        ),
    ]
}

pub fn describe_configs(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let settings = match resource.resource_type {
                RESOURCE_TOPIC => match stream_of(conn, &name) {
                    Some(stream) if conn.may_read(&stream) => topic_settings(conn, &stream),
                    Some(_) => return result.with_error_code(code::TOPIC_AUTHORIZATION_FAILED),
                    None => {
                        return result
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(text(&format!("no topic {name}"))))
                    }
                },
                RESOURCE_BROKER => broker_settings(conn),
                other => {
                    return result
                        .with_error_code(code::INVALID_REQUEST)
                        .with_error_message(Some(text(&format!(
                            "resource type {other} is not served"
                        ))))
                }
            };
            let wanted = resource.configuration_keys.as_ref();
            let configs = settings
                .into_iter()
                .filter(|(key, ..)| {
                    wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == *key))
                })
                .map(|(key, value, source, kind)| {
                    let entry = DescribeConfigsResourceResult::default()
                        .with_name(text(key))
                        .with_value(Some(text(&value)))
                        .with_read_only(resource.resource_type == RESOURCE_BROKER)
                        .with_config_source(source);
                    if version >= 3 {
                        entry.with_config_type(kind)
                    } else {
                        entry
                    }
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

pub fn describe_cluster(conn: &Rc<KafkaConn>, version: i16) -> DescribeClusterResponse {
    let brokers = brokers(conn)
        .into_iter()
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(text(&host))
                .with_port(port)
        })
        .collect();
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(own_broker_id(conn)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN);
    if version >= 1 {
        response.with_endpoint_type(1)
    } else {
        response
    }
}
