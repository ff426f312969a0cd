//! The NATS port byte for byte, with a raw socket: INFO first, PING/PONG, limits answered with
//! nats-server's -ERR texts, a malformed CONNECT refused, stale connections closed, and JSON acks for publishes to streams.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Broker, PATIENCE};
use sluice::api::StreamConfig;

struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(&broker.nats_addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut raw = Raw {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        let info = raw.line();
        assert!(info.starts_with("INFO {"), "{info}");
        assert!(
            info.contains("\"headers\":true") && info.contains("\"max_payload\""),
            "{info}"
        );
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len + 2];
        self.reader.read_exact(&mut buf).unwrap();
        buf.truncate(len);
        buf
    }
}

#[test]
fn verbose_clients_get_ok_and_messages_are_byte_exact() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(&broker);
    raw.send(b"CONNECT {\"verbose\":true}\r\n");
    assert_eq!(raw.line(), "+OK\r\n");
    raw.send(b"SUB a.* 9\r\nPING\r\n");
    assert_eq!(raw.line(), "+OK\r\n");
    assert_eq!(raw.line(), "PONG\r\n");
    raw.send(b"PUB a.b reply.to 5\r\nhello\r\n");
    assert_eq!(raw.line(), "+OK\r\n");
    assert_eq!(raw.line(), "MSG a.b 9 reply.to 5\r\n");
    assert_eq!(raw.payload(5), b"hello");
    raw.send(b"PUB bad..subject 1\r\nx\r\n");
    assert_eq!(raw.line(), "-ERR 'Invalid Publish Subject'\r\n");
}

#[test]
fn oversized_payloads_and_control_lines_close_with_the_nats_errors() {
    let broker = Broker::start(&["--max-payload", "1024"]);
    let mut raw = Raw::connect(&broker);
    raw.send(b"PUB a 2048\r\n");
    assert_eq!(raw.line(), "-ERR 'Maximum Payload Violation'\r\n");
    assert_eq!(raw.line(), "", "closed");
    let mut raw = Raw::connect(&broker);
    raw.send(&vec![b'x'; 5000]);
    assert_eq!(raw.line(), "-ERR 'Maximum Control Line Exceeded'\r\n");
    let mut raw = Raw::connect(&broker);
    raw.send(b"NOPE\r\n");
    assert_eq!(raw.line(), "-ERR 'Unknown Protocol Operation'\r\n");
}

#[test]
fn a_connect_that_is_not_a_json_object_is_refused_with_the_reason() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(&broker);
    raw.send(b"CONNECT [1,2]\r\n");
    assert_eq!(
        raw.line(),
        "-ERR 'Invalid CONNECT: the options must be a JSON object'\r\n"
    );
    assert_eq!(raw.line(), "", "closed");
    let mut raw = Raw::connect(&broker);
    raw.send(b"CONNECT {\"verbose\":\"yes\"}\r\n");
    assert_eq!(
        raw.line(),
        "-ERR 'Invalid CONNECT: verbose must be a boolean'\r\n"
    );
    assert_eq!(raw.line(), "", "closed");
    let mut raw = Raw::connect(&broker);
    raw.send(b"CONNECT null\r\nPING\r\n");
    assert_eq!(
        raw.line(),
        "PONG\r\n",
        "null is an empty CONNECT, as for nats-server"
    );
}

#[test]
fn a_client_that_never_answers_pings_is_closed_as_stale() {
    let broker = Broker::start(&["--nats-ping-interval-ms", "100"]);
    let mut raw = Raw::connect(&broker);
    raw.send(b"CONNECT {}\r\n");
    assert_eq!(raw.line(), "PING\r\n");
    raw.send(b"PONG\r\n");
    assert_eq!(raw.line(), "PING\r\n");
    assert_eq!(raw.line(), "PING\r\n");
    assert_eq!(raw.line(), "-ERR 'Stale Connection'\r\n");
    assert_eq!(raw.line(), "", "closed");
}

#[test]
fn a_publish_with_a_reply_to_a_stream_gets_a_json_ack() {
    let broker = Broker::start(&[]);
    broker
        .client()
        .stream_add(&StreamConfig {
            name: "orders".into(),
            subjects: vec!["orders.>".into()],
            partitions: 2,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    let mut raw = Raw::connect(&broker);
    raw.send(b"CONNECT {}\r\nSUB _INBOX.me.* 1\r\nPING\r\n");
    assert_eq!(raw.line(), "PONG\r\n");
    raw.send(b"PUB orders.eu _INBOX.me.1 5\r\nhello\r\n");
    let header = raw.line();
    assert!(header.starts_with("MSG _INBOX.me.1 1 "), "{header}");
    let len: usize = header
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ack: serde_json::Value = serde_json::from_slice(&raw.payload(len)).unwrap();
    assert_eq!(ack["stream"], "orders");
    assert_eq!(ack["seq"], 1);
    let partition = ack["partition"].as_u64().unwrap() as u32;
    let stored = broker.client().stream_get("orders", partition, 0).unwrap();
    assert_eq!(stored.payload, b"hello");
    assert_eq!(stored.subject, "orders.eu");
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn echo_false_keeps_a_clients_own_messages_from_it() {
    let broker = Broker::start(&[]);
    let mut quiet = Raw::connect(&broker);
    quiet.send(b"CONNECT {\"echo\":false}\r\nSUB chat 1\r\nPING\r\n");
    assert_eq!(quiet.line(), "PONG\r\n");
    let mut loud = Raw::connect(&broker);
    loud.send(b"CONNECT {}\r\nSUB chat 1\r\nPING\r\n");
    assert_eq!(loud.line(), "PONG\r\n");
    quiet.send(b"PUB chat 4\r\nmine\r\nPING\r\n");
    assert_eq!(quiet.line(), "PONG\r\n", "no echo before the pong");
    assert_eq!(loud.line(), "MSG chat 1 4\r\n");
    assert_eq!(loud.payload(4), b"mine");
    loud.send(b"PUB chat 6\r\ntheirs\r\n");
    assert_eq!(quiet.line(), "MSG chat 1 6\r\n");
    assert_eq!(quiet.payload(6), b"theirs");
}
