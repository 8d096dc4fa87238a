//! Threads FAISS computes with: OpenMP's per-thread count, and OpenBLAS's own pool kept out of
//! its way.

use std::os::raw::c_int;

extern "C" {
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
