//! The APIs and versions Sluice serves, shaped for the clients in use: librdkafka enables a
//! feature only if the broker's range overlaps fixed old versions (so floors stay low), and the
//! ceilings stop below the versions that name topics by id only.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// `(api, lowest, highest)` advertised. Produce 0–2 are advertised but refused (closing the
/// connection, as Kafka 4 does): librdkafka before 2.11.1 sends compressed batches only to a
/// broker whose Produce range includes 0.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Produce versions below this are advertised but not served.
pub const PRODUCE_SERVED_FROM: i16 = 3;

/// The range served for an API, if it is served.
pub fn range(api: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|&(_, low, high)| (low, high))
}

/// Whether a request of this API and version can be decoded and answered.
pub fn is_served(api: ApiKey, version: i16) -> bool {
    match range(api) {
        Some((_, high)) if api == ApiKey::Produce => {
            (PRODUCE_SERVED_FROM..=high).contains(&version)
        }
        Some((low, high)) => (low..=high).contains(&version),
        None => false,
    }
}

/// The ApiVersions answer.
pub fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SERVED
            .iter()
            .map(|&(key, low, high)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(low)
                    .with_max_version(high)
            })
            .collect(),
    )
}

/// The answer to an ApiVersions request of a version newer than served: UNSUPPORTED_VERSION with
/// the served ranges, in the v0 layout every client can read, so that it retries with one it
/// shares. The whole frame, size prefix included.
pub fn api_versions_unsupported(correlation_id: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + 2 + 4 + SERVED.len() * 6);
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i16(super::code::UNSUPPORTED_VERSION);
    out.put_i32(SERVED.len() as i32);
    for &(key, low, high) in SERVED {
        out.put_i16(key as i16);
        out.put_i16(low);
        out.put_i16(high);
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn every_served_range_is_one_the_codec_can_decode() {
        for &(key, low, high) in SERVED {
            let codec = key.valid_versions();
            let low = if key == ApiKey::Produce {
                PRODUCE_SERVED_FROM
            } else {
                low
            };
            assert!(
                codec.min <= low && high <= codec.max,
                "{key:?} {low}..{high} outside {codec}"
            );
        }
    }

    #[test]
    fn the_unsupported_answer_reads_as_a_v0_api_versions_response() {
        let mut frame = api_versions_unsupported(9);
        let mut body = frame.split_off(8);
        assert_eq!(&frame[4..8], &9i32.to_be_bytes());
        let decoded = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(decoded.error_code, super::super::code::UNSUPPORTED_VERSION);
        assert_eq!(decoded.api_keys.len(), SERVED.len());
        assert!(body.is_empty());
    }

    #[test]
    fn produce_below_three_is_advertised_but_not_served() {
        assert_eq!(range(ApiKey::Produce), Some((0, 12)));
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert!(!is_served(ApiKey::Fetch, 13));
        assert!(!is_served(ApiKey::AddPartitionsToTxn, 0));
    }
}
