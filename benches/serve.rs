//! Server benchmark: `faissx serve` over tcp://127.0.0.1 against in-process FAISS.
//!
//! ```sh
//! cargo build --release && cargo bench --bench serve          # everything (~1,000 indices: needs ~6 GB RAM)
//! SERVE_BENCH_MANY=100 cargo bench --bench serve              # fewer indices in the last part
//! ```
//!
//! 1. Single-query search latency on a 10k×128 IndexFlatL2, k=10, 2,000 requests from one
//!    client (our DEALER client, binary payloads): requests/s, p50/p99, and the same 2,000
//!    queries searched in-process one at a time (one OpenMP thread) for the ratio.
//! 2. Add throughput: 100k×128 vectors in 10k batches over the wire (in-memory server) vs
//!    `Index::add` in-process.
//! 3. One server holding SERVE_BENCH_MANY (default 1,000) indices of 10k×128: ping p50/p99.
//!
//! The official Python client's numbers come from benches/serve_python.py (run by
//! scripts/bench-serve.sh).

use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::index::{set_threads, Index, IndexSpec, Metric, SearchParams};
use faissx::engine::protocol::{self, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const D: usize = 128;

fn vectors(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n * D)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect()
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Server {
    let exe = std::env::var("FAISSX_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/release/faissx")
    });
    let mut child = Command::new(&exe)
        .args(["serve", "--bind-address", "127.0.0.1", "--port", "0", "-q"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {exe}: {e} (build first: cargo build --release)"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("endpoint line");
    Server(child, line.trim().to_string())
}

fn client(ep: &str) -> Client {
    Client::connect(ClientConfig {
        server: ep.to_string(),
        api_key: None,
        tenant: None,
        timeout: Duration::from_secs(600),
    })
    .expect("client")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let srv = start();
    let mut c = client(&srv.1);
    let base = vectors(10_000, 1);
    let queries = vectors(2_000, 2);

    // 1. single-query search
    c.create("flat", D, "Flat", None).expect("create");
    c.add("flat", &base, D, None, None).expect("add");
    for q in queries.chunks(D).take(200) {
        c.search("flat", q, D, 10, vec![], false).expect("warm-up");
    }
    let mut lat = Vec::with_capacity(2000);
    let t0 = Instant::now();
    for q in queries.chunks(D) {
        let t = Instant::now();
        c.search("flat", q, D, 10, vec![], false).expect("search");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    // the same in-process
    set_threads(1);
    let mut local =
        Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: D }, false).expect("index");
    local.add(&base, None).expect("add");
    let params = SearchParams { k: 10, nprobe: None, ef_search: None };
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
    println!(
        "in-process Index::search (1 thread): {:.0} q/s, p50 {lp50:.3} ms -> wire/in-process latency ratio {:.1}x",
        2000.0 / lwall,
        p50 / lp50
    );
    println!("ping round trip: p50 {:.3} ms, p99 {:.3} ms", pct(&mut plat, 0.5), pct(&mut plat, 0.99));

    // 2. add throughput
    set_threads(0);
    let big = vectors(100_000, 3);
    c.create("adds", D, "Flat", None).expect("create");
    let t0 = Instant::now();
    for b in big.chunks(10_000 * D) {
        c.add("adds", b, D, None, None).expect("add");
    }
    let wire = 100_000.0 / t0.elapsed().as_secs_f64();
    let mut local =
        Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: D }, false).expect("index");
    let t0 = Instant::now();
    for b in big.chunks(10_000 * D) {
        local.add(b, None).expect("add");
    }
    let inproc = 100_000.0 / t0.elapsed().as_secs_f64();
    println!("## add throughput, 100k x 128 in batches of 10k, IndexFlatL2, in-memory server");
    println!(
        "over the wire: {:.0} vectors/s ({:.0} MB/s); in-process: {:.0} vectors/s -> {:.0}%",
        wire,
        wire * (D * 4) as f64 / 1e6,
        inproc,
        100.0 * wire / inproc
    );
    drop(c);
    drop(srv);

    // 3. many indices
    let many: usize = std::env::var("SERVE_BENCH_MANY").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let srv = start();
    let mut c = client(&srv.1);
    let req = |i: usize| {
        protocol::encode_request(
            "add_vectors",
            vec![
                ("index_id", Value::from(format!("ix{i}"))),
                ("vectors", protocol::vectors_value(&base, D, protocol::Encoding::Binary)),
            ],
        )
    };
    let t0 = Instant::now();
    for i in 0..many {
        c.create(&format!("ix{i}"), D, "Flat", None).expect("create");
        c.call_raw(&req(i)).expect("add");
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
        c.search(&format!("ix{}", (i * 7919) % many), q, D, 10, vec![], false).expect("search");
        slat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "single-query search on random indices: p50 {:.3} ms, p99 {:.3} ms",
        pct(&mut slat, 0.5),
        pct(&mut slat, 0.99)
    );
}
