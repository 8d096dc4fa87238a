//! How an index file is opened: loaded into memory, memory-mapped in place, or with IVF lists
//! on disk (`<index>.ivfdata`). FAISS 1.12's read flags differ by index type (measured):
//! IVF-Flat / IVF-PQ / IVF-SQ map their lists with `IO_FLAG_MMAP | IO_FLAG_READ_ONLY` (plus
//! `IO_FLAG_SKIP_PRECOMPUTE_TABLE` for IVF-PQ); Flat, SQ, PQ, HNSW and the IDMap wrappers map
//! with `IO_FLAG_MMAP_IFC`. The wrong flag silently loads everything (or zero-fills every IVF
//! list first), so the type is probed from the file's fourcc before reading. Indices with
//! on-disk lists are read with `IO_FLAG_READ_ONLY | IO_FLAG_ONDISK_SAME_DIR`, since
//! `IO_FLAG_MMAP` on them crashes on the first search.

use crate::engine::error::{IoContext, Result};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `faiss::IO_FLAG_READ_ONLY`.
pub const IO_FLAG_READ_ONLY: i32 = 0x2;
/// `faiss::IO_FLAG_ONDISK_SAME_DIR`: look for the `.ivfdata` file beside the index.
pub const IO_FLAG_ONDISK_SAME_DIR: i32 = 0x4;
/// `faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE` (IVF-PQ).
pub const IO_FLAG_SKIP_PRECOMPUTE_TABLE: i32 = 0x10;
/// `faiss::IO_FLAG_MMAP` (= `IO_FLAG_SKIP_IVF_DATA | 0x646f0000`).
pub const IO_FLAG_MMAP: i32 = 0x646f_0008;
/// `faiss::IO_FLAG_MMAP_IFC`: map flat code arrays through the mmap-aware reader.
pub const IO_FLAG_MMAP_IFC: i32 = 0x200;

/// How an index is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Read fully into anonymous memory; may be changed.
    Loaded,
    /// Memory-mapped from its file; read-only.
    Mapped,
    /// IVF lists in a separate `.ivfdata` file, mapped read-only.
    OnDisk,
}

/// What the file's header says about the index type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileKind {
    /// The outermost fourcc (`IxF2`, `IwFl`, `IHNf`, `IxM2`, …).
    pub fourcc: String,
    /// For IDMap wrappers, the wrapped index's fourcc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner_fourcc: Option<String>,
    /// The index that holds the data is IVF.
    pub ivf: bool,
    /// The IVF index is IVF-PQ (has a precomputed table).
    pub ivfpq: bool,
    /// Its inverted lists are on disk.
    pub on_disk: bool,
}

/// The data file of an index with on-disk lists: `<index>.ivfdata`.
pub fn ivfdata_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".ivfdata");
    PathBuf::from(s)
}

fn is_ivf(cc: &[u8]) -> bool {
    cc.len() == 4 && cc[0] == b'I' && (cc[1] == b'w' || cc[1] == b'v')
}

/// Read the header of the index file at `path`.
pub fn probe(path: &Path) -> Result<FileKind> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut head = [0u8; 64];
    let n = read_up_to(&mut f, &mut head).at(path)?;
    let head = &head[..n];
    let cc = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let outer = head.get(..4).unwrap_or(b"????");
    // IDMap/IDMap2: fourcc, then the index header (d i32, ntotal i64, 2 × i64 dummies,
    // is_trained u8, metric_type i32 [+ metric_arg f32 when metric_type > 1]), then the
    // wrapped index.
    let inner = if outer == b"IxMp" || outer == b"IxM2" {
        let metric = head.get(33..37).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
        let off = if metric > 1 { 41 } else { 37 };
        head.get(off..off + 4)
    } else {
        None
    };
    let data_cc = inner.unwrap_or(outer);
    let ivf = is_ivf(data_cc);
    let ivfpq = matches!(data_cc, b"IwPQ" | b"IvPQ" | b"IwQR");
    // A faissx on-disk build keeps its lists beside the index; other on-disk indices are
    // recognised after reading (see `Index::open_with`).
    let on_disk = ivf && ivfdata_path(path).exists();
    Ok(FileKind { fourcc: cc(outer), inner_fourcc: inner.map(cc), ivf, ivfpq, on_disk })
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// FAISS read flags for opening a file of `kind`, mapped or not, with a short description.
pub fn read_flags(kind: &FileKind, mmap: bool) -> (i32, Storage, &'static str) {
    if kind.on_disk {
        return (
            IO_FLAG_READ_ONLY | IO_FLAG_ONDISK_SAME_DIR,
            Storage::OnDisk,
            "IO_FLAG_READ_ONLY|IO_FLAG_ONDISK_SAME_DIR",
        );
    }
    if !mmap {
        return (0, Storage::Loaded, "none (load)");
    }
    if kind.ivf {
        if kind.ivfpq {
            (
                IO_FLAG_MMAP | IO_FLAG_READ_ONLY | IO_FLAG_SKIP_PRECOMPUTE_TABLE,
                Storage::Mapped,
                "IO_FLAG_MMAP|IO_FLAG_READ_ONLY|IO_FLAG_SKIP_PRECOMPUTE_TABLE",
            )
        } else {
            (IO_FLAG_MMAP | IO_FLAG_READ_ONLY, Storage::Mapped, "IO_FLAG_MMAP|IO_FLAG_READ_ONLY")
        }
    } else {
        (IO_FLAG_MMAP_IFC, Storage::Mapped, "IO_FLAG_MMAP_IFC")
    }
}

/// Read the file front to back once so its pages are in the page cache: FAISS advises random
/// access on mapped files, which made the first query on a cold 1–2 GB Flat file take 31 s.
/// Returns bytes read.
pub fn warm(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// This process's memory, from `/proc/self/status` (bytes; 0 where unavailable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemStats {
    /// Resident anonymous memory (heap: what a loaded index costs).
    pub rss_anon: u64,
    /// Resident file-backed memory (mapped files, shared with the page cache).
    pub rss_file: u64,
    /// Peak resident set size.
    pub vm_hwm: u64,
}

impl MemStats {
    /// Read the current process's figures.
    pub fn current() -> MemStats {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        MemStats { rss_anon: field("RssAnon:"), rss_file: field("RssFile:"), vm_hwm: field("VmHWM:") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_index_type() {
        let k = |cc: &str, ivfpq: bool| FileKind {
            fourcc: cc.into(),
            inner_fourcc: None,
            ivf: is_ivf(cc.as_bytes()),
            ivfpq,
            on_disk: false,
        };
        assert_eq!(read_flags(&k("IxF2", false), true).0, IO_FLAG_MMAP_IFC);
        assert_eq!(read_flags(&k("IHNf", false), true).0, IO_FLAG_MMAP_IFC);
        assert_eq!(read_flags(&k("IwFl", false), true).0, 0x646f_000a);
        assert_eq!(read_flags(&k("IwPQ", true), true).0, 0x646f_001a);
        assert_eq!(read_flags(&k("IwFl", false), false).0, 0);
        let mut od = k("IwFl", false);
        od.on_disk = true;
        assert_eq!(read_flags(&od, true).0, 0x6);
        assert!(MemStats::current().vm_hwm > 0);
    }
}
