//! Search restricted to a set of FAISS ids: [`RawIndex`]'s side of `../select.rs`, over the
//! shim's `select.cpp` (an IDSelector in per-call SearchParameters, or an exact scan of the
//! reconstructed matching vectors). The ids given to every method here are sorted ascending,
//! distinct and non-negative (an `IdSet`), and there is at least one.

use super::{range_results, shim, RawIndex};
use crate::engine::error::Result;
use faiss_sys::FaissIndex;
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};

extern "C" {
    fn faissx_filter_support(
        p: *const FaissIndex,
        selector: *mut i32,
        exact: *mut i32,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn faissx_search_selected(
        p: *const FaissIndex,
        n: i64,
        x: *const f32,
        k: i64,
        ids: *const i64,
        nids: i64,
        nprobe: i64,
        ef_search: i64,
        d: *mut f32,
        i: *mut i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn faissx_range_search_selected(
        p: *const FaissIndex,
        n: i64,
        x: *const f32,
        radius: f32,
        ids: *const i64,
        nids: i64,
        result: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn faissx_search_exact(
        p: *const FaissIndex,
        n: i64,
        x: *const f32,
        k: i64,
        ids: *const i64,
        nids: i64,
        d: *mut f32,
        i: *mut i64,
        scanned: *mut i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn faissx_range_search_exact(
        p: *const FaissIndex,
        n: i64,
        x: *const f32,
        radius: f32,
        ids: *const i64,
        nids: i64,
        result: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// What a restricted search can do on an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterSupport {
    /// The index that does the search (under IDMap / PreTransform; a Refine's base) honours
    /// an IDSelector in its SearchParameters (Flat, SQ, HNSW Flat/PQ/SQ, IVF Flat/PQ/SQ/
    /// PQFastScan/RaBitQ, RaBitQ). FAISS's IndexPQ, LSH, additive quantizers and fast-scan
    /// flat indices refuse one.
    pub selector: bool,
    /// Distances to reconstructed vectors are what the index's own search reports (not for
    /// Hamming searches such as LSH, nor RaBitQ's estimates), so an exact scan of the
    /// matching vectors can stand in for its search.
    pub exact: bool,
}

impl FilterSupport {
    /// Whether the index allows the exact path (`exact`) or the selector path (`!exact`).
    pub fn allows(&self, exact: bool) -> bool {
        if exact {
            self.exact
        } else {
            self.selector
        }
    }
}

impl RawIndex {
    /// Which restricted-search paths this index allows.
    pub fn filter_support(&self) -> Result<FilterSupport> {
        let (mut sel, mut exact) = (0i32, 0i32);
        let p = self.0.as_ptr();
        // SAFETY: valid index and out-pointers.
        shim(
            || "inspecting index for filtered search".into(),
            |e, n| unsafe { faissx_filter_support(p, &mut sel, &mut exact, e, n) },
        )?;
        Ok(FilterSupport { selector: sel != 0, exact: exact != 0 })
    }

    /// k-NN search of `x` (`nq × d`) among `ids` only, through an IDSelector, with per-call
    /// nprobe / efSearch. `(distances, labels)`, each `nq × k`, labels -1 past the matches;
    /// `None` when a label outside `ids` came back (the index ignored the selector).
    pub fn search_selected(
        &self,
        x: &[f32],
        k: usize,
        ids: &[i64],
        nprobe: Option<usize>,
        ef_search: Option<usize>,
    ) -> Result<Option<(Vec<f32>, Vec<i64>)>> {
        let nq = x.len() / self.d();
        let mut dist = vec![0f32; nq * k];
        let mut labels = vec![-1i64; nq * k];
        let p = self.0.as_ptr();
        let (nprobe, ef_search) = (nprobe.map_or(0, |v| v as i64), ef_search.map_or(0, |v| v as i64));
        // SAFETY: x holds nq × d floats, ids nids ids, dist/labels nq × k; the shim calls the
        // const search of the index.
        let rc = shim(
            || format!("searching {nq} queries among {} ids", ids.len()),
            |e, n| unsafe {
                faissx_search_selected(
                    p,
                    nq as i64,
                    x.as_ptr(),
                    k as i64,
                    ids.as_ptr(),
                    ids.len() as i64,
                    nprobe,
                    ef_search,
                    dist.as_mut_ptr(),
                    labels.as_mut_ptr(),
                    e,
                    n,
                )
            },
        )?;
        Ok((rc == 0).then_some((dist, labels)))
    }

    /// Exact k-NN of `x` (`nq × d`) among the stored vectors with `ids`, reconstructed and
    /// compared with every query. `(distances, labels, vectors found)`, `nq × k` each, sorted
    /// closest first, padded with -1 and FAISS's neutral distance.
    pub fn search_exact(&self, x: &[f32], k: usize, ids: &[i64]) -> Result<(Vec<f32>, Vec<i64>, usize)> {
        let nq = x.len() / self.d();
        let mut dist = vec![0f32; nq * k];
        let mut labels = vec![-1i64; nq * k];
        let mut scanned = 0i64;
        let p = self.0.as_ptr();
        // SAFETY: as in search_selected; scanned is a valid out-pointer.
        shim(
            || format!("exact search of {nq} queries among {} ids", ids.len()),
            |e, n| unsafe {
                faissx_search_exact(
                    p,
                    nq as i64,
                    x.as_ptr(),
                    k as i64,
                    ids.as_ptr(),
                    ids.len() as i64,
                    dist.as_mut_ptr(),
                    labels.as_mut_ptr(),
                    &mut scanned,
                    e,
                    n,
                )
            },
        )?;
        Ok((dist, labels, scanned.max(0) as usize))
    }

    /// Range search of `x` (`nq × d`) among `ids` only: through an IDSelector, or, with
    /// `exact`, over the reconstructed matching vectors. `(lims, labels, distances)` as
    /// [`RawIndex::range_search`].
    pub fn range_search_in(
        &self,
        x: &[f32],
        radius: f32,
        ids: &[i64],
        exact: bool,
    ) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>)> {
        let nq = x.len() / self.d();
        let p = self.0.as_ptr();
        let f = if exact { faissx_range_search_exact } else { faissx_range_search_selected };
        range_results(nq, |res| {
            // SAFETY: x holds nq vectors, ids nids ids; res is a valid RangeSearchResult for nq
            // queries (faiss::RangeSearchResult behind the C API's handle).
            shim(
                || format!("range search of {nq} queries among {} ids", ids.len()),
                |e, n| unsafe { f(p, nq as i64, x.as_ptr(), radius, ids.as_ptr(), ids.len() as i64, res.cast(), e, n) },
            )
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IVF index finds the matching vectors through its direct map when it has one, else
    /// by a pass over its lists' ids: the same exact answer either way.
    #[test]
    fn ivf_exact_scan_with_and_without_a_direct_map() {
        let d = 4;
        let x: Vec<f32> = (0..400 * d).map(|i| ((i * 7919) % 1013) as f32 / 1013.0).collect();
        let mut plain = RawIndex::factory(d, "IVF8,Flat", false).unwrap();
        plain.train(&x).unwrap();
        plain.add(&x, None).unwrap();
        let mapped = plain.try_clone().unwrap();
        // SAFETY: `mapped` is a valid IVF index (the cast is non-null for it).
        unsafe {
            let ivf = faiss_sys::faiss_IndexIVF_cast(mapped.0.as_ptr());
            assert!(!ivf.is_null());
            assert_eq!(faiss_sys::faiss_IndexIVF_make_direct_map(ivf, 1), 0);
        }
        let ids = [3i64, 50, 51, 200, 399, 4000];
        let q = &x[10 * d..12 * d];
        let a = plain.search_exact(q, 3, &ids).unwrap();
        let b = mapped.search_exact(q, 3, &ids).unwrap();
        assert_eq!(a.2, 5, "id 4000 is not stored");
        assert_eq!(a, b);
        // Query 0 is vector 10 itself, not in the set; its nearest in the set is one of them.
        assert!(a.1[..3].iter().all(|i| ids.contains(i)));
    }
}
