//! The only module with `unsafe`: thin wrappers over FAISS's C API (`faiss-sys`) and faissx's
//! C++ shim (`../shim/`, split the same way). Everything above this module is safe Rust.
//!
//! faiss-rs's `Index::search` takes `&mut self` although FAISS's search is const; here search,
//! range search and reconstruct take `&self`, so one opened index can serve concurrent readers
//! (the read/write split: mutation needs `&mut`).
//!
//! Files: `float.rs` ([`RawIndex`], FAISS's `Index`: vectors of `d` f32), `binary.rs`
//! ([`RawBinaryIndex`], FAISS's `IndexBinary`: codes of `d` bits in `d / 8` bytes),
//! `select.rs` (search restricted to a set of ids), `threads.rs` (OpenMP and BLAS threads),
//! `clustering.rs` (FAISS's k-means, IVF reclustering), `train.rs` (training without FAISS's
//! stderr warnings, FAISS's interrupt callback). This file holds what both kinds share: error
//! handling, index facts ([`RawInfo`]), file I/O, range-search results, and the methods whose
//! only difference between the kinds is the C function they call (`shared_methods!`).

mod binary;
pub mod clustering;
mod float;
mod select;
mod threads;
mod train;

pub use binary::RawBinaryIndex;
pub use float::{normalize_l2, RawIndex};
pub use select::FilterSupport;
pub use threads::{num_threads, set_num_threads, single_threaded_blas};
pub use train::interrupt_on;

use crate::engine::error::{Error, ErrorKind, Result};
use faiss_sys::*;
use std::ffi::{c_void, CStr, CString};
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
    fn faissx_describe(p: *const c_void, binary: c_int, out: *mut ShimInfo, err: *mut c_char, errlen: usize) -> c_int;
    fn faissx_set_param(
        p: *mut c_void,
        binary: c_int,
        which: c_int,
        value: i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_read_index(
        fname: *const c_char,
        io_flags: c_int,
        binary: c_int,
        out: *mut *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_ivf_reconstruct(
        p: *const c_void,
        binary: c_int,
        key: i64,
        out: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
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

/// Call a shim function with a fresh error buffer (`call(err, errlen)`): `Ok(0)` done,
/// `Ok(2)` "not this kind of index", else a `Faiss` error with the shim's message.
fn shim(what: impl FnOnce() -> String, call: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<c_int> {
    let mut err = [0 as c_char; 512];
    let rc = call(err.as_mut_ptr(), err.len());
    shim_check(rc, &err, what)
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

/// Parameters whose value `set_param` ([`RawIndex`], [`RawBinaryIndex`]) can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// IVF `nprobe`.
    Nprobe = 0,
    /// HNSW `efSearch`.
    EfSearch = 1,
    /// HNSW `efConstruction`.
    EfConstruction = 2,
}

/// The methods FAISS's float `Index` and binary `IndexBinary` have in common, written once
/// for [`RawIndex`] and [`RawBinaryIndex`]. Each row of the table names an operation's C
/// function for the float handle, then for the binary one; a vector is `row_len()` values
/// (`d` f32, or `d / 8` bytes).
macro_rules! shared_methods {
    ($($op:ident: $float:ident, $binary:ident;)*) => {
        shared_methods!(@impl RawIndex, FaissIndex, f32, f32, false, "", $($op = $float),*);
        shared_methods!(@impl RawBinaryIndex, FaissIndexBinary, u8, c_int, true, "binary ", $($op = $binary),*);
    };
    (@impl $ty:ident, $c:ty, $elem:ty, $radius:ty, $binary:literal, $kind:literal,
        free = $free:ident, d = $d:ident, ntotal = $nt:ident, is_trained = $tr:ident,
        add = $add:ident, add_with_ids = $addi:ident, range_search = $rs:ident, reconstruct = $rec:ident,
        remove_ids = $rm:ident, reset = $reset:ident, write = $write:ident) => {
        // SAFETY: a FAISS index has no thread affinity. Mutation needs `&mut`; the `&self`
        // methods call only const FAISS methods (search, range_search, reconstruct), which
        // FAISS documents as safe to call concurrently on CPU indices.
        unsafe impl Send for $ty {}
        // SAFETY: see above.
        unsafe impl Sync for $ty {}

        impl $ty {
            fn from_ptr(p: *mut $c, what: &str) -> Result<$ty> {
                NonNull::new(p).map($ty).ok_or_else(|| Error::faiss(what.to_string(), "null index".into()))
            }

            #[doc = concat!("`faiss::read_index` of a ", $kind, "index file with FAISS's `io_flags`.")]
            ///
            /// Errors: `Format` naming `path` when FAISS cannot read it.
            pub fn read(path: &Path, io_flags: i32) -> Result<$ty> {
                $ty::from_ptr(read_file(path, io_flags, $binary)?.cast(), concat!("reading ", $kind, "index"))
            }

            /// Write the index to `path` in FAISS's format, every step checked
            /// (`write_checked`).
            pub fn write(&self, path: &Path) -> Result<()> {
                // SAFETY: valid index; `f` is an open stream.
                write_checked(path, concat!("writing ", $kind, "index"), |f| unsafe { $write(self.0.as_ptr(), f) })
            }

            /// Dimension `d` (floats per vector, or bits per binary code).
            pub fn d(&self) -> usize {
                // SAFETY: valid index.
                unsafe { $d(self.0.as_ptr()) as usize }
            }

            /// Number of stored vectors.
            pub fn ntotal(&self) -> usize {
                // SAFETY: valid index.
                unsafe { $nt(self.0.as_ptr()) as usize }
            }

            /// Whether training is done.
            pub fn is_trained(&self) -> bool {
                // SAFETY: valid index.
                unsafe { $tr(self.0.as_ptr()) != 0 }
            }

            /// Train on `x` (`n × row_len()`), without FAISS's "WARNING clustering" lines
            /// on stderr ([`RawIndex::min_train_points`] gives the same advice).
            pub fn train(&mut self, x: &[$elem]) -> Result<()> {
                let n = x.len() / self.row_len();
                let p = self.0.as_ptr().cast();
                let xp = x.as_ptr().cast();
                // SAFETY: valid index of the kind `binary` says; x holds n vectors.
                shim(|| format!(concat!("training on {} ", $kind, "vectors"), n), |e, len| unsafe {
                    train::faissx_train(p, $binary as c_int, n as i64, xp, e, len)
                })?;
                Ok(())
            }

            /// The number of training vectors below which FAISS's k-means would warn
            /// (`K × 39` for the index's largest clustering of `K` centroids: IVF lists,
            /// PQ/RQ codebooks); 0 when training clusters nothing.
            pub fn min_train_points(&self) -> Result<usize> {
                let mut need = 0i64;
                let p = self.0.as_ptr().cast();
                // SAFETY: valid index of the kind `binary` says; `need` is a valid i64.
                shim(|| concat!("inspecting ", $kind, "index").into(), |e, len| unsafe {
                    train::faissx_min_train_points(p, $binary as c_int, &mut need, e, len)
                })?;
                Ok(need.max(0) as usize)
            }

            /// Add `x` (`n × row_len()`) with `ids` (`n`) if given, else sequential ids.
            pub fn add(&mut self, x: &[$elem], ids: Option<&[i64]>) -> Result<()> {
                let n = x.len() / self.row_len();
                if let Some(ids) = ids {
                    assert_eq!(n, ids.len(), "invariant: one id per vector");
                }
                let p = self.0.as_ptr();
                // SAFETY: x holds n vectors and ids (checked above) n ids.
                let rc = unsafe {
                    match ids {
                        Some(ids) => $addi(p, n as i64, x.as_ptr(), ids.as_ptr()),
                        None => $add(p, n as i64, x.as_ptr()),
                    }
                };
                check(rc, || format!(concat!("adding {} ", $kind, "vectors"), n))
            }

            /// Range search of `x` (`nq × row_len()`) within `radius` (binary: Hamming distance
            /// below it). Returns `(lims, labels, distances)`; query `i`'s results are
            /// `lims[i]..lims[i+1]`.
            pub fn range_search(&self, x: &[$elem], radius: $radius) -> Result<(Vec<usize>, Vec<i64>, Vec<f32>)> {
                let nq = x.len() / self.row_len();
                range_results(nq, |res| {
                    // SAFETY: x holds nq vectors; res is valid.
                    check(unsafe { $rs(self.0.as_ptr(), nq as i64, x.as_ptr(), radius, res) }, || {
                        format!(concat!("range search of {} ", $kind, "queries"), nq)
                    })
                })
            }

            /// The vector stored under `key` (a FAISS id; under IDMap2 the user id):
            /// `row_len()` values. IVF indices (bare or under IDMap2) without a direct map are
            /// served by a scan of their lists' ids (faissx's shim).
            ///
            /// Errors: `NotFound` when such an IVF index holds no vector with id `key`.
            pub fn reconstruct(&self, key: i64) -> Result<Vec<$elem>> {
                let mut out = vec![<$elem>::default(); self.row_len()];
                if ivf_reconstruct(self.0.as_ptr().cast(), $binary, key, out.as_mut_ptr().cast())? {
                    return Ok(out);
                }
                // SAFETY: out holds one vector.
                check(unsafe { $rec(self.0.as_ptr(), key, out.as_mut_ptr()) }, || {
                    format!("reconstructing id {key}")
                })?;
                Ok(out)
            }

            /// Remove the given ids; returns how many were removed.
            pub fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
                // SAFETY: valid index; the selector is valid for the call.
                remove_batch(ids, |sel, removed| unsafe { $rm(self.0.as_ptr(), sel, removed) })
            }

            /// Remove all vectors (trained state is kept).
            pub fn reset(&mut self) -> Result<()> {
                // SAFETY: valid index.
                check(unsafe { $reset(self.0.as_ptr()) }, || concat!("resetting ", $kind, "index").into())
            }

            /// Class names and parameters, through the shim (which looks through IDMap,
            /// PreTransform and Refine wrappers).
            pub fn describe(&self) -> Result<RawInfo> {
                // SAFETY: ShimInfo is plain old data; the shim fills it.
                let mut info: ShimInfo = unsafe { std::mem::zeroed() };
                let p = self.0.as_ptr().cast();
                // SAFETY: valid index of the kind `binary` says, and valid buffers.
                shim(|| concat!("describing ", $kind, "index").into(), |e, n| unsafe {
                    faissx_describe(p, $binary as c_int, &mut info, e, n)
                })?;
                Ok(info.into_raw($binary))
            }

            /// Set a persistent search/build parameter (IVF nprobe, HNSW efSearch /
            /// efConstruction). Returns false if the index has no such knob.
            pub fn set_param(&mut self, p: Param, value: usize) -> Result<bool> {
                let ptr = self.0.as_ptr().cast();
                // SAFETY: valid index of the kind `binary` says, and a valid buffer.
                let rc = shim(|| format!("setting {p:?}"), |e, n| unsafe {
                    faissx_set_param(ptr, $binary as c_int, p as c_int, value as i64, e, n)
                })?;
                Ok(rc == 0)
            }
        }

        impl Drop for $ty {
            fn drop(&mut self) {
                // SAFETY: we own the pointer.
                unsafe { $free(self.0.as_ptr()) }
            }
        }
    };
}

shared_methods! {
    free: faiss_Index_free, faiss_IndexBinary_free;
    d: faiss_Index_d, faiss_IndexBinary_d;
    ntotal: faiss_Index_ntotal, faiss_IndexBinary_ntotal;
    is_trained: faiss_Index_is_trained, faiss_IndexBinary_is_trained;
    add: faiss_Index_add, faiss_IndexBinary_add;
    add_with_ids: faiss_Index_add_with_ids, faiss_IndexBinary_add_with_ids;
    range_search: faiss_Index_range_search, faiss_IndexBinary_range_search;
    reconstruct: faiss_Index_reconstruct, faiss_IndexBinary_reconstruct;
    remove_ids: faiss_Index_remove_ids, faiss_IndexBinary_remove_ids;
    reset: faiss_Index_reset, faiss_IndexBinary_reset;
    write: faiss_write_index, faiss_write_index_binary;
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
fn read_file(path: &Path, io_flags: i32, binary: bool) -> Result<*mut c_void> {
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
fn ivf_reconstruct(p: *const c_void, binary: bool, key: i64, out: *mut c_void) -> Result<bool> {
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
        idx.add(&[0.0, 0.0, 1.0, 1.0, 5.0, 5.0], None).unwrap();
        let (d, i) = idx.search(&[1.1, 1.0], 2, None, None).unwrap();
        assert_eq!(i, vec![1, 0]);
        assert!((d[0] - 0.01).abs() < 1e-5);
        let info = idx.describe().unwrap();
        assert_eq!(info.type_name, "IndexFlat");
    }
}
