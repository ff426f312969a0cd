//! TLS on the client ports: a TLS client gets through on both, a plain one is refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{Broker, DataDir};
use futures::StreamExt;
use sluice_protocol::frame::decode;
use sluice_protocol::limits::PROTOCOL_VERSION;
use sluice_protocol::op::{Connect, Op};
use sluice_protocol::{ArchivedOp, FrameEncoder};

struct Certs {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: rustls_pki_types::CertificateDer<'static>,
}

fn certs(dir: &DataDir) -> Certs {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path.join("cert.pem");
    let key = dir.path.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    Certs {
        cert,
        key,
        der: made.cert.der().clone(),
    }
}

fn tls_broker(certs: &Certs) -> Broker {
    Broker::start(&[
        "--tls-cert",
        certs.cert.to_str().unwrap(),
        "--tls-key",
        certs.key.to_str().unwrap(),
    ])
}

#[test]
fn native_port_speaks_tls_only() {
    let dir = DataDir::new();
    let certs = certs(&dir);
    let broker = tls_broker(&certs);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(&broker.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut out = Vec::new();
    let mut encoder = FrameEncoder::new();
    encoder.encode(
        &Op::Connect(Connect {
            version: PROTOCOL_VERSION,
            name: "tls-test",
            user: None,
            password: None,
            token: None,
        }),
        &mut out,
    );
    encoder.encode(&Op::Ping, &mut out);
    tls.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed a TLS connection");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(frame) = decode(&mut buf, 1 << 20).unwrap() {
            seen.push(frame.op().name());
            if let ArchivedOp::Info(info) = frame.op() {
                assert_eq!(info.proto.to_native(), PROTOCOL_VERSION);
            }
        }
    }
    assert_eq!(seen, ["info", "pong"]);

    // A plain client gets nowhere.
    let plain = sluice::client::Client::connect_with(
        &broker.addr,
        sluice::client::ClientOptions {
            timeout: Duration::from_secs(3),
            ..Default::default()
        },
    );
    assert!(plain.is_err(), "a plain client is refused");
    assert!(broker.wait_for_log("TLS handshake failed"));
}

#[test]
fn nats_port_speaks_tls_as_nats_clients_expect() {
    let dir = DataDir::new();
    let certs = certs(&dir);
    let broker = tls_broker(&certs);
    let url = format!(
        "tls://localhost:{}",
        broker.nats_addr.rsplit(':').next().unwrap()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(certs.cert.clone())
            .require_tls(true)
            .connect(&url)
            .await
            .expect("a TLS NATS client connects");
        let mut sub = client.subscribe("secure.x").await.unwrap();
        client.flush().await.unwrap();
        // The subscription is in force once a probe comes back.
        let mut got = None;
        for _ in 0..50 {
            client.publish("secure.x", "over tls".into()).await.unwrap();
            client.flush().await.unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                got = Some(m);
                break;
            }
        }
        assert_eq!(&got.expect("a message over TLS").payload[..], b"over tls");
    });

    // A plain NATS client sees INFO announcing TLS, and then nothing but a closed connection.
    let tcp = TcpStream::connect(&broker.nats_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).unwrap();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let mut writer = tcp;
    let _ = writer.write_all(b"CONNECT {}\r\nPING\r\n");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("PONG"),
        "no plain-text service on a TLS port"
    );
}

#[test]
fn kafka_port_speaks_tls_to_kafka_clients() {
    if common::kcat().is_none() {
        return;
    }
    let dir = DataDir::new();
    let certs = certs(&dir);
    let broker = tls_broker(&certs);
    let tls = [
        "security.protocol=SSL".to_string(),
        format!("ssl.ca.location={}", certs.cert.display()),
    ];
    let (ok, _) = common::kcat_with(
        &broker.kafka_addr,
        &tls,
        &["-P", "-t", "secure.events"],
        "one\ntwo\nthree\n",
    );
    assert!(ok, "kcat produces over TLS");
    let (ok, read) = common::kcat_with(
        &broker.kafka_addr,
        &tls,
        &["-C", "-t", "secure.events", "-e", "-o", "beginning"],
        "",
    );
    assert!(ok, "kcat consumes over TLS");
    assert_eq!(read.lines().collect::<Vec<_>>(), ["one", "two", "three"]);

    // A plain Kafka client gets nowhere.
    let (ok, _) = common::kcat_with(&broker.kafka_addr, &[], &["-L"], "");
    assert!(!ok, "a plain Kafka client is refused");
    assert!(broker.wait_for_log("TLS handshake failed"));
}
