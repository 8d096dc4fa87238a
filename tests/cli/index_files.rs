//! Damaged and foreign index files (issue 10, finding 10): FAISS's reader trusts its input, so
//! faissx checks a file before FAISS reads it — against the checksum in its sidecar, or, for a
//! file without one, by opening it in a child process first. Either way a damaged file is a
//! one-line error with exit status 2, never a crash or a hang.

use crate::util::*;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const CHECKSUM_MSG: &str = "index file does not match its sidecar checksum";

/// `n × 8` vectors as `name`, returned as the rows.
fn data(env: &TestEnv, name: &str, n: usize, seed: u64) -> Vec<f32> {
    let v = lcg_vectors(n, 8, seed);
    write_fvecs(&env.path(name), 8, &v);
    v
}

fn sidecar_json(env: &TestEnv, index: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(env.path(&format!("{index}.meta.json"))).unwrap()).unwrap()
}

/// The sidecar's checksum fields describe the index file's bytes.
fn assert_checksum_matches(env: &TestEnv, index: &str) {
    let bytes = std::fs::read(env.path(index)).unwrap();
    let m = sidecar_json(env, index);
    assert_eq!(m["index_bytes"].as_u64(), Some(bytes.len() as u64), "{m}");
    assert_eq!(m["index_crc32"].as_u64(), Some(crc32fast::hash(&bytes) as u64), "{m}");
}

#[test]
fn faissx_written_indices_carry_their_checksum() {
    let env = TestEnv::new("files-sum");
    data(&env, "b.fvecs", 64, 1);
    data(&env, "more.fvecs", 16, 2);
    env.ok(&["build", "b.fvecs", "-o", "x.index", "--factory", "Flat", "-q"]);
    assert_checksum_matches(&env, "x.index");
    let before = sidecar_json(&env, "x.index")["index_crc32"].clone();
    env.ok(&["add", "x.index", "more.fvecs", "-q"]);
    assert_checksum_matches(&env, "x.index");
    assert_ne!(sidecar_json(&env, "x.index")["index_crc32"], before, "add rewrote the index, and its checksum");
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "x.index", "--format", "json"])).unwrap();
    assert_eq!(info["ntotal"], 80);
}

#[test]
fn flipped_byte_fails_the_checksum_for_info_and_search() {
    let env = TestEnv::new("files-flip");
    data(&env, "b.fvecs", 64, 3);
    data(&env, "q.fvecs", 4, 4);
    env.ok(&["build", "b.fvecs", "-o", "x.index", "--factory", "HNSW8", "-q"]);
    env.ok(&["search", "x.index", "q.fvecs", "-k", "2"]);
    let p = env.path("x.index");
    let mut b = std::fs::read(&p).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x10;
    std::fs::write(&p, &b).unwrap();
    for mmap in [false, true] {
        let extra: &[&str] = if mmap { &["--mmap"] } else { &[] };
        let mut info = vec!["info", "x.index"];
        info.extend_from_slice(extra);
        let err = env.fails(&info, 2, CHECKSUM_MSG);
        assert!(err.starts_with("faissx: x.index: index file does not match"), "{err}");
        assert!(err.contains("x.index.meta.json records"), "{err}");
        let mut search = vec!["search", "x.index", "q.fvecs", "-k", "2"];
        search.extend_from_slice(extra);
        env.fails(&search, 2, CHECKSUM_MSG);
    }
    // A truncated file is caught by its size alone.
    std::fs::write(&p, &b[..b.len() - 1]).unwrap();
    let n = b.len();
    env.fails(&["info", "x.index"], 2, &format!("records {n} bytes, crc32"));
    env.fails(&["info", "x.index"], 2, &format!("the file has {} bytes)", n - 1));
}

#[test]
fn v1_sidecar_without_checksum_still_opens() {
    let env = TestEnv::new("files-compat-v1");
    for f in ["flat-cosine.index", "flat-cosine.index.meta.json", "v.fvecs"] {
        std::fs::copy(testdata(&format!("compat/v1/{f}")), env.path(f)).unwrap();
    }
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "flat-cosine.index", "--format", "json"])).unwrap();
    assert_eq!(info["metric"], "cosine", "{info}");
    assert_eq!(info["meta"]["factory"], "Flat", "{info}");
    assert_eq!(info["meta"]["format_version"], 1);
    assert!(info["meta"].get("index_crc32").is_none(), "{info}");
    // Cosine: every vector is its own nearest neighbour, similarity 1.
    let hits = parse_jsonl(&env.ok(&["search", "flat-cosine.index", "v.fvecs", "-k", "1", "--format", "jsonl"]));
    assert_eq!(hits.len(), 32);
    for (q, ids, d) in hits {
        assert_eq!(ids, vec![q as i64]);
        assert!((d[0].unwrap() - 1.0).abs() < 1e-5, "{d:?}");
    }
    // Written again by this faissx, the sidecar gains the checksum.
    env.ok(&["add", "flat-cosine.index", "v.fvecs", "-q"]);
    assert_checksum_matches(&env, "flat-cosine.index");
    assert_eq!(sidecar_json(&env, "flat-cosine.index")["metric"], "cosine");
}

#[test]
fn unchecked_file_that_cannot_be_read_is_one_line_exit_2() {
    let env = TestEnv::new("files-unchecked");
    data(&env, "b.fvecs", 64, 5);
    data(&env, "q.fvecs", 2, 6);
    env.ok(&["build", "b.fvecs", "-o", "x.index", "--factory", "IVF4,Flat", "-q"]);
    std::fs::remove_file(env.path("x.index.meta.json")).unwrap();
    // No sidecar: opened in a child process first, and works as before.
    env.ok(&["search", "x.index", "q.fvecs", "-k", "2"]);
    env.ok(&["info", "x.index", "--mmap"]);
    let b = std::fs::read(env.path("x.index")).unwrap();
    std::fs::write(env.path("t.index"), &b[..b.len() / 2]).unwrap();
    let err = env.fails(&["info", "t.index"], 2, "faissx: t.index: ");
    assert!(err.contains("not a FAISS index file"), "{err}");
    env.fails(&["search", "t.index", "q.fvecs", "-k", "2"], 2, "faissx: t.index: ");
    // Mapped, FAISS skips the IVF lists on open: cut inside the header instead.
    std::fs::write(env.path("t.index"), &b[..40]).unwrap();
    env.fails(&["search", "t.index", "q.fvecs", "-k", "2", "--mmap"], 2, "faissx: t.index: ");
}

#[test]
fn a_file_that_crashes_faiss_is_one_line_exit_2() {
    // Found by the fuzz below: a PQ index whose PQ header (d, M, nbits) reads 0x08ffffffff, 0
    // makes FAISS 1.12 divide by zero while reading it (SIGFPE killed faissx before).
    let env = TestEnv::new("files-crash");
    data(&env, "b.fvecs", 300, 7);
    data(&env, "q.fvecs", 2, 8);
    env.ok(&["build", "b.fvecs", "-o", "pq.index", "--factory", "PQ4x4", "-q"]);
    std::fs::remove_file(env.path("pq.index.meta.json")).unwrap();
    let mut b = std::fs::read(env.path("pq.index")).unwrap();
    b[38..46].copy_from_slice(&0xffff_ffffu64.to_le_bytes());
    std::fs::write(env.path("pq.index"), &b).unwrap();
    let want = "faissx: pq.index: checking the index crashed a child process (SIG";
    env.fails(&["info", "pq.index"], 2, want);
    env.fails(&["search", "pq.index", "q.fvecs", "-k", "1", "--mmap"], 2, want);
}

#[test]
fn a_check_that_does_not_finish_is_killed_and_reported() {
    // A time limit no process start can meet stands in for a file FAISS loops on.
    let env = TestEnv::new("files-timeout");
    data(&env, "b.fvecs", 64, 9);
    env.ok(&["build", "b.fvecs", "-o", "x.index", "--factory", "Flat", "-q"]);
    std::fs::remove_file(env.path("x.index.meta.json")).unwrap();
    let out = env.cmd().args(["info", "x.index"]).env("FAISSX_PROBE_TIMEOUT", "0.000001").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("faissx: x.index: checking the index in a child process did not finish within 0 s (killed)"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // With its checksum the file is not opened in a child process at all.
    env.ok(&["build", "b.fvecs", "-o", "y.index", "--factory", "Flat", "-q"]);
    let out = env.cmd().args(["info", "y.index"]).env("FAISSX_PROBE_TIMEOUT", "0.000001").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// ---- mutation fuzz -------------------------------------------------------------------------

/// 64-bit LCG (Knuth MMIX constants), as in util.rs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutated copy of a base index: what was done, for the failure message.
struct Mutant {
    base: usize,
    what: String,
    bytes: Vec<u8>,
}

/// Flip 1–4 bytes, truncate, or overwrite a 4- or 8-byte field with 0, all ones or a huge
/// value. Half the offsets fall in the first 160 bytes, where the headers (d, ntotal, sizes,
/// fourccs) are.
fn mutate(rng: &mut Lcg, base: usize, orig: &[u8]) -> Mutant {
    let mut b = orig.to_vec();
    let offset = |rng: &mut Lcg, len: usize| {
        if rng.next().is_multiple_of(2) {
            rng.below(len.min(160))
        } else {
            rng.below(len)
        }
    };
    let what = match rng.next() % 4 {
        0 | 1 => {
            let n = 1 + rng.below(4);
            let mut at = Vec::new();
            for _ in 0..n {
                let o = offset(rng, b.len());
                b[o] ^= 1 + rng.below(255) as u8;
                at.push(o);
            }
            format!("flip bytes at {at:?}")
        }
        2 => {
            let len = offset(rng, b.len());
            b.truncate(len);
            format!("truncate to {len} bytes")
        }
        _ => {
            let width = if rng.next().is_multiple_of(2) { 4 } else { 8 };
            let value: u64 = match rng.next() % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => 0xFFFF_FFFF,
                _ => 1 << (20 + rng.below(43)),
            };
            let o = offset(rng, b.len().saturating_sub(width) + 1);
            let end = (o + width).min(b.len());
            b[o..end].copy_from_slice(&value.to_le_bytes()[..end - o]);
            format!("write {value:#x} as {width} bytes at {o}")
        }
    };
    Mutant { base, what, bytes: b }
}

/// A child killed on drop, so a failing test leaves nothing running.
struct Watched(Child);

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How one run ended, and how long it took.
enum Outcome {
    Exited(ExitStatus, String, Duration),
    Hung,
}

/// Run `cmd` with a watchdog: killed after `limit` and reported as a hang. Stderr goes to
/// `err_file` (a file, so a chatty child cannot block on a full pipe).
fn run_watched(mut cmd: Command, err_file: &Path, limit: Duration) -> Outcome {
    let f = std::fs::File::create(err_file).unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(f));
    let mut child = Watched(cmd.spawn().unwrap());
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            let mut s = String::new();
            std::fs::File::open(err_file).unwrap().read_to_string(&mut s).unwrap();
            return Outcome::Exited(st, s, start.elapsed());
        }
        if start.elapsed() > limit {
            return Outcome::Hung;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

const FACTORIES: [&str; 6] = ["Flat", "IVF4,Flat", "HNSW8", "PQ4x4", "SQ8", "IDMap2,Flat"];
const MUTANTS: usize = 2000;
/// Every SEARCH_EVERY-th mutant is also searched.
const SEARCH_EVERY: usize = 8;
const WATCHDOG: Duration = Duration::from_secs(60);

/// 2,000 mutated copies of small indices of six types, without sidecars (so every one goes
/// through the child-process check): `faissx info` on each, `faissx search` on every 8th.
/// Every run must end by itself with status 0, 1 or 2 — never by a signal, never hang.
#[test]
fn mutated_index_files_never_crash_or_hang_the_cli() {
    let env = TestEnv::new("files-fuzz");
    data(&env, "b.fvecs", 300, 7);
    data(&env, "q.fvecs", 3, 8);
    write_npy_i64(&env.path("ids.npy"), &(1000..1300).collect::<Vec<i64>>());
    let mut bases = Vec::new();
    for (i, f) in FACTORIES.iter().enumerate() {
        let name = format!("base{i}.index");
        let mut args = vec!["build", "b.fvecs", "-o", &name, "--factory", f, "-q"];
        if f.starts_with("IDMap") {
            args.extend_from_slice(&["--ids", "ids.npy"]);
        }
        env.ok(&args);
        bases.push(std::fs::read(env.path(&name)).unwrap());
    }
    let mut rng = Lcg(0x5eed_f11e);
    let mutants: Vec<Mutant> =
        (0..MUTANTS).map(|i| mutate(&mut rng, i % bases.len(), &bases[i % bases.len()])).collect();
    let mdir = env.path("m");
    std::fs::create_dir_all(&mdir).unwrap();
    let workers = 2;
    let started = Instant::now();
    let results: Vec<Vec<(usize, &str, Outcome)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (env, mutants, mdir) = (&env, &mutants, &mdir);
                s.spawn(move || {
                    let mut out = Vec::new();
                    let err_file = mdir.join(format!("stderr-{w}"));
                    for (i, m) in mutants.iter().enumerate().filter(|(i, _)| i % workers == w) {
                        let path: PathBuf = mdir.join(format!("{i:04}.index"));
                        std::fs::write(&path, &m.bytes).unwrap();
                        let mut runs: Vec<(&str, Command)> = Vec::new();
                        let mut c = env.cmd();
                        c.args(["info", "--format", "json"]).arg(&path);
                        runs.push(("info", c));
                        if i % SEARCH_EVERY == 0 {
                            let mut c = env.cmd();
                            c.arg("search").arg(&path).args(["q.fvecs", "-k", "3", "--format", "jsonl"]);
                            runs.push(("search", c));
                        }
                        for (what, mut c) in runs {
                            // Bound a hang inside the child-process check well below the watchdog.
                            c.env("FAISSX_PROBE_TIMEOUT", "5");
                            out.push((i, what, run_watched(c, &err_file, WATCHDOG)));
                        }
                        std::fs::remove_file(&path).unwrap();
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let mut codes = [0usize; 3];
    let mut bad = Vec::new();
    for (i, what, o) in results.iter().flatten() {
        let m = &mutants[*i];
        let desc = format!("faissx {what} on mutant {i} of {} ({})", FACTORIES[m.base], m.what);
        match o {
            Outcome::Hung => bad.push(format!("{desc}: still running after {WATCHDOG:?}, killed")),
            Outcome::Exited(st, err, _) => match st.code() {
                Some(c @ 0..=2) => {
                    codes[c as usize] += 1;
                    let last = err.trim_end().lines().last().unwrap_or("");
                    if c != 0 && !last.starts_with("faissx: ") {
                        bad.push(format!("{desc}: exit {c} without a faissx error line: {err:?}"));
                    }
                    if c != 0 && *what == "info" && !last.contains(&format!("{i:04}.index")) {
                        bad.push(format!("{desc}: the error does not name the file: {last}"));
                    }
                }
                Some(c) => bad.push(format!("{desc}: exit status {c}: {err}")),
                None => bad.push(format!("{desc}: killed by signal {:?}: {err}", st.signal())),
            },
        }
    }
    let mut slowest: Vec<(Duration, usize, &str)> = results
        .iter()
        .flatten()
        .filter_map(|(i, what, o)| match o {
            Outcome::Exited(_, _, t) => Some((*t, *i, *what)),
            Outcome::Hung => None,
        })
        .collect();
    slowest.sort_by(|a, b| b.cmp(a));
    let over_4s = slowest.iter().filter(|s| s.0 > Duration::from_secs(4)).count();
    slowest.truncate(5);
    eprintln!(
        "{} runs on {MUTANTS} mutants in {:.1} s with {workers} workers: exit 0: {}, exit 1: {}, exit 2: {}, crashes or hangs: {}; {over_4s} runs over 4 s; slowest: {slowest:?}",
        results.iter().map(Vec::len).sum::<usize>(),
        elapsed.as_secs_f64(),
        codes[0],
        codes[1],
        codes[2],
        bad.len()
    );
    if !bad.is_empty() {
        // Keep the offending files for a look (small; outside the test's own directory).
        let keep = std::env::temp_dir().join(format!("faissx-fuzz-failures-{}", std::process::id()));
        std::fs::create_dir_all(&keep).unwrap();
        for (i, _, o) in results.iter().flatten() {
            let failed = match o {
                Outcome::Hung => true,
                Outcome::Exited(st, _, _) => !matches!(st.code(), Some(0..=2)),
            };
            if failed {
                std::fs::write(keep.join(format!("{i:04}.index")), &mutants[*i].bytes).unwrap();
            }
        }
        eprintln!("failing mutants kept in {}", keep.display());
    }
    assert!(bad.is_empty(), "{} of the runs crashed, hung or misreported:\n{}", bad.len(), bad.join("\n"));
    // The mutations bite: many files are refused, and many (e.g. flipped vector bytes) still open.
    assert!(codes[2] > MUTANTS / 10 && codes[0] > MUTANTS / 10, "{codes:?}");
}
