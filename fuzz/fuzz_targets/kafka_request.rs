//! Feeds arbitrary bytes to the Kafka request path as the port reads it: the size prefix, the
//! head, the decoder of every API and version served, and for a produce the record batches it
//! carries (read, and cut into one-record batches); for a version not served, the UNSUPPORTED_VERSION answer. Nothing may panic, whatever the bytes claim.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::kafka::codec::messages::RequestKind;
use sluice_protocol::kafka::{batch, decode_served, request_size, unsupported, RequestHead};

fuzz_target!(|data: &[u8]| {
    let _ = request_size(data);
    let Ok(head) = RequestHead::peek(data) else {
        return;
    };
    let _ = unsupported::answer(&head, Bytes::copy_from_slice(data));
    if let Ok((_, RequestKind::Produce(produce))) = decode_served(&head, Bytes::copy_from_slice(data))
    {
        for topic in produce.topic_data {
            for partition in topic.partition_data {
                let records = partition.records.unwrap_or_default();
                if let Ok(batches) = batch::split(&records, 1 << 20) {
                    for (bytes, _) in batches {
                        let _ = batch::records(&bytes);
                        // As a replicated partition's leader cuts it, one entry per record.
                        let _ = batch::one_per_record(&bytes);
                    }
                }
            }
        }
    }
});
