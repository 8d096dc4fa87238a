//! The FAISS wrapper: an opened or new index together with its sidecar facts.
//!
//! [`Index`] owns one FAISS index, float or binary. Reading (search, range search,
//! reconstruct, info) needs `&Index`; building, adding and removing need `&mut Index` — the
//! read/write split that lets the server share one index between concurrent searches.
//! Cosine normalization and dimension checks happen here, so every caller (CLI, server,
//! bench) gets them. `unsafe` lives only in `ffi/`.
//!
//! Files: this one has `Index` itself (create, open, save, describe, parameters, the
//! read-only check); `types.rs` the vectors and results ([`Rows`], [`RowsRef`],
//! [`Neighbors`], [`RangeHits`], [`IndexInfo`]); `raw.rs` the float/binary FAISS object;
//! `vectors.rs` train/add/search/range search/reconstruct; `select.rs` search restricted to a
//! set of ids (filters); `ids.rs` id handling and its checks; `lists.rs` merges and on-disk
//! inverted lists; `kmeans.rs` FAISS's k-means and IVF reclustering; `ffi/` the FAISS calls.

pub mod check;
pub mod factory;
pub mod ffi;
mod ids;
pub mod kmeans;
mod lists;
pub mod meta;
pub mod probe;
mod raw;
mod select;
pub mod spec;
pub mod storage;
mod types;
mod vectors;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::io::atomic;
pub use ffi::RawInfo;
use ffi::{Param, RawBinaryIndex, RawIndex};
pub use ids::{check_id_count, check_ids};
pub use meta::{FieldInfo, IdMode, IndexMeta, InputInfo, MetadataInfo, PartsInfo};
use raw::Raw;
pub use select::{FilterPath, IdSet, EF_SEARCH_CAP};
pub use spec::{IndexSpec, Metric};
use std::path::{Path, PathBuf};
pub use storage::{FileKind, MemStats, Storage};
pub use types::{pack_bits, Element, IndexInfo, Neighbors, RangeHits, Rows, RowsRef};

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

/// How to open an index file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Memory-map the index instead of loading it (read-only; flags chosen by index type).
    pub mmap: bool,
    /// Read the file once sequentially first, so a cold mapped index does not fault page by
    /// page in random order.
    pub warm: bool,
    /// The index is opened to be added to (or merged) and written, never searched: skip what
    /// only search uses, IVF-PQ's precomputed table (`nlist × M × 2^nbits` floats: 2 GiB for
    /// IVF65536,PQ32, built by FAISS on every read).
    pub no_search: bool,
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
    /// [`RawBinaryIndex::factory`]). Its vectors are packed codes ([`RowsRef::Codes`], `n × d/8` bytes).
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
        if opts.no_search && kind.ivfpq {
            // Only IndexIVFPQ: for residual quantizers the same flag changes how vectors are
            // encoded (FAISS sets their beam factor to -1).
            flags |= storage::IO_FLAG_SKIP_PRECOMPUTE_TABLE;
        }
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

    /// Refuse a change to a mapped or on-disk index before FAISS sees it (FAISS aborts the
    /// process when asked to change read-only mapped data). `what` names the change in the
    /// message ("cannot {what}: …").
    ///
    /// Errors: `Unsupported` when [`Index::storage`] is [`Storage::Mapped`] or
    /// [`Storage::OnDisk`]; the message says how to get a writable index from the command
    /// line (callers with other words, such as the server's `serve --mmap`, match on
    /// `storage()` or rewrite the message, keeping the kind).
    pub fn check_writable(&self, what: &str) -> Result<()> {
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

    /// Whether this is a binary (Hamming) index, whose vectors are packed bit codes
    /// ([`RowsRef::Codes`]) rather than float rows.
    pub fn is_binary(&self) -> bool {
        matches!(self.raw, Raw::Binary(_))
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
        self.meta = self.write_to(path)?;
        self.has_sidecar = true;
        Ok(())
    }

    /// Write the index and its sidecar exactly as [`Index::save`] does, without changing
    /// `self` (so a reader can write a point-in-time copy, e.g. under a read lock). Returns
    /// the sidecar written.
    pub fn write_to(&self, path: &Path) -> Result<IndexMeta> {
        let mut meta = self.meta.clone();
        meta.ntotal = self.raw.ntotal();
        meta.updated_unix = meta::now_unix();
        meta.faissx_version = env!("CARGO_PKG_VERSION").to_string();
        // A unique temp file beside `path`, removed on error (dropped) or renamed into place.
        let tmp = atomic::temp_beside(path)?;
        self.raw.write(&tmp)?;
        let sum = meta::Checksum::of_file(&tmp)?;
        atomic::commit_temp(tmp, path)?;
        meta.set_checksum(Some(sum));
        meta.save(path)?;
        Ok(meta)
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

    /// The metric as the user named it.
    pub fn metric(&self) -> Metric {
        self.meta.metric
    }

    /// FAISS class names and parameters.
    pub fn describe(&self) -> Result<RawInfo> {
        self.raw.describe()
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

    /// Remove all vectors, keep training.
    pub fn reset(&mut self) -> Result<()> {
        self.check_writable("reset")?;
        self.raw.reset()
    }

    /// Deep copy, sidecar included.
    pub fn try_clone(&self) -> Result<Index> {
        self.check_writable("clone")?;
        Ok(Index {
            raw: self.raw.try_clone()?,
            meta: self.meta.clone(),
            has_sidecar: self.has_sidecar,
            storage: self.storage,
        })
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

/// Let FAISS's long loops (k-means, HNSW construction, brute-force search) end with an
/// error once `flag` is set, as faissx's own loops do between batches; see
/// [`ffi::interrupt_on`]. Process-wide, for command-line jobs (not the server).
pub fn interrupt_on(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    ffi::interrupt_on(flag)
}

/// OpenMP threads FAISS uses from this thread.
pub fn threads() -> usize {
    ffi::num_threads()
}
