//! The README's queue-group tour, run again and again: two members that each take two messages,
//! four messages published, and every message delivered every time, with members that tell the
//! server their maximum (`sluice sub --count`, NATS's auto-unsubscribe).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Broker;

const ROUNDS: usize = 20;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// `sluice sub jobs --queue workers --count 2`, once it says it is listening.
fn member(addr: &str) -> Child {
    let mut child = sluice()
        .args([
            "sub", "jobs", "--queue", "workers", "--count", "2", "-s", addr,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(first.starts_with("listening on"), "{first}");
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// The member's output once it exits by itself, or `None` if it does not within the patience.
fn finish(mut child: Child) -> Option<String> {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the member failed: {status}");
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return Some(out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_readme_queue_tour_delivers_every_message_every_time() {
    let broker = Broker::start(&[]);
    for round in 0..ROUNDS {
        let a = member(&broker.addr);
        let b = member(&broker.addr);
        let published = sluice()
            .args(["pub", "jobs", "job {n}", "--count", "4", "-s", &broker.addr])
            .output()
            .unwrap();
        assert!(published.status.success(), "{published:?}");
        let (a, b) = (finish(a), finish(b));
        let lines = |out: &Option<String>| -> Vec<String> {
            out.as_deref()
                .unwrap_or("")
                .lines()
                .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
                .collect()
        };
        let (got_a, got_b) = (lines(&a), lines(&b));
        assert_eq!(
            (got_a.len(), got_b.len()),
            (2, 2),
            "round {round}: each member gets its share: {got_a:?} {got_b:?}"
        );
        let mut all: Vec<String> = got_a.into_iter().chain(got_b).collect();
        all.sort();
        assert_eq!(all, ["job 0", "job 1", "job 2", "job 3"], "round {round}");
    }
}

#[test]
fn nats_py_members_that_auto_unsubscribe_get_every_message_every_time() {
    let Ok(python) = std::env::var("SLUICE_PYTHON") else {
        eprintln!("skipped: SLUICE_PYTHON is not set (./test sets it after installing nats-py)");
        return;
    };
    let broker = Broker::start(&[]);
    let reference = common::ReferenceNats::start();
    let mut urls = vec![format!("nats://{}", broker.nats_addr)];
    urls.extend(reference.as_ref().map(|r| format!("nats://{}", r.addr)));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/queue_tour.py");
    for url in urls {
        let output = Command::new(&python)
            .args([script, &url, &ROUNDS.to_string()])
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{url}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert_eq!(stdout.trim(), "ok", "{url}");
    }
}
