//! A `sluice serve` child for the benchmarks that drive the real broker.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running broker with its own temporary data directory; killed and cleaned up when dropped.
pub struct Server {
    child: Child,
    dir: PathBuf,
    /// Native protocol address.
    pub native: String,
    /// NATS protocol address, if the NATS port is on.
    pub nats: Option<String>,
}

impl Server {
    /// Starts this build's `sluice serve` on free loopback ports with `args` added.
    pub fn start(name: &str, args: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("sluice-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "off"])
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        Server {
            native: field("native=").expect("the ready line names the native address"),
            nats: field("nats="),
            child,
            dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
