//! The one place that memory-maps files. Input vector files are mapped read-only; empty files
//! and standard input fall back to an owned buffer, because a zero-length file cannot be mapped
//! (as tantivy notes) and a pipe cannot be mapped at all. Objects in object storage
//! (`s3://…`) are read by ranges instead ([`super::object::RangeReader`]).

use super::object::{self, RangeReader};
use crate::engine::error::{IoContext, Result};
use bytes::Bytes;
use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::ops::{Deref, Range};
use std::path::Path;

/// Bytes of an input: a read-only memory map of a file, an owned buffer, or an object read by
/// ranges.
pub enum Source {
    /// A mapped file.
    Mapped(Mmap),
    /// Bytes read into memory (stdin, empty files).
    Owned(Vec<u8>),
    /// An object in object storage (boxed: its reader is much larger than a map).
    Remote(Box<RangeReader>),
}

/// Bytes read from a [`Source`]: borrowed from a map or buffer, or fetched.
pub enum Chunk<'a> {
    /// A slice of a mapped file or buffer.
    Borrowed(&'a [u8]),
    /// Bytes fetched from object storage.
    Fetched(Bytes),
}

impl Deref for Chunk<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Borrowed(b) => b,
            Chunk::Fetched(b) => b,
        }
    }
}

impl Source {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Source::Mapped(m) => m.len(),
            Source::Owned(v) => v.len(),
            Source::Remote(r) => r.len(),
        }
    }

    /// Whether the source holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `range` (end exclusive, within [`Source::len`]).
    ///
    /// Errors: those of a ranged read for an object; never for a local file.
    pub fn read(&self, range: Range<usize>) -> Result<Chunk<'_>> {
        Ok(match self {
            Source::Mapped(m) => Chunk::Borrowed(&m[range]),
            Source::Owned(v) => Chunk::Borrowed(&v[range]),
            Source::Remote(r) => Chunk::Fetched(r.read(range)?),
        })
    }

    /// Whether the bytes come from object storage (each read is a request).
    pub fn is_remote(&self) -> bool {
        matches!(self, Source::Remote(_))
    }

    /// The caller will read `span` next, front to back: an object fetches nothing outside it
    /// ([`RangeReader::advise`]). Nothing to do for local bytes.
    pub fn advise(&self, span: Range<usize>) {
        if let Source::Remote(r) = self {
            r.advise(span);
        }
    }

    /// Several ranges, in order; an object fetches them concurrently, coalescing nearby ones.
    pub fn read_many(&self, ranges: &[Range<usize>]) -> Result<Vec<Chunk<'_>>> {
        match self {
            Source::Remote(r) => Ok(r.read_many(ranges)?.into_iter().map(Chunk::Fetched).collect()),
            _ => ranges.iter().map(|r| self.read(r.clone())).collect(),
        }
    }
}

/// Map `path` read-only, read standard input fully when `path` is `-`, or open the object at
/// an object-storage URL for ranged reads.
///
/// Errors: [`crate::engine::ErrorKind::NotFound`] / `Io` naming the path or URL; `Auth` for
/// an object whose credentials are refused.
pub fn open(path: &Path) -> Result<Source> {
    if object::is_url(path) {
        return Ok(Source::Remote(Box::new(RangeReader::open(path)?)));
    }
    let local = object::local_path(path)?;
    let path = local.as_path();
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
