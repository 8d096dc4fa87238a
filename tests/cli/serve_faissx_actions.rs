//! FAISSx's remaining actions on `faissx serve` (docs/protocol.md §7): `hybrid_search`,
//! `batch_add_with_ids`, `optimize_index`, `compute_clustering` and `recluster_index`, as raw
//! requests through the engine's `Client`: both vector encodings where vectors travel, bad
//! input (an error reply with its code, and nothing changed), and for the mutations, their
//! state after a clean restart and after `kill -9`.

use crate::serve::{id, s, vecs, Server};
use crate::util::*;
use faissx::engine::client::Client;
use faissx::engine::protocol::{self, Encoding, Msg, Value};
use faissx::engine::ErrorKind;

fn ids_value(ids: &[i64], enc: Encoding) -> Value {
    match enc {
        Encoding::Nested => protocol::ints_value(ids),
        Encoding::Binary => Value::Binary(protocol::i64_bytes(ids)),
    }
}

/// `n` rows of `d`, each NaN at component 1 of row 0 (in the request's encoding).
fn with_nan(x: &[f32]) -> Vec<f32> {
    let mut x = x.to_vec();
    x[1] = f32::NAN;
    x
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_i64().unwrap()).collect(),
        Value::Binary(b) => b.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
        other => panic!("not ints: {other:?}"),
    }
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a
            .iter()
            .flat_map(|r| match r {
                Value::Array(row) => row.iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>(),
                x => vec![x.as_f64().unwrap() as f32],
            })
            .collect(),
        Value::Binary(b) => b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        other => panic!("not floats: {other:?}"),
    }
}

/// The `indices` rows of a nested search reply.
fn result_ids(r: &Msg) -> Vec<Vec<i64>> {
    let Some(Value::Array(results)) = r.get("results") else { panic!("no results in {r:?}") };
    results
        .iter()
        .map(|q| {
            let Value::Map(m) = q else { panic!("result is not a map") };
            ints(&m.iter().find(|(k, _)| k.as_str() == Some("indices")).unwrap().1)
        })
        .collect()
}

fn status(c: &mut Client, name: &str) -> Msg {
    c.call("get_index_status", vec![id(name)]).unwrap().map("status").unwrap().unwrap()
}

fn ntotal(c: &mut Client, name: &str) -> u64 {
    status(c, name).uint("ntotal").unwrap().unwrap()
}

fn param(c: &mut Client, name: &str, p: &str) -> u64 {
    c.call("get_parameter", vec![id(name), ("parameter", s(p))]).unwrap().uint("param_value").unwrap().unwrap()
}

/// The error kind of a request that must fail.
fn fails(c: &mut Client, action: &str, fields: Vec<(&str, Value)>) -> ErrorKind {
    match c.call(action, fields) {
        Ok(r) => panic!("{action} succeeded: {r:?}"),
        Err(e) => e.kind(),
    }
}

fn search_ids(c: &mut Client, name: &str, q: &[f32], d: usize, k: usize, nprobe: Option<u64>) -> Vec<Vec<i64>> {
    let mut f = vec![id(name), ("query_vectors", vecs(q, d, Encoding::Nested)), ("k", Value::from(k as u64))];
    if let Some(p) = nprobe {
        f.push(("params", Value::Map(vec![(s("nprobe"), Value::from(p))])));
    }
    result_ids(&c.call("search", f).unwrap())
}

#[test]
fn serve_batch_add_with_ids_both_encodings_bad_input_restart_and_kill9() {
    let env = TestEnv::new("fx-batch");
    let data = env.path("data").display().to_string();
    let d = 8;
    let base = lcg_vectors(60, d, 11);
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    for enc in [Encoding::Nested, Encoding::Binary] {
        let name = format!("b-{enc:?}");
        c.create_index(&name, d, "IDMap2:L2", None).unwrap();
        let ids: Vec<i64> = (1000..1050).collect();
        let md: Vec<Value> = (0..50).map(|i| Value::from(format!("doc-{i}"))).collect();
        let r = c
            .call(
                "batch_add_with_ids",
                vec![
                    id(&name),
                    ("vectors", vecs(&base[..50 * d], d, enc)),
                    ("ids", ids_value(&ids, enc)),
                    ("batch_size", Value::from(7)),
                    ("metadata", Value::Array(md)),
                ],
            )
            .unwrap();
        assert_eq!(
            (r.uint("count").unwrap(), r.uint("ntotal").unwrap(), r.uint("total").unwrap()),
            (Some(50), Some(50), Some(50)),
            "{enc:?}"
        );
        assert_eq!(r.str("message").unwrap(), Some(format!("added 50 vectors with ids to index {name}").as_str()));
        assert_eq!(search_ids(&mut c, &name, &base[3 * d..4 * d], d, 1, None), vec![vec![1003]], "{enc:?}");
        let m = c.call("get_metadata", vec![id(&name), ("ids", protocol::ints_value(&[1007]))]).unwrap();
        assert_eq!(m.get("metadata"), Some(&Value::Array(vec![s("doc-7")])));

        // Bad input: an error reply with its code, and the index as it was.
        let add = |x: Value, ids: Value| vec![id(&name), ("vectors", x), ("ids", ids)];
        let ten: Vec<i64> = (2000..2010).collect();
        let x10 = &base[50 * d..];
        for (what, fields, kind) in [
            (
                "wrong width",
                add(vecs(&x10[..10 * (d - 1)], d - 1, enc), ids_value(&ten, enc)),
                ErrorKind::DimensionMismatch,
            ),
            ("NaN", add(vecs(&with_nan(x10), d, enc), ids_value(&ten, enc)), ErrorKind::InvalidInput),
            ("ids of the wrong type", add(vecs(x10, d, enc), s("1,2,3")), ErrorKind::InvalidInput),
            ("vectors of the wrong type", add(s("vectors"), ids_value(&ten, enc)), ErrorKind::InvalidInput),
            ("one id short", add(vecs(x10, d, enc), ids_value(&ten[..9], enc)), ErrorKind::InvalidInput),
            (
                "negative id",
                add(vecs(x10, d, enc), ids_value(&[-1, 1, 2, 3, 4, 5, 6, 7, 8, 9], enc)),
                ErrorKind::InvalidInput,
            ),
            ("no ids", vec![id(&name), ("vectors", vecs(x10, d, enc))], ErrorKind::InvalidInput),
        ] {
            assert_eq!(fails(&mut c, "batch_add_with_ids", fields), kind, "{enc:?}: {what}");
        }
        for bad in [Value::from(0), Value::from(-3), s("25"), Value::F64(2.5)] {
            let mut f = add(vecs(x10, d, enc), ids_value(&ten, enc));
            f.push(("batch_size", bad.clone()));
            assert_eq!(fails(&mut c, "batch_add_with_ids", f), ErrorKind::InvalidInput, "{enc:?}: batch_size {bad:?}");
        }
        let f = vec![id("missing"), ("vectors", vecs(x10, d, enc)), ("ids", ids_value(&ten, enc))];
        assert_eq!(fails(&mut c, "batch_add_with_ids", f), ErrorKind::NotFound);
        assert_eq!(ntotal(&mut c, &name), 50, "{enc:?}: a refused batch changed the index");
    }
    // An index without ids takes no ids (as add_with_ids); an IVF index takes them.
    c.create_index("flat", d, "L2", None).unwrap();
    let f = vec![id("flat"), ("vectors", vecs(&base[..d], d, Encoding::Nested)), ("ids", protocol::ints_value(&[5]))];
    assert_eq!(fails(&mut c, "batch_add_with_ids", f), ErrorKind::InvalidInput);
    assert_eq!(ntotal(&mut c, "flat"), 0);

    // Logged like any add: a clean restart, then kill -9 right after a reply.
    srv.stop();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    for name in ["b-Nested", "b-Binary"] {
        assert_eq!(ntotal(&mut c, name), 50, "{name} after restart");
        assert_eq!(search_ids(&mut c, name, &base[9 * d..10 * d], d, 1, None), vec![vec![1009]]);
    }
    let f = vec![
        id("b-Binary"),
        ("vectors", vecs(&base[50 * d..], d, Encoding::Binary)),
        ("ids", ids_value(&(7000..7010).collect::<Vec<_>>(), Encoding::Binary)),
    ];
    assert_eq!(c.call("batch_add_with_ids", f).unwrap().uint("ntotal").unwrap(), Some(60));
    srv.kill9();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    assert_eq!(ntotal(&mut c, "b-Binary"), 60, "acknowledged batch lost to kill -9");
    assert_eq!(search_ids(&mut c, "b-Binary", &base[55 * d..56 * d], d, 1, None), vec![vec![7005]]);
    let m = c.call("get_metadata", vec![id("b-Nested"), ("ids", protocol::ints_value(&[1007]))]).unwrap();
    assert_eq!(m.get("metadata"), Some(&Value::Array(vec![s("doc-7")])));
}

#[test]
fn serve_hybrid_search_is_search_both_encodings_and_checks_filters() {
    let env = TestEnv::new("fx-hybrid");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    let d = 8;
    let base = lcg_vectors(200, d, 21);
    let q = lcg_vectors(4, d, 22);
    c.create_index("h", d, "L2", None).unwrap();
    let md: Vec<Value> = (0..200).map(Value::from).collect();
    c.add_vectors("h", &base, d, None, Some(md)).unwrap();
    for enc in [Encoding::Nested, Encoding::Binary] {
        let plain =
            c.call("search", vec![id("h"), ("query_vectors", vecs(&q, d, enc)), ("k", Value::from(5))]).unwrap();
        let hybrid = c
            .call(
                "hybrid_search",
                vec![
                    id("h"),
                    ("query_vectors", vecs(&q, d, enc)),
                    ("k", Value::from(5)),
                    ("vector_weight", Value::F64(0.7)),
                    ("metadata_filter", Value::Nil),
                    ("include_metadata", Value::Boolean(true)),
                ],
            )
            .unwrap();
        assert_eq!(result_ids(&hybrid), result_ids(&plain), "{enc:?}");
        assert_eq!(hybrid.uint("num_queries").unwrap(), Some(4));
        assert_eq!(hybrid.uint("k").unwrap(), Some(5));
        // Metadata of each neighbour (here: its id).
        let Some(Value::Array(res)) = hybrid.get("results") else { panic!() };
        let Value::Map(first) = &res[0] else { panic!() };
        let mdv = &first.iter().find(|(k, _)| k.as_str() == Some("metadata")).unwrap().1;
        assert_eq!(ints(mdv), result_ids(&plain)[0]);
        // binary: true answers as search does.
        let b = c
            .call(
                "hybrid_search",
                vec![
                    id("h"),
                    ("query_vectors", vecs(&q, d, enc)),
                    ("k", Value::from(5)),
                    ("binary", Value::Boolean(true)),
                ],
            )
            .unwrap();
        assert_eq!(ints(b.get("labels").unwrap()), result_ids(&plain).concat(), "{enc:?}");
        // Bad input.
        let qv = || ("query_vectors", vecs(&q, d, enc));
        for (what, fields, kind) in [
            (
                // The metadata here are integers, not maps: no field to filter on.
                "a metadata filter on an unknown field",
                vec![id("h"), qv(), ("metadata_filter", Value::Map(vec![(s("a"), Value::from(1))]))],
                ErrorKind::InvalidInput,
            ),
            ("vector_weight 2", vec![id("h"), qv(), ("vector_weight", Value::F64(2.0))], ErrorKind::InvalidInput),
            (
                "vector_weight NaN",
                vec![id("h"), qv(), ("vector_weight", Value::F64(f64::NAN))],
                ErrorKind::InvalidInput,
            ),
            ("vector_weight a string", vec![id("h"), qv(), ("vector_weight", s("high"))], ErrorKind::InvalidInput),
            ("no such index", vec![id("nope"), qv()], ErrorKind::NotFound),
            (
                "wrong width",
                vec![id("h"), ("query_vectors", vecs(&q[..3 * (d - 1)], d - 1, enc))],
                ErrorKind::DimensionMismatch,
            ),
            ("NaN", vec![id("h"), ("query_vectors", vecs(&with_nan(&q), d, enc))], ErrorKind::InvalidInput),
            ("k 0", vec![id("h"), qv(), ("k", Value::from(0))], ErrorKind::InvalidInput),
            ("k a string", vec![id("h"), qv(), ("k", s("5"))], ErrorKind::InvalidInput),
        ] {
            assert_eq!(fails(&mut c, "hybrid_search", fields), kind, "{enc:?}: {what}");
        }
    }
}

/// `per` rows around each of `centers` (rows of `d`), offset by a little noise.
fn blobs(centers: &[[f32; 4]], per: usize) -> Vec<f32> {
    let noise = lcg_vectors(centers.len() * per, 4, 31);
    let mut x = Vec::new();
    for (b, c) in centers.iter().enumerate() {
        for i in 0..per {
            for j in 0..4 {
                x.push(c[j] + 0.05 * noise[(b * per + i) * 4 + j]);
            }
        }
    }
    x
}

#[test]
fn serve_compute_clustering_both_encodings_and_bad_input() {
    let env = TestEnv::new("fx-cluster");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    let d = 4;
    let x = blobs(&[[0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0, 5.0, 5.0, 0.0]], 30);
    let cluster = |c: &mut Client, enc: Encoding, extra: Vec<(&str, Value)>| {
        let mut f = vec![("vectors", vecs(&x, d, enc)), ("n_clusters", Value::from(3)), ("niter", Value::from(20))];
        if enc == Encoding::Binary {
            f.push(("dimension", Value::from(d as u64)));
        }
        f.extend(extra);
        c.call("compute_clustering", f).unwrap()
    };
    let nested = cluster(&mut c, Encoding::Nested, vec![("metric_type", s("L2"))]);
    assert_eq!((nested.uint("n_clusters").unwrap(), nested.uint("dimension").unwrap()), (Some(3), Some(4)));
    let assign = ints(nested.get("assignments").unwrap());
    let centroids = floats(nested.get("centroids").unwrap());
    assert_eq!((assign.len(), centroids.len()), (90, 12));
    // Each vector is in the cluster of its nearest centroid, and the sizes count them.
    let dist = |v: &[f32], c: &[f32]| v.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
    for (i, v) in x.chunks(d).enumerate() {
        let near = (0..3)
            .min_by(|&a, &b| dist(v, &centroids[a * 4..a * 4 + 4]).total_cmp(&dist(v, &centroids[b * 4..b * 4 + 4])));
        assert_eq!(Some(assign[i] as usize), near, "vector {i}");
    }
    let sizes = ints(nested.get("cluster_sizes").unwrap());
    assert_eq!(sizes, (0..3).map(|k| assign.iter().filter(|&&a| a == k).count() as i64).collect::<Vec<_>>());
    // The objective is a sum of squared distances, below that of one cluster for everything.
    let mean: Vec<f32> = (0..4).map(|j| x.chunks(d).map(|v| v[j]).sum::<f32>() / 90.0).collect();
    let one_cluster: f32 = x.chunks(d).map(|v| dist(v, &mean)).sum();
    let obj = nested.float("obj").unwrap().unwrap();
    assert!(obj > 0.0 && obj < one_cluster as f64, "obj {obj} vs {one_cluster} for one cluster");
    // Two well-separated blobs are found.
    let two = c
        .call(
            "compute_clustering",
            vec![("vectors", vecs(&x[..60 * d], d, Encoding::Nested)), ("n_clusters", Value::from(2))],
        )
        .unwrap();
    let a2 = ints(two.get("assignments").unwrap());
    assert!(a2[..30].iter().all(|&a| a == a2[0]) && a2[30..].iter().all(|&a| a == a2[30]) && a2[0] != a2[30], "{a2:?}");
    assert_eq!(ints(two.get("cluster_sizes").unwrap()), vec![30, 30]);
    // The same vectors as a bin of float32 (with dimension): the same clustering; with
    // binary: true, centroids and assignments come back as bins.
    let packed = cluster(&mut c, Encoding::Binary, vec![]);
    assert_eq!(floats(packed.get("centroids").unwrap()), centroids);
    assert_eq!(ints(packed.get("assignments").unwrap()), assign);
    assert_eq!(packed.float("obj").unwrap().unwrap(), obj);
    let bins = cluster(&mut c, Encoding::Nested, vec![("binary", Value::Boolean(true))]);
    assert!(matches!(bins.get("centroids"), Some(Value::Binary(b)) if b.len() == 12 * 4));
    assert_eq!(floats(bins.get("centroids").unwrap()), centroids);
    assert_eq!(ints(bins.get("assignments").unwrap()), assign);
    // Inner product: spherical k-means, unit-length centroids.
    for metric in [s("IP"), s("inner_product"), Value::from(0)] {
        let ip = cluster(&mut c, Encoding::Nested, vec![("metric_type", metric.clone())]);
        for r in floats(ip.get("centroids").unwrap()).chunks(4) {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "{metric:?}: centroid norm {norm}");
        }
    }

    // Bad input.
    let base = |enc: Encoding| vec![("vectors", vecs(&x, d, enc)), ("n_clusters", Value::from(3))];
    let with = |mut f: Vec<(&'static str, Value)>, k: &'static str, v: Value| {
        f.retain(|(key, _)| *key != k);
        f.push((k, v));
        f
    };
    let ragged = Value::Array(vec![
        Value::Array(vec![Value::F64(1.0); 4]),
        Value::Array(vec![Value::F64(1.0); 3]),
        Value::Array(vec![Value::F64(1.0); 4]),
    ]);
    let big = lcg_vectors(2000, 64, 5);
    for (what, fields, kind) in [
        ("no vectors", vec![("n_clusters", Value::from(3))], ErrorKind::InvalidInput),
        ("no n_clusters", vec![("vectors", vecs(&x, d, Encoding::Nested))], ErrorKind::InvalidInput),
        ("n_clusters 0", with(base(Encoding::Nested), "n_clusters", Value::from(0)), ErrorKind::InvalidInput),
        ("n_clusters > vectors", with(base(Encoding::Nested), "n_clusters", Value::from(91)), ErrorKind::InvalidInput),
        ("n_clusters a string", with(base(Encoding::Nested), "n_clusters", s("3")), ErrorKind::InvalidInput),
        ("niter 0", with(base(Encoding::Nested), "niter", Value::from(0)), ErrorKind::InvalidInput),
        ("niter 1001", with(base(Encoding::Nested), "niter", Value::from(1001)), ErrorKind::InvalidInput),
        ("unknown metric", with(base(Encoding::Nested), "metric_type", s("manhattan")), ErrorKind::InvalidInput),
        (
            "NaN",
            with(base(Encoding::Nested), "vectors", vecs(&with_nan(&x), d, Encoding::Nested)),
            ErrorKind::InvalidInput,
        ),
        (
            "NaN in a bin",
            with(
                with(base(Encoding::Binary), "vectors", vecs(&with_nan(&x), d, Encoding::Binary)),
                "dimension",
                Value::from(4),
            ),
            ErrorKind::InvalidInput,
        ),
        ("ragged rows", with(base(Encoding::Nested), "vectors", ragged), ErrorKind::DimensionMismatch),
        ("a bin without dimension", base(Encoding::Binary), ErrorKind::InvalidInput),
        (
            "a bin of partial rows",
            with(base(Encoding::Binary), "dimension", Value::from(7)),
            ErrorKind::DimensionMismatch,
        ),
        (
            "dimension unlike the rows",
            with(base(Encoding::Nested), "dimension", Value::from(5)),
            ErrorKind::DimensionMismatch,
        ),
        ("vectors a string", with(base(Encoding::Nested), "vectors", s("x")), ErrorKind::InvalidInput),
        (
            "too much work",
            vec![
                ("vectors", vecs(&big, 64, Encoding::Binary)),
                ("dimension", Value::from(64)),
                ("n_clusters", Value::from(2000)),
                ("niter", Value::from(1000)),
            ],
            ErrorKind::TooLarge,
        ),
    ] {
        assert_eq!(fails(&mut c, "compute_clustering", fields), kind, "{what}");
    }
    // Nothing was created.
    let l = c.call("list_indices", vec![]).unwrap();
    assert_eq!(l.get("indexes"), Some(&Value::Array(vec![])));
}

#[test]
fn serve_optimize_index_sets_parameters_and_they_persist() {
    let env = TestEnv::new("fx-optimize");
    let data = env.path("data").display().to_string();
    let d = 8;
    let base = lcg_vectors(1000, d, 41);
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    c.create_index("ivf", d, "IVF", None).unwrap();
    c.create_index("hnsw", d, "HNSW16", None).unwrap();
    c.create_index("flat", d, "L2", None).unwrap();
    c.create_index("pq", d, "PQ4x8", None).unwrap();
    c.create_index("raw", d, "IVF8", None).unwrap();
    c.train("ivf", &base, d).unwrap();
    c.add_vectors("ivf", &base, d, None, None).unwrap();
    let optimize = |c: &mut Client, name: &str, level: Option<i64>| {
        let mut f = vec![id(name)];
        if let Some(l) = level {
            f.push(("optimization_level", Value::from(l)));
        }
        c.call("optimize_index", f).unwrap()
    };
    let list = |r: &Msg| -> Vec<String> {
        let Some(Value::Array(a)) = r.get("optimizations") else { panic!("{r:?}") };
        a.iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    // FAISSx's rules: an IVF index of 100 lists gets nprobe 10, 20, 50 at levels 1, 2, 3+.
    for (level, nprobe) in [(None, 10), (Some(2), 20), (Some(7), 50), (Some(2), 20)] {
        let r = optimize(&mut c, "ivf", level);
        assert_eq!(list(&r), vec![format!("set_nprobe_{nprobe}")], "level {level:?}");
        assert_eq!(r.str("index_type").unwrap(), Some("IndexIVFFlat"));
        assert_eq!(r.int("optimization_level").unwrap(), Some(level.unwrap_or(1)));
        assert_eq!(r.str("message").unwrap(), Some("Applied 1 optimizations to index ivf"));
        assert_eq!(param(&mut c, "ivf", "nprobe"), nprobe);
    }
    let r = optimize(&mut c, "hnsw", Some(3));
    assert_eq!(list(&r), vec!["set_efSearch_120"]);
    assert_eq!(param(&mut c, "hnsw", "efSearch"), 120);
    assert_eq!(list(&optimize(&mut c, "flat", None)), vec!["flat_index_no_optimization"]);
    let r = optimize(&mut c, "pq", None);
    assert_eq!(list(&r), Vec::<String>::new());
    assert_eq!(r.str("message").unwrap(), Some("Applied 0 optimizations to index pq"));

    // Bad input changes nothing.
    assert_eq!(fails(&mut c, "optimize_index", vec![id("raw")]), ErrorKind::NotTrained);
    for bad in [Value::from(0), Value::from(-1), s("2"), Value::F64(1.5)] {
        let f = vec![id("ivf"), ("optimization_level", bad.clone())];
        assert_eq!(fails(&mut c, "optimize_index", f), ErrorKind::InvalidInput, "level {bad:?}");
    }
    assert_eq!(fails(&mut c, "optimize_index", vec![id("missing")]), ErrorKind::NotFound);
    assert_eq!(param(&mut c, "ivf", "nprobe"), 20);

    // Kept like set_parameter: a clean restart, then kill -9 right after a reply.
    srv.stop();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    assert_eq!(param(&mut c, "ivf", "nprobe"), 20);
    assert_eq!(param(&mut c, "hnsw", "efSearch"), 120);
    assert_eq!(list(&optimize(&mut c, "hnsw", Some(1))), vec!["set_efSearch_40"]);
    assert_eq!(list(&optimize(&mut c, "ivf", Some(3))), vec!["set_nprobe_50"]);
    srv.kill9();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    assert_eq!(param(&mut c, "ivf", "nprobe"), 50);
    assert_eq!(param(&mut c, "hnsw", "efSearch"), 40);
}

#[test]
fn serve_recluster_index_rebuilds_ivf_keeps_ids_and_persists() {
    let env = TestEnv::new("fx-recluster");
    let data = env.path("data").display().to_string();
    let d = 8;
    let base = lcg_vectors(800, d, 51);
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    c.create_index("ivf", d, "IVF16", None).unwrap();
    c.train("ivf", &base, d).unwrap();
    let md: Vec<Value> = (0..800).map(|i| Value::from(format!("v{i}"))).collect();
    c.add_vectors("ivf", &base, d, None, Some(md)).unwrap();
    c.call("remove_ids", vec![id("ivf"), ("ids", protocol::ints_value(&[0, 1]))]).unwrap();
    c.create_index("pq", d, "IVF16,PQ4x8", None).unwrap();
    c.train("pq", &base, d).unwrap();
    c.add_vectors("pq", &base, d, None, None).unwrap();
    c.create_index("idm", d, "IDMap2:IVF16", None).unwrap();
    c.train("idm", &base, d).unwrap();
    let ids: Vec<i64> = (0..800).map(|i| 5000 + 3 * i).collect();
    c.add_vectors("idm", &base, d, Some(&ids), None).unwrap();

    let r = c
        .call("recluster_index", vec![id("ivf"), ("n_clusters", Value::from(8)), ("sample_ratio", Value::F64(0.5))])
        .unwrap();
    assert_eq!(
        (r.uint("previous_nlist").unwrap(), r.uint("new_nlist").unwrap(), r.uint("ntotal").unwrap()),
        (Some(16), Some(8), Some(798))
    );
    assert_eq!(r.str("message").unwrap(), Some("index ivf reclustered with 8 clusters"));
    assert_eq!(status(&mut c, "ivf").uint("nlist").unwrap(), Some(8));
    // IVF-Flat: every vector is where its id says (all 8 lists probed: exact).
    let q: Vec<f32> = base[100 * d..110 * d].to_vec();
    let exact: Vec<Vec<i64>> = (100..110).map(|i| vec![i]).collect();
    assert_eq!(search_ids(&mut c, "ivf", &q, d, 1, Some(8)), exact);
    let m = c.call("get_metadata", vec![id("ivf"), ("ids", protocol::ints_value(&[105]))]).unwrap();
    assert_eq!(m.get("metadata"), Some(&Value::Array(vec![s("v105")])));
    // IVF-PQ: retrained codebooks, the same vectors (found approximately).
    let r = c.call("recluster_index", vec![id("pq"), ("n_clusters", Value::from(4))]).unwrap();
    assert_eq!(r.uint("new_nlist").unwrap(), Some(4));
    let found = search_ids(&mut c, "pq", &q, d, 5, Some(4));
    let hits = found.iter().enumerate().filter(|(i, row)| row.contains(&(100 + *i as i64))).count();
    assert!(hits >= 8, "IVF-PQ after reclustering finds {hits}/10 of its own vectors in the top 5: {found:?}");
    // IDMap2 over IVF: the user's ids stay; n_clusters defaults to the current nlist.
    let r = c.call("recluster_index", vec![id("idm")]).unwrap();
    assert_eq!((r.uint("previous_nlist").unwrap(), r.uint("new_nlist").unwrap()), (Some(16), Some(16)));
    assert_eq!(search_ids(&mut c, "idm", &base[7 * d..8 * d], d, 1, Some(16)), vec![vec![5021]]);

    // Bad input changes nothing.
    c.create_index("flat", d, "L2", None).unwrap();
    c.add_vectors("flat", &base[..20 * d], d, None, None).unwrap();
    c.create_index("empty", d, "IVF4", None).unwrap();
    c.create_index("bin", 64, "BINARY_IVF4", None).unwrap();
    for (what, fields, kind) in [
        ("a flat index", vec![id("flat")], ErrorKind::Unsupported),
        ("a binary index", vec![id("bin"), ("n_clusters", Value::from(2))], ErrorKind::Unsupported),
        ("an empty index", vec![id("empty")], ErrorKind::InvalidInput),
        ("n_clusters 0", vec![id("ivf"), ("n_clusters", Value::from(0))], ErrorKind::InvalidInput),
        ("n_clusters 10^9", vec![id("ivf"), ("n_clusters", Value::from(1_000_000_000))], ErrorKind::InvalidInput),
        ("more clusters than vectors", vec![id("ivf"), ("n_clusters", Value::from(900))], ErrorKind::InvalidInput),
        ("n_clusters a string", vec![id("ivf"), ("n_clusters", s("4"))], ErrorKind::InvalidInput),
        ("sample_ratio 0", vec![id("ivf"), ("sample_ratio", Value::F64(0.0))], ErrorKind::InvalidInput),
        ("sample_ratio NaN", vec![id("ivf"), ("sample_ratio", Value::F64(f64::NAN))], ErrorKind::InvalidInput),
        ("sample_ratio a string", vec![id("ivf"), ("sample_ratio", s("half"))], ErrorKind::InvalidInput),
        ("no such index", vec![id("missing")], ErrorKind::NotFound),
    ] {
        assert_eq!(fails(&mut c, "recluster_index", fields), kind, "{what}");
    }
    assert_eq!(status(&mut c, "ivf").uint("nlist").unwrap(), Some(8));
    assert_eq!(ntotal(&mut c, "ivf"), 798);

    // Checkpointed before it is served: a clean restart, then kill -9 right after a reply.
    srv.stop();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    assert_eq!(status(&mut c, "ivf").uint("nlist").unwrap(), Some(8));
    assert_eq!(ntotal(&mut c, "ivf"), 798);
    assert_eq!(search_ids(&mut c, "ivf", &q, d, 1, Some(8)), exact);
    assert_eq!(status(&mut c, "pq").uint("nlist").unwrap(), Some(4));
    c.call("recluster_index", vec![id("ivf"), ("n_clusters", Value::from(12))]).unwrap();
    srv.kill9();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    assert_eq!(status(&mut c, "ivf").uint("nlist").unwrap(), Some(12));
    assert_eq!(search_ids(&mut c, "ivf", &q, d, 1, Some(12)), exact);
    let m = c.call("get_metadata", vec![id("ivf"), ("ids", protocol::ints_value(&[105]))]).unwrap();
    assert_eq!(m.get("metadata"), Some(&Value::Array(vec![s("v105")])));
}
