//! Users and permissions on both ports: credentials checked against argon2 and bcrypt hashes,
//! publish and subscribe allow/deny patterns enforced (refused, counted, never delivered), and the
//! per-user connection limit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{hash_with_sluice, Broker, DataDir};
use sluice::client::{Client, ClientError, ClientOptions};
use sluice_protocol::ErrorCode;

/// alice (argon2 password) may publish and subscribe under user.alice and use inboxes, but not
/// user.alice.secret; bob (bcrypt token) may do anything; carol may hold one connection.
fn secured_broker(dir: &DataDir) -> Broker {
    let alice = hash_with_sluice("alice-pw");
    assert!(alice.starts_with("$argon2id$"));
    let bob = bcrypt::hash("bob-token", 4).unwrap();
    let carol = hash_with_sluice("carol-pw");
    let config = format!(
        r#"
[[users]]
name = "alice"
password = "{alice}"
publish = {{ allow = ["user.alice.>"], deny = ["user.alice.secret.>"] }}
subscribe = {{ allow = ["user.alice.>", "_INBOX.>"], deny = ["user.alice.secret.>"] }}

[[users]]
name = "bob"
token = "{bob}"

[[users]]
name = "carol"
password = "{carol}"
max_connections = 1
"#
    );
    let path = dir.path.join("users.toml");
    std::fs::write(&path, config).unwrap();
    Broker::start(&["--config", path.to_str().unwrap()])
}

fn connect(
    addr: &str,
    user: Option<&str>,
    password: Option<&str>,
    token: Option<&str>,
) -> Result<Client, ClientError> {
    Client::connect_with(
        addr,
        ClientOptions {
            user: user.map(str::to_string),
            password: password.map(str::to_string),
            token: token.map(str::to_string),
            ..ClientOptions::default()
        },
    )
}

fn refused_code(result: Result<Client, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Server { code, .. }) => code,
        Err(other) => panic!("expected a server error, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    }
}

#[test]
fn native_port_checks_credentials_and_permissions() {
    let dir = DataDir::new();
    let broker = secured_broker(&dir);
    let addr = broker.addr.clone();
    assert_eq!(
        refused_code(connect(&addr, None, None, None)),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(
        refused_code(connect(&addr, Some("alice"), Some("wrong"), None)),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(
        refused_code(connect(&addr, None, None, Some("not-bobs"))),
        ErrorCode::AuthorizationFailed
    );
    let alice = connect(&addr, Some("alice"), Some("alice-pw"), None).unwrap();
    let bob = connect(&addr, None, None, Some("bob-token")).unwrap();
    let bobs = bob.subscribe("user.>").unwrap();
    bob.flush().unwrap();

    // Allowed: delivered.
    alice.publish("user.alice.audio", b"ok").unwrap();
    // Denied by the allow list and by the deny list: refused, never delivered.
    alice.publish("user.bob.audio", b"not alice's").unwrap();
    alice.publish("user.alice.secret.key", b"denied").unwrap();
    alice.flush().unwrap();
    let m = bobs
        .next_timeout(Duration::from_secs(5))
        .expect("the allowed message");
    assert_eq!(m.subject(), "user.alice.audio");
    assert!(
        bobs.next_timeout(Duration::from_millis(300)).is_none(),
        "nothing denied arrives"
    );

    // Subscriptions outside what alice may see are refused; inside, they work.
    let _wide = alice.subscribe("user.>").unwrap();
    let _secret = alice.subscribe("user.alice.>").unwrap();
    let own = alice.subscribe("user.alice.*").unwrap();
    alice.flush().unwrap();
    bob.publish("user.alice.video", b"for alice").unwrap();
    bob.publish("user.bob.video", b"not for alice").unwrap();
    bob.flush().unwrap();
    assert_eq!(
        own.next_timeout(Duration::from_secs(5)).unwrap().payload(),
        b"for alice"
    );
    let errors = alice.take_errors();
    let denied = errors
        .iter()
        .filter(|(code, _)| *code == ErrorCode::PermissionDenied)
        .count();
    assert_eq!(
        denied, 4,
        "two publishes and two subscriptions refused: {errors:?}"
    );
    assert!(
        !alice.is_closed(),
        "a permission error keeps the connection"
    );
    // Requests through an inbox are allowed.
    let reply = alice
        .request("user.alice.echo", b"x", Duration::from_millis(200))
        .err();
    assert!(matches!(reply, Some(ClientError::NoReply)), "{reply:?}");

    // The refusals are counted.
    let metrics = common::http_get(&broker.http_addr, "/metrics");
    let count = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    };
    assert_eq!(count("sluice_permission_errors_total"), 4.0);
    assert_eq!(count("sluice_auth_failures_total"), 3.0);
}

#[test]
fn per_user_connection_limit() {
    let dir = DataDir::new();
    let broker = secured_broker(&dir);
    let first = connect(&broker.addr, Some("carol"), Some("carol-pw"), None).unwrap();
    assert_eq!(
        refused_code(connect(&broker.addr, Some("carol"), Some("carol-pw"), None)),
        ErrorCode::AuthorizationFailed
    );
    // Other users are not limited by carol's limit.
    let _alice = connect(&broker.addr, Some("alice"), Some("alice-pw"), None).unwrap();
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        match connect(&broker.addr, Some("carol"), Some("carol-pw"), None) {
            Ok(c) => {
                again = Some(c);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(
        again.is_some(),
        "the slot comes back when the connection closes"
    );
}

/// A raw NATS connection: the exact texts a NATS client sees.
struct RawNats {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawNats {
    fn connect(addr: &str, connect_json: &str) -> RawNats {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut raw = RawNats {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let info = raw.line();
        assert!(info.starts_with("INFO "), "{info}");
        raw.send(&format!("CONNECT {connect_json}\r\n"));
        raw
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }
}

#[test]
fn nats_port_checks_credentials_and_permissions() {
    let dir = DataDir::new();
    let broker = secured_broker(&dir);
    let nats = broker.nats_addr.clone();

    let mut stranger = RawNats::connect(&nats, r#"{"verbose":false}"#);
    stranger.send("PING\r\n");
    assert_eq!(stranger.line(), "-ERR 'Authorization Violation'");
    let mut rest = String::new();
    let _ = stranger.reader.read_to_string(&mut rest);
    assert!(rest.is_empty(), "closed after the error: {rest:?}");

    let mut wrong = RawNats::connect(&nats, r#"{"user":"alice","pass":"nope"}"#);
    wrong.send("PING\r\n");
    assert_eq!(wrong.line(), "-ERR 'Authorization Violation'");

    let mut bob = RawNats::connect(&nats, r#"{"auth_token":"bob-token"}"#);
    bob.send("SUB user.> 1\r\nPING\r\n");
    assert_eq!(bob.line(), "PONG");

    let mut alice = RawNats::connect(&nats, r#"{"user":"alice","pass":"alice-pw"}"#);
    alice.send("PUB user.bob.x 3\r\nbad\r\nSUB user.> 9\r\nPUB user.alice.x 2\r\nok\r\nPING\r\n");
    assert_eq!(
        alice.line(),
        "-ERR 'Permissions Violation for Publish to \"user.bob.x\"'"
    );
    assert_eq!(
        alice.line(),
        "-ERR 'Permissions Violation for Subscription to \"user.>\"'"
    );
    assert_eq!(alice.line(), "PONG");
    // bob sees alice's allowed message only.
    assert_eq!(bob.line(), "MSG user.alice.x 1 2");
    assert_eq!(bob.line(), "ok");
    bob.send("PING\r\n");
    assert_eq!(bob.line(), "PONG", "nothing else arrived");
}

#[test]
fn bad_user_configurations_are_refused_at_start() {
    let dir = DataDir::new();
    for (i, (users, key)) in [
        ("[[users]]\nname = \"x\"\n", "users[0].password"),
        ("[[users]]\nname = \"x\"\npassword = \"plaintext\"\n", "users[0].password"),
        (
            "[[users]]\nname = \"x\"\npassword = \"$2b$04$abcdefghijklmnopqrstuv\"\npublish = { allow = [\"a..b\"] }\n",
            "users[0].publish",
        ),
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path.join(format!("bad{i}.toml"));
        std::fs::write(&path, users).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{users}: names {key}: {err}");
    }
}

#[test]
fn streams_are_reached_only_within_permissions() {
    use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
    let dir = DataDir::new();
    let broker = secured_broker(&dir);
    let alice = connect(&broker.addr, Some("alice"), Some("alice-pw"), None).unwrap();
    let bob = connect(&broker.addr, None, None, Some("bob-token")).unwrap();
    let stream = |name: &str, subject: &str| StreamConfig {
        name: name.into(),
        subjects: vec![subject.into()],
        partitions: 1,
        max_age_secs: None,
        max_bytes: None,
        created_ns: 0,
        jetstream: None,
        replicas: 1,
        placement: Vec::new(),
    };
    let consumer = |stream: &str| ConsumerConfig {
        stream: stream.into(),
        name: "reader".into(),
        deliver: DeliverPolicy::All,
        ack_wait_ms: 30_000,
        max_deliver: 5,
        max_ack_pending: 100,
        sid: 0,
        jetstream: None,
    };
    let denied = |r: Result<(), ClientError>| match r {
        Err(ClientError::Api { code, .. }) => code == ErrorCode::PermissionDenied,
        _ => false,
    };
    // alice may keep a stream of her own subjects, not of bob's, nor one reaching her secrets.
    alice
        .stream_add(&stream("ALICE", "user.alice.jobs.>"))
        .unwrap();
    assert!(denied(
        alice
            .stream_add(&stream("WIDE", "user.alice.>"))
            .map(|_| ())
    ));
    bob.stream_add(&stream("BOBS", "user.bob.>")).unwrap();
    bob.publish_durable("user.bob.note", b"bob's").unwrap();
    assert!(denied(alice.stream_info("BOBS").map(|_| ())));
    assert!(denied(alice.consume(consumer("BOBS")).map(|_| ())));
    assert!(denied(alice.stream_remove("BOBS")));
    // Within her permissions it all works.
    alice.publish_durable("user.alice.jobs.1", b"job").unwrap();
    let jobs = alice.consume(consumer("ALICE")).unwrap();
    let m = jobs
        .next_timeout(Duration::from_secs(5))
        .expect("her own job");
    assert_eq!(m.payload(), b"job");
    assert_eq!(
        bob.stream_info("BOBS").unwrap().messages(),
        1,
        "bob's stream untouched"
    );
}
