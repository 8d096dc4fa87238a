//! What the server benchmarks share (`#[path = "common/mod.rs"] mod common;`): the `faissx`
//! binary to run, a server process killed on drop, a client, and percentiles.

use faissx::engine::client::{Client, ClientConfig};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary: `FAISSX_BIN`, or `$CARGO_TARGET_DIR/release/faissx` (default `target/`).
pub fn exe() -> String {
    std::env::var("FAISSX_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/release/faissx")
    })
}

/// A `faissx serve` process (and its endpoint), killed on drop.
pub struct Server(pub Child, pub String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `faissx serve --bind-address 127.0.0.1 --port 0 -q ARGS`, stderr to `stderr`; waits for
/// the endpoint (the first stdout line).
pub fn start_server(args: &[&std::ffi::OsStr], stderr: Stdio) -> Server {
    let mut child = Command::new(exe())
        .args(["serve", "--bind-address", "127.0.0.1", "--port", "0", "-q"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e} (build first: cargo build --release)", exe()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("endpoint line");
    Server(child, line.trim().to_string())
}

/// A plain-TCP client of `ep` with a 600 s timeout.
pub fn client(ep: &str) -> Client {
    Client::connect(ClientConfig {
        server: ep.to_string(),
        api_key: None,
        tenant: None,
        timeout: Duration::from_secs(600),
        server_public_key: None,
    })
    .expect("client")
}

/// The `p` quantile (0–1, nearest rank) of `v` (sorted in place); NaN for no values.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Ten neighbours per query with the index's own settings.
pub const KNN10: faissx::engine::index::SearchParams =
    faissx::engine::index::SearchParams { k: 10, nprobe: None, ef_search: None };

/// `n × d` pseudo-random floats in [0, 1) from `seed` (an LCG: the same data every run).
#[allow(dead_code)]
pub fn vectors(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n * d)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect()
}

/// The environment variable `name` parsed, or `default`.
#[allow(dead_code)]
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// CPU time (user + system, seconds) used so far by process `pid` (all its threads), from
/// `/proc/PID/stat`.
#[allow(dead_code)]
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
