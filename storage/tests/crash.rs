//! Crash test: a child process (this test binary, re-run) appends under `FsyncPolicy::Always` and
//! reports every acknowledged offset through a pipe; the parent SIGKILLs it at a random moment,
//! reopens the log and checks that every acknowledged record is there with the right bytes and that
//! the log ends cleanly. The same directory carries over from round to round, so each round also
//! recovers on top of the previous recoveries.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{run, Scratch};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

const ROUNDS: u64 = 50;
const CHILD_DIR: &str = "SLUICE_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "SLUICE_CRASH_CHILD_ROUND";
const WRITERS: u64 = 16;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

/// The body of record `id`: names it, and its length varies with it.
fn body_of(id: u64) -> Bytes {
    let mut b = format!("id={id};").into_bytes();
    b.resize(b.len() + (id as usize * 131) % 300, b'0' + (id % 10) as u8);
    Bytes::from(b)
}

/// The child's side: append until killed, printing `ack OFFSET ID` for each acknowledged record.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // Only meaningful when the crash test runs this binary as its child.
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    run(move || async move {
        let log = Rc::new(PartitionLog::open(&dir, config()).await.unwrap());
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    for n in 0.. {
                        let id = (round * WRITERS + writer) * 1_000_000 + n;
                        let offset = log.append(&[body_of(id)]).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {offset} {id}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = Scratch::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut rounds_with_acks = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir.path)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20 + fastrand::u64(..120)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let mut this_round = 0;
        for line in lines.lock().unwrap().iter() {
            let mut words = line.split_whitespace();
            if words.next() != Some("ack") {
                continue;
            }
            let offset: u64 = words.next().unwrap().parse().unwrap();
            let id: u64 = words.next().unwrap().parse().unwrap();
            let earlier = acked.insert(offset, id);
            assert!(earlier.is_none(), "offset {offset} acknowledged twice");
            this_round += 1;
        }
        let expected = acked.clone();
        let path = dir.path.clone();
        run(move || async move {
            let log = PartitionLog::open(&path, config()).await.unwrap();
            let end = log.next_offset();
            if let Some((&last, _)) = expected.iter().next_back() {
                assert!(
                    end > last,
                    "round {round}: log ends at {end}, offset {last} was acked"
                );
            }
            // Read everything: the log must end cleanly, and every acked record must be intact.
            let mut from = log.first_offset();
            let mut seen = 0u64;
            while from < end {
                let records = log.read(from, 1 << 20).await.unwrap();
                assert!(!records.is_empty());
                for r in &records {
                    if let Some(&id) = expected.get(&r.offset) {
                        assert_eq!(r.body, body_of(id), "round {round}: offset {}", r.offset);
                        seen += 1;
                    }
                }
                from = records.last().unwrap().offset + 1;
            }
            assert_eq!(
                seen,
                expected.len() as u64,
                "round {round}: acked records missing"
            );
            log.close().await.unwrap();
        });
        rounds_with_acks += u64::from(this_round > 0);
    }
    println!("{} acknowledged records over {ROUNDS} rounds", acked.len());
    assert!(
        rounds_with_acks >= ROUNDS / 2,
        "most children were killed after acknowledging something ({rounds_with_acks} of {ROUNDS})"
    );
}
