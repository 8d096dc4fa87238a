//! Index files becoming served indices and back: `import_index` (an upload or a file on the
//! server's disk checked, persisted and swapped in atomically), `export_begin` (a
//! point-in-time copy of a served index for download), and `serve --index` files (served
//! read-only as they are on disk, re-read when replaced).
//!
//! A swap replaces the registry's entry for the name: requests that already hold the old
//! entry finish on the old version, requests after the swap see the new one, and nothing
//! fails because of it. With `--data-dir` the imported file becomes the index's checkpoint
//! (renamed in, not copied) before the swap, so an acknowledged import survives `kill -9`.

use super::store::Metadata;
use super::transfer::{Part, Spooled};
use super::{valid_id, Entry, ServedFile, Service, Slot};
use crate::engine::error::{Error, ErrorKind, IoContext, Result};
use crate::engine::index::meta::Checksum;
use crate::engine::index::{Index, IndexMeta, OpenOptions, Storage};
use crate::engine::protocol::Msg;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A `serve --index` file: where it is and what it was when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file, as given.
    pub path: PathBuf,
    /// Identity and version of the file read.
    pub stamp: Stamp,
}

/// A file's device, inode, size and mtime (ns): changes when the file is replaced.
pub type Stamp = (u64, u64, u64, i128);

fn stamp_of(path: &Path) -> Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).at(path)?;
    Ok((m.dev(), m.ino(), m.len(), m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128))
}

/// Resolve `serve --import-dir` folders (symlinks followed); each must exist.
pub fn resolve_import_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs.iter()
        .map(|d| {
            let c = std::fs::canonicalize(d).at(d)?;
            if !c.is_dir() {
                return Err(Error::invalid(format!("--import-dir {}: not a directory", d.display())));
            }
            Ok(c)
        })
        .collect()
}

/// The checksum as replies show it.
fn checksum_text(c: &Checksum) -> String {
    format!("crc32:{:08x}", c.crc32)
}

impl Service {
    /// `path` resolved (symlinks followed) if it lies under one of the `--import-dir`
    /// folders; otherwise an error naming it.
    fn allowed_path(&self, path: &Path) -> Result<PathBuf> {
        let refuse = |why: &str| Error::invalid(format!("server path {}: {why}", path.display()));
        if self.import_dirs.is_empty() {
            return Err(refuse("the server reads no files of its own (start it with --import-dir DIR)"));
        }
        let real = std::fs::canonicalize(path).map_err(|_| refuse("no such file on the server"))?;
        if !self.import_dirs.iter().any(|d| real.starts_with(d)) {
            return Err(refuse("outside the server's --import-dir folders"));
        }
        if !real.is_file() {
            return Err(refuse("not a file"));
        }
        Ok(real)
    }

    /// Open an index file the way this server serves it (mapped under `--mmap` when it
    /// holds vectors, else loaded). Files that do not prove their checksum are opened by a
    /// child process first (see `index::probe`).
    fn open_served(&self, path: &Path) -> Result<Index> {
        let holds = matches!(IndexMeta::load(path), Ok(Some(m)) if m.ntotal > 0);
        let mmap = self.mmap && holds;
        let ix = Index::open_with(path, &OpenOptions { mmap, warm: false, ..Default::default() })?;
        if ix.storage() == Storage::OnDisk {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: has on-disk inverted lists (a .ivfdata file): the server imports whole index files",
                    path.display()
                ),
            ));
        }
        Ok(ix)
    }

    /// Serve `f` (`serve --index`) read-only under its name.
    pub(super) fn serve_file(&self, f: &ServedFile) -> Result<()> {
        valid_id("tenant_id", &f.tenant)?;
        valid_id("index_id", &f.id)?;
        // The operator named this file: it needs no --import-dir.
        let path = std::fs::canonicalize(&f.path).at(&f.path)?;
        let key = (f.tenant.clone(), f.id.clone());
        if self.indices.read().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "--index {}: tenant {:?} already has an index of that name in the data directory",
                    f.id, f.tenant
                ),
            ));
        }
        let entry = self.load_source(&f.path, &path, 1)?;
        self.indices.write().unwrap_or_else(|p| p.into_inner()).insert(key, entry);
        Ok(())
    }

    fn load_source(&self, given: &Path, real: &Path, generation: u64) -> Result<Arc<Entry>> {
        let stamp = stamp_of(real)?;
        let index = self.open_served(real)?;
        let kind = index.describe()?.type_name;
        let sum = index.meta().checksum();
        let md = file_metadata(real, index.meta())?;
        let slot = Slot::new(index, md, None);
        let origin = super::Origin { generation, imported: sum };
        Ok(Entry::with(kind, slot, origin, Some(Source { path: given.to_path_buf(), stamp })))
    }

    /// Drop uploads and exports idle past the transfer timeout.
    pub fn sweep_transfers(&self) {
        self.transfers.sweep();
    }

    /// Re-read every `serve --index` file replaced on disk since it was read (a new build
    /// renamed into place), as a new generation. A file that cannot be read now keeps the
    /// version being served (a WARNING event).
    pub fn reload_sources(&self) {
        let sources: Vec<(super::Key, Arc<Entry>)> = self
            .indices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| e.source.is_some())
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (key, e) in sources {
            let Some(src) = &e.source else { continue };
            let now = stamp_of(&src.path).ok();
            if now == Some(src.stamp) {
                continue;
            }
            // A file that failed to load is tried again only once it changes again.
            let mut failed = self.failed_reloads.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_some() && failed.get(&key) == now.as_ref() {
                continue;
            }
            drop(failed);
            match self.reload_source(&key, &e, src) {
                Ok(_) => {
                    self.failed_reloads.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                }
                Err(err) => {
                    tracing::warn!("--index {}: keeps serving the previous file: {}", key.1, err.chain());
                    failed = self.failed_reloads.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(st) = now {
                        failed.insert(key.clone(), st);
                    }
                }
            }
        }
    }

    fn reload_source(&self, key: &super::Key, old: &Arc<Entry>, src: &Source) -> Result<Arc<Entry>> {
        let real = std::fs::canonicalize(&src.path).at(&src.path)?;
        let e = self.load_source(&src.path, &real, old.origin.generation + 1)?;
        let mut map = self.indices.write().unwrap_or_else(|p| p.into_inner());
        // Only over the version this reload started from.
        if map.get(key).is_some_and(|cur| Arc::ptr_eq(cur, old)) {
            map.insert(key.clone(), e.clone());
        }
        Ok(e)
    }

    /// `import_index` (runs on the index's queue): make an uploaded file (`upload_id`) or a
    /// file under `--import-dir` (`server_path`) the index `index_id`, new or replacing the
    /// served one, atomically. Checks: `if_generation` (the generation being replaced; 0:
    /// the name must be free) else `CONFLICT`; the file must read as a FAISS index, and a
    /// replacement must keep `d`, the metric and float/binary. Reply: `index_id`,
    /// `generation`, `checksum`, `bytes`, `ntotal`, `dimension`, `index_type`, `replaced`.
    pub(super) fn import(&self, tenant: &str, m: &Msg) -> Result<Msg> {
        self.import_with(tenant, m, None)
    }

    /// The file an `import_index` request names (its upload, or its `server_path` under
    /// `--import-dir`), spooled: what `serve --cluster` stages in object storage for every
    /// replica to fetch.
    pub(super) fn import_source(&self, tenant: &str, m: &Msg) -> Result<ImportSource> {
        let (file, sum, md, spool) = match (m.str("upload_id")?, m.str("server_path")?) {
            (Some(_), Some(_)) => return Err(Error::invalid("give either \"upload_id\" or \"server_path\", not both")),
            (None, None) => return Err(Error::invalid("missing field \"upload_id\" (or \"server_path\")")),
            (Some(u), None) => self.spooled_upload(self.transfers.take_upload(tenant, u)?)?,
            (None, Some(p)) => self.spooled_server_file(Path::new(p))?,
        };
        Ok(ImportSource { file, sum, md, _spool: spool })
    }

    /// A folder of the spool for files an import fetches (removed with the [`ImportSource`]
    /// made of it).
    pub(super) fn import_dir(&self) -> Result<(PathBuf, ImportSpool)> {
        let dir = self.transfers.new_dir()?;
        Ok((dir.clone(), ImportSpool(Spool::Dir(RemoveOnDrop(dir)))))
    }

    /// [`Service::import`], with the file already fetched (`staged`: `serve --cluster`, where
    /// the log names a staged object instead of an upload or a server path).
    pub(super) fn import_with(&self, tenant: &str, m: &Msg, staged: Option<ImportSource>) -> Result<Msg> {
        let id = m.req_str("index_id")?;
        valid_id("index_id", id)?;
        // Taken first, so any failure below drops the upload with its files.
        let upload = match m.str("upload_id")? {
            Some(u) if staged.is_none() => Some(self.transfers.take_upload(tenant, u)?),
            _ => None,
        };
        let key = (tenant.to_string(), id.to_string());
        let old = self.indices.read().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if old.is_none() {
            if let Some(reason) = self.quarantined.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
                return Err(super::quarantined_error(id, reason));
            }
        }
        let current = old.as_ref().map_or(0, |e| e.origin.generation);
        if let Some(want) = m.uint("if_generation")? {
            if want != current {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("index {id:?} is at generation {current}, not {want}: someone else changed it first"),
                ));
            }
        }
        // A new name counts against --max-indices (checked before any file is copied).
        if old.is_none() {
            self.check_index_quota(tenant)?;
        }
        let server_path = m.str("server_path")?;
        if let Some((e, src)) = old.as_ref().and_then(|e| e.source.as_ref().map(|s| (e, s))) {
            // A `serve --index` name: `import` without a file re-reads its file; nothing else
            // replaces it.
            if upload.is_none() && server_path.is_none() {
                let e = self.reload_source(&key, e, src)?;
                return Ok(self.import_reply(id, &e, true));
            }
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("index {id:?} is served from a file (serve --index): replace that file, or import without a file to re-read it"),
            ));
        }
        // The file, spooled on the data directory's file system.
        let (file, sum, md, _spool): (PathBuf, Checksum, Metadata, Spool) = match (upload, server_path) {
            _ if staged.is_some() => {
                let s = staged.expect("invariant: checked");
                (s.file, s.sum, s.md, s._spool)
            }
            (Some(_), Some(_)) => return Err(Error::invalid("give either \"upload_id\" or \"server_path\", not both")),
            (None, None) => return Err(Error::invalid("missing field \"upload_id\" (or \"server_path\")")),
            (Some(up), None) => self.spooled_upload(up)?,
            (None, Some(p)) => self.spooled_server_file(Path::new(p))?,
        };
        let mut index = self.open_served(&file).map_err(|e| e.context("imported file"))?;
        if let Some(e) = &old {
            let g = e.read();
            let (was, now) = (&g.index, &index);
            if was.d() != now.d() || was.is_binary() != now.is_binary() || was.metric() != now.metric() {
                return Err(Error::invalid(format!(
                    "index {id:?} has d={} metric={}; the imported file has d={} metric={}: delete the index first to change its shape",
                    was.d(),
                    was.metric(),
                    now.d(),
                    now.metric()
                )));
            }
        }
        // Its vectors, less those of the version it replaces, count against --max-vectors.
        self.check_vector_quota(tenant, index.ntotal() as u64, old.as_ref().map(|_| &key))?;
        let kind = index.describe()?.type_name;
        let replaced = old.is_some();
        let entry = match (&self.store, &old) {
            (Some(st), None) => {
                let store = st.import_new(tenant, id, &kind, &file, sum, &mut index, &md)?;
                let origin = store.origin();
                Entry::with(kind, Slot::new(index, md, Some(store)), origin, None)
            }
            (Some(_), Some(e)) => {
                // The old version's store becomes the new one's; searches already holding
                // the old entry keep its index (memory or mapping) to their end. The write
                // lock is held only to take the store out: the renames and fsyncs of `adopt`
                // run while searches go on (no other write of this index can run: this is
                // its queue).
                let taken = e.write().store.take();
                let mut store = taken.ok_or_else(|| Error::new(ErrorKind::Internal, "index has no store"))?;
                if let Err(err) = store.adopt(&file, sum, &mut index, &md) {
                    e.write().store = Some(store);
                    return Err(err);
                }
                let origin = store.origin();
                Entry::with(kind, Slot::new(index, md, Some(store)), origin, None)
            }
            (None, _) => {
                let origin = super::Origin { generation: current + 1, imported: Some(sum) };
                Entry::with(kind, Slot::new(index, md, None), origin, None)
            }
        };
        self.indices.write().unwrap_or_else(|p| p.into_inner()).insert(key, entry.clone());
        tracing::info!(
            tenant = %tenant,
            index = %id,
            generation = entry.origin.generation,
            vectors = entry.ntotal.load(std::sync::atomic::Ordering::Relaxed),
            checksum = %checksum_text(&sum),
            replaced,
            "index imported"
        );
        Ok(self.import_reply(id, &entry, replaced))
    }

    fn import_reply(&self, id: &str, e: &Entry, replaced: bool) -> Msg {
        let mut out = Msg::default()
            .with("index_id", id)
            .with("generation", e.origin.generation)
            .with("ntotal", e.ntotal.load(std::sync::atomic::Ordering::Relaxed) as u64)
            .with("dimension", e.d as u64)
            .with("index_type", e.kind.as_str())
            .with("replaced", replaced);
        if let Some(c) = &e.origin.imported {
            out.set("checksum", checksum_text(c));
            out.set("bytes", c.bytes);
        }
        out
    }

    /// An upload's index file, checksum and metadata. Its sidecar is kept for the facts it
    /// records, but its checksum is dropped: a client's checksum proves the bytes arrived,
    /// not that FAISS may trust them, so the file is probed like any file without one.
    fn spooled_upload(&self, up: Spooled) -> Result<(PathBuf, Checksum, Metadata, Spool)> {
        let file = up.path(Part::Index).ok_or_else(|| Error::invalid("the upload has no \"index\" part"))?;
        let sum = up.sums[&Part::Index];
        if up.path(Part::Sidecar).is_some() {
            if let Some(mut meta) = IndexMeta::load(&file).map_err(|e| e.context("uploaded sidecar"))? {
                meta.set_checksum(None);
                meta.save(&file)?;
            }
        }
        let md = match up.path(Part::Metadata) {
            Some(p) => Metadata::read(&p)?,
            None => Metadata::default(),
        };
        Ok((file, sum, md, Spool::Upload(up)))
    }

    /// A file under `--import-dir` (and its sidecar), copied into the spool so that the
    /// operator's file is never moved or changed; checksummed while copied.
    fn spooled_server_file(&self, path: &Path) -> Result<(PathBuf, Checksum, Metadata, Spool)> {
        let real = self.allowed_path(path)?;
        let dir = self.transfers.new_dir()?;
        let guard = RemoveOnDrop(dir.clone());
        let file = Part::Index.path_in(&dir);
        let sum = copy_checksummed(&real, &file)?;
        // The sidecar as it is: a checksum `faissx build` recorded is verified against the
        // copy; a file without one is probed, as everywhere else (a checksum computed here
        // would prove nothing about where the file came from).
        let sidecar = IndexMeta::path_for(&real);
        let mut md = Metadata::default();
        if sidecar.is_file() {
            let to = Part::Sidecar.path_in(&dir);
            std::fs::copy(&sidecar, &to).at(&sidecar)?;
            if let Some(meta) = IndexMeta::load(&real)? {
                md = file_metadata(&real, &meta)?;
            }
        }
        Ok((file, sum, md, Spool::Dir(guard)))
    }

    /// `export_begin` (runs on the index's queue, so it sees every write acknowledged before
    /// it and none after): a point-in-time copy of the index's files, registered as an
    /// export session. With `--data-dir` the checkpoint's files are hard-linked (a WAL with
    /// records is checkpointed first); otherwise the index is written to the spool. Reply:
    /// as [`super::transfer::Transfers::begin_export`] plus `index_id`, `generation`,
    /// `index_type`, `dimension`, `ntotal`, `metric`.
    pub(super) fn export(&self, tenant: &str, m: &Msg) -> Result<Msg> {
        let id = m.req_str("index_id")?;
        let e = self.entry(tenant, id)?;
        if e.read().index.storage() == Storage::OnDisk {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("index {id:?} has on-disk inverted lists: it cannot be exported"),
            ));
        }
        let dir = self.transfers.new_dir()?;
        let guard = RemoveOnDrop(dir.clone());
        if let Some(src) = &e.source {
            link_or_copy(&src.path, &Part::Index.path_in(&dir))?;
            let sidecar = IndexMeta::path_for(&src.path);
            if sidecar.is_file() {
                link_or_copy(&sidecar, &Part::Sidecar.path_in(&dir))?;
            }
        } else if self.store.is_some() {
            let mut g = e.write();
            let s = &mut *g;
            if let Some(st) = s.store.as_mut() {
                if st.wal_bytes() > 0 && s.index.storage() == Storage::Loaded {
                    st.checkpoint(&mut s.index, &s.md)?;
                }
            }
            let files = s.store.as_ref().map(|st| st.checkpoint_files());
            drop(g);
            let [sidecar, index, metadata] =
                files.ok_or_else(|| Error::new(ErrorKind::Internal, "index has no store"))?;
            link_or_copy(&index, &Part::Index.path_in(&dir))?;
            link_or_copy(&sidecar, &Part::Sidecar.path_in(&dir))?;
            link_or_copy(&metadata, &Part::Metadata.path_in(&dir))?;
        } else {
            // In memory: written under the read lock (writes queue behind it for that long;
            // searches do not), without a copy of the index in memory.
            let g = e.read();
            g.index.write_to(&Part::Index.path_in(&dir))?;
            g.md.write(&Part::Metadata.path_in(&dir))?;
        }
        std::mem::forget(guard);
        let info = e.read().index.info(None)?;
        let out = self.transfers.begin_export(tenant, dir)?;
        Ok(out
            .with("index_id", id)
            .with("generation", e.origin.generation)
            .with("index_type", e.kind.as_str())
            .with("dimension", info.d as u64)
            .with("ntotal", info.ntotal as u64)
            .with("metric", info.metric.to_string()))
    }
}

/// An import's file, spooled, with its checksum and metadata.
pub(super) struct ImportSource {
    /// The index file (its sidecar beside it, if any).
    pub file: PathBuf,
    /// Its checksum.
    pub sum: Checksum,
    /// Its per-vector metadata and string ids.
    pub md: Metadata,
    _spool: Spool,
}

impl ImportSource {
    /// A fetched file in the spool folder of `spool` ([`Service::import_dir`]).
    pub fn fetched(file: PathBuf, sum: Checksum, md: Metadata, spool: ImportSpool) -> ImportSource {
        ImportSource { file, sum, md, _spool: spool.0 }
    }
}

/// A spool folder for an import's fetched files.
pub(super) struct ImportSpool(Spool);

/// What holds an import's spooled files; they are removed when it is dropped, after the
/// import (the index file itself has been renamed into the data directory by then).
enum Spool {
    Upload(#[allow(dead_code)] Spooled),
    Dir(#[allow(dead_code)] RemoveOnDrop),
}

/// Removes a folder when dropped (unless forgotten).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Hard-link `from` to `to` (same file system: instant, and the files linked are never
/// written again), or copy it.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).at(from)?;
    Ok(())
}

/// Copy `from` to `to` (fsynced), returning the copy's checksum.
fn copy_checksummed(from: &Path, to: &Path) -> Result<Checksum> {
    let mut w = std::fs::File::create(to).at(to)?;
    let sum = Checksum::read_through(from, |b| w.write_all(b).at(to))?;
    w.sync_all().at(to)?;
    Ok(sum)
}

/// The per-vector metadata and string ids of an index file written by `faissx build` / `add`
/// (its `<index>.meta.parquet`, when its sidecar records one), in the server's form.
///
/// Errors: `Format` when the table is missing or does not match the sidecar.
fn file_metadata(index: &Path, meta: &IndexMeta) -> Result<Metadata> {
    match crate::engine::filter::MetaTable::open_for(index, meta)? {
        Some(t) => Metadata::from_table(&t),
        None => Ok(Metadata::default()),
    }
}
