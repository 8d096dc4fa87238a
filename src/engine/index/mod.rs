//! The FAISS wrapper: an opened or new index together with its sidecar facts.
//!
//! [`Index`] owns one FAISS index. Reading (search, range search, reconstruct, info) needs
//! `&Index`; building, adding and removing need `&mut Index` — the read/write split that lets
//! the server share one index between concurrent searches. Cosine normalization and dimension
//! checks happen here, so every caller (CLI, server, bench) gets them. `unsafe` lives only in
//! `ffi.rs`.

pub mod ffi;
pub mod meta;
pub mod spec;
pub mod storage;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::io::atomic;
pub use ffi::RawInfo;
use ffi::{Param, RawIndex};
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

/// An index and its sidecar facts.
pub struct Index {
    raw: RawIndex,
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
        Ok(Index { raw, meta, has_sidecar: true, storage: Storage::Loaded })
    }

    /// Open an index file written by faissx or by FAISS itself (Python `faiss.write_index`),
    /// loading it into memory (indices with on-disk lists are always opened read-only).
    /// Without a sidecar the metric is taken from the index (l2 or ip) and nothing is
    /// normalized.
    pub fn open(path: &Path) -> Result<Index> {
        Index::open_with(path, &OpenOptions::default())
    }

    /// Open an index file, loaded or memory-mapped per `opts` (see [`storage`]). A mapped
    /// index, or one with on-disk lists, is read-only: mutations return `Unsupported`.
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Index> {
        match std::fs::metadata(path) {
            Err(e) => return Err(Error::io(path, e)),
            Ok(m) if m.is_dir() => {
                return Err(Error::invalid(format!("{}: is a directory, not an index file", path.display())))
            }
            Ok(_) => {}
        }
        let mut kind = storage::probe(path)?;
        let (mut flags, mut storage, _) = storage::read_flags(&kind, opts.mmap);
        if opts.warm && storage != Storage::Loaded {
            storage::warm(path)?;
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
        let sidecar = IndexMeta::load(path)?;
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
                let metric = if raw.is_inner_product() { Metric::Ip } else { Metric::L2 };
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

    /// Write the index (FAISS's own format) and its sidecar, each atomically (temp file,
    /// fsync, rename). On error nothing under `path` changes.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.meta.ntotal = self.raw.ntotal();
        self.meta.updated_unix = meta::now_unix();
        self.meta.faissx_version = env!("CARGO_PKG_VERSION").to_string();
        let tmp = atomic::tmp_path(path);
        if let Err(e) = self.raw.write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        atomic::commit_tmp(&tmp, path)?;
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
        Ok(info.idmap > 0 || info.inner_name.starts_with("IndexIVF"))
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

    /// Check `x` is a whole number of rows of width `d` and copy-normalize it when the metric
    /// is cosine. `what` names the input in errors.
    fn prepare<'a>(&self, x: &'a [f32], what: &str) -> Result<std::borrow::Cow<'a, [f32]>> {
        let d = self.d();
        if !x.len().is_multiple_of(d) {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!("{what}: {} values is not a whole number of d={d} vectors", x.len()),
            ));
        }
        if let Some(pos) = crate::engine::io::first_nonfinite(x) {
            return Err(Error::invalid(format!(
                "{what}: vector {} component {} is {} (must be finite)",
                pos / d,
                pos % d,
                x[pos]
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
        self.raw.train(&x)?;
        self.meta.train_size = x.len() / self.d();
        Ok(())
    }

    /// Add `x` (`n × d`, row-major), with `ids` (`n`) if given.
    ///
    /// Errors: `NotTrained` for an untrained index, `InvalidInput` when ids are required but
    /// missing, given to an index that cannot store them, or of the wrong count.
    pub fn add(&mut self, x: &[f32], ids: Option<&[i64]>) -> Result<()> {
        self.writable("add vectors")?;
        if !self.raw.is_trained() {
            return Err(Error::new(
                ErrorKind::NotTrained,
                "index is not trained: train it first (faissx build trains on a sample of its input)",
            ));
        }
        let x = self.prepare(x, "vectors")?;
        let n = x.len() / self.d();
        match ids {
            Some(ids) => {
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
                self.raw.add_with_ids(&x, ids)?;
                self.meta.ids = IdMode::Explicit;
            }
            None => {
                if self.requires_ids()? {
                    return Err(Error::invalid(
                        "this index stores explicit ids (IDMap): pass ids for the new vectors (--ids)",
                    ));
                }
                self.raw.add(&x)?;
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
        if !self.raw.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, "index is not trained: nothing can be searched"));
        }
        let q = self.prepare(queries, "queries")?;
        let nq = q.len() / self.d();
        if nq == 0 {
            return Ok(Neighbors { nq: 0, k: params.k, ids: Vec::new(), dists: Vec::new() });
        }
        let (dists, ids) = self.raw.search(&q, params.k, params.nprobe, params.ef_search)?;
        Ok(Neighbors { nq, k: params.k, ids, dists })
    }

    /// Range search: every stored vector within `radius` of each query (squared L2 for `l2`;
    /// for `ip`/`cosine`, similarity above `radius`). Hits sorted closest first.
    pub fn range_search(&self, queries: &[f32], radius: f32) -> Result<RangeHits> {
        if !radius.is_finite() {
            return Err(Error::invalid("--radius must be a finite number"));
        }
        if !self.raw.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, "index is not trained: nothing can be searched"));
        }
        let q = self.prepare(queries, "queries")?;
        let (lims, mut ids, mut dists) = self.raw.range_search(&q, radius)?;
        let ip = self.raw.is_inner_product();
        for w in lims.windows(2) {
            let (a, b) = (w[0], w[1]);
            let mut order: Vec<usize> = (a..b).collect();
            order.sort_by(|&i, &j| {
                let o = dists[i].total_cmp(&dists[j]);
                if ip {
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
        Ok(RangeHits { lims, ids, dists })
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
    pub fn reconstruct(&self, key: i64) -> Result<Vec<f32>> {
        self.raw.reconstruct(key)
    }

    /// Reconstruct `n` vectors from internal position `i0` (`n × d`).
    pub fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Vec<f32>> {
        self.raw.reconstruct_n(i0, n)
    }

    /// Remove ids; returns how many were removed.
    pub fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        self.writable("remove ids")?;
        self.raw.remove_ids(ids)
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
        self.raw.ivf_merge_from(&mut other.raw, add_id)
    }

    /// Wrap this index in `IndexIDMap` (`IndexIDMap2` when `v2`) so it takes user ids; the
    /// index must be empty. Added for the server's `IDMap:<base>` index type.
    pub fn wrap_idmap(self, v2: bool) -> Result<Index> {
        if self.ntotal() > 0 {
            return Err(Error::invalid("only an empty index can be wrapped in an IDMap"));
        }
        let Index { raw, mut meta, has_sidecar, storage } = self;
        let raw = raw.wrap_idmap(v2)?;
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
        if !self.raw.ondisk_create(data)? {
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
        if !self.raw.ondisk_merge_shard(&mut shard.raw)? {
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
        let mut raws: Vec<&mut RawIndex> = srcs.iter_mut().map(|s| &mut s.raw).collect();
        if !self.raw.ondisk_merge_many(&mut raws)? {
            return Err(Error::invalid("merging into on-disk lists needs IVF indices and on-disk lists"));
        }
        Ok(())
    }

    /// Record the final location of the `.ivfdata` file (after it was renamed into place).
    pub fn set_lists_file(&mut self, data: &Path) -> Result<()> {
        if !self.raw.ondisk_configure(Some(data), None)? {
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
        match self.raw.ivf_empty_clone()? {
            Some(raw) => {
                Ok(Index { raw, meta: self.meta.clone(), has_sidecar: self.has_sidecar, storage: Storage::Loaded })
            }
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
        self.raw.is_ondisk()
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
        self.raw.merge_from(&mut other.raw, add_id)
    }

    /// Ids of positions `i0..i0+n` in storage order (IVF: list by list; IDMap: the wrapped
    /// index's order; otherwise the id is the position).
    pub fn stored_ids(&self, i0: usize, n: usize) -> Result<Vec<i64>> {
        Ok(self.raw.extract(i0, n, false)?.0)
    }

    /// Ids and reconstructed vectors (`n × d`, as stored: normalized for cosine, decoded for
    /// compressed indices) of positions `i0..i0+n`, in the order of [`Index::stored_ids`].
    ///
    /// Errors: `Faiss` when the index cannot reconstruct its vectors.
    pub fn extract(&self, i0: usize, n: usize) -> Result<(Vec<i64>, Vec<f32>)> {
        self.raw.extract(i0, n, true)
    }

    /// Renumber the vectors `base..base+ntotal`: IDMap in insertion order, IVF in the order
    /// of the old ids (for an IVF built without ids, insertion order); position-numbered
    /// indices accept only `base` 0.
    pub fn renumber_ids(&mut self, base: i64) -> Result<()> {
        self.writable("renumber")?;
        self.raw.renumber(base)
    }

    /// Wrap a position-numbered index in `IDMap2` with ids `0..ntotal`, so that removing
    /// vectors keeps the other vectors' ids. The sidecar's factory gains the `IDMap2,` prefix.
    pub fn into_idmap2(self) -> Result<Index> {
        self.writable("wrap")?;
        let Index { raw, mut meta, has_sidecar, storage } = self;
        let raw = raw.wrap_idmap2()?;
        if !meta.factory.is_empty() && !meta.factory.starts_with("IDMap") {
            meta.factory = format!("IDMap2,{}", meta.factory);
        }
        meta.ids = IdMode::Explicit;
        Ok(Index { raw, meta, has_sidecar, storage })
    }
}

// ---- end merge / split / bench support ------------------------------------------------------

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
