//! The HTTP port (`--http`): `/metrics` in the Prometheus text format, behind a bearer token when
//! `http_token` is set, and `/healthz` (the process answers) and `/readyz` (every shard has
//! recovered its logs, and a clustered node reaches a majority), open to probes: they tell
//! nothing but up or not. Served by shard 0, away from the
//! client ports; the other shards' figures come over the mesh.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::server::streams::metrics::{self, ShardMetrics};
use crate::server::streams::StreamShard;
use crate::server::ShardId;

/// Longest request head read.
const REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts HTTP connections until the shard stops.
pub async fn serve(shard: Rc<StreamShard>, listener: TcpListener) {
    crate::server::accept_until_stopped(&shard.core, &listener, |stream| {
        answer(shard.clone(), stream)
    })
    .await;
}

async fn answer(shard: Rc<StreamShard>, mut stream: TcpStream) {
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
    let probe = matches!(path, b"/healthz" | b"/readyz");
    let authorized = match &shard.core.config.http_token {
        None => true,
        _ if probe => true,
        Some(token) => bearer(&head)
            .is_some_and(|given| crate::server::auth::same_secret(given, token.as_bytes())),
    };
    let (status, body) = match (method, path) {
        _ if !authorized => (
            "401 Unauthorized",
            "a bearer token is required\n".to_string(),
        ),
        (b"GET", b"/metrics") => {
            let mut out = metrics::render(&gather(&shard).await);
            if let Some(cluster) = shard.cluster.get() {
                cluster.render_metrics(&mut out);
            }
            ("200 OK", out)
        }
        (b"GET", b"/healthz") => ("200 OK", "ok\n".to_string()),
        (b"GET", b"/readyz") => {
            let shards = gather(&shard).await;
            let led = shard
                .cluster
                .get()
                .is_none_or(|c| c.meta_leader().is_some());
            if !(shards.len() == shard.core.shards && shards.iter().all(|s| s.ready)) {
                ("503 Service Unavailable", "recovering\n".to_string())
            } else if !led {
                (
                    "503 Service Unavailable",
                    "no meta leader: this node does not reach a majority of the cluster\n"
                        .to_string(),
                )
            } else {
                ("200 OK", "ready\n".to_string())
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

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
fn bearer(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        if !name.eq_ignore_ascii_case(b"authorization") {
            return None;
        }
        let value = value[1..].trim_ascii();
        let scheme = value.get(..7)?;
        scheme
            .eq_ignore_ascii_case(b"bearer ")
            .then(|| value[7..].trim_ascii())
    })
}

/// Compares two secrets in time that depends on their lengths only.
/// Every shard's figures; a shard that does not answer in time is left out.
async fn gather(shard: &Rc<StreamShard>) -> Vec<ShardMetrics> {
    let mut all = Vec::with_capacity(shard.core.shards);
    for id in 0..shard.core.shards as u32 {
        if id == shard.core.id.0 {
            all.push(metrics::snapshot(shard).await);
        } else if let Some(m) = crate::server::streams::ask_shard_metrics(shard, ShardId(id)).await
        {
            all.push(m);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_read_from_its_header_whatever_the_case() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nauthorization: bearer s3cret \r\n\r\n";
        assert_eq!(bearer(head), Some(&b"s3cret"[..]));
        assert_eq!(bearer(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(
            bearer(b"GET / HTTP/1.1\r\nAuthorization: Basic abc\r\n\r\n"),
            None
        );
        use crate::server::auth::same_secret;
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3", b"s3cret"));
    }
}
