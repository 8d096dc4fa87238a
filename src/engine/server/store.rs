//! Persistence under `--data-dir`: one folder per tenant, one per index, each holding a
//! checkpoint (FAISS index file + sidecar, per-vector metadata, a `CHECKPOINT` record naming
//! them) and a write-ahead log of the mutations since.
//!
//! A mutation is appended to the WAL and fsynced before it is applied and acknowledged, so a
//! `kill -9` right after a reply loses nothing. A checkpoint writes new, sequence-numbered
//! files (temp + fsync + rename), then atomically replaces `CHECKPOINT`; WAL records with a
//! sequence number at or below the checkpoint's are skipped on replay, so a crash at any
//! point between the two leaves a consistent state. A torn WAL tail (length past the end,
//! bad checksum) is cut off. Under `serve --mmap`, [`Store::load_all`] maps checkpoints
//! whose WAL holds nothing newer; an index with newer records is loaded so the server can
//! replay them, checkpoint and then map it (a mapped index can never take a WAL record, since
//! the server refuses its mutations). This module knows files, not sockets; index ids reaching it are
//! already validated (`[A-Za-z0-9._-]`, never `.`/`..`).
//!
//! ```text
//! DIR/tenants/<tenant>/<index>/CHECKPOINT          {"seq":…,"index":"index-<seq>.faiss","metadata":"metadata-<seq>.msgpack","kind":…}
//! DIR/tenants/<tenant>/<index>/index-<seq>.faiss   (+ .meta.json sidecar)
//! DIR/tenants/<tenant>/<index>/metadata-<seq>.msgpack
//! DIR/tenants/<tenant>/<index>/wal.log             [u32 len][u32 crc32][msgpack record]…
//! DIR/.tmp, DIR/.trash                             creation and deletion staging
//! ```

use crate::engine::error::{Error, IoContext, Result};
use crate::engine::index::{Index, OpenOptions};
use crate::engine::io::atomic;
use crate::engine::protocol::{self, Value};
use std::collections::HashMap;
use std::fs::File;
use std::fs::OpenOptions as FileOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// WAL size that triggers a checkpoint after a mutation.
pub const CHECKPOINT_WAL_BYTES: u64 = 64 << 20;

/// Per-vector metadata of an index plus its index-level metadata (from `create_index`).
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Index-level metadata given at creation.
    pub index: Option<Value>,
    /// One value per vector id.
    pub vectors: HashMap<i64, Value>,
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
        ]);
        protocol::encode_value(&v)
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Metadata> {
        let mut rd = bytes;
        let v = protocol::decode_value(&mut rd).map_err(|e| Error::format(path, e.message()))?;
        let mut out = Metadata::default();
        if let Value::Map(m) = v {
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("index"), v) if !v.is_nil() => out.index = Some(v),
                    (Some("vectors"), Value::Array(rows)) => {
                        for r in rows {
                            if let Value::Array(mut kv) = r {
                                if kv.len() == 2 {
                                    let val = kv.pop().unwrap_or(Value::Nil);
                                    if let Some(id) = kv[0].as_i64() {
                                        out.vectors.insert(id, val);
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
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

#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    seq: u64,
    index: String,
    metadata: String,
    kind: String,
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
        let final_dir = self.dir(tenant, id);
        let tenant_dir = self.root.join("tenants").join(tenant);
        std::fs::create_dir_all(&tenant_dir).at(&tenant_dir)?;
        atomic::sync_parent(&tenant_dir)?;
        let stage = self.root.join(".tmp").join(format!("{tenant}.{id}.{}", unique()));
        std::fs::create_dir_all(&stage).at(&stage)?;
        let mut st = IndexStore::new_in(&stage, kind)?;
        st.checkpoint(index, md)?;
        drop(st);
        std::fs::rename(&stage, &final_dir).at(&final_dir)?;
        atomic::sync_parent(&final_dir)?;
        IndexStore::open_existing(&final_dir, kind, 0)
    }

    /// Delete an index's folder (atomically: renamed away first).
    pub fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        let dir = self.dir(tenant, id);
        let trash = self.root.join(".trash").join(format!("{tenant}.{id}.{}", unique()));
        std::fs::rename(&dir, &trash).at(&dir)?;
        atomic::sync_parent(&dir)?;
        let _ = std::fs::remove_dir_all(&trash);
        Ok(())
    }

    /// Read every tenant's indices back. With `mmap`, an index whose WAL holds nothing newer
    /// than its checkpoint, and which holds vectors, is memory-mapped instead of loaded; the
    /// others are loaded (the caller replays the WAL, checkpoints and maps them).
    pub fn load_all(&self, mmap: bool) -> Result<Vec<Loaded>> {
        let mut out = Vec::new();
        let tenants = self.root.join("tenants");
        for t in std::fs::read_dir(&tenants).at(&tenants)?.flatten() {
            let tenant = t.file_name().to_string_lossy().into_owned();
            for e in std::fs::read_dir(t.path()).at(&t.path())?.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                out.push(load_one(&e.path(), tenant.clone(), id, mmap)?);
            }
        }
        Ok(out)
    }
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{n}-{}", std::process::id())
}

fn load_one(dir: &Path, tenant: String, id: String, mmap: bool) -> Result<Loaded> {
    let cp_path = dir.join("CHECKPOINT");
    let bytes = std::fs::read(&cp_path).at(&cp_path)?;
    let cp: Checkpoint =
        serde_json::from_slice(&bytes).map_err(|e| Error::format(&cp_path, format!("invalid checkpoint ({e})")))?;
    let (replay, good_len) = read_wal(&dir.join("wal.log"), cp.seq)?;
    let ipath = dir.join(&cp.index);
    let index = if mmap && replay.is_empty() && holds_vectors(&ipath) {
        Index::open_with(&ipath, &OpenOptions { mmap: true, warm: false })?
    } else {
        Index::open(&ipath)?
    };
    let mp = dir.join(&cp.metadata);
    let metadata = Metadata::decode(&mp, &std::fs::read(&mp).at(&mp)?)?;
    let mut store = IndexStore::open_existing(dir, &cp.kind, cp.seq)?;
    store.truncate_to(good_len)?;
    if let Some(last) = replay.last() {
        store.seq = record_seq(last).unwrap_or(cp.seq);
    }
    Ok(Loaded { tenant, id, kind: cp.kind, index, metadata, replay, store })
}

/// Whether a checkpointed index holds vectors, from its sidecar (written by every
/// checkpoint). Empty indices stay loaded under `--mmap`: they are small, and mapped they
/// could never be trained or filled.
fn holds_vectors(index: &Path) -> bool {
    matches!(crate::engine::index::IndexMeta::load(index), Ok(Some(m)) if m.ntotal > 0)
}

/// The `seq` of a WAL record.
pub fn record_seq(v: &Value) -> Option<u64> {
    match v {
        Value::Map(m) => m.iter().find(|(k, _)| k.as_str() == Some("seq")).and_then(|(_, v)| v.as_u64()),
        _ => None,
    }
}

/// Read the WAL: records with seq > `after`, and the length of the valid prefix.
fn read_wal(path: &Path, after: u64) -> Result<(Vec<Value>, u64)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).at(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("invariant: 4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("invariant: 4 bytes"));
        let end = pos + 8 + len;
        if end > bytes.len() || crc32(&bytes[pos + 8..end]) != crc {
            break; // torn tail: never acknowledged
        }
        let mut rd = &bytes[pos + 8..end];
        match protocol::decode_value(&mut rd) {
            Ok(v) => {
                if record_seq(&v).is_some_and(|s| s > after) {
                    out.push(v);
                }
            }
            Err(_) => break,
        }
        pos = end;
    }
    Ok((out, pos as u64))
}

/// The files of one index: WAL appends and checkpoints.
pub struct IndexStore {
    dir: PathBuf,
    kind: String,
    wal: File,
    wal_bytes: u64,
    seq: u64,
    checkpoint_seq: u64,
}

impl IndexStore {
    fn new_in(dir: &Path, kind: &str) -> Result<IndexStore> {
        let p = dir.join("wal.log");
        let wal = FileOptions::new().create(true).append(true).open(&p).at(&p)?;
        Ok(IndexStore { dir: dir.to_path_buf(), kind: kind.to_string(), wal, wal_bytes: 0, seq: 0, checkpoint_seq: 0 })
    }

    fn open_existing(dir: &Path, kind: &str, checkpoint_seq: u64) -> Result<IndexStore> {
        let mut s = IndexStore::new_in(dir, kind)?;
        s.seq = checkpoint_seq;
        s.checkpoint_seq = checkpoint_seq;
        s.wal_bytes = s.wal.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(s)
    }

    fn truncate_to(&mut self, len: u64) -> Result<()> {
        let p = self.dir.join("wal.log");
        if self.wal_bytes > len {
            let f = FileOptions::new().write(true).open(&p).at(&p)?;
            f.set_len(len).at(&p)?;
            f.sync_all().at(&p)?;
            self.wal_bytes = len;
        }
        Ok(())
    }

    /// Append a mutation record (a msgpack map; `seq` is added here) and fsync it.
    pub fn log(&mut self, mut fields: Vec<(Value, Value)>) -> Result<()> {
        let seq = self.seq + 1;
        fields.push((Value::from("seq"), Value::from(seq)));
        let payload = protocol::encode_value(&Value::Map(fields));
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        let p = self.dir.join("wal.log");
        self.wal.write_all(&rec).at(&p)?;
        self.wal.sync_data().at(&p)?;
        self.wal_bytes += rec.len() as u64;
        self.seq = seq;
        Ok(())
    }

    /// Whether the WAL has grown enough to checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        self.wal_bytes >= CHECKPOINT_WAL_BYTES
    }

    /// Write the index and metadata as of the current sequence number, switch `CHECKPOINT`
    /// to them, then empty the WAL and remove the previous checkpoint's files.
    pub fn checkpoint(&mut self, index: &mut Index, md: &Metadata) -> Result<()> {
        let seq = self.seq;
        let iname = format!("index-{seq}.faiss");
        let mname = format!("metadata-{seq}.msgpack");
        index.save(&self.dir.join(&iname))?;
        atomic::write_all(&self.dir.join(&mname), &md.encode())?;
        let cp = Checkpoint { seq, index: iname.clone(), metadata: mname.clone(), kind: self.kind.clone() };
        let json = serde_json::to_vec(&cp).map_err(|e| Error::invalid(format!("checkpoint: {e}")))?;
        atomic::write_all(&self.dir.join("CHECKPOINT"), &json)?;
        self.checkpoint_seq = seq;
        // Records up to `seq` are now in the checkpoint: start an empty WAL.
        let p = self.dir.join("wal.log");
        atomic::write_all(&p, &[])?;
        self.wal = FileOptions::new().append(true).open(&p).at(&p)?;
        self.wal_bytes = 0;
        // Old checkpoint files.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let old = (n.starts_with("index-") || n.starts_with("metadata-"))
                    && !n.starts_with(&iname)
                    && n != mname
                    && !n.ends_with(".tmp");
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// The index file of the current checkpoint.
    pub fn checkpoint_index_path(&self) -> PathBuf {
        self.dir.join(format!("index-{}.faiss", self.checkpoint_seq))
    }

    /// Bytes in the WAL.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib).
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn torn_wal_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("faissx-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = IndexStore::new_in(&dir, "L2").unwrap();
        s.log(vec![(Value::from("op"), Value::from("a"))]).unwrap();
        s.log(vec![(Value::from("op"), Value::from("b"))]).unwrap();
        let full = s.wal_bytes();
        // A torn third record.
        let mut f = FileOptions::new().append(true).open(dir.join("wal.log")).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
        let (recs, good) = read_wal(&dir.join("wal.log"), 0).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(good, full);
        let (recs, _) = read_wal(&dir.join("wal.log"), 1).unwrap();
        assert_eq!(recs.len(), 1, "records at or below the checkpoint are skipped");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
