//! Persistence under `--data-dir`: one folder per tenant, one per index, each holding a
//! checkpoint (FAISS index file + sidecar, per-vector metadata, a `CHECKPOINT` record naming
//! them with their checksums) and a write-ahead log of the mutations since.
//!
//! A mutation is appended to the WAL and fsynced before it is applied and acknowledged, so a
//! `kill -9` right after a reply loses nothing. An append that fails (full disk, I/O error)
//! is cut off again, back to the last good record, before the error is returned, so no
//! partial record ever sits in front of later ones; if even that fails the index's store
//! refuses every later write until the server restarts. A checkpoint writes new, numbered
//! files (temp + fsync + rename), reads them back for their CRC-32s, then atomically
//! replaces `CHECKPOINT` (the commit point); the files of the checkpoint in force are never
//! overwritten, and WAL records with a sequence number at or below the checkpoint's are
//! skipped on replay, so a crash or an error at any point leaves a consistent state.
//!
//! Damage is reported, never repaired by throwing data away: only a torn *final* WAL record
//! (a crash mid-append: fewer than 8 header bytes, a length running past the end of the file
//! over bytes that are an unfinished record, a zero-filled tail, or a checksum mismatch in a
//! record that ends exactly at the end of the file) is cut. A bad record with more bytes
//! after it, a record that does not decode, a checkpoint file whose checksum or size differs
//! from `CHECKPOINT` (checked before FAISS reads it), a `CHECKPOINT` naming anything but its
//! own plain file names, or any file that does not parse *quarantines* that index:
//! [`Store::load_all`] reports it with the file, byte offset or checksums at fault, leaves
//! its files untouched, and loads the others. Stray entries under `tenants/` are ignored
//! (with a warning) and leftover `*.tmp` files of interrupted writes are removed.
//!
//! Under `serve --mmap`, [`Store::load_all`] maps checkpoints whose WAL holds nothing newer;
//! an index with newer records is loaded so the server can replay them, checkpoint and then
//! map it (a mapped index can never take a WAL record, since the server refuses its
//! mutations). This module knows files, not sockets, and prints nothing: warnings go back to
//! the caller; the only log event of its own is a checkpoint's (INFO, through `tracing`). Index ids reaching it are already validated (`[A-Za-z0-9._-]`, never
//! `.`/`..`).
//!
//! ```text
//! DIR/tenants/<tenant>/<index>/CHECKPOINT          {"seq":…,"index":"index-<n>.faiss","metadata":"metadata-<n>.msgpack","kind":…,
//!                                                   "index_crc32":…,"index_bytes":…,"sidecar_crc32":…,"metadata_crc32":…}
//! DIR/tenants/<tenant>/<index>/index-<n>.faiss     (+ .meta.json sidecar)
//! DIR/tenants/<tenant>/<index>/metadata-<n>.msgpack
//! DIR/tenants/<tenant>/<index>/wal.log             [u32 len][u32 crc32][msgpack record]…  (little-endian)
//! DIR/.tmp, DIR/.trash                             creation and deletion staging
//! ```
//!
//! `<n>` is the WAL sequence number of the checkpoint, or one more than the previous
//! checkpoint's `<n>` when no record came in between (a retrain or a reset), so a new
//! checkpoint never writes over the files the one in force names.

use crate::engine::error::{Error, IoContext, Result};
use crate::engine::index::meta::Checksum;
use crate::engine::index::{Index, IndexMeta, OpenOptions};
use crate::engine::io::atomic;
use crate::engine::protocol::{self, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod index_store;
mod keys;
#[cfg(test)]
mod tests;
mod wal;

use crate::engine::filter::MetaTable;
pub use index_store::{DiskStats, IndexStore, Origin};
pub use keys::StringIds;
use wal::read_wal;
pub use wal::{crc32, record_seq};

/// WAL size that triggers a checkpoint after a mutation.
pub const CHECKPOINT_WAL_BYTES: u64 = 64 << 20;

/// Per-vector metadata of an index plus its index-level metadata (from `create_index`).
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Index-level metadata given at creation.
    pub index: Option<Value>,
    /// One value per vector id.
    pub vectors: HashMap<i64, Value>,
    /// The index's string ids (empty when its ids are integers).
    pub keys: StringIds,
}

impl Metadata {
    fn encode(&self) -> Vec<u8> {
        let mut rows: Vec<(&i64, &Value)> = self.vectors.iter().collect();
        rows.sort_by_key(|(k, _)| **k);
        let v = Value::Map(vec![
            (Value::from("index"), self.index.clone().unwrap_or(Value::Nil)),
            (
                Value::from("vectors"),
                Value::Array(rows.into_iter().map(|(k, v)| Value::Array(vec![Value::from(*k), v.clone()])).collect()),
            ),
            (
                Value::from("keys"),
                Value::Array(
                    self.keys
                        .sorted()
                        .into_iter()
                        .map(|(id, key)| Value::Array(vec![Value::from(id), Value::from(key)]))
                        .collect(),
                ),
            ),
        ]);
        protocol::encode_value(&v)
    }

    /// The server's form of a metadata table written by `faissx build` / `add`
    /// (`<index>.meta.parquet`): each row's fields as a map (rows without fields have no
    /// entry) and its string id.
    ///
    /// Errors: `InvalidInput` when the table cannot be read back as JSON.
    pub fn from_table(t: &MetaTable) -> Result<Metadata> {
        let ids: Vec<i64> = t.ids().values().to_vec();
        let mut md = Metadata::default();
        for (chunk_ids, chunk) in ids.chunks(65_536).map(|c| (c, t.rows_json(c))) {
            for (id, row) in chunk_ids.iter().zip(chunk?) {
                if row.as_object().is_some_and(|o| !o.is_empty()) {
                    md.vectors.insert(*id, protocol::json::from_json(&row));
                }
                if let Some(k) = t.key_of(*id) {
                    md.keys.insert(*id, k.to_string());
                }
            }
        }
        Ok(md)
    }

    /// This metadata as a table for the vectors `ids` (every vector of the index, so that
    /// vectors without metadata match the negations locally as they do on the server):
    /// what `faissx search --filter` reads beside an exported index.
    ///
    /// Errors: `InvalidInput` when the values cannot be made into columns.
    pub fn to_table(&self, ids: &[i64]) -> Result<MetaTable> {
        let rows: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| match self.vectors.get(id).map(protocol::json::to_json) {
                Some(v @ serde_json::Value::Object(_)) => v,
                _ => serde_json::Value::Object(Default::default()),
            })
            .collect();
        let keys = (!self.keys.is_empty()).then(|| {
            ids.iter().map(|&id| self.keys.key_of(id).map(str::to_string).unwrap_or_else(|| id.to_string())).collect()
        });
        MetaTable::new(crate::engine::filter::table::json_to_batch(&rows, "metadata")?, ids.to_vec(), keys)
    }

    /// Read a metadata file (as [`Metadata::write`] writes it).
    pub fn read(path: &Path) -> Result<Metadata> {
        Metadata::decode(path, &std::fs::read(path).at(path)?)
    }

    /// Write the metadata to `path` (atomically: temp file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        atomic::write_all(path, &self.encode())
    }

    /// Parse a metadata file; anything but what [`Metadata::encode`] writes is an error.
    fn decode(path: &Path, bytes: &[u8]) -> Result<Metadata> {
        let mut rd = bytes;
        let v = protocol::decode_value(&mut rd).map_err(|e| Error::format(path, e.message()))?;
        if !rd.is_empty() {
            return Err(Error::format(path, format!("{} bytes after the metadata", rd.len())));
        }
        let Value::Map(m) = v else {
            return Err(Error::format(path, "metadata file does not hold a map"));
        };
        let mut out = Metadata::default();
        for (k, v) in m {
            match (k.as_str(), v) {
                (Some("index"), v) => out.index = (!v.is_nil()).then_some(v),
                (Some("vectors"), Value::Array(rows)) => {
                    for (i, r) in rows.into_iter().enumerate() {
                        let pair = match r {
                            Value::Array(kv) if kv.len() == 2 => kv,
                            _ => return Err(Error::format(path, format!("vector row {i} is not an [id, value] pair"))),
                        };
                        let mut kv = pair.into_iter();
                        let (id, val) = (kv.next(), kv.next());
                        match (id.as_ref().and_then(Value::as_i64), val) {
                            (Some(id), Some(val)) => {
                                out.vectors.insert(id, val);
                            }
                            _ => return Err(Error::format(path, format!("vector row {i} has no integer id"))),
                        }
                    }
                }
                (Some("keys"), Value::Array(rows)) => {
                    for (i, r) in rows.into_iter().enumerate() {
                        let pair = match r {
                            Value::Array(kv) if kv.len() == 2 => kv,
                            _ => {
                                return Err(Error::format(path, format!("key row {i} is not an [id, string id] pair")))
                            }
                        };
                        match (pair[0].as_i64(), pair[1].as_str()) {
                            (Some(id), Some(key)) => out.keys.insert(id, key.to_string()),
                            _ => {
                                return Err(Error::format(
                                    path,
                                    format!("key row {i} is not an integer id with a string id"),
                                ))
                            }
                        }
                    }
                }
                (Some("vectors"), other) => {
                    return Err(Error::format(
                        path,
                        format!("\"vectors\" is {}, not an array", protocol::type_name(&other)),
                    ))
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The data directory.
pub struct Store {
    root: PathBuf,
}

/// One index read back from disk, with the WAL records still to replay.
pub struct Loaded {
    /// Tenant.
    pub tenant: String,
    /// Index id.
    pub id: String,
    /// The index type as requested at creation.
    pub kind: String,
    /// The checkpointed index.
    pub index: Index,
    /// The checkpointed metadata.
    pub metadata: Metadata,
    /// WAL records newer than the checkpoint, in order.
    pub replay: Vec<Value>,
    /// The open store, positioned after the last good record.
    pub store: IndexStore,
}

/// An index that could not be loaded. Its files are left exactly as they were found.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Tenant.
    pub tenant: String,
    /// Index id (its folder name).
    pub id: String,
    /// What is wrong, naming the file (and byte offset or checksums) at fault.
    pub reason: String,
}

/// What [`Store::load_all`] found.
#[derive(Default)]
pub struct LoadReport {
    /// Indices read back, ready for replay.
    pub loaded: Vec<Loaded>,
    /// Indices that could not be read back.
    pub quarantined: Vec<Quarantined>,
    /// One line each: stray entries ignored, leftover temp files removed, torn WAL tails cut.
    pub warnings: Vec<String>,
}

/// The `CHECKPOINT` record. The checksums are absent in files written before they existed;
/// such checkpoints load unverified.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    seq: u64,
    index: String,
    metadata: String,
    kind: String,
    /// CRC-32 (IEEE) of the index file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index_crc32: Option<u32>,
    /// Size of the index file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index_bytes: Option<u64>,
    /// CRC-32 of the index's sidecar (`<index>.meta.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sidecar_crc32: Option<u32>,
    /// CRC-32 of the metadata file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata_crc32: Option<u32>,
    /// The index's generation (absent before imports existed: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    /// CRC-32 and size of the file the last import brought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported_crc32: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported_bytes: Option<u64>,
}

impl Store {
    /// Open (creating) the data directory.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in ["tenants", ".tmp", ".trash"] {
            std::fs::create_dir_all(root.join(sub)).at(&root.join(sub))?;
        }
        // Leftovers of interrupted creations and deletions.
        for sub in [".tmp", ".trash"] {
            if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Store { root: root.to_path_buf() })
    }

    fn dir(&self, tenant: &str, id: &str) -> PathBuf {
        self.root.join("tenants").join(tenant).join(id)
    }

    /// Persist a newly created index (checkpoint at sequence 0) and return its store.
    pub fn create(&self, tenant: &str, id: &str, kind: &str, index: &mut Index, md: &Metadata) -> Result<IndexStore> {
        self.create_with(tenant, id, kind, |st| st.checkpoint(index, md))
    }

    /// Persist an imported index under a new name: `file` (fsynced, checksum `sum`, on this
    /// file system; `index` is what it reads as) becomes its first checkpoint, generation 1.
    #[allow(clippy::too_many_arguments)]
    pub fn import_new(
        &self,
        tenant: &str,
        id: &str,
        kind: &str,
        file: &Path,
        sum: Checksum,
        index: &mut Index,
        md: &Metadata,
    ) -> Result<IndexStore> {
        self.create_with(tenant, id, kind, |st| {
            st.origin.generation = 0;
            st.adopt(file, sum, index, md)
        })
    }

    /// A folder for temporary files on the data directory's file system (emptied at start).
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    /// Build an index folder in `.tmp` (its first checkpoint written by `init`), then rename
    /// it into place: a crash at any point leaves either no index or a whole one.
    fn create_with(
        &self,
        tenant: &str,
        id: &str,
        kind: &str,
        init: impl FnOnce(&mut IndexStore) -> Result<()>,
    ) -> Result<IndexStore> {
        let final_dir = self.dir(tenant, id);
        let tenant_dir = self.root.join("tenants").join(tenant);
        std::fs::create_dir_all(&tenant_dir).at(&tenant_dir)?;
        atomic::sync_parent(&tenant_dir)?;
        let stage = fresh_dir(&self.root.join(".tmp"), &format!("{tenant}.{id}."))?;
        let staged = IndexStore::new_in(&stage, kind).and_then(|mut st| {
            init(&mut st)?;
            Ok(st)
        });
        let st = match staged {
            Ok(st) => st,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&stage);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&stage, &final_dir).at(&final_dir) {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
        atomic::sync_parent(&final_dir)?;
        st.moved_to(&final_dir)
    }

    /// Delete an index's folder (atomically: renamed away first).
    pub fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        let dir = self.dir(tenant, id);
        let trash = fresh_dir(&self.root.join(".trash"), &format!("{tenant}.{id}."))?;
        if let Err(e) = std::fs::rename(&dir, trash.join(id)).at(&dir) {
            let _ = std::fs::remove_dir(&trash);
            return Err(e);
        }
        atomic::sync_parent(&dir)?;
        let _ = std::fs::remove_dir_all(&trash);
        Ok(())
    }

    /// Read every tenant's indices back. An index that cannot be read is quarantined (and
    /// reported) instead of failing the whole start-up; only an unreadable `tenants/` folder
    /// is an error. With `mmap`, an index whose WAL holds nothing newer than its checkpoint,
    /// and which holds vectors, is memory-mapped instead of loaded; the others are loaded
    /// (the caller replays the WAL, checkpoints and maps them).
    pub fn load_all(&self, mmap: bool) -> Result<LoadReport> {
        let mut rep = LoadReport::default();
        let tenants = self.root.join("tenants");
        for t in std::fs::read_dir(&tenants).at(&tenants)?.flatten() {
            let Some(tenant) = folder_name(&t.path(), "tenant", &mut rep.warnings) else { continue };
            let rd = match std::fs::read_dir(t.path()) {
                Ok(rd) => rd,
                Err(e) => {
                    rep.warnings.push(format!("cannot read {}: {e}; its indices are not served", t.path().display()));
                    continue;
                }
            };
            for e in rd.flatten() {
                let Some(id) = folder_name(&e.path(), "index", &mut rep.warnings) else { continue };
                remove_temp_files(&e.path(), &mut rep.warnings);
                match load_one(&e.path(), mmap) {
                    Ok(mut l) => {
                        rep.warnings.extend(l.torn.take());
                        rep.loaded.push(Loaded {
                            tenant: tenant.clone(),
                            id,
                            kind: l.kind,
                            index: l.index,
                            metadata: l.metadata,
                            replay: l.replay,
                            store: l.store,
                        });
                    }
                    Err(err) => rep.quarantined.push(Quarantined { tenant: tenant.clone(), id, reason: err.chain() }),
                }
            }
        }
        Ok(rep)
    }
}

/// The name of a folder under `tenants/` if it is a usable tenant or index folder; otherwise
/// a warning and `None`. Symbolic links to folders are followed.
fn folder_name(path: &Path, what: &str, warnings: &mut Vec<String>) -> Option<String> {
    let name = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let valid = name.as_deref().filter(|n| super::valid_id(what, n).is_ok());
    let Some(name) = valid else {
        warnings.push(format!("ignoring {}: not a valid {what} id ([A-Za-z0-9._-], 1-128 characters)", path.display()));
        return None;
    };
    if !path.is_dir() {
        warnings.push(format!("ignoring {}: a stray file where only {what} folders belong", path.display()));
        return None;
    }
    Some(name.to_string())
}

/// Remove the temp files (`*.tmp`, as [`atomic`] names them) that an interrupted checkpoint
/// left in an index folder; nothing refers to them.
fn remove_temp_files(dir: &Path, warnings: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let is_tmp = e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp"));
        if is_tmp && e.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => warnings.push(format!("removed {}, left by an interrupted write", e.path().display())),
                Err(err) => warnings.push(format!("cannot remove leftover {}: {err}", e.path().display())),
            }
        }
    }
}

/// A new, empty folder under `parent` named `<prefix><random>` (`tempfile`), kept: the
/// caller renames it into place or removes it (`.tmp` and `.trash` are emptied at start-up).
fn fresh_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in(parent).at(parent)?;
    Ok(d.keep())
}

/// The number `<n>` of a checkpoint file name `<prefix><n><suffix>`. Anything else (a path,
/// `..`, another name) is refused: `CHECKPOINT` may only name files of its own folder.
fn checkpoint_file_number(cp_path: &Path, field: &str, name: &str, prefix: &str, suffix: &str) -> Result<u64> {
    name.strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(|| {
            let shown: String = name.chars().take(80).collect();
            Error::format(
                cp_path,
                format!(
                    "\"{field}\" is {shown:?}, not a file name of the form {prefix}<n>{suffix} in the index folder"
                ),
            )
        })
}

/// Check a checkpoint file against the CRC-32 and size `CHECKPOINT` recorded (if it did).
fn verify(path: &Path, want_crc: Option<u32>, want_len: Option<u64>) -> Result<()> {
    if want_crc.is_none() && want_len.is_none() {
        return Ok(());
    }
    let Checksum { crc32: crc, bytes: len } = Checksum::of_file(path)?;
    if let Some(want) = want_len.filter(|&w| w != len) {
        return Err(Error::format(
            path,
            format!("checksum mismatch: CHECKPOINT records {want} bytes, the file has {len} bytes"),
        ));
    }
    if let Some(want) = want_crc.filter(|&w| w != crc) {
        return Err(Error::format(
            path,
            format!("checksum mismatch: CHECKPOINT records crc32 {want:08x}, the file has crc32 {crc:08x}"),
        ));
    }
    Ok(())
}

/// One index folder read back (see [`load_one`]).
struct Folder {
    kind: String,
    index: Index,
    metadata: Metadata,
    replay: Vec<Value>,
    store: IndexStore,
    /// A line saying that a torn WAL tail was cut.
    torn: Option<String>,
}

/// Read one index folder back: everything is verified before FAISS reads a byte, and the
/// folder is changed (a torn WAL tail cut) only once all of it has proved sound.
fn load_one(dir: &Path, mmap: bool) -> Result<Folder> {
    let cp_path = dir.join("CHECKPOINT");
    let bytes = std::fs::read(&cp_path).at(&cp_path)?;
    let cp: Checkpoint =
        serde_json::from_slice(&bytes).map_err(|e| Error::format(&cp_path, format!("invalid checkpoint ({e})")))?;
    let index_n = checkpoint_file_number(&cp_path, "index", &cp.index, "index-", ".faiss")?;
    let md_n = checkpoint_file_number(&cp_path, "metadata", &cp.metadata, "metadata-", ".msgpack")?;
    let wal_path = dir.join("wal.log");
    let wal = read_wal(&wal_path, cp.seq)?;
    let ipath = dir.join(&cp.index);
    // The sidecar is checked here; it carries the index file's checksum, which
    // `Index::open_with` verifies before FAISS reads the file (one read, not two). A sidecar
    // from before index checksums existed: the CHECKPOINT's own figures are checked here.
    verify(&IndexMeta::path_for(&ipath), cp.sidecar_crc32, None)?;
    if !matches!(IndexMeta::load(&ipath), Ok(Some(m)) if m.checksum().is_some()) {
        verify(&ipath, cp.index_crc32, cp.index_bytes)?;
    }
    let mp = dir.join(&cp.metadata);
    verify(&mp, cp.metadata_crc32, None)?;
    let metadata = Metadata::decode(&mp, &std::fs::read(&mp).at(&mp)?)?;
    let index = if mmap && wal.records.is_empty() && holds_vectors(&ipath) {
        Index::open_with(&ipath, &OpenOptions { mmap: true, warm: false, ..Default::default() })?
    } else {
        Index::open(&ipath)?
    };
    let mut store = IndexStore::open_existing(dir, &cp.kind, cp.seq, index_n.max(md_n), &cp.index)?;
    store.origin = Origin {
        generation: cp.generation.unwrap_or(1),
        imported: cp.imported_crc32.zip(cp.imported_bytes).map(|(crc32, bytes)| Checksum { crc32, bytes }),
    };
    let torn = match &wal.torn {
        Some(what) => {
            store.truncate_to(wal.good_len)?;
            Some(format!(
                "{}: cut a torn final record at byte offset {} ({what}): a write interrupted by a crash, never acknowledged",
                wal_path.display(),
                wal.good_len
            ))
        }
        None => None,
    };
    if let Some(last) = wal.records.last() {
        store.seq = record_seq(last).unwrap_or(cp.seq);
    }
    Ok(Folder { kind: cp.kind, index, metadata, replay: wal.records, store, torn })
}

/// Whether a checkpointed index holds vectors, from its sidecar (written by every
/// checkpoint). Empty indices stay loaded under `--mmap`: they are small, and mapped they
/// could never be trained or filled.
fn holds_vectors(index: &Path) -> bool {
    matches!(IndexMeta::load(index), Ok(Some(m)) if m.ntotal > 0)
}
