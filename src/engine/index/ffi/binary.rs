//! [`RawBinaryIndex`]: an owned FAISS `IndexBinary*` (packed bit codes, Hamming distances),
//! with what differs from the float kind: the factory and its safe subset, search with a
//! per-call nprobe, clone, IDMap wrapping and `reconstruct_n`. The methods both kinds share
//! are in `ffi/mod.rs` (`shared_methods!`).

use super::{check, last_error, shim, Error, Result};
use faiss_sys::*;
use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

extern "C" {
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
pub struct RawBinaryIndex(pub(super) NonNull<FaissIndexBinary>);

impl RawBinaryIndex {
    /// `faiss::index_binary_factory(d, description)` for the types `check_binary_factory`
    /// accepts: `BFlat`, `BIVF<nlist>`, `BIVF<nlist>_HNSW<M>`, `BHNSW<M>`, `BHash<b>`; `d` in
    /// bits, a positive multiple of 8.
    ///
    /// Errors: `InvalidInput` for a bad `d` or description.
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

    /// Deep copy (any binary index type).
    pub fn try_clone(&self) -> Result<RawBinaryIndex> {
        let (mut out, p) = (std::ptr::null_mut(), self.0.as_ptr());
        // SAFETY: valid index, out-pointer and buffer.
        shim(|| "cloning binary index".into(), |e, n| unsafe { faissx_binary_clone(p, &mut out, e, n) })?;
        RawBinaryIndex::from_ptr(out, "cloning binary index")
    }

    /// Bytes per code: `d / 8`.
    pub fn row_len(&self) -> usize {
        self.d() / 8
    }

    /// k-NN search of `x` (`nq × d/8` bytes) with an optional per-call nprobe (binary IVF).
    /// Returns `(Hamming distances, labels)`, each `nq × k`; missing neighbours are id −1 at
    /// distance `f32::MAX`, as FAISS pads float results.
    pub fn search(&self, x: &[u8], k: usize, nprobe: Option<usize>) -> Result<(Vec<f32>, Vec<i64>)> {
        let nq = x.len() / self.row_len();
        let mut dist = vec![0i32; nq * k];
        let mut ids = vec![-1i64; nq * k];
        let (p, nprobe) = (self.0.as_ptr(), nprobe.map_or(0, |v| v as i64));
        // SAFETY: buffers sized nq codes, nq × k; the shim calls only const methods.
        shim(
            || format!("searching {nq} binary queries"),
            |e, n| unsafe {
                faissx_binary_search(
                    p,
                    nq as i64,
                    x.as_ptr(),
                    k as i64,
                    nprobe,
                    dist.as_mut_ptr(),
                    ids.as_mut_ptr(),
                    e,
                    n,
                )
            },
        )?;
        // Missing neighbours come back as i32::MAX; report them as FAISS pads float results.
        let dist = dist.into_iter().map(|v| if v == i32::MAX { f32::MAX } else { v as f32 }).collect();
        Ok((dist, ids))
    }

    /// The codes at internal positions `i0..i0+n` (`n × d/8` bytes); for binary IVF, the
    /// codes of ids `i0..i0+n` (zeros for ids not stored), read by the shim because FAISS
    /// 1.12's `IndexBinaryIVF::reconstruct_n` writes past the end of its output.
    pub fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; n * self.row_len()];
        let (p, o) = (self.0.as_ptr(), out.as_mut_ptr());
        let what = || format!("reconstructing vectors {i0}..{}", i0 + n);
        // SAFETY: out holds n codes; the shim writes only there.
        let rc = shim(what, |e, len| unsafe { faissx_binary_ivf_reconstruct_n(p, i0 as i64, n as i64, o, e, len) })?;
        if rc == 0 {
            return Ok(out);
        }
        // SAFETY: out holds n codes.
        check(unsafe { faiss_IndexBinary_reconstruct_n(p, i0 as i64, n as i64, o) }, what)?;
        Ok(out)
    }

    /// Wrap this (empty) index in `IndexBinaryIDMap` (`IndexBinaryIDMap2` when `v2`), which
    /// takes ownership of it.
    pub fn wrap_idmap(self, v2: bool) -> Result<RawBinaryIndex> {
        let (mut out, p) = (std::ptr::null_mut(), self.0.as_ptr());
        // SAFETY: valid index we own; on success the wrapper owns it, so `self` is forgotten.
        shim(
            || "wrapping binary index in IDMap".into(),
            |e, n| unsafe { faissx_binary_wrap_idmap(p, v2 as c_int, &mut out, e, n) },
        )?;
        let w = RawBinaryIndex::from_ptr(out, "wrapping binary index in IDMap")?;
        std::mem::forget(self);
        Ok(w)
    }
}
