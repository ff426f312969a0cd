//! The Kafka wire protocol, as far as a broker serving Kafka clients needs it.
//!
//! Messages are encoded and decoded by the `kafka-protocol` crate ([`codec`]), generated from
//! Kafka's own schemas; this module adds what a broker decides itself: the size prefix and the
//! request header read before anything is decoded ([`RequestHead`]), the versions served
//! ([`versions`]), the error codes ([`code`]) and record batches ([`batch`]), which the broker
//! stores as they arrive.

pub mod batch;
pub mod unsupported;
pub mod versions;

pub use kafka_protocol as codec;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

/// Largest request a client may send (Kafka's `socket.request.max.bytes`, 100 MiB), refused from
/// its size prefix before anything is read or allocated.
pub const REQUEST_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Kafka's error codes that Sluice answers with.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request of {0} bytes is larger than the limit of {REQUEST_BYTES_MAX}")]
    TooLarge(usize),
    #[error("request of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("malformed {api} v{version} request: {reason}")]
    Malformed {
        api: i16,
        version: i16,
        reason: String,
    },
}

/// The size of the request whose prefix starts `buf`, once four bytes are there; refused if
/// negative or over the limit.
pub fn request_size(buf: &[u8]) -> Option<Result<usize, RequestError>> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let size = i32::from_be_bytes(prefix);
    Some(match usize::try_from(size) {
        Ok(size) if size <= REQUEST_BYTES_MAX => Ok(size),
        Ok(size) => Err(RequestError::TooLarge(size)),
        Err(_) => Err(RequestError::TooLarge(usize::MAX)),
    })
}

/// The first fields of a request, readable whatever its API and version: what an answer needs
/// even when the rest cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
}

impl RequestHead {
    /// Reads the head of a request (the bytes after its size prefix).
    pub fn peek(request: &[u8]) -> Result<RequestHead, RequestError> {
        if request.len() < 8 {
            return Err(RequestError::TooShort(request.len()));
        }
        Ok(RequestHead {
            api_key: i16::from_be_bytes([request[0], request[1]]),
            version: i16::from_be_bytes([request[2], request[3]]),
            correlation_id: i32::from_be_bytes([request[4], request[5], request[6], request[7]]),
        })
    }

    /// The API, if Sluice knows it.
    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }

    fn malformed(&self, reason: impl ToString) -> RequestError {
        RequestError::Malformed {
            api: self.api_key,
            version: self.version,
            reason: reason.to_string(),
        }
    }
}

/// Decodes a request of an API and version Sluice serves (the bytes after the size prefix): its
/// header and body. Anything else is `Malformed`, which closes the connection (an ApiVersions of
/// an unknown version is answered before this, see `versions::api_versions_unsupported`).
pub fn decode_served(
    head: &RequestHead,
    mut request: Bytes,
) -> Result<(RequestHeader, RequestKind), RequestError> {
    let api = head
        .api()
        .ok_or_else(|| head.malformed("unknown API key"))?;
    if !versions::is_served(api, head.version) {
        return Err(head.malformed("version not served"));
    }
    let header = RequestHeader::decode(&mut request, api.request_header_version(head.version))
        .map_err(|e| head.malformed(e))?;
    let body =
        RequestKind::decode(api, &mut request, head.version).map_err(|e| head.malformed(e))?;
    Ok((header, body))
}

/// Decodes a request's header and body (the bytes after the size prefix); the version must be
/// one Sluice serves.
pub fn decode_request<T: Decodable + HeaderVersion>(
    head: &RequestHead,
    mut request: Bytes,
) -> Result<(RequestHeader, T), RequestError> {
    let header_version = T::header_version(head.version);
    let header =
        RequestHeader::decode(&mut request, header_version).map_err(|e| head.malformed(e))?;
    let body = T::decode(&mut request, head.version).map_err(|e| head.malformed(e))?;
    Ok((header, body))
}

/// Encodes a response to `head` with its size prefix: the response header its version calls for
/// (always v0 for ApiVersions), then the body.
pub fn encode_response<T: Encodable + HeaderVersion>(
    head: &RequestHead,
    body: &T,
) -> Result<Bytes, RequestError> {
    let header = ResponseHeader::default().with_correlation_id(head.correlation_id);
    let header_version = T::header_version(head.version);
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    header
        .encode(&mut out, header_version)
        .map_err(|e| head.malformed(e))?;
    body.encode(&mut out, head.version)
        .map_err(|e| head.malformed(e))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsResponse, MetadataRequest};

    #[test]
    fn sizes_are_refused_from_the_prefix() {
        assert_eq!(request_size(&[0, 0]), None);
        assert_eq!(request_size(&[0, 0, 0, 9]), Some(Ok(9)));
        assert!(matches!(
            request_size(&[0x7f, 0xff, 0xff, 0xff]),
            Some(Err(RequestError::TooLarge(_)))
        ));
        assert!(matches!(
            request_size(&[0xff, 0xff, 0xff, 0xff]),
            Some(Err(RequestError::TooLarge(_)))
        ));
    }

    #[test]
    fn a_short_request_claiming_billions_of_elements_is_refused_without_reserving_them() {
        // Metadata v1: header (api 3, version 1, correlation id, no client id), then a topic
        // array that claims i32::MAX entries and holds none.
        let mut request = BytesMut::new();
        request.put_i16(3);
        request.put_i16(1);
        request.put_i32(7);
        request.put_i16(-1);
        request.put_i32(i32::MAX);
        let request = request.freeze();
        let head = RequestHead::peek(&request).unwrap();
        assert!(matches!(
            decode_served(&head, request),
            Err(RequestError::Malformed { api: 3, .. })
        ));
    }

    #[test]
    fn a_request_round_trips_through_head_and_decode() {
        let mut raw = BytesMut::new();
        raw.put_i16(3);
        raw.put_i16(4);
        raw.put_i32(77);
        raw.put_i16(3);
        raw.put_slice(b"cli");
        raw.put_i32(-1); // all topics
        raw.put_u8(1); // allow auto creation
        let raw = raw.freeze();
        let head = RequestHead::peek(&raw).unwrap();
        assert_eq!(
            head,
            RequestHead {
                api_key: 3,
                version: 4,
                correlation_id: 77
            }
        );
        let (header, body) = decode_request::<MetadataRequest>(&head, raw).unwrap();
        assert_eq!(header.client_id.as_deref(), Some("cli"));
        assert!(body.topics.is_none());
        assert!(body.allow_auto_topic_creation);
    }

    #[test]
    fn an_api_versions_response_has_a_v0_header_even_when_flexible() {
        let head = RequestHead {
            api_key: 18,
            version: 3,
            correlation_id: 5,
        };
        let out = encode_response(&head, &ApiVersionsResponse::default()).unwrap();
        assert_eq!(&out[4..8], &5i32.to_be_bytes());
        // The body starts right after the correlation id: error code 0, no tagged fields between.
        assert_eq!(&out[8..10], &[0, 0]);
        assert_eq!(
            i32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
            out.len() - 4
        );
    }
}
