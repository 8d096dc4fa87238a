//! Compiles faissx's small C++ shim (`src/engine/index/shim/`) against the headers of the
//! FAISS that `faiss-sys` builds, and records the C++ flags FAISS was built with so that the
//! binary can refuse to start on a CPU that lacks the instructions they assume.

use std::path::{Path, PathBuf};

fn has_header(dir: &Path) -> bool {
    dir.join("faiss/Index.h").is_file() && dir.join("faiss/IndexHNSW.h").is_file()
}

/// Where FAISS's headers are: `FAISSX_FAISS_INCLUDE`, else the include dir that faiss-sys's
/// cmake build installed next to ours in the target dir, else faiss-sys's sources in the
/// cargo registry.
fn faiss_include() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FAISSX_FAISS_INCLUDE") {
        return Some(PathBuf::from(p));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").ok()?);
    // OUT_DIR = <target>/<profile>/build/faissx-<hash>/out
    let build_dir = out.parent()?.parent()?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(build_dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("faiss-sys-") {
            let inc = e.path().join("out/include");
            if has_header(&inc) {
                let t =
                    inc.join("faiss/Index.h").metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                found.push((t, inc));
            }
        }
    }
    found.sort();
    if let Some((_, p)) = found.pop() {
        return Some(p);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| PathBuf::from(h).join(".cargo")))?;
    for reg in std::fs::read_dir(cargo_home.join("registry/src")).ok()?.flatten() {
        for e in std::fs::read_dir(reg.path()).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("faiss-sys-0.7") && has_header(&e.path().join("faiss")) {
                return Some(e.path().join("faiss"));
            }
        }
    }
    None
}

/// The shim's translation units (`shim/shim.h` is their common header), one per concern as
/// in `src/engine/index/ffi/`.
const SHIM: [&str; 7] =
    ["index.cpp", "float.cpp", "ondisk.cpp", "binary.cpp", "clustering.cpp", "train.cpp", "select.cpp"];

fn main() {
    println!("cargo:rerun-if-changed=src/engine/index/shim");
    println!("cargo:rerun-if-env-changed=FAISSX_FAISS_INCLUDE");
    println!("cargo:rerun-if-env-changed=CXXFLAGS");
    let include = faiss_include().expect(
        "cannot find FAISS headers (faiss-sys's build output or sources); set FAISSX_FAISS_INCLUDE to the directory holding faiss/Index.h",
    );
    cc::Build::new()
        .cpp(true)
        .files(SHIM.iter().map(|f| format!("src/engine/index/shim/{f}")))
        .include(&include)
        .flag_if_supported("-std=c++17")
        .flag_if_supported("-fopenmp")
        .warnings(false)
        .compile("faissx_shim");
    // The flags FAISS was really compiled with: faiss-sys does not rebuild FAISS when CXXFLAGS
    // change, so its CMake cache, not our environment, is the truth.
    let cache = include.parent().map(|out| out.join("build/CMakeCache.txt"));
    let from_cache = cache.as_deref().and_then(|c| {
        println!("cargo:rerun-if-changed={}", c.display());
        std::fs::read_to_string(c)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("CMAKE_CXX_FLAGS:STRING=").map(str::to_string))
    });
    let flags = from_cache.unwrap_or_else(|| std::env::var("CXXFLAGS").unwrap_or_default());
    println!("cargo:rustc-env=FAISSX_CXXFLAGS={}", flags.trim());
}
