//! Clients that misbehave get the right outcome while a well-behaved client on the same shard keeps
//! receiving.

mod common;

use std::time::Duration;

use common::{receive, Broker, RawConn};
use sluice::client::{Client, Subscription};
use sluice_protocol::op::{Op, Publish};
use sluice_protocol::{ArchivedOp, ErrorCode};

const PAYLOAD_MAX: &str = "1024";

/// A subscriber on `shard` and a publisher, to check that delivery still works.
struct Bystander {
    subscriber: Client,
    sub: Subscription,
    publisher: Client,
    sent: usize,
}

impl Bystander {
    fn new(broker: &Broker, shard: u32) -> Bystander {
        let subscriber = broker.client_on_shard(shard);
        let sub = subscriber.subscribe("steady").unwrap();
        subscriber.flush().unwrap();
        Bystander {
            subscriber,
            sub,
            publisher: broker.client_on_shard(1 - shard),
            sent: 0,
        }
    }

    fn still_receives(&mut self) {
        let payload = format!("m{}", self.sent);
        self.publisher.publish("steady", &payload).unwrap();
        self.publisher.flush().unwrap();
        self.sent += 1;
        let got = receive(&self.sub, 1);
        assert_eq!(got[0].payload(), payload.as_bytes());
        assert!(!self.subscriber.is_closed());
    }
}

/// Reads frames until the server closes the connection; returns the error codes it sent.
fn error_codes_until_close(raw: &mut RawConn) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    while let Some(frame) = raw.read_frame() {
        if let ArchivedOp::Err(e) = frame.op() {
            codes.push(ErrorCode::from_u16(e.code.to_native()));
        }
    }
    codes
}

#[test]
fn garbage_gets_a_malformed_frame_error_and_a_close() {
    let broker = Broker::start(&["--max-payload", PAYLOAD_MAX]);
    let mut bystander = Bystander::new(&broker, 0);
    let mut raw = broker.raw_on_shard(0);
    let mut garbage = vec![16, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    garbage.extend_from_slice(b"not an rkyv op!!");
    raw.send_bytes(&garbage);
    assert_eq!(
        error_codes_until_close(&mut raw),
        vec![ErrorCode::MalformedFrame]
    );
    bystander.still_receives();
    assert!(broker.wait_for_log("bad frame"));
}

#[test]
fn a_valid_checksum_over_a_bad_body_is_refused() {
    let broker = Broker::start(&[]);
    let mut bystander = Bystander::new(&broker, 1);
    let mut raw = broker.raw_on_shard(1);
    let body = [0xffu8; 40];
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    raw.send_bytes(&frame);
    assert_eq!(
        error_codes_until_close(&mut raw),
        vec![ErrorCode::MalformedFrame]
    );
    bystander.still_receives();
}

#[test]
fn an_oversized_frame_is_refused_from_its_header() {
    let broker = Broker::start(&["--max-payload", PAYLOAD_MAX]);
    let mut bystander = Bystander::new(&broker, 0);
    let mut raw = broker.raw_on_shard(0);
    // Announce 100 MiB and send only the header: the server must not wait for the body.
    let mut header = (100u32 << 20).to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    raw.send_bytes(&header);
    assert_eq!(
        error_codes_until_close(&mut raw),
        vec![ErrorCode::FrameTooLarge]
    );
    bystander.still_receives();
}

#[test]
fn an_oversized_payload_is_refused_with_payload_too_large() {
    let broker = Broker::start(&["--max-payload", PAYLOAD_MAX]);
    let mut bystander = Bystander::new(&broker, 1);
    let mut raw = broker.raw_on_shard(1);
    let payload = vec![7u8; 4096];
    raw.send(&Op::Pub(Publish {
        subject: "steady",
        reply: None,
        headers: b"",
        payload: &payload,
        ack: false,
    }));
    assert_eq!(
        error_codes_until_close(&mut raw),
        vec![ErrorCode::PayloadTooLarge]
    );
    bystander.still_receives();
    assert_eq!(bystander.sent, 1, "the oversized message was not delivered");
    assert!(bystander
        .sub
        .next_timeout(Duration::from_millis(200))
        .is_none());
}

#[test]
fn a_client_that_vanishes_mid_frame_is_cleaned_up() {
    let broker = Broker::start(&[]);
    let mut bystander = Bystander::new(&broker, 0);
    let mut raw = broker.raw_on_shard(0);
    let mut wire = Vec::new();
    sluice_protocol::FrameEncoder::new().encode(
        &Op::Pub(Publish {
            subject: "steady",
            reply: None,
            headers: b"",
            payload: b"never completed",
            ack: false,
        }),
        &mut wire,
    );
    raw.send_bytes(&wire[..wire.len() / 2]);
    drop(raw);
    assert!(broker.wait_for_log("client went away mid-frame"));
    bystander.still_receives();
    assert_eq!(receive(&bystander.sub, 0).len(), 0);
    assert!(bystander
        .sub
        .next_timeout(Duration::from_millis(200))
        .is_none());
}

#[test]
fn a_client_that_skips_connect_is_refused() {
    let broker = Broker::start(&[]);
    let mut stream = std::net::TcpStream::connect(&broker.addr).unwrap();
    let mut wire = Vec::new();
    sluice_protocol::FrameEncoder::new().encode(&Op::Ping, &mut wire);
    std::io::Write::write_all(&mut stream, &wire).unwrap();
    let mut raw = RawConnLike::new(stream);
    assert_eq!(raw.codes(), vec![ErrorCode::ProtocolVersion]);
}

/// Reads error frames from a socket that never did the handshake.
struct RawConnLike {
    stream: std::net::TcpStream,
}

impl RawConnLike {
    fn new(stream: std::net::TcpStream) -> RawConnLike {
        stream.set_read_timeout(Some(common::PATIENCE)).unwrap();
        RawConnLike { stream }
    }

    fn codes(&mut self) -> Vec<ErrorCode> {
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut self.stream, &mut all);
        let mut buf = bytes::BytesMut::from(&all[..]);
        let mut codes = Vec::new();
        while let Ok(Some(frame)) = sluice_protocol::frame::decode(&mut buf, 1 << 20) {
            if let ArchivedOp::Err(e) = frame.op() {
                codes.push(ErrorCode::from_u16(e.code.to_native()));
            }
        }
        codes
    }
}
