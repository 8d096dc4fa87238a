//! Crash-safe output files: everything faissx writes goes to `<path>.tmp`, is fsynced, and is
//! renamed over `<path>` only when complete (qdrant `mmap/ops.rs`, tantivy `atomic_write`). A
//! crash or error never leaves a half-written file under the final name; a dropped, uncommitted
//! [`AtomicFile`] removes its temp file.

use crate::engine::error::{IoContext, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temp path used while writing `path`: `<path>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Check, before any work, that an output can be created at `dest`: its directory exists.
/// Errors: `InvalidInput` naming the path.
pub fn check_dest(dest: &Path) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
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
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        // Some file systems refuse fsync on directories; durability there is best effort.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Rename a finished temp file over `dest`, after fsyncing it, and fsync the directory.
pub fn commit_tmp(tmp: &Path, dest: &Path) -> Result<()> {
    File::open(tmp).and_then(|f| f.sync_all()).at(tmp)?;
    std::fs::rename(tmp, dest).at(dest)?;
    sync_parent(dest)
}

/// A file being written atomically. Write through [`AtomicFile::writer`], then [`AtomicFile::commit`].
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Start writing `dest` (through `<dest>.tmp`).
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let tmp = tmp_path(dest);
        let f = File::create(&tmp).at(&tmp)?;
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
        std::fs::rename(&self.tmp, &self.dest).at(&self.dest)?;
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

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.w.is_some() {
            self.w = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dest` atomically.
pub fn write_all(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.writer().write_all(bytes).at(&f.tmp.clone())?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("faissx-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert!(!tmp_path(&dest).exists());
        write_all(&dest, b"whole").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
