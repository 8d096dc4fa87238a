//! Index files faissx writes, each with one owner that commits it or rolls it back, as
//! [`AtomicFile`](crate::engine::io::atomic::AtomicFile) does for a single file.
//!
//! An index output at `PATH` is up to three files: the FAISS index `PATH`, its sidecar
//! (`PATH.meta.json`) and, for an index whose inverted lists live on disk, the data file
//! `PATH.ivfdata`. The data file is built in a temp file with a unique name beside it
//! (`PATH.ivfdata.<random>.tmp`) — FAISS writes it while the index is filled — and renamed
//! into place by [`IndexOutput::commit`], which then writes the index and the sidecar (each
//! through its own unique temp file). An output dropped without a commit removes its temp
//! files, so an interrupted or failed run leaves nothing half-written under a final name.
//!
//! While an [`IndexOutput`] lives it holds the output's [`OutputLock`] (`PATH.lock`): a
//! second faissx writing the same `PATH` at the same time is refused with an error naming
//! it, instead of renaming its own index or sidecar over the first one's. [`OutputSet`] does
//! the same for several outputs that stand or fall together (the shards of `faissx split`).

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::filter::table::table_path;
use crate::engine::filter::MetaTable;
use crate::engine::index::{sidecar_path, storage, Index, IndexMeta};
use crate::engine::io::atomic::{self, OutputLock};
use crate::engine::io::object::{self, Object};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use tempfile::TempPath;

/// Refuse to replace an existing `path` unless `force`.
///
/// Errors: `AlreadyExists` naming the path.
pub fn check_new(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{}: already exists (use --force to replace it)", path.display()),
        ));
    }
    Ok(())
}

/// One index file (with its sidecar and, optionally, its on-disk lists) being written, and
/// the lock on it. Commit with [`IndexOutput::commit`]; dropped uncommitted, it removes its
/// temp files and releases the lock.
#[derive(Debug)]
pub struct IndexOutput {
    path: PathBuf,
    /// The temp file the on-disk lists are built in, when the index's lists go on disk.
    lists_tmp: Option<TempPath>,
    _lock: OutputLock,
}

impl IndexOutput {
    /// Start writing an index at `path` (and its sidecar): lock it, then refuse an existing
    /// `path` unless `force` (checked under the lock, so that of two runs without `--force`
    /// the second never replaces what the first wrote). With `lists_on_disk` the index's
    /// inverted lists go to `<path>.ivfdata`, built in [`IndexOutput::lists_tmp`] (created
    /// here, empty). Nothing else is created until [`IndexOutput::commit`].
    ///
    /// Errors: `Busy` when another faissx is writing `path`; `AlreadyExists`; `Io` creating
    /// the lock or temp file.
    pub fn create(path: &Path, force: bool, lists_on_disk: bool) -> Result<IndexOutput> {
        let lock = OutputLock::acquire(path)?;
        check_new(path, force)?;
        let lists_tmp = if lists_on_disk { Some(atomic::temp_beside(&storage::ivfdata_path(path))?) } else { None };
        Ok(IndexOutput { path: path.to_path_buf(), lists_tmp, _lock: lock })
    }

    /// The index file's final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the on-disk lists are built until the commit (`<path>.ivfdata.<random>.tmp`),
    /// for [`Index::lists_to_disk`]; `None` for an index held in memory.
    pub fn lists_tmp(&self) -> Option<&Path> {
        self.lists_tmp.as_deref()
    }

    /// Write `index` here, without a metadata table: [`IndexOutput::commit_with`].
    ///
    /// Errors: as [`IndexOutput::commit_with`].
    pub fn commit(self, index: &mut Index) -> Result<()> {
        self.commit_with(index, None)
    }

    /// Write `index` here: for on-disk lists, first rename the temp lists to
    /// `<path>.ivfdata` and point the index at it; then its metadata table, when it has one
    /// ([`save_with_table`]); then the index file and its sidecar.
    ///
    /// Errors: `InvalidInput` when the index's lists are on disk but this output was not
    /// made for them; `Io`/`Faiss` from writing (temp files are removed).
    pub fn commit_with(mut self, index: &mut Index, table: Option<&MetaTable>) -> Result<()> {
        if index.lists_on_disk() {
            let Some(tmp) = self.lists_tmp.take() else {
                return Err(Error::invalid(format!(
                    "{}: the index's inverted lists are on disk; this output was made for an in-memory index",
                    self.path.display()
                )));
            };
            let data = storage::ivfdata_path(&self.path);
            atomic::commit_temp(tmp, &data)?;
            let abs = std::fs::canonicalize(&data).unwrap_or(data);
            index.set_lists_file(&abs)?;
        }
        save_with_table(index, &self.path, table)
    }

    /// The files of a written output at `path`: the index, its sidecar and its on-disk
    /// lists (which may not exist).
    pub fn files(path: &Path) -> [PathBuf; 4] {
        [path.to_path_buf(), sidecar_path(path), storage::ivfdata_path(path), table_path(path)]
    }
}

/// Save `index` at `path` with its metadata `table` (or none): the table first
/// (`<path>.meta.parquet`, atomically), then the index and the sidecar that records the
/// table's size and CRC-32. Without a table, a table file left at `path` by an earlier index
/// is removed after the sidecar no longer names it.
///
/// Errors: `Io`/`Faiss` from writing; nothing under `path` changes if the table cannot be
/// written.
pub fn save_with_table(index: &mut Index, path: &Path, table: Option<&MetaTable>) -> Result<()> {
    index.meta_mut().metadata = table.map(|t| t.save_for(path)).transpose()?;
    index.save(path)?;
    if table.is_none() {
        match std::fs::remove_file(table_path(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&table_path(path), e)),
            _ => {}
        }
    }
    Ok(())
}

/// Several outputs in one directory that stand or fall together: until
/// [`OutputSet::keep`], dropping the set removes every output committed through it (all
/// their files) and the directory, if the set created it.
#[derive(Debug)]
pub struct OutputSet {
    written: Vec<PathBuf>,
    created_dir: Option<PathBuf>,
    kept: bool,
}

impl OutputSet {
    /// Outputs to be written in `dir`, which is created if missing.
    ///
    /// Errors: `InvalidInput` when `dir` exists and is not a directory; `Io` creating it.
    pub fn in_dir(dir: &Path) -> Result<OutputSet> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::invalid(format!("{}: -o must be a directory", dir.display())));
        }
        let created_dir = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(OutputSet { written: Vec::new(), created_dir, kept: false })
    }

    /// Commit `out` with `index` as one of this set (rolled back with it, even when this
    /// commit fails halfway).
    pub fn commit(&mut self, out: IndexOutput, index: &mut Index) -> Result<()> {
        self.commit_with(out, index, None)
    }

    /// [`OutputSet::commit`] with a metadata table ([`IndexOutput::commit_with`]).
    pub fn commit_with(&mut self, out: IndexOutput, index: &mut Index, table: Option<&MetaTable>) -> Result<()> {
        self.written.push(out.path().to_path_buf());
        out.commit_with(index, table)
    }

    /// Keep every output written.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for p in &self.written {
            for f in IndexOutput::files(p) {
                let _ = std::fs::remove_file(f);
            }
        }
        if let Some(d) = &self.created_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// What travels with an index between a bucket and a local directory, as suffixes of its
/// name, in upload order: the metadata table, then (after the index) the sidecar, which records
/// the index's CRC-32 and so goes last.
fn companions() -> (String, String) {
    let suffix = |p: PathBuf| p.to_string_lossy().trim_start_matches('i').to_string();
    (suffix(table_path(Path::new("i"))), suffix(sidecar_path(Path::new("i"))))
}

/// The sidecar of the index at `p`, a local path or an object-storage URL (only the small
/// `.meta.json` object is fetched); `None` when there is none.
///
/// Errors: those of reading or fetching it; a corrupt sidecar, naming it.
pub fn sidecar_of(p: &Path) -> Result<Option<IndexMeta>> {
    if !object::is_url(p) {
        return IndexMeta::load(&object::local_path(p)?);
    }
    let side = Object::open(p)?.with_suffix(&companions().1);
    match side.get() {
        Ok(bytes) => IndexMeta::parse(Path::new(side.url()), &bytes).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A local copy of an index input: the file itself for a local path; for an object-storage
/// URL, the index, its sidecar and its metadata table downloaded to a temporary directory
/// (removed on drop).
pub struct LocalCopy {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl LocalCopy {
    /// The copy of `p` (an index path or URL); a download stops once `stop` is set.
    ///
    /// Errors: `NotFound` naming the URL; those of downloading (`Io`, `Auth`, `Interrupted`).
    pub fn of(p: &Path, stop: &AtomicBool) -> Result<LocalCopy> {
        if !object::is_url(p) {
            return Ok(LocalCopy { path: object::local_path(p)?, _dir: None });
        }
        let obj = Object::open(p)?;
        let dir = object::temp_dir()?;
        let path = dir.path().join(obj.file_name());
        obj.download(&path, stop)?;
        let (table, sidecar) = companions();
        for suffix in [table, sidecar] {
            let mut dest = path.as_os_str().to_owned();
            dest.push(&suffix);
            let dest = PathBuf::from(dest);
            match obj.with_suffix(&suffix).download(&dest, stop) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(&dest);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(LocalCopy { path, _dir: Some(dir) })
    }

    /// The local path to read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `e` naming the URL this is a copy of instead of the copy (errors of reading it).
    pub fn rename(&self, e: Error, given: &Path) -> Error {
        if self._dir.is_none() {
            return e;
        }
        e.renaming(&self.path.display().to_string(), &given.display().to_string())
    }
}

/// An index output that may be an object-storage URL: the command writes the index (and its
/// sidecar and table) at [`StagedOutput::local`] as usual, then [`StagedOutput::publish`]
/// uploads them. For a local path, `local` is the path itself and `publish` does nothing.
pub struct StagedOutput {
    local: PathBuf,
    remote: Option<(Object, tempfile::TempDir)>,
}

impl StagedOutput {
    /// Stage an output for `p`. An existing object is refused unless `force`, as a local
    /// output is.
    ///
    /// Errors: `AlreadyExists` naming the URL; those of checking for the object.
    pub fn new(p: &Path, force: bool) -> Result<StagedOutput> {
        if !object::is_url(p) {
            let local = object::local_path(p)?;
            check_new(&local, force)?;
            return Ok(StagedOutput { local, remote: None });
        }
        let obj = Object::open(p)?;
        if !force && obj.exists()? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{}: exists (pass --force to replace it)", obj.url()),
            ));
        }
        let dir = object::temp_dir()?;
        let local = dir.path().join(obj.file_name());
        Ok(StagedOutput { local, remote: Some((obj, dir)) })
    }

    /// Whether the output goes to object storage.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Where the command writes.
    pub fn local(&self) -> &Path {
        &self.local
    }

    /// Upload what was written: the metadata table, the index, the sidecar, then delete a table
    /// an earlier index left. Returns the bytes uploaded.
    ///
    /// Errors: those of uploading (`Interrupted` once `stop` is set); an error leaves the earlier
    /// version's sidecar, whose CRC-32 no longer matches a replaced index, so readers refuse the
    /// pair.
    pub fn publish(self, stop: &AtomicBool) -> Result<u64> {
        let Some((obj, _dir)) = self.remote else { return Ok(0) };
        let (table, sidecar) = companions();
        let table_file = table_path(&self.local);
        let mut bytes = 0;
        let has_table = table_file.exists();
        if has_table {
            bytes += obj.with_suffix(&table).upload(&table_file, stop)?;
        }
        bytes += obj.upload(&self.local, stop)?;
        let sidecar_file = sidecar_path(&self.local);
        if sidecar_file.exists() {
            bytes += obj.with_suffix(&sidecar).upload(&sidecar_file, stop)?;
        }
        // A table left by an earlier index goes once the new sidecar no longer names it; only
        // when there is one, so a role that may not delete can still write plain parts.
        let stale = obj.with_suffix(&table);
        if !has_table && stale.exists()? {
            stale.delete()?;
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::{IndexSpec, Metric};

    fn flat(n: usize) -> Index {
        let spec = IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 };
        let mut ix = Index::create(&spec, false).unwrap();
        ix.add(&(0..n * 4).map(|v| v as f32).collect::<Vec<_>>(), None).unwrap();
        ix
    }

    fn ls(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => return Vec::new(),
        };
        v.sort();
        v
    }

    #[test]
    fn companions_are_the_table_and_the_sidecar() {
        assert_eq!(companions(), (".meta.parquet".to_string(), ".meta.json".to_string()));
    }

    #[test]
    fn uncommitted_lists_leave_nothing_and_commit_writes_index_and_sidecar() {
        let dir = std::env::temp_dir().join(format!("faissx-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.index");
        {
            let out = IndexOutput::create(&path, false, true).unwrap();
            let tmp = out.lists_tmp().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            assert!(tmp.starts_with("a.index.ivfdata.") && tmp.ends_with(".tmp"), "{tmp}");
            std::fs::write(out.lists_tmp().unwrap(), b"partial lists").unwrap();
            assert_eq!(IndexOutput::create(&path, true, false).unwrap_err().kind(), ErrorKind::Busy);
        }
        assert_eq!(ls(&dir), Vec::<String>::new(), "dropped uncommitted: temp lists and lock removed");
        IndexOutput::create(&path, false, false).unwrap().commit(&mut flat(3)).unwrap();
        assert_eq!(ls(&dir), ["a.index", "a.index.meta.json"]);
        assert_eq!(Index::open_float(&path, &Default::default()).unwrap().ntotal(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_set_stands_or_falls_together() {
        let base = std::env::temp_dir().join(format!("faissx-outset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("shards");
        {
            let mut set = OutputSet::in_dir(&dir).unwrap();
            set.commit(IndexOutput::create(&dir.join("s.0.index"), false, false).unwrap(), &mut flat(2)).unwrap();
            assert_eq!(ls(&dir), ["s.0.index", "s.0.index.meta.json"]);
        }
        assert!(!dir.exists(), "dropped unkept: outputs and the directory it created removed");
        let mut set = OutputSet::in_dir(&dir).unwrap();
        set.commit(IndexOutput::create(&dir.join("s.0.index"), false, false).unwrap(), &mut flat(2)).unwrap();
        set.keep();
        assert_eq!(ls(&dir), ["s.0.index", "s.0.index.meta.json"]);
        let e = OutputSet::in_dir(&dir.join("s.0.index")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = check_new(&dir.join("s.0.index"), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        check_new(&dir.join("s.0.index"), true).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
