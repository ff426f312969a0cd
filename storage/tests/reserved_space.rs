//! Segment space is reserved in steps as a segment fills: records written across many steps read
//! back after a clean reopen and after a crash (a copy of the files taken while the log was open,
//! reserved zeroes and all), and a quiet log costs little disk.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;
use common::{copy_dir, run, segment_files, Scratch};
use sluice_storage::appender::{RESERVE_FIRST_BYTES, RESERVE_STEP_BYTES_MAX};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

const MIB: u64 = 1024 * 1024;

/// Bytes of records the step test writes: past the first seven reservation steps of a segment
/// (64 KiB, 128 KiB, ... 4 MiB) and across one roll.
const WRITTEN_BYTES: u64 = 6 * MIB;

/// Largest disk use allowed for an open log holding one small record: the first reservation step,
/// with room for the file system's own rounding.
const ONE_RECORD_DISK_BYTES_MAX: u64 = 2 * RESERVE_FIRST_BYTES;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes_max: 5 * MIB,
        ..LogConfig::default()
    }
}

/// One file-system block: what ext4 may allocate beside a file's data for its extent tree.
const FS_METADATA_BLOCK_BYTES: u64 = 4096;

/// Bytes the file system allocated to a file (not its apparent length).
fn allocated_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A body of a random length (a few big ones among small ones) that names its offset.
fn body(rng: &mut fastrand::Rng, offset: u64) -> Bytes {
    let len = match rng.u8(..10) {
        0 => rng.usize(20_000..200_000),
        _ => rng.usize(0..5_000),
    };
    let mut b = format!("{offset}:").into_bytes();
    b.extend((0..len).map(|_| rng.u8(..)));
    Bytes::from(b)
}

async fn read_all(log: &PartitionLog) -> Vec<Bytes> {
    let mut out = Vec::new();
    let end = log.next_offset();
    while (out.len() as u64) < end {
        let records = log.read(out.len() as u64, 1 << 20).await.unwrap();
        assert!(
            !records.is_empty(),
            "the read at {} found nothing",
            out.len()
        );
        for r in records {
            assert_eq!(r.offset, out.len() as u64);
            out.push(r.body);
        }
    }
    out
}

#[test]
fn records_across_many_reservation_steps_survive_a_reopen_and_a_crash() {
    let seed = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("reserved space seed {seed} (replay with SLUICE_SEED={seed})");
    let scratch = Scratch::new("reserved-steps");
    let dir = scratch.path.join("log");
    let crashed = scratch.path.join("crashed");
    run(move || async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut model: Vec<Bytes> = Vec::new();
        let log = PartitionLog::open(&dir, config()).await.unwrap();
        while log.size_bytes() < WRITTEN_BYTES {
            let n = rng.usize(1..6);
            let first = model.len() as u64;
            let batch: Vec<Bytes> = (0..n).map(|i| body(&mut rng, first + i as u64)).collect();
            assert_eq!(log.append(&batch).await.unwrap(), first);
            model.extend(batch);
        }
        assert!(log.segment_count() >= 2, "the log rolled");

        // A crash: the files as they are while the log is open, reserved tail included.
        copy_dir(&dir, &crashed);
        let active = segment_files(&crashed).pop().unwrap();
        let active_len = std::fs::metadata(&active).unwrap().len();
        let records_len: u64 = log.size_bytes()
            - segment_files(&dir)
                .iter()
                .rev()
                .skip(1)
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum::<u64>();
        assert!(
            active_len > records_len,
            "the active segment has reserved space past its records ({active_len} > {records_len})"
        );
        assert!(active_len - records_len <= RESERVE_STEP_BYTES_MAX);

        // Sealed segments were cut back to their records.
        for sealed in segment_files(&dir).iter().rev().skip(1) {
            let len = std::fs::metadata(sealed).unwrap().len();
            assert!(len <= config().segment_bytes_max);
            // Cut back to its records: what stays allocated is their length in whole reservation
            // steps, plus one file-system block the file system may keep for the extent tree
            // of a fragmented file (counted in st_blocks too).
            let allocated = allocated_bytes(sealed);
            let bound = len.next_multiple_of(RESERVE_FIRST_BYTES) + FS_METADATA_BLOCK_BYTES;
            assert!(
                allocated <= bound,
                "{allocated} bytes allocated to a sealed segment of {len}"
            );
        }
        log.close().await.unwrap();

        // A clean reopen: the active segment was cut back too.
        let active = segment_files(&dir).pop().unwrap();
        assert_eq!(std::fs::metadata(&active).unwrap().len(), records_len);
        let log = PartitionLog::open(&dir, config()).await.unwrap();
        assert_eq!(read_all(&log).await, model);
        log.close().await.unwrap();

        // The crash copy recovers to the same records, cuts the zeroes off, and takes more.
        let log = PartitionLog::open(&crashed, config()).await.unwrap();
        assert_eq!(log.next_offset(), model.len() as u64);
        assert_eq!(read_all(&log).await, model);
        let target = log.size_bytes() + 2 * MIB;
        while log.size_bytes() < target {
            let first = model.len() as u64;
            let record = body(&mut rng, first);
            assert_eq!(
                log.append(std::slice::from_ref(&record)).await.unwrap(),
                first
            );
            model.push(record);
        }
        // And crashes again, this time after a recovery.
        let crashed_twice = crashed.with_extension("twice");
        copy_dir(&crashed, &crashed_twice);
        drop(log);
        let log = PartitionLog::open(&crashed_twice, config()).await.unwrap();
        assert_eq!(read_all(&log).await, model);
        log.close().await.unwrap();
    });
}

#[test]
fn a_log_with_one_small_record_takes_one_reservation_step_of_disk() {
    let scratch = Scratch::new("reserved-small");
    let dir = scratch.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        log.append(&[Bytes::from_static(b"x")]).await.unwrap();
        let segment = segment_files(&dir).pop().unwrap();
        let open_bytes = allocated_bytes(&segment);
        println!("one record, log open: {open_bytes} bytes allocated");
        assert!(
            open_bytes <= ONE_RECORD_DISK_BYTES_MAX,
            "{open_bytes} bytes allocated for one record"
        );
        // Stream info counts records, not reserved space.
        let record_bytes = log.size_bytes();
        assert!(record_bytes < 64, "{record_bytes} bytes for one record");
        log.close().await.unwrap();

        let closed_bytes = allocated_bytes(&segment);
        println!("one record, log closed: {closed_bytes} bytes allocated");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), record_bytes);
        assert!(closed_bytes <= 4096, "{closed_bytes} bytes after close");
    });
}

/// Quiet logs the many-logs measurement opens at once by default: the scale of one stream per user.
const QUIET_LOGS_DEFAULT: usize = 10_000;

/// A measurement more than a check (run it with `--ignored`): `SLUICE_QUIET_LOGS` logs (10,000 by
/// default) open at once with one small record each, and the disk they take while open.
#[test]
#[ignore = "a measurement: opens ten thousand logs"]
fn ten_thousand_open_logs_with_one_record_each_take_one_step_each() {
    let logs: usize = std::env::var("SLUICE_QUIET_LOGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(QUIET_LOGS_DEFAULT);
    let scratch = Scratch::new("reserved-many");
    let root = scratch.path.clone();
    run(move || async move {
        let started = std::time::Instant::now();
        let mut open = Vec::with_capacity(logs);
        for n in 0..logs {
            let log = PartitionLog::open(root.join(format!("{n}")), LogConfig::default())
                .await
                .unwrap();
            log.append(&[Bytes::from_static(b"x")]).await.unwrap();
            open.push(log);
        }
        let secs = started.elapsed().as_secs_f64();
        let used: u64 = (0..logs)
            .flat_map(|n| segment_files(&root.join(format!("{n}"))))
            .map(|p| allocated_bytes(&p))
            .sum::<u64>()
            + (0..logs)
                .map(|n| allocated_bytes(&root.join(format!("{n}"))))
                .sum::<u64>();
        let per_log = used / logs as u64;
        println!(
            "{logs} open logs with one record each in {secs:.1} s: {used} bytes, {per_log} per log"
        );
        assert!(
            per_log <= ONE_RECORD_DISK_BYTES_MAX + 4096,
            "{per_log} bytes per log"
        );
        for log in open {
            log.close().await.unwrap();
        }
    });
}
