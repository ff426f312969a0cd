//! The `sluice` command line against a real broker: pub/sub lines, request/reply, exit codes, and a
//! clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Broker;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Starts a CLI command that subscribes and waits until it says it is listening.
fn start_listening(args: &[&str]) -> std::process::Child {
    let mut child = sluice()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(
        first.starts_with("listening on") || first.starts_with("answering on"),
        "{first}"
    );
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn pub_with_count_reaches_sub_with_sequence_numbers() {
    let broker = Broker::start(&[]);
    let sub = start_listening(&["sub", "user.*.text", "-s", &broker.addr, "--count", "3"]);
    let status = sluice()
        .args([
            "pub",
            "user.7.text",
            "msg {n}",
            "-s",
            &broker.addr,
            "--count",
            "3",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let output = sub.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "user.7.text\tmsg 0\nuser.7.text\tmsg 1\nuser.7.text\tmsg 2\n"
    );
}

#[test]
fn request_prints_the_reply_of_a_reply_command() {
    let broker = Broker::start(&[]);
    let mut replier = start_listening(&["reply", "svc.echo", "-s", &broker.addr]);
    let output = sluice()
        .args(["request", "svc.echo", "ping", "-s", &broker.addr])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "ping\n");
    let fixed = start_listening(&[
        "reply",
        "svc.fixed",
        "pong",
        "-s",
        &broker.addr,
        "--count",
        "1",
    ]);
    let output = sluice()
        .args(["request", "svc.fixed", "ping", "-s", &broker.addr])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "pong\n");
    assert!(fixed.wait_with_output().unwrap().status.success());
    replier.kill().unwrap();
    let _ = replier.wait();
}

#[test]
fn a_request_without_a_replier_fails_with_a_message_and_a_nonzero_code() {
    let broker = Broker::start(&[]);
    let output = sluice()
        .args([
            "request",
            "nobody",
            "x",
            "-s",
            &broker.addr,
            "--timeout-ms",
            "200",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("request to nobody failed"), "{stderr}");
}

#[test]
fn commands_against_no_server_fail_cleanly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = sluice()
        .args(["pub", "a", "b", "-s", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("cannot connect"));
}

#[test]
fn sigterm_stops_the_broker_with_exit_code_zero() {
    let mut broker = Broker::start(&[]);
    let client = broker.client();
    let sub = client.subscribe("a").unwrap();
    client.flush().unwrap();
    let status = broker
        .terminate(Duration::from_secs(10))
        .expect("the broker exits within the grace period");
    assert!(status.success(), "{status:?}");
    // The connected client is told and then sees the end of the stream.
    assert!(sub.next_timeout(common::PATIENCE).is_none());
    assert!(client.is_closed());
    let codes: Vec<_> = client.take_errors().into_iter().map(|(c, _)| c).collect();
    assert_eq!(codes, vec![sluice_protocol::ErrorCode::ShuttingDown]);
}
