//! Many small streams on the real binary: one stream per user, one message each, cost little disk.
//! Segments reserve their space in steps as they fill, so a quiet stream holds one small step, not a
//! whole segment.
//!
//! `SLUICE_MANY_STREAMS=N` sets the number of streams (10,000 by default: about a minute and a
//! quarter in a debug build, since a stream added costs the same however many there are). The test
//! prints how long each stage took and the disk used per stream.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use common::{Broker, DataDir};
use sluice::api::StreamConfig;

/// Streams created by default.
const STREAMS_DEFAULT: usize = 10_000;

/// The environment variable that overrides `STREAMS_DEFAULT`.
const STREAMS_ENV: &str = "SLUICE_MANY_STREAMS";

/// Publishes in flight at once: enough to share each shard's fsyncs, few enough for the client.
const PUBLISHES_IN_FLIGHT_MAX: usize = 256;

/// Largest disk use allowed per stream with one small message (256 KiB): a segment's first
/// reservation step (64 KiB), its directories and the broker's per-stream files, with room to spare;
/// a whole reserved segment would be a thousand times more.
const DISK_BYTES_PER_STREAM_MAX: u64 = 256 * 1024;

/// Bytes the file system allocated under `path` (blocks, not apparent lengths), directories included.
fn allocated_bytes(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            total += allocated_bytes(&entry.unwrap().path());
        }
    }
    total
}

fn user_stream(n: usize) -> StreamConfig {
    StreamConfig::new(format!("user{n}"), vec![format!("users.{n}.>")])
}

#[test]
fn thousands_of_streams_with_one_message_each_take_little_disk() {
    let streams: usize = std::env::var(STREAMS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(STREAMS_DEFAULT);
    let data = DataDir::new();
    let broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    let before_bytes = allocated_bytes(&data.path);

    let started = Instant::now();
    for n in 0..streams {
        client.stream_add(&user_stream(n)).unwrap();
        if (n + 1) % (streams / 10).max(1) == 0 {
            let secs = started.elapsed().as_secs_f64();
            println!("{} streams created after {secs:.1} s", n + 1);
        }
    }
    let create_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut waiters = Vec::with_capacity(PUBLISHES_IN_FLIGHT_MAX);
    for n in 0..streams {
        waiters.push(
            client
                .publish_with_ack(&format!("users.{n}.hello"), b"x")
                .unwrap(),
        );
        if waiters.len() == PUBLISHES_IN_FLIGHT_MAX || n + 1 == streams {
            for waiter in waiters.drain(..) {
                let ack = waiter.wait().unwrap();
                assert_eq!(ack.offset, 0);
            }
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();

    // Stream info counts the bytes of records, not the space reserved for them.
    for n in [0, streams / 2, streams - 1] {
        let info = client.stream_info(&format!("user{n}")).unwrap();
        assert_eq!(info.messages(), 1);
        let bytes: u64 = info.partitions.iter().map(|p| p.bytes).sum();
        assert!(
            bytes < 4096,
            "user{n} reports {bytes} bytes for one message"
        );
    }

    let used_bytes = allocated_bytes(&data.path) - before_bytes;
    let per_stream_bytes = used_bytes / streams as u64;
    println!(
        "{streams} streams: created in {create_secs:.1} s, one message each published in \
         {publish_secs:.1} s; {used_bytes} bytes on disk, {per_stream_bytes} bytes per stream"
    );
    assert!(
        per_stream_bytes <= DISK_BYTES_PER_STREAM_MAX,
        "{per_stream_bytes} bytes on disk per stream"
    );
}

/// A stream added and never written holds no files of its own: its partitions open (and make their
/// directories and segments) on first use, and its info is known without them.
#[test]
fn streams_added_and_never_written_take_no_disk_until_written() {
    let data = DataDir::new();
    let broker = Broker::start_in(&data.path, &[]);
    let client = broker.client();
    for n in 0..200 {
        let info = client.stream_add(&user_stream(n)).unwrap();
        assert_eq!(info.messages(), 0);
        assert_eq!(info.partitions.len(), 1);
    }
    let added = allocated_bytes(&data.path);
    for n in 200..400 {
        client.stream_add(&user_stream(n)).unwrap();
    }
    let per_stream = (allocated_bytes(&data.path).saturating_sub(added)) / 200;
    assert!(
        per_stream < 1024,
        "{per_stream} bytes on disk per stream added and never written"
    );
    let ack = client
        .publish_with_ack("users.7.hello", b"x")
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(ack.offset, 0);
    assert_eq!(client.stream_info("user7").unwrap().messages(), 1);
    assert_eq!(client.stream_info("user8").unwrap().messages(), 0);
    // Added again as it is: the info now comes from the partition, with its message.
    assert_eq!(client.stream_add(&user_stream(7)).unwrap().messages(), 1);
}
