//! Server benchmark: `faissx serve` over tcp://127.0.0.1 against in-process FAISS.
//!
//! ```sh
//! cargo build --release && cargo bench --bench serve          # everything (~1,000 indices: needs ~6 GB RAM)
//! SERVE_BENCH_MANY=100 cargo bench --bench serve              # fewer indices in the last part
//! SERVE_BENCH_PARTS=search,add cargo bench --bench serve      # some parts only (search, add, many)
//! ```
//!
//! 1. `search`: single-query search on a 10k×128 IndexFlatL2, k=10, 2,000 requests from one
//!    client (our DEALER client, binary payloads), one request at a time and pipelined (1–8
//!    requests in flight on the one connection): requests/s, p50/p99, CPU time per request of
//!    server and client; the same 2,000 queries searched in-process one at a time (one
//!    OpenMP thread) for the ratio; ping round trips.
//! 2. `add`: 100k×128 vectors in batches of 10k over the wire (in-memory server) vs
//!    `Index::add` in-process, alternating, 3 rounds, medians.
//! 3. `many`: one server holding SERVE_BENCH_MANY (default 1,000) indices of 10k×128: ping
//!    p50/p99 and single-query searches on random indices.
//!
//! The official Python client's numbers come from benches/serve_python.py (run by
//! scripts/bench-serve.sh).

#[path = "common/mod.rs"]
mod common;

use common::{client, cpu_seconds, pct, start_server, vectors, Server, KNN10};
use faissx::engine::client::{search_reply, Client};
use faissx::engine::index::{set_threads, Index, IndexSpec, Metric};
use faissx::engine::protocol::{self, Value};

use std::process::Stdio;
use std::time::Instant;

const D: usize = 128;

fn start() -> Server {
    start_server(&[], Stdio::inherit())
}

/// Single-query searches of `queries` over one connection with `window` requests in flight:
/// (requests/s, p50 ms, p99 ms, server CPU µs per request, client CPU µs per request).
fn pipelined(c: &mut Client, server: u32, index: &str, queries: &[f32], window: usize) -> (f64, f64, f64, f64, f64) {
    let reqs: Vec<Vec<u8>> = queries.chunks(D).map(|q| c.config().search_request(index, q, D, &KNN10, false)).collect();
    let mut lat = Vec::with_capacity(reqs.len());
    let (s0, c0) = (cpu_seconds(server), cpu_seconds(std::process::id()));
    let t0 = Instant::now();
    c.pipeline(&reqs, window, |_, r, took| {
        let (n, _) = search_reply(r?, 10)?;
        assert_eq!(n.nq, 1);
        lat.push(took.as_secs_f64() * 1e3);
        Ok(())
    })
    .expect("pipelined search");
    let rate = reqs.len() as f64 / t0.elapsed().as_secs_f64();
    let per = |a: f64, b: f64| (b - a) * 1e6 / reqs.len() as f64;
    let (scpu, ccpu) = (per(s0, cpu_seconds(server)), per(c0, cpu_seconds(std::process::id())));
    (rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99), scpu, ccpu)
}

fn main() {
    let parts = std::env::var("SERVE_BENCH_PARTS").unwrap_or_else(|_| "search,add,many".into());
    let base = vectors(10_000, D, 1);
    let queries = vectors(2_000, D, 2);
    if parts.contains("search") {
        bench_search(&base, &queries);
    }
    if parts.contains("add") {
        bench_add();
    }
    if parts.contains("many") {
        bench_many(&base, &queries);
    }
}

fn bench_search(base: &[f32], queries: &[f32]) {
    let srv = start();
    let mut c = client(&srv.1);
    c.create_index("flat", D, "Flat", None).expect("create");
    c.add_vectors("flat", base, D, None, None).expect("add");
    for q in queries.chunks(D).take(200) {
        c.search("flat", q, D, &KNN10, false).expect("warm-up");
    }
    let mut lat = Vec::with_capacity(2000);
    let t0 = Instant::now();
    for q in queries.chunks(D) {
        let t = Instant::now();
        c.search("flat", q, D, &KNN10, false).expect("search");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let windows: Vec<_> =
        [1, 2, 4, 8].iter().map(|&w| (w, pipelined(&mut c, srv.0.id(), "flat", queries, w))).collect();
    // the same in-process
    set_threads(1);
    let mut local =
        Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: D }, false).expect("index");
    local.add(base, None).expect("add");
    let params = KNN10;
    let mut llat = Vec::with_capacity(2000);
    let t0 = Instant::now();
    for q in queries.chunks(D) {
        let t = Instant::now();
        std::hint::black_box(local.search(q, &params).expect("search"));
        llat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let lwall = t0.elapsed().as_secs_f64();
    let lp50 = pct(&mut llat, 0.5);
    // ping floor
    let mut plat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        c.ping().expect("ping");
        plat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("## single-query search, 10k x 128 IndexFlatL2, k=10, 2,000 requests, one client");
    println!("faissx client over tcp://127.0.0.1: {:.0} req/s, p50 {p50:.3} ms, p99 {p99:.3} ms", 2000.0 / wall);
    for (w, (rate, p50, p99, scpu, ccpu)) in &windows {
        println!(
            "same client, {w} request(s) in flight: {rate:.0} req/s, p50 {p50:.3} ms, p99 {p99:.3} ms \
             (CPU per request: server {scpu:.0} µs, client {ccpu:.0} µs)"
        );
    }
    println!(
        "in-process Index::search (1 thread): {:.0} q/s, p50 {lp50:.3} ms -> wire/in-process latency ratio {:.1}x",
        2000.0 / lwall,
        p50 / lp50
    );
    println!("ping round trip: p50 {:.3} ms, p99 {:.3} ms", pct(&mut plat, 0.5), pct(&mut plat, 0.99));
}

fn bench_add() {
    set_threads(0);
    let big = vectors(100_000, D, 3);
    let srv = start();
    let mut c = client(&srv.1);
    let (mut wire, mut inproc) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let name = format!("adds{round}");
        c.create_index(&name, D, "Flat", None).expect("create");
        let t0 = Instant::now();
        for b in big.chunks(10_000 * D) {
            c.add_vectors(&name, b, D, None, None).expect("add");
        }
        wire.push(100_000.0 / t0.elapsed().as_secs_f64());
        let mut local =
            Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: D }, false).expect("index");
        let t0 = Instant::now();
        for b in big.chunks(10_000 * D) {
            local.add(b, None).expect("add");
        }
        inproc.push(100_000.0 / t0.elapsed().as_secs_f64());
    }
    let (w, l) = (pct(&mut wire, 0.5), pct(&mut inproc, 0.5));
    println!("## add throughput, 100k x 128 in batches of 10k, IndexFlatL2, in-memory server (median of 3)");
    println!(
        "over the wire: {w:.0} vectors/s ({:.0} MB/s); in-process: {l:.0} vectors/s -> {:.0}%",
        w * (D * 4) as f64 / 1e6,
        100.0 * w / l
    );
}

fn bench_many(base: &[f32], queries: &[f32]) {
    let many: usize = std::env::var("SERVE_BENCH_MANY").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let srv = start();
    let mut c = client(&srv.1);
    let req = |i: usize| {
        protocol::encode_request(
            "add_vectors",
            vec![
                ("index_id", Value::from(format!("ix{i}"))),
                ("vectors", protocol::vectors_value(base, D, protocol::Encoding::Binary)),
            ],
        )
    };
    let t0 = Instant::now();
    for i in 0..many {
        c.create_index(&format!("ix{i}"), D, "Flat", None).expect("create");
        c.call_raw(req(i)).expect("add");
    }
    let fill = t0.elapsed().as_secs_f64();
    let mut plat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        c.ping().expect("ping");
        plat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "## one server holding {many} indices of 10k x 128 ({:.1} GB of vectors, filled in {fill:.1} s)",
        (many * 10_000 * D * 4) as f64 / 1e9
    );
    println!("ping: p50 {:.3} ms, p99 {:.3} ms", pct(&mut plat, 0.5), pct(&mut plat, 0.99));
    let mut slat = Vec::new();
    for (i, q) in queries.chunks(D).enumerate().take(1000) {
        let t = Instant::now();
        c.search(&format!("ix{}", (i * 7919) % many), q, D, &KNN10, false).expect("search");
        slat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "single-query search on random indices: p50 {:.3} ms, p99 {:.3} ms",
        pct(&mut slat, 0.5),
        pct(&mut slat, 0.99)
    );
}
