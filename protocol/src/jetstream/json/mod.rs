//! The JSON bodies of the JetStream API, as nats-server 2.15 writes them and NATS clients read them.
//!
//! Requests are read leniently: unknown fields are ignored and a missing field takes Go's zero
//! value, which the API reads as "the default" (`0` durations, `0` limits). [`StreamConfig::effective`]
//! and [`ConsumerConfig::effective`] fill the defaults in, and responses echo the effective config.
//! Durations are integer nanoseconds; `-1` means "no limit". Every response carries a `type`.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

mod consumer;
pub use consumer::*;

/// Nanoseconds in a second.
pub const NS_PER_SEC: i64 = 1_000_000_000;
/// The duplicate window when a stream asks for none: two minutes.
pub const DUPLICATE_WINDOW_NS_DEFAULT: i64 = 120 * NS_PER_SEC;
/// The ack wait when a consumer asks for none: thirty seconds.
pub const ACK_WAIT_NS_DEFAULT: i64 = 30 * NS_PER_SEC;
/// Unacked messages a consumer may have out when it asks for no number.
pub const MAX_ACK_PENDING_DEFAULT: i64 = 1000;
/// Pull requests that may wait on a consumer when it asks for no number.
pub const MAX_WAITING_DEFAULT: i64 = 512;
/// How long an ephemeral consumer outlives its last interest when it asks for no time: 5 s.
pub const INACTIVE_THRESHOLD_NS_DEFAULT: i64 = 5 * NS_PER_SEC;
/// Names in one page of `STREAM.NAMES` / `CONSUMER.NAMES`.
pub const NAMES_PAGE: usize = 1024;
/// Infos in one page of `STREAM.LIST` / `CONSUMER.LIST`.
pub const LIST_PAGE: usize = 256;

/// `io.nats.jetstream.api.v1.<kind>_response`.
pub fn response_type(kind: &str) -> String {
    format!("io.nats.jetstream.api.v1.{kind}_response")
}

/// Serializes a response body with its `type` first. The body must be a JSON object.
pub fn response<T: Serialize>(kind: &str, body: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
    let mut object = serde_json::Map::new();
    object.insert("type".into(), response_type(kind).into());
    if let serde_json::Value::Object(fields) = value.take() {
        object.extend(fields);
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

/// Reads a request body as Go's JSON decoder would for nats-server: an empty body or `null` (which
/// async-nats sends for STREAM.INFO) is the type's default, `null` anywhere is the field's zero
/// value, and unknown fields are ignored.
pub fn parse_request<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
    if value.is_null() {
        return Ok(T::default());
    }
    strip_nulls(&mut value);
    serde_json::from_value(value).map_err(ApiError::invalid_json)
}

fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// An API error. Clients build their exception from exactly these three fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// HTTP-like: 400, 404, 500, 503.
    pub code: u16,
    /// nats-server's error identifier, which clients match on.
    pub err_code: u16,
    pub description: String,
}

impl ApiError {
    pub fn new(code: u16, err_code: u16, description: impl Into<String>) -> ApiError {
        ApiError {
            code,
            err_code,
            description: description.into(),
        }
    }

    pub fn stream_not_found() -> ApiError {
        ApiError::new(404, 10059, "stream not found")
    }
    pub fn consumer_not_found() -> ApiError {
        ApiError::new(404, 10014, "consumer not found")
    }
    pub fn no_message_found() -> ApiError {
        ApiError::new(404, 10037, "no message found")
    }
    pub fn wrong_last_sequence(actual: u64) -> ApiError {
        ApiError::new(400, 10071, format!("wrong last sequence: {actual}"))
    }
    pub fn wrong_last_msg_id(last: &str) -> ApiError {
        ApiError::new(400, 10070, format!("wrong last msg ID: {last}"))
    }
    pub fn expected_stream_mismatch() -> ApiError {
        ApiError::new(400, 10060, "expected stream does not match")
    }
    pub fn stream_name_in_use() -> ApiError {
        ApiError::new(
            400,
            10058,
            "stream name already in use with a different configuration",
        )
    }
    pub fn subjects_overlap() -> ApiError {
        ApiError::new(400, 10065, "subjects overlap with an existing stream")
    }
    pub fn stream_name_mismatch() -> ApiError {
        ApiError::new(400, 10056, "stream name in subject does not match request")
    }
    pub fn invalid_json(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(400, 10025, format!("invalid JSON: {error}"))
    }
    pub fn consumer_exists() -> ApiError {
        ApiError::new(400, 10148, "consumer already exists")
    }
    pub fn consumer_does_not_exist() -> ApiError {
        ApiError::new(400, 10149, "consumer does not exist")
    }
    pub fn filter_mismatch() -> ApiError {
        ApiError::new(
            400,
            10131,
            "Consumer create request did not match filtered subject from create subject",
        )
    }
    pub fn durable_name_mismatch() -> ApiError {
        ApiError::new(
            400,
            10017,
            "consumer name in subject does not match durable name in request",
        )
    }
    pub fn multiple_filters_with_subject() -> ApiError {
        ApiError::new(
            400,
            10137,
            "consumer with multiple subject filters cannot use subject based API",
        )
    }
    pub fn ephemeral_with_durable() -> ApiError {
        ApiError::new(
            400,
            10020,
            "consumer expected to be ephemeral but detected a durable name set in subject",
        )
    }
    pub fn delete_not_permitted() -> ApiError {
        ApiError::new(500, 10057, "message delete not permitted")
    }
    pub fn rollup_not_permitted() -> ApiError {
        ApiError::new(500, 10111, "rollup not permitted")
    }
    pub fn bad_request(description: impl Into<String>) -> ApiError {
        ApiError::new(400, 10003, description)
    }
    pub fn server_error(description: impl Into<String>) -> ApiError {
        ApiError::new(500, 10011, description)
    }
}

/// `{"type":..,"error":{..}}`.
pub fn error_response(kind: &str, error: &ApiError) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a ApiError,
    }
    response(kind, &Body { error })
}

/// The answer to a publish that a stream captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubAck {
    pub stream: String,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

/// A refused publish: the error, and the stream and seq beside it (`seq` 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubAckError {
    pub error: ApiError,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stream: String,
    pub seq: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a stream keeps when limits are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    #[default]
    Limits,
    Interest,
    Workqueue,
}

/// Which messages a full stream gives up: the oldest, or the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    #[default]
    Old,
    New,
}

/// Where a stream lives. Sluice stores every stream in files; `memory` is accepted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// A stream's configuration, as requested and as reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub subjects: Vec<String>,
    pub retention: Retention,
    pub max_consumers: i64,
    pub max_msgs: i64,
    pub max_bytes: i64,
    /// Nanoseconds; 0 = forever.
    pub max_age: i64,
    pub max_msgs_per_subject: i64,
    pub max_msg_size: i64,
    pub discard: Discard,
    pub storage: Storage,
    pub num_replicas: i64,
    /// Nanoseconds within which a `Nats-Msg-Id` is stored once.
    pub duplicate_window: i64,
    pub allow_direct: bool,
    pub mirror_direct: bool,
    pub sealed: bool,
    pub deny_delete: bool,
    pub deny_purge: bool,
    pub allow_rollup_hdrs: bool,
    pub discard_new_per_subject: bool,
    pub allow_msg_ttl: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl StreamConfig {
    /// The config with nats-server's defaults in place of zeros.
    pub fn effective(&self) -> StreamConfig {
        let mut config = self.clone();
        if config.subjects.is_empty() {
            config.subjects = vec![config.name.clone()];
        }
        for limit in [
            &mut config.max_consumers,
            &mut config.max_msgs,
            &mut config.max_bytes,
            &mut config.max_msgs_per_subject,
            &mut config.max_msg_size,
        ] {
            if *limit <= 0 {
                *limit = -1;
            }
        }
        if config.num_replicas <= 0 {
            config.num_replicas = 1;
        }
        if config.max_age < 0 {
            config.max_age = 0;
        }
        if config.duplicate_window <= 0 {
            config.duplicate_window = if config.max_age > 0 {
                config.max_age.min(DUPLICATE_WINDOW_NS_DEFAULT)
            } else {
                DUPLICATE_WINDOW_NS_DEFAULT
            };
        }
        config
    }
}

/// A stream's contents.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamState {
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub first_ts: String,
    pub last_seq: u64,
    pub last_ts: String,
    pub num_subjects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subjects: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub num_deleted: u64,
    pub consumer_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// STREAM.INFO, CREATE, UPDATE and LIST entries.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub created: String,
    pub state: StreamState,
    pub ts: String,
    #[serde(skip_serializing_if = "is_false")]
    pub did_create: bool,
}

/// STREAM.INFO's optional body.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct StreamInfoRequest {
    pub subjects_filter: Option<String>,
    pub offset: usize,
}

/// STREAM.NAMES and STREAM.LIST bodies.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ListRequest {
    pub offset: usize,
    /// Only streams whose subjects collide with this one.
    pub subject: Option<String>,
}

/// STREAM.NAMES: `streams` is `null` when nothing matched, as nats-server sends it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamNames {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub streams: Option<Vec<String>>,
}

/// STREAM.LIST.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamList {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub streams: Vec<StreamInfo>,
}

/// STREAM.PURGE's body: all, by subject, up to a sequence, or keeping the newest N.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct PurgeRequest {
    pub filter: Option<String>,
    /// Purge everything below this sequence.
    pub seq: u64,
    /// Keep this many of the newest messages.
    pub keep: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PurgeResponse {
    pub success: bool,
    pub purged: u64,
}

/// `{"success":true}`, the answer of deletes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Success {
    pub success: bool,
}

/// STREAM.MSG.GET and DIRECT.GET bodies.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct MsgGetRequest {
    pub seq: u64,
    pub last_by_subj: Option<String>,
    pub next_by_subj: Option<String>,
}

/// STREAM.MSG.DELETE's body.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct MsgDeleteRequest {
    pub seq: u64,
    pub no_erase: bool,
}

/// A stored message as STREAM.MSG.GET returns it: headers and data in base64, left out when
/// empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredMsg {
    pub subject: String,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdrs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    pub time: String,
}

impl StoredMsg {
    /// A message from its stored parts; `time_ns` in nanoseconds since the epoch.
    pub fn new(subject: &str, seq: u64, headers: &[u8], data: &[u8], time_ns: u64) -> StoredMsg {
        let encode = |bytes: &[u8]| {
            (!bytes.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        StoredMsg {
            subject: subject.to_owned(),
            seq,
            hdrs: encode(headers),
            data: encode(data),
            time: super::time::format_time_ns(time_ns),
        }
    }
}

/// STREAM.MSG.GET's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MsgGetResponse {
    pub message: StoredMsg,
}

/// `$JS.API.INFO`: the account's usage and limits (`-1` = none). Clients need every field.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccountInfo {
    pub memory: u64,
    pub storage: u64,
    pub reserved_memory: u64,
    pub reserved_storage: u64,
    pub streams: u64,
    pub consumers: u64,
    pub limits: AccountLimits,
    pub api: ApiStats,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccountLimits {
    pub max_memory: i64,
    pub max_storage: i64,
    pub max_streams: i64,
    pub max_consumers: i64,
    pub max_ack_pending: i64,
    pub memory_max_stream_bytes: i64,
    pub storage_max_stream_bytes: i64,
    pub max_bytes_required: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ApiStats {
    pub level: u32,
    pub total: u64,
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_stream_request_gets_the_servers_defaults() {
        let request = br#"{"name":"ORD","subjects":["orders.>"],"retention":"limits",
            "max_consumers":null,"max_msgs":null,"duplicate_window":0,"max_age":0,
            "storage":"file","sealed":false,"unknown_field":[1,2]}"#;
        let config: StreamConfig = parse_request(request).unwrap();
        let config = config.effective();
        assert_eq!(config.max_msgs, -1);
        assert_eq!(config.max_consumers, -1);
        assert_eq!(config.duplicate_window, DUPLICATE_WINDOW_NS_DEFAULT);
        assert_eq!(config.num_replicas, 1);
        assert_eq!(config.subjects, ["orders.>"]);
    }

    #[test]
    fn the_duplicate_window_is_never_longer_than_max_age() {
        let config = StreamConfig {
            name: "S".into(),
            max_age: NS_PER_SEC,
            ..StreamConfig::default()
        }
        .effective();
        assert_eq!(config.duplicate_window, NS_PER_SEC);
        assert_eq!(config.subjects, ["S"]);
    }

    #[test]
    fn consumer_defaults_depend_on_its_kind() {
        let pull = ConsumerConfig {
            durable_name: Some("d".into()),
            ..ConsumerConfig::default()
        }
        .effective();
        assert_eq!(pull.ack_wait, ACK_WAIT_NS_DEFAULT);
        assert_eq!(pull.max_deliver, -1);
        assert_eq!(pull.max_ack_pending, MAX_ACK_PENDING_DEFAULT);
        assert_eq!(pull.max_waiting, Some(MAX_WAITING_DEFAULT));
        assert_eq!(pull.inactive_threshold, 0);
        let push = ConsumerConfig {
            deliver_subject: Some("_INBOX.x".into()),
            ack_policy: AckPolicy::None,
            ..ConsumerConfig::default()
        }
        .effective();
        assert_eq!(push.max_waiting, None);
        assert_eq!(push.inactive_threshold, INACTIVE_THRESHOLD_NS_DEFAULT);
        assert!(push.is_push());
    }

    #[test]
    fn responses_carry_their_type_and_errors_only_three_fields() {
        let body = error_response("stream_info", &ApiError::stream_not_found());
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["type"],
            "io.nats.jetstream.api.v1.stream_info_response"
        );
        let error = value["error"].as_object().unwrap();
        assert_eq!(error.len(), 3);
        assert_eq!(error["code"], 404);
        assert_eq!(error["err_code"], 10059);
        assert_eq!(error["description"], "stream not found");
    }

    #[test]
    fn empty_names_are_null_as_clients_expect() {
        let body = response(
            "stream_names",
            &StreamNames {
                total: 0,
                offset: 0,
                limit: NAMES_PAGE,
                streams: None,
            },
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(value["streams"].is_null());
    }

    #[test]
    fn stored_messages_leave_out_empty_parts() {
        let msg = StoredMsg::new("a.b", 3, b"", b"hi", 1_795_384_005_000_000_000);
        let value = serde_json::to_value(&msg).unwrap();
        assert!(value.get("hdrs").is_none());
        assert_eq!(value["data"], "aGk=");
        assert_eq!(value["time"], "2026-11-22T21:46:45Z");
    }

    #[test]
    fn bad_and_empty_bodies() {
        assert_eq!(
            parse_request::<PurgeRequest>(b"").unwrap(),
            PurgeRequest::default()
        );
        assert_eq!(
            parse_request::<PurgeRequest>(b"null").unwrap(),
            PurgeRequest::default()
        );
        let error = parse_request::<PurgeRequest>(b"{nope").unwrap_err();
        assert_eq!((error.code, error.err_code), (400, 10025));
        let error = parse_request::<PurgeRequest>(br#"{"seq":"x"}"#).unwrap_err();
        assert_eq!(error.err_code, 10025);
        let nested: ConsumerCreateRequest =
            parse_request(br#"{"stream_name":"S","config":{"ack_wait":null,"durable_name":"d"}}"#)
                .unwrap();
        assert_eq!(nested.config.durable_name.as_deref(), Some("d"));
    }

    #[test]
    fn pub_acks_say_duplicate_only_when_they_are() {
        let ack = PubAck {
            stream: "ORD".into(),
            seq: 4,
            duplicate: false,
        };
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"stream":"ORD","seq":4}"#
        );
    }
}
