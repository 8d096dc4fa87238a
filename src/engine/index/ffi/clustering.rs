//! FFI to `clustering.cpp`: FAISS's k-means (`faiss::Clustering`) and the rebuilding of an IVF
//! index's coarse quantizer. Callers check their inputs (sizes, finiteness, index kinds) first;
//! these wrappers only keep the C++ side within its buffers.

use super::{shim_check, RawIndex};
use crate::engine::error::{Error, ErrorKind, Result};
use faiss_sys::FaissIndex;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

extern "C" {
    fn faissx_kmeans(
        d: i64,
        n: i64,
        x: *const f32,
        k: i64,
        niter: i32,
        spherical: i32,
        seed: i64,
        centroids: *mut f32,
        assign: *mut i64,
        obj: *mut f32,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_ivf_recluster(
        p: *const FaissIndex,
        nlist: i64,
        nsample: i64,
        seed: i64,
        out: *mut *mut FaissIndex,
        prev_nlist: *mut i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// What [`kmeans`] computes.
#[derive(Debug, Clone, PartialEq)]
pub struct KmeansOut {
    /// `k × d` centroids, row-major.
    pub centroids: Vec<f32>,
    /// For each input vector, the index of its nearest final centroid.
    pub assign: Vec<i64>,
    /// The last iteration's objective.
    pub obj: f32,
}

/// FAISS's k-means of the `n × d` vectors `x` (`n = x.len() / d`, at least `k`) into `k`
/// clusters: `niter` iterations from `seed`; `spherical` normalizes centroids and assigns by
/// inner product, else by L2.
///
/// Errors: `Faiss` when FAISS refuses (fewer points than clusters, NaN input).
pub fn kmeans(x: &[f32], d: usize, k: usize, niter: u32, spherical: bool, seed: u32) -> Result<KmeansOut> {
    if d == 0 || !x.len().is_multiple_of(d) || k == 0 || x.len() / d < k || niter == 0 {
        return Err(Error::invalid(format!(
            "k-means of {} floats in d={d} into k={k} clusters with niter={niter}: needs d > 0, whole rows, 1 <= k <= rows and niter >= 1",
            x.len()
        )));
    }
    let n = x.len() / d;
    let mut centroids = vec![0f32; k * d];
    let mut assign = vec![-1i64; n];
    let mut obj = 0f32;
    let mut err = [0 as c_char; 512];
    // SAFETY: x holds n × d floats, centroids k × d, assign n; the sizes passed are those.
    let rc = unsafe {
        faissx_kmeans(
            d as i64,
            n as i64,
            x.as_ptr(),
            k as i64,
            niter.min(i32::MAX as u32) as i32,
            spherical as i32,
            seed as i64,
            centroids.as_mut_ptr(),
            assign.as_mut_ptr(),
            &mut obj,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    shim_check(rc, &err, || format!("k-means of {n} vectors into {k} clusters"))?;
    Ok(KmeansOut { centroids, assign, obj })
}

impl RawIndex {
    /// A copy of this IVF index (or of an IDMap/IDMap2 over one) with `nlist` inverted lists:
    /// FAISS's IVF training of a fresh coarse quantizer on `nsample` of the stored vectors
    /// (chosen by `faiss::rand_perm(seed)`; all when `nsample >= ntotal`), the PQ or scalar
    /// quantizer retrained, every vector decoded and re-added under its id. Returns the copy
    /// and the old `nlist`; `self` is unchanged.
    ///
    /// Errors: `Unsupported` for anything but an in-memory `IndexIVFFlat`, `IndexIVFPQ` or
    /// `IndexIVFScalarQuantizer` with a flat or HNSW-flat quantizer; `Faiss` when FAISS fails.
    pub fn ivf_reclustered(&self, nlist: usize, nsample: usize, seed: u32) -> Result<(RawIndex, usize)> {
        let mut out = std::ptr::null_mut();
        let mut prev = 0i64;
        let mut err = [0 as c_char; 512];
        // SAFETY: valid index (only read), out-pointers and error buffer.
        let rc = unsafe {
            faissx_ivf_recluster(
                self.0.as_ptr(),
                nlist as i64,
                nsample as i64,
                seed as i64,
                &mut out,
                &mut prev,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 3 {
            // SAFETY: the shim NUL-terminates `err` within its length.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            return Err(Error::new(ErrorKind::Unsupported, msg));
        }
        shim_check(rc, &err, || format!("reclustering into {nlist} lists"))?;
        Ok((RawIndex::from_ptr(out, "ivf_recluster")?, prev.max(0) as usize))
    }
}
