//! Opening index files that carry no checksum (written by Python's `faiss.write_index`, by
//! another tool, or by a faissx older than sidecar checksums) in a child process first.
//!
//! FAISS's reader trusts its input: a damaged file can make it dereference wild pointers,
//! divide by zero, abort on an exception thrown inside OpenMP, or loop for ever. A file
//! whose sidecar records its checksum is verified instead ([`super::IndexMeta::verify`]);
//! any other file is first opened by the `faissx` binary itself, re-executed
//! (`std::env::current_exe()`) with the hidden subcommand [`SUBCOMMAND`]. The child reads the
//! file's structure where FAISS's reader does not ([`super::check`]), then reads the index the
//! way the caller will (loaded or mapped) and does a small sanity pass ([`sanity_pass`]); a
//! crash (signal), a timeout or an error there becomes a one-line `Format` error naming the
//! file (exit status 2), and the caller never reads the file.
//!
//! Cost: one extra process start (~5 ms for this static binary), one extra read of the file
//! and the checks. `faissx info` on Python-written indices, warm page cache, 2 shared cores,
//! without → with the probe: Flat 256 KB 5 → 12 ms; HNSW 400 KB 6 → 19 ms; HNSW32 of 20,000
//! vectors (8 MB) 14 → 38 ms; Flat 200 MB 147 → 303 ms loaded (the file is read twice), 5 →
//! 24 ms with `--mmap` (the child maps it and searches once).
//!
//! The probe runs only in the `faissx` binary, which calls [`enable`] at start-up: in unit
//! tests, doctests and benches the current executable is not `faissx`, so nothing is spawned.
//! The timeout is 30 s plus 1 s per 50 MB of file (`FAISSX_PROBE_TIMEOUT` replaces the 30 s
//! with a number of seconds). The child runs FAISS single-threaded, with its address space
//! limited to 3 GiB plus 8 × the file's size (`RLIMIT_AS`), so that a damaged size field
//! cannot make it take the machine's memory.
//!
//! This module must not know the command line beyond the name and arguments of the hidden
//! subcommand (`cmd/probe_index.rs`), which only calls [`sanity_pass`].
//!
//! What it does not catch: a file that passes the checks and the sanity pass but crashes or
//! hangs on other queries (e.g. HNSW inside a PreTransform or an IVF quantizer, whose links
//! are not checked, or a NaN stored past the first 2^24 floats of a graph index), and files
//! changed between the probe and the caller's read. A damaged `.ivfdata` file of on-disk
//! lists is read by the child only as far as its searches go.

use super::{Index, OpenOptions, Rows, SearchParams};
use crate::engine::error::{Error, ErrorKind, Result};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The hidden subcommand the child runs: `faissx __probe-index [--mmap] -- PATH`.
pub const SUBCOMMAND: &str = "__probe-index";

/// Environment variable: seconds allowed for the child besides 1 s per 50 MB (default 30).
pub const TIMEOUT_ENV: &str = "FAISSX_PROBE_TIMEOUT";

const BASE_TIMEOUT: Duration = Duration::from_secs(30);
const BYTES_PER_EXTRA_SECOND: u64 = 50 << 20;
/// Stderr kept from the child (the rest is drained and dropped).
const STDERR_KEEP: usize = 64 << 10;

const DAMAGED: &str = "the file is damaged or not a FAISS index this build can read";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn the probe on for this process: called by the `faissx` binary's `main`, whose
/// executable can run [`SUBCOMMAND`].
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Turn the probe off (the child itself, which must not probe again).
pub fn disable() {
    ENABLED.store(false, Ordering::SeqCst);
}

/// Whether [`check`] spawns a child.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// Graph indices (HNSW, NSG, NNDescent) are searched with up to this many stored vectors as
/// queries: a damaged link or vector is reached only from some queries.
const GRAPH_QUERIES: usize = 256;
/// Graph indices: stored vectors checked for NaN and infinities (FAISS's HNSW search loops
/// for ever on a NaN distance), at most this many floats.
const GRAPH_SCAN_FLOATS: usize = 1 << 24;
/// Floats of stored vectors used as queries, at most (a damaged `d` can be huge).
const QUERY_FLOATS: usize = 1 << 22;
/// The child's address space: this much plus [`MEMORY_PER_FILE_BYTE`] × the file's size
/// (and its `.ivfdata`). Room for what a sound index needs beyond its file (IVF-PQ
/// precomputed tables, up to FAISS's 2 GB default; an IDMap2's reverse map; the mapped file
/// itself) while a damaged size field that asks for gigabytes fails at once with
/// `std::bad_alloc` instead of taking the machine's memory.
const MEMORY_BASE: u64 = 3 << 30;
const MEMORY_PER_FILE_BYTE: u64 = 8;

/// The address space the child gets for `path`.
fn memory_limit(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let bytes = len(path).saturating_add(len(&super::storage::ivfdata_path(path)));
    MEMORY_BASE.saturating_add(bytes.saturating_mul(MEMORY_PER_FILE_BYTE))
}

/// The child's work: check the file's structure ([`super::check`]), open `path` (mapped when
/// `mmap`) as [`Index::open_with`] would, describe it, reconstruct position 0, and when it
/// holds vectors and is trained, search with k = 1: for exhaustive indices an all-ones query
/// (zero codes for binary indices), whose one search reads every vector; for graph indices
/// (HNSW, NSG, NNDescent, also under IDMap) also up to 256 stored vectors spread over the
/// index, after checking that the stored vectors (up to 2^24 floats) are finite.
///
/// Errors of the search and reconstruct steps are ignored (an index type may not
/// reconstruct; the caller reports such errors itself): only a failed check or open, or a
/// non-finite stored vector in a graph index, is an error; a crash or hang is what the parent
/// watches for. Returns a one-line summary.
pub fn sanity_pass(path: &Path, mmap: bool) -> Result<String> {
    disable();
    let limit = memory_limit(path);
    super::ffi::limit_address_space(limit);
    super::check::check_file(path)?;
    let ix = Index::open_with(path, &OpenOptions { mmap, warm: false, ..Default::default() }).map_err(|e| {
        if e.chain().contains("bad_alloc") {
            Error::format(
                path,
                format!(
                    "opening it asked for more than {} GiB of memory, far more than this file can hold: {DAMAGED}",
                    limit >> 30
                ),
            )
        } else {
            e
        }
    })?;
    let info = ix.info(Some(path))?;
    let n = ix.ntotal();
    let graph = ["HNSW", "NSG", "NNDescent"].iter().any(|g| info.index_type.contains(g) || info.inner_type.contains(g));
    // Stored vectors by position: through `extract` for float indices (positions, also under
    // IDMap whose ids are not positions); binary indices reconstruct positions themselves.
    let rows = |i0: usize, m: usize| match ix.is_binary() {
        false => ix.extract(i0, m).ok().map(|(_, v)| Rows::Float(v)),
        true => ix.reconstruct_n(i0, m).ok(),
    };
    let row = |i: usize| rows(i, 1);
    let _ = row(0);
    let (mut floats, mut codes, mut searched) = (Vec::new(), Vec::new(), 0);
    if n > 0 && ix.is_trained() {
        if graph && !ix.is_binary() {
            let d = ix.d().max(1);
            let mut i0 = 0;
            while i0 < n && i0.saturating_mul(d) < GRAPH_SCAN_FLOATS {
                let m = (n - i0).min((GRAPH_SCAN_FLOATS / 16 / d).max(1));
                let Some(Rows::Float(v)) = rows(i0, m) else { break };
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::format(
                        path,
                        format!(
                            "stored vector {} has a NaN or infinite component, on which FAISS's graph search never ends",
                            i0 + p / d
                        ),
                    ));
                }
                i0 += m;
            }
        }
        // Queries: every step-th stored vector of a graph index (finite ones: faissx refuses
        // others), then the all-ones vector.
        if graph {
            let step = n.div_ceil(GRAPH_QUERIES.min(QUERY_FLOATS / ix.d().max(1)).max(1)).max(1);
            for r in (0..n).step_by(step).filter_map(row) {
                match r {
                    Rows::Float(v) if v.iter().position(|x| !x.is_finite()).is_none() => floats.extend(v),
                    Rows::Codes(c) => codes.extend(c),
                    Rows::Float(_) => {}
                }
            }
        }
        if ix.is_binary() {
            codes.extend(std::iter::repeat_n(0u8, ix.d() / 8));
        } else {
            floats.extend(std::iter::repeat_n(1.0f32, ix.d()));
        }
        let q = if ix.is_binary() { Rows::Codes(codes) } else { Rows::Float(floats) };
        searched = ix.rows_in(&q).unwrap_or(0);
        let _ = ix.search(&q, &SearchParams { k: 1, nprobe: None, ef_search: None });
    }
    Ok(format!("{} d={} ntotal={n}: opened, reconstructed, {searched} queries searched", info.index_type, info.d))
}

/// The time the child may take for a file of `bytes`.
fn timeout_for(bytes: u64) -> Duration {
    let base = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(BASE_TIMEOUT, Duration::from_secs_f64);
    base + Duration::from_secs(bytes / BYTES_PER_EXTRA_SECOND)
}

/// The name of a signal that ends a process (`SIGSEGV` for 11, …), for messages; `None` for
/// signals without one here.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// "SIGSEGV, signal 11" (or "signal 31").
fn describe_signal(sig: i32) -> String {
    match signal_name(sig) {
        Some(name) => format!("{name}, signal {sig}"),
        None => format!("signal {sig}"),
    }
}

/// Open `path` in a child process first (see the module doc); returns at once when the probe
/// is not enabled.
///
/// Errors: `Format` naming `path` when the child crashed, timed out or could not open the
/// file; `Io` when the child cannot be started.
pub fn check(path: &Path, mmap: bool) -> Result<()> {
    if !is_enabled() {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| {
        Error::new(ErrorKind::Io, "cannot find the faissx executable to check an index file").with_source(e)
    })?;
    let bytes = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let timeout = timeout_for(bytes);
    let mut cmd = Command::new(&exe);
    cmd.arg(SUBCOMMAND);
    if mmap {
        cmd.arg("--mmap");
    }
    cmd.arg("--").arg(path);
    cmd.env_remove("FAISSX_THREADS")
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(ErrorKind::Io, format!("{}: cannot start {} to check the index file", path.display(), exe.display()))
            .with_source(e)
    })?;
    let mut err_pipe = child.stderr.take().expect("invariant: stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match err_pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = STDERR_KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    });
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(ErrorKind::Io, format!("{}: waiting for the index check", path.display()))
                    .with_source(e));
            }
        }
    };
    let stderr = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(Error::format(
            path,
            format!(
                "checking the index in a child process did not finish within {:.0} s (killed): {DAMAGED}",
                timeout.as_secs_f64()
            ),
        ));
    };
    if status.success() {
        return Ok(());
    }
    if let Some(sig) = status.signal() {
        return Err(Error::format(
            path,
            format!("checking the index crashed a child process ({}): {DAMAGED}", describe_signal(sig)),
        ));
    }
    // The child printed `faissx: <message>` as its last such line; FAISS may have printed
    // warnings before it.
    let text = String::from_utf8_lossy(&stderr);
    let msg = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("faissx: "))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("exit status {}", status.code().unwrap_or(-1)));
    let shown = path.display().to_string();
    Err(Error::new(ErrorKind::Format, if msg.starts_with(&shown) { msg } else { format!("{shown}: {msg}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_probe_spawns_nothing() {
        // Unit tests run in the test harness, not faissx: the probe must stay off.
        assert!(!is_enabled());
        check(Path::new("/nonexistent/x.index"), false).unwrap();
    }

    #[test]
    fn timeout_grows_with_the_file() {
        assert_eq!(timeout_for(0), BASE_TIMEOUT);
        assert_eq!(timeout_for(500 << 20), BASE_TIMEOUT + Duration::from_secs(10));
        assert_eq!(describe_signal(11), "SIGSEGV, signal 11");
        assert_eq!(describe_signal(31), "signal 31");
    }
}
