//! A seeded, bounded mutation fuzzer of `faissx serve` (issue 10: no request crashes, wedges
//! or corrupts a reply).
//!
//! One in-memory server with auth on (tenants acme and globex, plus "ops", whose key no
//! request carries and whose healthy index must keep working) holds indices of several types
//! (Flat, IVF4,Flat, HNSW8, SQ8, PQ2x4, IDMap2:Flat, BINARY_FLAT d=64). First every file of
//! `tests/fuzz/corpus/serve/` is replayed in name order (crashers found before; a sequence is
//! `<kind>-<action>-<hash>-<step>.msgpack`), then the base corpus (a valid request of every
//! action, and issue 10's crashers) as is, then `FAISSX_FUZZ_REQUESTS` generated requests
//! (default [`DEFAULT_REQUESTS`]), [`WINDOW`] in flight on one connection. Three in four are
//! base requests mutated at the byte level (bit flips, inserted, deleted or overwritten bytes,
//! truncation) or at the structure level (a field replaced by an extreme value: negative or
//! huge integers, u64::MAX, NaN/∞/3e38, empty or huge arrays, 10,000 levels of nesting, wrong
//! types, bins of odd length; a field dropped, duplicated or added; the action swapped); one
//! in four come from scenarios: blocks of 8 requests that create an index of a random type
//! (every family, degenerate parameters), train it, add to it, run random operations on it
//! with ordinary, zero, repeated or huge vectors, and delete it.
//!
//! Every reply must be a msgpack map, no request may go unanswered for [`HANG`], and the
//! process must never exit; every 1,000 requests `ping` must answer. When the server dies or
//! hangs, the requests in flight are replayed on a fresh server to find the culprit (alone,
//! after its scenario's earlier steps, or after everything that server had been sent), which
//! is saved to the corpus directory (two per distinct cause) and printed with the seed, its
//! index and its first 200 bytes in hex; fuzzing then goes on (up to
//! `FAISSX_FUZZ_MAX_FINDINGS`, default 25) and the test fails at the end.
//!
//! Knobs: `FAISSX_FUZZ_SEED` (default [`DEFAULT_SEED`]); `FAISSX_FUZZ_REPLAY=i,j` sends only
//! generated requests i, j of that seed; `FAISSX_FUZZ_SKIP_KNOWN=1` hunts for new causes:
//! it leaves out issue 10's crashers, the saved corpus and the IDMap2 ids that crash
//! get_vectors. Measured here (2 cores shared with other jobs, unfixed server): 1,100–1,500
//! generated requests a second without the time spent on findings, so the default 200,000
//! take 2¼–3 minutes; mutations alone run at about 2,400 a second.

use crate::serve::Server;
use crate::serve_hardening::{compact, connect, log_tail, try_start, TIMEOUT};
use crate::util::*;
use faissx::engine::protocol::{self, encode_value, Msg, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Requests per run unless `FAISSX_FUZZ_REQUESTS` says otherwise.
const DEFAULT_REQUESTS: usize = 200_000;
/// Seed unless `FAISSX_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x5eed_fa15;
/// Requests in flight on the connection.
const WINDOW: usize = 8;
/// A request without a reply for this long is a hang.
const HANG: Duration = Duration::from_secs(10);
/// Requests between liveness checks.
const CHECK_EVERY: usize = 1000;

const ARGS: [&str; 3] = ["--enable-auth", "--auth-keys", "k1:acme,k2:globex,k3:ops"];

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut r = Rng(seed);
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    fn pick_str(&mut self, xs: &[&'static str]) -> &'static str {
        xs[self.below(xs.len())]
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn hex(b: &[u8]) -> String {
    b.iter().take(200).map(|x| format!("{x:02x}")).collect()
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x0100_0000_01b3))
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn f32s(x: &[f32]) -> Value {
    Value::Binary(protocol::f32_bytes(x))
}

fn req(key: &str, action: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut all = vec![("action", s(action)), ("api_key", s(key))];
    all.extend(fields);
    Msg::from_pairs(all).into_bytes()
}

fn codes(n: usize, seed: u64) -> Vec<u8> {
    lcg_vectors(n, 8, seed).iter().map(|v| (v * 256.0) as u8).collect()
}

/// Build the indices the corpus talks about. `hunting`: IDMap2 ids 0..99 (issue 10's crash
/// of get_vectors over other ids would mask everything else).
fn setup(srv: &Server, hunting: bool) {
    let d = 8;
    let mut a = connect(srv, Some("k1"), TIMEOUT);
    let x = lcg_vectors(100, d, 1);
    let md: Vec<Value> = (0..100).map(|i| Value::from(format!("m{i}"))).collect();
    for (ix, kind) in [("flat", "Flat"), ("ivf", "IVF4,Flat"), ("hnsw", "HNSW8"), ("sq", "SQ8"), ("pq", "PQ2x4")] {
        a.create_index(ix, d, kind, None).unwrap();
        if !a.call("get_index_status", vec![("index_id", s(ix))]).unwrap().flag("is_trained").unwrap() {
            a.train(ix, &lcg_vectors(1000, d, 2), d).unwrap();
        }
        a.add_vectors(ix, &x, d, None, Some(md.clone())).unwrap();
    }
    a.create_index("small", d, "Flat", None).unwrap();
    a.add_vectors("small", &x[..10 * d], d, None, None).unwrap();
    a.create_index("idmap2", d, "IDMap2:Flat", None).unwrap();
    let first = if hunting { 0 } else { 1000 };
    a.add_vectors("idmap2", &x, d, Some(&(first..first + 100).collect::<Vec<i64>>()), None).unwrap();
    a.create_index("bin", 64, "BINARY_FLAT", None).unwrap();
    a.call("add_vectors", vec![("index_id", s("bin")), ("vectors", Value::Binary(codes(100, 3)))]).unwrap();
    let mut g = connect(srv, Some("k2"), TIMEOUT);
    g.create_index("flat", d, "Flat", None).unwrap();
    g.add_vectors("flat", &x[..20 * d], d, None, None).unwrap();
    let mut o = connect(srv, Some("k3"), TIMEOUT);
    o.create_index("healthy", 4, "Flat", None).unwrap();
    o.add_vectors("healthy", &[0.0f32, 1.0, 2.0, 3.0], 4, None, None).unwrap();
}

/// Valid requests of every action (acme's key unless said otherwise).
fn valid_corpus() -> Vec<Vec<u8>> {
    let d = 8;
    let q = || f32s(&lcg_vectors(2, d, 9));
    let ix = |v: &str| ("index_id", s(v));
    let a = |action: &str, f: Vec<(&str, Value)>| req("k1", action, f);
    let nested = protocol::vectors_value(&lcg_vectors(2, d, 5), d, protocol::Encoding::Nested);
    let params = |k: &str, v: u64| ("params", Msg::from_pairs(vec![(k, Value::from(v))]).into_value());
    vec![
        a("create_index", vec![ix("tmp-flat"), ("dimension", Value::from(8)), ("index_type", s("Flat"))]),
        a("create_index", vec![ix("tmp-hnsw"), ("dimension", Value::from(8)), ("index_type", s("HNSW8"))]),
        a("create_index", vec![ix("tmp-idmap"), ("dimension", Value::from(8)), ("index_type", s("IDMap2:Flat"))]),
        a("create_index", vec![ix("tmp-bin"), ("dimension", Value::from(64)), ("index_type", s("BINARY_FLAT"))]),
        a(
            "create_index",
            vec![ix("tmp-ivf"), ("dimension", Value::from(8)), ("index_type", s("IVF4,Flat")), ("metric", s("ip"))],
        ),
        a("add_vectors", vec![ix("flat"), ("vectors", f32s(&lcg_vectors(4, d, 6)))]),
        a(
            "add_vectors",
            vec![ix("tmp-flat"), ("vectors", nested.clone()), ("metadata", Value::Array(vec![s("x"), s("y")]))],
        ),
        a("add_with_ids", vec![ix("tmp-idmap"), ("vectors", q()), ("ids", protocol::ints_value(&[0, 1]))]),
        a("add_vectors", vec![ix("tmp-bin"), ("vectors", Value::Binary(codes(2, 4)))]),
        a("add_vectors", vec![ix("tmp-hnsw"), ("vectors", f32s(&lcg_vectors(3, d, 7)))]),
        a("search", vec![ix("flat"), ("query_vectors", q()), ("k", Value::from(5)), ("binary", Value::Boolean(true))]),
        a(
            "search",
            vec![
                ix("flat"),
                ("query_vectors", nested),
                ("k", Value::from(3)),
                ("include_metadata", Value::Boolean(true)),
            ],
        ),
        a("search", vec![ix("ivf"), ("query_vectors", q()), ("k", Value::from(4)), params("nprobe", 2)]),
        a("search", vec![ix("hnsw"), ("query_vectors", q()), ("k", Value::from(4)), params("efSearch", 16)]),
        a("search", vec![ix("bin"), ("query_vectors", Value::Binary(codes(1, 8))), ("k", Value::from(4))]),
        a("search", vec![ix("pq"), ("query_vectors", q()), ("k", Value::from(2))]),
        a("search", vec![ix("sq"), ("query_vectors", q()), ("k", Value::from(2))]),
        a("range_search", vec![ix("flat"), ("query_vectors", q()), ("radius", Value::F64(0.5))]),
        a("range_search", vec![ix("bin"), ("query_vectors", Value::Binary(codes(1, 8))), ("radius", Value::F64(20.0))]),
        a("train_index", vec![ix("tmp-ivf"), ("training_vectors", f32s(&lcg_vectors(64, d, 10)))]),
        a("train_index", vec![ix("sq"), ("training_vectors", f32s(&lcg_vectors(32, d, 11)))]),
        a("reconstruct", vec![ix("flat"), ("id", Value::from(3))]),
        a("reconstruct", vec![ix("idmap2"), ("id", Value::from(5)), ("binary", Value::Boolean(true))]),
        a("reconstruct", vec![ix("bin"), ("idx", Value::from(2))]),
        a(
            "reconstruct_n",
            vec![
                ix("flat"),
                ("start_idx", Value::from(0)),
                ("num_vectors", Value::from(5)),
                ("binary", Value::Boolean(true)),
            ],
        ),
        a("reconstruct_n", vec![ix("bin"), ("start_idx", Value::from(1)), ("num_vectors", Value::from(3))]),
        a("get_vectors", vec![ix("flat"), ("start_idx", Value::from(10)), ("limit", Value::from(5))]),
        a("get_vectors", vec![ix("sq"), ("start_idx", Value::from(90))]),
        a("remove_ids", vec![ix("tmp-flat"), ("ids", protocol::ints_value(&[0, 1]))]),
        a("remove_ids", vec![ix("tmp-idmap"), ("ids", Value::Binary(protocol::i64_bytes(&[1])))]),
        a("replace_vector", vec![ix("idmap2"), ("id", Value::from(5)), ("vector", f32s(&lcg_vectors(1, d, 12)))]),
        a("get_index_status", vec![ix("ivf")]),
        a("get_index_info", vec![ix("hnsw")]),
        a("get_index_stats", vec![ix("bin")]),
        a("get_parameter", vec![ix("hnsw"), ("parameter", s("efSearch"))]),
        a("get_parameter", vec![ix("ivf"), ("parameter", s("nprobe"))]),
        a("set_parameter", vec![ix("ivf"), ("parameter", s("nprobe")), ("value", Value::from(2))]),
        a("set_parameter", vec![ix("hnsw"), ("parameter", s("efSearch")), ("value", Value::from(32))]),
        a("get_metadata", vec![ix("flat"), ("ids", protocol::ints_value(&[0, 1, 2]))]),
        a("search_and_reconstruct", vec![ix("flat"), ("query_vectors", q()), ("k", Value::from(2))]),
        a(
            "hybrid_search",
            vec![ix("flat"), ("query_vectors", q()), ("k", Value::from(3)), ("vector_weight", Value::F64(0.7))],
        ),
        a(
            "batch_add_with_ids",
            vec![
                ix("tmp-idmap"),
                ("vectors", q()),
                ("ids", protocol::ints_value(&[40, 41])),
                ("batch_size", Value::from(1)),
            ],
        ),
        a("optimize_index", vec![ix("ivf"), ("optimization_level", Value::from(2))]),
        a("optimize_index", vec![ix("hnsw")]),
        a(
            "compute_clustering",
            vec![
                ("vectors", f32s(&lcg_vectors(40, d, 13))),
                ("dimension", Value::from(d as u64)),
                ("n_clusters", Value::from(4)),
            ],
        ),
        a("recluster_index", vec![ix("ivf"), ("n_clusters", Value::from(3)), ("sample_ratio", Value::F64(0.5))]),
        a(
            "search_and_reconstruct",
            vec![ix("bin"), ("query_vectors", Value::Binary(codes(1, 8))), ("k", Value::from(2))],
        ),
        a(
            "merge_indices",
            vec![("target_index_id", s("tmp-flat")), ("source_index_ids", Value::Array(vec![s("small")]))],
        ),
        a("reset", vec![ix("tmp-flat")]),
        a("clear", vec![ix("tmp-idmap")]),
        a("delete_index", vec![ix("tmp-hnsw")]),
        a("snapshot", vec![]),
        a("list_indices", vec![]),
        a("metrics", vec![]),
        a("health", vec![]),
        req("k2", "search", vec![ix("flat"), ("query_vectors", q()), ("k", Value::from(3))]),
        req("k2", "reconstruct", vec![ix("hnsw"), ("id", Value::from(0))]),
        Msg::from_pairs(vec![("action", s("ping"))]).into_bytes(),
    ]
}

/// Issue 10's crashers (each after the request that creates what it needs).
fn known_crashers() -> Vec<Vec<u8>> {
    let a = |action: &str, f: Vec<(&str, Value)>| req("k1", action, f);
    let ix = |v: &str| ("index_id", s(v));
    let create = |id: &str, d: u64, t: &str| {
        a("create_index", vec![ix(id), ("dimension", Value::from(d)), ("index_type", s(t))])
    };
    let train = |id: &str, x: Vec<f32>| a("train_index", vec![ix(id), ("training_vectors", f32s(&x))]);
    let add = |id: &str, x: Vec<f32>| a("add_vectors", vec![ix(id), ("vectors", f32s(&x))]);
    let mut out = vec![create("c-pq0", 8, "PQ0x8")];
    for (i, t) in ["PQ4x0", "PQ1x0", "IVF4,PQ1x0", "IVF4,PQ8x0", "OPQ0,Flat", "HNSW2,PQ8x0"].iter().enumerate() {
        let id = format!("c-t{i}");
        out.push(create(&id, 16, t));
        out.push(train(&id, lcg_vectors(300, 16, 1)));
    }
    out.push(a("reconstruct", vec![ix("flat"), ("id", Value::from(-971))]));
    out.push(a("reconstruct", vec![ix("hnsw"), ("id", Value::from(-1))]));
    out.push(a("get_vectors", vec![ix("idmap2"), ("start_idx", Value::from(0)), ("limit", Value::from(50))]));
    out.push(a("reconstruct_n", vec![ix("idmap2"), ("start_idx", Value::from(0)), ("num_vectors", Value::from(10))]));
    out.push(a(
        "reconstruct_n",
        vec![ix("flat"), ("start_idx", Value::from(1)), ("num_vectors", Value::from(u64::MAX))],
    ));
    for (id, scale) in [("c-pq-e19", 1e19f32), ("c-pq-e20", 1e20)] {
        out.push(create(id, 8, "PQ2x4"));
        out.push(train(id, lcg_vectors(300, 8, 2).iter().map(|v| v * scale).collect()));
    }
    out.push(create("c-pq-3e38", 8, "PQ2x4"));
    out.push(train("c-pq-3e38", lcg_vectors(300, 8, 3).iter().map(|v| if *v < 0.5 { 3e38 } else { -3e38 }).collect()));
    for t in ["NSG0", "NSG1", "IVF0,Flat", "RQ2x0"] {
        let id = format!("c-{}", t.replace(',', "_").to_lowercase());
        out.push(create(&id, 8, t));
        out.push(add(&id, lcg_vectors(200, 8, 4)));
    }
    out.push(create("c-empty1", 1, "Flat"));
    out.push(a(
        "search",
        vec![ix("c-empty1"), ("query_vectors", f32s(&vec![0.5; 1_000_000])), ("k", Value::from(10_000))],
    ));
    out
}

const ACTIONS: [&str; 35] = [
    "create_index",
    "add_vectors",
    "add_with_ids",
    "batch_add_with_ids",
    "hybrid_search",
    "optimize_index",
    "compute_clustering",
    "recluster_index",
    "search",
    "range_search",
    "train_index",
    "reconstruct",
    "reconstruct_n",
    "get_vectors",
    "remove_ids",
    "replace_vector",
    "get_index_status",
    "get_index_stats",
    "get_index_info",
    "get_parameter",
    "set_parameter",
    "get_metadata",
    "search_and_reconstruct",
    "merge_indices",
    "reset",
    "clear",
    "delete_index",
    "list_indices",
    "list_indexes",
    "metrics",
    "health",
    "ping",
    "snapshot",
    "fly",
    "",
];

const FIELDS: [&str; 37] = [
    "index_id",
    "dimension",
    "index_type",
    "vectors",
    "ids",
    "k",
    "query_vectors",
    "params",
    "start_idx",
    "num_vectors",
    "limit",
    "id",
    "idx",
    "parameter",
    "value",
    "radius",
    "binary",
    "include_metadata",
    "metadata",
    "training_vectors",
    "target_index_id",
    "source_index_ids",
    "metric",
    "metric_type",
    "tenant_id",
    "api_key",
    "action",
    "vector",
    "nprobe",
    "efSearch",
    "n_clusters",
    "niter",
    "sample_ratio",
    "optimization_level",
    "vector_weight",
    "metadata_filter",
    "batch_size",
];

const TYPES: [&str; 24] = [
    "PQ0x8",
    "IVF0,Flat",
    "NSG0",
    "NSG1",
    "HNSW0",
    "HNSW1",
    "IDMap2:Flat",
    "IDMap:IDMap2:Flat",
    "BINARY_IVF0",
    "BINARY_HASH0",
    "BHNSW0",
    "BIVF0",
    "LSH",
    "LSHrt",
    "PQ2x4",
    "IVF2,PQ2x4",
    "SQ4",
    "SQfp16",
    "IVF1,Flat",
    "RQ1x1",
    "LSQ1x1",
    "PRQ1x1x1",
    "IVF4_SQ0",
    "IDMap2:tmp-flat",
];

/// A value to put where another was: extreme numbers, empty and huge containers, wrong
/// types, odd bins. `Value::Ext(99, [])` stands for 10,000 levels of nesting.
fn extreme(r: &mut Rng) -> Value {
    match r.below(12) {
        0 | 1 => Value::from(*r.pick(&[
            0i64,
            1,
            -1,
            2,
            -2,
            7,
            8,
            255,
            65_535,
            65_536,
            -971,
            i32::MAX as i64,
            i32::MIN as i64,
            u32::MAX as i64,
            1 << 53,
            -(1 << 53),
            i64::MAX,
            i64::MIN,
            1_000_000_000_000,
        ])),
        2 => Value::from(*r.pick(&[u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) + 1])),
        3 => {
            let f = *r.pick(&[
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e38,
                3e38,
                -3e38,
                f64::MAX,
                f64::MIN,
                f64::MIN_POSITIVE,
                5e7,
                1e19,
                1e20,
                -0.0,
                0.5,
                9.0e15,
                1.8446744073709552e19,
            ]);
            if r.chance(50) {
                Value::F64(f)
            } else {
                Value::F32(f as f32)
            }
        }
        4 => match r.below(6) {
            0 => s(""),
            1 => s(&"a".repeat(r.below(5000) + 129)),
            2 => s(r.pick_str(&TYPES)),
            3 => s(r.pick_str(&ACTIONS)),
            4 => s(r.pick_str(&[
                "flat", "ivf", "hnsw", "sq", "pq", "idmap2", "bin", "small", "tmp-flat", "..", "k1", "k2",
            ])),
            _ => s("\u{0}\u{ffff}"),
        },
        5 => {
            // A bin: odd lengths, whole but extreme f32 rows, extreme i64 ids.
            match r.below(5) {
                0 => Value::Binary(vec![0x41; *r.pick(&[0usize, 1, 3, 5, 7, 13, 31, 33, 63])]),
                1 => {
                    let v = *r.pick(&[f32::NAN, f32::INFINITY, 3e38, -3e38, 1e19, 1e20, f32::MIN_POSITIVE, 0.0]);
                    f32s(&vec![v; 8 * (1 + r.below(64))])
                }
                2 => Value::Binary(protocol::i64_bytes(&[i64::MIN, -1, i64::MAX, 1 << 40])),
                3 => Value::Binary(vec![0xff; 4 * (1 + r.below(4096))]),
                _ => Value::Binary(vec![0; 1 << 16]),
            }
        }
        6 => match r.below(5) {
            0 => Value::Array(vec![]),
            1 => Value::Array(vec![Value::Array(vec![])]),
            2 => Value::Array((0..r.below(100_000)).map(|i| Value::from(i % 100)).collect()),
            3 => Value::Array(vec![Value::Array(vec![Value::F64(f64::NAN); 8]); 1 + r.below(4)]),
            _ => Value::Array(vec![Value::from(-1); 1 + r.below(16)]),
        },
        7 => match r.below(3) {
            0 => Value::Map(vec![]),
            1 => Msg::from_pairs(vec![
                ("nprobe", Value::from(u64::MAX)),
                ("efSearch", Value::from(*r.pick(&[0u64, 1 << 31, u64::MAX]))),
            ])
            .into_value(),
            _ => Value::Map(vec![(Value::from(1), Value::Nil)]),
        },
        8 => r.pick(&[Value::Nil, Value::Boolean(true), Value::Boolean(false)]).clone(),
        9 => Value::Ext(99, vec![]),
        10 => Value::Ext(5, vec![1, 2, 3]),
        _ => Value::from(r.below(300) as u64),
    }
}

/// A random sub-value of `v` (mutable), reached by walking maps and arrays.
fn pick_slot<'a>(v: &'a mut Value, r: &mut Rng) -> &'a mut Value {
    let len = match &*v {
        Value::Map(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if len == 0 || !r.chance(60) {
        return v;
    }
    let i = r.below(len);
    match v {
        Value::Map(m) => pick_slot(&mut m[i].1, r),
        Value::Array(a) => pick_slot(&mut a[i], r),
        other => other,
    }
}

/// Encode `v`, with each `Ext(99, [])` replaced by 10,000 nested one-element arrays.
fn encode_deep(v: &Value) -> Vec<u8> {
    let b = encode_value(v);
    let marker = [0xc7u8, 0x00, 99];
    match b.windows(3).position(|w| w == marker) {
        None => b,
        Some(p) => {
            let mut out = b[..p].to_vec();
            out.extend(std::iter::repeat_n(0x91u8, 10_000));
            out.push(0xc0);
            out.extend_from_slice(&b[p + 3..]);
            out
        }
    }
}

fn mutate_structure(base: &[u8], r: &mut Rng) -> Option<Vec<u8>> {
    let mut v = protocol::decode_value(&mut &base[..]).ok()?;
    for _ in 0..*r.pick(&[1, 1, 1, 2, 3]) {
        let Value::Map(m) = &mut v else { break };
        match r.below(10) {
            0 => {
                if !m.is_empty() {
                    let i = r.below(m.len());
                    m.remove(i);
                }
            }
            1 => m.push((s(r.pick_str(&FIELDS)), extreme(r))),
            2 => {
                // Swap the action, keeping the fields.
                if let Some(e) = m.iter_mut().find(|(k, _)| k.as_str() == Some("action")) {
                    e.1 = s(r.pick_str(&ACTIONS));
                }
            }
            3 => {
                // Duplicate a field with another value.
                if !m.is_empty() {
                    let k = m[r.below(m.len())].0.clone();
                    m.push((k, extreme(r)));
                }
            }
            _ => {
                let slot = pick_slot(&mut v, r);
                *slot = extreme(r);
            }
        }
    }
    Some(encode_deep(&v))
}

fn mutate_bytes(base: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..*r.pick(&[1, 1, 1, 2, 3, 6]) {
        let n = b.len().max(1);
        match r.below(8) {
            0 => {
                if !b.is_empty() {
                    let i = r.below(b.len());
                    b[i] ^= 1 << r.below(8);
                }
            }
            1 => {
                if !b.is_empty() {
                    let i = r.below(b.len());
                    b[i] = *r.pick(&[
                        0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1, 0xc4, 0xc6, 0xcf, 0xd3, 0xdc, 0xdd, 0xde, 0xdf, 0x9f,
                    ]);
                }
            }
            2 => {
                let i = r.below(n);
                let ins: Vec<u8> = (0..1 + r.below(8)).map(|_| r.next() as u8).collect();
                b.splice(i.min(b.len())..i.min(b.len()), ins);
            }
            3 => {
                let i = r.below(n);
                let j = (i + 1 + r.below(16)).min(b.len());
                if i < j {
                    b.drain(i..j);
                }
            }
            4 => b.truncate(r.below(n)),
            5 => {
                // Overwrite 4 or 8 bytes with a big number (a length, an id, a float).
                let w = *r.pick(&[4usize, 8]);
                if b.len() > w {
                    let i = r.below(b.len() - w);
                    let x =
                        *r.pick(&[u64::MAX, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, 0xffff_ffff, 0x7f80_0000]);
                    b[i..i + w].copy_from_slice(&x.to_be_bytes()[8 - w..]);
                }
            }
            6 => {
                let i = r.below(n).min(b.len());
                let j = (i + r.below(32)).min(b.len());
                let chunk = b[i..j].to_vec();
                b.splice(j..j, chunk);
            }
            _ => {
                if !b.is_empty() {
                    let i = r.below(b.len());
                    b[i] = b[i].wrapping_add(1 + r.below(3) as u8);
                }
            }
        }
    }
    b
}

/// Index types the scenarios create: valid ones of every family, degenerate parameters, and
/// (not when hunting) issue 10's killers.
const SCENARIO_TYPES: [&str; 58] = [
    "Flat",
    "IP",
    "HNSW",
    "HNSW4",
    "HNSW1",
    "HNSW4_IP",
    "IVF2,Flat",
    "IVF1,Flat",
    "IVF2_SQ0",
    "IVF2,PQ2x4",
    "IVF2,SQ8",
    "PQ2x4",
    "PQ1x8",
    "SQ8",
    "SQ4",
    "SQ6",
    "SQfp16",
    "SQbf16",
    "LSH",
    "LSHrt",
    "IDMap2:Flat",
    "IDMap:HNSW4",
    "IDMap2:SQ8",
    "IDMap2:IVF2,Flat",
    "PCA4,Flat",
    "PCAR2,Flat",
    "OPQ2,PQ2x4",
    "OPQ2_4,Flat",
    "RQ2x4",
    "LSQ2x4",
    "PRQ2x2x4",
    "PLSQ2x2x4",
    "ITQ,LSH",
    "ITQ8,LSH",
    "Pad16,Flat",
    "RR8,Flat",
    "IVF2,Flat,RFlat",
    "HNSW4,SQ8",
    "HNSW4,PQ2x4",
    "IVF2(HNSW4),Flat",
    "IVF2_HNSW4,Flat",
    "IVF2,PQ2x4fs",
    "PQ2x4fs",
    "IVF2,RQ2x4",
    "L2norm,Flat",
    "IVF2,SQ8,RFlat",
    "Flat,RFlat",
    "BINARY_FLAT",
    "BINARY_IVF2",
    "BINARY_HASH8",
    "BINARY_HASH1",
    "BHNSW4",
    "BIVF2",
    "IDMap2:BINARY_FLAT",
    "IVF2,Flat,Refine(Flat)",
    "IVF65536,Flat",
    "HNSW65536",
    "PQ64x12",
];

const KILLER_TYPES: [&str; 8] = ["NSG4", "NSG0", "HNSW2,PQ8x0", "IVF0,Flat", "PQ0x8", "RQ2x0", "IVF2,PQ1x0", "PQ2x0"];

/// Rows of a scenario's vectors: ordinary, zero, repeated, or (unless `tame`) extreme.
fn scenario_rows(r: &mut Rng, n: usize, d: usize, binary: bool, tame: bool) -> Value {
    if binary {
        return Value::Binary((0..n * d.div_ceil(8)).map(|_| r.next() as u8).collect());
    }
    let base = lcg_vectors(n, d, r.next());
    let x: Vec<f32> = match r.below(if tame { 6 } else { 9 }) {
        0 => vec![0.0; n * d],
        1 => base[..d.min(base.len())].iter().cycle().take(n * d).copied().collect(),
        2 => base.iter().map(|v| v * 1e-39).collect(),
        6 => base.iter().map(|v| v * 1e19).collect(),
        7 => base.iter().enumerate().map(|(i, v)| if i % 3 == 0 { 3e38 * (v - 0.5) } else { *v }).collect(),
        8 => base.iter().map(|v| if *v < 0.5 { f32::MAX } else { -f32::MAX }).collect(),
        _ => base,
    };
    if r.chance(10) {
        protocol::vectors_value(&x, d, protocol::Encoding::Nested)
    } else {
        f32s(&x)
    }
}

/// Request `i` of scenario `block`: step 0 creates index `sc-<block>` of a random type,
/// 1 trains it, 2 adds to it, 3–6 are random operations on it, 7 deletes it. `hunting`
/// keeps away from issue 10's known killers.
fn scenario(seed: u64, block: usize, step: usize, hunting: bool) -> Vec<u8> {
    let mut g = Rng::new(seed ^ 0x5ce0 ^ (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let kind = if !hunting && g.chance(5) { *g.pick(&KILLER_TYPES) } else { *g.pick(&SCENARIO_TYPES) };
    let binary = kind.contains("BINARY") || kind.starts_with('B') || kind.contains(":B");
    let d = if binary { *g.pick(&[8usize, 16, 64, 256]) } else { *g.pick(&[1usize, 2, 3, 4, 8, 16, 64, 128]) };
    let n_train = *g.pick(&[1usize, 2, 10, 64, 300]);
    let n_add = *g.pick(&[1usize, 5, 64, 300]);
    let idmap = kind.starts_with("IDMap");
    let id = format!("sc-{block}");
    let mut r = Rng::new(seed ^ 0x0b5 ^ ((block * 8 + step) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let ix = || ("index_id", s(&id));
    let a = |action: &str, f: Vec<(&str, Value)>| req("k1", action, f);
    let n = n_add as i64;
    let ids = |r: &mut Rng, m: usize| -> Value {
        let first = if hunting { 0 } else { *r.pick(&[0i64, 100, -5, 1 << 40]) };
        protocol::ints_value(&(first..first + m as i64).collect::<Vec<_>>())
    };
    match step {
        0 => {
            let mut f = vec![ix(), ("dimension", Value::from(d as u64)), ("index_type", s(kind))];
            if r.chance(30) {
                f.push(("metric", s(r.pick_str(&["ip", "l2", "cosine"]))));
            }
            a("create_index", f)
        }
        1 => a("train_index", vec![ix(), ("training_vectors", scenario_rows(&mut r, n_train, d, binary, hunting))]),
        2 => {
            let mut f = vec![ix(), ("vectors", scenario_rows(&mut r, n_add, d, binary, false))];
            if idmap {
                f.push(("ids", ids(&mut r, n_add)));
            }
            a(if idmap { "add_with_ids" } else { "add_vectors" }, f)
        }
        7 => a("delete_index", vec![ix()]),
        _ => {
            let nq = *r.pick(&[1usize, 2, 17]);
            let k = *r.pick(&[1u64, 5, 100, if nq > 2 { 100 } else { 10_000 }]);
            let mut params = Vec::new();
            if r.chance(30) {
                params
                    .push(("nprobe", Value::from(*r.pick(&[0u64, 1, 2, 1000, if hunting { 1000 } else { u64::MAX }]))));
            }
            if r.chance(30) {
                params
                    .push(("efSearch", Value::from(*r.pick(&[0u64, 1, 16, if hunting { 100_000 } else { 1 << 31 }]))));
            }
            let q = scenario_rows(&mut r, nq, d, binary, false);
            let big = |r: &mut Rng, tame: i64| if hunting { tame } else { *r.pick(&[-1i64, i64::MIN, 1 << 40, tame]) };
            match r.below(16) {
                0..=2 => {
                    let mut f = vec![ix(), ("query_vectors", q), ("k", Value::from(k))];
                    if !params.is_empty() {
                        f.push(("params", Msg::from_pairs(params).into_value()));
                    }
                    if r.chance(50) {
                        f.push(("binary", Value::Boolean(true)));
                    }
                    a("search", f)
                }
                3 => {
                    let radius = *r.pick(&[-1.0f64, 0.0, 0.5, 10.0, 1e30, f64::MAX]);
                    a("range_search", vec![ix(), ("query_vectors", q), ("radius", Value::F64(radius))])
                }
                4 => {
                    let i = *r.pick(&[0, 1, n - 1, n]);
                    a("reconstruct", vec![ix(), ("id", Value::from(big(&mut r, i)))])
                }
                5 if !(hunting && idmap) => {
                    let start = *r.pick(&[0u64, 1, n as u64]);
                    let num = *r.pick(&[0u64, 1, n as u64, n as u64 + 1]);
                    a("reconstruct_n", vec![ix(), ("start_idx", Value::from(start)), ("num_vectors", Value::from(num))])
                }
                6 if !(hunting && idmap) => {
                    let mut f = vec![ix(), ("start_idx", Value::from(*r.pick(&[0u64, n as u64 / 2, n as u64])))];
                    if r.chance(50) {
                        f.push(("limit", Value::from(*r.pick(&[0u64, 1, u64::MAX]))));
                    }
                    a("get_vectors", f)
                }
                7 => {
                    let v = match r.below(4) {
                        0 => protocol::ints_value(&[0]),
                        1 => protocol::ints_value(&(0..n / 2).collect::<Vec<_>>()),
                        2 => Value::Binary(protocol::i64_bytes(&[big(&mut r, n + 5)])),
                        _ => protocol::ints_value(&[]),
                    };
                    a("remove_ids", vec![ix(), ("ids", v)])
                }
                8 => {
                    let x = scenario_rows(&mut r, 1, d, binary, false);
                    a("replace_vector", vec![ix(), ("id", Value::from(big(&mut r, 0))), ("vector", x)])
                }
                9 => {
                    let p = r.pick_str(&["nprobe", "efSearch", "efConstruction"]);
                    let v = *r.pick(&[1u64, 2, 1000, if hunting { 1000 } else { 1 << 30 }]);
                    a("set_parameter", vec![ix(), ("parameter", s(p)), ("value", Value::from(v))])
                }
                10 => {
                    let p = r.pick_str(&["nprobe", "efSearch", "efConstruction", "nlist", "M", "ntotal", "metric"]);
                    a("get_parameter", vec![ix(), ("parameter", s(p))])
                }
                11 => match r.below(4) {
                    0 => a("search_and_reconstruct", vec![ix(), ("query_vectors", q), ("k", Value::from(k.min(100)))]),
                    1 => a("hybrid_search", vec![ix(), ("query_vectors", q), ("k", Value::from(k))]),
                    2 => {
                        let level = *r.pick(&[0i64, 1, 3, i64::MAX]);
                        a("optimize_index", vec![ix(), ("optimization_level", Value::from(level))])
                    }
                    _ => {
                        let lists = *r.pick(&[0i64, 1, 2, n, n + 1]);
                        a("recluster_index", vec![ix(), ("n_clusters", Value::from(big(&mut r, lists)))])
                    }
                },
                12 => {
                    if r.chance(50) {
                        a(
                            "merge_indices",
                            vec![("target_index_id", s(&id)), ("source_index_ids", Value::Array(vec![s("small")]))],
                        )
                    } else {
                        a(
                            "merge_indices",
                            vec![("target_index_id", s("tmp-flat")), ("source_index_ids", Value::Array(vec![s(&id)]))],
                        )
                    }
                }
                13 => {
                    let x = scenario_rows(&mut r, n_train, d, binary, hunting);
                    a("train_index", vec![ix(), ("training_vectors", x)])
                }
                14 => a(r.pick_str(&["reset", "get_index_info", "get_index_status"]), vec![ix()]),
                _ => {
                    let m = *r.pick(&[1usize, 3, 64]);
                    let mut f = vec![ix(), ("vectors", scenario_rows(&mut r, m, d, binary, false))];
                    if idmap {
                        f.push(("ids", ids(&mut r, 1)));
                    }
                    a(if idmap { "add_with_ids" } else { "add_vectors" }, f)
                }
            }
        }
    }
}

/// Request `i` of a run with `seed` (deterministic in both): a quarter come from scenarios
/// (blocks of 8 requests on a fresh index of a random type), the rest are mutations of a
/// corpus entry.
fn generate(seed: u64, i: usize, corpus: &[Vec<u8>], hunting: bool) -> Vec<u8> {
    if (i / 8) % 4 == 3 {
        return scenario(seed, i / 8, i % 8, hunting);
    }
    let mut r = Rng::new(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    // Large entries (the 4 MB query) are replayed, not mutated.
    let small: Vec<&Vec<u8>> = corpus.iter().filter(|c| c.len() <= 64 << 10).collect();
    let base = *r.pick(&small);
    match r.below(10) {
        0..=4 => mutate_structure(base, &mut r).unwrap_or_else(|| mutate_bytes(base, &mut r)),
        5..=8 => mutate_bytes(base, &mut r),
        _ => {
            let b = mutate_structure(base, &mut r).unwrap_or_else(|| base.clone());
            mutate_bytes(&b, &mut r)
        }
    }
}

/// A DEALER connection that sends requests as `[seq, "", payload]` and polls for replies.
struct Wire {
    _ctx: zmq::Context,
    sock: zmq::Socket,
    seq: u64,
}

impl Wire {
    fn new(endpoint: &str) -> Wire {
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::DEALER).unwrap();
        sock.set_linger(0).unwrap();
        sock.set_sndtimeo(HANG.as_millis() as i32).unwrap();
        sock.connect(endpoint).unwrap();
        Wire { _ctx: ctx, sock, seq: 0 }
    }

    fn send(&mut self, payload: &[u8]) -> Option<u64> {
        self.seq += 1;
        let ok = self
            .sock
            .send(&self.seq.to_le_bytes()[..], zmq::SNDMORE)
            .and_then(|_| self.sock.send(&[][..], zmq::SNDMORE))
            .and_then(|_| self.sock.send(payload, 0));
        ok.ok().map(|_| self.seq)
    }

    /// One reply within `ms`: (seq, payload).
    fn recv(&mut self, ms: i64) -> Option<(u64, Vec<u8>)> {
        if self.sock.poll(zmq::POLLIN, ms).ok()? == 0 {
            return None;
        }
        let frames = self.sock.recv_multipart(zmq::DONTWAIT).ok()?;
        let seq = u64::from_le_bytes(<[u8; 8]>::try_from(frames.first()?.as_slice()).ok()?);
        Some((seq, frames.last()?.clone()))
    }
}

/// The `index_id` of a `create_index` request, if it is a scenario's (`sc-…`).
fn scenario_index(req: &[u8]) -> Option<String> {
    let m = Msg::decode(req).ok()?;
    m.str("index_id").ok().flatten().filter(|s| s.starts_with("sc-")).map(str::to_string)
}

/// `req` with every string equal to `from` replaced by `to`.
fn rename_index(req: &[u8], from: &str, to: &str) -> Vec<u8> {
    fn walk(v: &mut Value, from: &str, to: &str) {
        match v {
            Value::String(s) if s.as_str() == Some(from) => *v = Value::from(to),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, from, to)),
            Value::Map(m) => m.iter_mut().for_each(|(_, x)| walk(x, from, to)),
            _ => {}
        }
    }
    match protocol::decode_value(&mut &req[..]) {
        Ok(mut v) => {
            walk(&mut v, from, to);
            encode_value(&v)
        }
        Err(_) => req.to_vec(),
    }
}

/// Whether `reply` is one msgpack map and nothing else.
fn is_map(reply: &[u8]) -> bool {
    let mut rd = reply;
    matches!(protocol::decode_value(&mut rd), Ok(Value::Map(_))) && rd.is_empty()
}

/// "ok", the error code of an error reply, or "?" for anything else.
fn outcome(reply: &[u8]) -> String {
    match protocol::decode_value(&mut &reply[..]) {
        Ok(v @ Value::Map(_)) => {
            let m = Msg::decode(&encode_value(&v)).unwrap_or_default();
            match m.error() {
                None => "ok".into(),
                Some(_) => m.str("error_code").ok().flatten().unwrap_or("?").to_string(),
            }
        }
        _ => "?".into(),
    }
}

/// How a batch ended.
enum Batch {
    Done,
    /// The process exited: (status, requests without a reply).
    Died(String, Vec<usize>),
    /// Requests without a reply for [`HANG`].
    Hung(Vec<usize>),
}

struct Finding {
    what: String,
    origin: String,
    req: Vec<u8>,
    file: Option<PathBuf>,
}

struct Fuzzer {
    env: TestEnv,
    srv: Server,
    wire: Wire,
    starts: usize,
    corpus_dir: PathBuf,
    findings: Vec<Finding>,
    signatures: HashMap<String, usize>,
    max_findings: usize,
    /// Replies by outcome ("ok" or the error code), for the summary line.
    outcomes: HashMap<String, usize>,
    hunting: bool,
    /// What the current server has been sent (to reproduce crashes that need earlier state).
    history: Vec<(String, Vec<u8>)>,
    seed: u64,
    /// Time spent finding culprits (not fuzzing).
    triage_time: Duration,
}

impl Fuzzer {
    fn log(&self) -> PathBuf {
        self.env.path(&format!("server-{}.log", self.starts))
    }

    /// A server with the indices of [`setup`] and the valid corpus sent once (which
    /// creates the throwaway `tmp-*` indices that mutated requests refer to).
    fn start(env: &TestEnv, starts: usize, hunting: bool) -> (Server, Wire) {
        let args: Vec<String> = ARGS.iter().map(|s| s.to_string()).collect();
        let srv = try_start(env, &args, &env.path(&format!("server-{starts}.log"))).unwrap();
        setup(&srv, hunting);
        let mut c = connect(&srv, None, TIMEOUT);
        for r in valid_corpus() {
            let _ = c.call_raw(r);
        }
        let wire = Wire::new(&srv.endpoint);
        (srv, wire)
    }

    fn restart(&mut self) {
        let _ = self.srv.child.kill();
        let _ = self.srv.child.wait();
        self.starts += 1;
        let (srv, wire) = Fuzzer::start(&self.env, self.starts, self.hunting);
        self.srv = srv;
        self.wire = wire;
        self.history.clear();
    }

    /// Send `reqs` with up to `window` in flight; every reply must be a map.
    fn send_all(&mut self, reqs: &[(String, Vec<u8>)], window: usize) -> Batch {
        let mut inflight: HashMap<u64, (usize, Instant)> = HashMap::new();
        let mut next = 0;
        loop {
            while next < reqs.len() && inflight.len() < window {
                match self.wire.send(&reqs[next].1) {
                    Some(seq) => {
                        inflight.insert(seq, (next, Instant::now()));
                    }
                    None => {
                        let mut left: Vec<usize> = inflight.values().map(|v| v.0).collect();
                        left.push(next);
                        return self.stalled(left);
                    }
                }
                next += 1;
            }
            if inflight.is_empty() {
                return Batch::Done;
            }
            match self.wire.recv(100) {
                Some((seq, reply)) => {
                    if let Some((i, _)) = inflight.remove(&seq) {
                        *self.outcomes.entry(outcome(&reply)).or_default() += 1;
                        if !is_map(&reply) {
                            let (origin, req) = reqs[i].clone();
                            self.record("reply is not a msgpack map", origin, req, "badreply");
                        }
                    }
                }
                None => {
                    let oldest = inflight.values().map(|v| v.1.elapsed()).max().unwrap_or_default();
                    if self.srv.exited().is_some() || oldest >= HANG {
                        return self.stalled(inflight.values().map(|v| v.0).collect());
                    }
                }
            }
        }
    }

    fn stalled(&mut self, mut left: Vec<usize>) -> Batch {
        left.sort_unstable();
        match self.srv.exited() {
            Some(st) => Batch::Died(st, left),
            None => Batch::Hung(left),
        }
    }

    /// Record a finding; save its request to the corpus directory (two per signature).
    fn record(&mut self, what: &str, origin: String, req: Vec<u8>, kind: &str) {
        self.record_seq(what, origin, vec![req], kind)
    }

    /// Record a finding caused by the last of `reqs` after the others; save them to the
    /// corpus directory (at most two per signature) as `<kind>-<action>-<hash>[-<step>]`, so
    /// that a sorted replay sends them in order. A sequence's scenario index is renamed after
    /// the hash, so that sequences of different runs do not collide.
    fn record_seq(&mut self, what: &str, origin: String, mut reqs: Vec<Vec<u8>>, kind: &str) {
        let req = reqs.last().cloned().unwrap_or_default();
        let action = protocol::decode_value(&mut &req[..])
            .ok()
            .and_then(|v| match v {
                Value::Map(m) => m
                    .iter()
                    .find(|(k, _)| k.as_str() == Some("action"))
                    .and_then(|(_, v)| v.as_str().map(str::to_string)),
                _ => None,
            })
            .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or_else(|| "raw".into());
        let signal = what.split("(signal ").nth(1).and_then(|x| x.split(' ').next()).unwrap_or("");
        let thrown = what.split("what():").nth(1).and_then(|x| x.split(" at ").next()).unwrap_or("");
        let sig = format!("{kind}-{action}-{signal}-{thrown}");
        let n = self.signatures.entry(sig).or_default();
        *n += 1;
        let hash = fnv(&reqs.concat());
        if reqs.len() > 1 {
            let from = reqs.first().and_then(|r| scenario_index(r));
            if let Some(from) = from {
                let to = format!("sc-{:08x}", hash as u32);
                reqs = reqs.iter().map(|r| rename_index(r, &from, &to)).collect();
            }
        }
        // Saved corpus files and the base corpus are in the corpus already.
        let file = if *n <= 2 && !origin.starts_with("corpus:") && !origin.starts_with("base#") {
            let _ = std::fs::create_dir_all(&self.corpus_dir);
            let mut first = None;
            for (step, r) in reqs.iter().enumerate() {
                let name = if reqs.len() > 1 {
                    format!("{kind}-{action}-{hash:016x}-{step}.msgpack")
                } else {
                    format!("{kind}-{action}-{hash:016x}.msgpack")
                };
                let p = self.corpus_dir.join(name);
                if std::fs::write(&p, r).is_ok() && first.is_none() {
                    first = Some(p);
                }
            }
            first
        } else {
            None
        };
        let show = |r: &[u8]| -> String {
            protocol::decode_value(&mut &r[..]).map(|v| compact(&v)).unwrap_or_default().chars().take(300).collect()
        };
        let steps: Vec<String> = reqs[..reqs.len() - 1].iter().map(|r| format!("\n  after: {}", show(r))).collect();
        eprintln!(
            "FUZZ FINDING: {kind} ({what}) by {origin}{}\n  request ({} bytes): {}\n  hex: {}\n  saved: {file:?}",
            steps.concat(),
            req.len(),
            show(&req),
            hex(&req)
        );
        let what = match reqs.first() {
            Some(r) if reqs.len() > 1 => format!("{kind}: {what} [after {}]", show(r)),
            _ => format!("{kind}: {what}"),
        };
        self.findings.push(Finding { what, origin, req, file });
    }

    /// Send `reqs` one at a time; the first that kills or hangs the server:
    /// (kind, what happened, its position).
    fn first_culprit(&mut self, reqs: &[(String, Vec<u8>)]) -> Option<(&'static str, String, usize)> {
        for (p, r) in reqs.iter().enumerate() {
            let log_before = std::fs::read_to_string(self.log()).unwrap_or_default().len();
            match self.send_all(std::slice::from_ref(r), 1) {
                Batch::Done => {}
                Batch::Died(st, _) => {
                    return Some(("crash", format!("the server died ({st}); stderr: {}", log_tail(&self.log())), p));
                }
                Batch::Hung(_) => {
                    let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                    let new = log.get(log_before..).unwrap_or("");
                    return Some(match new.lines().position(|l| l.contains("panicked at")) {
                        Some(at) => (
                            "panic",
                            format!(
                                "a worker panicked: {}",
                                new.lines().skip(at).take(2).collect::<Vec<_>>().join(" | ")
                            ),
                            p,
                        ),
                        None => ("hang", format!("no reply within {} s, {}", HANG.as_secs(), self.srv.state()), p),
                    });
                }
            }
        }
        None
    }

    /// The server died or hung with `left` (positions in `reqs`) unanswered: find the
    /// culprit on a fresh server, first among them one at a time, then (for a crash that
    /// needs earlier state) by replaying everything this server had been sent.
    fn triage(&mut self, reqs: &[(String, Vec<u8>)], left: &[usize], how: &str) {
        eprintln!("fuzz: {how} with {} request(s) in flight; replaying them one by one", left.len());
        let dying = log_tail(&self.log());
        let history = std::mem::take(&mut self.history);
        self.restart();
        let cands: Vec<(String, Vec<u8>)> = left.iter().map(|&i| reqs[i].clone()).collect();
        if let Some((kind, what, p)) = self.first_culprit(&cands) {
            self.record(&what, cands[p].0.clone(), cands[p].1.clone(), kind);
            self.restart();
            return;
        }
        // A scenario's request needs the scenario's earlier steps (create, train, add).
        for c in &cands {
            let Some(i) = c.0.split("request #").nth(1).and_then(|x| x.parse::<usize>().ok()) else { continue };
            if (i / 8) % 4 != 3 || i % 8 == 0 {
                continue;
            }
            let prefix: Vec<(String, Vec<u8>)> = (i - i % 8..=i)
                .map(|j| (format!("seed {} request #{j}", self.seed), scenario(self.seed, j / 8, j % 8, self.hunting)))
                .collect();
            self.restart();
            if let Some((kind, what, p)) = self.first_culprit(&prefix) {
                let seq: Vec<Vec<u8>> = prefix[..=p].iter().map(|x| x.1.clone()).collect();
                self.record_seq(&what, prefix[p].0.clone(), seq, kind);
                self.restart();
                return;
            }
        }
        let last = left.iter().copied().max().unwrap_or(0);
        let seq: Vec<(String, Vec<u8>)> = history.into_iter().chain(reqs[..=last].iter().cloned()).collect();
        eprintln!("fuzz: not reproduced alone; replaying the {} request(s) this server had been sent", seq.len());
        self.restart();
        if let Some((kind, what, p)) = self.first_culprit(&seq) {
            let what = format!("{what} (after {p} earlier requests: depends on state)");
            self.record(&what, seq[p].0.clone(), seq[p].1.clone(), &format!("{kind}-state"));
            self.restart();
            return;
        }
        let shown: Vec<String> = left.iter().take(3).map(|&i| format!("{} {}", reqs[i].0, hex(&reqs[i].1))).collect();
        eprintln!("fuzz: not reproduced: {}; stderr of the server that died: {dying}", shown.join("; "));
        let (origin, req) = reqs[left[0]].clone();
        self.findings.push(Finding {
            what: format!("{how}, not reproduced ({} in flight); stderr: {dying}", left.len()),
            origin,
            req,
            file: None,
        });
        self.restart();
    }

    /// Send a batch; on a death or hang, triage. Returns false when fuzzing should stop.
    fn run(&mut self, reqs: &[(String, Vec<u8>)], window: usize) -> bool {
        let outcome = self.send_all(reqs, window);
        let t0 = Instant::now();
        match outcome {
            Batch::Done => self.history.extend(reqs.iter().cloned()),
            Batch::Died(st, left) => self.triage(reqs, &left, &format!("the server died ({st})")),
            Batch::Hung(left) => self.triage(reqs, &left, "requests hung"),
        }
        self.triage_time += t0.elapsed();
        self.findings.len() < self.max_findings
    }
}

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/fuzz/corpus/serve")
}

#[test]
fn serve_fuzz_requests() {
    let n: usize = env_or("FAISSX_FUZZ_REQUESTS", DEFAULT_REQUESTS);
    let seed: u64 = env_or("FAISSX_FUZZ_SEED", DEFAULT_SEED);
    let hunting = std::env::var("FAISSX_FUZZ_SKIP_KNOWN").is_ok_and(|v| v == "1");
    let max_findings = env_or("FAISSX_FUZZ_MAX_FINDINGS", 25usize);
    eprintln!("fuzz: seed {seed} ({seed:#x}), {n} requests, window {WINDOW}");
    let env = TestEnv::new("serve-fuzz");
    let (srv, wire) = Fuzzer::start(&env, 0, hunting);
    let mut fz = Fuzzer {
        env,
        srv,
        wire,
        starts: 0,
        corpus_dir: corpus_dir(),
        findings: Vec::new(),
        signatures: HashMap::new(),
        max_findings,
        outcomes: HashMap::new(),
        hunting,
        history: Vec::new(),
        seed,
        triage_time: Duration::ZERO,
    };

    // 1. The regression corpus, one request at a time.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fz.corpus_dir)
        .into_iter()
        .filter(|_| !hunting)
        .flat_map(|d| d.filter_map(|e| e.ok().map(|e| e.path())))
        .filter(|p| p.extension().is_some_and(|x| x == "msgpack"))
        .collect();
    files.sort();
    let saved: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| (format!("corpus:{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(p).unwrap()))
        .collect();
    let t0 = Instant::now();
    for r in &saved {
        if !fz.run(std::slice::from_ref(r), 1) {
            break;
        }
    }
    eprintln!("fuzz: replayed {} corpus file(s) in {:.1} s", saved.len(), t0.elapsed().as_secs_f64());

    // 2. The base corpus (valid requests and, unless skipped, the crashers), as is.
    let mut base = valid_corpus();
    if !hunting {
        base.extend(known_crashers());
    }
    let named: Vec<(String, Vec<u8>)> =
        base.iter().enumerate().map(|(i, b)| (format!("base#{i}"), b.clone())).collect();
    for r in &named {
        if !fz.run(std::slice::from_ref(r), 1) {
            break;
        }
    }
    base.extend(saved.into_iter().map(|(_, b)| b));

    // 3. Mutations, in batches between liveness checks (FAISSX_FUZZ_REPLAY=i,j,…: only
    // requests i, j, … of this seed, one at a time).
    let replay: Vec<usize> = std::env::var("FAISSX_FUZZ_REPLAY")
        .unwrap_or_default()
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    for &i in &replay {
        let req = generate(seed, i, &base, hunting);
        let shown: String =
            protocol::decode_value(&mut &req[..]).map(|v| compact(&v)).unwrap_or_default().chars().take(300).collect();
        eprintln!("fuzz: replaying request #{i} ({} bytes): {shown}\n  hex: {}", req.len(), hex(&req));
        fz.run(&[(format!("seed {seed} request #{i}"), req)], 1);
    }
    let n = if replay.is_empty() { n } else { 0 };
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n && fz.findings.len() < max_findings {
        let m = CHECK_EVERY.min(n - sent);
        let batch: Vec<(String, Vec<u8>)> = (sent..sent + m)
            .map(|i| (format!("seed {seed} request #{i}"), generate(seed, i, &base, hunting)))
            .collect();
        let go_on = fz.run(&batch, WINDOW);
        sent += m;
        if fz.srv.exited().is_some() || !fz.srv.alive() {
            let st = fz.srv.state();
            fz.findings.push(Finding {
                what: format!("after request #{sent}: {st}"),
                origin: format!("seed {seed}"),
                req: vec![],
                file: None,
            });
            fz.restart();
        }
        if !go_on {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let net = (secs - fz.triage_time.as_secs_f64()).max(1e-3);
    eprintln!(
        "fuzz: {sent} generated requests in {secs:.1} s ({:.0}/s; {:.0}/s without the {:.1} s spent on {} finding(s)), {} server start(s)",
        sent as f64 / secs,
        sent as f64 / net,
        fz.triage_time.as_secs_f64(),
        fz.findings.len(),
        fz.starts + 1
    );
    let mut outcomes: Vec<_> = fz.outcomes.iter().collect();
    outcomes.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!("fuzz: replies {outcomes:?}");

    // 4. The ops tenant's index still works, and the server never exited.
    let mut c = connect(&fz.srv, Some("k3"), TIMEOUT);
    let x = [0.5f32, 0.25, 0.125, 9.0];
    c.add_vectors("healthy", &x, 4, None, None).expect("add on the healthy index after fuzzing");
    let (nb, _) = c.search("healthy", &x, 4, &knn(1), false).expect("search on the healthy index after fuzzing");
    assert_eq!(nb.dists[0], 0.0, "the vector just added is its own nearest neighbour");
    assert!(fz.srv.child.try_wait().unwrap().is_none(), "the server exited");
    let distinct: HashSet<&str> = fz.findings.iter().map(|f| f.what.as_str()).collect();
    assert!(
        fz.findings.is_empty() && fz.starts == 0,
        "seed {seed}: {} finding(s) ({} distinct), {} restart(s):\n{}",
        fz.findings.len(),
        distinct.len(),
        fz.starts,
        fz.findings
            .iter()
            .map(|f| format!(
                "  {} — {} — saved {:?}\n    hex: {}",
                f.what.chars().take(300).collect::<String>(),
                f.origin,
                f.file,
                hex(&f.req)
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
