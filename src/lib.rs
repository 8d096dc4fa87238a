//! faissx: build, serve and query FAISS vector indices.
//!
//! The crate is one engine ([`engine`]) and thin commands over it ([`cmd`]). The binary
//! `faissx` parses the command line, calls [`cmd::dispatch`] and maps errors to exit codes.
#![warn(missing_docs)]

pub mod cmd;
pub mod engine;

/// Check that this CPU has the instructions FAISS was compiled for (the default build uses
/// `-march=x86-64-v3`: AVX2, FMA, BMI2; build.rs reads the flags from FAISS's CMake cache).
/// Returns a message instead of letting FAISS die with SIGILL on an older CPU.
pub fn cpu_check() -> Result<(), String> {
    let flags = env!("FAISSX_CXXFLAGS");
    #[cfg(target_arch = "x86_64")]
    {
        let needs_v4 = flags.contains("x86-64-v4") || flags.contains("-mavx512");
        let needs_v3 = needs_v4 || flags.contains("x86-64-v3") || flags.contains("-mavx2");
        let has_v3 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let has_v4 = has_v3 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw");
        if (needs_v3 && !has_v3) || (needs_v4 && !has_v4) {
            return Err(format!(
                "this binary's FAISS was compiled with \"{flags}\" but this CPU lacks those instructions; make a portable build (README, \"SIMD and portable builds\")"
            ));
        }
    }
    let _ = flags;
    Ok(())
}
