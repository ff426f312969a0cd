//! The HTTP port (`--http`): `/metrics` in the Prometheus text format, `/healthz` (the process
//! answers) and `/readyz` (every shard has recovered its logs). Served by shard 0, away from the
//! client ports; the other shards' figures come over the mesh.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::metrics::{self, ShardMetrics};
use super::shard::Shard;
use super::ShardId;

/// Longest request head read.
const REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts HTTP connections until the shard stops.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    super::accept_until_stopped(&shard, &listener, |stream| answer(shard.clone(), stream)).await;
}

async fn answer(shard: Rc<Shard>, mut stream: TcpStream) {
    let head = glommio::timer::timeout(REQUEST_TIMEOUT, async {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_BYTES_MAX {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(head)
    })
    .await;
    let Ok(head) = head else { return };
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", metrics::render(&gather(&shard).await)),
        (b"GET", b"/healthz") => ("200 OK", "ok\n".to_string()),
        (b"GET", b"/readyz") => {
            let shards = gather(&shard).await;
            if shards.len() == shard.shards && shards.iter().all(|s| s.ready) {
                ("200 OK", "ready\n".to_string())
            } else {
                ("503 Service Unavailable", "recovering\n".to_string())
            }
        }
        (b"GET", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let content_type = if path == b"/metrics" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.close().await;
}

/// Every shard's figures; a shard that does not answer in time is left out.
async fn gather(shard: &Rc<Shard>) -> Vec<ShardMetrics> {
    let mut all = Vec::with_capacity(shard.shards);
    for id in 0..shard.shards as u32 {
        if id == shard.id.0 {
            all.push(metrics::snapshot(shard).await);
        } else if let Some(m) = super::streams::ask_shard_metrics(shard, ShardId(id)).await {
            all.push(m);
        }
    }
    all
}
