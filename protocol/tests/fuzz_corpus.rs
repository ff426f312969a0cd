//! Replays the fuzzers' corpora (`fuzz/corpus/`) through the decoders, the CONNECT parser and the JetStream codecs, as
//! the fuzz targets do, so every input the fuzzers found interesting stays covered by the normal
//! test run.

use std::path::PathBuf;

use bytes::BytesMut;
use sluice_protocol::frame::decode;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    inputs
}

fn decode_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf, 1 << 20) {
                Ok(Some(frame)) => {
                    let _ = frame.op().name();
                    frames.push(frame.bytes().to_vec());
                }
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    frames
}

#[test]
fn the_frame_decode_corpus_decodes_the_same_whatever_the_split() {
    let inputs = corpus("frame_decode");
    assert!(inputs.len() >= 10, "corpus has {} inputs", inputs.len());
    for data in inputs {
        if let Some((&split, rest)) = data.split_first() {
            let at = (split as usize).min(rest.len());
            assert_eq!(decode_all(&[&rest[..at], &rest[at..]]), decode_all(&[rest]));
        }
    }
}

#[test]
fn the_frame_body_corpus_never_panics_and_some_inputs_are_valid_ops() {
    let inputs = corpus("frame_body");
    assert!(inputs.len() >= 10, "corpus has {} inputs", inputs.len());
    let mut valid = 0;
    for body in &inputs {
        let mut wire = (body.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        wire.extend_from_slice(body);
        if decode_all(&[&wire]).len() == 1 {
            valid += 1;
        }
    }
    assert!(valid > 0, "the fuzzer found no valid operation bodies");
}

#[test]
fn the_nats_decode_corpus_decodes_the_same_whatever_the_split() {
    use sluice_protocol::nats::{decode as nats_decode, ClientOp, CONTROL_LINE_BYTES_MAX};
    fn all(chunks: &[&[u8]]) -> Vec<ClientOp> {
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Ok(Some(op)) = nats_decode(&mut buf, 1 << 20, CONTROL_LINE_BYTES_MAX) {
                ops.push(op);
            }
        }
        ops
    }
    let inputs = corpus("nats_decode");
    assert!(inputs.len() >= 10, "corpus has {} inputs", inputs.len());
    let mut decoded = 0;
    for data in inputs {
        if let Some((&split, rest)) = data.split_first() {
            let at = (split as usize).min(rest.len());
            let whole = all(&[rest]);
            let parts = all(&[&rest[..at], &rest[at..]]);
            assert!(whole.starts_with(&parts) || parts.starts_with(&whole));
            decoded += whole.len();
        }
    }
    assert!(decoded > 0, "the corpus holds no valid operation");
}

#[test]
fn the_nats_connect_corpus_never_panics_and_parsed_options_survive_a_round_trip() {
    use sluice_protocol::nats::parse_connect;
    let inputs = corpus("nats_connect");
    assert!(inputs.len() >= 10, "corpus has {} inputs", inputs.len());
    let (mut parsed, mut refused) = (0, 0);
    for data in inputs {
        match parse_connect(&data) {
            Ok(options) => {
                // As the fuzz target: written back as JSON, the options parse the same.
                let json = format!(
                    r#"{{"verbose":{},"echo":{},"no_responders":{},"headers":{},"user":{},"pass":{},"auth_token":{}}}"#,
                    options.verbose,
                    options.echo,
                    options.no_responders,
                    options.headers,
                    quoted(&options.user),
                    quoted(&options.pass),
                    quoted(&options.auth_token),
                );
                assert_eq!(parse_connect(json.as_bytes()), Ok(options), "{json}");
                parsed += 1;
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        parsed > 0 && refused > 0,
        "{parsed} parsed, {refused} refused"
    );
}

/// A JSON string literal (or `null`), escaping every character that is not printable ASCII.
fn quoted(text: &Option<String>) -> String {
    let Some(text) = text else {
        return "null".into();
    };
    let mut out = String::from("\"");
    for unit in text.encode_utf16() {
        match unit {
            0x20..=0x7e if unit != u16::from(b'"') && unit != u16::from(b'\\') => {
                out.push(char::from(unit as u8))
            }
            _ => out.push_str(&format!("\\u{unit:04x}")),
        }
    }
    out.push('"');
    out
}

#[test]
fn the_jetstream_corpus_holds_every_invariant_of_the_decoders() {
    use sluice_protocol::jetstream::{check_decoders, json, subject};
    let inputs = corpus("jetstream");
    assert!(inputs.len() >= 20, "corpus has {} inputs", inputs.len());
    let (mut subjects, mut configs) = (0, 0);
    for data in &inputs {
        check_decoders(data);
        let text = String::from_utf8_lossy(data);
        if !matches!(
            subject::parse_api_subject(&text),
            None | Some(subject::ApiSubject::Unknown)
        ) {
            subjects += 1;
        }
        if json::parse_request::<json::ConsumerCreateRequest>(data)
            .is_ok_and(|r| !r.stream_name.is_empty())
        {
            configs += 1;
        }
    }
    assert!(
        subjects > 0 && configs > 0,
        "{subjects} API subjects, {configs} consumer configs"
    );
}

#[test]
fn the_kafka_request_corpus_never_panics_and_real_requests_decode() {
    use sluice_protocol::kafka::{batch, decode_served, request_size, unsupported, RequestHead};
    let inputs = corpus("kafka_request");
    assert!(inputs.len() >= 10, "corpus has {} inputs", inputs.len());
    let mut decoded = 0;
    for data in &inputs {
        let _ = request_size(data);
        let Ok(head) = RequestHead::peek(data) else {
            continue;
        };
        let _ = unsupported::answer(&head, bytes::Bytes::copy_from_slice(data));
        if let Ok((_, request)) = decode_served(&head, bytes::Bytes::copy_from_slice(data)) {
            decoded += 1;
            if let sluice_protocol::kafka::codec::messages::RequestKind::Produce(produce) = request
            {
                for topic in produce.topic_data {
                    for partition in topic.partition_data {
                        let records = partition.records.unwrap_or_default();
                        for (bytes, _) in batch::split(&records, 1 << 20).unwrap_or_default() {
                            let _ = batch::records(&bytes);
                        }
                    }
                }
            }
        }
    }
    // The seeds are requests real clients sent.
    assert!(decoded >= 10, "only {decoded} inputs decode");
}

#[test]
fn the_cluster_frame_corpus_never_panics_and_every_frame_re_encodes_the_same() {
    use sluice_protocol::cluster::ClusterFrame;
    let inputs = corpus("cluster_frame");
    assert!(inputs.len() >= 8, "corpus has {} inputs", inputs.len());
    let mut decoded = 0;
    for data in &inputs {
        let mut rest = &data[..];
        while let Ok(Some((frame, used))) = ClusterFrame::decode(rest) {
            let mut again = BytesMut::new();
            frame.encode(&mut again);
            assert_eq!(&again[..], &rest[..used]);
            rest = &rest[used..];
            decoded += 1;
        }
    }
    // The seeds are frames a node sends.
    assert!(decoded >= 9, "only {decoded} frames decode");
}
