//! Cluster benchmark (issue 15, BENCHMARKS.md "Cluster (serve --cluster)"): replicas of
//! `faissx serve --cluster` against a single-node `faissx serve`, over tcp://127.0.0.1.
//!
//! The servers are started by scripts/bench-cluster.sh (NATS, two replicas, single nodes),
//! which passes their endpoints in the environment:
//!
//! ```sh
//! bash scripts/bench-cluster.sh                                   # everything, with part 3
//! CLUSTER_BENCH_A=tcp://… CLUSTER_BENCH_B=tcp://… CLUSTER_BENCH_SINGLE=tcp://… \
//!   CLUSTER_BENCH_DURABLE=tcp://… cargo bench --bench cluster      # parts 1, 2 and 4 only
//! ```
//!
//! - `CLUSTER_BENCH_A`, `CLUSTER_BENCH_B`: two replicas of one cluster (writes go to A).
//! - `CLUSTER_BENCH_SINGLE`: a single-node server in memory; `CLUSTER_BENCH_DURABLE`: one
//!   with `--data-dir` (WAL fsynced per write); `CLUSTER_BENCH_SYNCED` (optional): a replica
//!   of another cluster whose NATS fsyncs every message (`jetstream { sync_interval: always }`).
//! - `CLUSTER_BENCH_PARTS` (default `search,add,lag`): which parts run.
//!
//! 1. `add`: CLUSTER_BENCH_BATCHES (default 20) batches of 10k×128 f32 into a new Flat
//!    index, one request at a time on one connection, to each server in turn (single, durable,
//!    replica A, synced replica), 3 rounds, medians: vectors/s, the replica's ratio to each
//!    single node, and when replica B had applied the last batch (a `min_seq` read on B).
//! 2. `lag`: adds of CLUSTER_BENCH_LAG_ROWS (default 10) vectors paced at CLUSTER_BENCH_RATE
//!    (default 1000) requests/s for CLUSTER_BENCH_SECS (default 20) s to replica A (4
//!    connections, each its share of a common schedule). For every write, the time from A's
//!    reply (and from its send) until the client knows replica B has applied the write's
//!    `seq`: a reader thread sends B a `get_index_status` with `min_seq` = that seq, which B
//!    answers once it has applied it; writes whose seq B's reply (`applied_seq`) already
//!    covers are settled by the same reply. Each lag is thus an upper bound (one round trip
//!    on B, ~0.15 ms, plus any queue in the reader), never an underestimate.
//! 3. (part 3, a new replica from a 1 GB snapshot vs `import`, is timed by the script.)
//! 4. `search`: single-query search, 10k×128 Flat, k=10, 2,000 requests one at a time on one
//!    connection, 3 rounds alternating the single node, replica A (which received the adds)
//!    and replica B: requests/s, p50/p99, and the replicas' ratio to the single node.

#[path = "common/mod.rs"]
#[allow(dead_code)] // the script starts the servers: `start_server` is not used here
mod common;

use common::{client, env_or, pct, vectors, KNN10};
use faissx::engine::client::Client;
use faissx::engine::protocol::{self, Encoding, Msg, Value};

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const D: usize = 128;

fn endpoint(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn required(name: &str) -> String {
    endpoint(name).unwrap_or_else(|| panic!("{name} is not set (scripts/bench-cluster.sh starts the servers)"))
}

/// An `add_vectors` request of `x` (`n × D`, binary).
fn add_request(index: &str, x: &[f32]) -> Vec<u8> {
    protocol::encode_request(
        "add_vectors",
        vec![("index_id", Value::from(index)), ("vectors", protocol::vectors_value(x, D, Encoding::Binary))],
    )
}

/// The `seq` of a replica's write reply (0 from a single node).
fn seq_of(r: &Msg) -> u64 {
    r.uint("seq").ok().flatten().unwrap_or(0)
}

/// Wait (up to 60 s) until `c`'s replica has applied `seq`: the reply's `applied_seq`.
fn wait_seq(c: &mut Client, index: &str, seq: u64) -> u64 {
    let r = c
        .call(
            "get_index_status",
            vec![
                ("index_id", Value::from(index)),
                ("min_seq", Value::from(seq)),
                ("min_seq_timeout", Value::F64(60.0)),
            ],
        )
        .expect("min_seq read");
    r.uint("applied_seq").ok().flatten().unwrap_or(seq)
}

fn median(v: &[f64]) -> f64 {
    pct(&mut v.to_vec(), 0.5)
}

fn main() {
    let parts = std::env::var("CLUSTER_BENCH_PARTS").unwrap_or_else(|_| "search,add,lag".into());
    if parts.contains("search") {
        bench_search();
    }
    if parts.contains("add") {
        bench_add();
    }
    if parts.contains("lag") {
        bench_lag();
    }
}

fn bench_search() {
    let (single, a, b) = (required("CLUSTER_BENCH_SINGLE"), required("CLUSTER_BENCH_A"), required("CLUSTER_BENCH_B"));
    let base = vectors(10_000, D, 1);
    let queries = vectors(2_000, D, 2);
    let mut cs = client(&single);
    let mut ca = client(&a);
    let mut cb = client(&b);
    cs.create_index("cbs", D, "Flat", None).expect("create");
    cs.add_vectors("cbs", &base[..], D, None, None).expect("add");
    ca.create_index("cbs", D, "Flat", None).expect("create");
    let seq = seq_of(&ca.call_raw(add_request("cbs", &base)).expect("add"));
    wait_seq(&mut cb, "cbs", seq);
    let names = ["single node", "replica A (took the writes)", "replica B"];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut p50s = [Vec::new(), Vec::new(), Vec::new()];
    let mut p99s = [Vec::new(), Vec::new(), Vec::new()];
    for c in [&mut cs, &mut ca, &mut cb] {
        for q in queries.chunks(D).take(200) {
            c.search("cbs", q, D, &KNN10, false).expect("warm-up");
        }
    }
    println!("## 4. single-query search, 10k x 128 Flat, k=10, 2,000 requests one at a time, one connection");
    for round in 0..3 {
        let mut line = format!("round {}:", round + 1);
        for (i, c) in [&mut cs, &mut ca, &mut cb].into_iter().enumerate() {
            let mut lat = Vec::with_capacity(2000);
            let t0 = Instant::now();
            for q in queries.chunks(D) {
                let t = Instant::now();
                c.search("cbs", q, D, &KNN10, false).expect("search");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let rate = 2000.0 / t0.elapsed().as_secs_f64();
            let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
            line += &format!(" {}: {rate:.0} req/s, p50 {p50:.3}, p99 {p99:.3} ms;", names[i]);
            rates[i].push(rate);
            p50s[i].push(p50);
            p99s[i].push(p99);
        }
        println!("{}", line.trim_end_matches(';'));
    }
    for i in 0..3 {
        println!(
            "median of 3, {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms{}",
            names[i],
            median(&rates[i]),
            median(&p50s[i]),
            median(&p99s[i]),
            if i == 0 {
                String::new()
            } else {
                format!(
                    " -> throughput ratio to the single node {:.2} (per round: {})",
                    median(&rates[i]) / median(&rates[0]),
                    rates[i].iter().zip(&rates[0]).map(|(r, s)| format!("{:.2}", r / s)).collect::<Vec<_>>().join(", ")
                )
            }
        );
    }
    cs.delete_index("cbs").expect("delete");
    ca.delete_index("cbs").expect("delete");
}

fn bench_add() {
    let batches: usize = env_or("CLUSTER_BENCH_BATCHES", 20);
    let b = required("CLUSTER_BENCH_B");
    let mut targets: Vec<(&str, String)> = vec![
        ("single node, in memory", required("CLUSTER_BENCH_SINGLE")),
        ("single node, --data-dir (WAL fsync per write)", required("CLUSTER_BENCH_DURABLE")),
        ("replica A (JetStream file store, default sync)", required("CLUSTER_BENCH_A")),
    ];
    if let Some(s) = endpoint("CLUSTER_BENCH_SYNCED") {
        targets.push(("replica of a NATS with sync_interval: always", s));
    }
    let data: Vec<Vec<f32>> = (0..batches).map(|i| vectors(10_000, D, 100 + i as u64)).collect();
    let n = (batches * 10_000) as f64;
    let mut rates = vec![Vec::new(); targets.len()];
    let mut on_b = Vec::new();
    let mut cb = client(&b);
    println!(
        "## 1. add throughput: {batches} batches of 10k x 128 f32 into a new Flat index, one request at a time, one connection (3 rounds)"
    );
    for round in 0..3 {
        let mut line = format!("round {}:", round + 1);
        for (t, (name, ep)) in targets.iter().enumerate() {
            let mut c = client(ep);
            let index = format!("cba{round}");
            c.create_index(&index, D, "Flat", None).expect("create");
            let t0 = Instant::now();
            let mut seq = 0;
            for x in &data {
                seq = seq_of(&c.call_raw(add_request(&index, x)).expect("add"));
            }
            let took = t0.elapsed().as_secs_f64();
            rates[t].push(n / took);
            line += &format!(" {name}: {:.0}/s;", n / took);
            if t == 2 {
                // Same cluster as B: when B has applied the last batch.
                wait_seq(&mut cb, &index, seq);
                let all = t0.elapsed().as_secs_f64();
                on_b.push(n / all);
                line += &format!(" (all applied on B after {all:.2} s: {:.0}/s);", n / all);
            }
            c.delete_index(&index).expect("delete");
        }
        println!("{}", line.trim_end_matches(';'));
    }
    let m: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    for (t, (name, _)) in targets.iter().enumerate() {
        println!("median of 3, {name}: {:.0} vectors/s ({:.0} MB/s)", m[t], m[t] * (D * 4) as f64 / 1e6);
    }
    let per_round = |t: usize, s: usize| {
        rates[t].iter().zip(&rates[s]).map(|(r, s)| format!("{:.0}%", 100.0 * r / s)).collect::<Vec<_>>().join(", ")
    };
    println!(
        "replica A / single node in memory: {:.0}% (per round: {}); replica A / single node --data-dir: {:.0}% (per round: {})",
        100.0 * m[2] / m[0],
        per_round(2, 0),
        100.0 * m[2] / m[1],
        per_round(2, 1)
    );
    println!("replica A, until B has applied everything: {:.0} vectors/s", median(&on_b));
    if targets.len() > 3 {
        println!(
            "replica of a fsync-always NATS / single node --data-dir: {:.0}% (per round: {})",
            100.0 * m[3] / m[1],
            per_round(3, 1)
        );
    }
}

/// One write of the lag stream: its log sequence, when it was due, sent and answered.
struct Write {
    seq: u64,
    due: Instant,
    sent: Instant,
    replied: Instant,
}

fn bench_lag() {
    let (a, b) = (required("CLUSTER_BENCH_A"), required("CLUSTER_BENCH_B"));
    let rate: f64 = env_or("CLUSTER_BENCH_RATE", 1000.0);
    let secs: f64 = env_or("CLUSTER_BENCH_SECS", 20.0);
    let rows: usize = env_or("CLUSTER_BENCH_LAG_ROWS", 10);
    const WRITERS: usize = 4;
    let total = (rate * secs) as usize;
    let pool: Vec<Vec<u8>> = (0..256).map(|i| add_request("cbl", &vectors(rows, D, 1000 + i as u64))).collect();
    let mut ca = client(&a);
    ca.create_index("cbl", D, "Flat", None).expect("create");
    let mut cb = client(&b);
    let first = seq_of(&ca.call_raw(add_request("cbl", &vectors(rows, D, 999))).expect("add"));
    wait_seq(&mut cb, "cbl", first);
    let (tx, rx) = mpsc::channel::<Write>();
    let t0 = Instant::now() + Duration::from_millis(100);
    let period = Duration::from_secs_f64(1.0 / rate);
    // The reader: each write settled when B is known to have applied its seq.
    let reader = std::thread::spawn(move || {
        let mut settled: Vec<(Write, Instant)> = Vec::with_capacity(total);
        let mut queue: VecDeque<Write> = VecDeque::new();
        let mut applied = 0u64;
        let mut open = true;
        while open || !queue.is_empty() {
            if queue.is_empty() {
                match rx.recv() {
                    Ok(w) => queue.push_back(w),
                    Err(_) => open = false,
                }
            }
            while let Ok(w) = rx.try_recv() {
                queue.push_back(w);
            }
            let Some(w) = queue.pop_front() else { continue };
            if w.seq > applied {
                applied = applied.max(wait_seq(&mut cb, "cbl", w.seq));
            }
            let known = Instant::now();
            settled.push((w, known));
            // Every write B's reply already covers is settled by it.
            let mut rest = VecDeque::with_capacity(queue.len());
            for w in queue.drain(..) {
                if w.seq <= applied {
                    settled.push((w, known));
                } else {
                    rest.push_back(w);
                }
            }
            queue = rest;
        }
        settled
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|j| {
            let (tx, a, pool) = (tx.clone(), a.clone(), pool.clone());
            std::thread::spawn(move || {
                let mut c = client(&a);
                let mut late = 0usize;
                for slot in (j..total).step_by(WRITERS) {
                    let due = t0 + period * slot as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    } else if now - due > Duration::from_millis(1) {
                        late += 1;
                    }
                    let sent = Instant::now();
                    let r = c.call_raw(pool[slot % pool.len()].clone()).expect("add to replica A");
                    let replied = Instant::now();
                    let _ = tx.send(Write { seq: seq_of(&r), due, sent, replied });
                }
                late
            })
        })
        .collect();
    drop(tx);
    let late: usize = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    let wall = t0.elapsed().as_secs_f64();
    let settled = reader.join().expect("reader");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut write_lat: Vec<f64> = settled.iter().map(|(w, _)| ms(w.replied - w.sent)).collect();
    let mut lag_reply: Vec<f64> = settled.iter().map(|(w, k)| ms(k.saturating_duration_since(w.replied))).collect();
    let mut lag_send: Vec<f64> = settled.iter().map(|(w, k)| ms(*k - w.sent)).collect();
    let mut lag_due: Vec<f64> = settled.iter().map(|(w, k)| ms(k.saturating_duration_since(w.due))).collect();
    let mut lateness: Vec<f64> = settled.iter().map(|(w, _)| ms(w.sent.saturating_duration_since(w.due))).collect();
    let before_a = settled.iter().filter(|(w, k)| *k <= w.replied).count();
    let show =
        |v: &mut Vec<f64>| format!("p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms", pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
    println!(
        "## 2. replica lag: adds of {rows} x 128 paced at {rate:.0} req/s for {secs:.0} s to replica A ({WRITERS} connections), B read with min_seq"
    );
    println!(
        "{} writes in {wall:.1} s ({:.0} req/s achieved; {late} sent > 1 ms behind schedule, send lateness {})",
        settled.len(),
        settled.len() as f64 / wall,
        show(&mut lateness)
    );
    println!("write latency on A (send -> reply): {}", show(&mut write_lat));
    println!("lag, A's reply -> B known to have applied: {}", show(&mut lag_reply));
    println!("lag, send to A -> B known to have applied: {}", show(&mut lag_send));
    println!("lag, scheduled send -> B known to have applied (counts a writer held up): {}", show(&mut lag_due));
    println!("writes B had applied before A's reply reached the client: {before_a}");
    for (name, c) in [("A", &mut ca), ("B", &mut client(&b))] {
        let h = c.health().expect("health");
        let cl = h.map("cluster").ok().flatten().unwrap_or_default();
        println!(
            "health of {name}: applied_seq {}, failed_records {}, snapshot_seq {}",
            cl.uint("applied_seq").ok().flatten().unwrap_or(0),
            cl.uint("failed_records").ok().flatten().unwrap_or(0),
            cl.uint("snapshot_seq").ok().flatten().map_or("none".into(), |s| s.to_string())
        );
    }
    ca.delete_index("cbl").expect("delete");
}
