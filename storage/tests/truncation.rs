//! Cutting the log's tail (`truncate_from`), as a Raft follower does when its uncommitted tail
//! conflicts with its leader: where the next append lands, what reads see, which segments stay,
//! what a reopen or a crash brings back (nothing cut), and which cuts are refused.

mod common;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use common::{body, copy_dir, run, segment_files, small, Scratch};
use sluice_storage::index::Index;
use sluice_storage::segment::{index_path, parse_base, time_index_path};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog, Record, StorageError};

/// A body that says which generation of the log wrote offset `n`, so that a record cut and
/// written again is told apart from its replacement.
fn replacement(n: u64) -> Bytes {
    Bytes::from(format!("replacement-{n}"))
}

async fn append_bodies(log: &PartitionLog, offsets: std::ops::Range<u64>) {
    for n in offsets {
        assert_eq!(log.append(&[body(n)]).await.unwrap(), n);
    }
}

/// Every record from the first offset to the end, read in small steps (from disk, mostly).
async fn read_all(log: &PartitionLog) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut from = log.first_offset();
    while from < log.next_offset() {
        let records = log.read(from, 512).await.unwrap();
        assert!(!records.is_empty(), "the read at {from} found nothing");
        from = records.last().unwrap().end();
        out.extend(records);
    }
    out
}

/// The base offsets of the segment files in `dir`, oldest first.
fn bases(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .filter_map(|p| parse_base(p.file_name()?.to_str()?))
        .collect()
}

#[test]
fn truncate_from_makes_the_next_append_take_the_offset() {
    let dir = Scratch::new("trunc-next");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..40).await;
        log.truncate_from(25).await.unwrap();
        assert_eq!(log.next_offset(), 25);
        assert_eq!(log.next_assigned_offset(), 25);
        assert_eq!(log.append(&[replacement(25)]).await.unwrap(), 25);
        assert_eq!(log.read(24, 1).await.unwrap()[0].body, body(24));
        assert_eq!(log.read(25, 1).await.unwrap()[0].body, replacement(25));
        log.close().await.unwrap();
    });
}

#[test]
fn reads_never_return_truncated_records() {
    let dir = Scratch::new("trunc-reads");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..300).await;
        log.truncate_from(200).await.unwrap();
        // From disk (old records) and from the cache (the newest kept ones) alike.
        for from in [0u64, 150, 190, 199] {
            let records = log.read(from, 1 << 20).await.unwrap();
            assert!(records.iter().all(|r| r.end() <= 200), "read from {from}");
            assert_eq!(records.last().unwrap().offset, 199, "read from {from}");
        }
        assert!(log.read(200, 1 << 20).await.unwrap().is_empty());
        assert!(log.read(250, 1 << 20).await.unwrap().is_empty());
        assert_eq!(log.offset_for_time(u64::MAX).await.unwrap(), 200);
        log.close().await.unwrap();
    });
}

#[test]
fn segments_past_the_cut_are_deleted_and_appends_continue_in_the_cut_one() {
    let dir = Scratch::new("trunc-segments");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..300).await;
        let before = bases(&path);
        assert!(before.len() > 4, "small segments rolled");
        let cut = before[2] + 1;
        log.truncate_from(cut).await.unwrap();
        assert_eq!(bases(&path), before[..3].to_vec());
        assert_eq!(log.segment_count(), 3);
        let cut_file = segment_files(&path).pop().unwrap();
        let cut_len = std::fs::metadata(&cut_file).unwrap().len();

        assert_eq!(log.append(&[replacement(cut)]).await.unwrap(), cut);
        assert_eq!(bases(&path), before[..3].to_vec(), "no new segment");
        assert!(std::fs::metadata(&cut_file).unwrap().len() > cut_len);
        let all = read_all(&log).await;
        assert_eq!(all.len() as u64, cut + 1);
        assert_eq!(all.last().unwrap().body, replacement(cut));
        log.close().await.unwrap();
    });
}

#[test]
fn truncating_at_a_segment_base_leaves_that_segment_empty_and_active() {
    let dir = Scratch::new("trunc-base");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..300).await;
        let before = bases(&path);
        let cut = before[2];
        log.truncate_from(cut).await.unwrap();
        assert_eq!(bases(&path), before[..3].to_vec());
        let emptied = segment_files(&path).pop().unwrap();
        assert_eq!(std::fs::metadata(&emptied).unwrap().len(), 0);
        assert_eq!(log.append(&[replacement(cut)]).await.unwrap(), cut);
        assert_eq!(bases(&path), before[..3].to_vec());
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), cut + 1);
        assert_eq!(log.read(cut - 1, 1).await.unwrap()[0].body, body(cut - 1));
        assert_eq!(log.read(cut, 1).await.unwrap()[0].body, replacement(cut));
        log.close().await.unwrap();
    });
}

#[test]
fn truncated_records_never_come_back_after_reopen() {
    let dir = Scratch::new("trunc-reopen");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..300).await;
        log.truncate_from(120).await.unwrap();
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 120);
        let all = read_all(&log).await;
        let expected: Vec<Bytes> = (0..120).map(body).collect();
        assert_eq!(
            all.into_iter().map(|r| r.body).collect::<Vec<_>>(),
            expected
        );
        log.close().await.unwrap();
    });
}

#[test]
fn truncated_records_never_come_back_after_a_crash_even_when_later_appends_are_shorter() {
    let scratch = Scratch::new("trunc-crash");
    let dir = scratch.path.join("log");
    let crashed_at_once = scratch.path.join("crashed-at-once");
    let crashed = scratch.path.join("crashed");
    run(move || async move {
        // One segment, and records of one length: a stale record left past the new end would sit
        // exactly where the next record belongs, with the very offset that follows.
        let config = LogConfig {
            segment_bytes_max: 1024 * 1024,
            index_interval_bytes: 512,
            ..small(FsyncPolicy::Always)
        };
        let same_length = |n: u64, fill: u8| Bytes::from(vec![fill.wrapping_add(n as u8); 100]);
        let log = PartitionLog::open(&dir, config.clone()).await.unwrap();
        for n in 0..50u64 {
            assert_eq!(log.append(&[same_length(n, b'a')]).await.unwrap(), n);
        }
        log.truncate_from(20).await.unwrap();
        // Crashes right after the truncation, and after a shorter append.
        copy_dir(&dir, &crashed_at_once);
        assert_eq!(log.append(&[same_length(20, b'A')]).await.unwrap(), 20);
        copy_dir(&dir, &crashed);
        log.close().await.unwrap();

        let log = PartitionLog::open(&crashed_at_once, config.clone())
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 20, "nothing past the cut came back");
        log.close().await.unwrap();
        let log = PartitionLog::open(&crashed, config).await.unwrap();
        assert_eq!(log.next_offset(), 21, "nothing past the new end came back");
        let all = read_all(&log).await;
        assert_eq!(all[19].body, same_length(19, b'a'));
        assert_eq!(all[20].body, same_length(20, b'A'));
        log.close().await.unwrap();
    });
}

#[test]
fn index_files_keep_no_entry_past_the_cut() {
    let dir = Scratch::new("trunc-index");
    let path = dir.path.clone();
    run(move || async move {
        let config = LogConfig {
            segment_bytes_max: 1024 * 1024,
            ..small(FsyncPolicy::Always)
        };
        let log = PartitionLog::open(&path, config.clone()).await.unwrap();
        append_bodies(&log, 0..300).await;
        // Closing writes every index entry to the files.
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, config).await.unwrap();
        log.truncate_from(100).await.unwrap();
        let offsets = std::fs::read(index_path(&path, 0)).unwrap();
        let times = std::fs::read(time_index_path(&path, 0)).unwrap();
        let index = Index::decode(&offsets, &times);
        assert!(!index.is_empty(), "entries before the cut are kept");
        assert!(index.entries().iter().all(|e| e.offset < 100));
        log.close().await.unwrap();
    });
}

#[test]
fn a_cut_inside_a_span_record_is_refused_and_changes_nothing() {
    let dir = Scratch::new("trunc-span");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        let counts = [1u32, 5, 1];
        let bodies: Vec<Bytes> = (0..3).map(body).collect();
        let ticket = log.append_spans(&bodies, |i| counts[i]).unwrap();
        ticket.durable().await.unwrap();
        assert_eq!(log.next_offset(), 7);
        assert!(matches!(
            log.truncate_from(3).await,
            Err(StorageError::NotRecordBoundary {
                offset: 3,
                record_offset: 1,
                record_end: 6
            })
        ));
        assert_eq!(log.next_offset(), 7);
        assert_eq!(log.read(0, 1 << 20).await.unwrap().len(), 3);
        log.truncate_from(6).await.unwrap();
        log.truncate_from(1).await.unwrap();
        assert_eq!(log.append(&[replacement(1)]).await.unwrap(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn a_cut_outside_the_log_is_refused() {
    let dir = Scratch::new("trunc-range");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..10).await;
        assert!(matches!(
            log.truncate_from(11).await,
            Err(StorageError::TruncationOutOfRange {
                offset: 11,
                first: 0,
                next: 10
            })
        ));
        log.truncate_before(5).await.unwrap();
        assert!(matches!(
            log.truncate_from(4).await,
            Err(StorageError::TruncationOutOfRange {
                offset: 4,
                first: 5,
                next: 10
            })
        ));
        assert_eq!(log.next_offset(), 10);
        assert_eq!(log.append(&[body(10)]).await.unwrap(), 10);
        log.close().await.unwrap();
    });
}

#[test]
fn truncating_at_the_next_offset_changes_nothing() {
    let dir = Scratch::new("trunc-noop");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..100).await;
        let sizes = |dir: &Path| -> Vec<u64> {
            segment_files(dir)
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .collect()
        };
        let before = sizes(&path);
        log.truncate_from(100).await.unwrap();
        assert_eq!(sizes(&path), before);
        assert_eq!(log.next_offset(), 100);
        assert_eq!(log.append(&[body(100)]).await.unwrap(), 100);
        log.close().await.unwrap();
    });
}

#[test]
fn appends_in_flight_are_made_durable_then_cut_and_their_tickets_say_so() {
    let dir = Scratch::new("trunc-in-flight");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..10).await;
        let kept = log.append_ordered(&[body(10)]).unwrap();
        let cut = log.append_ordered(&[body(11), body(12)]).unwrap();
        log.truncate_from(11).await.unwrap();
        assert_eq!(kept.durable().await.unwrap(), 10);
        assert!(matches!(
            cut.durable().await,
            Err(StorageError::Truncated { offset: 11 })
        ));
        assert_eq!(log.next_offset(), 11);
        assert_eq!(log.read(10, 1 << 20).await.unwrap().len(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn appends_and_truncations_are_refused_while_a_truncation_runs() {
    let dir = Scratch::new("trunc-refuse");
    let path = dir.path.clone();
    run(move || async move {
        let log = Rc::new(
            PartitionLog::open(&path, small(FsyncPolicy::Always))
                .await
                .unwrap(),
        );
        append_bodies(&log, 0..10).await;
        // An append still on its way to the disk keeps the truncation waiting.
        let in_flight = log.append_ordered(&[body(10)]).unwrap();
        let truncation = glommio::spawn_local({
            let log = log.clone();
            async move { log.truncate_from(5).await }
        });
        glommio::executor().yield_now().await;
        assert!(matches!(
            log.append_ordered(&[body(99)]),
            Err(StorageError::TruncationInProgress)
        ));
        assert!(matches!(
            log.truncate_from(3).await,
            Err(StorageError::TruncationInProgress)
        ));
        truncation.await.unwrap();
        assert!(in_flight.durable().await.is_err(), "offset 10 was cut");
        assert_eq!(log.append(&[replacement(5)]).await.unwrap(), 5);
        log.close().await.unwrap();
    });
}

#[test]
fn offset_for_time_after_a_truncation_finds_the_records_appended_since() {
    let dir = Scratch::new("trunc-time");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Never))
            .await
            .unwrap();
        append_bodies(&log, 0..100).await;
        glommio::timer::sleep(Duration::from_millis(2)).await;
        append_bodies(&log, 100..200).await;
        let cut_time_ns = log.read(100, 1).await.unwrap()[0].timestamp_ns;
        log.truncate_from(100).await.unwrap();
        assert_eq!(
            log.offset_for_time(cut_time_ns).await.unwrap(),
            100,
            "no cut record is found by its time"
        );
        glommio::timer::sleep(Duration::from_millis(2)).await;
        for n in 100..150 {
            assert_eq!(log.append(&[replacement(n)]).await.unwrap(), n);
        }
        let new_time_ns = log.read(100, 1).await.unwrap()[0].timestamp_ns;
        assert!(new_time_ns >= cut_time_ns);
        assert_eq!(log.offset_for_time(cut_time_ns).await.unwrap(), 100);
        assert_eq!(log.offset_for_time(new_time_ns).await.unwrap(), 100);
        assert_eq!(log.offset_for_time(0).await.unwrap(), 0);
        assert_eq!(log.offset_for_time(u64::MAX).await.unwrap(), 150);
        log.close().await.unwrap();
    });
}

#[test]
fn reads_overlapping_truncations_never_fail_nor_return_cut_records() {
    let dir = Scratch::new("trunc-concurrent");
    let path = dir.path.clone();
    run(move || async move {
        let log = Rc::new(
            PartitionLog::open(&path, small(FsyncPolicy::Never))
                .await
                .unwrap(),
        );
        let named = |n: u64, round: u64| Bytes::from(format!("{n}:{round}:{}", "x".repeat(200)));
        // What the log holds as far as the writer knows: updated as soon as each truncation or
        // append returns, so a read that returns later must agree with it below its length.
        let model: Rc<RefCell<Vec<Bytes>>> = Rc::new(RefCell::new(Vec::new()));
        for n in 0..400 {
            log.append(&[named(n, 0)]).await.unwrap();
            model.borrow_mut().push(named(n, 0));
        }
        let stop = Rc::new(Cell::new(false));
        let readers: Vec<_> = (0..4u64)
            .map(|seed| {
                let (log, model, stop) = (log.clone(), model.clone(), stop.clone());
                glommio::spawn_local(async move {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    let mut reads = 0u64;
                    while !stop.get() {
                        let from = rng.u64(..log.next_offset().max(1));
                        let records = log.read(from, 4096).await.unwrap();
                        let model = model.borrow();
                        for r in records {
                            if let Some(expected) = model.get(r.offset as usize) {
                                assert_eq!(&r.body, expected, "offset {}", r.offset);
                            }
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 1..40u64 {
            let cut = rng.u64(100..log.next_offset());
            log.truncate_from(cut).await.unwrap();
            model.borrow_mut().truncate(cut as usize);
            for n in cut..cut + rng.u64(1..200) {
                log.append(&[named(n, round)]).await.unwrap();
                model.borrow_mut().push(named(n, round));
            }
        }
        stop.set(true);
        for reader in readers {
            assert!(reader.await > 0);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn restart_at_a_later_offset_empties_the_log_and_the_next_append_takes_it() {
    let dir = Scratch::new("restart-later");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..300).await;
        assert!(bases(&path).len() > 2, "several segments to delete");
        log.restart_at(1000).await.unwrap();
        assert_eq!(log.first_offset(), 1000);
        assert_eq!(log.next_offset(), 1000);
        assert!(matches!(
            log.read(0, 1024).await,
            Err(StorageError::OffsetOutOfRange { start: 1000, .. })
        ));
        assert!(log.read(1000, 1024).await.unwrap().is_empty());
        assert_eq!(log.append(&[replacement(1000)]).await.unwrap(), 1000);
        assert_eq!(log.append(&[replacement(1001)]).await.unwrap(), 1001);
        assert_eq!(bases(&path), vec![1000], "only the new segment is left");
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.first_offset(), 1000);
        let all = read_all(&log).await;
        assert_eq!(
            all.iter()
                .map(|r| (r.offset, r.body.clone()))
                .collect::<Vec<_>>(),
            vec![(1000, replacement(1000)), (1001, replacement(1001))]
        );
        log.close().await.unwrap();
    });
}

#[test]
fn restart_at_an_earlier_offset_drops_the_records_past_it_too() {
    let dir = Scratch::new("restart-earlier");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        append_bodies(&log, 0..200).await;
        log.truncate_before(50).await.unwrap();
        log.restart_at(120).await.unwrap();
        assert_eq!((log.first_offset(), log.next_offset()), (120, 120));
        assert_eq!(log.append(&[replacement(120)]).await.unwrap(), 120);
        log.close().await.unwrap();
        // Reopened without a clean close: what is on disk alone.
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        let all = read_all(&log).await;
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].offset, all[0].body.clone()),
            (120, replacement(120))
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_restart_waits_for_appends_in_flight_and_a_crash_right_after_keeps_it() {
    let scratch = Scratch::new("restart-crash");
    let dir = scratch.path.join("log");
    let crashed = scratch.path.join("crashed");
    run(move || async move {
        let log = Rc::new(
            PartitionLog::open(&dir, small(FsyncPolicy::Always))
                .await
                .unwrap(),
        );
        let bodies: Vec<Bytes> = (0..100).map(body).collect();
        let ticket = log.append_ordered(&bodies).unwrap();
        log.restart_at(500).await.unwrap();
        // The appends ordered before were written first, then removed with the rest.
        assert_eq!(ticket.durable().await.ok(), None);
        assert!(matches!(log.append_ordered(&[body(0)]).map(|_| ()), Ok(())));
        copy_dir(&dir, &crashed);
        let reopened = PartitionLog::open(&crashed, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(reopened.first_offset(), 500);
        assert!(reopened.next_offset() <= 501);
        reopened.close().await.unwrap();
        log.close().await.unwrap();
    });
}
