//! Test harness: a temp dir per test with copies of the fixtures it needs, a `faissx` command
//! with `FAISSX_*` scrubbed, and output assertions. Deterministic data comes from a seeded LCG.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `testdata/` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `testdata/<rel>`.
pub fn testdata(rel: &str) -> PathBuf {
    repo_root().join("testdata").join(rel)
}

/// A file of the full Fashion-MNIST set that `scripts/fashion-mnist.sh` makes (`scripts/test.sh`
/// runs it first): `$FAISSX_SHARED_DATA/fashion-mnist/<file>` when that variable is set, else
/// `$FAISSX_CACHE/data/fashion-mnist/<file>` (`FAISSX_CACHE` defaults to `~/.cache/faissx`, as
/// in `scripts/env.sh`). Nothing else outside the clone is read by the tests.
pub fn fashion_mnist(file: &str) -> PathBuf {
    let root = match (std::env::var_os("FAISSX_SHARED_DATA"), std::env::var_os("FAISSX_CACHE")) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(cache)) => PathBuf::from(cache).join("data"),
        (None, None) => {
            let home = std::env::var_os("HOME").expect("HOME or FAISSX_CACHE must be set to find the data cache");
            PathBuf::from(home).join(".cache/faissx/data")
        }
    };
    let p = root.join("fashion-mnist").join(file);
    assert!(p.exists(), "{} is missing: run `bash scripts/fashion-mnist.sh` (or set FAISSX_SHARED_DATA)", p.display());
    p
}

/// A temp directory removed on drop.
pub struct TestEnv {
    pub dir: PathBuf,
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        let dir = std::env::temp_dir().join(format!("faissx-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestEnv { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `faissx` with the working directory set to the temp dir and FAISSX_* removed.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_faissx"));
        c.current_dir(&self.dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("FAISSX_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Run `faissx ARGS`, return the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run `faissx ARGS` and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "faissx {args:?} failed with {:?}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run `faissx ARGS`, require exit `code` and `needle` in stderr; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "faissx {args:?}: expected exit {code}\nstderr:\n{err}");
        assert!(err.contains(needle), "faissx {args:?}: stderr lacks {needle:?}:\n{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "error must be one line:\n{err}");
        assert!(out.stdout.is_empty(), "no partial output on stdout expected, got {} bytes", out.stdout.len());
        err
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Names in `dir` that no finished or failed command may leave: temp files of outputs
/// (`NAME.<random>.tmp`, and folders made from them) and output locks (`NAME.lock`).
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".lock") || n.contains(".tmp."))
        .collect();
    v.sort();
    v
}

/// Deterministic pseudo-random f32 rows in [0, 1): `n × d` (64-bit LCG, Knuth MMIX constants).
pub fn lcg_vectors(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n * d)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect()
}

/// Write `n × d` f32 as `.fvecs`.
pub fn write_fvecs(path: &Path, d: usize, data: &[f32]) {
    let mut v = Vec::with_capacity(data.len() * 4 + data.len() / d * 4);
    for row in data.chunks(d) {
        v.extend_from_slice(&(d as i32).to_le_bytes());
        for x in row {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, v).unwrap();
}

/// Write a 2-D `.npy` of `<f4` or a 1-D `.npy` of `<i8`.
pub fn write_npy_f32(path: &Path, n: usize, d: usize, data: &[f32]) {
    write_npy(path, "<f4", &format!("({n}, {d})"), &data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
}

pub fn write_npy_i64(path: &Path, data: &[i64]) {
    write_npy(
        path,
        "<i8",
        &format!("({},)", data.len()),
        &data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
    );
}

/// NumPy format 1.0 writer (independent of the crate's npyz-based one).
pub fn write_npy(path: &Path, descr: &str, shape: &str, body: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(body);
    std::fs::write(path, v).unwrap();
}

/// Parse faissx JSON Lines search output into (query, ids, distances).
pub fn parse_jsonl(s: &str) -> Vec<(usize, Vec<i64>, Vec<Option<f64>>)> {
    s.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["query"].as_u64().unwrap() as usize,
                v["ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect(),
                v["distances"].as_array().unwrap().iter().map(|x| x.as_f64()).collect(),
            )
        })
        .collect()
}

/// Read an `.ivecs` file into rows.
pub fn read_ivecs(path: &Path) -> Vec<Vec<i32>> {
    let b = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let d = i32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        i += 4;
        out.push((0..d).map(|j| i32::from_le_bytes(b[i + 4 * j..i + 4 * j + 4].try_into().unwrap())).collect());
        i += 4 * d;
    }
    out
}

/// Fraction of the first `k` true neighbours found in the first `k` results, over all rows.
pub fn recall(found: &[Vec<i64>], truth: &[Vec<i32>], k: usize) -> f64 {
    let mut hits = 0;
    for (f, t) in found.iter().zip(truth) {
        hits += f[..k].iter().filter(|id| t[..k].contains(&(**id as i32))).count();
    }
    hits as f64 / (found.len() * k) as f64
}

/// Text equality with a framed diff on failure (ripgrep's eqnice!).
#[macro_export]
macro_rules! eqnice {
    ($expected:expr, $got:expr) => {{
        let expected = &*$expected;
        let got = &*$got;
        if expected != got {
            panic!(
                "\n\nexpected:\n{}\n{}\n{}\ngot:\n{}\n{}\n{}\n",
                "~".repeat(60),
                expected,
                "~".repeat(60),
                "~".repeat(60),
                got,
                "~".repeat(60)
            );
        }
    }};
}

/// Search parameters for `k` neighbours per query, keeping the index's own nprobe/efSearch.
pub fn knn(k: usize) -> faissx::engine::SearchParams {
    faissx::engine::SearchParams { k, nprobe: None, ef_search: None }
}

/// `name.index` built with `faissx build` (IDMap2,Flat) from `n × d` vectors (seed `seed`)
/// whose ids are `base + row`; returns the vectors.
pub fn build_with_ids(env: &TestEnv, name: &str, n: usize, d: usize, seed: u64, base: i64) -> Vec<f32> {
    let x = lcg_vectors(n, d, seed);
    write_npy_f32(&env.path(&format!("{name}.npy")), n, d, &x);
    write_npy_i64(&env.path(&format!("{name}_ids.npy")), &(0..n as i64).map(|i| base + i).collect::<Vec<_>>());
    env.ok(&[
        "build",
        &format!("{name}.npy"),
        "-o",
        &format!("{name}.index"),
        "--factory",
        "IDMap2,Flat",
        "--ids",
        &format!("{name}_ids.npy"),
        "-q",
    ]);
    x
}
