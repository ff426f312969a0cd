//! The server's settings: a TOML file (`--config`), overridden by command-line flags, with defaults
//! for the rest. `sluice serve --print-config` prints the result in the file's own format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::server;

/// Every server setting; in the file, any may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Native protocol address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// NATS protocol address, or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_ping_interval_ms: Option<u64>,
    /// Kafka protocol address, or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
    /// The `host:port` Kafka clients are told to connect to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_advertise: Option<String>,
    /// Whether asking for a topic that does not exist creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_auto_create: Option<bool>,
    /// HTTP address for /metrics, /healthz and /readyz, or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// This node's name in a cluster [default: HOSTNAME:CLUSTER_PORT].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where this node listens for its peers; a cluster only with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The other nodes' cluster addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// The `host:port` peers are told this node is at [default: the cluster address].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_advertise: Option<String>,
    /// A secret every node of the cluster knows (or `SLUICE_CLUSTER_SECRET`); links that do not
    /// prove it are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// How long a write to a client may make no progress before it is a slow consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_deadline_ms: Option<u64>,
    /// With users configured: how long a client has to authenticate before it is disconnected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_timeout_ms: Option<u64>,
    /// A bearer token the HTTP port requires (`Authorization: Bearer <token>`); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_token: Option<String>,
    /// Most subscriptions one connection may hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<usize>,
    /// Most streams on the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<usize>,
    /// Most consumers of one stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_consumers: Option<usize>,
    /// Most partitions of one stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_partitions: Option<u32>,
    /// Most unacked messages a consumer may ask to hold per partition (its `max_ack_pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<u32>,
    /// Most pulls with an expiry one consumer member may have waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_waiting_pulls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `always`, `never` or `interval:MS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<String>,
    /// `text` or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// A tracing filter, e.g. `info` or `sluice=debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// PEM certificate chain: with `tls_key`, both client ports speak TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs that sign client certificates: a client that presents one must be
    /// signed by them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Every client presents a certificate signed by `tls_ca`, or its handshake fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// As `tls_verify`, and a client that sends no credentials is the user named as its
    /// certificate names its holder (nats-server's `verify_and_map`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_map: Option<bool>,
    /// Users, with hashed credentials and permissions; with any, every client must authenticate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<server::auth::UserConfig>,
}

/// A node's name when none is given: the host's name and the cluster port (`sluice-0:6222`),
/// unique both for nodes on different hosts and for nodes sharing one.
pub fn default_node_name(cluster: &str) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into `buf`.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let port = cluster.rsplit(':').next().unwrap_or_default();
    let name: String = format!("{host}:{port}")
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | ':' => c,
            _ => '-',
        })
        .take(sluice_protocol::cluster::NODE_NAME_BYTES_MAX)
        .collect();
    name.trim_start_matches(':').to_string()
}

/// Default HTTP address.
pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8280";

impl Settings {
    /// Reads a settings file; the error names the file, the key and the reason.
    pub fn load(path: &Path) -> Result<Settings, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        let settings: Settings = toml::from_str(&text)
            .map_err(|e| format!("config {}: {}", path.display(), e.to_string().trim_end()))?;
        settings
            .check()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        Ok(settings)
    }

    /// `self`, with every setting `over` has replacing it.
    pub fn overridden_by(self, over: Settings) -> Settings {
        // Shards and a CPU set say the same thing: whichever the flags give wins over the file.
        let (shards, cpuset) = if over.shards.is_some() || over.cpuset.is_some() {
            (over.shards, over.cpuset)
        } else {
            (self.shards, self.cpuset)
        };
        Settings {
            listen: over.listen.or(self.listen),
            nats: over.nats.or(self.nats),
            nats_ping_interval_ms: over.nats_ping_interval_ms.or(self.nats_ping_interval_ms),
            kafka: over.kafka.or(self.kafka),
            kafka_advertise: over.kafka_advertise.or(self.kafka_advertise),
            kafka_auto_create: over.kafka_auto_create.or(self.kafka_auto_create),
            http: over.http.or(self.http),
            name: over.name.or(self.name),
            cluster: over.cluster.or(self.cluster),
            routes: if over.routes.is_empty() {
                self.routes
            } else {
                over.routes
            },
            cluster_secret: over.cluster_secret.or(self.cluster_secret),
            cluster_advertise: over.cluster_advertise.or(self.cluster_advertise),
            shards,
            cpuset,
            max_payload: over.max_payload.or(self.max_payload),
            max_pending: over.max_pending.or(self.max_pending),
            write_deadline_ms: over.write_deadline_ms.or(self.write_deadline_ms),
            auth_timeout_ms: over.auth_timeout_ms.or(self.auth_timeout_ms),
            http_token: over.http_token.or(self.http_token),
            max_subscriptions: over.max_subscriptions.or(self.max_subscriptions),
            max_streams: over.max_streams.or(self.max_streams),
            max_consumers: over.max_consumers.or(self.max_consumers),
            max_partitions: over.max_partitions.or(self.max_partitions),
            max_ack_pending: over.max_ack_pending.or(self.max_ack_pending),
            max_waiting_pulls: over.max_waiting_pulls.or(self.max_waiting_pulls),
            max_connections: over.max_connections.or(self.max_connections),
            data_dir: over.data_dir.or(self.data_dir),
            fsync: over.fsync.or(self.fsync),
            log_format: over.log_format.or(self.log_format),
            log_level: over.log_level.or(self.log_level),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            tls_ca: over.tls_ca.or(self.tls_ca),
            tls_verify: over.tls_verify.or(self.tls_verify),
            tls_map: over.tls_map.or(self.tls_map),
            users: if over.users.is_empty() {
                self.users
            } else {
                over.users
            },
        }
    }

    /// Every setting filled in: the defaults where nothing was given.
    pub fn effective(self) -> Settings {
        let default_shards = super::cpus::allowed().len();
        Settings {
            listen: self.listen.or(Some(super::NATIVE_ADDR_DEFAULT.into())),
            nats: self.nats.or(Some(super::NATS_ADDR_DEFAULT.into())),
            nats_ping_interval_ms: self
                .nats_ping_interval_ms
                .or(Some(server::NATS_PING_INTERVAL_DEFAULT.as_millis() as u64)),
            kafka: self.kafka.or(Some(super::KAFKA_ADDR_DEFAULT.into())),
            kafka_advertise: self.kafka_advertise,
            kafka_auto_create: self.kafka_auto_create.or(Some(true)),
            http: self.http.or(Some(HTTP_ADDR_DEFAULT.into())),
            name: match &self.cluster {
                Some(cluster) => self.name.or_else(|| Some(default_node_name(cluster))),
                None => self.name,
            },
            cluster: self.cluster,
            routes: self.routes,
            cluster_secret: self.cluster_secret,
            cluster_advertise: self.cluster_advertise,
            shards: match self.cpuset {
                Some(_) => None,
                None => self.shards.or(Some(default_shards)),
            },
            cpuset: self.cpuset,
            max_payload: self
                .max_payload
                .or(Some(sluice_protocol::limits::PAYLOAD_BYTES_MAX_DEFAULT)),
            max_pending: self.max_pending.or(Some(server::PENDING_BYTES_MAX_DEFAULT)),
            write_deadline_ms: self
                .write_deadline_ms
                .or(Some(server::WRITE_DEADLINE_DEFAULT.as_millis() as u64)),
            auth_timeout_ms: self
                .auth_timeout_ms
                .or(Some(server::AUTH_TIMEOUT_DEFAULT.as_millis() as u64)),
            http_token: self.http_token,
            max_subscriptions: self
                .max_subscriptions
                .or(Some(server::SUBSCRIPTIONS_MAX_DEFAULT)),
            max_streams: self.max_streams.or(Some(server::STREAMS_MAX_DEFAULT)),
            max_consumers: self.max_consumers.or(Some(server::CONSUMERS_MAX_DEFAULT)),
            max_partitions: self.max_partitions.or(Some(server::PARTITIONS_MAX_DEFAULT)),
            max_ack_pending: self
                .max_ack_pending
                .or(Some(server::ACK_PENDING_MAX_DEFAULT)),
            max_waiting_pulls: self
                .max_waiting_pulls
                .or(Some(server::WAITING_PULLS_MAX_DEFAULT)),
            max_connections: self
                .max_connections
                .or(Some(server::CONNECTIONS_MAX_DEFAULT)),
            data_dir: self
                .data_dir
                .or(Some(PathBuf::from(server::DATA_DIR_DEFAULT))),
            fsync: self.fsync.or(Some("always".into())),
            log_format: self.log_format.or(Some("text".into())),
            log_level: self.log_level.or(Some("info".into())),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_ca: self.tls_ca,
            tls_verify: self.tls_verify.or(Some(false)),
            tls_map: self.tls_map.or(Some(false)),
            users: self.users,
        }
    }

    /// Checks the values the types do not: the error names the key.
    pub fn check(&self) -> Result<(), String> {
        let key = |k: &str, e: String| format!("key `{k}`: {e}");
        if let Some(fsync) = &self.fsync {
            fsync
                .parse::<sluice_storage::FsyncPolicy>()
                .map_err(|e| key("fsync", e))?;
        }
        if let Some(list) = &self.cpuset {
            super::cpus::parse_list(list).map_err(|e| key("cpuset", e))?;
        }
        if self.shards == Some(0) {
            return Err(key("shards", "must be at least 1".into()));
        }
        if self.shards.is_some() && self.cpuset.is_some() {
            return Err(key("shards", "give shards or cpuset, not both".into()));
        }
        if let Some(name) = &self.name {
            if !sluice_protocol::cluster::valid_node_name(name) {
                return Err(key(
                    "name",
                    format!("{name:?}: 1 to 128 letters, digits, `-`, `_`, `.` or `:`"),
                ));
            }
        }
        if let Some(route) = self.routes.iter().find(|r| r.trim().is_empty()) {
            return Err(key("routes", format!("{route:?} is not an address")));
        }
        if self.nats_ping_interval_ms == Some(0) {
            return Err(key("nats_ping_interval_ms", "must be at least 1".into()));
        }
        if self.write_deadline_ms == Some(0) {
            return Err(key("write_deadline_ms", "must be at least 1".into()));
        }
        if self.auth_timeout_ms == Some(0) {
            return Err(key("auth_timeout_ms", "must be at least 1".into()));
        }
        for (name, value) in [
            ("max_subscriptions", self.max_subscriptions),
            ("max_streams", self.max_streams),
            ("max_consumers", self.max_consumers),
        ] {
            if value == Some(0) {
                return Err(key(name, "must be at least 1".into()));
            }
        }
        for (name, value) in [
            ("max_partitions", self.max_partitions),
            ("max_ack_pending", self.max_ack_pending),
            ("max_waiting_pulls", self.max_waiting_pulls),
        ] {
            if value == Some(0) {
                return Err(key(name, "must be at least 1".into()));
            }
        }
        for (name, value) in [
            ("listen", &self.listen),
            ("nats", &self.nats),
            ("kafka", &self.kafka),
            ("http", &self.http),
        ] {
            match value {
                Some(v) if name != "listen" && v == "off" => {}
                Some(v) => {
                    server::resolve(v).map_err(|e| key(name, e.to_string()))?;
                }
                None => {}
            }
        }
        match self.log_format.as_deref() {
            None | Some("text") | Some("json") => {}
            Some(other) => {
                return Err(key(
                    "log_format",
                    format!("{other:?} is not one of text, json"),
                ))
            }
        }
        server::auth::check(&self.users)?;
        if let Some(level) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| key("log_level", e.to_string()))?;
        }
        Ok(())
    }

    /// Checks what only the merged settings can tell: a certificate needs its key, client
    /// certificates need TLS and a CA bundle, mapping them needs users, and users without a
    /// password or token need mapping.
    pub fn check_merged(&self) -> Result<(), String> {
        if !self.routes.is_empty() && self.cluster.is_none() {
            return Err("key `routes`: routes need a cluster address (`cluster`)".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("key `tls_cert`: tls_cert and tls_key go together".into());
        }
        let verify = self.tls_verify == Some(true);
        let map = self.tls_map == Some(true);
        let which = match (map, verify) {
            (true, _) => "tls_map",
            (false, true) => "tls_verify",
            (false, false) => "tls_ca",
        };
        if (self.tls_ca.is_some() || verify || map) && self.tls_cert.is_none() {
            return Err(format!(
                "key `{which}`: client certificates need TLS: give tls_cert and tls_key"
            ));
        }
        if (verify || map) && self.tls_ca.is_none() {
            return Err(format!(
                "key `{which}`: give tls_ca, the CAs that sign client certificates"
            ));
        }
        if map && self.users.is_empty() {
            return Err("key `tls_map`: no users to map client certificates to".into());
        }
        server::tls::check_secrets(&self.users, map)
    }

    /// The settings as a TOML file.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
