//! An idempotent Kafka producer's retry after the broker restarted: the broker recalls the
//! producer's latest batches from the log, answers the retry with where the batch was stored and
//! stores nothing twice, and refuses a gap. Spoken with the `kafka-protocol` crate's encoders, as
//! a client would (no client no one here wrote can be made to retry across a restart on cue).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use common::{Broker, DataDir, Ports};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const PRODUCER: i64 = 4242;

fn batch(first_sequence: i32, count: i32) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: PRODUCER,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: first_sequence + i,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("seq {}", first_sequence + i))),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, &records, &options).unwrap();
    out.freeze()
}

/// Sends one produce (v3, acks=all) and returns the partition's (error code, base offset).
fn produce(addr: &str, records: Bytes) -> (i16, i64) {
    let version = 3;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("idem")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("restart-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, ProduceRequest::header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(&(body.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    let mut answer = Bytes::from(answer);
    ResponseHeader::decode(&mut answer, ProduceResponse::header_version(version)).unwrap();
    let response = ProduceResponse::decode(&mut answer, version).unwrap();
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[test]
fn a_retry_across_a_restart_is_answered_with_the_first_offsets_and_stored_once() {
    let data = DataDir::new();
    let ports = Ports::fixed();
    let mut broker = Broker::start_at(&data.path, &ports, &[]);
    broker
        .client()
        .stream_add(&sluice::api::StreamConfig {
            partitions: 1,
            ..sluice::api::StreamConfig::new("idem", vec!["idem".into()])
        })
        .unwrap();
    assert_eq!(produce(&broker.kafka_addr, batch(0, 3)), (0, 0));
    assert_eq!(produce(&broker.kafka_addr, batch(3, 2)), (0, 3));
    broker.kill();

    let broker = Broker::start_at(&data.path, &ports, &[]);
    // The retry of the last batch is recognised, and so is the one before it.
    assert_eq!(produce(&broker.kafka_addr, batch(3, 2)), (0, 3));
    assert_eq!(produce(&broker.kafka_addr, batch(0, 3)), (0, 0));
    // A gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER); the next batch in sequence is stored.
    assert_eq!(produce(&broker.kafka_addr, batch(9, 1)).0, 45);
    assert_eq!(produce(&broker.kafka_addr, batch(5, 1)), (0, 5));
    let info = broker.client().stream_info("idem").unwrap();
    assert_eq!(info.partitions[0].messages, 6, "nothing was stored twice");
}
