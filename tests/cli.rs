//! The `sluice` command line against a real broker: pub/sub lines, request/reply, exit codes, and a
//! clean stop on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{start_listening, Broker};

fn sluice() -> Command {
    common::sluice_cli()
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

#[test]
fn streams_and_consumers_from_the_command_line() {
    let broker = Broker::start(&[]);
    let s = ["-s", broker.addr.as_str()];
    let run = |args: &[&str]| {
        let output = sluice().args(args).args(s).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let added = run(&[
        "stream",
        "add",
        "orders",
        "--subjects",
        "orders.>",
        "--partitions",
        "1",
    ]);
    assert!(added.starts_with("stream orders"), "{added}");
    let acks = run(&["pub", "orders.eu", "order {n}", "--count", "3", "--ack"]);
    assert_eq!(acks, "0\t0\n0\t1\n0\t2\n");
    let consumed = run(&["consume", "orders", "--consumer", "cli", "--count", "3"]);
    assert_eq!(
        consumed,
        "0\t0\torders.eu\torder 0\n0\t1\torders.eu\torder 1\n0\t2\torders.eu\torder 2\n"
    );
    let info = run(&["consumer", "info", "orders", "cli"]);
    assert!(info.contains("pending 0  ack_pending 0"), "{info}");
    let replay = run(&[
        "consume",
        "orders",
        "--consumer",
        "replay",
        "--count",
        "1",
        "--from-offset",
        "2",
    ]);
    assert_eq!(replay, "0\t2\torders.eu\torder 2\n");
    let listed = run(&["stream", "ls"]);
    assert!(
        listed.lines().any(|l| l.starts_with("orders\t")),
        "{listed}"
    );
    let refused = sluice()
        .args(["pub", "nowhere", "x", "--ack"])
        .args(s)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("NoStream"), "{stderr}");
}

#[test]
fn tune_reports_this_machine_and_exits_zero() {
    let data = common::DataDir::new();
    let output = sluice()
        .args(["tune", "--data-dir"])
        .arg(&data.path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8(output.stdout).unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        report.contains(&format!("cpus: {cpus} online")),
        "the report names the CPU count:\n{report}"
    );
    assert!(report.contains("io_uring: ok"), "{report}");
    assert!(report.contains("memlock:"), "{report}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/irq-affinity");
    let dry = Command::new(script)
        .args(["lo", "--dry-run"])
        .output()
        .unwrap();
    assert!(dry.status.success(), "{dry:?}");
    assert!(String::from_utf8(dry.stdout)
        .unwrap()
        .contains("sluice serve --cpuset"));
}

#[test]
fn jetstream_streams_and_consumers_show_through_the_command_line() {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let broker = Broker::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(broker.nats_addr.as_str())
            .await
            .unwrap();
        let js = jetstream::new(client);
        let stream = js
            .create_stream(stream::Config {
                name: "JOBS".into(),
                subjects: vec!["jobs.>".into()],
                max_messages_per_subject: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        js.publish("jobs.train", "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some("trainers".into()),
                filter_subject: "jobs.train".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let s = ["-s", broker.addr.as_str()];
    let run = |args: &[&str]| {
        let output = sluice().args(args).args(s).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = run(&["stream", "ls"]);
    assert!(
        listed.lines().any(|l| l.starts_with("JOBS\tjobs.>")),
        "{listed}"
    );
    let info = run(&["stream", "info", "JOBS"]);
    assert!(info.contains("messages 1"), "{info}");
    assert!(info.contains("max_msgs_per_subject 3"), "{info}");
    assert!(info.contains("consumer trainers  pending 1"), "{info}");
    let consumer = run(&["consumer", "info", "JOBS", "trainers"]);
    assert!(
        consumer.contains("jetstream  pull  ack Explicit"),
        "{consumer}"
    );
    assert!(consumer.contains("filter jobs.train"), "{consumer}");
}

#[test]
fn a_server_list_is_served_by_the_first_that_answers() {
    let broker = Broker::start(&[]);
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let list = format!("{dead},{}", broker.addr);
    let out = sluice()
        .args(["stream", "ls", "-s", &list])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sluice()
        .args(["stream", "ls", "-s", &dead])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nothing answers at {dead}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot connect"), "{said}");
}
