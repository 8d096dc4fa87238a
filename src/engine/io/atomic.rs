//! Crash-safe output files and the lock that keeps two faissx processes off one output.
//!
//! Everything faissx writes goes first to a temp file beside its destination, with a name no
//! other writer can get (`<name>.<random>.tmp`, created with `O_EXCL` by the `tempfile`
//! crate), is fsynced, and is renamed over the destination only when complete (qdrant
//! `mmap/ops.rs`, tantivy `atomic_write`). A crash or error never leaves a half-written file
//! under the final name, and a temp file dropped before its commit is removed (on error,
//! on `Ctrl-C` through the stop flag, on panic unwinding).
//!
//! Unique temp names alone do not make two writers of the same output safe: each would
//! rename its own file into place, and an index and its sidecar could come from different
//! runs. [`OutputLock`] therefore refuses, by name, an output that another faissx is
//! writing.

use crate::engine::error::{Error, ErrorKind, IoContext, Result};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::TempPath;

/// `<path>.tmp`: the fixed temp name faissx used before temp names were unique. Nothing
/// creates it any more; clean-up code may still remove one left by an older version.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create an empty temp file with a unique name beside `dest` (`<name>.<random>.tmp`, mode
/// 0666 less the umask, like `File::create`), for writers that need a path rather than a
/// handle (FAISS writes index files by name). The returned [`TempPath`] removes the file
/// when dropped, unless it is [`commit_temp`]ted.
///
/// Errors: `Io` naming `dest`'s directory.
pub fn temp_beside(dest: &Path) -> Result<TempPath> {
    Ok(create_temp(dest)?.1)
}

fn create_temp(dest: &Path) -> Result<(File, TempPath)> {
    let dir = parent_of(dest);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let f = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dest, e).context("creating a temp file"))?;
    Ok(f.into_parts())
}

/// Check, before any work, that an output can be created at `dest`: its directory exists.
/// Errors: `InvalidInput` naming the path.
pub fn check_dest(dest: &Path) -> Result<()> {
    let parent = parent_of(dest);
    if !parent.is_dir() {
        return Err(crate::engine::Error::invalid(format!(
            "{}: cannot write here: directory {} does not exist",
            dest.display(),
            parent.display()
        )));
    }
    if dest.is_dir() {
        return Err(crate::engine::Error::invalid(format!("{}: is a directory; give a file name", dest.display())));
    }
    Ok(())
}

/// Fsync the directory holding `path`, so that a rename into it is durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    if let Ok(dir) = File::open(parent_of(path)) {
        // Some file systems refuse fsync on directories; durability there is best effort.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Rename a finished temp file (from [`temp_beside`]) over `dest`, after fsyncing it, and
/// fsync the directory. On error the temp file is removed.
pub fn commit_temp(tmp: TempPath, dest: &Path) -> Result<()> {
    File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    sync_parent(dest)
}

/// A file being written atomically. Write through [`AtomicFile::writer`], then [`AtomicFile::commit`].
pub struct AtomicFile {
    dest: PathBuf,
    tmp: TempPath,
    w: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Start writing `dest` (through a unique temp file beside it).
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let (f, tmp) = create_temp(dest)?;
        Ok(AtomicFile { dest: dest.to_path_buf(), tmp, w: Some(BufWriter::with_capacity(1 << 20, f)) })
    }

    /// The writer for the contents.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.w.as_mut().expect("invariant: writer present until commit")
    }

    /// Flush, fsync and rename into place.
    pub fn commit(mut self) -> Result<()> {
        let w = self.w.take().expect("invariant: writer present until commit");
        let f = w.into_inner().map_err(|e| e.into_error()).at(&self.tmp)?;
        f.sync_all().at(&self.tmp)?;
        drop(f);
        self.tmp.persist(&self.dest).map_err(|e| Error::io(&self.dest, e.error))?;
        sync_parent(&self.dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

/// Write `bytes` to `dest` atomically.
pub fn write_all(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.writer().write_all(bytes).at(dest)?;
    f.commit()
}

/// `<output>.lock`, the lock file of an output.
pub fn lock_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// An exclusive advisory lock on an output, held while one faissx writes it: a second
/// faissx that asks for the same output gets an error naming it, at once, instead of
/// racing the first (whose index and sidecar it could otherwise mix with its own).
///
/// The lock is `flock(2)` (std's [`File::try_lock`]) on `<output>.lock`. Why a lock file
/// and not a lock on the output: the output may not exist yet, and it is replaced by a
/// rename, so a lock on the old file would not cover the new one. `flock` is released by
/// the kernel when the process dies, so a crash or `kill -9` never leaves a stale lock, only,
/// at worst, an empty `.lock` file that the next writer reuses. A released lock removes its
/// file; a writer that locked a file its previous holder had just removed notices that the
/// path no longer names the file it locked and tries again (bounded).
///
/// Advisory: it keeps faissx processes apart, not other programs.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    file: File,
}

impl OutputLock {
    /// Lock `output` for writing (through `<output>.lock`, created if missing).
    ///
    /// Errors: `Busy` naming `output` when another process holds its lock; `Io` naming the
    /// lock file when it cannot be created (an unwritable directory).
    pub fn acquire(output: &Path) -> Result<OutputLock> {
        let path = lock_path(output);
        for _ in 0..8 {
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).at(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!(
                            "{}: another faissx is writing this output ({} is locked); wait for it to finish or choose another path",
                            output.display(),
                            path.display()
                        ),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e).context("locking")),
            }
            // The previous holder removes the file before unlocking it: make sure we locked
            // the file that the path names now, not one just unlinked.
            let ours = file.metadata().at(&path)?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                    return Ok(OutputLock { path, file });
                }
                _ => continue,
            }
        }
        Err(Error::new(
            ErrorKind::Busy,
            format!("{}: its lock file {} keeps changing", output.display(), path.display()),
        ))
    }

    /// The lock file's path (`<output>.lock`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove while still holding the lock, then unlock (closing the file would too).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("faissx-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ls(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = scratch("uncommitted");
        let dest = dir.join("out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
            let names = ls(&dir);
            assert_eq!(names.len(), 1);
            assert!(names[0].starts_with("out.bin.") && names[0].ends_with(".tmp"), "{names:?}");
        }
        assert_eq!(ls(&dir), Vec::<String>::new());
        write_all(&dest, b"whole").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
        assert_eq!(ls(&dir), ["out.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_files_of_one_destination_are_distinct_and_readable_by_others() {
        let dir = scratch("distinct");
        let dest = dir.join("same.index");
        let a = temp_beside(&dest).unwrap();
        let b = temp_beside(&dest).unwrap();
        assert_ne!(a.to_path_buf(), b.to_path_buf());
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600, "owner reads and writes");
        std::fs::write(&a, b"a").unwrap();
        commit_temp(a, &dest).unwrap();
        drop(b);
        assert_eq!(ls(&dir), ["same.index"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_is_locked_once_and_released_on_drop() {
        let dir = scratch("lock");
        let out = dir.join("x.index");
        let held = OutputLock::acquire(&out).unwrap();
        assert_eq!(held.path(), dir.join("x.index.lock"));
        let e = OutputLock::acquire(&out).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(e.message().starts_with(&format!("{}: another faissx is writing", out.display())), "{}", e.message());
        drop(held);
        assert_eq!(ls(&dir), Vec::<String>::new(), "the lock file goes with the lock");
        let again = OutputLock::acquire(&out).unwrap();
        let other = OutputLock::acquire(&dir.join("y.index")).unwrap();
        drop((again, other));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
