//! Small files written whole and durably: consumer states, group offsets, the meta group's state.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// Writes `value` as JSON to `path` durably: temporary file, fsync, rename, fsync of the
/// directory, which is created if missing. Blocking: run it on a blocking thread.
pub fn write_json_durably<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&json)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir).and_then(|d| d.sync_all())
}
