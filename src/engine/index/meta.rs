//! The sidecar `<index>.meta.json`: faissx's own facts about an index that FAISS's file format
//! does not hold (metric as the user named it, normalization, how ids were given, where the
//! vectors came from). Versioned: a sidecar with a newer `format_version` is refused.

use super::spec::Metric;
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::io::atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The sidecar format version this build writes and the newest it reads.
pub const META_FORMAT_VERSION: u32 = 1;

/// How vectors got their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdMode {
    /// Ids are positions 0..ntotal in add order.
    #[default]
    Sequential,
    /// Ids were given by the user (the index stores them: IDMap/IDMap2 or IVF).
    Explicit,
}

/// Where the vectors of a build came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InputInfo {
    /// Input path as given.
    pub path: String,
    /// Input format (`fvecs`, `npy`, …).
    pub format: String,
    /// Rows read.
    pub rows: usize,
}

/// Contents of `<index>.meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Sidecar format version ([`META_FORMAT_VERSION`]).
    pub format_version: u32,
    /// faissx version that last wrote the index.
    pub faissx_version: String,
    /// Vector dimension `d`.
    pub d: usize,
    /// Metric as the user named it.
    pub metric: Metric,
    /// Whether vectors are L2-normalized before FAISS sees them (metric cosine).
    pub normalize: bool,
    /// Factory string the index was built from (empty if unknown, e.g. written by Python).
    #[serde(default)]
    pub factory: String,
    /// Number of vectors when last written.
    pub ntotal: usize,
    /// How ids were assigned.
    #[serde(default)]
    pub ids: IdMode,
    /// Training sample size used (0: no training needed).
    #[serde(default)]
    pub train_size: usize,
    /// Inputs that went into the index, in order.
    #[serde(default)]
    pub inputs: Vec<InputInfo>,
    /// Unix time (seconds) of creation.
    #[serde(default)]
    pub created_unix: u64,
    /// Unix time (seconds) of the last write.
    #[serde(default)]
    pub updated_unix: u64,
}

impl IndexMeta {
    /// A fresh sidecar for a new index.
    pub fn new(d: usize, metric: Metric, factory: &str) -> IndexMeta {
        let now = now_unix();
        IndexMeta {
            format_version: META_FORMAT_VERSION,
            faissx_version: env!("CARGO_PKG_VERSION").to_string(),
            d,
            metric,
            normalize: metric.normalizes(),
            factory: factory.to_string(),
            ntotal: 0,
            ids: IdMode::Sequential,
            train_size: 0,
            inputs: Vec::new(),
            created_unix: now,
            updated_unix: now,
        }
    }

    /// The sidecar path of `index`: `<index>.meta.json`.
    pub fn path_for(index: &Path) -> PathBuf {
        let mut s = index.as_os_str().to_owned();
        s.push(".meta.json");
        PathBuf::from(s)
    }

    /// Read the sidecar of `index` if there is one. Fails on corrupt or newer-format files.
    pub fn load(index: &Path) -> Result<Option<IndexMeta>> {
        let p = Self::path_for(index);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&p, e)),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::format(&p, format!("invalid JSON ({e})")))?;
        let ver = v.get("format_version").and_then(|x| x.as_u64()).unwrap_or(0);
        if ver > META_FORMAT_VERSION as u64 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: sidecar format_version {ver} is newer than this faissx supports ({META_FORMAT_VERSION}); upgrade faissx",
                    p.display()
                ),
            ));
        }
        let m: IndexMeta =
            serde_json::from_value(v).map_err(|e| Error::format(&p, format!("invalid sidecar ({e})")))?;
        Ok(Some(m))
    }

    /// Write the sidecar of `index` atomically.
    pub fn save(&self, index: &Path) -> Result<()> {
        let p = Self::path_for(index);
        let mut json =
            serde_json::to_vec_pretty(self).map_err(|e| Error::invalid(format!("serializing sidecar: {e}")))?;
        json.push(b'\n');
        atomic::write_all(&p, &json).map_err(|e| e.context("writing sidecar"))?;
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_format_is_refused() {
        let dir = std::env::temp_dir().join(format!("faissx-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let idx = dir.join("x.index");
        let mut m = IndexMeta::new(4, Metric::Cosine, "Flat");
        m.save(&idx).unwrap();
        assert_eq!(IndexMeta::load(&idx).unwrap().unwrap(), m);
        m.format_version = META_FORMAT_VERSION + 1;
        std::fs::write(IndexMeta::path_for(&idx), serde_json::to_vec(&m).unwrap()).unwrap();
        let e = IndexMeta::load(&idx).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
