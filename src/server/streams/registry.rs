//! The list of streams, kept by shard 0 in `<data-dir>/streams.json` and sent to every shard.

use std::path::{Path, PathBuf};

use crate::api::{ConfigError, StreamConfig};

/// Why a change to the registry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("stream {0} does not exist")]
    NotFound(String),
    /// A bound on streams was reached.
    #[error("{0}")]
    Limit(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Shard 0's registry.
pub struct Registry {
    path: PathBuf,
    streams: Vec<StreamConfig>,
}

impl Registry {
    /// Loads the registry, or starts an empty one.
    pub fn load(data_dir: &Path) -> Result<Registry, RegistryError> {
        let path = data_dir.join("streams.json");
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let streams = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Invalid(format!("{} is not a stream list: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(Registry { path, streams })
    }

    /// Every stream.
    pub fn streams(&self) -> &[StreamConfig] {
        &self.streams
    }

    /// A stream by name.
    pub fn get(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Adds a stream (the same config again is accepted as is).
    pub fn add(&mut self, config: StreamConfig) -> Result<(), RegistryError> {
        config.check()?;
        if let Some(existing) = self.get(&config.name) {
            if *existing == config {
                return Ok(());
            }
            return Err(RegistryError::Invalid(format!(
                "stream {} exists with another configuration",
                config.name
            )));
        }
        config.check_against(&self.streams)?;
        self.streams.push(config);
        self.save()
    }

    /// Removes a stream.
    pub fn remove(&mut self, name: &str) -> Result<(), RegistryError> {
        let before = self.streams.len();
        self.streams.retain(|s| s.name != name);
        if self.streams.len() == before {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        self.save()
    }

    /// Writes the registry atomically and durably: temp file, sync, rename, sync the directory.
    fn save(&self) -> Result<(), RegistryError> {
        use std::io::Write;
        let io = |source| RegistryError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&self.streams)
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, subjects: &[&str]) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            partitions: 4,
            max_age_secs: None,
            max_bytes: None,
        }
    }

    #[test]
    fn overlapping_streams_are_refused_and_the_registry_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("sluice-registry-{}", fastrand::u64(..)));
        let mut registry = Registry::load(&dir).unwrap();
        registry.add(stream("orders", &["orders.>"])).unwrap();
        registry.add(stream("orders", &["orders.>"])).unwrap();
        assert!(registry.add(stream("orders", &["other"])).is_err());
        assert!(registry.add(stream("eu", &["orders.eu.*"])).is_err());
        assert!(registry.add(stream("bad name", &["x"])).is_err());
        assert!(registry.add(stream("self", &["a.*", "a.b"])).is_err());
        registry.add(stream("users", &["users.*.events"])).unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.streams().len(), 2);
        let mut again = again;
        again.remove("orders").unwrap();
        assert!(matches!(
            again.remove("orders"),
            Err(RegistryError::NotFound(_))
        ));
        assert_eq!(Registry::load(&dir).unwrap().streams().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
