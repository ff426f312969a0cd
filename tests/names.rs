//! Names stay names: stream, consumer and user names follow one rule (printable, no whitespace,
//! none of `. * > / \`, 1 to 255 bytes), and a name that could lead out of the data directory is
//! refused with a clear error; nothing is written outside the data directory, and the broker goes
//! on serving.

mod common;

use common::{Broker, DataDir};
use sluice::api::{ConsumerConfig, DeliverPolicy, StreamConfig};
use sluice::client::ClientError;
use sluice_protocol::ErrorCode;

fn consumer(name: &str) -> ConsumerConfig {
    ConsumerConfig {
        stream: "jobs".into(),
        name: name.into(),
        deliver: DeliverPolicy::All,
        ack_wait_ms: 30_000,
        max_deliver: 5,
        max_ack_pending: 100,
        sid: 0,
        jetstream: None,
    }
}

fn stream(name: &str) -> StreamConfig {
    StreamConfig {
        name: name.into(),
        subjects: vec![format!("names.{}", fastrand::u32(..))],
        partitions: 1,
        max_age_secs: None,
        max_bytes: None,
        created_ns: 0,
        jetstream: None,
        replicas: 1,
        placement: Vec::new(),
    }
}

#[test]
fn names_that_would_leave_the_data_directory_are_refused_and_nothing_is_written_outside() {
    let data = DataDir::new();
    let mut broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    client
        .stream_add(&StreamConfig {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            partitions: 2,
            max_age_secs: None,
            max_bytes: None,
            created_ns: 0,
            jetstream: None,
            replicas: 1,
            placement: Vec::new(),
        })
        .unwrap();
    let token = format!("sluice-names-{:x}", fastrand::u64(..));
    let outside = std::env::temp_dir().join(&token);
    let streams_dir = data.path.join("streams");
    let bad = [
        outside.display().to_string(),
        format!("../../../../../../../..{}", outside.display()),
        streams_dir.display().to_string(),
        format!("{token}/x"),
        format!("..\\{token}"),
        "..".into(),
        "a.b".into(),
        "a b".into(),
        "a*".into(),
        "a>".into(),
        "tab\there".into(),
        "n".repeat(256),
        String::new(),
    ];
    for name in &bad {
        match client.consume(consumer(name)) {
            Err(ClientError::Api { code, message }) => {
                assert_eq!(code, ErrorCode::BadRequest, "consumer {name:?}: {message}");
                assert!(message.contains("invalid consumer name"), "{message}");
            }
            Err(e) => panic!("consumer {name:?}: unexpected error {e}"),
            Ok(_) => panic!("consumer {name:?} was accepted"),
        }
        match client.stream_add(&stream(name)) {
            Err(ClientError::Api { code, message }) => {
                assert_eq!(code, ErrorCode::BadRequest, "stream {name:?}: {message}");
                assert!(message.contains("invalid stream name"), "{message}");
            }
            Err(e) => panic!("stream {name:?}: unexpected error {e}"),
            Ok(_) => panic!("stream {name:?} was accepted"),
        }
    }
    for leftover in [
        outside.clone(),
        outside.with_extension("json"),
        std::env::temp_dir().join(format!("{token}.json")),
        streams_dir.with_extension("json.json"),
    ] {
        assert!(!leftover.exists(), "{} was written", leftover.display());
    }

    // The broker goes on serving: a well-named consumer works, and so does a restart.
    client.publish_durable("jobs.1", "work").unwrap();
    let worker = client.consume(consumer("worker-1")).unwrap();
    let message = worker
        .next_timeout(common::PATIENCE)
        .expect("the valid consumer gets the message");
    assert_eq!(message.payload(), b"work");
    drop(worker);
    drop(client);
    broker.terminate(common::PATIENCE).expect("a clean stop");
    let broker = Broker::start_in(&data.path, &[]);
    let names: Vec<String> = broker
        .client()
        .stream_list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(names.contains(&"jobs".to_string()), "{names:?}");
}

#[test]
fn a_user_name_outside_the_rule_is_refused_at_start() {
    let dir = DataDir::new();
    let config = dir.path.join("sluice.toml");
    std::fs::write(
        &config,
        "[[users]]\nname = \"../admin\"\ntoken = \"$2b$04$abcdefghijklmnopqrstuu5pSGs1nBlNyzQ6XvXK3c7dK4t3sPWG.\"\n",
    )
    .unwrap();
    let output = common::sluice_cli()
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--nats",
            "off",
            "--http",
            "off",
            "--kafka",
            "off",
        ])
        .arg("--data-dir")
        .arg(&dir.path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the broker started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("users[0].name"), "{stderr}");
}
