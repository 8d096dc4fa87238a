//! faissx: build, serve and query FAISS vector indices.
//!
//! The crate is one engine ([`engine`]) and thin commands over it ([`cmd`]). The binary
//! `faissx` parses the command line, calls [`cmd::dispatch`] and maps errors to exit codes.
#![warn(missing_docs)]

pub mod cmd;
pub mod engine;

/// Check that this CPU has the instructions FAISS was compiled for (the default build uses
/// `-march=x86-64-v3`: AVX2, FMA, BMI2). Returns a message instead of letting FAISS die with
/// SIGILL on an older CPU.
pub fn cpu_check() -> Result<(), String> {
    let flags = env!("FAISSX_CXXFLAGS");
    #[cfg(target_arch = "x86_64")]
    {
        let needs_v3 = flags.contains("x86-64-v3") || flags.contains("x86-64-v4") || flags.contains("-mavx2");
        if needs_v3 && !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return Err(format!(
                "this binary's FAISS was compiled with CXXFLAGS=\"{flags}\" (AVX2/FMA) but this CPU lacks them; rebuild with CXXFLAGS=\"-O3\" for a portable build (see README)"
            ));
        }
    }
    let _ = flags;
    Ok(())
}
