//! Client certificates (mTLS): with `--tls-verify` a client presents a certificate signed by
//! `--tls-ca` or its handshake fails; with `--tls-map` a client that sends no credentials is the
//! user its certificate names (nats-server's `verify_and_map`), with that user's permissions, on
//! both ports.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use bytes::BytesMut;
use common::{Broker, DataDir, ReferenceNats};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sluice_protocol::frame::decode;
use sluice_protocol::limits::PROTOCOL_VERSION;
use sluice_protocol::op::{Connect, Op, Publish, Subscribe};
use sluice_protocol::{ArchivedOp, ErrorCode, FrameEncoder};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate it signs, with these subject alternative names and subject parts (in DER
    /// order: the most general first).
    fn sign(&self, sans: &[&str], subject: &[(DnType, &str)], client: bool) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Identity { cert, key }
    }
}

struct Identity {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Identity {
    fn write(&self, dir: &DataDir, name: &str) -> (String, String) {
        let cert = dir.path.join(format!("{name}.pem"));
        let key = dir.path.join(format!("{name}-key.pem"));
        std::fs::write(&cert, self.cert.pem()).unwrap();
        std::fs::write(&key, self.key.serialize_pem()).unwrap();
        (
            cert.to_str().unwrap().to_string(),
            key.to_str().unwrap().to_string(),
        )
    }
}

/// The certificates of a test: a CA with the broker's certificate and clients' ones.
struct Pki {
    dir: DataDir,
    ca: Ca,
    server: Identity,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("Sluice Test CA");
        let server = ca.sign(&["localhost", "127.0.0.1"], &[], false);
        Pki {
            dir: DataDir::new(),
            ca,
            server,
        }
    }

    /// Starts a broker with TLS, client certificates verified against the CA, and these flags
    /// and configuration file.
    fn broker(&self, flags: &[&str], config: &str) -> Broker {
        let (cert, key) = self.server.write(&self.dir, "server");
        let ca = self.dir.path.join("ca.pem");
        std::fs::write(&ca, self.ca.cert.pem()).unwrap();
        let file = self.dir.path.join("sluice.toml");
        std::fs::write(&file, config).unwrap();
        let mut args = vec![
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--config",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        Broker::start(&args)
    }

    /// A rustls client configuration that trusts the CA and presents `identity`, if any.
    fn client(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some(id) => {
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.serialize_der()));
                let chain: Vec<CertificateDer<'static>> = vec![id.cert.der().clone()];
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_over(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> Tls {
    tcp.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// A native client over TLS, driven frame by frame.
struct Native {
    tls: Tls,
    buf: BytesMut,
    encoder: FrameEncoder,
}

/// What a native client reads back: the kind of each frame, with an error's code.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Info,
    Pong,
    Msg,
    Error(ErrorCode),
    Other(&'static str),
}

impl Native {
    fn connect(broker: &Broker, config: Arc<rustls::ClientConfig>) -> Native {
        let tcp = TcpStream::connect(&broker.addr).unwrap();
        let mut native = Native {
            tls: tls_over(tcp, config),
            buf: BytesMut::new(),
            encoder: FrameEncoder::new(),
        };
        native.send(&[Op::Connect(Connect {
            version: PROTOCOL_VERSION,
            name: "mtls-test",
            user: None,
            password: None,
            token: None,
        })]);
        native
    }

    fn send(&mut self, ops: &[Op<'_>]) {
        let mut wire = Vec::new();
        for op in ops {
            self.encoder.encode(op, &mut wire);
        }
        // A refused handshake shows on the first read; a write may fail too.
        let _ = self.tls.write_all(&wire);
    }

    /// Frames until a pong (included), or until the connection ends.
    fn until_pong(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        loop {
            while let Some(frame) = decode(&mut self.buf, 1 << 20).unwrap() {
                let kind = match frame.op() {
                    // The publish frame that follows a message's header: the message itself.
                    ArchivedOp::Pub(_) => continue,
                    ArchivedOp::Info(_) => Seen::Info,
                    ArchivedOp::Pong => Seen::Pong,
                    ArchivedOp::Msg { .. } => Seen::Msg,
                    ArchivedOp::Err(e) => Seen::Error(ErrorCode::from_u16(e.code.to_native())),
                    other => Seen::Other(other.name()),
                };
                let done = kind == Seen::Pong;
                seen.push(kind);
                if done {
                    return seen;
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tls.read(&mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return seen,
            }
        }
    }
}

/// A NATS client over TLS, driven line by line: INFO in the clear, then the handshake.
struct Nats {
    lines: BufReader<Tls>,
}

impl Nats {
    fn connect(broker: &Broker, config: Arc<rustls::ClientConfig>) -> Nats {
        let mut tcp = TcpStream::connect(&broker.nats_addr).unwrap();
        tcp.set_read_timeout(Some(common::PATIENCE)).unwrap();
        let mut info = Vec::new();
        let mut byte = [0u8; 1];
        while !info.ends_with(b"\r\n") {
            assert_eq!(tcp.read(&mut byte).unwrap(), 1, "INFO comes in the clear");
            info.push(byte[0]);
        }
        assert!(info.starts_with(b"INFO "));
        Nats {
            lines: BufReader::new(tls_over(tcp, config)),
        }
    }

    fn send(&mut self, text: &str) {
        let _ = self.lines.get_mut().write_all(text.as_bytes());
    }

    /// The next line, or `None` once the connection ends.
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_string()),
            _ => None,
        }
    }
}

/// alice is known by the DNS name in her certificate, bob by his certificate's subject; both
/// have permissions under their own names.
const USERS: &str = r#"
[[users]]
name = "alice"
publish = { allow = ["alice.>"] }
subscribe = { allow = ["alice.>"] }

[[users]]
name = "CN=bob,O=Sluice Test"
publish = { allow = ["bob.>"] }
subscribe = { allow = ["bob.>"] }
"#;

fn alice(pki: &Pki) -> Identity {
    pki.ca
        .sign(&["alice"], &[(DnType::CommonName, "Alice Liddell")], true)
}

fn bob(pki: &Pki) -> Identity {
    let subject = [
        (DnType::OrganizationName, "Sluice Test"),
        (DnType::CommonName, "bob"),
    ];
    pki.ca.sign(&[], &subject, true)
}

fn publish(subject: &str) -> Op<'_> {
    Op::Pub(Publish {
        subject,
        reply: None,
        headers: b"",
        payload: b"hi",
        ack: false,
    })
}

#[test]
fn a_mapped_certificate_is_its_user_with_its_permissions_on_the_native_port() {
    let pki = Pki::new();
    let broker = pki.broker(&["--tls-map"], USERS);
    let mut alice = Native::connect(&broker, pki.client(Some(&alice(&pki))));
    alice.send(&[
        Op::Sub(Subscribe {
            sid: 1,
            subject: "alice.in",
            queue: None,
        }),
        publish("alice.in"),
        publish("bob.in"),
        Op::Ping,
    ]);
    assert_eq!(
        alice.until_pong(),
        [
            Seen::Info,
            Seen::Msg,
            Seen::Error(ErrorCode::PermissionDenied),
            Seen::Pong
        ]
    );
    // The connection goes on after the refusal.
    alice.send(&[publish("alice.in"), Op::Ping]);
    assert_eq!(alice.until_pong(), [Seen::Msg, Seen::Pong]);

    // bob's certificate names him by its subject, in RFC 2253 form.
    let mut bob = Native::connect(&broker, pki.client(Some(&bob(&pki))));
    bob.send(&[publish("bob.in"), publish("alice.in"), Op::Ping]);
    assert_eq!(
        bob.until_pong(),
        [
            Seen::Info,
            Seen::Error(ErrorCode::PermissionDenied),
            Seen::Pong
        ]
    );
}

#[test]
fn a_mapped_certificate_is_its_user_with_its_permissions_on_the_nats_port() {
    let pki = Pki::new();
    let broker = pki.broker(&["--tls-map"], USERS);
    let mut alice = Nats::connect(&broker, pki.client(Some(&alice(&pki))));
    alice.send("CONNECT {\"verbose\":false}\r\nSUB alice.in 1\r\nPUB alice.in 2\r\nhi\r\n");
    alice.send("PUB bob.in 2\r\nhi\r\nPING\r\n");
    assert_eq!(alice.line().unwrap(), "MSG alice.in 1 2");
    assert_eq!(alice.line().unwrap(), "hi");
    assert_eq!(
        alice.line().unwrap(),
        "-ERR 'Permissions Violation for Publish to \"bob.in\"'"
    );
    assert_eq!(alice.line().unwrap(), "PONG");

    let mut bob = Nats::connect(&broker, pki.client(Some(&bob(&pki))));
    bob.send("CONNECT {\"verbose\":false}\r\nSUB bob.in 1\r\nPUB bob.in 2\r\nhi\r\nPING\r\n");
    assert_eq!(bob.line().unwrap(), "MSG bob.in 1 2");
    assert_eq!(bob.line().unwrap(), "hi");
    assert_eq!(bob.line().unwrap(), "PONG");
}

#[test]
fn a_certificate_that_names_no_user_is_refused_on_both_ports() {
    let pki = Pki::new();
    let broker = pki.broker(&["--tls-map"], USERS);
    let mallory = pki
        .ca
        .sign(&["mallory"], &[(DnType::CommonName, "mallory")], true);

    let mut nats = Nats::connect(&broker, pki.client(Some(&mallory)));
    nats.send("CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert_eq!(nats.line().unwrap(), "-ERR 'Authorization Violation'");
    assert_eq!(nats.line(), None, "the connection is closed");

    let mut native = Native::connect(&broker, pki.client(Some(&mallory)));
    native.send(&[Op::Ping]);
    assert_eq!(
        native.until_pong(),
        [Seen::Error(ErrorCode::AuthorizationFailed)]
    );
    assert!(broker.wait_for_log("CN=mallory"));
    assert!(broker.logged("authentication by client certificate failed"));

    // Users the certificates do name still get in.
    let mut alice = Native::connect(&broker, pki.client(Some(&alice(&pki))));
    alice.send(&[Op::Ping]);
    assert_eq!(alice.until_pong(), [Seen::Info, Seen::Pong]);
}

#[test]
fn without_a_certificate_or_with_one_of_another_ca_the_handshake_fails() {
    let pki = Pki::new();
    // Verification alone, without users: any certificate of the CA gets in.
    let broker = pki.broker(&["--tls-verify"], "");
    let stranger_ca = Ca::new("Another CA");
    let forged = stranger_ca.sign(&["alice"], &[(DnType::CommonName, "alice")], true);
    let attempts = [
        ("no certificate", pki.client(None)),
        ("another CA", pki.client(Some(&forged))),
    ];
    for (what, config) in attempts.iter() {
        let mut native = Native::connect(&broker, config.clone());
        native.send(&[Op::Ping]);
        assert_eq!(
            native.until_pong(),
            [],
            "{what}: no answer on the native port"
        );

        let mut nats = Nats::connect(&broker, config.clone());
        nats.send("CONNECT {}\r\nPING\r\n");
        assert_eq!(nats.line(), None, "{what}: no answer on the NATS port");
    }
    assert!(broker.wait_for_log("TLS handshake failed"));
    let metrics = common::http_get(&broker.http_addr, "/metrics");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_tls_handshake_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no handshake failures counted:\n{metrics}"));
    assert_eq!(failures, 4.0);

    // A client with a certificate of the CA is served meanwhile, on both ports.
    let carol = pki.ca.sign(&[], &[(DnType::CommonName, "carol")], true);
    let mut native = Native::connect(&broker, pki.client(Some(&carol)));
    native.send(&[Op::Ping]);
    assert_eq!(native.until_pong(), [Seen::Info, Seen::Pong]);
    let mut nats = Nats::connect(&broker, pki.client(Some(&carol)));
    nats.send("CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert_eq!(nats.line().unwrap(), "PONG");
}

#[test]
fn with_a_ca_alone_a_certificate_is_optional_but_checked_when_presented() {
    let pki = Pki::new();
    let broker = pki.broker(&[], "");
    let mut plain = Native::connect(&broker, pki.client(None));
    plain.send(&[Op::Ping]);
    assert_eq!(plain.until_pong(), [Seen::Info, Seen::Pong]);

    let forged = Ca::new("Another CA").sign(&[], &[(DnType::CommonName, "x")], true);
    let mut forged = Native::connect(&broker, pki.client(Some(&forged)));
    forged.send(&[Op::Ping]);
    assert_eq!(forged.until_pong(), [], "a certificate of another CA");
    assert!(broker.wait_for_log("TLS handshake failed"));
}

#[test]
fn client_certificate_settings_that_cannot_work_are_refused_at_start() {
    let dir = DataDir::new();
    let cases = [
        (&["--tls-map"][..], "tls_cert"),
        (&["--tls-ca", "/nonexistent/ca.pem"][..], "tls_cert"),
    ];
    for (flags, expected) in cases {
        let out = common::sluice_cli()
            .args(["serve", "--data-dir"])
            .arg(&dir.path)
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

/// nats-py presents its certificate through an `ssl.SSLContext`; the same script passes against
/// nats-server with `verify_and_map`, so the mapping is the one NATS clients know.
#[test]
fn nats_py_connects_with_a_client_certificate_as_against_nats_server() {
    let pki = Pki::new();
    let broker = pki.broker(&["--tls-map"], USERS);
    let ca = pki.dir.path.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let (alice_cert, alice_key) = alice(&pki).write(&pki.dir, "alice");
    let mallory = pki.ca.sign(&["mallory"], &[], true);
    let (mallory_cert, mallory_key) = mallory.write(&pki.dir, "mallory");
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
    let args = |url: &str| {
        let url = url.to_string();
        vec![
            url,
            ca.into(),
            alice_cert.clone(),
            alice_key.clone(),
            mallory_cert.clone(),
            mallory_key.clone(),
        ]
    };
    let run = |url: &str| {
        let args = args(url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run_python_client("nats_mtls.py", &args)
    };
    if !run(&format!("tls://localhost:{}", port(&broker.nats_addr))) {
        return;
    }

    let (cert, key) = pki.server.write(&pki.dir, "server");
    let config = pki.dir.path.join("nats-server.conf");
    std::fs::write(
        &config,
        format!(
            r#"
tls {{ cert_file: "{cert}", key_file: "{key}", ca_file: "{ca}", verify_and_map: true }}
authorization {{ users = [
  {{ user: "alice", permissions: {{ publish: "alice.>", subscribe: "alice.>" }} }}
] }}
"#
        ),
    )
    .unwrap();
    let Some(reference) = ReferenceNats::start_with(&["-c", config.to_str().unwrap()]) else {
        return;
    };
    run(&format!("tls://localhost:{}", port(&reference.addr)));
}
