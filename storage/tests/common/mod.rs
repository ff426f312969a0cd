//! Helpers shared by the storage tests: an executor to run in, scratch directories, small configs.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_storage::{FsyncPolicy, LogConfig};

/// Runs `f` to completion on a fresh glommio executor.
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("start executor")
        .join()
        .expect("executor finished")
}

/// A fresh directory under the target directory, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "sluice-storage-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A config with tiny segments and index intervals, so that tests roll and index a lot.
pub fn small(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        segment_bytes_max: 8 * 1024,
        index_interval_bytes: 512,
        cache_bytes_max: 2 * 1024,
        record_bytes_max: 64 * 1024,
        ..LogConfig::default()
    }
}

/// A body that names its sequence number, of a length that varies with it.
pub fn body(n: u64) -> Bytes {
    let mut b = format!("record-{n}-").into_bytes();
    b.resize(b.len() + (n as usize * 37) % 300, b'a' + (n % 26) as u8);
    Bytes::from(b)
}

/// Every segment log file in `dir`, oldest first.
pub fn segment_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Copies every file of `from` into `to`, as a crash would leave them: taken while the log is
/// open, reserved zeroes, unsealed segments and all.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
