//! Damaged files: a torn final record is cut off on recovery; a flipped byte in a sealed segment is
//! reported with the file and position; missing indexes are rebuilt.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::{body, run, segment_files, small, Scratch};
use sluice_storage::{FsyncPolicy, PartitionLog, StorageError};

fn fill(path: std::path::PathBuf, records: u64) {
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        for n in 0..records {
            log.append(&[body(n)]).await.unwrap();
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_torn_final_record_is_truncated_on_recovery() {
    let dir = Scratch::new("torn");
    fill(dir.path.clone(), 100);
    let last = segment_files(&dir.path).pop().unwrap();
    let clean_len = std::fs::metadata(&last).unwrap().len();
    // Half of a valid next record, as a crash in the middle of a write leaves it.
    let mut next = Vec::new();
    sluice_storage::record::encode(&mut next, 100, 1, &body(100));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    f.write_all(&next[..next.len() / 2]).unwrap();
    drop(f);

    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 100);
        assert_eq!(
            std::fs::metadata(&last).unwrap().len(),
            clean_len,
            "tail cut off"
        );
        assert_eq!(log.append(&[body(100)]).await.unwrap(), 100);
        assert_eq!(log.read(99, 1 << 20).await.unwrap().len(), 2);
        log.close().await.unwrap();
    });
}

#[test]
fn trailing_zeroes_after_the_last_record_are_cut_off() {
    let dir = Scratch::new("zeroes");
    fill(dir.path.clone(), 10);
    let last = segment_files(&dir.path).pop().unwrap();
    let clean_len = std::fs::metadata(&last).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 10);
        assert_eq!(std::fs::metadata(&last).unwrap().len(), clean_len);
        log.close().await.unwrap();
    });
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_as_corruption() {
    let dir = Scratch::new("flip");
    fill(dir.path.clone(), 300);
    let first = segment_files(&dir.path).remove(0);
    let len = std::fs::metadata(&first).unwrap().len();
    let flip_at = len / 2;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .unwrap();
    f.seek(SeekFrom::Start(flip_at)).unwrap();
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    f.seek(SeekFrom::Start(flip_at)).unwrap();
    f.write_all(&[byte[0] ^ 0x10]).unwrap();
    drop(f);

    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        let mut from = 0;
        let error = loop {
            match log.read(from, 1024).await {
                Ok(records) => {
                    assert!(!records.is_empty(), "the corruption was skipped silently");
                    for r in &records {
                        assert_eq!(r.body, body(r.offset), "corrupt data returned as a record");
                    }
                    from = records.last().unwrap().offset + 1;
                }
                Err(e) => break e,
            }
        };
        match error {
            StorageError::Corruption { path, position, .. } => {
                assert_eq!(path, first);
                assert!(
                    position <= flip_at,
                    "reported at {position}, flipped at {flip_at}"
                );
            }
            other => panic!("expected corruption, got {other}"),
        }
        log.close().await.unwrap();
    });
}

#[test]
fn missing_indexes_are_rebuilt_on_open() {
    let dir = Scratch::new("reindex");
    fill(dir.path.clone(), 300);
    for entry in std::fs::read_dir(&dir.path).unwrap() {
        let p = entry.unwrap().path();
        if p.extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let path = dir.path.clone();
    run(move || async move {
        let log = PartitionLog::open(&path, small(FsyncPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 300);
        for from in [0u64, 123, 299] {
            assert_eq!(log.read(from, 1).await.unwrap()[0].body, body(from));
        }
        log.close().await.unwrap();
    });
}
