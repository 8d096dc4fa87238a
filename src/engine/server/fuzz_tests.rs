//! Bounded fuzzing of request handling (proptest on stable): requests built from every action
//! with fields replaced by extreme or ill-typed values, run in-process against indices of
//! several types. A FAISS crash would end the test binary; a panic fails the property. After
//! each case the healthy indices must still add and search.

use super::*;
use crate::engine::protocol::{encode_value, Value};
use proptest::prelude::*;

/// Every action of the protocol (new actions are fuzzed as soon as they exist).
fn actions() -> Vec<&'static str> {
    Action::ALL.iter().map(|a| a.name()).collect()
}

/// Index ids: healthy ones the fuzzer may change, and types worth poking.
const INDICES: [(&str, &str, i64); 8] = [
    ("flat", "L2", 8),
    ("ivf", "IVF4,Flat", 8),
    ("hnsw", "HNSW8", 8),
    ("sq", "SQ8", 8),
    ("idmap", "IDMap2:L2", 8),
    ("pq", "PQ2x4", 8),
    ("bin", "BINARY_FLAT", 64),
    ("tiny", "L2", 1),
];

fn call(svc: &Service, fields: Vec<(&str, Value)>) -> Result<Msg> {
    let bytes = encode_value(&Value::Map(fields.into_iter().map(|(k, v)| (Value::from(k), v)).collect()));
    let c = svc.prepare(&bytes)?;
    svc.execute(&c)
}

fn rows(n: usize, d: usize, seed: u64) -> Value {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    Value::Array(
        (0..n)
            .map(|_| {
                Value::Array(
                    (0..d)
                        .map(|_| {
                            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            Value::F64(((s >> 40) as f64) / (1u64 << 24) as f64)
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

fn service() -> Service {
    let cfg = ServerConfig { max_request_bytes: 1 << 20, workers: 1, ..ServerConfig::new("") };
    let svc = Service::open(&cfg).expect("in-memory service");
    for (id, t, d) in INDICES {
        let r = call(
            &svc,
            vec![
                ("action", Value::from("create_index")),
                ("index_id", Value::from(id)),
                ("index_type", Value::from(t)),
                ("dimension", Value::from(d)),
            ],
        );
        r.unwrap_or_else(|e| panic!("create {id}: {e}"));
        if t.starts_with("IVF") || t.starts_with("PQ") {
            call(
                &svc,
                vec![
                    ("action", Value::from("train_index")),
                    ("index_id", Value::from(id)),
                    ("training_vectors", rows(300, d as usize, 1)),
                ],
            )
            .unwrap_or_else(|e| panic!("train {id}: {e}"));
        }
        if t.starts_with("IDMap") {
            let ids = Value::Array((100..120).map(Value::from).collect());
            call(
                &svc,
                vec![
                    ("action", Value::from("add_with_ids")),
                    ("index_id", Value::from(id)),
                    ("vectors", rows(20, d as usize, 2)),
                    ("ids", ids),
                ],
            )
            .unwrap_or_else(|e| panic!("add {id}: {e}"));
        } else if !t.starts_with("BINARY") {
            call(
                &svc,
                vec![
                    ("action", Value::from("add_vectors")),
                    ("index_id", Value::from(id)),
                    ("vectors", rows(20, d as usize, 2)),
                ],
            )
            .unwrap_or_else(|e| panic!("add {id}: {e}"));
        }
    }
    svc
}

/// Values that have broken FAISS or the server before (issue 10), and ill-typed ones.
fn nasty() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop_oneof![
            Just(-1i64),
            Just(-44),
            Just(-971),
            Just(0),
            Just(1),
            Just(19),
            Just(20),
            Just(10_000),
            Just(2_147_483_647),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(1e20), Just(3e38), Just(-0.5), Just(1e300)]
            .prop_map(Value::F64),
        Just(Value::Nil),
        Just(Value::from("IVF0,Flat")),
        Just(Value::from("PQ0x8")),
        Just(Value::from("NSG1")),
        Just(Value::from("HNSW1")),
        Just(Value::from("IVF1000000,Flat")),
        Just(Value::from("IDMap2:PQ4x0")),
        Just(Value::Binary(vec![0x7f; 13])),
        Just(Value::Binary(vec![0; 32])),
        (1usize..4, 0usize..10, prop_oneof![Just(1e19), Just(1.0), Just(f64::NAN)])
            .prop_map(|(n, d, x)| Value::Array(vec![Value::Array(vec![Value::F64(x); d]); n])),
        Just(Value::Array(vec![])),
        Just(Value::Map(vec![(Value::from("efSearch"), Value::from(50_000_000u64))])),
        Just(Value::Map(vec![(Value::from("nprobe"), Value::from(u64::MAX))])),
        "[a-z]{0,8}".prop_map(|s| Value::from(s.as_str())),
    ]
}

fn field() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("index_id"),
        Just("id"),
        Just("k"),
        Just("start_idx"),
        Just("num_vectors"),
        Just("limit"),
        Just("ids"),
        Just("vectors"),
        Just("query_vectors"),
        Just("training_vectors"),
        Just("vector"),
        Just("radius"),
        Just("params"),
        Just("parameter"),
        Just("value"),
        Just("index_type"),
        Just("dimension"),
        Just("metadata"),
        Just("source_index_ids"),
        Just("target_index_id"),
        Just("binary"),
        Just("n_clusters"),
        Just("niter"),
        Just("metric_type"),
        Just("sample_ratio"),
        Just("optimization_level"),
        Just("vector_weight"),
        Just("metadata_filter"),
        Just("filter"),
        Just("batch_size"),
    ]
}

/// Index types for `create_index`: good ones and ones that crashed or hung FAISS (issue 10).
const TYPES: [&str; 22] = [
    "L2",
    "IVF4,Flat",
    "HNSW8",
    "PQ2x4",
    "SQ8",
    "IVF0,Flat",
    "PQ0x8",
    "PQ4x0",
    "OPQ0,Flat",
    "RQ2x0",
    "HNSW1",
    "NSG1",
    "NSG8",
    "IVF1000000,Flat",
    "IDMap:L2",
    "IDMap2:HNSW1",
    "BINARY_IVF0",
    "BHNSW1",
    "RR0,Flat",
    "IVF4_HNSW0,Flat",
    "LSQ0x4",
    "IVF4,PQ1x0",
];

/// The filter `{"c": {"$lte": 1}}` (the field some adds give their vectors).
fn le_one() -> Value {
    Value::Map(vec![(Value::from("c"), Value::Map(vec![(Value::from("$lte"), Value::from(1))]))])
}

/// A valid request of `action` on index `id` of width `d`.
fn template(action: &'static str, id: &'static str, d: usize, seed: u64) -> Vec<(&'static str, Value)> {
    let mut r = vec![("action", Value::from(action)), ("index_id", Value::from(id))];
    let q = || rows(2, d, seed);
    match action {
        "add_vectors" => {
            r.push(("vectors", q()));
            // Metadata on some adds, so that filtered searches below have fields to match.
            if seed.is_multiple_of(2) {
                let md = |c: i64| Value::Map(vec![(Value::from("c"), Value::from(c))]);
                r.push(("metadata", Value::Array(vec![md(seed as i64 % 3), md(1)])));
            }
        }
        "add_with_ids" | "batch_add_with_ids" => {
            r.push(("vectors", q()));
            r.push(("ids", Value::Array(vec![Value::from(500 + seed as i64 % 50), Value::from(600)])));
        }
        "search" | "search_and_reconstruct" | "hybrid_search" => {
            r.push(("query_vectors", q()));
            r.push(("k", Value::from(5)));
            if seed.is_multiple_of(3) {
                r.push(("filter", le_one()));
            }
        }
        "range_search" => {
            r.push(("query_vectors", q()));
            r.push(("radius", Value::F64(0.5)));
            if seed.is_multiple_of(3) {
                r.push(("filter", le_one()));
            }
        }
        "train_index" => r.push(("training_vectors", rows(300, d, seed))),
        "compute_clustering" => {
            r.push(("vectors", rows(40, d, seed)));
            r.push(("n_clusters", Value::from(4)));
        }
        "recluster_index" => r.push(("n_clusters", Value::from(2 + seed as i64 % 4))),
        "optimize_index" => r.push(("optimization_level", Value::from(1 + seed as i64 % 3))),
        "reconstruct" => r.push(("id", Value::from(3))),
        "reconstruct_n" => {
            r.push(("start_idx", Value::from(0)));
            r.push(("num_vectors", Value::from(2)));
        }
        "remove_ids" | "get_metadata" => r.push(("ids", Value::Array(vec![Value::from(1), Value::from(101)]))),
        "replace_vector" => {
            r.push(("id", Value::from(101)));
            r.push(("vector", rows(1, d, seed)));
        }
        "get_parameter" | "set_parameter" => {
            r.push(("parameter", Value::from(if seed.is_multiple_of(2) { "nprobe" } else { "efSearch" })));
            r.push(("value", Value::from(4)));
        }
        _ => {}
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_leave_the_server_working(
        action in proptest::sample::select(actions()),
        target in proptest::sample::select(&INDICES[..]),
        seed in any::<u64>(),
        kind in proptest::sample::select(&TYPES[..]),
        dim in prop_oneof![Just(1i64), Just(8), Just(16), Just(64)],
        fields in proptest::collection::vec((field(), nasty()), 0..3),
    ) {
        let svc = SERVICE.with(|s| s.clone());
        if action == "create_index" || action == "delete_index" || action == "reset" || action == "merge_indices" {
            // On a scratch index: create it as `kind`, then train, add and search it, the
            // requests that crashed FAISS on poisoned types.
            let _ = call(&svc, vec![("action", Value::from("delete_index")), ("index_id", Value::from("scratch"))]);
            let mut req = vec![
                ("action", Value::from("create_index")), ("index_id", Value::from("scratch")),
                ("index_type", Value::from(kind)), ("dimension", Value::from(dim)),
            ];
            for (k, v) in fields.iter().filter(|(k, _)| *k != "index_id") {
                req.retain(|(key, _)| key != k);
                req.push((k, v.clone()));
            }
            if call(&svc, req).is_ok() {
                let bits = if kind.starts_with('B') { 8 } else { 1 };
                let w = dim as usize * bits;
                for a in ["train_index", "add_vectors", "search", "reconstruct_n", "reset", "merge_indices"] {
                    let mut r = template(a, "scratch", w, seed);
                    if a == "merge_indices" {
                        r = vec![("action", Value::from(a)), ("target_index_id", Value::from("scratch")),
                                 ("source_index_ids", Value::Array(vec![Value::from(target.0)]))];
                    }
                    let _ = call(&svc, r);
                }
            }
        } else {
            let mut req = template(action, target.0, target.2 as usize, seed);
            for (k, v) in fields {
                req.retain(|(key, _)| *key != k);
                req.push((k, v));
            }
            let _ = call(&svc, req);
        }
        // The healthy float index still answers a search.
        let r = call(&svc, vec![("action", Value::from("search")), ("index_id", Value::from("flat")),
                                ("query_vectors", rows(1, 8, 3)), ("k", Value::from(3))]);
        prop_assert!(r.is_ok(), "search after the request failed: {:?}", r.err().map(|e| e.to_string()));
    }
}

#[test]
fn negative_ids_are_refused_before_anything_changes() {
    let svc = service();
    let status = |svc: &Service| {
        call(svc, vec![("action", Value::from("get_index_status")), ("index_id", Value::from("idmap"))])
            .expect("status")
            .map("status")
            .expect("map")
            .expect("status")
            .uint("ntotal")
            .expect("ntotal")
    };
    let before = status(&svc);
    let e = call(
        &svc,
        vec![
            ("action", Value::from("add_with_ids")),
            ("index_id", Value::from("idmap")),
            ("vectors", rows(2, 8, 9)),
            ("ids", Value::Array(vec![Value::from(7), Value::from(-5)])),
        ],
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("-5"), "{e}");
    assert_eq!(status(&svc), before);
}

thread_local! {
    static SERVICE: std::sync::Arc<Service> = std::sync::Arc::new(service());
}
