//! The partition log's API on real files: append and read back, reopen, roll, time lookups,
//! truncation, retention, limits.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{body, run, segment_files, small, Scratch};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog, StorageError};

#[test]
fn appended_records_read_back_in_order_across_segments_and_a_reopen() {
    let dir = Scratch::new("basics");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        for n in 0..300u64 {
            assert_eq!(log.append(&[body(n)]).await.unwrap(), n);
        }
        let batch: Vec<Bytes> = (300..310).map(body).collect();
        assert_eq!(log.append(&batch).await.unwrap(), 300);
        assert_eq!(log.next_offset(), 310);
        assert!(log.segment_count() > 3, "small segments rolled");
        let mut got = Vec::new();
        while got.len() < 310 {
            let records = log.read(got.len() as u64, 4096).await.unwrap();
            assert!(!records.is_empty());
            got.extend(records);
        }
        for (n, r) in got.iter().enumerate() {
            assert_eq!(r.offset, n as u64);
            assert_eq!(r.body, body(n as u64));
        }
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 310);
        for from in [0u64, 1, 57, 200, 309] {
            let records = log.read(from, 1).await.unwrap();
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].offset, from);
            assert_eq!(records[0].body, body(from));
        }
        assert_eq!(log.append(&[body(310)]).await.unwrap(), 310);
        assert!(log.read(311, 100).await.unwrap().is_empty());
        log.close().await.unwrap();
    });
}

#[test]
fn offset_for_time_finds_the_first_record_at_or_after_a_time() {
    let dir = Scratch::new("time");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Never))
            .await
            .unwrap();
        let mut stamps = Vec::new();
        for n in 0..200u64 {
            log.append(&[body(n)]).await.unwrap();
            if n % 50 == 0 {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
        }
        let all = {
            let mut all = Vec::new();
            while all.len() < 200 {
                all.extend(log.read(all.len() as u64, 1 << 20).await.unwrap());
            }
            all
        };
        for r in &all {
            stamps.push(r.timestamp_ns);
        }
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "timestamps never go back"
        );
        for probe in [0usize, 49, 50, 51, 120, 199] {
            let t = stamps[probe];
            let expected = stamps.iter().position(|&s| s >= t).unwrap() as u64;
            assert_eq!(log.offset_for_time(t).await.unwrap(), expected);
        }
        assert_eq!(log.offset_for_time(0).await.unwrap(), 0);
        assert_eq!(log.offset_for_time(u64::MAX).await.unwrap(), 200);
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_before_hides_and_deletes_what_lies_below() {
    let dir = Scratch::new("truncate");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Never))
            .await
            .unwrap();
        for n in 0..300u64 {
            log.append(&[body(n)]).await.unwrap();
        }
        let before = segment_files(&path).len();
        let gone = log.truncate_before(150).await.unwrap();
        assert!(gone.segments > 0);
        assert_eq!(segment_files(&path).len(), before - gone.segments);
        assert_eq!(log.first_offset(), 150);
        assert!(matches!(
            log.read(149, 10).await,
            Err(StorageError::OffsetOutOfRange {
                requested: 149,
                start: 150
            })
        ));
        assert_eq!(log.read(150, 1).await.unwrap()[0].body, body(150));
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, small(FsyncPolicy::Never))
            .await
            .unwrap();
        assert_eq!(
            log.first_offset(),
            150,
            "the start offset survives a reopen"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_bytes_and_age_deletes_whole_sealed_segments() {
    let dir = Scratch::new("retention");
    let path = dir.path.clone();
    run(move || async move {
        let config = LogConfig {
            retention_bytes_max: Some(20 * 1024),
            ..small(FsyncPolicy::Never)
        };
        let log = PartitionLog::open(&path, config).await.unwrap();
        for n in 0..600u64 {
            log.append(&[body(n)]).await.unwrap();
        }
        let size_before = log.size_bytes();
        let gone = log.apply_retention(sluice_storage::now_ns()).await.unwrap();
        assert!(gone.segments > 0);
        assert!(log.size_bytes() <= 20 * 1024 + 8 * 1024);
        assert_eq!(log.size_bytes(), size_before - gone.bytes);
        let first = log.first_offset();
        assert!(first > 0);
        assert_eq!(log.read(first, 1).await.unwrap()[0].body, body(first));
        log.close().await.unwrap();

        let config = LogConfig {
            retention_age_max: Some(Duration::from_secs(60)),
            ..small(FsyncPolicy::Never)
        };
        let log = PartitionLog::open(&path, config).await.unwrap();
        let now = sluice_storage::now_ns();
        assert_eq!(
            log.apply_retention(now).await.unwrap().segments,
            0,
            "nothing is old yet"
        );
        let later = now + 120 * 1_000_000_000;
        let gone = log.apply_retention(later).await.unwrap();
        assert!(gone.segments > 0);
        assert_eq!(log.segment_count(), 1, "only the active segment is left");
        assert_eq!(log.next_offset(), 600);
        log.close().await.unwrap();
    });
}

#[test]
fn an_oversized_record_is_refused_and_nothing_is_written() {
    let dir = Scratch::new("too-large");
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        let big = Bytes::from(vec![0u8; 64 * 1024 + 1]);
        assert!(matches!(
            log.append(&[body(0), big]).await,
            Err(StorageError::RecordTooLarge {
                size: 65537,
                max: 65536
            })
        ));
        assert_eq!(log.next_offset(), 0);
        assert_eq!(log.append(&[body(0)]).await.unwrap(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn many_appends_in_flight_share_syncs_and_all_commit() {
    let dir = Scratch::new("group");
    let path = dir.path.clone();
    run(move || async move {
        let log = std::rc::Rc::new(
            PartitionLog::open(&path, LogConfig::default())
                .await
                .unwrap(),
        );
        let tasks: Vec<_> = (0..256u64)
            .map(|n| {
                let log = log.clone();
                glommio::spawn_local(async move { (n, log.append(&[body(n)]).await.unwrap()) })
            })
            .collect();
        let mut offsets = Vec::new();
        for t in tasks {
            let (n, offset) = t.await;
            let got = log.read(offset, 1).await.unwrap();
            assert_eq!(got[0].body, body(n));
            offsets.push(offset);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..256).collect::<Vec<_>>());
        log.close().await.unwrap();
    });
}

/// Readers that go on in order are served from bytes read ahead; with appends landing meanwhile,
/// records written after a read-ahead started must still come from the disk, whole and in order.
#[test]
fn a_reader_going_on_in_order_while_appends_land_reads_every_record_once() {
    let dir = Scratch::new("in-order");
    let path = dir.path.clone();
    run(move || async move {
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            segment_bytes_max: 1024 * 1024,
            cache_bytes_max: 0,
            ..LogConfig::default()
        };
        let log = std::rc::Rc::new(PartitionLog::open(&path, config).await.unwrap());
        const TOTAL: u64 = 20_000;
        // Half written before the reader starts (read ahead from sealed segments), half while it
        // reads (read ahead up to a moving commit point).
        for n in (0..TOTAL / 2).step_by(50) {
            let batch: Vec<Bytes> = (n..n + 50).map(body).collect();
            log.append(&batch).await.unwrap();
        }
        let writer = {
            let log = log.clone();
            glommio::spawn_local(async move {
                for n in (TOTAL / 2..TOTAL).step_by(10) {
                    let batch: Vec<Bytes> = (n..n + 10).map(body).collect();
                    log.append(&batch).await.unwrap();
                    glommio::yield_if_needed().await;
                }
            })
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut next = 0u64;
        while next < TOTAL {
            let budget = rng.usize(1024..96 * 1024);
            let records = log.read(next, budget).await.unwrap();
            if records.is_empty() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
            for r in records {
                assert_eq!(r.offset, next, "records in order, none skipped");
                assert_eq!(r.body, body(next), "record {next} read back whole");
                next += 1;
            }
        }
        writer.await;
        log.close().await.unwrap();
    });
}
