//! Vector files in, result files out.
//!
//! Owns the formats users feed faissx: `.npy` (NumPy format 1.0–3.0, 2-D, C order; dtypes f2,
//! f4, f8, u1, i1 converted to f32), `.fvecs`/`.bvecs`/`.ivecs` (the texmex / ann-benchmarks
//! formats: each record a little-endian `i32` dimension then `d` f32 / u8 / i32 values) and
//! `.csv` (numeric columns, optional header, optional id column). Files are memory-mapped
//! (`mmap.rs`) and decoded batch by batch into contiguous `rows × d` row-major f32 buffers, so
//! a file larger than RAM streams through. It must not know about FAISS, clap or terminals.

pub mod atomic;
mod csvfile;
pub mod mmap;
mod npy;
pub mod object;
mod vecs;
pub mod write;

use crate::engine::error::{display_path, Error, ErrorKind, Result};
use mmap::Source;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use csvfile::{CsvOptions, MetaCells};

/// A supported vector file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VecFormat {
    /// NumPy `.npy`.
    Npy,
    /// texmex `.fvecs` (f32 records).
    Fvecs,
    /// texmex `.bvecs` (u8 records).
    Bvecs,
    /// texmex `.ivecs` (i32 records).
    Ivecs,
    /// Comma-separated numbers.
    Csv,
}

impl VecFormat {
    /// All format names, as accepted by `--input-format`.
    pub const NAMES: [&'static str; 5] = ["npy", "fvecs", "bvecs", "ivecs", "csv"];

    /// The format named `s` (`npy`, `fvecs`, `bvecs`, `ivecs`, `csv`).
    pub fn parse(s: &str) -> Option<VecFormat> {
        Some(match s.to_ascii_lowercase().as_str() {
            "npy" => VecFormat::Npy,
            "fvecs" => VecFormat::Fvecs,
            "bvecs" => VecFormat::Bvecs,
            "ivecs" => VecFormat::Ivecs,
            "csv" => VecFormat::Csv,
            _ => return None,
        })
    }

    /// The format implied by a path's extension.
    pub fn from_path(path: &Path) -> Option<VecFormat> {
        path.extension().and_then(|e| e.to_str()).and_then(VecFormat::parse)
    }

    /// The format that `head`, the first bytes of a stream, announces: `.npy` by its magic
    /// (`\x93NUMPY`). The other formats have no magic (a texmex file starts with a dimension,
    /// CSV with digits), so they are not guessed.
    pub fn sniff(head: &[u8]) -> Option<VecFormat> {
        head.starts_with(npy::MAGIC).then_some(VecFormat::Npy)
    }

    /// Decide the format of `path`: an explicit `hint` wins, then the extension. Standard input
    /// (`-`) without a hint is decided by [`VecFormat::sniff`] once it is read
    /// ([`VectorFile::open`]); here it is an error.
    pub fn resolve(path: &Path, hint: Option<VecFormat>) -> Result<VecFormat> {
        if let Some(h) = hint {
            return Ok(h);
        }
        if path.as_os_str() == "-" {
            return Err(Error::invalid(
                "reading vectors from stdin needs --input-format npy|fvecs|bvecs|ivecs|csv (only .npy is recognised by itself)",
            ));
        }
        VecFormat::from_path(path).ok_or_else(|| {
            Error::invalid(format!(
                "{}: unknown vector file extension (expected .npy, .fvecs, .bvecs, .ivecs or .csv; or pass --input-format)",
                path.display()
            ))
        })
    }
}

/// Element type stored in a file, converted to f32 on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F16,
    F32,
    F64,
    U8,
    I8,
    I32,
    I64,
}

impl Elem {
    pub(crate) fn size(self) -> usize {
        match self {
            Elem::U8 | Elem::I8 => 1,
            Elem::F16 => 2,
            Elem::F32 | Elem::I32 => 4,
            Elem::F64 | Elem::I64 => 8,
        }
    }

    /// Whether decoded values can be NaN or infinite (float types; integers never are).
    pub(crate) fn may_be_nonfinite(self) -> bool {
        matches!(self, Elem::F16 | Elem::F32 | Elem::F64)
    }

    /// Decode `src` (little-endian elements) and append them to `out` as f32.
    pub(crate) fn extend_f32(self, src: &[u8], out: &mut Vec<f32>) {
        match self {
            Elem::F32 => out.extend(src.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Elem::U8 => out.extend(src.iter().map(|&b| b as f32)),
            Elem::I8 => out.extend(src.iter().map(|&b| b as i8 as f32)),
            Elem::F16 => out.extend(src.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
            Elem::F64 => out.extend(
                src.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("invariant: 8-byte chunk")) as f32),
            ),
            Elem::I32 => out.extend(src.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)),
            Elem::I64 => out.extend(
                src.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("invariant: 8-byte chunk")) as f32),
            ),
        }
    }

    /// Decode `src` as integers (ids, ground truth).
    pub(crate) fn extend_i64(self, src: &[u8], out: &mut Vec<i64>) -> bool {
        match self {
            Elem::I32 => out.extend(src.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)),
            Elem::I64 => out.extend(
                src.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("invariant: 8-byte chunk"))),
            ),
            Elem::U8 => out.extend(src.iter().map(|&b| b as i64)),
            Elem::I8 => out.extend(src.iter().map(|&b| b as i8 as i64)),
            _ => return false,
        }
        true
    }
}

/// How rows are laid out in the source bytes.
#[derive(Debug)]
enum Layout {
    /// Fixed-size records starting at `offset`, each `header` bytes (the texmex dimension
    /// prefix, 0 for npy) followed by `dim` elements.
    Records { offset: usize, header: usize, elem: Elem },
    /// Already decoded rows (CSV).
    Decoded(Vec<f32>),
}

/// One batch of consecutive rows, decoded to f32: `rows × d`, row-major.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Index of the first row in the file.
    pub start: usize,
    /// Number of rows.
    pub rows: usize,
    /// `rows × d` values.
    pub data: Vec<f32>,
}

/// An opened vector file: `len` rows of dimension `dim`, readable in batches without loading
/// the whole file.
pub struct VectorFile {
    path: PathBuf,
    format: VecFormat,
    src: Source,
    layout: Layout,
    dim: usize,
    len: usize,
    ids: Option<Vec<i64>>,
    keys: Option<Vec<String>>,
    meta: Option<MetaCells>,
}

impl VectorFile {
    /// Open `path` (or `-` for stdin) in format `hint`, or the one its extension names; stdin
    /// without a hint must be `.npy`, recognised by its magic bytes.
    ///
    /// Checks the whole structure up front: texmex files must be a whole number of records of
    /// the first record's dimension; `.npy` must be 2-D (or 1-D: one row), C order, of a
    /// supported dtype. Errors name the file and, for texmex files, the record.
    pub fn open(path: &Path, hint: Option<VecFormat>, csv: &CsvOptions) -> Result<VectorFile> {
        let stdin_unknown = hint.is_none() && path.as_os_str() == "-";
        let (format, src) = if stdin_unknown {
            let src = mmap::open(path)?;
            let head = src.read(0..src.len())?;
            (VecFormat::sniff(&head).map_or_else(|| VecFormat::resolve(path, None), Ok)?, src)
        } else {
            let format = VecFormat::resolve(path, hint)?;
            (format, mmap::open(path)?)
        };
        let shown = display_path(path);
        let mut meta = None;
        // The layout is decided from the first bytes and the size: an object is not read whole
        // (a local file is mapped, so all of it is "read" for free).
        let len = src.len();
        let mut head = src.read(0..if src.is_remote() { len.min(HEAD_BYTES) } else { len })?;
        if format == VecFormat::Npy && src.is_remote() {
            if let Some(need) = npy::header_len(&head).filter(|&n| n > head.len() && n <= len) {
                head = src.read(0..need)?;
            }
        }
        let (layout, dim, len, id_cells) = match format {
            VecFormat::Fvecs => vecs::layout(&shown, &head, len, Elem::F32).map(|(l, d, n)| (l, d, n, None))?,
            VecFormat::Bvecs => vecs::layout(&shown, &head, len, Elem::U8).map(|(l, d, n)| (l, d, n, None))?,
            VecFormat::Ivecs => vecs::layout(&shown, &head, len, Elem::I32).map(|(l, d, n)| (l, d, n, None))?,
            VecFormat::Npy => npy::layout(&shown, &head, len).map(|(l, d, n)| (l, d, n, None))?,
            VecFormat::Csv => {
                let parsed = csvfile::parse(&shown, &src.read(0..len)?, csv)?;
                meta = parsed.meta;
                (Layout::Decoded(parsed.data), parsed.dim, parsed.rows, parsed.ids)
            }
        };
        // An id column of plain integers keeps integer ids; anything else is string ids.
        let ints: Option<Option<Vec<i64>>> = id_cells
            .as_ref()
            .map(|c| c.iter().map(|s| s.parse::<i64>().ok().filter(|v| v.to_string() == *s)).collect());
        let (ids, keys) = match ints {
            None => (None, None),
            Some(Some(v)) => (Some(v), None),
            Some(None) => (None, id_cells),
        };
        drop(head);
        Ok(VectorFile { path: shown, format, src, layout, dim, len, ids, keys, meta })
    }

    /// The path as given (`<stdin>` for `-`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's format.
    pub fn format(&self) -> VecFormat {
        self.format
    }

    /// Vector dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors (rows).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the file holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Integer ids read from a CSV id column, if the file had one of plain integers.
    pub fn ids(&self) -> Option<&[i64]> {
        self.ids.as_deref()
    }

    /// String ids read from a CSV id column whose cells are not all plain integers.
    pub fn keys(&self) -> Option<&[String]> {
        self.keys.as_deref()
    }

    /// The cells of a CSV file's metadata columns (`CsvOptions::metadata_columns`).
    pub fn metadata_cells(&self) -> Option<&MetaCells> {
        self.meta.as_ref()
    }

    /// Decode rows `start .. start + count` (clamped to `len`) into `out` (cleared first) as
    /// `count × d` f32. Fails on a texmex record whose dimension header differs, and on NaN or
    /// infinite components (both naming file and record).
    pub fn read_rows_into(&self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<usize> {
        let end = (start + count).min(self.len);
        let count = end.saturating_sub(start);
        out.clear();
        out.reserve(count * self.dim);
        match &self.layout {
            Layout::Decoded(v) => {
                out.extend_from_slice(&v[start * self.dim..end * self.dim]);
                if let Some(pos) = first_out_of_range(out) {
                    return Err(self.out_of_range(start, pos, out[pos]));
                }
            }
            Layout::Records { offset, header, elem } => {
                let rec = header + self.dim * elem.size();
                let base = offset + start * rec;
                if count == 0 {
                    return Ok(count);
                }
                let bytes = self.src.read(base..base + count * rec)?;
                self.decode_records(start, &bytes, out)?;
            }
        }
        Ok(count)
    }

    /// Rows `rows` are what the caller reads next, front to back (a task's slice): an object
    /// in object storage fetches nothing outside them. Nothing to do for local files.
    pub fn advise_rows(&self, rows: Range<usize>) {
        if let Layout::Records { offset, header, elem } = &self.layout {
            let rec = header + self.dim * elem.size();
            let end = rows.end.min(self.len);
            self.src.advise(offset + rows.start.min(end) * rec..offset + end * rec);
        }
    }

    /// Rows `rows` (sorted, distinct) appended to `out` (cleared first) in that order, as
    /// `rows.len() × d` f32. Runs of consecutive rows are read together, and an object reads
    /// all runs in one call ([`mmap::Source::read_many`]), so a sample costs a few requests,
    /// not one per row.
    pub fn read_rows_at(&self, rows: &[usize], out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        let mut runs: Vec<Range<usize>> = Vec::new();
        for &r in rows {
            match runs.last_mut() {
                Some(run) if run.end == r => run.end += 1,
                _ => runs.push(r..r + 1),
            }
        }
        let mut buf = Vec::new();
        match &self.layout {
            Layout::Decoded(_) => {
                for run in runs {
                    self.read_rows_into(run.start, run.len(), &mut buf)?;
                    out.extend_from_slice(&buf);
                }
            }
            Layout::Records { offset, header, elem } => {
                let rec = header + self.dim * elem.size();
                let ranges: Vec<Range<usize>> =
                    runs.iter().map(|r| offset + r.start * rec..offset + r.end * rec).collect();
                for (run, bytes) in runs.iter().zip(self.src.read_many(&ranges)?) {
                    self.decode_records(run.start, &bytes, &mut buf)?;
                    out.extend_from_slice(&buf);
                }
            }
        }
        Ok(())
    }

    /// Decode whole records `bytes`, the first being row `start`, into `out` (cleared first),
    /// checking texmex dimension headers and NaN/inf.
    fn decode_records(&self, start: usize, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
        let Layout::Records { header, elem, .. } = &self.layout else {
            return Err(Error::invalid("invariant: decode_records on decoded rows"));
        };
        let (header, elem) = (*header, *elem);
        let rec = header + self.dim * elem.size();
        out.clear();
        out.reserve(bytes.len() / rec.max(1) * self.dim);
        if header > 0 {
            // Every record's dimension header, in one tight pass before decoding.
            let want = (self.dim as i32).to_le_bytes();
            if let Some(i) = bytes.chunks_exact(rec).position(|r| r[..4] != want) {
                vecs::check_header(&self.path, &bytes[i * rec..(i + 1) * rec], self.dim, start + i)?;
            }
        }
        // Decode blocks of whole rows (about 16 KiB of f32) and check each block for
        // NaN/inf while it is still in L1, instead of a second pass over the batch.
        let block_rows = (DECODE_BLOCK / (4 * self.dim).max(1)).max(1);
        for (b, block) in bytes.chunks(block_rows * rec).enumerate() {
            let from = out.len();
            if header == 0 {
                elem.extend_f32(block, out);
            } else {
                for r in block.chunks_exact(rec) {
                    elem.extend_f32(&r[header..], out);
                }
            }
            if elem.may_be_nonfinite() {
                if let Some(pos) = first_out_of_range(&out[from..]) {
                    return Err(self.out_of_range(start + b * block_rows, pos, out[from + pos]));
                }
            }
        }
        Ok(())
    }

    /// The error for a NaN/inf or too large `value` at position `pos` of rows decoded from row `first`.
    fn out_of_range(&self, first: usize, pos: usize, value: f32) -> Error {
        Error::invalid(format!(
            "{}: record {} component {} is {} ({})",
            self.path.display(),
            first + pos / self.dim.max(1),
            pos % self.dim.max(1),
            value,
            out_of_range_reason(value)
        ))
    }

    /// Rows `start .. start + count` as a new [`Batch`].
    pub fn read_rows(&self, start: usize, count: usize) -> Result<Batch> {
        let mut data = Vec::new();
        let rows = self.read_rows_into(start, count, &mut data)?;
        Ok(Batch { start, rows, data })
    }

    /// All rows, `len × d` f32. Only for inputs known to be small (queries, samples).
    pub fn read_all(&self) -> Result<Vec<f32>> {
        Ok(self.read_rows(0, self.len)?.data)
    }

    /// Iterate over the file in batches of at most `batch` rows.
    pub fn batches(&self, batch: usize) -> Batches<'_> {
        Batches { file: self, next: 0, batch: batch.max(1) }
    }

    /// A deterministic sample of `n` distinct rows (all rows when `n >= len`), in file order:
    /// `n × d` f32. Rows are chosen by a seeded partial Fisher–Yates shuffle, so the same file,
    /// `n` and `seed` always give the same sample.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        if n >= self.len {
            return self.read_all();
        }
        let mut rows = sample_indices(self.len, n, seed);
        rows.sort_unstable();
        let mut out = Vec::with_capacity(n * self.dim);
        self.read_rows_at(&rows, &mut out)?;
        Ok(out)
    }

    /// Read the file as an integer matrix (`len × d`): ground truth `.ivecs`, id `.npy`
    /// (int32/int64). Fails for float data.
    pub fn read_int_matrix(&self) -> Result<Vec<i64>> {
        match &self.layout {
            Layout::Records { offset, header, elem } => {
                let rec = header + self.dim * elem.size();
                let mut out = Vec::with_capacity(self.len * self.dim);
                let bytes = self.src.read(*offset..offset + self.len * rec)?;
                for (i, r) in bytes.chunks_exact(rec).enumerate() {
                    if *header > 0 {
                        vecs::check_header(&self.path, r, self.dim, i)?;
                    }
                    if !elem.extend_i64(&r[*header..], &mut out) {
                        return Err(Error::invalid(format!(
                            "{}: holds floating-point values, expected integers (ids)",
                            self.path.display()
                        )));
                    }
                }
                Ok(out)
            }
            Layout::Decoded(v) => v
                .iter()
                .map(|&x| {
                    if x.fract() == 0.0 {
                        Ok(x as i64)
                    } else {
                        Err(Error::invalid(format!("{}: value {x} is not an integer id", self.path.display())))
                    }
                })
                .collect(),
        }
    }
}

/// Bytes of an object read to decide its layout: a `.npy` header (longer ones are read in
/// full, [`npy::header_len`]) or the first texmex record.
const HEAD_BYTES: usize = 64 << 10;

/// Bytes of f32 output decoded (and checked for NaN/inf) at a time by `read_rows_into`.
const DECODE_BLOCK: usize = 16 << 10;

/// The largest accepted magnitude of a vector component: `|x| < 2^50` (about 1.1e15).
///
/// FAISS computes squared L2 distances and k-means in f32 without overflow checks: with
/// components near 1e19 a distance overflows to infinity and PQ training crashes (SIGBUS,
/// SIGSEGV) or never ends (issue 10). Below 2^50, `d × (2·2^50)^2 ≤ 2^118` stays finite for
/// every `d ≤ 65,536`, so every input that reaches FAISS (files, wire requests) is checked
/// against this bound together with NaN/inf.
pub const MAX_ABS_COMPONENT: f32 = (1u64 << 50) as f32;

/// `MAX_ABS_COMPONENT`'s bit pattern: for a non-negative f32, bits compare like values, and
/// NaN/inf patterns are above every finite one.
const MAX_ABS_BITS: u32 = 0x5880_0000;

/// Position of the first component of `v` that is NaN, infinite or of magnitude at least
/// [`MAX_ABS_COMPONENT`]. Scans blocks with a branch-free integer test that the compiler
/// vectorizes (sign bit cleared, the bit pattern orders magnitudes), and only locates the
/// value inside a block that has one.
pub(crate) fn first_out_of_range(v: &[f32]) -> Option<usize> {
    const BLOCK: usize = 256;
    for (b, block) in v.chunks(BLOCK).enumerate() {
        let top = block.iter().fold(0u32, |acc, x| acc.max(x.to_bits() & 0x7fff_ffff));
        if top >= MAX_ABS_BITS {
            return block.iter().position(|x| (x.to_bits() & 0x7fff_ffff) >= MAX_ABS_BITS).map(|p| b * BLOCK + p);
        }
    }
    None
}

/// Why component `x` was refused by [`first_out_of_range`].
pub(crate) fn out_of_range_reason(x: f32) -> &'static str {
    if x.is_finite() {
        "too large: |x| must be below 2^50 ≈ 1.1e15"
    } else {
        "not finite"
    }
}

/// Iterator over a [`VectorFile`] in batches.
pub struct Batches<'a> {
    file: &'a VectorFile,
    next: usize,
    batch: usize,
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.file.len {
            return None;
        }
        let start = self.next;
        self.next += self.batch;
        Some(self.file.read_rows(start, self.batch))
    }
}

/// Read a list of ids (one per vector) from `.npy` (int32/int64, 1-D or n×1), `.ivecs` (n×1)
/// or text/CSV (one integer per line).
pub fn read_ids(path: &Path) -> Result<Vec<i64>> {
    let fmt = VecFormat::from_path(path).unwrap_or(VecFormat::Csv);
    let csv = CsvOptions::default();
    let f = VectorFile::open(path, Some(fmt), &csv)?;
    if f.dim() != 1 && !f.is_empty() {
        return Err(Error::invalid(format!(
            "{}: ids file must hold one id per row, found {} columns",
            path.display(),
            f.dim()
        )));
    }
    let ids = f.read_int_matrix()?;
    if let Some(neg) = ids.iter().position(|&i| i < 0) {
        return Err(Error::invalid(format!("{}: id at row {neg} is negative ({})", path.display(), ids[neg])));
    }
    Ok(ids)
}

/// `n` distinct indices from `0..len`, chosen by a seeded SplitMix64-driven partial
/// Fisher–Yates shuffle (deterministic for a given seed).
pub fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        // SplitMix64 (Steele, Lea, Flood 2014).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let n = n.min(len);
    let mut swapped: std::collections::HashMap<usize, usize> = std::collections::HashMap::with_capacity(n * 2);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let j = i + (next() % (len - i) as u64) as usize;
        let vj = *swapped.get(&j).unwrap_or(&j);
        let vi = *swapped.get(&i).unwrap_or(&i);
        swapped.insert(j, vi);
        out.push(vj);
    }
    out
}

/// Check that `got` equals the expected dimension `d`, naming `what`.
pub fn check_dim(what: &Path, got: usize, d: usize) -> Result<()> {
    if got != d {
        return Err(Error::new(
            ErrorKind::DimensionMismatch,
            format!("{}: vectors have d={got}, the index expects d={d}", what.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_deterministic_and_distinct() {
        let a = sample_indices(1000, 100, 7);
        let b = sample_indices(1000, 100, 7);
        assert_eq!(a, b);
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 100);
        assert!(s.iter().all(|&x| x < 1000));
        assert_ne!(a, sample_indices(1000, 100, 8));
    }

    #[test]
    fn first_out_of_range_finds_the_first() {
        let mut v = vec![1.0f32; 1000];
        assert_eq!(first_out_of_range(&v), None);
        v[700] = f32::NEG_INFINITY;
        v[900] = f32::NAN;
        assert_eq!(first_out_of_range(&v), Some(700));
        v[3] = f32::NAN;
        assert_eq!(first_out_of_range(&v), Some(3));
        assert_eq!(first_out_of_range(&[1.1e15, -1.1e15, f32::MIN_POSITIVE, 0.0, -0.0]), None);
        assert_eq!(first_out_of_range(&[1.0, -1.2e15]), Some(1));
        assert_eq!(first_out_of_range(&[1.0, 2.0, f32::MAX]), Some(2));
        assert_eq!(first_out_of_range(&[MAX_ABS_COMPONENT]), Some(0));
    }

    #[test]
    fn elem_conversions() {
        let mut out = Vec::new();
        Elem::I8.extend_f32(&[0xff, 2], &mut out);
        assert_eq!(out, vec![-1.0, 2.0]);
        out.clear();
        Elem::F16.extend_f32(&half::f16::from_f32(1.5).to_le_bytes(), &mut out);
        assert_eq!(out, vec![1.5]);
    }
}
