//! Answers to requests of a served API at a version Sluice does not advertise (a newer one than
//! it serves, such as a Fetch naming topics by id): the response of that version, with
//! UNSUPPORTED_VERSION wherever it carries an error, for each topic, partition, group or resource
//! the request named, so that the client sees the protocol's error and the connection stays up.
//! A version the codec cannot read at all has no answer; the connection is closed, as Kafka
//! closes it.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use super::code::UNSUPPORTED_VERSION as E;
use super::{encode_response, RequestHead};

/// The framed answer to an unadvertised version of a served API, if the codec reads the request.
pub fn answer(head: &RequestHead, request: Bytes) -> Option<Bytes> {
    let api = head.api()?;
    let crate_range = api.valid_versions();
    if head.version < crate_range.min || head.version > crate_range.max {
        return None;
    }
    let mut request = request;
    RequestHeader::decode(&mut request, api.request_header_version(head.version)).ok()?;
    let body = RequestKind::decode(api, &mut request, head.version).ok()?;
    let encoded = match body {
        // A produce with acks=0 is never answered.
        RequestKind::Produce(r) if r.acks == 0 => return None,
        RequestKind::Produce(r) => encode_response(head, &produce(r)),
        RequestKind::Fetch(_) => {
            encode_response(head, &FetchResponse::default().with_error_code(E))
        }
        RequestKind::ListOffsets(r) => encode_response(head, &list_offsets(r)),
        RequestKind::Metadata(r) => encode_response(head, &metadata(r)),
        RequestKind::OffsetCommit(r) => encode_response(head, &offset_commit(r)),
        RequestKind::OffsetFetch(r) => encode_response(head, &offset_fetch(r)),
        RequestKind::DescribeGroups(r) => encode_response(head, &describe_groups(r)),
        RequestKind::DescribeConfigs(r) => encode_response(head, &describe_configs(r)),
        RequestKind::DescribeCluster(_) => {
            encode_response(head, &DescribeClusterResponse::default().with_error_code(E))
        }
        RequestKind::InitProducerId(_) => {
            encode_response(head, &InitProducerIdResponse::default().with_error_code(E))
        }
        RequestKind::CreateTopics(r) => encode_response(head, &create_topics(r)),
        RequestKind::DeleteTopics(r) => encode_response(head, &delete_topics(r)),
        _ => return None,
    };
    encoded.ok()
}

fn produce(r: ProduceRequest) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        r.topic_data
            .into_iter()
            .map(|t| {
                produce_response::TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                produce_response::PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_error_code(E)
                                    .with_base_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn list_offsets(r: ListOffsetsRequest) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                list_offsets_response::ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(E)
                                    .with_offset(-1)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn metadata(r: MetadataRequest) -> MetadataResponse {
    MetadataResponse::default().with_error_code(E).with_topics(
        r.topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                metadata_response::MetadataResponseTopic::default()
                    .with_error_code(E)
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
            })
            .collect(),
    )
}

fn offset_commit(r: OffsetCommitRequest) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(E)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn offset_fetch(r: OffsetFetchRequest) -> OffsetFetchResponse {
    OffsetFetchResponse::default()
        .with_error_code(E)
        .with_groups(
            r.groups
                .into_iter()
                .map(|g| {
                    offset_fetch_response::OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(E)
                })
                .collect(),
        )
}

fn describe_groups(r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default().with_groups(
        r.groups
            .into_iter()
            .map(|g| {
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(E)
            })
            .collect(),
    )
}

fn describe_configs(r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    DescribeConfigsResponse::default().with_results(
        r.resources
            .into_iter()
            .map(|c| {
                describe_configs_response::DescribeConfigsResult::default()
                    .with_resource_type(c.resource_type)
                    .with_resource_name(c.resource_name)
                    .with_error_code(E)
            })
            .collect(),
    )
}

fn create_topics(r: CreateTopicsRequest) -> CreateTopicsResponse {
    CreateTopicsResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(E)
            })
            .collect(),
    )
}

fn delete_topics(r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let names = r
        .topic_names
        .into_iter()
        .map(Some)
        .chain(r.topics.into_iter().map(|t| t.name));
    DeleteTopicsResponse::default().with_responses(
        names
            .map(|name| {
                delete_topics_response::DeletableTopicResult::default()
                    .with_name(name)
                    .with_error_code(E)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::versions;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn request<T: Encodable>(api: ApiKey, version: i16, body: &T) -> (RequestHead, Bytes) {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .encode(&mut out, api.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        let bytes = out.freeze();
        (RequestHead::peek(&bytes).unwrap(), bytes)
    }

    fn decoded<T: Decodable>(api: ApiKey, version: i16, mut frame: Bytes) -> T {
        let _size = bytes::Buf::get_i32(&mut frame);
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version));
        assert_eq!(header.unwrap().correlation_id, 7);
        T::decode(&mut frame, version).unwrap()
    }

    #[test]
    fn a_fetch_by_topic_id_gets_unsupported_version() {
        let (_, high) = versions::range(ApiKey::Fetch).unwrap();
        let (head, bytes) = request(ApiKey::Fetch, high + 1, &FetchRequest::default());
        let frame = answer(&head, bytes).expect("answered");
        let response: FetchResponse = decoded(ApiKey::Fetch, high + 1, frame);
        assert_eq!(response.error_code, E);
    }

    #[test]
    fn each_named_partition_of_a_newer_produce_gets_unsupported_version() {
        let (_, high) = versions::range(ApiKey::Produce).unwrap();
        let partition = produce_request::PartitionProduceData::default().with_index(3);
        let topic = produce_request::TopicProduceData::default()
            .with_topic_id(uuid::Uuid::from_u128(9))
            .with_partition_data(vec![partition]);
        let body = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![topic]);
        let (head, bytes) = request(ApiKey::Produce, high + 1, &body);
        let response: ProduceResponse =
            decoded(ApiKey::Produce, high + 1, answer(&head, bytes).unwrap());
        let [topic] = &response.responses[..] else {
            panic!("{response:?}")
        };
        assert_eq!(topic.topic_id.as_u128(), 9);
        assert_eq!(topic.partition_responses[0].index, 3);
        assert_eq!(topic.partition_responses[0].error_code, E);
    }

    #[test]
    fn a_version_the_codec_cannot_read_has_no_answer() {
        let group = StrBytes::from_static_str("g");
        let body = DescribeGroupsRequest::default().with_groups(vec![group.into()]);
        let (mut head, bytes) = request(ApiKey::DescribeGroups, 5, &body);
        head.version = ApiKey::DescribeGroups.valid_versions().max + 1;
        assert_eq!(answer(&head, bytes), None);
        // Nor does a produce with acks=0, which must not be answered at all.
        let (_, high) = versions::range(ApiKey::Produce).unwrap();
        let (head, bytes) = request(ApiKey::Produce, high + 1, &ProduceRequest::default());
        assert_eq!(answer(&head, bytes), None);
    }
}
