//! [`RawIndex`]: an owned FAISS `Index*` (float vectors, `n × d` f32 row-major), with what the
//! binary kind lacks: the factory, per-call search parameters, on-disk inverted lists, merges,
//! extraction and renumbering of stored vectors. The methods both kinds share are in
//! `ffi/mod.rs` (`shared_methods!`).

use super::{check, last_error, path_cstr, shim, shim_check};
use crate::engine::error::{Error, Result};
use faiss_sys::*;
use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::ptr::NonNull;

extern "C" {
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

/// An owned FAISS `Index*`: vectors of `d` f32.
pub struct RawIndex(pub(super) NonNull<FaissIndex>);

impl RawIndex {
    /// `faiss::index_factory(d, description, metric)`.
    ///
    /// Errors: `InvalidInput` naming the description when FAISS cannot parse it.
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

    /// Deep copy (`faiss::clone_index`).
    pub fn try_clone(&self) -> Result<RawIndex> {
        let mut p = std::ptr::null_mut();
        // SAFETY: valid index and out-pointer.
        check(unsafe { faiss_clone_index(self.0.as_ptr(), &mut p) }, || "cloning index".into())?;
        RawIndex::from_ptr(p, "clone_index")
    }

    /// Floats per vector: `d`.
    pub fn row_len(&self) -> usize {
        self.d()
    }

    /// True for METRIC_INNER_PRODUCT, false for METRIC_L2 (other metrics are reported as L2).
    pub fn is_inner_product(&self) -> bool {
        // SAFETY: valid index.
        unsafe { faiss_Index_metric_type(self.0.as_ptr()) == FaissMetricType_METRIC_INNER_PRODUCT }
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
        let p = self.0.as_ptr();
        let (nprobe, ef_search) = (nprobe.map_or(0, |v| v as i64), ef_search.map_or(0, |v| v as i64));
        // SAFETY: buffers sized nq × d, nq × k; the shim calls the const Index::search.
        shim(
            || format!("searching {nq} queries"),
            |e, n| unsafe {
                faissx_search(
                    p,
                    nq as i64,
                    x.as_ptr(),
                    k as i64,
                    nprobe,
                    ef_search,
                    dist.as_mut_ptr(),
                    ids.as_mut_ptr(),
                    e,
                    n,
                )
            },
        )?;
        Ok((dist, ids))
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

    /// FAISS's generic `merge_from(other, add_id)` (Flat and other flat-code indices, IVF with
    /// the same trained quantizer, IDMap/IDMap2, PreTransform). `other` is emptied. FAISS
    /// checks compatibility first, so on error `self` is unchanged.
    pub fn merge_from(&mut self, other: &mut RawIndex, add_id: i64) -> Result<()> {
        let (a, b) = (self.0.as_ptr(), other.0.as_ptr());
        // SAFETY: two distinct valid indices (`&mut` on both) and an error buffer.
        shim(|| "merging indices".into(), |e, n| unsafe { faissx_merge_from(a, b, add_id, e, n) }).map(|_| ())
    }

    /// Ids, and with `vectors` the reconstructed vectors (`n × d`), of the stored vectors at
    /// positions `i0..i0+n` (IVF: inverted lists in order; IDMap: the wrapped index's
    /// positions; otherwise 0..ntotal, where the id is the position).
    pub fn extract(&self, i0: usize, n: usize, vectors: bool) -> Result<(Vec<i64>, Vec<f32>)> {
        let mut ids = vec![-1i64; n];
        let mut x = if vectors { vec![0f32; n * self.d()] } else { Vec::new() };
        let xp = if vectors { x.as_mut_ptr() } else { std::ptr::null_mut() };
        let p = self.0.as_ptr();
        // SAFETY: ids holds n ids, x (if requested) n × d floats; the shim checks the range.
        shim(
            || format!("reading stored vectors {i0}..{}", i0 + n),
            |e, len| unsafe { faissx_extract(p, i0 as i64, n as i64, ids.as_mut_ptr(), xp, e, len) },
        )?;
        Ok((ids, x))
    }

    /// Renumber the stored vectors `base..base+ntotal`: IDMap in insertion order, IVF in the
    /// order of the old ids; position-numbered indices accept only `base` 0.
    pub fn renumber(&mut self, base: i64) -> Result<()> {
        let p = self.0.as_ptr();
        // SAFETY: valid index and buffer.
        shim(|| "renumbering ids".into(), |e, n| unsafe { faissx_renumber(p, base, e, n) }).map(|_| ())
    }
}

/// On-disk inverted lists (FAISS `OnDiskInvertedLists`), which the C API lacks. Each returns
/// false when the index is not of the kind the operation needs.
impl RawIndex {
    /// Replace the empty lists of this trained IVF index with on-disk lists in `path`.
    /// Returns false if the index is not IVF.
    pub fn ondisk_create(&mut self, path: &Path) -> Result<bool> {
        let (c, p) = (path_cstr(path)?, self.0.as_ptr());
        // SAFETY: valid index, path and buffer.
        let rc = shim(
            || format!("{}: creating on-disk inverted lists", path.display()),
            |e, n| unsafe { faissx_ondisk_create(p, c.as_ptr(), e, n) },
        )?;
        Ok(rc == 0)
    }

    /// Append the lists of `shard` (same trained quantizer) to this index's on-disk lists.
    pub fn ondisk_merge_shard(&mut self, shard: &mut RawIndex) -> Result<bool> {
        let (a, b) = (self.0.as_ptr(), shard.0.as_ptr());
        // SAFETY: both indices valid; the shim checks their types.
        let rc = shim(
            || "merging a shard into on-disk lists".into(),
            |e, n| unsafe { faissx_ondisk_merge_shard(a, b, e, n) },
        )?;
        Ok(rc == 0)
    }

    /// Merge the lists of all `srcs` (same trained quantizer; only read) into this index's
    /// empty on-disk lists in one pass. Returns false if an index is not IVF or the lists are
    /// not on disk.
    pub fn ondisk_merge_many(&mut self, srcs: &mut [&mut RawIndex]) -> Result<bool> {
        let mut ptrs: Vec<*mut FaissIndex> = srcs.iter_mut().map(|r| r.0.as_ptr()).collect();
        let p = self.0.as_ptr();
        // SAFETY: every pointer is a valid index borrowed for the call; the shim checks types.
        let rc = shim(
            || "merging inverted lists into on-disk lists".into(),
            |e, n| unsafe { faissx_ondisk_merge_many(p, ptrs.as_mut_ptr(), ptrs.len() as i64, e, n) },
        )?;
        Ok(rc == 0)
    }

    /// Re-point the on-disk lists at `path` and/or set their prefetch thread count.
    pub fn ondisk_configure(&mut self, path: Option<&Path>, prefetch_threads: Option<usize>) -> Result<bool> {
        let c = path.map(path_cstr).transpose()?;
        let (p, cp) = (self.0.as_ptr(), c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()));
        let threads = prefetch_threads.map_or(-1, |n| n as c_int);
        // SAFETY: valid index; path null or NUL-terminated.
        let rc = shim(
            || "configuring on-disk lists".into(),
            |e, n| unsafe { faissx_ondisk_configure(p, cp, threads, e, n) },
        )?;
        Ok(rc == 0)
    }

    /// A copy of this bare IVF index with empty in-memory lists (its own lists, possibly
    /// mapped or on disk, are neither copied nor changed). `None` if it is not a bare IVF.
    pub fn ivf_empty_clone(&mut self) -> Result<Option<RawIndex>> {
        let mut out = std::ptr::null_mut();
        let p = self.0.as_ptr();
        // SAFETY: valid index, out-pointer and buffer. The shim swaps the list pointer of
        // `self` for the duration of the call and restores it, hence `&mut self`.
        let rc = shim(
            || "copying an IVF index without its lists".into(),
            |e, n| unsafe { faissx_ivf_empty_clone(p, &mut out, e, n) },
        )?;
        if rc == 2 {
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

/// L2-normalize each row of `x` (`n × d`) in place (FAISS `fvec_renorm_L2`; zero rows stay 0).
pub fn normalize_l2(x: &mut [f32], d: usize) {
    if d == 0 || x.is_empty() {
        return;
    }
    // SAFETY: x holds n × d floats.
    unsafe { faiss_fvec_renorm_L2(d, x.len() / d, x.as_mut_ptr()) }
}
