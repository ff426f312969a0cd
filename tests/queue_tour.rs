//! The README's queue-group tour, run again and again: two members that each take two messages,
//! four messages published, and every message delivered every time, with members that tell the
//! server their maximum (`sluice sub --count`, NATS's auto-unsubscribe).

mod common;

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use common::Broker;

const ROUNDS: usize = 20;

/// `sluice sub jobs --queue workers --count 2`, once it says it is listening.
fn member(addr: &str) -> Child {
    common::start_listening(&[
        "sub", "jobs", "--queue", "workers", "--count", "2", "-s", addr,
    ])
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
        let published = common::sluice_cli()
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
    let broker = Broker::start(&[]);
    let reference = common::ReferenceNats::start();
    let mut urls = vec![format!("nats://{}", broker.nats_addr)];
    urls.extend(reference.as_ref().map(|r| format!("nats://{}", r.addr)));
    for url in urls {
        common::run_python_client("queue_tour.py", &[&url, &ROUNDS.to_string()]);
    }
}
