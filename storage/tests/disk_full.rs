//! A full disk: appends fail with `DiskFull`, nothing acknowledged is lost, the log stays readable
//! and consistent, and appends work again once there is room. The file system is a small tmpfs this
//! test mounts (it needs root, as CI has).

mod common;

use std::process::Command;

use bytes::Bytes;
use common::{run, Scratch};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog, StorageError};

const FS_BYTES: u64 = 512 * 1024;

struct Mount {
    path: std::path::PathBuf,
}

impl Mount {
    fn tmpfs(path: &std::path::Path) -> Option<Mount> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Mount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn record(n: u64) -> Bytes {
    let mut b = format!("r{n}:").into_bytes();
    b.resize(1000, b'z');
    Bytes::from(b)
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_loses_nothing_acknowledged() {
    let scratch = Scratch::new("disk-full");
    let Some(mount) = Mount::tmpfs(&scratch.path) else {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(!root, "root could not mount a tmpfs for the disk-full test");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    // Ballast that the test deletes to make room again.
    let ballast = mount.path.join("ballast");
    std::fs::write(&ballast, vec![1u8; 64 * 1024]).unwrap();
    let dir = mount.path.join("log");
    let config = LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes_max: 128 * 1024,
        ..LogConfig::default()
    };
    run(move || async move {
        let log = PartitionLog::open(&dir, config.clone()).await.unwrap();
        let mut acked = 0u64;
        let error = loop {
            match log.append(&[record(acked)]).await {
                Ok(offset) => {
                    assert_eq!(offset, acked);
                    acked += 1;
                }
                Err(e) => break e,
            }
            assert!(acked < 10_000, "the disk never filled up");
        };
        assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
        assert!(acked > 100);
        assert_eq!(log.next_offset(), acked);
        // Still full: the next append fails the same way and takes no offset.
        assert!(matches!(
            log.append(&[record(acked)]).await,
            Err(StorageError::DiskFull { .. })
        ));
        assert_eq!(log.next_offset(), acked);
        // Everything acknowledged reads back.
        let mut from = 0;
        while from < acked {
            let records = log.read(from, 1 << 20).await.unwrap();
            for r in &records {
                assert_eq!(r.body, record(r.offset));
            }
            from = records.last().unwrap().offset + 1;
        }
        // Room again: appends continue at the next offset.
        std::fs::remove_file(&ballast).unwrap();
        assert_eq!(log.append(&[record(acked)]).await.unwrap(), acked);
        log.close().await.ok();
        let log = PartitionLog::open(&dir, config).await.unwrap();
        assert_eq!(log.next_offset(), acked + 1);
        assert_eq!(log.read(acked, 1).await.unwrap()[0].body, record(acked));
        log.close().await.ok();
    });
    drop(mount);
}
