//! The files of one served index: its WAL (appends, repair, retraction) and its checkpoints
//! (numbered files, fsynced, checksummed, committed by replacing `CHECKPOINT`).

use super::wal::{crc32, WalFile};
use super::{Checkpoint, Metadata, CHECKPOINT_WAL_BYTES};
use crate::engine::error::{Error, ErrorKind, IoContext, Result};
use crate::engine::index::meta::Checksum;
use crate::engine::index::{Index, IndexMeta};
use crate::engine::io::atomic;
use crate::engine::protocol::{self, Value};
use std::fs::OpenOptions as FileOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The files of one index: WAL appends and checkpoints.
pub struct IndexStore {
    dir: PathBuf,
    kind: String,
    pub(super) wal: Box<dyn WalFile>,
    /// Bytes of sound, fsynced records in the WAL.
    wal_bytes: u64,
    /// `wal_bytes` and the time of the last checkpoint, readable without the index's lock.
    disk: Arc<DiskStats>,
    /// Where the record appended last starts, until a checkpoint (for [`IndexStore::retract_last`]).
    last_record: Option<u64>,
    pub(super) seq: u64,
    checkpoint_seq: u64,
    /// `<n>` of the checkpoint files in force (`None` before the first checkpoint).
    file_n: Option<u64>,
    /// The index file name of the checkpoint in force.
    checkpoint_index: String,
    /// Set when a failed append could not be undone: every later write is refused.
    failed: Option<String>,
    /// What the index in force came from: its generation (1 at creation, one more per
    /// import) and the checksum of the file imported, recorded in every `CHECKPOINT`.
    pub(super) origin: Origin,
}

/// Where the index in force came from (kept in `CHECKPOINT` across checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// 1 when the index was created, one more for each `import_index` that replaced it.
    pub generation: u64,
    /// CRC-32 and size of the file its last import brought (`None`: created by `create_index`).
    pub imported: Option<Checksum>,
}

/// Facts about an index's files that `/metrics` reads without taking the index's lock.
#[derive(Debug, Default)]
pub struct DiskStats {
    wal_bytes: AtomicU64,
    /// Milliseconds since the Unix epoch of the checkpoint in force (its `CHECKPOINT`
    /// file's modification time after a restart).
    checkpointed_ms: AtomicU64,
}

impl DiskStats {
    /// Bytes of records in the WAL (not yet in a checkpoint).
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }

    /// Seconds since the checkpoint in force was written (0 if its time is unknown).
    pub fn checkpoint_age_s(&self) -> f64 {
        let at = self.checkpointed_ms.load(Ordering::Relaxed);
        if at == 0 {
            return 0.0;
        }
        (now_ms().saturating_sub(at)) as f64 / 1000.0
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Default for Origin {
    fn default() -> Origin {
        Origin { generation: 1, imported: None }
    }
}

impl IndexStore {
    pub(super) fn new_in(dir: &Path, kind: &str) -> Result<IndexStore> {
        let p = dir.join("wal.log");
        let wal = FileOptions::new().create(true).append(true).open(&p).at(&p)?;
        let wal_bytes = wal.metadata().at(&p)?.len();
        let disk = Arc::new(DiskStats { wal_bytes: AtomicU64::new(wal_bytes), checkpointed_ms: AtomicU64::new(0) });
        Ok(IndexStore {
            dir: dir.to_path_buf(),
            kind: kind.to_string(),
            wal: Box::new(wal),
            wal_bytes,
            disk,
            last_record: None,
            seq: 0,
            checkpoint_seq: 0,
            file_n: None,
            checkpoint_index: String::new(),
            failed: None,
            origin: Origin::default(),
        })
    }

    pub(super) fn open_existing(
        dir: &Path,
        kind: &str,
        checkpoint_seq: u64,
        file_n: u64,
        index: &str,
    ) -> Result<IndexStore> {
        let mut s = IndexStore::new_in(dir, kind)?;
        s.seq = checkpoint_seq;
        s.checkpoint_seq = checkpoint_seq;
        s.file_n = Some(file_n);
        s.checkpoint_index = index.to_string();
        let written = std::fs::metadata(dir.join("CHECKPOINT")).and_then(|m| m.modified()).ok();
        let ms = written.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or_else(now_ms, |d| d.as_millis() as u64);
        s.disk.checkpointed_ms.store(ms, Ordering::Relaxed);
        Ok(s)
    }

    /// The same store after its folder was renamed to `dir` (the WAL is opened there).
    pub(super) fn moved_to(self, dir: &Path) -> Result<IndexStore> {
        let mut s = IndexStore::new_in(dir, &self.kind)?;
        s.seq = self.seq;
        s.checkpoint_seq = self.checkpoint_seq;
        s.file_n = self.file_n;
        s.checkpoint_index = self.checkpoint_index;
        s.origin = self.origin;
        s.disk.checkpointed_ms.store(self.disk.checkpointed_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(s)
    }

    pub(super) fn wal_path(&self) -> PathBuf {
        self.dir.join("wal.log")
    }

    /// Cut a torn tail found at start-up.
    pub(super) fn truncate_to(&mut self, len: u64) -> Result<()> {
        let p = self.wal_path();
        if self.wal_bytes > len {
            self.wal.truncate(len).at(&p)?;
            self.set_wal_bytes(len);
        }
        Ok(())
    }

    /// `Err` once a failed append could not be undone.
    pub(super) fn usable(&self) -> Result<()> {
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
    pub(super) fn fail(&mut self, why: String) -> Error {
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
        self.set_wal_bytes(self.wal_bytes + rec.len() as u64);
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
                self.set_wal_bytes(start);
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
    /// Logs one INFO event per checkpoint but an index's first (written at its creation).
    pub fn checkpoint(&mut self, index: &mut Index, md: &Metadata) -> Result<()> {
        let first = self.file_n.is_none();
        let (wal_bytes, started) = (self.wal_bytes, std::time::Instant::now());
        self.install(md, |ipath| {
            index.save(ipath)?;
            // `save` checksummed the file it wrote (read back before its rename).
            index.meta().checksum().ok_or_else(|| Error::invalid("invariant: save records a checksum"))
        })?;
        if !first {
            tracing::info!(
                index = %self.name(),
                seq = self.checkpoint_seq,
                vectors = index.ntotal(),
                wal_bytes,
                took_ms = started.elapsed().as_millis() as u64,
                "checkpoint written"
            );
        }
        Ok(())
    }

    /// `tenant/index`, from the folder's path (for log events).
    pub fn name(&self) -> String {
        let part = |p: Option<&Path>| {
            p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        };
        format!("{}/{}", part(self.dir.parent()), part(Some(&self.dir)))
    }

    /// Make a finished index file the checkpoint, as the next generation: `file` (already
    /// fsynced, of checksum `sum`; on the same file system) is moved into the folder, given
    /// a sidecar from `index` (the index read from it) and committed with `md`, like
    /// [`IndexStore::checkpoint`], with the WAL emptied. On error the checkpoint in force is
    /// untouched and `file` may be gone (the caller's spool is discarded either way).
    pub fn adopt(&mut self, file: &Path, sum: Checksum, index: &mut Index, md: &Metadata) -> Result<()> {
        let before = self.origin;
        self.origin = Origin { generation: before.generation + 1, imported: Some(sum) };
        let r = self.install(md, |ipath| {
            std::fs::rename(file, ipath).at(ipath)?;
            index.meta_mut().set_checksum(Some(sum));
            index.meta().save(ipath)?;
            Ok(sum)
        });
        if r.is_err() {
            self.origin = before;
        }
        r
    }

    /// The generation and import checksum of the index in force.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The files of the checkpoint in force: index, its sidecar, metadata (for a
    /// point-in-time copy: these files are never written again, only removed once a newer
    /// checkpoint is in force, so a hard link to them stays valid).
    pub fn checkpoint_files(&self) -> [PathBuf; 3] {
        let ipath = self.checkpoint_index_path();
        let n = self.file_n.unwrap_or(0);
        [IndexMeta::path_for(&ipath), ipath, self.dir.join(format!("metadata-{n}.msgpack"))]
    }

    /// Commit a checkpoint whose index file `write_index` puts at the path it is given
    /// (returning the file's checksum), with `md` beside it.
    fn install(&mut self, md: &Metadata, write_index: impl FnOnce(&Path) -> Result<Checksum>) -> Result<()> {
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
            let sum = write_index(&ipath)?;
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
                generation: Some(self.origin.generation),
                imported_crc32: self.origin.imported.map(|c| c.crc32),
                imported_bytes: self.origin.imported.map(|c| c.bytes),
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
        self.disk.checkpointed_ms.store(now_ms(), Ordering::Relaxed);
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
                    self.set_wal_bytes(0);
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

    fn set_wal_bytes(&mut self, n: u64) {
        self.wal_bytes = n;
        self.disk.wal_bytes.store(n, Ordering::Relaxed);
    }

    /// WAL size and checkpoint time, shared with readers that hold no lock (`/metrics`).
    pub fn disk_stats(&self) -> Arc<DiskStats> {
        self.disk.clone()
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
