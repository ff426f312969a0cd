//! Consumers' bodies: their config as requested and reported, create requests, infos and lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    is_false, ACK_WAIT_NS_DEFAULT, INACTIVE_THRESHOLD_NS_DEFAULT, MAX_ACK_PENDING_DEFAULT,
    MAX_WAITING_DEFAULT,
};

/// Which messages a consumer starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    #[default]
    All,
    Last,
    New,
    ByStartSequence,
    ByStartTime,
    LastPerSubject,
}

/// How a consumer's messages are acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// Nothing is tracked: delivered is done.
    None,
    /// An ack covers every message up to it.
    All,
    #[default]
    Explicit,
}

/// How fast a consumer replays: as fast as it can, or at the pace they were stored. Sluice
/// replays instantly either way and reports what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayPolicy {
    #[default]
    Instant,
    Original,
}

/// A consumer's configuration, as requested and as reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub deliver_policy: DeliverPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_start_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<String>,
    pub ack_policy: AckPolicy,
    /// Nanoseconds.
    pub ack_wait: i64,
    pub max_deliver: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_subjects: Option<Vec<String>>,
    pub replay_policy: ReplayPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<i64>,
    pub max_ack_pending: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub flow_control: bool,
    /// Nanoseconds; 0 = none.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub idle_heartbeat: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub headers_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_group: Option<String>,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub inactive_threshold: i64,
    pub num_replicas: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub mem_storage: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl ConsumerConfig {
    /// Whether messages are pushed to a deliver subject rather than pulled.
    pub fn is_push(&self) -> bool {
        self.deliver_subject
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    }

    /// Whether the consumer outlives its clients (it has a durable name).
    pub fn is_durable(&self) -> bool {
        self.durable_name.as_deref().is_some_and(|s| !s.is_empty())
    }

    /// Every filter, whether given as one or several.
    pub fn filters(&self) -> Vec<&str> {
        match (&self.filter_subject, &self.filter_subjects) {
            (_, Some(many)) if !many.is_empty() => many.iter().map(String::as_str).collect(),
            (Some(one), _) if !one.is_empty() => vec![one.as_str()],
            _ => Vec::new(),
        }
    }

    /// The config with nats-server's defaults in place of zeros.
    pub fn effective(&self) -> ConsumerConfig {
        let mut config = self.clone();
        if config.ack_wait <= 0 {
            config.ack_wait = ACK_WAIT_NS_DEFAULT;
        }
        if config.max_deliver == 0 {
            config.max_deliver = -1;
        }
        if config.max_ack_pending == 0 {
            config.max_ack_pending = if config.ack_policy == AckPolicy::None {
                -1
            } else {
                MAX_ACK_PENDING_DEFAULT
            };
        }
        if !config.is_push() && config.max_waiting.unwrap_or(0) <= 0 {
            config.max_waiting = Some(MAX_WAITING_DEFAULT);
        }
        if !config.is_durable() && config.inactive_threshold <= 0 {
            config.inactive_threshold = INACTIVE_THRESHOLD_NS_DEFAULT;
        }
        if config.num_replicas < 0 {
            config.num_replicas = 0;
        }
        if config.filter_subject.as_deref() == Some("") {
            config.filter_subject = None;
        }
        config
    }
}

/// CONSUMER.CREATE's body.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ConsumerCreateRequest {
    pub stream_name: String,
    pub config: ConsumerConfig,
    /// `create` (refuse an existing, different consumer), `update` (refuse a missing one), or
    /// empty (either).
    pub action: String,
}

/// Where a consumer is, in consumer and stream sequences.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SequenceInfo {
    pub consumer_seq: u64,
    pub stream_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

/// CONSUMER.INFO, CREATE and LIST entries.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerInfo {
    pub stream_name: String,
    pub name: String,
    pub created: String,
    pub config: ConsumerConfig,
    pub delivered: SequenceInfo,
    pub ack_floor: SequenceInfo,
    pub num_ack_pending: u64,
    pub num_redelivered: u64,
    pub num_waiting: u64,
    pub num_pending: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub push_bound: bool,
    pub ts: String,
}

/// CONSUMER.NAMES.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConsumerNames {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub consumers: Vec<String>,
}

/// CONSUMER.LIST.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConsumerList {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub consumers: Vec<ConsumerInfo>,
}
