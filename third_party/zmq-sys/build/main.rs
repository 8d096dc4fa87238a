//! faissx's copy of zmq-sys 0.12.0's build script: the only change from upstream is that libzmq
//! is built with libsodium (upstream passes `.with_libsodium(None)`, which leaves CURVE off), so
//! `faissx serve --curve-secret-key-file` and the clients' `--server-public-key` work.
//! libsodium is linked statically (`libsodium.a`, Debian/Ubuntu package `libsodium-dev`).

use std::path::PathBuf;
use std::process::Command;

/// Asks `pkg-config` for one variable of `libsodium.pc` (`includedir`, `libdir`).
fn pkg_config_variable(name: &str) -> Option<PathBuf> {
    let out = Command::new("pkg-config")
        .args(["--variable", name, "libsodium"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let value = String::from_utf8(out.stdout).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// Finds libsodium's include and library folders: `SODIUM_INCLUDE_DIR`/`SODIUM_LIB_DIR` if set,
/// else pkg-config, else the Debian/Ubuntu default paths. Panics (a build error) with the fix when
/// `sodium.h` or `libsodium.a` is missing.
fn find_libsodium() -> (PathBuf, PathBuf) {
    println!("cargo:rerun-if-env-changed=SODIUM_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=SODIUM_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let include = std::env::var_os("SODIUM_INCLUDE_DIR")
        .map(PathBuf::from)
        .or_else(|| pkg_config_variable("includedir"))
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    let lib = std::env::var_os("SODIUM_LIB_DIR")
        .map(PathBuf::from)
        .or_else(|| pkg_config_variable("libdir"))
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/{arch}-{os}-{env}")));
    let header = include.join("sodium.h");
    let archive = lib.join("libsodium.a");
    if !header.is_file() || !archive.is_file() {
        panic!(
            "faissx needs libsodium for CurveZMQ: {} or {} is missing; install it \
             (Debian/Ubuntu: `apt-get install libsodium-dev pkg-config`, or run \
             scripts/install-deps.sh), or point SODIUM_INCLUDE_DIR and SODIUM_LIB_DIR at \
             the folders holding sodium.h and libsodium.a",
            header.display(),
            archive.display()
        );
    }
    (include, lib)
}

pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // Note that by default `libzmq` builds without `libsodium` by instead
    // relying on `tweetnacl`. However since this `tweetnacl` [has never been
    // audited nor is ready for production](https://github.com/zeromq/libzmq/issues/3006),
    // we link against `libsodium` to enable `ZMQ_CURVE`.
    let (include, lib) = find_libsodium();
    // zeromq-src prints the search path with `{:?}` (quoted); print a plain one too so rustc
    // finds libsodium.a to bundle.
    println!("cargo:rustc-link-search=native={}", lib.display());
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}

fn main() {
    configure()
}
