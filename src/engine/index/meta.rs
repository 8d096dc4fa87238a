//! The sidecar `<index>.meta.json`: faissx's own facts about an index that FAISS's file format
//! does not hold (metric as the user named it, normalization, how ids were given, where the
//! vectors came from), and the size and CRC-32 of the index file it was written with, checked
//! before FAISS reads the file. Versioned: a sidecar with a newer `format_version` is refused;
//! fields added within a version have serde defaults, so older sidecars still load (tested
//! with `testdata/compat/v1/`).

use super::spec::Metric;
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::io::atomic;
use serde::{Deserialize, Serialize};
use std::io::Read;
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
    /// Size in bytes of the index file as written with this sidecar (absent in sidecars
    /// written before checksums, and in sidecars of indices not yet written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_bytes: Option<u64>,
    /// CRC-32 (IEEE, as zlib's `crc32`) of those bytes. Covers the index file only, not the
    /// `.ivfdata` file of on-disk inverted lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_crc32: Option<u32>,
    /// For a part of a split build (`add --task`, or a `merge --partial` of parts): how many
    /// tasks the build has and which of them this index holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartsInfo>,
    /// The index's per-vector metadata table (`<index>.meta.parquet`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataInfo>,
}

/// The tasks of a split build an index holds (see `engine::parts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsInfo {
    /// Tasks in the build (N).
    pub count: usize,
    /// The task numbers whose rows this index holds, ascending.
    pub have: Vec<usize>,
    /// CRC-32 of the trained index file the tasks copied (from its sidecar), so parts of
    /// builds from different `faissx train` outputs (different quantizers) are not merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<u32>,
}

/// What the sidecar records of an index's metadata table (see `engine::filter::table`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataInfo {
    /// Rows in the table (vectors with a metadata row or a string id).
    pub rows: usize,
    /// Whether the index's ids are strings (each row maps one to its FAISS id).
    pub string_ids: bool,
    /// The user's fields: name, type, rows where present.
    pub fields: Vec<FieldInfo>,
    /// Size in bytes of the table file as written.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the table file, checked when it is read.
    pub crc32: u32,
}

/// One metadata field, as `faissx info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldInfo {
    /// Field name (top level; nested fields are inside its type).
    pub name: String,
    /// Type (`int64`, `float64`, `string`, `bool`, `list<string>`, `struct{a, b}`).
    #[serde(rename = "type")]
    pub ty: String,
    /// Rows where the field is present (not null).
    pub count: usize,
}

/// Size and CRC-32 of a file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, crc32 {:08x}", self.bytes, self.crc32)
    }
}

impl Checksum {
    /// Read the file at `path` front to back and checksum it (about 0.1 s per 200 MB once
    /// the file is in the page cache; a cold file costs one sequential read).
    pub fn of_file(path: &Path) -> Result<Checksum> {
        Checksum::read_through(path, |_| Ok(()))
    }

    /// Read the file at `path` front to back as [`Checksum::of_file`] does, handing each
    /// piece read to `each` (e.g. to copy the file while checksumming it).
    pub fn read_through(path: &Path, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<Checksum> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            h.update(&buf[..n]);
            each(&buf[..n])?;
            bytes += n as u64;
        }
        Ok(Checksum { bytes, crc32: h.finalize() })
    }
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
            index_bytes: None,
            index_crc32: None,
            parts: None,
            metadata: None,
        }
    }

    /// The index file's checksum recorded in this sidecar, if it has one.
    pub fn checksum(&self) -> Option<Checksum> {
        Some(Checksum { bytes: self.index_bytes?, crc32: self.index_crc32? })
    }

    /// Record the index file's checksum.
    pub fn set_checksum(&mut self, sum: Option<Checksum>) {
        self.index_bytes = sum.map(|s| s.bytes);
        self.index_crc32 = sum.map(|s| s.crc32);
    }

    /// Check, before FAISS reads it, that the index file at `index` is the one this sidecar was
    /// written with: first its size (no read), then its CRC-32 (one sequential read of the
    /// file, which also leaves it in the page cache). A sidecar without a checksum passes.
    ///
    /// This guards against damage (bit rot, truncation, a file replaced by another program),
    /// not against a forger who writes a matching sidecar: files from elsewhere go through
    /// [`super::probe`].
    ///
    /// Errors: `Format` naming `index`, both sizes and checksums.
    pub fn verify(&self, index: &Path) -> Result<bool> {
        let Some(want) = self.checksum() else {
            return Ok(false);
        };
        let len = std::fs::metadata(index).map_err(|e| Error::io(index, e))?.len();
        let got = if len == want.bytes { Checksum::of_file(index)? } else { Checksum { bytes: len, crc32: 0 } };
        if got != want {
            let found = if len == want.bytes { got.to_string() } else { format!("{len} bytes") };
            return Err(Error::format(
                index,
                format!(
                    "index file does not match its sidecar checksum ({} records {want}, the file has {found}): the file is damaged or was rewritten by another program (if so, remove the sidecar)",
                    Self::path_for(index).file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
            ));
        }
        Ok(true)
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
        Self::parse(&p, &bytes).map(Some)
    }

    /// The sidecar in `bytes`, read from `p` (named in errors). Fails on corrupt or
    /// newer-format sidecars.
    pub fn parse(p: &Path, bytes: &[u8]) -> Result<IndexMeta> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::format(p, format!("invalid JSON ({e})")))?;
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
        serde_json::from_value(v).map_err(|e| Error::format(p, format!("invalid sidecar ({e})")))
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

    #[test]
    fn v1_sidecar_without_checksum_loads() {
        let idx = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/compat/v1/flat-cosine.index");
        let m = IndexMeta::load(&idx).unwrap().unwrap();
        assert_eq!((m.format_version, m.d, m.metric, m.normalize, m.ntotal), (1, 8, Metric::Cosine, true, 32));
        assert_eq!(m.checksum(), None);
        assert!(!m.verify(&idx).unwrap(), "no checksum: nothing verified");
        // Written again, a sidecar without a checksum has no checksum fields at all.
        let v = serde_json::to_value(&m).unwrap();
        assert!(v.get("index_crc32").is_none() && v.get("index_bytes").is_none());
    }

    #[test]
    fn checksum_mismatch_names_the_file() {
        let dir = std::env::temp_dir().join(format!("faissx-meta-sum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let idx = dir.join("y.index");
        std::fs::write(&idx, b"0123456789").unwrap();
        let mut m = IndexMeta::new(4, Metric::L2, "Flat");
        let sum = Checksum::of_file(&idx).unwrap();
        // zlib.crc32(b"0123456789")
        assert_eq!(sum, Checksum { bytes: 10, crc32: 0xa684c7c6 });
        m.set_checksum(Some(sum));
        m.save(&idx).unwrap();
        let back = IndexMeta::load(&idx).unwrap().unwrap();
        assert_eq!(back.checksum(), Some(sum));
        assert!(back.verify(&idx).unwrap());
        std::fs::write(&idx, b"0123456788").unwrap();
        let e = back.verify(&idx).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format);
        let s = e.to_string();
        assert!(s.contains("y.index: index file does not match its sidecar checksum"), "{s}");
        assert!(s.contains("y.index.meta.json records 10 bytes, crc32 a684c7c6"), "{s}");
        std::fs::write(&idx, b"01234").unwrap();
        let s = back.verify(&idx).unwrap_err().to_string();
        assert!(s.contains("the file has 5 bytes"), "{s}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
