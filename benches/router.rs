//! Router benchmark (issue 16, "Speed"): `faissx serve --router` over two shards against one
//! `faissx serve` holding every vector, in one run.
//!
//! ```sh
//! cargo build --release && cargo bench --bench router     # or: bash scripts/bench-router.sh
//! ROUTER_BENCH_QUERIES=2000 cargo bench --bench router    # fewer single queries
//! ROUTER_BENCH_VECTORS=100000 cargo bench --bench router  # a larger index (default 10,000)
//! ROUTER_BENCH_PROCS="PID@URL PID@URL PID@URL PID@URL"    # direct, s0, s1, router already running
//! ```
//!
//! Four processes on loopback: `direct` (10k×128 IndexFlatL2, or ROUTER_BENCH_VECTORS), shards `s0` and `s1` (plain
//! `faissx serve`, static `--shard NAME=URL` list: the router's code path is the one it takes
//! with cluster replicas, which only changes how it learns the endpoints) and the router.
//! The 10k vectors are added through the router without ids, so each shard holds 5k and the
//! router's global ids equal the direct server's positions.
//!
//! 1. Single-query search, k=10, one connection, one request at a time: the same
//!    `ROUTER_BENCH_QUERIES` (default 5,000) queries to the router and to `direct`, in
//!    alternating blocks of 500 (so both see the same minutes of a shared VM), after a
//!    warm-up of 500 each: p50, p99, QPS; the goal router p50 ≤ 1.5 × direct p50 + 100 µs.
//! 2. CPU time (utime + stime from /proc/PID/stat) of the router, of each shard and of
//!    `direct` over their blocks, per request; the goal router ≤ 30 % of a replica's.
//! 3. Batch search, nq=100, k=10, 20 batches each way (alternating): ids and distances
//!    compared bit for bit, queries/s beside the direct server's.
//!
//! Also: ping through the router (answered by the router itself: the client↔router hop)
//! and to a shard, and the router's own mean time per shard call (its `health`).

#[path = "common/mod.rs"]
mod common;

use common::{client, cpu_seconds, pct, start_server, vectors, Server, KNN10};
use faissx::engine::client::Client;
use faissx::engine::protocol::{Msg, Value};

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Instant;

const D: usize = 128;
const BLOCK: usize = 500;

/// Single-query searches of `qs` one at a time: latencies in ms appended to `lat`.
fn singles(c: &mut Client, qs: &[f32], lat: &mut Vec<f64>) {
    for q in qs.chunks(D) {
        let t = Instant::now();
        let (n, _) = c.search("flat", q, D, &KNN10, false).expect("search");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n.ids.len(), 10);
    }
}

fn pings(c: &mut Client, n: usize) -> (f64, f64) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.ping().expect("ping");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

/// One process of the benchmark: its pid (for its CPU time) and endpoint.
struct Proc {
    pid: u32,
    url: String,
}

/// `direct`, `s0`, `s1`, `router`, and the servers this benchmark started (killed on drop).
struct Procs(Vec<Proc>, #[allow(dead_code)] Vec<Server>);

impl Procs {
    /// From `ROUTER_BENCH_PROCS` ("PID@URL" ×4: direct, s0, s1, router; scripts/bench-router.sh
    /// starts them, so its trap can stop them), or started here.
    fn get() -> Procs {
        if let Ok(list) = std::env::var("ROUTER_BENCH_PROCS") {
            let procs: Vec<Proc> = list
                .split_whitespace()
                .map(|p| {
                    let (pid, url) = p.split_once('@').expect("ROUTER_BENCH_PROCS: PID@URL items");
                    Proc { pid: pid.parse().expect("ROUTER_BENCH_PROCS: a numeric pid"), url: url.to_string() }
                })
                .collect();
            assert_eq!(procs.len(), 4, "ROUTER_BENCH_PROCS: direct, s0, s1 and router");
            return Procs(procs, Vec::new());
        }
        let servers = vec![
            start_server(&[], Stdio::inherit()),
            start_server(&[], Stdio::inherit()),
            start_server(&[], Stdio::inherit()),
        ];
        let (a0, a1) = (format!("s0={}", servers[1].1), format!("s1={}", servers[2].1));
        let args: Vec<&OsStr> = ["--router", "--shard", &a0, "--shard", &a1].into_iter().map(OsStr::new).collect();
        let mut servers = servers;
        servers.push(start_server(&args, Stdio::inherit()));
        let procs = servers.iter().map(|s| Proc { pid: s.0.id(), url: s.1.clone() }).collect();
        Procs(procs, servers)
    }
}

fn main() {
    let nsingle: usize =
        std::env::var("ROUTER_BENCH_QUERIES").ok().and_then(|s| s.parse().ok()).unwrap_or(5000).max(BLOCK);
    let nsingle = nsingle / BLOCK * BLOCK;
    let nb: usize = std::env::var("ROUTER_BENCH_VECTORS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let nb = nb.max(2) / 2 * 2;
    let (all_k, half_k) = (format!("{}k", nb / 1000), format!("{}k", nb / 2000));
    let base = vectors(nb, D, 1);
    let queries = vectors(nsingle.max(2000), D, 2);

    let procs = Procs::get();
    let (direct, s0, s1, router) = (&procs.0[0], &procs.0[1], &procs.0[2], &procs.0[3]);

    let mut cd = client(&direct.url);
    let mut cr = client(&router.url);
    cd.create_index("flat", D, "Flat", None).expect("create direct");
    cr.create_index("flat", D, "Flat", None).expect("create through router");
    for part in base.chunks(10_000 * D) {
        cd.add_vectors("flat", part, D, None, None).expect("add direct");
        cr.add_vectors("flat", part, D, None, None).expect("add through router");
    }
    for s in [s0, s1] {
        let n = client(&s.url).get_index_status("flat").expect("shard status").ntotal;
        assert_eq!(n as usize, nb / 2, "each shard holds half");
    }

    // Warm-up (connections, caches, the router's facts and its connections to the shards).
    let warm = &queries[..BLOCK * D];
    singles(&mut cd, warm, &mut Vec::new());
    singles(&mut cr, warm, &mut Vec::new());

    // 1 + 2: single queries in alternating blocks, CPU per process over its blocks.
    let pids = [router.pid, s0.pid, s1.pid, direct.pid];
    let mut cpu = [0.0f64; 4];
    let (mut lat_r, mut lat_d) = (Vec::with_capacity(nsingle), Vec::with_capacity(nsingle));
    let (mut wall_r, mut wall_d) = (0.0f64, 0.0f64);
    for (b, qs) in queries[..nsingle * D].chunks(BLOCK * D).enumerate() {
        // Alternate which goes first, so neither always follows the other.
        for leg in if b % 2 == 0 { [0, 1] } else { [1, 0] } {
            let before: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
            let t = Instant::now();
            if leg == 0 {
                singles(&mut cr, qs, &mut lat_r);
                wall_r += t.elapsed().as_secs_f64();
                for i in 0..3 {
                    cpu[i] += cpu_seconds(pids[i]) - before[i];
                }
            } else {
                singles(&mut cd, qs, &mut lat_d);
                wall_d += t.elapsed().as_secs_f64();
                cpu[3] += cpu_seconds(pids[3]) - before[3];
            }
        }
    }
    let per = |s: f64| s * 1e6 / nsingle as f64;
    let (rp50, rp99) = (pct(&mut lat_r, 0.5), pct(&mut lat_r, 0.99));
    let (dp50, dp99) = (pct(&mut lat_d, 0.5), pct(&mut lat_d, 0.99));
    let goal = 1.5 * dp50 + 0.1;
    println!(
        "## single-query search, {all_k} x 128 IndexFlatL2, k=10, {nsingle} queries each, one connection, \
         alternating blocks of {BLOCK}"
    );
    println!("direct (one server, {all_k}):   {:.0} q/s, p50 {dp50:.3} ms, p99 {dp99:.3} ms", nsingle as f64 / wall_d);
    println!(
        "router (2 shards x {half_k}):     {:.0} q/s, p50 {rp50:.3} ms, p99 {rp99:.3} ms",
        nsingle as f64 / wall_r
    );
    println!(
        "router/direct: p50 {:.2}x, p99 {:.2}x, QPS {:.2}x; goal p50 <= 1.5 x {dp50:.3} + 0.100 = {goal:.3} ms: {}",
        rp50 / dp50,
        rp99 / dp99,
        wall_d / wall_r,
        if rp50 <= goal { "MET" } else { "MISSED" }
    );
    let (rc, r0, r1, dc) = (per(cpu[0]), per(cpu[1]), per(cpu[2]), per(cpu[3]));
    let replica = (r0 + r1) / 2.0;
    println!("## CPU per request (utime+stime, /proc/PID/stat, 10 ms ticks)");
    println!(
        "router {rc:.0} µs; shard s0 {r0:.0} µs, s1 {r1:.0} µs (mean replica {replica:.0} µs); direct server {dc:.0} µs"
    );
    println!(
        "router / replica: {:.0} %; goal <= 30 %: {}",
        100.0 * rc / replica,
        if rc <= 0.3 * replica { "MET" } else { "MISSED" }
    );

    // Breakdown: the client<->router hop alone (the router answers ping itself), a bare hop
    // to a shard, and the router's own view of a shard call.
    let (pr50, pr99) = pings(&mut cr, 1000);
    let (ps50, ps99) = pings(&mut client(&s0.url), 1000);
    let health = cr.health().expect("router health");
    let mut shard_ms = Vec::new();
    if let Some(Value::Array(shards)) = health.get("shards") {
        for s in shards {
            let s = Msg::from_value(s.clone()).expect("shard entry");
            if let Some(Value::Array(rs)) = s.get("replicas") {
                for r in rs {
                    let r = Msg::from_value(r.clone()).expect("replica entry");
                    shard_ms.push(r.get("mean_ms").and_then(Value::as_f64).unwrap_or(f64::NAN));
                }
            }
        }
    }
    // The floor for any router here: the same scatter done by the client itself (both
    // requests sent, then both replies read, one thread), and one shard alone.
    let (mut c0, mut c1) = (client(&s0.url), client(&s1.url));
    let (mut lat_s, mut lat_1) = (Vec::with_capacity(2000), Vec::with_capacity(2000));
    for q in queries.chunks(D).take(2000) {
        let req = c0.config().search_request("flat", q, D, &KNN10, false);
        let t = Instant::now();
        let (q0, q1) = (c0.send_raw(req.clone()).expect("send"), c1.send_raw(req.clone()).expect("send"));
        let far = t + std::time::Duration::from_secs(60);
        c0.receive(q0, far).expect("shard reply");
        c1.receive(q1, far).expect("shard reply");
        lat_s.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        c0.call_raw(req).expect("shard reply");
        lat_1.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("## breakdown");
    println!(
        "client to both shards itself (no router): p50 {:.3}, p99 {:.3} ms; to one shard ({half_k}): p50 {:.3}, p99 {:.3} ms",
        pct(&mut lat_s, 0.5),
        pct(&mut lat_s, 0.99),
        pct(&mut lat_1, 0.5),
        pct(&mut lat_1, 0.99)
    );
    println!(
        "ping answered by the router: p50 {pr50:.3}, p99 {pr99:.3} ms; ping to a shard: p50 {ps50:.3}, p99 {ps99:.3} ms; \
         router's mean time per shard call: {}",
        shard_ms.iter().map(|m| format!("{:.3} ms", m)).collect::<Vec<_>>().join(", ")
    );

    // 3: batch search, nq=100, alternating; results compared.
    let nb = 20;
    let bq = vectors(nb * 100, D, 3);
    let (mut t_r, mut t_d) = (0.0f64, 0.0f64);
    let (mut same_ids, mut same_d, mut total, mut max_diff) = (0usize, 0usize, 0usize, 0f32);
    // warm-up
    cd.search("flat", &bq[..100 * D], D, &KNN10, false).expect("batch direct");
    cr.search("flat", &bq[..100 * D], D, &KNN10, false).expect("batch router");
    for (b, qs) in bq.chunks(100 * D).enumerate() {
        let mut got = [None, None];
        for leg in if b % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            let c = if leg == 0 { &mut cr } else { &mut cd };
            let (n, _) = c.search("flat", qs, D, &KNN10, false).expect("batch search");
            let dt = t.elapsed().as_secs_f64();
            if leg == 0 {
                t_r += dt
            } else {
                t_d += dt
            }
            got[leg] = Some(n);
        }
        let [Some(r), Some(d)] = got else { unreachable!() };
        assert_eq!((r.nq, d.nq), (100, 100));
        for i in 0..r.ids.len() {
            total += 1;
            same_ids += usize::from(r.ids[i] == d.ids[i]);
            same_d += usize::from(r.dists[i].to_bits() == d.dists[i].to_bits());
            max_diff = max_diff.max((r.dists[i] - d.dists[i]).abs());
        }
    }
    let nqb = (nb * 100) as f64;
    println!("## batch search, nq=100, k=10, {nb} batches each, alternating");
    println!("direct: {:.0} queries/s; router: {:.0} queries/s ({:.2}x)", nqb / t_d, nqb / t_r, t_d / t_r);
    println!(
        "identical: ids {same_ids}/{total}, distances (bit-equal) {same_d}/{total}, max |diff| {max_diff:e}: {}",
        if same_ids == total && same_d == total { "IDENTICAL" } else { "DIFFERENT" }
    );
}
