//! Snapshots of a replica's state at a log sequence, in object storage (`s3://`, `gs://`,
//! `az://`, through [`crate::engine::io::object`]) or a shared directory (`file://` or a
//! path).
//!
//! Layout under `--snapshots`: `<seq>/<n>.index` (with its `.meta.json` sidecar) and
//! `<seq>/<n>.meta` (per-vector metadata and string ids, [`Metadata::write`]'s format) for
//! the `n`-th index, then `<seq>/manifest.json`, written last: a snapshot without its
//! manifest is never read. `seq` is the last log record the snapshot holds, zero-padded to
//! 20 digits so that names sort by sequence.

use super::super::store::{Metadata, Origin};
use super::super::{Entry, Service, Slot};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{Index, IndexMeta};
use crate::engine::io::object::{self, Object};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Where snapshots live.
#[derive(Debug, Clone)]
pub enum SnapStore {
    /// A directory every replica sees (`file:///shared/fx-snap`, or a plain path).
    Dir(PathBuf),
    /// An object-store prefix (`s3://bucket/prefix`), without a trailing `/`.
    Bucket(String),
}

/// One index of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapIndex {
    /// Tenant.
    pub tenant: String,
    /// Index id.
    pub id: String,
    /// The FAISSx index type it was created with (as `list_indices` shows it).
    pub kind: String,
    /// Its generation (1 when created, +1 per import), so `if_generation` agrees on every
    /// replica.
    pub generation: u64,
    /// Its files: `<file>.index` and `<file>.meta` beside the manifest.
    pub file: String,
    /// Size in bytes and CRC-32 of the file its last import brought (`None`: created).
    #[serde(default)]
    pub imported: Option<(u64, u32)>,
}

/// `manifest.json`: what a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The last log record the snapshot holds.
    pub seq: u64,
    /// When it was taken (seconds since the Unix epoch).
    pub time: f64,
    /// The replica that took it.
    pub replica: String,
    /// Its indices.
    pub indices: Vec<SnapIndex>,
}

/// The folder (key prefix) of the snapshot at `seq`.
pub fn folder(seq: u64) -> String {
    format!("{seq:020}")
}

static NO_STOP: AtomicBool = AtomicBool::new(false);

impl SnapStore {
    /// Parse `--snapshots`: an object-store URL, a `file://` URL or a path.
    ///
    /// Errors: `InvalidInput` for a malformed `file://` URL.
    pub fn parse(s: &str) -> Result<SnapStore> {
        let p = Path::new(s);
        if object::is_url(p) {
            // Checked now (scheme, bucket, credentials source), not at the first snapshot.
            Object::open(&PathBuf::from(format!("{}/probe", s.trim_end_matches('/'))))?;
            return Ok(SnapStore::Bucket(s.trim_end_matches('/').to_string()));
        }
        Ok(SnapStore::Dir(object::local_path(p)?))
    }

    /// Where `key` is, for messages.
    pub fn show(&self, key: &str) -> String {
        match self {
            SnapStore::Dir(d) => d.join(key).display().to_string(),
            SnapStore::Bucket(b) => format!("{b}/{key}"),
        }
    }

    fn object(&self, key: &str) -> Result<Object> {
        match self {
            SnapStore::Bucket(b) => Object::open(&PathBuf::from(format!("{b}/{key}"))),
            SnapStore::Dir(_) => Err(Error::new(ErrorKind::Internal, "not an object store")),
        }
    }

    /// Store the local file `src` as `key` (whole or not at all: a temp name then a rename in
    /// a directory; one PUT or a multipart upload in a bucket).
    pub fn put(&self, key: &str, src: &Path) -> Result<()> {
        match self {
            SnapStore::Dir(d) => {
                let dest = d.join(key);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                let tmp = crate::engine::io::atomic::tmp_path(&dest);
                std::fs::copy(src, &tmp).map_err(|e| Error::io(&tmp, e))?;
                std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
                std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
                crate::engine::io::atomic::sync_parent(&dest)
            }
            SnapStore::Bucket(_) => self.object(key)?.upload(src, &NO_STOP).map(|_| ()),
        }
    }

    /// Fetch `key` into the new local file `dest`.
    ///
    /// Errors: `NotFound`/`Io` naming the key's location.
    pub fn get(&self, key: &str, dest: &Path) -> Result<()> {
        match self {
            SnapStore::Dir(d) => {
                let src = d.join(key);
                std::fs::copy(&src, dest).map(|_| ()).map_err(|e| Error::io(&src, e))
            }
            SnapStore::Bucket(_) => self.object(key)?.download(dest, &NO_STOP).map(|_| ()),
        }
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        match self {
            SnapStore::Dir(d) => Ok(d.join(key).is_file()),
            SnapStore::Bucket(_) => self.object(key)?.exists(),
        }
    }

    /// Delete `key` (a missing one is not an error).
    pub fn delete(&self, key: &str) -> Result<()> {
        match self {
            SnapStore::Dir(d) => match std::fs::remove_file(d.join(key)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(&d.join(key), e)),
            },
            SnapStore::Bucket(_) => self.object(key)?.delete(),
        }
    }

    /// The manifest of the snapshot at `seq`.
    ///
    /// Errors: `NotFound`/`Io` naming it; `Format` when it does not parse.
    pub fn manifest(&self, seq: u64, tmp: &Path) -> Result<Manifest> {
        let key = format!("{}/manifest.json", folder(seq));
        let local = tmp.join("manifest.json");
        self.get(&key, &local)?;
        let text = std::fs::read(&local).map_err(|e| Error::io(&local, e))?;
        serde_json::from_slice(&text).map_err(|e| Error::new(ErrorKind::Format, format!("{}: {e}", self.show(&key))))
    }

    /// Delete the files of the snapshot `m` (the manifest first, so a half-deleted snapshot
    /// is never read).
    pub fn remove(&self, m: &Manifest) -> Result<()> {
        let f = folder(m.seq);
        self.delete(&format!("{f}/manifest.json"))?;
        for ix in &m.indices {
            for ext in ["index", "index.meta.json", "meta"] {
                self.delete(&format!("{f}/{}.{ext}", ix.file))?;
            }
        }
        if let SnapStore::Dir(d) = self {
            let _ = std::fs::remove_dir(d.join(&f));
        }
        Ok(())
    }
}

impl Service {
    /// Write a snapshot of every index, as it is now, to `store` as the state at log
    /// sequence `seq` (the caller, the log's applier, applies nothing meanwhile). Files are
    /// staged in `tmp`; the manifest goes last.
    pub(super) fn write_snapshot(&self, store: &SnapStore, seq: u64, replica: &str, tmp: &Path) -> Result<Manifest> {
        let mut entries: Vec<((String, String), Arc<Entry>)> = self
            .indices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let f = folder(seq);
        let mut indices = Vec::new();
        for (n, ((tenant, id), e)) in entries.into_iter().enumerate() {
            let file = format!("{n}");
            let (ix_path, md_path) = (tmp.join(format!("{file}.index")), tmp.join(format!("{file}.meta")));
            {
                let g = e.read();
                g.index.write_to(&ix_path)?;
                g.md.write(&md_path)?;
            }
            store.put(&format!("{f}/{file}.index"), &ix_path)?;
            let sidecar = IndexMeta::path_for(&ix_path);
            if sidecar.is_file() {
                store.put(&format!("{f}/{file}.index.meta.json"), &sidecar)?;
            }
            store.put(&format!("{f}/{file}.meta"), &md_path)?;
            for p in [&ix_path, &md_path, &sidecar] {
                let _ = std::fs::remove_file(p);
            }
            let imported = e.origin.imported.map(|c| (c.bytes, c.crc32));
            indices.push(SnapIndex {
                tenant,
                id,
                kind: e.kind.clone(),
                generation: e.origin.generation,
                file,
                imported,
            });
        }
        let m = Manifest { seq, time: crate::engine::protocol::now_f64(), replica: replica.to_string(), indices };
        let local = tmp.join("manifest.json");
        let text = serde_json::to_vec_pretty(&m).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        std::fs::write(&local, text).map_err(|e| Error::io(&local, e))?;
        store.put(&format!("{f}/manifest.json"), &local)?;
        let _ = std::fs::remove_file(&local);
        Ok(m)
    }

    /// Replace every index with those of the snapshot `m` (downloaded through `tmp`).
    ///
    /// Errors: the first file that cannot be fetched or read, naming it; the indices are
    /// left as they were.
    pub(super) fn restore_snapshot(&self, store: &SnapStore, m: &Manifest, tmp: &Path) -> Result<()> {
        let f = folder(m.seq);
        let mut map = std::collections::HashMap::new();
        for ix in &m.indices {
            let (ix_path, md_path) = (tmp.join(format!("{}.index", ix.file)), tmp.join(format!("{}.meta", ix.file)));
            store.get(&format!("{f}/{}.index", ix.file), &ix_path)?;
            let sidecar_key = format!("{f}/{}.index.meta.json", ix.file);
            if store.exists(&sidecar_key)? {
                store.get(&sidecar_key, &IndexMeta::path_for(&ix_path))?;
            }
            store.get(&format!("{f}/{}.meta", ix.file), &md_path)?;
            let index = Index::open(&ix_path).map_err(|e| e.context(store.show(&format!("{f}/{}.index", ix.file))))?;
            let md = Metadata::read(&md_path)?;
            for p in [&ix_path, &md_path, &IndexMeta::path_for(&ix_path)] {
                let _ = std::fs::remove_file(p);
            }
            let imported = ix.imported.map(|(bytes, crc32)| crate::engine::index::meta::Checksum { bytes, crc32 });
            let origin = Origin { generation: ix.generation, imported };
            map.insert(
                (ix.tenant.clone(), ix.id.clone()),
                Entry::with(ix.kind.clone(), Slot::new(index, md, None), origin, None),
            );
        }
        *self.indices.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_store_puts_gets_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapStore::parse(&format!("file://{}", dir.path().join("snap").display())).unwrap();
        let src = dir.path().join("x");
        std::fs::write(&src, b"hello").unwrap();
        store.put("00000000000000000007/0.index", &src).unwrap();
        assert!(store.exists("00000000000000000007/0.index").unwrap());
        let back = dir.path().join("y");
        store.get("00000000000000000007/0.index", &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"hello");
        let e = store.get("00000000000000000007/9.index", &dir.path().join("z")).unwrap_err();
        assert!(e.to_string().contains("9.index"), "{e}");
        let m = Manifest {
            seq: 7,
            time: 0.0,
            replica: "a".into(),
            indices: vec![SnapIndex {
                tenant: "t".into(),
                id: "i".into(),
                kind: "L2".into(),
                generation: 1,
                file: "0".into(),
                imported: None,
            }],
        };
        store.remove(&m).unwrap();
        assert!(!store.exists("00000000000000000007/0.index").unwrap());
        assert_eq!(folder(7), "00000000000000000007");
    }
}
