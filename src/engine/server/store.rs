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
//! the caller. Index ids reaching it are already validated (`[A-Za-z0-9._-]`, never
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

use crate::engine::error::{Error, ErrorKind, IoContext, Result};
use crate::engine::index::meta::Checksum;
use crate::engine::index::{Index, IndexMeta, OpenOptions};
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
        let staged = IndexStore::new_in(&stage, kind).and_then(|mut st| {
            st.checkpoint(index, md)?;
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
        let trash = self.root.join(".trash").join(format!("{tenant}.{id}.{}", unique()));
        std::fs::rename(&dir, &trash).at(&dir)?;
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

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{n}-{}", std::process::id())
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
        Index::open_with(&ipath, &OpenOptions { mmap: true, warm: false })?
    } else {
        Index::open(&ipath)?
    };
    let mut store = IndexStore::open_existing(dir, &cp.kind, cp.seq, index_n.max(md_n), &cp.index)?;
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

/// The `seq` of a WAL record.
pub fn record_seq(v: &Value) -> Option<u64> {
    match v {
        Value::Map(m) => m.iter().find(|(k, _)| k.as_str() == Some("seq")).and_then(|(_, v)| v.as_u64()),
        _ => None,
    }
}

/// What [`read_wal`] found.
#[derive(Debug)]
struct WalScan {
    /// Records with `seq` above the checkpoint's, in order.
    records: Vec<Value>,
    /// Length of the sound prefix: the file's length unless a torn tail follows.
    good_len: u64,
    /// What the torn final record looked like, if there is one.
    torn: Option<String>,
}

/// How a byte string reads as the start of one MessagePack value.
enum Prefix {
    /// A whole value of this many bytes.
    Complete(usize),
    /// The start of a value that goes on past the end.
    Unfinished,
    /// Not MessagePack.
    Invalid(String),
}

fn msgpack_prefix(b: &[u8]) -> Prefix {
    let mut rd = b;
    match rmpv::decode::read_value(&mut rd) {
        Ok(_) => Prefix::Complete(b.len() - rd.len()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Prefix::Unfinished,
        Err(e) => Prefix::Invalid(e.to_string()),
    }
}

/// Read the WAL: records with seq > `after`, and where its sound part ends.
///
/// A torn final record (what a crash in the middle of an append leaves) is reported in
/// [`WalScan::torn`] for the caller to cut. Anything else that is wrong — a bad record with
/// more bytes after it, a record that does not decode — is an error naming the file, the
/// record number (from 1) and its byte offset; the file is not touched.
fn read_wal(path: &Path, after: u64) -> Result<WalScan> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).at(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(WalScan { records: Vec::new(), good_len: 0, torn: None })
        }
        Err(e) => return Err(Error::io(path, e)),
    }
    let total = bytes.len();
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut n = 0u64;
    let torn = |pos: usize, out: Vec<Value>, what: String| {
        Ok(WalScan { records: out, good_len: pos as u64, torn: Some(what) })
    };
    while pos < total {
        n += 1;
        let rest = &bytes[pos..];
        let corrupt = |what: String| {
            Error::format(
                path,
                format!(
                    "corrupt record {n} at byte offset {pos} of {total}: {what}; the index is quarantined and the file left as it is"
                ),
            )
        };
        if rest.iter().all(|&b| b == 0) {
            // Never a record (the payload is a non-empty map): space a crash left unwritten.
            return torn(pos, out, format!("{} zero bytes", rest.len()));
        }
        if rest.len() < 8 {
            return torn(pos, out, format!("{} of 8 header bytes", rest.len()));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("invariant: 4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("invariant: 4 bytes"));
        let avail = rest.len() - 8;
        if len > avail {
            // An unfinished append leaves the front of one record: a MessagePack value that
            // breaks off at the end of the file. A whole value, or bytes that are not
            // MessagePack, mean the length itself is damaged.
            return match msgpack_prefix(&rest[8..]) {
                Prefix::Unfinished => torn(pos, out, format!("{avail} of {len} payload bytes")),
                Prefix::Complete(k) => Err(corrupt(format!(
                    "its header declares {len} payload bytes, past the end of the file, but a complete record of {k} bytes follows it"
                ))),
                Prefix::Invalid(e) => Err(corrupt(format!(
                    "its header declares {len} payload bytes, past the end of the file, and what follows is not a record ({e})"
                ))),
            };
        }
        let end = pos + 8 + len;
        let payload = &rest[8..8 + len];
        let actual = crc32(payload);
        if actual != crc {
            let wrong_length = matches!(msgpack_prefix(payload), Prefix::Complete(k) if k < len);
            if end == total && !wrong_length {
                return torn(
                    pos,
                    out,
                    format!("checksum mismatch in the final record (stored {crc:08x}, computed {actual:08x})"),
                );
            }
            return Err(corrupt(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x} over the {len} bytes its header declares), {} bytes follow it",
                total - end
            )));
        }
        let mut rd = payload;
        let v = rmpv::decode::read_value(&mut rd).map_err(|e| corrupt(format!("does not decode ({e})")))?;
        if !rd.is_empty() {
            return Err(corrupt(format!("{} stray bytes after the record", rd.len())));
        }
        let Some(seq) = record_seq(&v) else {
            return Err(corrupt("not a map with a \"seq\"".to_string()));
        };
        if seq > after {
            out.push(v);
        }
        pos = end;
    }
    Ok(WalScan { records: out, good_len: pos as u64, torn: None })
}

/// Where WAL records go: the file, or in tests a wrapper that fails on demand.
trait WalFile: Send + Sync {
    /// Write all of `rec` at the end.
    fn append(&mut self, rec: &[u8]) -> std::io::Result<()>;
    /// Make the appended bytes durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cut the file to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl WalFile for File {
    fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
        self.write_all(rec)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        // The file is opened O_APPEND: later writes go to the new end.
        self.set_len(len)?;
        self.sync_all()
    }
}

/// The files of one index: WAL appends and checkpoints.
pub struct IndexStore {
    dir: PathBuf,
    kind: String,
    wal: Box<dyn WalFile>,
    /// Bytes of sound, fsynced records in the WAL.
    wal_bytes: u64,
    /// Where the record appended last starts, until a checkpoint (for [`IndexStore::retract_last`]).
    last_record: Option<u64>,
    seq: u64,
    checkpoint_seq: u64,
    /// `<n>` of the checkpoint files in force (`None` before the first checkpoint).
    file_n: Option<u64>,
    /// The index file name of the checkpoint in force.
    checkpoint_index: String,
    /// Set when a failed append could not be undone: every later write is refused.
    failed: Option<String>,
}

impl IndexStore {
    fn new_in(dir: &Path, kind: &str) -> Result<IndexStore> {
        let p = dir.join("wal.log");
        let wal = FileOptions::new().create(true).append(true).open(&p).at(&p)?;
        let wal_bytes = wal.metadata().at(&p)?.len();
        Ok(IndexStore {
            dir: dir.to_path_buf(),
            kind: kind.to_string(),
            wal: Box::new(wal),
            wal_bytes,
            last_record: None,
            seq: 0,
            checkpoint_seq: 0,
            file_n: None,
            checkpoint_index: String::new(),
            failed: None,
        })
    }

    fn open_existing(dir: &Path, kind: &str, checkpoint_seq: u64, file_n: u64, index: &str) -> Result<IndexStore> {
        let mut s = IndexStore::new_in(dir, kind)?;
        s.seq = checkpoint_seq;
        s.checkpoint_seq = checkpoint_seq;
        s.file_n = Some(file_n);
        s.checkpoint_index = index.to_string();
        Ok(s)
    }

    /// The same store after its folder was renamed to `dir` (the WAL is opened there).
    fn moved_to(self, dir: &Path) -> Result<IndexStore> {
        let mut s = IndexStore::new_in(dir, &self.kind)?;
        s.seq = self.seq;
        s.checkpoint_seq = self.checkpoint_seq;
        s.file_n = self.file_n;
        s.checkpoint_index = self.checkpoint_index;
        Ok(s)
    }

    fn wal_path(&self) -> PathBuf {
        self.dir.join("wal.log")
    }

    /// Cut a torn tail found at start-up.
    fn truncate_to(&mut self, len: u64) -> Result<()> {
        let p = self.wal_path();
        if self.wal_bytes > len {
            self.wal.truncate(len).at(&p)?;
            self.wal_bytes = len;
        }
        Ok(())
    }

    /// `Err` once a failed append could not be undone.
    fn usable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => {
                Err(Error::new(ErrorKind::Io, format!("{}: refuses writes until restart: {why}", self.dir.display())))
            }
            None => Ok(()),
        }
    }

    /// Refuse every later write (until restart) because of `why`: the WAL and memory may
    /// no longer agree.
    pub fn refuse_writes(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    /// Give up on this store: a failed write could not be undone.
    fn fail(&mut self, why: String) -> Error {
        self.failed = Some(why);
        self.usable().err().unwrap_or_else(|| Error::new(ErrorKind::Io, "store failed"))
    }

    /// Append a mutation record (a msgpack map; `seq` is added here) and fsync it. On error
    /// nothing was logged: the bytes written so far are cut off again (if that fails too,
    /// the store refuses all later writes until restart, and the torn tail is cut then).
    pub fn log(&mut self, mut fields: Vec<(Value, Value)>) -> Result<()> {
        self.usable()?;
        let seq = self.seq + 1;
        fields.push((Value::from("seq"), Value::from(seq)));
        let payload = protocol::encode_value(&Value::Map(fields));
        let len = u32::try_from(payload.len())
            .map_err(|_| Error::new(ErrorKind::TooLarge, format!("WAL record of {} bytes", payload.len())))?;
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&crc32(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        let p = self.wal_path();
        let written = self.wal.append(&rec).and_then(|_| self.wal.sync());
        if let Err(cause) = written {
            return Err(match self.wal.truncate(self.wal_bytes) {
                Ok(()) => Error::new(
                    ErrorKind::Io,
                    format!("{}: appending to the write-ahead log failed; nothing was logged", p.display()),
                )
                .with_source(cause),
                Err(undo) => self.fail(format!(
                    "appending to {} failed ({cause}) and cutting the partial record off failed too ({undo})",
                    p.display()
                )),
            });
        }
        self.last_record = Some(self.wal_bytes);
        self.wal_bytes += rec.len() as u64;
        self.seq = seq;
        Ok(())
    }

    /// Take back the record the last [`IndexStore::log`] appended (its mutation failed to
    /// apply), so that replay never meets it. Does nothing if a checkpoint came in between.
    pub fn retract_last(&mut self) -> Result<()> {
        self.usable()?;
        let Some(start) = self.last_record.take() else { return Ok(()) };
        let p = self.wal_path();
        match self.wal.truncate(start) {
            Ok(()) => {
                self.wal_bytes = start;
                self.seq -= 1;
                Ok(())
            }
            Err(e) => Err(self.fail(format!("taking back the last record of {} failed ({e})", p.display()))),
        }
    }

    /// Whether the WAL has grown enough to checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        self.wal_bytes >= CHECKPOINT_WAL_BYTES
    }

    /// Write the index and metadata as of the current sequence number under new names, with
    /// their checksums read back from disk, and switch `CHECKPOINT` to them (the commit
    /// point); then empty the WAL and remove the previous checkpoint's files. On error the
    /// checkpoint in force is untouched and the files written for this one are removed.
    pub fn checkpoint(&mut self, index: &mut Index, md: &Metadata) -> Result<()> {
        self.usable()?;
        let seq = self.seq;
        let n = match self.file_n {
            None => seq,
            Some(f) => seq.max(f + 1),
        };
        let iname = format!("index-{n}.faiss");
        let mname = format!("metadata-{n}.msgpack");
        let ipath = self.dir.join(&iname);
        let mpath = self.dir.join(&mname);
        let committed = (|| -> Result<()> {
            index.save(&ipath)?;
            // `save` checksummed the file it wrote (read back before its rename).
            let sum = index.meta().checksum().ok_or_else(|| Error::invalid("invariant: save records a checksum"))?;
            let (index_crc32, index_bytes) = (sum.crc32, sum.bytes);
            let sidecar_crc32 = Checksum::of_file(&IndexMeta::path_for(&ipath))?.crc32;
            let mbytes = md.encode();
            atomic::write_all(&mpath, &mbytes)?;
            let cp = Checkpoint {
                seq,
                index: iname.clone(),
                metadata: mname.clone(),
                kind: self.kind.clone(),
                index_crc32: Some(index_crc32),
                index_bytes: Some(index_bytes),
                sidecar_crc32: Some(sidecar_crc32),
                metadata_crc32: Some(crc32(&mbytes)),
            };
            let json = serde_json::to_vec(&cp).map_err(|e| Error::invalid(format!("checkpoint: {e}")))?;
            atomic::write_all(&self.dir.join("CHECKPOINT"), &json)
        })();
        if let Err(e) = committed {
            // Not referenced by `CHECKPOINT`: free the space (a full disk is a likely cause).
            let sidecar = IndexMeta::path_for(&ipath);
            for p in [&ipath, &sidecar, &mpath] {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_file(atomic::tmp_path(p));
            }
            return Err(e);
        }
        self.checkpoint_seq = seq;
        self.file_n = Some(n);
        self.checkpoint_index = iname.clone();
        self.last_record = None;
        // Records up to `seq` are now in the checkpoint: start an empty WAL. If that fails,
        // the old WAL stays in use; replay skips its records (all at or below `seq`).
        let p = self.wal_path();
        if atomic::write_all(&p, &[]).is_ok() {
            match FileOptions::new().append(true).open(&p) {
                Ok(f) => {
                    self.wal = Box::new(f);
                    self.wal_bytes = 0;
                }
                // The handle still open is the replaced file: appends to it would be lost.
                Err(e) => {
                    self.fail(format!("reopening {} after a checkpoint failed ({e})", p.display()));
                }
            }
        }
        // Old checkpoint files.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let old = (name.starts_with("index-") || name.starts_with("metadata-"))
                    && !name.starts_with(&iname)
                    && name != mname
                    && !name.ends_with(".tmp");
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// The index file of the current checkpoint.
    pub fn checkpoint_index_path(&self) -> PathBuf {
        self.dir.join(&self.checkpoint_index)
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

/// CRC-32 (IEEE 802.3, reflected, as zlib): the WAL record checksum.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::{IndexSpec, Metric};

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// A fresh temp folder, removed on drop.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new(name: &str) -> Tmp {
            let dir = std::env::temp_dir().join(format!("faissx-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tmp(dir)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn op(s: &str) -> Vec<(Value, Value)> {
        vec![(Value::from("op"), Value::from(s)), (Value::from("x"), Value::Binary(vec![7u8; 40]))]
    }

    /// A WAL of `n` records; returns the byte offset where each starts.
    fn wal_of(dir: &Path, n: usize) -> Vec<u64> {
        let mut s = IndexStore::new_in(dir, "L2").unwrap();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(s.wal_bytes());
            s.log(op(&format!("r{i}"))).unwrap();
        }
        starts
    }

    #[test]
    fn torn_wal_tail_is_cut() {
        let t = Tmp::new("torn");
        let starts = wal_of(&t.0, 2);
        let full = std::fs::metadata(t.0.join("wal.log")).unwrap().len();
        // A torn third record: a header declaring 50 bytes, then the front of a map.
        let mut f = FileOptions::new().append(true).open(t.0.join("wal.log")).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, 0x82, 0xa2]).unwrap();
        let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.good_len, full);
        assert!(scan.torn.as_deref().unwrap().contains("2 of 50 payload bytes"), "{:?}", scan.torn);
        let scan = read_wal(&t.0.join("wal.log"), 1).unwrap();
        assert_eq!(scan.records.len(), 1, "records at or below the checkpoint are skipped");
        // Half a header, a zero-filled tail, and a bad checksum in a final record are torn too.
        for tail in [vec![9u8, 0, 0], vec![0u8; 300]] {
            std::fs::write(
                t.0.join("wal.log"),
                [std::fs::read(t.0.join("wal.log")).unwrap()[..full as usize].to_vec(), tail].concat(),
            )
            .unwrap();
            let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
            assert_eq!((scan.records.len(), scan.good_len), (2, full));
            assert!(scan.torn.is_some());
        }
        let mut bytes = std::fs::read(t.0.join("wal.log")).unwrap()[..full as usize].to_vec();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(t.0.join("wal.log"), &bytes).unwrap();
        let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
        assert_eq!((scan.records.len(), scan.good_len), (1, starts[1]));
        assert!(scan.torn.unwrap().contains("checksum mismatch in the final record"));
    }

    #[test]
    fn flipped_byte_mid_log_is_corruption_and_the_file_is_kept() {
        let t = Tmp::new("flip");
        let starts = wal_of(&t.0, 100);
        let p = t.0.join("wal.log");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[starts[49] as usize + 20] ^= 0x01; // record 50
        std::fs::write(&p, &bytes).unwrap();
        let e = read_wal(&p, 0).unwrap_err();
        let msg = e.chain();
        assert_eq!(e.kind(), ErrorKind::Format);
        assert!(msg.contains("wal.log"), "{msg}");
        assert!(msg.contains(&format!("record 50 at byte offset {}", starts[49])), "{msg}");
        assert!(msg.contains("checksum mismatch"), "{msg}");
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "the file must not change");
    }

    #[test]
    fn bad_length_in_record_2_is_corruption() {
        let t = Tmp::new("len");
        let starts = wal_of(&t.0, 100);
        let p = t.0.join("wal.log");
        let good = std::fs::read(&p).unwrap();
        // Longer, past the end of the file; longer within the file; shorter.
        for len in [u32::MAX, 500, 20] {
            let mut bytes = good.clone();
            let at = starts[1] as usize;
            bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
            std::fs::write(&p, &bytes).unwrap();
            let msg = read_wal(&p, 0).unwrap_err().chain();
            assert!(msg.contains(&format!("record 2 at byte offset {}", starts[1])), "len {len}: {msg}");
            assert_eq!(std::fs::read(&p).unwrap(), bytes);
        }
        // The same damage to the last record, past the end of the file, is not a torn write
        // either: a whole record follows the header.
        let mut bytes = good.clone();
        let at = starts[99] as usize;
        bytes[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let msg = read_wal(&p, 0).unwrap_err().chain();
        assert!(msg.contains("record 100") && msg.contains("a complete record"), "{msg}");
    }

    fn store_with_index(root: &Path) -> (Store, PathBuf) {
        let store = Store::open(root).unwrap();
        let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 }, false).unwrap();
        ix.add(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], None).unwrap();
        let md = Metadata::default();
        let mut st = store.create("t", "a", "L2", &mut ix, &md).unwrap();
        st.log(op("x")).unwrap();
        st.checkpoint(&mut ix, &md).unwrap();
        (store, root.join("tenants/t/a"))
    }

    fn only_quarantined(rep: &LoadReport) -> String {
        assert!(rep.loaded.is_empty(), "expected no loaded index");
        assert_eq!(rep.quarantined.len(), 1);
        let q = &rep.quarantined[0];
        assert_eq!((q.tenant.as_str(), q.id.as_str()), ("t", "a"));
        q.reason.clone()
    }

    #[test]
    fn checkpoint_checksums_are_verified_before_faiss_reads() {
        let t = Tmp::new("cksum");
        let (store, dir) = store_with_index(&t.0);
        let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("CHECKPOINT")).unwrap()).unwrap();
        assert_eq!(cp["index"], "index-1.faiss");
        assert!(cp["index_crc32"].is_u64() && cp["metadata_crc32"].is_u64() && cp["index_bytes"].is_u64());
        assert_eq!(store.load_all(false).unwrap().loaded.len(), 1);
        let ipath = dir.join("index-1.faiss");
        let mut bytes = std::fs::read(&ipath).unwrap();
        let mid = bytes.len() - 5;
        bytes[mid] ^= 0x10;
        std::fs::write(&ipath, &bytes).unwrap();
        let reason = only_quarantined(&store.load_all(false).unwrap());
        assert!(reason.contains("index-1.faiss") && reason.contains("checksum"), "{reason}");
        assert_eq!(std::fs::read(&ipath).unwrap(), bytes, "quarantined files are kept as they are");
        // Old CHECKPOINT files without checksums load unverified.
        bytes[mid] ^= 0x10;
        std::fs::write(&ipath, &bytes).unwrap();
        let old = r#"{"seq":1,"index":"index-1.faiss","metadata":"metadata-1.msgpack","kind":"L2"}"#;
        std::fs::write(dir.join("CHECKPOINT"), old).unwrap();
        assert_eq!(store.load_all(false).unwrap().loaded[0].index.ntotal(), 2);
    }

    #[test]
    fn checkpoint_paths_stay_in_their_folder() {
        let t = Tmp::new("paths");
        let (store, dir) = store_with_index(&t.0);
        for bad in ["../../other/a/index-1.faiss", "/etc/passwd", "index-1.faiss/..", "index-.faiss", "x.faiss"] {
            let cp = format!(r#"{{"seq":1,"index":{bad:?},"metadata":"metadata-1.msgpack","kind":"L2"}}"#);
            std::fs::write(dir.join("CHECKPOINT"), cp).unwrap();
            let reason = only_quarantined(&store.load_all(false).unwrap());
            assert!(reason.contains("CHECKPOINT") && reason.contains("not a file name"), "{bad}: {reason}");
        }
        std::fs::write(dir.join("CHECKPOINT"), "{not json").unwrap();
        assert!(only_quarantined(&store.load_all(false).unwrap()).contains("invalid checkpoint"));
    }

    #[test]
    fn one_bad_index_does_not_stop_the_others_and_strays_are_ignored() {
        let t = Tmp::new("strays");
        let (store, dir) = store_with_index(&t.0);
        std::fs::write(dir.join("wal.log"), b"garbage that is not a WAL at all").unwrap();
        std::fs::write(t.0.join("tenants/t/notes.txt"), b"stray").unwrap();
        std::fs::write(t.0.join("tenants/stray.txt"), b"stray").unwrap();
        std::fs::create_dir_all(t.0.join("tenants/t/bad name")).unwrap();
        std::fs::write(dir.join("index-7.faiss.tmp"), b"half").unwrap();
        let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 }, false).unwrap();
        store.create("t", "b", "L2", &mut ix, &Metadata::default()).unwrap();
        let rep = store.load_all(false).unwrap();
        assert_eq!(rep.loaded.len(), 1);
        assert_eq!(rep.loaded[0].id, "b");
        assert_eq!(rep.quarantined.len(), 1);
        assert!(rep.quarantined[0].reason.contains("wal.log"), "{}", rep.quarantined[0].reason);
        let w = rep.warnings.join("\n");
        for needle in ["notes.txt", "stray.txt", "bad name", "index-7.faiss.tmp"] {
            assert!(w.contains(needle), "no warning about {needle}:\n{w}");
        }
        assert!(!dir.join("index-7.faiss.tmp").exists());
        assert!(t.0.join("tenants/t/notes.txt").exists(), "stray files are left alone");
    }

    /// A WAL file that fails as told: the append writes `partial` bytes and then fails;
    /// the truncate fails when `truncate_fails`.
    struct Failing {
        inner: File,
        partial: Option<usize>,
        truncate_fails: bool,
    }

    impl WalFile for Failing {
        fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
            match self.partial {
                Some(k) => {
                    self.inner.write_all(&rec[..k.min(rec.len())])?;
                    Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
                }
                None => self.inner.write_all(rec),
            }
        }
        fn sync(&mut self) -> std::io::Result<()> {
            self.inner.sync_data()
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            if self.truncate_fails {
                return Err(std::io::Error::from_raw_os_error(5)); // EIO
            }
            WalFile::truncate(&mut self.inner, len)
        }
    }

    fn failing(dir: &Path, partial: Option<usize>, truncate_fails: bool) -> Box<dyn WalFile> {
        let inner = FileOptions::new().append(true).open(dir.join("wal.log")).unwrap();
        Box::new(Failing { inner, partial, truncate_fails })
    }

    #[test]
    fn failed_append_leaves_no_partial_record() {
        let t = Tmp::new("append");
        let mut s = IndexStore::new_in(&t.0, "L2").unwrap();
        s.log(op("a")).unwrap();
        let good = std::fs::read(t.0.join("wal.log")).unwrap();
        s.wal = failing(&t.0, Some(13), false);
        let e = s.log(op("b")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.chain().contains("nothing was logged"), "{}", e.chain());
        assert_eq!(std::fs::read(t.0.join("wal.log")).unwrap(), good, "the partial record is cut off");
        // Later appends land right after the last good record and replay finds them all.
        s.wal = failing(&t.0, None, false);
        s.log(op("c")).unwrap();
        let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert!(scan.torn.is_none());
        assert_eq!(scan.records.iter().map(|r| record_seq(r).unwrap()).collect::<Vec<_>>(), vec![1, 2]);
        // Taking back the last record.
        s.retract_last().unwrap();
        assert_eq!(std::fs::read(t.0.join("wal.log")).unwrap(), good);
    }

    #[test]
    fn append_that_cannot_be_undone_refuses_later_writes() {
        let t = Tmp::new("failed");
        let mut s = IndexStore::new_in(&t.0, "L2").unwrap();
        s.log(op("a")).unwrap();
        s.wal = failing(&t.0, Some(13), true);
        let e = s.log(op("b")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        for e in [e, s.log(op("c")).unwrap_err()] {
            let msg = e.chain();
            assert!(msg.contains("refuses writes until restart") && msg.contains(&t.0.display().to_string()), "{msg}");
            assert!(msg.contains("os error 28"), "the original cause is named: {msg}");
        }
        let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 }, false).unwrap();
        assert!(s.checkpoint(&mut ix, &Metadata::default()).unwrap_err().chain().contains("refuses writes"));
        // At the next start the partial record is a torn tail.
        let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert!(scan.torn.is_some());
    }

    #[test]
    fn a_checkpoint_never_overwrites_the_files_in_force() {
        let t = Tmp::new("names");
        let (store, dir) = store_with_index(&t.0);
        let mut rep = store.load_all(false).unwrap();
        let l = &mut rep.loaded[0];
        // No record since the checkpoint at seq 1: the next one must use new names.
        l.store.checkpoint(&mut l.index, &l.metadata).unwrap();
        let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("CHECKPOINT")).unwrap()).unwrap();
        assert_eq!((cp["seq"].as_u64(), cp["index"].as_str()), (Some(1), Some("index-2.faiss")));
        assert!(!dir.join("index-1.faiss").exists(), "old files are removed after the switch");
        assert_eq!(store.load_all(false).unwrap().loaded[0].index.ntotal(), 2);
    }
}
