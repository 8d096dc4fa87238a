//! Training through the shim (`../shim/train.cpp`: FAISS's unconditional "WARNING
//! clustering" lines silenced, the advice they carry available as `min_train_points`) and
//! FAISS's interrupt callback tied to a stop flag.

use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

extern "C" {
    pub(super) fn faissx_train(
        p: *mut c_void,
        binary: c_int,
        n: i64,
        x: *const c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub(super) fn faissx_min_train_points(
        p: *mut c_void,
        binary: c_int,
        need: *mut i64,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn faissx_set_interrupt(poll: extern "C" fn() -> c_int);
}

/// The flag FAISS's interrupt callback reads (set once per process).
static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn poll_flag() -> c_int {
    // Called by FAISS, possibly from OpenMP threads: one atomic load, no panic possible.
    FLAG.get().is_some_and(|f| f.load(Ordering::Relaxed)) as c_int
}

/// Let FAISS's long loops stop once `flag` is set: k-means iterations (training IVF, PQ,
/// OPQ), HNSW construction and brute-force search blocks then end with FAISS's "computation
/// interrupted" error, so a `Ctrl-C` does not wait for a training run of minutes. FAISS has
/// one callback per process: the first flag given stays (later calls are ignored). Costs a
/// mutex and an atomic load per check, which FAISS spaces out (about every 10 M flops).
pub fn interrupt_on(flag: Arc<AtomicBool>) {
    if FLAG.set(flag).is_ok() {
        // SAFETY: `poll_flag` is a plain function valid for the whole process.
        unsafe { faissx_set_interrupt(poll_flag) };
    }
}
