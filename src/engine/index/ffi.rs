//! The only file with `unsafe`: thin wrappers over FAISS's C API (`faiss-sys`) and faissx's C++
//! shim (`shim.cpp`). Everything above this module is safe Rust.
//!
//! faiss-rs's `Index::search` takes `&mut self` although FAISS's search is const; here search,
//! range search and reconstruct take `&self`, so one opened index can serve concurrent readers
//! (the read/write split: mutation needs `&mut`).

use crate::engine::error::{Error, ErrorKind, Result};
use faiss_sys::*;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::ptr::NonNull;

#[repr(C)]
struct ShimInfo {
    type_name: [c_char; 128],
    inner_name: [c_char; 128],
    nlist: i64,
    nprobe: i64,
    hnsw_m: i32,
    ef_search: i32,
    ef_construction: i32,
    idmap: i32,
    pretransform: i32,
    ivf_quantizer_hnsw: i32,
}

extern "C" {
    fn faissx_describe(p: *const FaissIndex, out: *mut ShimInfo, err: *mut c_char, errlen: usize) -> c_int;
    fn faissx_set_param(p: *mut FaissIndex, which: c_int, value: i64, err: *mut c_char, errlen: usize) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn faissx_search(
        p: *const FaissIndex,
        n: i64,
        x: *const f32,
        k: i64,
        nprobe: i64,
        ef_search: i64,
        d: *mut f32,
        i: *mut i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_ondisk_create(p: *mut FaissIndex, path: *const c_char, err: *mut c_char, errlen: usize) -> c_int;
    fn faissx_ondisk_merge_shard(
        dst: *mut FaissIndex,
        shard: *mut FaissIndex,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_ondisk_configure(
        p: *mut FaissIndex,
        path: *const c_char,
        prefetch_threads: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_is_ondisk(p: *const FaissIndex) -> c_int;
    fn faissx_ondisk_merge_many(
        dst: *mut FaissIndex,
        srcs: *mut *mut FaissIndex,
        n: i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_ivf_empty_clone(p: *mut FaissIndex, out: *mut *mut FaissIndex, err: *mut c_char, errlen: usize) -> c_int;
    fn faissx_read_index(
        fname: *const c_char,
        io_flags: c_int,
        binary: c_int,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn omp_set_num_threads(n: c_int);
    fn omp_get_max_threads() -> c_int;
}

/// Set the number of OpenMP threads FAISS uses for parallel regions started by the calling
/// thread (and, from the main thread, the process default).
pub fn set_num_threads(n: usize) {
    // SAFETY: plain libgomp call with a positive int.
    unsafe { omp_set_num_threads(n.clamp(1, 4096) as c_int) }
}

/// OpenMP's current thread count for the calling thread.
pub fn num_threads() -> usize {
    // SAFETY: plain libgomp getter.
    unsafe { omp_get_max_threads() as usize }
}

/// Make OpenBLAS single-threaded, unless `OPENBLAS_NUM_THREADS` says otherwise. Debian's
/// default OpenBLAS is the pthreads build, whose own thread pool competes with FAISS's OpenMP
/// threads: measured on 2 cores, Flat search of 1,000 queries took 0.63 s instead of 0.37 s
/// (Python's faiss-cpu wheel: 0.34 s), with builds unchanged (BENCHMARKS.md). FAISS already
/// parallelizes over queries and lists with OpenMP. A no-op when the BLAS is not OpenBLAS.
/// Returns whether it changed anything.
pub fn single_threaded_blas() -> bool {
    if std::env::var_os("OPENBLAS_NUM_THREADS").is_some() {
        return false;
    }
    // SAFETY: dlsym with RTLD_DEFAULT (a null handle in glibc) and a NUL-terminated name only
    // looks the symbol up; when present it is OpenBLAS's `void openblas_set_num_threads(int)`.
    unsafe {
        let sym = libc::dlsym(std::ptr::null_mut(), c"openblas_set_num_threads".as_ptr());
        if sym.is_null() {
            return false;
        }
        let set: extern "C" fn(c_int) = std::mem::transmute::<*mut libc::c_void, extern "C" fn(c_int)>(sym);
        set(1);
    }
    true
}

/// Limit this process's address space to `bytes` (`RLIMIT_AS`, soft and hard), so that an
/// allocation beyond it fails (`std::bad_alloc` in FAISS) instead of taking the machine's
/// memory. Used by the child process that opens unchecked index files (`probe.rs`). Returns
/// whether the limit was set.
pub fn limit_address_space(bytes: u64) -> bool {
    let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: setrlimit reads the struct we pass; it has no other effect on memory safety.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) == 0 }
}

fn last_error() -> String {
    // SAFETY: FAISS returns a pointer to a thread-local NUL-terminated string, or null.
    unsafe {
        let p = faiss_get_last_error();
        if p.is_null() {
            "unknown FAISS error".into()
        } else {
            clean_exception(&CStr::from_ptr(p).to_string_lossy())
        }
    }
}

/// FAISS exception texts look like `Error in <function> at <file>:<line>: <message>`; users
/// need the message only.
fn clean_exception(s: &str) -> String {
    let s = s.trim();
    match s.find(": ") {
        Some(i) if s.starts_with("Error in ") => s[i + 2..].trim().to_string(),
        _ => s.to_string(),
    }
}

fn check(rc: c_int, what: impl FnOnce() -> String) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::faiss(what(), last_error()))
    }
}

fn shim_check(rc: c_int, err: &[c_char], what: impl FnOnce() -> String) -> Result<c_int> {
    match rc {
        0 | 2 => Ok(rc),
        _ => {
            // SAFETY: the shim always NUL-terminates `err` within its length.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            Err(Error::faiss(what(), clean_exception(&msg)))
        }
    }
}

/// What the shim reports about an index.
#[derive(Debug, Clone, Default)]
pub struct RawInfo {
    /// Outermost FAISS class name (`IndexIDMap2`, `IndexIVFFlat`, …).
    pub type_name: String,
    /// Innermost class after unwrapping IDMap / PreTransform / Refine.
    pub inner_name: String,
    /// IVF `nlist`.
    pub nlist: Option<usize>,
    /// IVF `nprobe`.
    pub nprobe: Option<usize>,
    /// HNSW `M`.
    pub hnsw_m: Option<usize>,
    /// HNSW `efSearch`.
    pub ef_search: Option<usize>,
    /// HNSW `efConstruction`.
    pub ef_construction: Option<usize>,
    /// 0: no id map, 1: IndexIDMap, 2: IndexIDMap2.
    pub idmap: u8,
    /// An IndexPreTransform (PCA, OPQ, …) is in the chain.
    pub pretransform: bool,
    /// A binary (Hamming) index: `faiss::IndexBinary`, codes of d/8 bytes.
    pub binary: bool,
}

impl ShimInfo {
    fn into_raw(self, binary: bool) -> RawInfo {
        let s = |a: &[c_char; 128]| {
            // SAFETY: the shim NUL-terminates within 128 bytes (buffer zeroed first).
            unsafe { CStr::from_ptr(a.as_ptr()) }.to_string_lossy().into_owned()
        };
        let opt = |v: i64| (v >= 0).then_some(v as usize);
        RawInfo {
            type_name: s(&self.type_name),
            inner_name: s(&self.inner_name),
            nlist: opt(self.nlist),
            nprobe: opt(self.nprobe),
            hnsw_m: opt(self.hnsw_m as i64),
            ef_search: opt(self.ef_search as i64),
            ef_construction: opt(self.ef_construction as i64),
            idmap: self.idmap as u8,
            pretransform: self.pretransform != 0,
            binary,
        }
    }
}

/// An owned FAISS `Index*`.
pub struct RawIndex(NonNull<FaissIndex>);

// SAFETY: a FAISS index has no thread affinity. Mutation needs `&mut RawIndex`; the `&self`
// methods call only const FAISS methods (search, range_search, reconstruct), which FAISS
// documents as safe to call concurrently on CPU indices.
unsafe impl Send for RawIndex {}
// SAFETY: see above.
unsafe impl Sync for RawIndex {}

/// Parameters whose value [`RawIndex::set_param`] can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// IVF `nprobe`.
    Nprobe = 0,
    /// HNSW `efSearch`.
    EfSearch = 1,
    /// HNSW `efConstruction`.
    EfConstruction = 2,
}

impl RawIndex {
    fn from_ptr(p: *mut FaissIndex, what: &str) -> Result<RawIndex> {
        NonNull::new(p).map(RawIndex).ok_or_else(|| Error::faiss(what.to_string(), "null index".into()))
    }

    /// `faiss::index_factory(d, description, metric)`.
    pub fn factory(d: usize, description: &str, inner_product: bool) -> Result<RawIndex> {
        let desc = CString::new(description).map_err(|_| Error::invalid("factory string contains a NUL byte"))?;
        let metric = if inner_product { FaissMetricType_METRIC_INNER_PRODUCT } else { FaissMetricType_METRIC_L2 };
        let mut p = std::ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated description.
        let rc = unsafe { faiss_index_factory(&mut p, d as c_int, desc.as_ptr(), metric) };
        if rc != 0 {
            return Err(Error::invalid(format!("bad factory string {description:?}: {}", last_error())));
        }
        RawIndex::from_ptr(p, "index_factory")
    }

    /// `faiss::read_index(path, io_flags)`.
    pub fn read(path: &Path, io_flags: i32) -> Result<RawIndex> {
        RawIndex::from_ptr(read_file(path, io_flags, false)?.cast(), "read_index")
    }

    /// `faiss::write_index(this, path)`.
    pub fn write(&self, path: &Path) -> Result<()> {
        // SAFETY: valid index; `f` is an open stream.
        write_checked(path, "writing index", |f| unsafe { faiss_write_index(self.0.as_ptr(), f) })
    }

    /// Deep copy (`faiss::clone_index`).
    pub fn try_clone(&self) -> Result<RawIndex> {
        let mut p = std::ptr::null_mut();
        // SAFETY: valid index and out-pointer.
        check(unsafe { faiss_clone_index(self.0.as_ptr(), &mut p) }, || "cloning index".into())?;
        RawIndex::from_ptr(p, "clone_index")
    }

    /// Dimension `d`.
    pub fn d(&self) -> usize {
        // SAFETY: valid index.
        unsafe { faiss_Index_d(self.0.as_ptr()) as usize }
    }

    /// Number of stored vectors.
    pub fn ntotal(&self) -> usize {
        // SAFETY: valid index.
        unsafe { faiss_Index_ntotal(self.0.as_ptr()) as usize }
    }

    /// Whether training is done.
    pub fn is_trained(&self) -> bool {
        // SAFETY: valid index.
        unsafe { faiss_Index_is_trained(self.0.as_ptr()) != 0 }
    }

    /// True for METRIC_INNER_PRODUCT, false for METRIC_L2 (other metrics are reported as L2).
    pub fn is_inner_product(&self) -> bool {
        // SAFETY: valid index.
        unsafe { faiss_Index_metric_type(self.0.as_ptr()) == FaissMetricType_METRIC_INNER_PRODUCT }
    }

    /// Train on `x` (`n × d`).
    pub fn train(&mut self, x: &[f32]) -> Result<()> {
        let n = x.len() / self.d();
        // SAFETY: x holds n × d floats.
        check(unsafe { faiss_Index_train(self.0.as_ptr(), n as i64, x.as_ptr()) }, || {
            format!("training on {n} vectors")
        })
    }

    /// Add `x` (`n × d`) with sequential ids.
    pub fn add(&mut self, x: &[f32]) -> Result<()> {
        let n = x.len() / self.d();
        // SAFETY: x holds n × d floats.
        check(unsafe { faiss_Index_add(self.0.as_ptr(), n as i64, x.as_ptr()) }, || format!("adding {n} vectors"))
    }

    /// Add `x` (`n × d`) with ids (`n`).
    pub fn add_with_ids(&mut self, x: &[f32], ids: &[i64]) -> Result<()> {
        let n = x.len() / self.d();
        assert_eq!(n, ids.len(), "invariant: one id per vector");
        // SAFETY: x holds n × d floats and ids n ids.
        check(unsafe { faiss_Index_add_with_ids(self.0.as_ptr(), n as i64, x.as_ptr(), ids.as_ptr()) }, || {
            format!("adding {n} vectors with ids")
        })
    }

    /// k-NN search of `x` (`nq × d`) with optional per-call nprobe / efSearch. Returns
    /// `(distances, labels)`, each `nq × k`.
    pub fn search(
        &self,
        x: &[f32],
        k: usize,
        nprobe: Option<usize>,
        ef_search: Option<usize>,
    ) -> Result<(Vec<f32>, Vec<i64>)> {
        let nq = x.len() / self.d();
        let mut dist = vec![0f32; nq * k];
        let mut ids = vec![-1i64; nq * k];
        let mut err = [0 as c_char; 512];
        // SAFETY: buffers sized nq × d, nq × k; the shim calls the const Index::search.
        let rc = unsafe {
            faissx_search(
                self.0.as_ptr(),
                nq as i64,
                x.as_ptr(),
                k as i64,
                nprobe.map_or(0, |v| v as i64),
                ef_search.map_or(0, |v| v as i64),
                dist.as_mut_ptr(),
                ids.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        shim_check(rc, &err, || format!("searching {nq} queries"))?;
        Ok((dist, ids))
    }

    /// Range search of `x` (`nq × d`) within `radius`. Returns `(lims, labels, distances)`;
    /// query `i`'s results are `lims[i]..lims[i+1]`.
    pub fn range_search(&self, x: &[f32], radius: f32) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>)> {
        let nq = x.len() / self.d();
        range_results(nq, |res| {
            // SAFETY: x holds nq × d floats; res is valid.
            check(unsafe { faiss_Index_range_search(self.0.as_ptr(), nq as i64, x.as_ptr(), radius, res) }, || {
                format!("range search of {nq} queries")
            })
        })
    }

    /// Reconstruct the vector stored under `key` (a FAISS id; for IDMap2 the user id).
    /// IVF indices (bare or under IDMap2) without a direct map are served by a scan of
    /// their lists' ids (faissx's shim).
    pub fn reconstruct(&self, key: i64) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.d()];
        if ivf_reconstruct(self.0.as_ptr().cast(), false, key, out.as_mut_ptr().cast())? {
            return Ok(out);
        }
        // SAFETY: out holds d floats.
        check(unsafe { faiss_Index_reconstruct(self.0.as_ptr(), key, out.as_mut_ptr()) }, || {
            format!("reconstructing id {key}")
        })?;
        Ok(out)
    }

    /// Reconstruct `n` vectors starting at internal position `i0`: `n × d`. A bare IVF index
    /// (FAISS's own `reconstruct_n`: ids `i0..i0+n`, one thread) is asked directly; every
    /// other type goes through the shim's position walk ([`RawIndex::extract`]), because
    /// FAISS's generic `reconstruct_n` calls `reconstruct` inside an OpenMP region, where an
    /// exception (an IDMap whose ids are not `0..n`) ends the process.
    pub fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Vec<f32>> {
        let info = self.describe()?;
        if !(info.idmap == 0 && !info.pretransform && info.type_name.starts_with("IndexIVF")) {
            return Ok(self.extract(i0, n, true)?.1);
        }
        let mut out = vec![0f32; n * self.d()];
        // SAFETY: out holds n × d floats.
        check(unsafe { faiss_Index_reconstruct_n(self.0.as_ptr(), i0 as i64, n as i64, out.as_mut_ptr()) }, || {
            format!("reconstructing vectors {i0}..{}", i0 + n)
        })?;
        Ok(out)
    }

    /// Remove the given ids; returns how many were removed.
    pub fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        // SAFETY: valid index; the selector is valid for the call.
        remove_batch(ids, |sel, removed| unsafe { faiss_Index_remove_ids(self.0.as_ptr(), sel, removed) })
    }

    /// Remove all vectors (trained state is kept).
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: valid index.
        check(unsafe { faiss_Index_reset(self.0.as_ptr()) }, || "resetting index".into())
    }

    /// Class names and parameters, via the shim.
    pub fn describe(&self) -> Result<RawInfo> {
        // SAFETY: ShimInfo is plain old data; the shim fills it.
        let mut info: ShimInfo = unsafe { std::mem::zeroed() };
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index and buffers.
        let rc = unsafe { faissx_describe(self.0.as_ptr(), &mut info, err.as_mut_ptr(), err.len()) };
        shim_check(rc, &err, || "describing index".into())?;
        Ok(info.into_raw(false))
    }

    /// Set a persistent search/build parameter. Returns false if the index has no such knob.
    pub fn set_param(&mut self, p: Param, value: usize) -> Result<bool> {
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index and buffer.
        let rc = unsafe { faissx_set_param(self.0.as_ptr(), p as c_int, value as i64, err.as_mut_ptr(), err.len()) };
        Ok(shim_check(rc, &err, || format!("setting {p:?}"))? == 0)
    }

    /// `IndexIVF::merge_from(other, add_id)`: move all of `other`'s lists into this index.
    /// Both must be IVF indices (possibly under IDMap/PreTransform: not supported here).
    pub fn ivf_merge_from(&mut self, other: &mut RawIndex, add_id: i64) -> Result<bool> {
        // SAFETY: the casts return null for non-IVF indices; both pointers are valid.
        unsafe {
            let a = faiss_IndexIVF_cast(self.0.as_ptr());
            let b = faiss_IndexIVF_cast(other.0.as_ptr());
            if a.is_null() || b.is_null() {
                return Ok(false);
            }
            check(faiss_IndexIVF_merge_from(a, b, add_id), || "merging IVF lists".into())?;
        }
        Ok(true)
    }
}

/// On-disk inverted lists (FAISS `OnDiskInvertedLists`), which the C API lacks.
impl RawIndex {
    /// Replace the empty lists of this trained IVF index with on-disk lists in `path`.
    /// Returns false if the index is not IVF.
    pub fn ondisk_create(&mut self, path: &Path) -> Result<bool> {
        let c = path_cstr(path)?;
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index, path and buffer.
        let rc = unsafe { faissx_ondisk_create(self.0.as_ptr(), c.as_ptr(), err.as_mut_ptr(), err.len()) };
        Ok(shim_check(rc, &err, || format!("{}: creating on-disk inverted lists", path.display()))? == 0)
    }

    /// Append the lists of `shard` (same trained quantizer) to this index's on-disk lists.
    pub fn ondisk_merge_shard(&mut self, shard: &mut RawIndex) -> Result<bool> {
        let mut err = [0 as c_char; 512];
        // SAFETY: both indices valid; the shim checks their types.
        let rc = unsafe { faissx_ondisk_merge_shard(self.0.as_ptr(), shard.0.as_ptr(), err.as_mut_ptr(), err.len()) };
        Ok(shim_check(rc, &err, || "merging a shard into on-disk lists".into())? == 0)
    }

    /// Merge the lists of all `srcs` (same trained quantizer; only read) into this index's
    /// empty on-disk lists in one pass. Returns false if an index is not IVF or the lists are
    /// not on disk.
    pub fn ondisk_merge_many(&mut self, srcs: &mut [&mut RawIndex]) -> Result<bool> {
        let mut ptrs: Vec<*mut FaissIndex> = srcs.iter_mut().map(|r| r.0.as_ptr()).collect();
        let mut err = [0 as c_char; 512];
        // SAFETY: every pointer is a valid index borrowed for the call; the shim checks types.
        let rc = unsafe {
            faissx_ondisk_merge_many(self.0.as_ptr(), ptrs.as_mut_ptr(), ptrs.len() as i64, err.as_mut_ptr(), err.len())
        };
        Ok(shim_check(rc, &err, || "merging inverted lists into on-disk lists".into())? == 0)
    }

    /// Re-point the on-disk lists at `path` and/or set their prefetch thread count.
    pub fn ondisk_configure(&mut self, path: Option<&Path>, prefetch_threads: Option<usize>) -> Result<bool> {
        let c = path.map(path_cstr).transpose()?;
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index; path null or NUL-terminated.
        let rc = unsafe {
            faissx_ondisk_configure(
                self.0.as_ptr(),
                c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                prefetch_threads.map_or(-1, |n| n as c_int),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        Ok(shim_check(rc, &err, || "configuring on-disk lists".into())? == 0)
    }

    /// A copy of this bare IVF index with empty in-memory lists (its own lists, possibly
    /// mapped or on disk, are neither copied nor changed). `None` if it is not a bare IVF.
    pub fn ivf_empty_clone(&mut self) -> Result<Option<RawIndex>> {
        let mut err = [0 as c_char; 512];
        let mut out = std::ptr::null_mut();
        // SAFETY: valid index, out-pointer and buffer. The shim swaps the list pointer of
        // `self` for the duration of the call and restores it, hence `&mut self`.
        let rc = unsafe { faissx_ivf_empty_clone(self.0.as_ptr(), &mut out, err.as_mut_ptr(), err.len()) };
        if shim_check(rc, &err, || "copying an IVF index without its lists".into())? == 2 {
            return Ok(None);
        }
        RawIndex::from_ptr(out, "ivf_empty_clone").map(Some)
    }

    /// Whether the inverted lists live on disk.
    pub fn is_ondisk(&self) -> bool {
        // SAFETY: valid index.
        unsafe { faissx_is_ondisk(self.0.as_ptr()) != 0 }
    }
}

impl RawIndex {
    /// Wrap this (empty) index in `IndexIDMap` (or `IndexIDMap2` when `v2`), which takes
    /// ownership of it. Added for the server's `IDMap:<base>` index type.
    pub fn wrap_idmap(self, v2: bool) -> Result<RawIndex> {
        let base = self.0.as_ptr();
        let mut p = std::ptr::null_mut();
        // SAFETY: base is a valid index we own; on success the wrapper owns it (own_fields set
        // below), so we forget `self` instead of freeing it.
        unsafe {
            let rc = if v2 { faiss_IndexIDMap2_new(&mut p, base) } else { faiss_IndexIDMap_new(&mut p, base) };
            check(rc, || "wrapping index in IDMap".into())?;
            if v2 {
                faiss_IndexIDMap2_set_own_fields(p, 1);
            } else {
                faiss_IndexIDMap_set_own_fields(p, 1);
            }
        }
        std::mem::forget(self);
        RawIndex::from_ptr(p, "IndexIDMap_new")
    }
}

impl Drop for RawIndex {
    fn drop(&mut self) {
        // SAFETY: we own the pointer.
        unsafe { faiss_Index_free(self.0.as_ptr()) }
    }
}

/// L2-normalize each row of `x` (`n × d`) in place (FAISS `fvec_renorm_L2`; zero rows stay 0).
pub fn normalize_l2(x: &mut [f32], d: usize) {
    if d == 0 || x.is_empty() {
        return;
    }
    // SAFETY: x holds n × d floats.
    unsafe { faiss_fvec_renorm_L2(d, x.len() / d, x.as_mut_ptr()) }
}

/// Run `search` into a fresh `RangeSearchResult` for `nq` queries and copy it out as
/// `(lims, labels, distances)`; query `i`'s hits are `lims[i]..lims[i+1]`.
fn range_results(
    nq: usize,
    search: impl FnOnce(*mut FaissRangeSearchResult) -> Result<()>,
) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>)> {
    let mut res = std::ptr::null_mut();
    // SAFETY: out-pointer; freed by the guard.
    check(unsafe { faiss_RangeSearchResult_new(&mut res, nq as i64) }, || "range search".into())?;
    struct Guard(*mut FaissRangeSearchResult);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: allocated by faiss_RangeSearchResult_new.
            unsafe { faiss_RangeSearchResult_free(self.0) }
        }
    }
    let g = Guard(res);
    search(g.0)?;
    // SAFETY: after a successful search lims has nq + 1 entries and labels/distances lims[nq].
    unsafe {
        let mut lims = std::ptr::null_mut();
        faiss_RangeSearchResult_lims(g.0, &mut lims);
        let lims = std::slice::from_raw_parts(lims, nq + 1).to_vec();
        let total = lims[nq];
        let (mut l, mut d) = (std::ptr::null_mut(), std::ptr::null_mut());
        faiss_RangeSearchResult_labels(g.0, &mut l, &mut d);
        let (labels, dists) = if total == 0 {
            (Vec::new(), Vec::new())
        } else {
            (std::slice::from_raw_parts(l, total).to_vec(), std::slice::from_raw_parts(d, total).to_vec())
        };
        Ok((lims, labels, dists))
    }
}

/// `faiss::read_index` (`read_index_binary` when `binary`) through the shim, which keeps
/// FAISS's printf output off stdout. The caller owns the returned index.
///
/// Errors: `Format` naming `path` when FAISS cannot read it.
fn read_file(path: &Path, io_flags: i32, binary: bool) -> Result<*mut std::ffi::c_void> {
    let c = path_cstr(path)?;
    let mut p = std::ptr::null_mut();
    let mut err = [0 as c_char; 512];
    // SAFETY: valid out-pointer, path and error buffer.
    let rc = unsafe { faissx_read_index(c.as_ptr(), io_flags, binary as c_int, &mut p, err.as_mut_ptr(), err.len()) };
    if rc != 0 {
        // SAFETY: the shim NUL-terminates `err`.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
        let kind = if binary { "binary index" } else { "index" };
        return Err(Error::format(
            path,
            format!("not a FAISS {kind} file that this build can read ({})", clean_exception(&msg)),
        ));
    }
    Ok(p)
}

/// Reconstruct `key` of an IVF index without a direct map (float, or binary when `binary`;
/// bare or under IDMap2) into `out` (`d` floats or `d/8` bytes) by scanning its lists' ids.
/// Returns false when the index is something else (FAISS's own reconstruct applies).
///
/// Errors: `NotFound` when no vector has id `key`.
fn ivf_reconstruct(p: *const std::ffi::c_void, binary: bool, key: i64, out: *mut std::ffi::c_void) -> Result<bool> {
    let mut err = [0 as c_char; 512];
    // SAFETY: p is a valid index of the kind `binary` says; out holds one vector of it.
    let rc = unsafe { faissx_ivf_reconstruct(p, binary as c_int, key, out, err.as_mut_ptr(), err.len()) };
    match rc {
        0 => Ok(true),
        2 => Ok(false),
        3 => Err(Error::new(ErrorKind::NotFound, format!("id {key} is not in the index"))),
        _ => shim_check(rc, &err, || format!("reconstructing id {key}")).map(|_| false),
    }
}

/// Remove `ids` through an `IDSelectorBatch` handed to `remove`; returns how many were removed.
fn remove_batch(ids: &[i64], remove: impl FnOnce(*const FaissIDSelector, &mut usize) -> c_int) -> Result<usize> {
    let mut sel = std::ptr::null_mut();
    // SAFETY: ids valid for the call; selector freed below.
    check(unsafe { faiss_IDSelectorBatch_new(&mut sel, ids.len(), ids.as_ptr()) }, || "building id selector".into())?;
    let mut removed = 0usize;
    let rc = remove(sel as *const FaissIDSelector, &mut removed);
    // SAFETY: created above.
    unsafe { faiss_IDSelector_free(sel as *mut FaissIDSelector) };
    check(rc, || format!("removing {} ids", ids.len()))?;
    Ok(removed)
}

/// Write an index to `path` through a stream this function opens, flushes and closes,
/// checking each step. FAISS's own file writer (`write_index(idx, fname)`) ignores the error
/// of its final `fclose`, so a disk that fills up during the last buffered block leaves a
/// truncated file behind a successful write.
fn write_checked(path: &Path, what: &str, write: impl FnOnce(*mut FILE) -> c_int) -> Result<()> {
    let c = path_cstr(path)?;
    // SAFETY: NUL-terminated path and mode.
    let f = unsafe { libc::fopen(c.as_ptr(), c"wb".as_ptr()) };
    if f.is_null() {
        return Err(Error::io(path, std::io::Error::last_os_error()).context(what));
    }
    let written = check(write(f.cast::<FILE>()), || format!("{}: {what}", path.display()));
    // SAFETY: `f` is open; it is closed exactly once, here.
    let flushed = if unsafe { libc::fflush(f) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: as above.
    let closed = if unsafe { libc::fclose(f) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    written?;
    flushed.and(closed).map_err(|e| Error::io(path, e).context(what))
}

fn path_cstr(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{}: path contains a NUL byte", path.display())))
}

// ---- merge / split / bench support (issue 4) ----------------------------------------------

extern "C" {
    fn faissx_merge_from(
        dst: *mut FaissIndex,
        src: *mut FaissIndex,
        add_id: i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_extract(
        p: *const FaissIndex,
        i0: i64,
        n: i64,
        ids: *mut i64,
        x: *mut f32,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_renumber(p: *mut FaissIndex, base: i64, err: *mut c_char, errlen: usize) -> c_int;
    fn faissx_wrap_idmap2(p: *mut FaissIndex, err: *mut c_char, errlen: usize) -> *mut FaissIndex;
}

impl RawIndex {
    /// FAISS's generic `merge_from(other, add_id)` (Flat and other flat-code indices, IVF with
    /// the same trained quantizer, IDMap/IDMap2, PreTransform). `other` is emptied. FAISS
    /// checks compatibility first, so on error `self` is unchanged.
    pub fn merge_from(&mut self, other: &mut RawIndex, add_id: i64) -> Result<()> {
        let mut err = [0 as c_char; 512];
        // SAFETY: two distinct valid indices (`&mut` on both) and an error buffer.
        let rc = unsafe { faissx_merge_from(self.0.as_ptr(), other.0.as_ptr(), add_id, err.as_mut_ptr(), err.len()) };
        shim_check(rc, &err, || "merging indices".into()).map(|_| ())
    }

    /// Ids, and with `vectors` the reconstructed vectors (`n × d`), of the stored vectors at
    /// positions `i0..i0+n` (IVF: inverted lists in order; IDMap: the wrapped index's
    /// positions; otherwise 0..ntotal, where the id is the position).
    pub fn extract(&self, i0: usize, n: usize, vectors: bool) -> Result<(Vec<i64>, Vec<f32>)> {
        let mut ids = vec![-1i64; n];
        let mut x = if vectors { vec![0f32; n * self.d()] } else { Vec::new() };
        let xp = if vectors { x.as_mut_ptr() } else { std::ptr::null_mut() };
        let mut err = [0 as c_char; 512];
        // SAFETY: ids holds n ids, x (if requested) n × d floats; the shim checks the range.
        let rc = unsafe {
            faissx_extract(self.0.as_ptr(), i0 as i64, n as i64, ids.as_mut_ptr(), xp, err.as_mut_ptr(), err.len())
        };
        shim_check(rc, &err, || format!("reading stored vectors {i0}..{}", i0 + n))?;
        Ok((ids, x))
    }

    /// Renumber the stored vectors `base..base+ntotal`: IDMap in insertion order, IVF in the
    /// order of the old ids; position-numbered indices accept only `base` 0.
    pub fn renumber(&mut self, base: i64) -> Result<()> {
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index and buffer.
        let rc = unsafe { faissx_renumber(self.0.as_ptr(), base, err.as_mut_ptr(), err.len()) };
        shim_check(rc, &err, || "renumbering ids".into()).map(|_| ())
    }

    /// Wrap this index in an `IndexIDMap2` whose ids are the positions `0..ntotal`.
    pub fn wrap_idmap2(self) -> Result<RawIndex> {
        let mut err = [0 as c_char; 512];
        let p = self.0.as_ptr();
        // SAFETY: on success the wrapper owns `p`, so `self` must not free it (forget below);
        // on failure (null) `p` is still ours and `self` drops it normally.
        let w = unsafe { faissx_wrap_idmap2(p, err.as_mut_ptr(), err.len()) };
        if w.is_null() {
            shim_check(1, &err, || "wrapping index in IDMap2".into())?;
            return Err(Error::faiss("wrapping index in IDMap2", "failed".into()));
        }
        std::mem::forget(self);
        RawIndex::from_ptr(w, "wrap_idmap2")
    }
}

// ---- end merge / split / bench support ------------------------------------------------------

// ---- binary (Hamming) indices ---------------------------------------------------------------

extern "C" {
    fn faissx_binary_describe(p: *const FaissIndexBinary, out: *mut ShimInfo, err: *mut c_char, errlen: usize)
        -> c_int;
    fn faissx_binary_set_param(
        p: *mut FaissIndexBinary,
        which: c_int,
        value: i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn faissx_binary_search(
        p: *const FaissIndexBinary,
        n: i64,
        x: *const u8,
        k: i64,
        nprobe: i64,
        d: *mut i32,
        i: *mut i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_binary_wrap_idmap(
        p: *mut FaissIndexBinary,
        v2: c_int,
        out: *mut *mut FaissIndexBinary,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_binary_clone(
        p: *const FaissIndexBinary,
        out: *mut *mut FaissIndexBinary,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_ivf_reconstruct(
        p: *const std::ffi::c_void,
        binary: c_int,
        key: i64,
        out: *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_binary_ivf_reconstruct_n(
        p: *const FaissIndexBinary,
        i0: i64,
        n: i64,
        out: *mut u8,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// Accept only the binary types that are memory-safe for every `d` and input here:
/// `BFlat`, `BIVF<nlist ≥ 1>`, `BIVF<nlist>_HNSW<M>`, `BHNSW<M>`, and `BHash<b>` with
/// `1 ≤ b ≤ 63` on `d ≥ 64` (IndexBinaryHash reads the first 8 bytes of every code, and
/// shifts by `b`). Multi-hash (`BHash<n>x<b>`) is refused: its `reset` keeps stale entries.
fn check_binary_factory(d: usize, desc: &str) -> Result<()> {
    let num = |s: &str| -> Option<usize> { s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten() };
    let ok = if desc == "BFlat" {
        true
    } else if let Some(rest) = desc.strip_prefix("BIVF") {
        let (nlist, q) = rest.split_once("_HNSW").map_or((rest, None), |(a, b)| (a, Some(b)));
        num(nlist).is_some_and(|n| n >= 1) && q.is_none_or(|m| num(m).is_some_and(|m| m >= 2))
    } else if let Some(m) = desc.strip_prefix("BHNSW") {
        num(m).is_some_and(|m| m >= 2)
    } else if let Some(b) = desc.strip_prefix("BHash") {
        match num(b) {
            Some(b) if (1..=63).contains(&b) && d >= 64 => true,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "binary hash index {desc:?} on d={d} bits: needs 1-63 hash bits and d >= 64"
                )))
            }
            None => false,
        }
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "bad binary factory string {desc:?}: use BFlat, BIVF<nlist>, BIVF<nlist>_HNSW<M>, BHNSW<M> or BHash<bits>"
        )))
    }
}

/// An owned FAISS `IndexBinary*`: vectors of `d` bits stored as packed codes of `d / 8`
/// bytes (bit j of a vector is bit `j % 8` of byte `j / 8`, least significant first, as
/// `numpy.packbits(..., bitorder="little")` makes them); distances are Hamming distances.
pub struct RawBinaryIndex(NonNull<FaissIndexBinary>);

// SAFETY: as for RawIndex: `&self` methods call only const FAISS methods.
unsafe impl Send for RawBinaryIndex {}
// SAFETY: see above.
unsafe impl Sync for RawBinaryIndex {}

impl RawBinaryIndex {
    fn from_ptr(p: *mut FaissIndexBinary, what: &str) -> Result<RawBinaryIndex> {
        NonNull::new(p).map(RawBinaryIndex).ok_or_else(|| Error::faiss(what.to_string(), "null index".into()))
    }

    fn shim(rc: c_int, err: &[c_char], out: *mut FaissIndexBinary, what: &str) -> Result<RawBinaryIndex> {
        shim_check(rc, err, || what.to_string())?;
        RawBinaryIndex::from_ptr(out, what)
    }

    /// `faiss::index_binary_factory(d, description)`: `BFlat`, `BIVF<nlist>`,
    /// `BIVF<nlist>_HNSW<M>`, `BHNSW<M>`, `BHash<b>`, `BHash<nhash>x<b>`; `d` in bits, a
    /// multiple of 8.
    pub fn factory(d: usize, description: &str) -> Result<RawBinaryIndex> {
        if d == 0 || !d.is_multiple_of(8) {
            return Err(Error::invalid(format!("binary index dimension d={d} must be a positive multiple of 8 bits")));
        }
        check_binary_factory(d, description)?;
        let desc = CString::new(description).map_err(|_| Error::invalid("factory string contains a NUL byte"))?;
        let mut p = std::ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated description.
        let rc = unsafe { faiss_index_binary_factory(&mut p, d as c_int, desc.as_ptr()) };
        if rc != 0 {
            return Err(Error::invalid(format!("bad binary factory string {description:?}: {}", last_error())));
        }
        RawBinaryIndex::from_ptr(p, "index_binary_factory")
    }

    /// `faiss::read_index_binary(path, io_flags)`.
    pub fn read(path: &Path, io_flags: i32) -> Result<RawBinaryIndex> {
        RawBinaryIndex::from_ptr(read_file(path, io_flags, true)?.cast(), "read_index_binary")
    }

    /// `faiss::write_index_binary(this, path)`.
    pub fn write(&self, path: &Path) -> Result<()> {
        // SAFETY: valid index; `f` is an open stream.
        write_checked(path, "writing binary index", |f| unsafe { faiss_write_index_binary(self.0.as_ptr(), f) })
    }

    /// Deep copy (any binary index type).
    pub fn try_clone(&self) -> Result<RawBinaryIndex> {
        let (mut p, mut err) = (std::ptr::null_mut(), [0 as c_char; 512]);
        // SAFETY: valid index, out-pointer and buffer.
        let rc = unsafe { faissx_binary_clone(self.0.as_ptr(), &mut p, err.as_mut_ptr(), err.len()) };
        RawBinaryIndex::shim(rc, &err, p, "cloning binary index")
    }

    /// Dimension `d` in bits.
    pub fn d(&self) -> usize {
        // SAFETY: valid index.
        unsafe { faiss_IndexBinary_d(self.0.as_ptr()) as usize }
    }

    /// Bytes per code: `d / 8`.
    pub fn code_size(&self) -> usize {
        self.d() / 8
    }

    /// Number of stored vectors.
    pub fn ntotal(&self) -> usize {
        // SAFETY: valid index.
        unsafe { faiss_IndexBinary_ntotal(self.0.as_ptr()) as usize }
    }

    /// Whether training is done.
    pub fn is_trained(&self) -> bool {
        // SAFETY: valid index.
        unsafe { faiss_IndexBinary_is_trained(self.0.as_ptr()) != 0 }
    }

    /// Train on `x` (`n × d/8` bytes).
    pub fn train(&mut self, x: &[u8]) -> Result<()> {
        let n = x.len() / self.code_size();
        // SAFETY: x holds n codes.
        check(unsafe { faiss_IndexBinary_train(self.0.as_ptr(), n as i64, x.as_ptr()) }, || {
            format!("training on {n} binary vectors")
        })
    }

    /// Add `x` (`n × d/8` bytes), with ids (`n`) if given.
    pub fn add(&mut self, x: &[u8], ids: Option<&[i64]>) -> Result<()> {
        let n = x.len() / self.code_size();
        // SAFETY: x holds n codes and ids n ids.
        let rc = unsafe {
            match ids {
                Some(ids) => {
                    assert_eq!(n, ids.len(), "invariant: one id per vector");
                    faiss_IndexBinary_add_with_ids(self.0.as_ptr(), n as i64, x.as_ptr(), ids.as_ptr())
                }
                None => faiss_IndexBinary_add(self.0.as_ptr(), n as i64, x.as_ptr()),
            }
        };
        check(rc, || format!("adding {n} binary vectors"))
    }

    /// k-NN search of `x` (`nq × d/8` bytes) with an optional per-call nprobe (binary IVF).
    /// Returns `(Hamming distances, labels)`, each `nq × k`.
    pub fn search(&self, x: &[u8], k: usize, nprobe: Option<usize>) -> Result<(Vec<f32>, Vec<i64>)> {
        let nq = x.len() / self.code_size();
        let mut dist = vec![0i32; nq * k];
        let mut ids = vec![-1i64; nq * k];
        let mut err = [0 as c_char; 512];
        // SAFETY: buffers sized nq codes, nq × k; the shim calls only const methods.
        let rc = unsafe {
            faissx_binary_search(
                self.0.as_ptr(),
                nq as i64,
                x.as_ptr(),
                k as i64,
                nprobe.map_or(0, |v| v as i64),
                dist.as_mut_ptr(),
                ids.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        shim_check(rc, &err, || format!("searching {nq} binary queries"))?;
        // Missing neighbours come back as i32::MAX; report them as FAISS pads float results.
        let dist = dist.into_iter().map(|v| if v == i32::MAX { f32::MAX } else { v as f32 }).collect();
        Ok((dist, ids))
    }

    /// Range search: every stored vector within Hamming distance `< radius` of each query.
    /// Returns `(lims, labels, distances)` as [`RawIndex::range_search`].
    pub fn range_search(&self, x: &[u8], radius: i32) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>)> {
        let nq = x.len() / self.code_size();
        range_results(nq, |res| {
            // SAFETY: x holds nq codes; res is valid.
            check(
                unsafe { faiss_IndexBinary_range_search(self.0.as_ptr(), nq as i64, x.as_ptr(), radius, res) },
                || format!("range search of {nq} binary queries"),
            )
        })
    }

    /// The code stored under `key` (`d/8` bytes).
    pub fn reconstruct(&self, key: i64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.code_size()];
        if ivf_reconstruct(self.0.as_ptr().cast(), true, key, out.as_mut_ptr().cast())? {
            return Ok(out);
        }
        // SAFETY: out holds one code.
        check(unsafe { faiss_IndexBinary_reconstruct(self.0.as_ptr(), key, out.as_mut_ptr()) }, || {
            format!("reconstructing id {key}")
        })?;
        Ok(out)
    }

    /// The codes at internal positions `i0..i0+n` (`n × d/8` bytes); for binary IVF, the
    /// codes of ids `i0..i0+n` (zeros for ids not stored), read by the shim because FAISS
    /// 1.12's `IndexBinaryIVF::reconstruct_n` writes past the end of its output.
    pub fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; n * self.code_size()];
        let mut err = [0 as c_char; 512];
        // SAFETY: out holds n codes; the shim writes only there.
        let rc = unsafe {
            faissx_binary_ivf_reconstruct_n(
                self.0.as_ptr(),
                i0 as i64,
                n as i64,
                out.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if shim_check(rc, &err, || format!("reconstructing vectors {i0}..{}", i0 + n))? == 0 {
            return Ok(out);
        }
        // SAFETY: out holds n codes.
        check(
            unsafe { faiss_IndexBinary_reconstruct_n(self.0.as_ptr(), i0 as i64, n as i64, out.as_mut_ptr()) },
            || format!("reconstructing vectors {i0}..{}", i0 + n),
        )?;
        Ok(out)
    }

    /// Remove the given ids; returns how many were removed.
    pub fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        // SAFETY: valid index; the selector is valid for the call.
        remove_batch(ids, |sel, removed| unsafe { faiss_IndexBinary_remove_ids(self.0.as_ptr(), sel, removed) })
    }

    /// Remove all vectors (trained state is kept).
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: valid index.
        check(unsafe { faiss_IndexBinary_reset(self.0.as_ptr()) }, || "resetting binary index".into())
    }

    /// Class names and parameters.
    pub fn describe(&self) -> Result<RawInfo> {
        // SAFETY: ShimInfo is plain old data; the shim fills it.
        let mut info: ShimInfo = unsafe { std::mem::zeroed() };
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index and buffers.
        let rc = unsafe { faissx_binary_describe(self.0.as_ptr(), &mut info, err.as_mut_ptr(), err.len()) };
        shim_check(rc, &err, || "describing binary index".into())?;
        Ok(info.into_raw(true))
    }

    /// Set a persistent parameter (nprobe of binary IVF, efSearch/efConstruction of binary
    /// HNSW). Returns false if the index has no such knob.
    pub fn set_param(&mut self, p: Param, value: usize) -> Result<bool> {
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index and buffer.
        let rc =
            unsafe { faissx_binary_set_param(self.0.as_ptr(), p as c_int, value as i64, err.as_mut_ptr(), err.len()) };
        Ok(shim_check(rc, &err, || format!("setting {p:?}"))? == 0)
    }

    /// Wrap this (empty) index in `IndexBinaryIDMap` (`IndexBinaryIDMap2` when `v2`), which
    /// takes ownership of it.
    pub fn wrap_idmap(self, v2: bool) -> Result<RawBinaryIndex> {
        let (mut p, mut err) = (std::ptr::null_mut(), [0 as c_char; 512]);
        // SAFETY: valid index we own; on success the wrapper owns it, so `self` is forgotten.
        let rc = unsafe { faissx_binary_wrap_idmap(self.0.as_ptr(), v2 as c_int, &mut p, err.as_mut_ptr(), err.len()) };
        let w = RawBinaryIndex::shim(rc, &err, p, "wrapping binary index in IDMap")?;
        std::mem::forget(self);
        Ok(w)
    }
}

impl Drop for RawBinaryIndex {
    fn drop(&mut self) {
        // SAFETY: we own the pointer.
        unsafe { faiss_IndexBinary_free(self.0.as_ptr()) }
    }
}

// ---- end binary indices ---------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_text_is_trimmed() {
        assert_eq!(
            clean_exception("Error in void faiss::Foo() at /x/y.cpp:12: could not parse index string IVFx"),
            "could not parse index string IVFx"
        );
    }

    #[test]
    fn flat_search_finds_itself() {
        let mut idx = RawIndex::factory(2, "Flat", false).unwrap();
        idx.add(&[0.0, 0.0, 1.0, 1.0, 5.0, 5.0]).unwrap();
        let (d, i) = idx.search(&[1.1, 1.0], 2, None, None).unwrap();
        assert_eq!(i, vec![1, 0]);
        assert!((d[0] - 0.01).abs() < 1e-5);
        let info = idx.describe().unwrap();
        assert_eq!(info.type_name, "IndexFlat");
    }
}
