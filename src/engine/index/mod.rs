//! The FAISS wrapper: an opened or new index together with its sidecar facts.
//!
//! [`Index`] owns one FAISS index. Reading (search, range search, reconstruct, info) needs
//! `&Index`; building, adding and removing need `&mut Index` — the read/write split that lets
//! the server share one index between concurrent searches. Cosine normalization and dimension
//! checks happen here, so every caller (CLI, server, bench) gets them. `unsafe` lives only in
//! `ffi.rs`.

pub mod check;
pub mod factory;
pub mod ffi;
pub mod meta;
pub mod probe;
pub mod spec;
pub mod storage;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::io::atomic;
pub use ffi::RawInfo;
use ffi::{Param, RawBinaryIndex, RawIndex};
pub use meta::{IdMode, IndexMeta, InputInfo};
use serde::Serialize;
pub use spec::{IndexSpec, Metric};
use std::path::{Path, PathBuf};
pub use storage::{FileKind, MemStats, Storage};

/// Per-search parameters. `None` keeps the index's own setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchParams {
    /// Number of neighbours per query (`k` ≥ 1).
    pub k: usize,
    /// IVF: number of inverted lists probed.
    pub nprobe: Option<usize>,
    /// HNSW: size of the dynamic candidate list (`efSearch`).
    pub ef_search: Option<usize>,
}

/// k-NN results: `nq × k` row-major ids and distances. Missing neighbours (k > ntotal) are
/// id −1 with FAISS's padding distance (f32::MAX for L2, −f32::MAX for inner product).
/// Distances are squared L2 for `l2`, inner products for `ip` and `cosine`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Neighbors {
    /// Number of queries.
    pub nq: usize,
    /// Neighbours per query.
    pub k: usize,
    /// `nq × k` ids.
    pub ids: Vec<i64>,
    /// `nq × k` distances.
    pub dists: Vec<f32>,
}

impl Neighbors {
    /// Row `q`: (ids, distances).
    pub fn row(&self, q: usize) -> (&[i64], &[f32]) {
        (&self.ids[q * self.k..(q + 1) * self.k], &self.dists[q * self.k..(q + 1) * self.k])
    }
}

/// Range-search results: query `i`'s hits are `lims[i]..lims[i+1]` of `ids`/`dists`, sorted
/// by distance (closest first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeHits {
    /// `nq + 1` offsets.
    pub lims: Vec<usize>,
    /// Hit ids.
    pub ids: Vec<i64>,
    /// Hit distances.
    pub dists: Vec<f32>,
}

impl RangeHits {
    /// Hits as FAISS returns them (unordered within a query), each query's sorted closest
    /// first: ascending distance, or descending similarity when `descending`.
    fn sorted(lims: Vec<usize>, mut ids: Vec<i64>, mut dists: Vec<f32>, descending: bool) -> RangeHits {
        for w in lims.windows(2) {
            let (a, b) = (w[0], w[1]);
            let mut order: Vec<usize> = (a..b).collect();
            order.sort_by(|&i, &j| {
                let o = dists[i].total_cmp(&dists[j]);
                if descending {
                    o.reverse()
                } else {
                    o
                }
            });
            let sid: Vec<i64> = order.iter().map(|&i| ids[i]).collect();
            let sd: Vec<f32> = order.iter().map(|&i| dists[i]).collect();
            ids[a..b].copy_from_slice(&sid);
            dists[a..b].copy_from_slice(&sd);
        }
        RangeHits { lims, ids, dists }
    }

    /// Number of queries.
    pub fn nq(&self) -> usize {
        self.lims.len().saturating_sub(1)
    }
    /// Query `q`'s hits: (ids, distances).
    pub fn row(&self, q: usize) -> (&[i64], &[f32]) {
        let (a, b) = (self.lims[q], self.lims[q + 1]);
        (&self.ids[a..b], &self.dists[a..b])
    }
}

/// Vectors in the form an index takes: float rows (`n × d` f32, row-major) for
/// `faiss::Index`, packed bit codes (`n × d/8` bytes, bit j in byte j/8 at bit j%8, least
/// significant first) for binary indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    /// `n × d` f32, row-major.
    Float(Vec<f32>),
    /// `n × d/8` bytes.
    Codes(Vec<u8>),
}

impl Rows {
    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        match self {
            Rows::Float(v) => v.is_empty(),
            Rows::Codes(c) => c.is_empty(),
        }
    }
}

/// Packed binary codes (`n × d/8` bytes) from one value per bit (`n × d`, `d` a multiple
/// of 8): `> 0.5` is 1, as FAISSx reads bits; bit j goes to byte j/8 at bit position j%8,
/// least significant first (numpy `packbits(..., bitorder="little")`).
pub fn pack_bits(bits: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len() / 8];
    for (j, _) in bits.iter().enumerate().filter(|(_, &b)| b > 0.5) {
        out[j / 8] |= 1 << (j % 8);
    }
    out
}

/// Facts about an index for `info` and the server's status replies.
#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    /// Path of the index file, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Outermost FAISS class (`IndexIDMap2`, `IndexIVFFlat`, …).
    pub index_type: String,
    /// Innermost FAISS class after wrappers.
    pub inner_type: String,
    /// Dimension.
    pub d: usize,
    /// Number of vectors.
    pub ntotal: usize,
    /// Metric (`l2`, `ip`, `cosine`).
    pub metric: Metric,
    /// Training done.
    pub is_trained: bool,
    /// IVF lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlist: Option<usize>,
    /// IVF lists probed per query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// HNSW `M`.
    #[serde(rename = "M", skip_serializing_if = "Option::is_none")]
    pub hnsw_m: Option<usize>,
    /// HNSW `efSearch`.
    #[serde(rename = "efSearch", skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    /// HNSW `efConstruction`.
    #[serde(rename = "efConstruction", skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    /// Whether the index stores explicit ids (IDMap, IDMap2, or IVF built with ids).
    pub explicit_ids: bool,
    /// File size in bytes (0 if not on disk).
    pub size_bytes: u64,
    /// How this index is held: loaded, mapped, or with on-disk lists.
    pub storage: Storage,
    /// What the file header says (type fourcc, IVF, on-disk lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileKind>,
    /// FAISS read flags `--mmap` uses for this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmap_flags: Option<String>,
    /// Size of the `.ivfdata` file of on-disk lists, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivfdata_bytes: Option<u64>,
    /// The sidecar, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<IndexMeta>,
}

/// How to open an index file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Memory-map the index instead of loading it (read-only; flags chosen by index type).
    pub mmap: bool,
    /// Read the file once sequentially first, so a cold mapped index does not fault page by
    /// page in random order.
    pub warm: bool,
}

/// The FAISS object behind an [`Index`]: a float index (`faiss::Index`, vectors of `d`
/// f32) or a binary one (`faiss::IndexBinary`, codes of `d` bits packed in `d / 8` bytes,
/// Hamming distances). Binary indices come from the server's `BINARY_*` index types.
enum Raw {
    Float(RawIndex),
    Binary(RawBinaryIndex),
}

impl Raw {
    fn d(&self) -> usize {
        match self {
            Raw::Float(r) => r.d(),
            Raw::Binary(r) => r.d(),
        }
    }
    fn ntotal(&self) -> usize {
        match self {
            Raw::Float(r) => r.ntotal(),
            Raw::Binary(r) => r.ntotal(),
        }
    }
    fn is_trained(&self) -> bool {
        match self {
            Raw::Float(r) => r.is_trained(),
            Raw::Binary(r) => r.is_trained(),
        }
    }
    fn describe(&self) -> Result<RawInfo> {
        match self {
            Raw::Float(r) => r.describe(),
            Raw::Binary(r) => r.describe(),
        }
    }
    fn write(&self, path: &Path) -> Result<()> {
        match self {
            Raw::Float(r) => r.write(path),
            Raw::Binary(r) => r.write(path),
        }
    }
    fn try_clone(&self) -> Result<Raw> {
        Ok(match self {
            Raw::Float(r) => Raw::Float(r.try_clone()?),
            Raw::Binary(r) => Raw::Binary(r.try_clone()?),
        })
    }
    fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        match self {
            Raw::Float(r) => r.remove_ids(ids),
            Raw::Binary(r) => r.remove_ids(ids),
        }
    }
    fn reset(&mut self) -> Result<()> {
        match self {
            Raw::Float(r) => r.reset(),
            Raw::Binary(r) => r.reset(),
        }
    }
    fn set_param(&mut self, p: Param, v: usize) -> Result<bool> {
        match self {
            Raw::Float(r) => r.set_param(p, v),
            Raw::Binary(r) => r.set_param(p, v),
        }
    }
}

/// An index and its sidecar facts.
pub struct Index {
    raw: Raw,
    meta: IndexMeta,
    has_sidecar: bool,
    storage: Storage,
}

impl Index {
    /// Create an empty index for `spec`. With `explicit_ids`, the index must accept
    /// `add_with_ids`: IVF indices do natively, others are wrapped in `IDMap2` (which also
    /// keeps `reconstruct` by id working).
    ///
    /// Errors: `InvalidInput` naming the factory string when FAISS cannot parse it.
    pub fn create(spec: &IndexSpec, explicit_ids: bool) -> Result<Index> {
        spec.validate()?;
        let mut raw = RawIndex::factory(spec.dim, &spec.factory, spec.metric.faiss_inner_product())?;
        let mut factory = spec.factory.clone();
        if explicit_ids {
            let info = raw.describe()?;
            let native = info.idmap > 0 || info.inner_name.starts_with("IndexIVF");
            if !native {
                factory = format!("IDMap2,{}", spec.factory);
                raw = RawIndex::factory(spec.dim, &factory, spec.metric.faiss_inner_product())?;
            }
        }
        let mut meta = IndexMeta::new(spec.dim, spec.metric, &factory);
        if explicit_ids {
            meta.ids = IdMode::Explicit;
        }
        Ok(Index { raw: Raw::Float(raw), meta, has_sidecar: true, storage: Storage::Loaded })
    }

    /// Create an empty binary index of `d` bits (a positive multiple of 8) with FAISS's
    /// binary factory (`BFlat`, `BIVF<nlist>`, `BHNSW<M>`, `BHash<b>`, …; see
    /// [`RawBinaryIndex::factory`]). Its vectors go through the `*_codes` methods.
    ///
    /// Errors: `InvalidInput` for a bad `d` or factory string.
    pub fn create_binary(d: usize, factory: &str) -> Result<Index> {
        factory::check_safe(factory)?;
        let raw = RawBinaryIndex::factory(d, factory)?;
        let meta = IndexMeta::new(d, Metric::Hamming, factory);
        Ok(Index { raw: Raw::Binary(raw), meta, has_sidecar: true, storage: Storage::Loaded })
    }

    /// Open an index file written by faissx or by FAISS itself (Python `faiss.write_index`),
    /// loading it into memory (indices with on-disk lists are always opened read-only).
    /// Without a sidecar the metric is taken from the index (l2 or ip) and nothing is
    /// normalized.
    pub fn open(path: &Path) -> Result<Index> {
        Index::open_with(path, &OpenOptions::default())
    }

    /// [`Index::open_with`] for the commands that work on float vectors (search, add,
    /// merge, split, bench).
    ///
    /// Errors: `InvalidInput` (exit status 2) naming `path` when it holds a binary (Hamming)
    /// index, which only `faissx serve` handles.
    pub fn open_float(path: &Path, opts: &OpenOptions) -> Result<Index> {
        let ix = Index::open_with(path, opts)?;
        if ix.is_binary() {
            return Err(Error::invalid(format!(
                "{}: a binary (Hamming) index: this command works on float vectors; binary indices are served by faissx serve",
                path.display()
            )));
        }
        Ok(ix)
    }

    /// Open an index file, loaded or memory-mapped per `opts` (see [`storage`]). A mapped
    /// index, or one with on-disk lists, is read-only: mutations return `Unsupported`.
    ///
    /// FAISS's reader trusts its input (a damaged file can crash or hang the process), so
    /// before FAISS reads the file: when the sidecar records a checksum (every index faissx
    /// wrote), the file must match it ([`IndexMeta::verify`]); otherwise (e.g. written by
    /// Python) a child process opens it first ([`probe::check`]), and a crash, hang or error
    /// there becomes an error here.
    ///
    /// Mapped opens are verified too: a damaged mapped file crashes FAISS just the same. The
    /// cost is one sequential read of the file (it doubles as `--warm`): on a 200 MB Flat index
    /// with a warm page cache, `faissx info --mmap` went from 5 ms to 34 ms, loaded from 141 ms
    /// to 166 ms; on a cold cache it is a read of the whole file, which a mapped open otherwise
    /// defers to the queries that touch it.
    ///
    /// Errors: `Format` (exit status 2) naming `path` for a checksum mismatch or a file the
    /// child process could not open safely; `NotFound`/`InvalidInput` for a missing file or
    /// a directory.
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Index> {
        match std::fs::metadata(path) {
            Err(e) => return Err(Error::io(path, e)),
            Ok(m) if m.is_dir() => {
                return Err(Error::invalid(format!("{}: is a directory, not an index file", path.display())))
            }
            Ok(_) => {}
        }
        let sidecar = IndexMeta::load(path)?;
        let verified = match &sidecar {
            Some(m) => m.verify(path)?,
            None => false,
        };
        if !verified {
            probe::check(path, opts.mmap)?;
        }
        let mut kind = storage::probe(path)?;
        if kind.fourcc.starts_with("IB") {
            // Binary indices (IBxF, IBwF, IBHf, IBMp, …) are always loaded.
            let raw = Raw::Binary(RawBinaryIndex::read(path, 0)?);
            return Index::with_sidecar(path, raw, Storage::Loaded, sidecar);
        }
        let (mut flags, mut storage, _) = storage::read_flags(&kind, opts.mmap);
        if opts.warm && storage != Storage::Loaded {
            if !verified {
                storage::warm(path)?;
            }
            let data = storage::ivfdata_path(path);
            if storage == Storage::OnDisk && data.exists() {
                storage::warm(&data)?;
            }
        }
        let mut raw = RawIndex::read(path, flags)?;
        // IO_FLAG_MMAP itself turns IVF lists into OnDiskInvertedLists over the index file;
        // only an index read without it can reveal lists that live in another file.
        if storage == Storage::Loaded && raw.is_ondisk() {
            // On-disk lists whose data file is not named <index>.ivfdata: read again the way
            // such indices must be read (mapped with IO_FLAG_MMAP they crash on search).
            kind.on_disk = true;
            (flags, storage, _) = storage::read_flags(&kind, opts.mmap);
            drop(raw);
            raw = RawIndex::read(path, flags)?;
        }
        if raw.is_ondisk() {
            // FAISS's 32 prefetch threads cost ~1.1 ms per query; the page cache does better.
            raw.ondisk_configure(None, Some(0))?;
        }
        Index::with_sidecar(path, Raw::Float(raw), storage, sidecar)
    }

    /// The opened `raw` with its `sidecar` (read from beside `path`), or facts read off the
    /// index.
    fn with_sidecar(path: &Path, raw: Raw, storage: Storage, sidecar: Option<IndexMeta>) -> Result<Index> {
        let has_sidecar = sidecar.is_some();
        let meta = match sidecar {
            Some(m) => {
                if m.d != raw.d() {
                    return Err(Error::format(
                        &IndexMeta::path_for(path),
                        format!("sidecar says d={} but the index has d={}", m.d, raw.d()),
                    ));
                }
                m
            }
            None => {
                let metric = match &raw {
                    Raw::Binary(_) => Metric::Hamming,
                    Raw::Float(r) if r.is_inner_product() => Metric::Ip,
                    Raw::Float(_) => Metric::L2,
                };
                let mut m = IndexMeta::new(raw.d(), metric, "");
                m.ntotal = raw.ntotal();
                if raw.describe()?.idmap > 0 {
                    m.ids = IdMode::Explicit;
                }
                m
            }
        };
        Ok(Index { raw, meta, has_sidecar, storage })
    }

    /// How the index is held (loaded, mapped, on-disk lists).
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Refuse changes to a mapped or on-disk index before FAISS sees them (FAISS aborts the
    /// process when asked to change read-only mapped data).
    fn writable(&self, what: &str) -> Result<()> {
        match self.storage {
            Storage::Loaded => Ok(()),
            Storage::Mapped => Err(Error::new(
                ErrorKind::Unsupported,
                format!("cannot {what}: the index is memory-mapped (read-only); open it without --mmap to change it"),
            )),
            Storage::OnDisk => Err(Error::new(
                ErrorKind::Unsupported,
                format!("cannot {what}: the index has on-disk inverted lists (read-only); rebuild it to change it"),
            )),
        }
    }

    /// The float index, or `Unsupported` for a binary one (whose vectors are bit codes).
    fn f(&self) -> Result<&RawIndex> {
        match &self.raw {
            Raw::Float(r) => Ok(r),
            Raw::Binary(_) => Err(binary_refusal()),
        }
    }

    fn f_mut(&mut self) -> Result<&mut RawIndex> {
        match &mut self.raw {
            Raw::Float(r) => Ok(r),
            Raw::Binary(_) => Err(binary_refusal()),
        }
    }

    /// The binary index, or `Unsupported` for a float one.
    fn b(&self) -> Result<&RawBinaryIndex> {
        match &self.raw {
            Raw::Binary(r) => Ok(r),
            Raw::Float(_) => {
                Err(Error::new(ErrorKind::Unsupported, "this index holds float vectors, not binary codes"))
            }
        }
    }

    fn b_mut(&mut self) -> Result<&mut RawBinaryIndex> {
        self.b()?;
        match &mut self.raw {
            Raw::Binary(r) => Ok(r),
            Raw::Float(_) => unreachable!("checked above"),
        }
    }

    /// Whether this is a binary (Hamming) index, whose vectors go through the `*_codes`
    /// methods.
    pub fn is_binary(&self) -> bool {
        matches!(self.raw, Raw::Binary(_))
    }

    /// Check that `x` is a whole number of codes of this binary index; returns the count.
    fn codes_of(&self, x: &[u8], what: &str) -> Result<usize> {
        let cs = self.b()?.code_size();
        if !x.len().is_multiple_of(cs) {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!(
                    "{what}: {} bytes is not a whole number of d={} bit codes ({cs} bytes each)",
                    x.len(),
                    self.d()
                ),
            ));
        }
        Ok(x.len() / cs)
    }

    /// Train a binary index on `x` (`n × d/8` bytes; binary IVF trains its coarse quantizer).
    pub fn train_codes(&mut self, x: &[u8]) -> Result<()> {
        let n = self.codes_of(x, "training vectors")?;
        if n == 0 {
            return Err(Error::invalid("training needs at least one vector"));
        }
        self.b_mut()?.train(x)?;
        self.meta.train_size = n;
        Ok(())
    }

    /// Add binary codes `x` (`n × d/8` bytes) with `ids` (`n`) if given; the same checks as
    /// [`Index::add`].
    pub fn add_codes(&mut self, x: &[u8], ids: Option<&[i64]>) -> Result<()> {
        let n = self.codes_of(x, "vectors")?;
        self.check_add(n, ids)?;
        if n == 0 {
            // FAISS's binary HNSW dereferences the first vector even when there is none.
            return Ok(());
        }
        self.b_mut()?.add(x, ids)?;
        if ids.is_some() {
            self.meta.ids = IdMode::Explicit;
        }
        Ok(())
    }

    /// k-NN search of binary `queries` (`nq × d/8` bytes): Hamming distances (as f32),
    /// closest first. `params.nprobe` applies to binary IVF; `ef_search` is not used.
    pub fn search_codes(&self, queries: &[u8], params: &SearchParams) -> Result<Neighbors> {
        if params.k == 0 || params.nprobe == Some(0) {
            return Err(Error::invalid("k and nprobe must be at least 1"));
        }
        let nq = self.codes_of(queries, "queries")?;
        self.searchable()?;
        if nq == 0 {
            return Ok(Neighbors { nq: 0, k: params.k, ids: Vec::new(), dists: Vec::new() });
        }
        let (dists, ids) = self.b()?.search(queries, params.k, params.nprobe)?;
        Ok(Neighbors { nq, k: params.k, ids, dists })
    }

    /// Range search of binary `queries`: every stored code at Hamming distance below
    /// `radius` (FAISS's binary range search is strict), closest first.
    pub fn range_search_codes(&self, queries: &[u8], radius: f32) -> Result<RangeHits> {
        if !radius.is_finite() || radius < 0.0 || radius > i32::MAX as f32 {
            return Err(Error::invalid("radius must be a non-negative Hamming distance"));
        }
        self.codes_of(queries, "queries")?;
        self.searchable()?;
        let (lims, ids, dists) = self.b()?.range_search(queries, radius.ceil() as i32)?;
        Ok(RangeHits::sorted(lims, ids, dists, false))
    }

    /// The code stored under id `key` (`d/8` bytes).
    ///
    /// Errors: `NotFound` for an id that is not stored (FAISS's binary flat storage does not
    /// check); `Unsupported` for hash indices, which cannot reconstruct.
    pub fn reconstruct_codes(&self, key: i64) -> Result<Vec<u8>> {
        let info = self.b()?.describe()?;
        refuse_binary_hash(&info, "reconstruct vectors")?;
        self.check_key(&info, key)?;
        self.b()?.reconstruct(key)
    }

    /// The codes at internal positions `i0..i0+n` (`n × d/8` bytes; binary IVF: of ids
    /// `i0..i0+n`).
    ///
    /// Errors: `Unsupported` for hash indices; `InvalidInput` past `ntotal`.
    pub fn reconstruct_n_codes(&self, i0: usize, n: usize) -> Result<Vec<u8>> {
        let info = self.b()?.describe()?;
        refuse_binary_hash(&info, "reconstruct vectors")?;
        self.check_range(i0, n)?;
        self.b()?.reconstruct_n(i0, n)
    }

    /// How many vectors `x` holds for this index (checking its width).
    pub fn rows_in(&self, x: &Rows) -> Result<usize> {
        match x {
            Rows::Float(v) => self.floats_of(v, "vectors"),
            Rows::Codes(c) => self.codes_of(c, "vectors"),
        }
    }

    /// [`Index::train`] or [`Index::train_codes`], by the form of `x`.
    pub fn train_rows(&mut self, x: &Rows) -> Result<()> {
        match x {
            Rows::Float(v) => self.train(v),
            Rows::Codes(c) => self.train_codes(c),
        }
    }

    /// [`Index::add`] or [`Index::add_codes`], by the form of `x`.
    pub fn add_rows(&mut self, x: &Rows, ids: Option<&[i64]>) -> Result<()> {
        match x {
            Rows::Float(v) => self.add(v, ids),
            Rows::Codes(c) => self.add_codes(c, ids),
        }
    }

    /// [`Index::search`] or [`Index::search_codes`], by the form of `queries`.
    pub fn search_rows(&self, queries: &Rows, params: &SearchParams) -> Result<Neighbors> {
        match queries {
            Rows::Float(v) => self.search(v, params),
            Rows::Codes(c) => self.search_codes(c, params),
        }
    }

    /// [`Index::range_search`] or [`Index::range_search_codes`], by the form of `queries`.
    pub fn range_search_rows(&self, queries: &Rows, radius: f32) -> Result<RangeHits> {
        match queries {
            Rows::Float(v) => self.range_search(v, radius),
            Rows::Codes(c) => self.range_search_codes(c, radius),
        }
    }

    /// The vector stored under id `key`, in this index's form.
    pub fn reconstruct_rows(&self, key: i64) -> Result<Rows> {
        Ok(match &self.raw {
            Raw::Float(_) => Rows::Float(self.reconstruct(key)?),
            Raw::Binary(_) => Rows::Codes(self.reconstruct_codes(key)?),
        })
    }

    /// The vectors at internal positions `i0..i0+n`, in this index's form.
    pub fn reconstruct_n_rows(&self, i0: usize, n: usize) -> Result<Rows> {
        Ok(match &self.raw {
            Raw::Float(_) => Rows::Float(self.reconstruct_n(i0, n)?),
            Raw::Binary(_) => Rows::Codes(self.reconstruct_n_codes(i0, n)?),
        })
    }

    /// Write the index (FAISS's own format) and its sidecar, each atomically (temp file,
    /// fsync, rename). On error nothing under `path` changes. The sidecar records the size and
    /// CRC-32 of the index file, which [`Index::open_with`] checks before FAISS reads it; the
    /// `.ivfdata` file of on-disk inverted lists is not covered.
    ///
    /// The checksum is of the bytes actually written: the temp file is read back after FAISS
    /// closed it, before it is renamed into place. It is still in the page cache: ~25 ms per
    /// 200 MB (measured: `faissx build` of a 200 MB Flat index, 0.44 s before, 0.46 s after).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.meta.ntotal = self.raw.ntotal();
        self.meta.updated_unix = meta::now_unix();
        self.meta.faissx_version = env!("CARGO_PKG_VERSION").to_string();
        let tmp = atomic::tmp_path(path);
        let sum = self.raw.write(&tmp).and_then(|()| meta::Checksum::of_file(&tmp));
        let sum = match sum {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        atomic::commit_tmp(&tmp, path)?;
        self.meta.set_checksum(Some(sum));
        self.meta.save(path)?;
        self.has_sidecar = true;
        Ok(())
    }

    /// The sidecar facts.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Mutable sidecar facts (record inputs, train size).
    pub fn meta_mut(&mut self) -> &mut IndexMeta {
        &mut self.meta
    }

    /// Whether the index was opened with a sidecar (or created by faissx).
    pub fn has_sidecar(&self) -> bool {
        self.has_sidecar
    }

    /// Dimension `d`.
    pub fn d(&self) -> usize {
        self.raw.d()
    }

    /// Number of stored vectors.
    pub fn ntotal(&self) -> usize {
        self.raw.ntotal()
    }

    /// Whether the index is trained (or needs no training).
    pub fn is_trained(&self) -> bool {
        self.raw.is_trained()
    }

    /// Whether the index takes user ids (`add_with_ids`).
    pub fn takes_ids(&self) -> Result<bool> {
        let info = self.raw.describe()?;
        Ok(info.idmap > 0 || info.inner_name.starts_with("IndexIVF") || info.inner_name.starts_with("IndexBinaryIVF"))
    }

    /// Whether the index *requires* ids on add (IDMap wrappers refuse plain `add`).
    pub fn requires_ids(&self) -> Result<bool> {
        Ok(self.raw.describe()?.idmap > 0)
    }

    /// The metric as the user named it.
    pub fn metric(&self) -> Metric {
        self.meta.metric
    }

    /// FAISS class names and parameters.
    pub fn describe(&self) -> Result<RawInfo> {
        self.raw.describe()
    }

    /// Check that `x` is a whole number of float rows of this (float) index; returns the count.
    fn floats_of(&self, x: &[f32], what: &str) -> Result<usize> {
        self.f()?;
        let d = self.d();
        if !x.len().is_multiple_of(d) {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!("{what}: {} values is not a whole number of d={d} vectors", x.len()),
            ));
        }
        Ok(x.len() / d)
    }

    /// `NotTrained` unless the index is trained (searches need it).
    fn searchable(&self) -> Result<()> {
        if !self.raw.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, "index is not trained: nothing can be searched"));
        }
        Ok(())
    }

    /// Check `x` is a whole number of rows of width `d` and copy-normalize it when the metric
    /// is cosine. `what` names the input in errors.
    fn prepare<'a>(&self, x: &'a [f32], what: &str) -> Result<std::borrow::Cow<'a, [f32]>> {
        self.floats_of(x, what)?;
        let d = self.d();
        if let Some(pos) = crate::engine::io::first_out_of_range(x) {
            return Err(Error::invalid(format!(
                "{what}: vector {} component {} is {} ({})",
                pos / d,
                pos % d,
                x[pos],
                crate::engine::io::out_of_range_reason(x[pos])
            )));
        }
        if self.meta.normalize {
            let mut v = x.to_vec();
            ffi::normalize_l2(&mut v, d);
            Ok(std::borrow::Cow::Owned(v))
        } else {
            Ok(std::borrow::Cow::Borrowed(x))
        }
    }

    /// Train on `x` (`n × d`, row-major). A no-op for indices that need no training.
    pub fn train(&mut self, x: &[f32]) -> Result<()> {
        self.writable("train")?;
        let x = self.prepare(x, "training vectors")?;
        if x.is_empty() {
            return Err(Error::invalid("training needs at least one vector"));
        }
        self.f_mut()?.train(&x)?;
        self.meta.train_size = x.len() / self.d();
        Ok(())
    }

    /// Add `x` (`n × d`, row-major), with `ids` (`n`) if given.
    ///
    /// Errors: `NotTrained` for an untrained index, `InvalidInput` when ids are required but
    /// missing, given to an index that cannot store them, or of the wrong count.
    pub fn add(&mut self, x: &[f32], ids: Option<&[i64]>) -> Result<()> {
        self.writable("add vectors")?;
        let x = self.prepare(x, "vectors")?;
        self.check_add(x.len() / self.d(), ids)?;
        if x.is_empty() {
            // Nothing to add: FAISS is not asked (some index types read the first vector
            // regardless).
            return Ok(());
        }
        let raw = self.f_mut()?;
        match ids {
            Some(ids) => raw.add_with_ids(&x, ids)?,
            None => raw.add(&x)?,
        }
        if ids.is_some() {
            self.meta.ids = IdMode::Explicit;
        }
        Ok(())
    }

    /// What every add checks before FAISS sees `n` vectors: trained, ids given exactly when
    /// the index needs them, one per vector.
    fn check_add(&self, n: usize, ids: Option<&[i64]>) -> Result<()> {
        if !self.raw.is_trained() {
            return Err(Error::new(
                ErrorKind::NotTrained,
                "index is not trained: train it first (faissx build trains on a sample of its input)",
            ));
        }
        match ids {
            Some(ids) => {
                check_ids(ids)?;
                if ids.len() != n {
                    return Err(Error::invalid(format!(
                        "{} ids for {n} vectors: give exactly one id per vector",
                        ids.len()
                    )));
                }
                if !self.takes_ids()? {
                    return Err(Error::invalid(
                        "this index does not store ids (not IDMap/IDMap2 or IVF); rebuild it with --ids, or use factory \"IDMap2,<factory>\"",
                    ));
                }
            }
            None => {
                if self.requires_ids()? {
                    return Err(Error::invalid(
                        "this index stores explicit ids (IDMap): pass ids for the new vectors (--ids)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// k-NN search of `queries` (`nq × d`, row-major).
    ///
    /// Errors: `InvalidInput` for `k` = 0; `DimensionMismatch`; `NotTrained`.
    pub fn search(&self, queries: &[f32], params: &SearchParams) -> Result<Neighbors> {
        if params.k == 0 {
            return Err(Error::invalid("-k must be at least 1"));
        }
        if params.nprobe == Some(0) || params.ef_search == Some(0) {
            return Err(Error::invalid("--nprobe and --ef-search must be at least 1"));
        }
        self.searchable()?;
        let q = self.prepare(queries, "queries")?;
        let nq = q.len() / self.d();
        if nq == 0 {
            return Ok(Neighbors { nq: 0, k: params.k, ids: Vec::new(), dists: Vec::new() });
        }
        if self.ntotal() == 0 {
            // What FAISS answers for an empty index (id -1, the heap's neutral distance),
            // without asking it: fast-scan PQ indices crash searching an empty index.
            let worst = if self.f()?.is_inner_product() { -f32::MAX } else { f32::MAX };
            let n = nq.saturating_mul(params.k);
            return Ok(Neighbors { nq, k: params.k, ids: vec![-1; n], dists: vec![worst; n] });
        }
        let (dists, ids) = self.f()?.search(&q, params.k, params.nprobe, params.ef_search)?;
        Ok(Neighbors { nq, k: params.k, ids, dists })
    }

    /// Range search: every stored vector within `radius` of each query (squared L2 for `l2`;
    /// for `ip`/`cosine`, similarity above `radius`). Hits sorted closest first.
    pub fn range_search(&self, queries: &[f32], radius: f32) -> Result<RangeHits> {
        if !radius.is_finite() {
            return Err(Error::invalid("--radius must be a finite number"));
        }
        self.searchable()?;
        let q = self.prepare(queries, "queries")?;
        let raw = self.f()?;
        let (lims, ids, dists) = raw.range_search(&q, radius)?;
        Ok(RangeHits::sorted(lims, ids, dists, raw.is_inner_product()))
    }

    /// Set the index's persistent nprobe (IVF). Errors if the index is not IVF.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        self.set(Param::Nprobe, nprobe, "nprobe", "IVF")
    }

    /// Set the index's persistent efSearch (HNSW). Errors if the index is not HNSW.
    pub fn set_ef_search(&mut self, ef: usize) -> Result<()> {
        self.set(Param::EfSearch, ef, "efSearch", "HNSW")
    }

    /// Set the index's efConstruction (HNSW; affects later adds).
    pub fn set_ef_construction(&mut self, ef: usize) -> Result<()> {
        self.set(Param::EfConstruction, ef, "efConstruction", "HNSW")
    }

    fn set(&mut self, p: Param, v: usize, name: &str, kind: &str) -> Result<()> {
        if v == 0 {
            return Err(Error::invalid(format!("{name} must be at least 1")));
        }
        if !self.raw.set_param(p, v)? {
            let t = self.raw.describe()?.type_name;
            return Err(Error::new(ErrorKind::Unsupported, format!("{name} applies to {kind} indices; this is {t}")));
        }
        Ok(())
    }

    /// Reconstruct the vector stored under id `key`.
    ///
    /// Errors: `NotFound` for a negative id, and for an id outside `0..ntotal` of an index
    /// that numbers its vectors by position (FAISS itself only checks `key < ntotal`, so a
    /// negative key would read memory outside the index).
    pub fn reconstruct(&self, key: i64) -> Result<Vec<f32>> {
        self.check_key(&self.raw.describe()?, key)?;
        self.f()?.reconstruct(key)
    }

    /// Reconstruct `n` vectors from internal position `i0` (`n × d`): IDMap wrappers by the
    /// wrapped index's positions, IVF by ids `i0..i0+n`, others by position.
    ///
    /// Errors: `InvalidInput` when `i0 + n` is past `ntotal` (or overflows).
    pub fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Vec<f32>> {
        self.check_range(i0, n)?;
        self.f()?.reconstruct_n(i0, n)
    }

    /// Refuse an id that cannot name a stored vector before FAISS sees it: negative ids
    /// (FAISS's "no result" is -1), and ids outside `0..ntotal` where ids are positions (no
    /// IDMap and not IVF; a refine index reconstructs from its flat refinement by position).
    fn check_key(&self, info: &RawInfo, key: i64) -> Result<()> {
        let ivf = info.inner_name.starts_with("IndexIVF") || info.inner_name.starts_with("IndexBinaryIVF");
        let by_position = info.idmap == 0 && (!ivf || info.type_name.starts_with("IndexRefine"));
        if key < 0 || (by_position && key as u64 >= self.ntotal() as u64) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("id {key} is not in the index (ntotal={})", self.ntotal()),
            ));
        }
        Ok(())
    }

    /// Refuse positions `i0..i0+n` that are not all below `ntotal` (overflow included).
    fn check_range(&self, i0: usize, n: usize) -> Result<()> {
        match i0.checked_add(n) {
            Some(end) if end <= self.ntotal() => Ok(()),
            _ => Err(Error::invalid(format!("positions {i0}..{i0}+{n} are past ntotal={}", self.ntotal()))),
        }
    }

    /// Remove ids; returns how many were removed.
    ///
    /// Errors: `Unsupported` for an IDMap over an IVF index (FAISS's IDMap compacts its id
    /// table while IVF keeps its internal ids, so later results would name wrong ids), for
    /// HNSW and for binary hash indices ([`Index::check_removable`]).
    pub fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        self.check_removable()?;
        self.raw.remove_ids(ids)
    }

    /// Whether [`Index::remove_ids`] can work on this index, checked before anything is
    /// logged or changed: not on mapped or on-disk indices, binary hash indices, IDMap over
    /// IVF (see `remove_ids`), or graph indices (HNSW: FAISS cannot remove from its graph).
    ///
    /// Errors: `Unsupported` naming the reason.
    pub fn check_removable(&self) -> Result<()> {
        self.writable("remove ids")?;
        let info = self.raw.describe()?;
        refuse_binary_hash(&info, "remove vectors")?;
        if info.idmap > 0 && (info.inner_name.starts_with("IndexIVF") || info.inner_name.starts_with("IndexBinaryIVF"))
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "removing from an IDMap over an IVF index is not supported: IVF indices store ids themselves, create the index without IDMap",
            ));
        }
        if info.inner_name.starts_with("IndexHNSW") || info.inner_name.starts_with("IndexBinaryHNSW") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{} cannot remove vectors (FAISS's HNSW graph does not support removal)", info.type_name),
            ));
        }
        Ok(())
    }

    /// Remove all vectors, keep training.
    pub fn reset(&mut self) -> Result<()> {
        self.writable("reset")?;
        self.raw.reset()
    }

    /// Deep copy, sidecar included.
    pub fn try_clone(&self) -> Result<Index> {
        self.writable("clone")?;
        Ok(Index {
            raw: self.raw.try_clone()?,
            meta: self.meta.clone(),
            has_sidecar: self.has_sidecar,
            storage: self.storage,
        })
    }

    /// Move all of `other`'s vectors into this index with FAISS's IVF `merge_from` (same
    /// trained quantizer required). Returns false when either is not a bare IVF index.
    pub fn ivf_merge_from(&mut self, other: &mut Index, add_id: i64) -> Result<bool> {
        self.writable("merge into")?;
        let (Raw::Float(a), Raw::Float(b)) = (&mut self.raw, &mut other.raw) else {
            return Ok(false);
        };
        a.ivf_merge_from(b, add_id)
    }

    /// Wrap this index in `IndexIDMap` (`IndexIDMap2` when `v2`) so it takes user ids; the
    /// index must be empty. Added for the server's `IDMap:<base>` index type.
    pub fn wrap_idmap(self, v2: bool) -> Result<Index> {
        if self.ntotal() > 0 {
            return Err(Error::invalid("only an empty index can be wrapped in an IDMap"));
        }
        let Index { raw, mut meta, has_sidecar, storage } = self;
        let raw = match raw {
            Raw::Float(r) => Raw::Float(r.wrap_idmap(v2)?),
            Raw::Binary(r) => Raw::Binary(r.wrap_idmap(v2)?),
        };
        let prefix = if v2 { "IDMap2" } else { "IDMap" };
        meta.factory = if meta.factory.is_empty() { String::new() } else { format!("{prefix},{}", meta.factory) };
        meta.ids = IdMode::Explicit;
        Ok(Index { raw, meta, has_sidecar, storage })
    }

    /// Facts for `info` / status replies. `path` adds the on-disk size.
    pub fn info(&self, path: Option<&Path>) -> Result<IndexInfo> {
        let r = self.raw.describe()?;
        let size_bytes = path.and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
        let file = path.map(storage::probe).transpose()?;
        let mmap_flags = file.as_ref().map(|k| storage::read_flags(k, true).2.to_string());
        let ivfdata_bytes = path
            .filter(|_| self.storage == Storage::OnDisk)
            .and_then(|p| std::fs::metadata(storage::ivfdata_path(p)).ok())
            .map(|m| m.len());
        Ok(IndexInfo {
            path: path.map(|p| p.display().to_string()),
            index_type: r.type_name,
            inner_type: r.inner_name.clone(),
            d: self.d(),
            ntotal: self.ntotal(),
            metric: self.meta.metric,
            is_trained: self.is_trained(),
            nlist: r.nlist,
            nprobe: r.nprobe,
            hnsw_m: r.hnsw_m,
            ef_search: r.ef_search,
            ef_construction: r.ef_construction,
            explicit_ids: r.idmap > 0 || self.meta.ids == IdMode::Explicit,
            size_bytes,
            storage: self.storage,
            file,
            mmap_flags,
            ivfdata_bytes,
            meta: self.has_sidecar.then(|| self.meta.clone()),
        })
    }
}

/// On-disk inverted lists (`build --on-disk`): lists in a separate `.ivfdata` file, built
/// shard by shard in bounded memory (FAISS's `OnDiskInvertedLists::merge_from`).
impl Index {
    /// Move this trained, empty IVF index's lists to on-disk lists in `data`.
    pub fn lists_to_disk(&mut self, data: &Path) -> Result<()> {
        self.writable("move lists to disk")?;
        if self.ntotal() != 0 || !self.is_trained() {
            return Err(Error::invalid("on-disk lists start from a trained, empty index"));
        }
        if !self.f_mut()?.ondisk_create(data)? {
            let t = self.raw.describe()?.type_name;
            return Err(Error::invalid(format!(
                "--on-disk needs an IVF index (e.g. IVF65536,PQ32); this factory gives {t}"
            )));
        }
        Ok(())
    }

    /// Move a shard's lists (an IVF index with the same trained quantizer, holding vectors
    /// with their final ids) into this index's empty on-disk lists; for several shards use
    /// [`Index::merge_to_disk`].
    pub fn merge_shard_to_disk(&mut self, shard: &mut Index) -> Result<()> {
        let shard = shard.f_mut()?;
        if !self.f_mut()?.ondisk_merge_shard(shard)? {
            return Err(Error::invalid("merging a shard needs an index with on-disk lists and an IVF shard"));
        }
        Ok(())
    }

    /// Merge the lists of every index in `srcs` (same trained quantizer; only read, so they
    /// may be mapped or on disk) into this index's empty on-disk lists in one pass.
    ///
    /// Errors: `InvalidInput` when this index has no on-disk lists or a source is not IVF;
    /// `Faiss` naming the check that failed (e.g. different coarse quantizers).
    pub fn merge_to_disk(&mut self, srcs: &mut [&mut Index]) -> Result<()> {
        let mut raws = srcs.iter_mut().map(|s| s.f_mut()).collect::<Result<Vec<&mut RawIndex>>>()?;
        if !self.f_mut()?.ondisk_merge_many(&mut raws)? {
            return Err(Error::invalid("merging into on-disk lists needs IVF indices and on-disk lists"));
        }
        Ok(())
    }

    /// Record the final location of the `.ivfdata` file (after it was renamed into place).
    pub fn set_lists_file(&mut self, data: &Path) -> Result<()> {
        if !self.f_mut()?.ondisk_configure(Some(data), None)? {
            return Err(Error::invalid("index has no on-disk lists"));
        }
        Ok(())
    }

    /// A trained, empty, in-memory copy of this bare IVF index (same quantizer, parameters
    /// and sidecar), made without reading its lists, so it works on mapped and on-disk
    /// indices too: the start of an on-disk merge or an on-disk shard.
    ///
    /// Errors: `InvalidInput` when the index is not a bare IVF index.
    pub fn empty_ivf_copy(&mut self) -> Result<Index> {
        match self.f_mut()?.ivf_empty_clone()? {
            Some(raw) => Ok(Index {
                raw: Raw::Float(raw),
                meta: self.meta.clone(),
                has_sidecar: self.has_sidecar,
                storage: Storage::Loaded,
            }),
            None => {
                let t = self.raw.describe()?.type_name;
                Err(Error::invalid(format!(
                    "on-disk inverted lists need a bare IVF index (e.g. IVF1024,Flat); this is {t}"
                )))
            }
        }
    }

    /// Whether the inverted lists live on disk.
    pub fn lists_on_disk(&self) -> bool {
        matches!(&self.raw, Raw::Float(r) if r.is_ondisk())
    }
}

// ---- merge / split / bench support (issue 4) ----------------------------------------------

impl Index {
    /// Whether the index stores ids of its own (IDMap/IDMap2, or IVF, whose inverted lists
    /// hold ids) rather than numbering vectors by position.
    pub fn stores_ids(&self) -> Result<bool> {
        self.takes_ids()
    }

    /// FAISS's own `merge_from`: move all of `other`'s vectors into this index, adding
    /// `add_id` to the ids of `other` (IVF, IDMap; must be 0 for Flat-like indices). Works
    /// for Flat and other flat-code indices, IVF with the same trained quantizer,
    /// IDMap/IDMap2 and PreTransform over those. On error (FAISS cannot merge these) `self`
    /// is unchanged.
    pub fn merge_from(&mut self, other: &mut Index, add_id: i64) -> Result<()> {
        self.writable("merge into")?;
        other.writable("merge from")?;
        let b = other.f_mut()?;
        self.f_mut()?.merge_from(b, add_id)
    }

    /// Ids of positions `i0..i0+n` in storage order (IVF: list by list; IDMap: the wrapped
    /// index's order; otherwise the id is the position).
    pub fn stored_ids(&self, i0: usize, n: usize) -> Result<Vec<i64>> {
        Ok(self.f()?.extract(i0, n, false)?.0)
    }

    /// Ids and reconstructed vectors (`n × d`, as stored: normalized for cosine, decoded for
    /// compressed indices) of positions `i0..i0+n`, in the order of [`Index::stored_ids`].
    ///
    /// Errors: `Faiss` when the index cannot reconstruct its vectors.
    pub fn extract(&self, i0: usize, n: usize) -> Result<(Vec<i64>, Vec<f32>)> {
        self.f()?.extract(i0, n, true)
    }

    /// Renumber the vectors `base..base+ntotal`: IDMap in insertion order, IVF in the order
    /// of the old ids (for an IVF built without ids, insertion order); position-numbered
    /// indices accept only `base` 0.
    pub fn renumber_ids(&mut self, base: i64) -> Result<()> {
        self.writable("renumber")?;
        self.f_mut()?.renumber(base)
    }

    /// Wrap a position-numbered index in `IDMap2` with ids `0..ntotal`, so that removing
    /// vectors keeps the other vectors' ids. The sidecar's factory gains the `IDMap2,` prefix.
    pub fn into_idmap2(self) -> Result<Index> {
        self.writable("wrap")?;
        let Index { raw, mut meta, has_sidecar, storage } = self;
        let Raw::Float(raw) = raw else {
            return Err(Error::new(ErrorKind::Unsupported, "binary indices cannot be wrapped in IDMap2 here"));
        };
        let raw = Raw::Float(raw.wrap_idmap2()?);
        if !meta.factory.is_empty() && !meta.factory.starts_with("IDMap") {
            meta.factory = format!("IDMap2,{}", meta.factory);
        }
        meta.ids = IdMode::Explicit;
        Ok(Index { raw, meta, has_sidecar, storage })
    }
}

// ---- end merge / split / bench support ------------------------------------------------------

/// `Unsupported` for FAISS's binary hash indices, which can neither reconstruct nor remove.
/// Refuse user ids FAISS cannot store faithfully: negative ones (FAISS reports missing
/// results as -1).
///
/// Errors: `InvalidInput` naming the first negative id.
pub fn check_ids(ids: &[i64]) -> Result<()> {
    match ids.iter().find(|&&i| i < 0) {
        Some(bad) => {
            Err(Error::invalid(format!("id {bad} is negative: ids must be >= 0 (FAISS reports missing results as -1)")))
        }
        None => Ok(()),
    }
}

fn refuse_binary_hash(info: &RawInfo, what: &str) -> Result<()> {
    if info.inner_name.starts_with("IndexBinaryHash") || info.inner_name.starts_with("IndexBinaryMultiHash") {
        return Err(Error::new(ErrorKind::Unsupported, format!("binary hash indices cannot {what}")));
    }
    Ok(())
}

fn binary_refusal() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "this is a binary (Hamming) index: its vectors are bit codes, and this operation takes float vectors",
    )
}

/// A path plus its sidecar path, for messages and cleanup.
pub fn sidecar_path(index: &Path) -> PathBuf {
    IndexMeta::path_for(index)
}

/// Set how many OpenMP threads FAISS uses from this thread on (0: leave the default).
pub fn set_threads(n: usize) {
    if n > 0 {
        ffi::set_num_threads(n);
    }
}

/// Keep OpenBLAS's own thread pool out of FAISS's way (see [`ffi::single_threaded_blas`]).
pub fn tune_blas() -> bool {
    ffi::single_threaded_blas()
}

/// OpenMP threads FAISS uses from this thread.
pub fn threads() -> usize {
    ffi::num_threads()
}
