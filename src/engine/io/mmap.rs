//! The one place that memory-maps files. Input vector files are mapped read-only; empty files
//! and standard input fall back to an owned buffer, because a zero-length file cannot be mapped
//! (as tantivy notes) and a pipe cannot be mapped at all.

use crate::engine::error::{IoContext, Result};
use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::Path;

/// Bytes of an input: a read-only memory map of a file, or an owned buffer.
pub enum Source {
    /// A mapped file.
    Mapped(Mmap),
    /// Bytes read into memory (stdin, empty files).
    Owned(Vec<u8>),
}

impl Deref for Source {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Source::Mapped(m) => m,
            Source::Owned(v) => v,
        }
    }
}

/// Map `path` read-only, or read standard input fully when `path` is `-`.
///
/// Errors: [`crate::engine::ErrorKind::NotFound`] / `Io` naming the path.
pub fn open(path: &Path) -> Result<Source> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().lock().read_to_end(&mut buf).at(Path::new("<stdin>"))?;
        return Ok(Source::Owned(buf));
    }
    let file = File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    if meta.is_dir() {
        return Err(crate::engine::Error::invalid(format!("{}: is a directory, not a vector file", path.display())));
    }
    if meta.len() == 0 {
        return Ok(Source::Owned(Vec::new()));
    }
    // SAFETY: the map is read-only and faissx never writes to its inputs. Another process
    // truncating the file while it is mapped would make reads fault (SIGBUS); that is the
    // documented contract of every mmap-based reader (ripgrep, tantivy) and the price of not
    // copying a file larger than RAM.
    let map = unsafe { Mmap::map(&file) }.at(path)?;
    #[cfg(unix)]
    {
        // Inputs are read front to back in batches.
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    Ok(Source::Mapped(map))
}
