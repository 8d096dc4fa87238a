//! `faissx serve` and `faissx query-remote`: every action over the wire in both vector
//! encodings, auth and tenant isolation, bad input, restart persistence and kill -9
//! durability. Each test starts its own server on a free loopback port (port 0; the endpoint
//! is the first stdout line) and kills it on drop.

use crate::util::*;
use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::protocol::{self, Encoding, Msg, Value};
use faissx::engine::{ErrorKind, SearchParams};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A running `faissx serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub endpoint: String,
}

impl Server {
    pub fn start(env: &TestEnv, extra: &[&str]) -> Server {
        let mut cmd = env.cmd();
        cmd.args(["serve", "--bind-address", "127.0.0.1", "--port", "0", "-q"]).args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let endpoint = line.trim().to_string();
        assert!(endpoint.starts_with("tcp://127.0.0.1:"), "first stdout line must be the endpoint, got {line:?}");
        Server { child, endpoint }
    }

    pub fn client(&self, key: Option<&str>, tenant: Option<&str>) -> Client {
        Client::connect(ClientConfig {
            server: self.endpoint.clone(),
            api_key: key.map(str::to_string),
            tenant: tenant.map(str::to_string),
            timeout: Duration::from_secs(60),
            server_public_key: None,
        })
        .unwrap()
    }

    /// SIGTERM and wait (clean shutdown).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "serve exited with {st:?} on SIGTERM");
    }

    /// SIGKILL and wait.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn s(v: &str) -> Value {
    Value::from(v)
}

pub fn id(v: &str) -> (&'static str, Value) {
    ("index_id", s(v))
}

pub fn vecs(x: &[f32], d: usize, enc: Encoding) -> Value {
    protocol::vectors_value(x, d, enc)
}

/// Row `q`'s `indices` from a nested search reply.
fn nested_ids(r: &Msg, q: usize) -> Vec<i64> {
    let Some(Value::Array(results)) = r.get("results") else { panic!("no results") };
    let Value::Map(m) = &results[q] else { panic!("result is not a map") };
    let ids = m.iter().find(|(k, _)| k.as_str() == Some("indices")).unwrap().1.clone();
    let Value::Array(a) = ids else { panic!() };
    a.iter().map(|v| v.as_i64().unwrap()).collect()
}

fn exact_top(base: &[f32], q: &[f32], d: usize, k: usize) -> Vec<i64> {
    let mut dist: Vec<(f32, i64)> = base
        .chunks(d)
        .enumerate()
        .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(), i as i64))
        .collect();
    dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    dist.into_iter().take(k).map(|x| x.1).collect()
}

#[test]
fn serve_every_action_in_both_encodings() {
    let env = TestEnv::new("serve-actions");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    let d = 8;
    let base = lcg_vectors(300, d, 1);
    let queries = lcg_vectors(5, d, 2);

    let pong = c.ping().unwrap();
    assert_eq!(pong.str("message").unwrap(), Some("pong"));
    assert!(pong.float("timestamp").unwrap().unwrap() > 1.0e9);
    assert!(pong.has("version"));

    for enc in [Encoding::Nested, Encoding::Binary] {
        let name = format!("flat-{enc:?}");
        let r = c
            .call("create_index", vec![id(&name), ("dimension", Value::from(d as u64)), ("index_type", s("L2"))])
            .unwrap();
        assert_eq!(r.uint("dimension").unwrap(), Some(d as u64));
        assert!(r.flag("is_trained").unwrap());
        let md: Vec<Value> = (0..300).map(|i| Value::from(format!("doc-{i}"))).collect();
        let r = c
            .call("add_vectors", vec![id(&name), ("vectors", vecs(&base, d, enc)), ("metadata", Value::Array(md))])
            .unwrap();
        assert_eq!(
            (r.uint("count").unwrap(), r.uint("ntotal").unwrap(), r.uint("total").unwrap()),
            (Some(300), Some(300), Some(300))
        );
        // search: nested reply
        let r = c
            .call(
                "search",
                vec![
                    id(&name),
                    ("query_vectors", vecs(&queries, d, enc)),
                    ("k", Value::from(4)),
                    ("include_metadata", Value::Boolean(true)),
                ],
            )
            .unwrap();
        assert_eq!(r.uint("num_queries").unwrap(), Some(5));
        for q in 0..5 {
            assert_eq!(nested_ids(&r, q), exact_top(&base, &queries[q * d..(q + 1) * d], d, 4), "{enc:?} query {q}");
        }
        // binary reply with metadata
        let (n, md) = c.search(&name, &queries, d, &knn(4), true).unwrap();
        assert_eq!(n.ids[..4], exact_top(&base, &queries[..d], d, 4)[..]);
        let md = md.unwrap();
        let Value::Array(row0) = &md[0] else { panic!() };
        assert_eq!(row0[0].as_str(), Some(format!("doc-{}", n.ids[0]).as_str()));
        // k > ntotal pads with -1 and FAISS's padding distance
        let (n, _) = c.search(&name, &queries[..d], d, &knn(301), false).unwrap();
        assert_eq!(n.ids[300], -1);
        assert_eq!(n.dists[300], f32::MAX);
        // range search
        let r = c.range_search(&name, &queries[..d], d, 0.5).unwrap();
        let want = base
            .chunks(d)
            .filter(|r| r.iter().zip(&queries[..d]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() < 0.5)
            .count();
        assert_eq!(r.ids.len(), want);
        // reconstruct, reconstruct_n, get_vectors
        let r = c.call("reconstruct", vec![id(&name), ("id", Value::from(7))]).unwrap();
        let Some(Value::Array(v)) = r.get("vector") else { panic!() };
        assert_eq!(v[0].as_f64().unwrap() as f32, base[7 * d]);
        let r = c.call("reconstruct", vec![id(&name), ("idx", Value::from(7))]).unwrap();
        assert!(r.has("vector"));
        let r = c
            .call(
                "reconstruct_n",
                vec![
                    id(&name),
                    ("start_idx", Value::from(10)),
                    ("num_vectors", Value::from(3)),
                    ("binary", Value::Boolean(true)),
                ],
            )
            .unwrap();
        let Some(Value::Binary(b)) = r.get("vectors") else { panic!() };
        assert_eq!(protocol::f32_from_bytes(b).unwrap(), base[10 * d..13 * d].to_vec());
        let r = c
            .call("get_vectors", vec![id(&name), ("start_idx", Value::from(298)), ("limit", Value::from(10))])
            .unwrap();
        let Some(Value::Array(rows)) = r.get("vectors") else { panic!() };
        assert_eq!(rows.len(), 2);
        let r = c
            .call(
                "search_and_reconstruct",
                vec![id(&name), ("query_vectors", vecs(&queries[..d], d, enc)), ("k", Value::from(2))],
            )
            .unwrap();
        assert!(format!("{:?}", r.get("results")).contains("vectors"));
        // metadata
        let r = c.call("get_metadata", vec![id(&name), ("ids", protocol::ints_value(&[3, 999]))]).unwrap();
        let Some(Value::Array(m)) = r.get("metadata") else { panic!() };
        assert_eq!((m[0].as_str(), m[1].is_nil()), (Some("doc-3"), true));
        // remove renumbers a flat index: metadata follows
        let r = c.call("remove_ids", vec![id(&name), ("ids", protocol::ints_value(&[0, 1]))]).unwrap();
        assert_eq!((r.uint("removed").unwrap(), r.uint("ntotal").unwrap()), (Some(2), Some(298)));
        let r = c.call("get_metadata", vec![id(&name), ("ids", protocol::ints_value(&[1]))]).unwrap();
        assert_eq!(format!("{:?}", r.get("metadata")), format!("{:?}", Some(Value::Array(vec![s("doc-3")]))));
        let r = c.call("reset", vec![id(&name)]).unwrap();
        assert_eq!(r.uint("ntotal").unwrap(), Some(0));
    }

    // IVF: train, parameters, per-request nprobe, status and info
    c.call("create_index", vec![id("ivf"), ("dimension", Value::from(d as u64)), ("index_type", s("IVF4"))]).unwrap();
    let e = c.call("add_vectors", vec![id("ivf"), ("vectors", vecs(&base, d, Encoding::Binary))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotTrained, "{e}");
    let r = c.train("ivf", &base, d).unwrap();
    assert_eq!((r.flag("is_trained").unwrap(), r.uint("trained_with").unwrap()), (true, Some(300)));
    c.add_vectors("ivf", &base, d, None, None).unwrap();
    let r = c.call("set_parameter", vec![id("ivf"), ("parameter", s("nprobe")), ("value", Value::from(4))]).unwrap();
    assert_eq!(r.uint("param_value").unwrap(), Some(4));
    let r = c.call("get_parameter", vec![id("ivf"), ("parameter", s("nprobe"))]).unwrap();
    assert_eq!(r.uint("param_value").unwrap(), Some(4));
    let (n, _) = c.search("ivf", &queries, d, &knn(3), false).unwrap();
    assert_eq!(n.ids[..3], exact_top(&base, &queries[..d], d, 3)[..], "nprobe = nlist is exact");
    let (n1, _) = c.search("ivf", &queries, d, &SearchParams { nprobe: Some(1), ..knn(3) }, false).unwrap();
    assert_eq!(n1.nq, 5);
    let r = c.call("get_index_status", vec![id("ivf")]).unwrap();
    let st = r.map("status").unwrap().unwrap();
    assert_eq!(
        (st.uint("nlist").unwrap(), st.uint("nprobe").unwrap(), st.uint("ntotal").unwrap()),
        (Some(4), Some(4), Some(300))
    );
    let r = c.call("get_index_stats", vec![id("ivf")]).unwrap();
    assert!(r.has("status"));
    let r = c.call("get_index_info", vec![id("ivf")]).unwrap();
    assert!(!r.map("storage").unwrap().unwrap().flag("persistent").unwrap());
    let e =
        c.call("set_parameter", vec![id("ivf"), ("parameter", s("efSearch")), ("value", Value::from(4))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);

    // HNSW parameters
    c.call("create_index", vec![id("hnsw"), ("dimension", Value::from(d as u64)), ("index_type", s("HNSW8"))]).unwrap();
    c.add_vectors("hnsw", &base, d, None, None).unwrap();
    c.call("set_parameter", vec![id("hnsw"), ("parameter", s("efSearch")), ("value", Value::from(64))]).unwrap();
    let r = c.call("get_parameter", vec![id("hnsw"), ("parameter", s("efSearch"))]).unwrap();
    assert_eq!(r.uint("param_value").unwrap(), Some(64));
    let (n, _) = c.search("hnsw", &queries, d, &SearchParams { ef_search: Some(128), ..knn(1) }, false).unwrap();
    assert_eq!(n.ids[0], exact_top(&base, &queries[..d], d, 1)[0]);

    // IDMap wrappers: over an existing (empty) index and over a type
    c.call("create_index", vec![id("base"), ("dimension", Value::from(d as u64))]).unwrap();
    c.call("create_index", vec![id("idm"), ("dimension", Value::from(d as u64)), ("index_type", s("IDMap:base"))])
        .unwrap();
    c.call("create_index", vec![id("idm2"), ("dimension", Value::from(d as u64)), ("index_type", s("IDMap2:L2"))])
        .unwrap();
    let ids: Vec<i64> = (0..300).map(|i| i * 10 + 5).collect();
    for name in ["idm", "idm2"] {
        let e = c.call("add_vectors", vec![id(name), ("vectors", vecs(&base, d, Encoding::Nested))]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "IDMap needs ids: {e}");
        let r = c
            .call(
                "add_with_ids",
                vec![id(name), ("vectors", vecs(&base, d, Encoding::Nested)), ("ids", protocol::ints_value(&ids))],
            )
            .unwrap();
        assert_eq!(r.uint("ntotal").unwrap(), Some(300));
        let (n, _) = c.search(name, &queries[..d], d, &knn(1), false).unwrap();
        assert_eq!(n.ids[0], exact_top(&base, &queries[..d], d, 1)[0] * 10 + 5);
    }
    let r = c.call("reconstruct", vec![id("idm2"), ("id", Value::from(15))]).unwrap();
    let Some(Value::Array(v)) = r.get("vector") else { panic!() };
    assert_eq!(v[0].as_f64().unwrap() as f32, base[d]);
    let newv = vec![9.0f32; d];
    c.call("replace_vector", vec![id("idm2"), ("id", Value::from(15)), ("vector", protocol::vector_value(&newv))])
        .unwrap();
    let (n, _) = c.search("idm2", &newv, d, &knn(1), false).unwrap();
    assert_eq!((n.ids[0], n.dists[0]), (15, 0.0));
    let r = c.call("remove_ids", vec![id("idm2"), ("ids", Value::Binary(protocol::i64_bytes(&[15, 25])))]).unwrap();
    assert_eq!(r.uint("ntotal").unwrap(), Some(298));

    // merge two flat indices
    c.call("create_index", vec![id("m1"), ("dimension", Value::from(d as u64))]).unwrap();
    c.call("create_index", vec![id("m2"), ("dimension", Value::from(d as u64))]).unwrap();
    c.add_vectors("m1", &base[..100 * d], d, None, None).unwrap();
    c.add_vectors("m2", &base[100 * d..], d, None, None).unwrap();
    let r = c
        .call("merge_indices", vec![("target_index_id", s("m1")), ("source_index_ids", Value::Array(vec![s("m2")]))])
        .unwrap();
    assert_eq!(r.uint("ntotal").unwrap(), Some(300));

    // list, health, metrics, snapshot (in memory), delete
    let r = c.call("list_indexes", vec![]).unwrap();
    let Some(Value::Array(list)) = r.get("indexes") else { panic!() };
    assert_eq!(list.len(), 9);
    let r = c.call("list_indices", vec![]).unwrap();
    assert!(format!("{r:?}").contains("vector_count"));
    let r = c.call("health", vec![]).unwrap();
    assert_eq!((r.str("status").unwrap(), r.uint("indexes").unwrap()), (Some("ok"), Some(9)));
    let r = c.call("metrics", vec![]).unwrap();
    assert!(r.uint("requests").unwrap().unwrap() > 40);
    assert!(r.map("actions").unwrap().unwrap().map("search").unwrap().unwrap().has("p99_ms"));
    let r = c.call("snapshot", vec![]).unwrap();
    assert!(r.str("message").unwrap().unwrap().contains("in-memory"));
    c.call("delete_index", vec![id("m2")]).unwrap();
    let e = c.call("get_index_status", vec![id("m2")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = c.call("create_index", vec![id("m1"), ("dimension", Value::from(4))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
}

/// Send raw bytes, expect an error reply with `code`.
fn raw_err(c: &mut Client, bytes: &[u8], code: &str) {
    let e = c.call_raw(bytes).unwrap_err();
    let want = protocol::ErrorCode::parse(code).unwrap().kind();
    assert_eq!(e.kind(), want, "expected {code}, got {e}");
}

fn req(fields: Vec<(&str, Value)>) -> Vec<u8> {
    Msg::from_pairs(fields).into_bytes()
}

#[test]
fn serve_refuses_bad_input_and_keeps_serving() {
    let env = TestEnv::new("serve-bad");
    let srv = Server::start(&env, &["--max-request-bytes", "100000"]);
    let mut c = srv.client(None, None);
    let d = 4;
    c.create_index("x", d, "Flat", None).unwrap();
    c.add_vectors("x", &lcg_vectors(10, d, 1), d, None, None).unwrap();
    let a = |s: &str| ("action", Value::from(s));
    raw_err(&mut c, &[0xc1, 0xff, 0x00], "INVALID_ARGUMENT"); // not msgpack
    raw_err(&mut c, &protocol::encode_value(&Value::Array(vec![Value::from(1)])), "INVALID_ARGUMENT"); // not a map
    raw_err(&mut c, b"", "INVALID_ARGUMENT");
    raw_err(&mut c, &req(vec![("index_id", s("x"))]), "INVALID_ARGUMENT"); // no action
    raw_err(&mut c, &req(vec![("action", Value::from(3))]), "INVALID_ARGUMENT"); // action not a string
    raw_err(&mut c, &req(vec![a("fly_to_moon")]), "UNSUPPORTED");
    raw_err(&mut c, &req(vec![a("search"), id("x"), ("query_vectors", s("nope"))]), "INVALID_ARGUMENT");
    raw_err(
        &mut c,
        &req(vec![a("search"), id("x"), ("query_vectors", vecs(&[1.0; 4], 4, Encoding::Nested)), ("k", s("ten"))]),
        "INVALID_ARGUMENT",
    );
    raw_err(
        &mut c,
        &req(vec![
            a("search"),
            id("x"),
            ("query_vectors", vecs(&[1.0; 4], 4, Encoding::Nested)),
            ("k", Value::from(0)),
        ]),
        "INVALID_ARGUMENT",
    );
    raw_err(
        &mut c,
        &req(vec![
            a("search"),
            id("x"),
            ("query_vectors", vecs(&[1.0; 4], 4, Encoding::Nested)),
            ("k", Value::from(10_001)),
        ]),
        "INVALID_ARGUMENT",
    );
    raw_err(
        &mut c,
        &req(vec![a("add_vectors"), id("x"), ("vectors", vecs(&[1.0; 6], 3, Encoding::Nested))]),
        "DIMENSION_MISMATCH",
    );
    raw_err(
        &mut c,
        &req(vec![a("add_vectors"), id("x"), ("vectors", Value::Binary(vec![0; 12]))]),
        "DIMENSION_MISMATCH",
    );
    raw_err(
        &mut c,
        &req(vec![a("add_vectors"), id("x"), ("vectors", vecs(&[1.0, f32::NAN, 0.0, 0.0], 4, Encoding::Nested))]),
        "INVALID_ARGUMENT",
    );
    raw_err(
        &mut c,
        &req(vec![a("add_vectors"), id("x"), ("vectors", vecs(&[1.0, f32::INFINITY, 0.0, 0.0], 4, Encoding::Binary))]),
        "INVALID_ARGUMENT",
    );
    raw_err(
        &mut c,
        &req(vec![
            a("add_vectors"),
            id("x"),
            ("vectors", vecs(&[1.0; 8], 4, Encoding::Nested)),
            ("metadata", Value::Array(vec![s("one")])),
        ]),
        "INVALID_ARGUMENT",
    );
    raw_err(&mut c, &req(vec![a("create_index"), id("y"), ("dimension", Value::from(0))]), "INVALID_ARGUMENT");
    raw_err(&mut c, &req(vec![a("create_index"), id("y"), ("dimension", Value::from(70_000))]), "INVALID_ARGUMENT");
    raw_err(
        &mut c,
        &req(vec![a("create_index"), id("y"), ("dimension", Value::from(4)), ("index_type", s("NoSuchIndex99"))]),
        "INVALID_ARGUMENT",
    );
    raw_err(
        &mut c,
        // a binary index's dimension counts bits and must fill whole bytes
        &req(vec![a("create_index"), id("y"), ("dimension", Value::from(12)), ("index_type", s("BINARY_FLAT"))]),
        "INVALID_ARGUMENT",
    );
    let long = "a".repeat(500);
    for bad in ["../x", "", "a/b", long.as_str(), ".."] {
        raw_err(&mut c, &req(vec![a("create_index"), id(bad), ("dimension", Value::from(4))]), "INVALID_ARGUMENT");
        raw_err(
            &mut c,
            &req(vec![a("search"), id(bad), ("query_vectors", vecs(&[1.0; 4], 4, Encoding::Nested))]),
            "INVALID_ARGUMENT",
        );
    }
    raw_err(&mut c, &req(vec![a("list_indices"), ("tenant_id", s("../etc"))]), "INVALID_ARGUMENT");
    // oversized
    let big = req(vec![a("add_vectors"), id("x"), ("vectors", Value::Binary(vec![0; 200_000]))]);
    raw_err(&mut c, &big, "TOO_LARGE");
    // nothing changed, still serving
    let r = c.call("list_indices", vec![]).unwrap();
    let Some(Value::Array(list)) = r.get("indexes") else { panic!() };
    assert_eq!(list.len(), 1);
    assert_eq!(c.get_index_status("x").map(|s| s.dimension).unwrap(), 4);
    let r = c.call("get_index_status", vec![id("x")]).unwrap();
    assert_eq!(r.uint("ntotal").unwrap(), Some(10));
    assert_eq!(c.ping().unwrap().str("message").unwrap(), Some("pong"));
}

#[test]
fn serve_auth_and_tenant_isolation() {
    let env = TestEnv::new("serve-auth");
    let srv = Server::start(&env, &["--enable-auth", "--auth-keys", "k1:acme,k2:globex"]);
    let d = 4;
    // ping needs no key; everything else does
    let mut anon = srv.client(None, None);
    anon.ping().unwrap();
    let e = anon.call("list_indices", vec![]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    assert!(e.to_string().contains("API key required"), "{e}");
    let mut bad = srv.client(Some("nope"), None);
    let e = bad.call("create_index", vec![id("docs"), ("dimension", Value::from(4))]).unwrap_err();
    assert!(e.kind() == ErrorKind::Auth && e.to_string().contains("Invalid API key"), "{e}");

    // the key decides the tenant, whatever tenant_id says
    let mut a = srv.client(Some("k1"), Some("globex"));
    let mut b = srv.client(Some("k2"), None);
    a.create_index("docs", d, "IDMap2:L2", None).unwrap();
    a.create_index("private", d, "Flat", None).unwrap();
    let xa = vec![1.0f32; 4 * d];
    a.add_vectors("docs", &xa, d, Some(&[1, 2, 3, 4]), Some(vec![s("a1"), s("a2"), s("a3"), s("a4")])).unwrap();
    a.add_vectors("private", &xa, d, None, None).unwrap();
    // globex has its own "docs"
    b.create_index("docs", d, "Flat", None).unwrap();
    b.add_vectors("docs", &[5.0f32; 4], d, None, None).unwrap();
    let (n, _) = b.search("docs", &[1.0; 4], d, &knn(10), false).unwrap();
    assert_eq!(n.ids[1], -1, "globex's docs holds one vector, not acme's four");

    // globex cannot touch acme's "private", through any action
    let q = || vecs(&[1.0; 4], 4, Encoding::Nested);
    let p = || id("private");
    let attempts: Vec<(&str, Vec<(&str, Value)>)> = vec![
        ("search", vec![p(), ("query_vectors", q())]),
        ("search_and_reconstruct", vec![p(), ("query_vectors", q())]),
        ("range_search", vec![p(), ("query_vectors", q()), ("radius", Value::F64(1.0))]),
        ("add_vectors", vec![p(), ("vectors", q())]),
        ("add_with_ids", vec![p(), ("vectors", q()), ("ids", protocol::ints_value(&[9]))]),
        ("train_index", vec![p(), ("training_vectors", q())]),
        ("reconstruct", vec![p(), ("id", Value::from(0))]),
        ("reconstruct_n", vec![p(), ("start_idx", Value::from(0)), ("num_vectors", Value::from(1))]),
        ("get_vectors", vec![p()]),
        ("remove_ids", vec![p(), ("ids", protocol::ints_value(&[0]))]),
        ("replace_vector", vec![p(), ("id", Value::from(0)), ("vector", q())]),
        ("get_index_status", vec![p()]),
        ("get_index_stats", vec![p()]),
        ("get_index_info", vec![p()]),
        ("set_parameter", vec![p(), ("parameter", s("nprobe")), ("value", Value::from(2))]),
        ("get_parameter", vec![p(), ("parameter", s("nprobe"))]),
        ("reset", vec![p()]),
        ("clear", vec![p()]),
        ("get_metadata", vec![p(), ("ids", protocol::ints_value(&[0]))]),
        ("snapshot", vec![p()]),
        ("delete_index", vec![p()]),
        ("merge_indices", vec![("target_index_id", s("docs")), ("source_index_ids", Value::Array(vec![s("private")]))]),
        ("merge_indices", vec![("target_index_id", s("private")), ("source_index_ids", Value::Array(vec![s("docs")]))]),
        ("create_index", vec![id("wrap"), ("dimension", Value::from(4)), ("index_type", s("IDMap:private"))]),
    ];
    for (action, fields) in attempts {
        let e = b.call(action, fields).unwrap_err();
        assert!(
            e.kind() == ErrorKind::NotFound || (action == "create_index" && e.kind() == ErrorKind::InvalidInput),
            "{action}: globex reached acme's index: {e}"
        );
    }
    // globex's create "IDMap:private" must not have wrapped acme's index
    let r = b.call("list_indices", vec![]).unwrap();
    let listed = format!("{r:?}");
    assert!(listed.contains("docs") && !listed.contains("private"), "{listed}");
    let r = b.call("health", vec![]).unwrap();
    assert_eq!(r.uint("vectors").unwrap(), Some(1), "health counts only the caller's vectors");
    // acme's indices are untouched
    let r = a.call("get_index_status", vec![id("private")]).unwrap();
    assert_eq!(r.uint("ntotal").unwrap(), Some(4));
    let r = a.call("get_metadata", vec![id("docs"), ("ids", protocol::ints_value(&[2]))]).unwrap();
    assert!(format!("{r:?}").contains("a2"));
    let r = a.call("list_indices", vec![]).unwrap();
    let Some(Value::Array(list)) = r.get("indexes") else { panic!() };
    assert_eq!(list.len(), 2);
}

#[test]
fn serve_without_auth_uses_tenant_id() {
    let env = TestEnv::new("serve-tenant");
    let srv = Server::start(&env, &[]);
    let mut a = srv.client(None, Some("t1"));
    let mut b = srv.client(None, Some("t2"));
    let mut dflt = srv.client(None, None);
    a.create_index("docs", 4, "Flat", None).unwrap();
    assert_eq!(b.call("get_index_status", vec![id("docs")]).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(dflt.call("get_index_status", vec![id("docs")]).unwrap_err().kind(), ErrorKind::NotFound);
    b.create_index("docs", 8, "Flat", None).unwrap();
    assert_eq!(
        (
            a.get_index_status("docs").map(|s| s.dimension).unwrap(),
            b.get_index_status("docs").map(|s| s.dimension).unwrap()
        ),
        (4, 8)
    );
}

#[test]
fn serve_restores_everything_after_restart() {
    let env = TestEnv::new("serve-persist");
    let data = env.path("data");
    let data_s = data.display().to_string();
    let d = 8;
    let base = lcg_vectors(400, d, 3);
    let q = lcg_vectors(3, d, 4);
    let before;
    {
        let srv = Server::start(&env, &["--data-dir", &data_s, "--enable-auth", "--auth-keys", "k1:acme,k2:globex"]);
        let mut a = srv.client(Some("k1"), None);
        let mut b = srv.client(Some("k2"), None);
        a.create_index("ivf", d, "IVF4", None).unwrap();
        a.train("ivf", &base, d).unwrap();
        a.add_vectors("ivf", &base, d, None, Some((0..400).map(|i| Value::from(i * 2)).collect())).unwrap();
        a.call("set_parameter", vec![id("ivf"), ("parameter", s("nprobe")), ("value", Value::from(3))]).unwrap();
        a.create_index("base", d, "Flat", None).unwrap();
        a.create_index("idm", d, "IDMap2:base", None).unwrap();
        let ids: Vec<i64> = (0..400).map(|i| 1000 + i).collect();
        a.add_vectors("idm", &base, d, Some(&ids), None).unwrap();
        a.call("remove_ids", vec![id("idm"), ("ids", protocol::ints_value(&[1000, 1001]))]).unwrap();
        a.create_index("hnsw", d, "HNSW8", Some("ip")).unwrap();
        a.add_vectors("hnsw", &base, d, None, None).unwrap();
        a.call("set_parameter", vec![id("hnsw"), ("parameter", s("efSearch")), ("value", Value::from(77))]).unwrap();
        b.create_index("ivf", d, "Flat", None).unwrap();
        b.add_vectors("ivf", &base[..d], d, None, None).unwrap();
        // a checkpoint in the middle: later WAL records replay on top of it
        a.call("snapshot", vec![id("ivf")]).unwrap();
        a.add_vectors("ivf", &base[..10 * d], d, None, Some((0..10).map(|_| s("late")).collect())).unwrap();
        a.create_index("gone", d, "Flat", None).unwrap();
        a.call("delete_index", vec![id("gone")]).unwrap();
        before = a.search("ivf", &q, d, &knn(5), true).unwrap();
        srv.kill9(); // no clean shutdown: the WAL must carry the rest
    }
    let srv = Server::start(&env, &["--data-dir", &data_s, "--enable-auth", "--auth-keys", "k1:acme,k2:globex"]);
    let mut a = srv.client(Some("k1"), None);
    let mut b = srv.client(Some("k2"), None);
    let r = a.call("list_indices", vec![]).unwrap();
    let Some(Value::Array(list)) = r.get("indexes") else { panic!() };
    assert_eq!(list.len(), 4, "{r:?}");
    let st = a.call("get_index_status", vec![id("ivf")]).unwrap().map("status").unwrap().unwrap();
    assert_eq!(
        (st.uint("ntotal").unwrap(), st.uint("nprobe").unwrap(), st.flag("is_trained").unwrap()),
        (Some(410), Some(3), true)
    );
    let after = a.search("ivf", &q, d, &knn(5), true).unwrap();
    assert_eq!(before.0, after.0, "same neighbours after restart");
    assert_eq!(format!("{:?}", before.1), format!("{:?}", after.1), "same metadata after restart");
    let r = a.call("get_metadata", vec![id("ivf"), ("ids", protocol::ints_value(&[5, 405]))]).unwrap();
    assert_eq!(
        format!("{:?}", r.get("metadata")),
        format!("{:?}", Some(Value::Array(vec![Value::from(10), s("late")])))
    );
    let st = a.call("get_index_status", vec![id("idm")]).unwrap().map("status").unwrap().unwrap();
    assert_eq!((st.uint("ntotal").unwrap(), st.str("faiss_type").unwrap()), (Some(398), Some("IndexIDMap2")));
    let r = a.call("reconstruct", vec![id("idm"), ("id", Value::from(1399))]).unwrap();
    let Some(Value::Array(v)) = r.get("vector") else { panic!() };
    assert_eq!(v[0].as_f64().unwrap() as f32, base[399 * d]);
    let st = a.call("get_index_status", vec![id("hnsw")]).unwrap().map("status").unwrap().unwrap();
    assert_eq!((st.uint("efSearch").unwrap(), st.str("metric").unwrap()), (Some(77), Some("ip")));
    assert_eq!(a.call("get_index_status", vec![id("gone")]).unwrap_err().kind(), ErrorKind::NotFound);
    let st = b.call("get_index_status", vec![id("ivf")]).unwrap();
    assert_eq!(st.uint("ntotal").unwrap(), Some(1), "globex's ivf is its own");
    // a clean stop checkpoints and the next start still sees everything
    srv.stop();
    let srv = Server::start(&env, &["--data-dir", &data_s, "--enable-auth", "--auth-keys", "k1:acme"]);
    let mut a = srv.client(Some("k1"), None);
    assert_eq!(a.search("ivf", &q, d, &knn(5), false).unwrap().0, before.0);
}

#[test]
fn serve_kill9_loses_no_acknowledged_vector() {
    let env = TestEnv::new("serve-kill9");
    let data = env.path("data").display().to_string();
    let d = 16;
    let srv = Server::start(&env, &["--data-dir", &data]);
    let endpoint = srv.endpoint.clone();
    let mut c = srv.client(None, None);
    c.create_index("stream", d, "IDMap2:Flat", None).unwrap();
    // A stream of adds from another thread; kill -9 the server while it runs.
    let (tx, rx) = std::sync::mpsc::channel::<i64>();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(ClientConfig {
            server: endpoint,
            api_key: None,
            tenant: None,
            timeout: Duration::from_secs(3),
            server_public_key: None,
        })
        .unwrap();
        for batch in 0..100_000i64 {
            let ids: Vec<i64> = (0..8).map(|i| batch * 8 + i).collect();
            let x = lcg_vectors(8, d, batch as u64);
            match c.add_vectors("stream", &x, d, Some(&ids), None) {
                Ok(_) => {
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < 40 {
        acked.push(rx.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    srv.kill9();
    writer.join().unwrap();
    acked.extend(rx.try_iter());
    let last = *acked.iter().max().unwrap();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    let r = c.call("get_index_status", vec![id("stream")]).unwrap();
    let ntotal = r.uint("ntotal").unwrap().unwrap() as i64;
    assert!(ntotal >= (last + 1) * 8, "{ntotal} vectors after restart, but {} batches were acknowledged", last + 1);
    for batch in [0, last / 2, last] {
        let want = lcg_vectors(8, d, batch as u64);
        let r = c.call("reconstruct", vec![id("stream"), ("id", Value::from(batch * 8 + 7))]).unwrap();
        let Some(Value::Array(v)) = r.get("vector") else { panic!() };
        assert_eq!(v[0].as_f64().unwrap() as f32, want[7 * d], "batch {batch}");
    }
}

#[test]
fn query_remote_drives_a_server() {
    let env = TestEnv::new("serve-qr");
    let srv = Server::start(&env, &["--enable-auth", "--auth-keys", "k1:acme"]);
    let base = testdata("fashion-mnist/base5k.bvecs").display().to_string();
    let query = testdata("fashion-mnist/query200.bvecs").display().to_string();
    let qr = |args: &[&str]| -> String {
        let mut all = vec!["query-remote", "--server", &srv.endpoint, "--api-key", "k1"];
        all.extend_from_slice(args);
        env.ok(&all)
    };
    assert!(qr(&["ping"]).contains("pong"));
    qr(&["create", "docs", "--dimension", "784", "--index-type", "IVF16,Flat"]);
    let out = qr(&["train", "docs", &base]);
    assert!(out.contains("\"is_trained\":true"), "{out}");
    let md: String = (0..5000).map(|i| format!("{{\"row\":{i}}}\n")).collect();
    std::fs::write(env.path("md.jsonl"), md).unwrap();
    let out = qr(&["add", "docs", &base, "--batch", "1500", "--metadata", "md.jsonl", "-q"]);
    assert!(out.contains("\"ntotal\":5000"), "{out}");
    // same neighbours as a local build + search with the same factory and nprobe = nlist
    env.ok(&["build", &base, "-o", "local.index", "--factory", "Flat", "-q"]);
    let local = parse_jsonl(&env.ok(&["search", "local.index", &query, "-k", "5"]));
    let remote = parse_jsonl(&qr(&["search", "docs", &query, "-k", "5", "--nprobe", "16", "--format", "jsonl"]));
    assert_eq!(local.len(), 200);
    assert_eq!(local.iter().map(|r| &r.1).collect::<Vec<_>>(), remote.iter().map(|r| &r.1).collect::<Vec<_>>());
    qr(&["search", "docs", &query, "-k", "5", "--nprobe", "16", "--format", "npy", "-o", "hits.npy"]);
    assert!(env.path("hits.npy").exists() && env.path("hits.distances.npy").exists());
    // Text formats honour -o too (written atomically, nothing on stdout).
    let out = qr(&["search", "docs", &query, "-k", "5", "--nprobe", "16", "-o", "hits.jsonl"]);
    assert!(out.is_empty(), "{out}");
    let from_file = parse_jsonl(&std::fs::read_to_string(env.path("hits.jsonl")).unwrap());
    assert_eq!(from_file.iter().map(|r| &r.1).collect::<Vec<_>>(), remote.iter().map(|r| &r.1).collect::<Vec<_>>());
    let out = qr(&["search", "docs", &query, "-k", "2", "--nprobe", "16", "--include-metadata", "--format", "jsonl"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["metadata"][0]["row"], first["ids"][0]);
    let out = qr(&["range-search", "docs", &query, "--radius", "800000", "--format", "csv"]);
    assert!(out.starts_with("query,rank,id,distance"));
    let info: serde_json::Value = serde_json::from_str(&qr(&["info", "docs"])).unwrap();
    assert_eq!(info["status"]["ntotal"], 5000);
    assert_eq!(info["status"]["nlist"], 16);
    assert!(qr(&["list"]).contains("\"docs\""));
    assert!(qr(&["health"]).contains("\"vectors\":5000"));
    assert!(qr(&["metrics"]).contains("add_vectors"));
    assert!(qr(&["metadata", "docs", "7"]).contains("{\"row\":7}"));
    // The issue's flow: create an IVF index and add straight away; add trains it first.
    qr(&["create", "auto", "--dimension", "784", "--index-type", "IVF16,Flat"]);
    let out = qr(&["add", "auto", &base, "--train-size", "2000", "-q"]);
    assert!(out.contains("\"ntotal\":5000"), "{out}");
    let info: serde_json::Value = serde_json::from_str(&qr(&["info", "auto"])).unwrap();
    assert_eq!(info["status"]["is_trained"], true);
    qr(&["create", "flat", "-d", "784"]);
    qr(&["add", "flat", &base, "-q"]);
    let out = qr(&["reconstruct", "flat", "3"]);
    assert!(out.starts_with("{\"id\":3,\"vector\":["), "{out}");
    assert!(qr(&["remove", "flat", "0", "1", "2"]).contains("\"ntotal\":4997"));
    qr(&["delete", "flat"]);
    // errors are one line with the server's message
    let mut args = vec!["query-remote", "--server", &srv.endpoint, "--api-key", "k1", "info", "flat"];
    env.fails(&args, 2, "not found");
    args[4] = "wrong";
    env.fails(&args, 1, "Invalid API key");
    env.fails(
        &[
            "query-remote",
            "--server",
            &srv.endpoint,
            "--api-key",
            "k1",
            "create",
            "x",
            "-d",
            "4",
            "--index-type",
            "Bogus",
        ],
        2,
        "factory",
    );
    // FAISSX_* environment variables
    let out = env
        .cmd()
        .args(["query-remote", "list"])
        .env("FAISSX_SERVER", &srv.endpoint)
        .env("FAISSX_API_KEY", "k1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("docs"));
}

#[test]
fn query_remote_times_out_when_no_server() {
    let env = TestEnv::new("serve-down");
    // A port nobody listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("tcp://127.0.0.1:{port}");
    let t = std::time::Instant::now();
    env.fails(&["query-remote", "--server", &server, "--timeout", "0.5", "ping"], 1, "no reply from");
    assert!(t.elapsed() < Duration::from_secs(30), "query-remote hung");
    env.fails(&["query-remote", "--server", "http://x", "ping"], 2, "expected an endpoint");
}

#[test]
fn serve_flags_and_env() {
    let env = TestEnv::new("serve-flags");
    env.fails(&["serve", "--port", "0", "--enable-auth"], 2, "--auth-keys");
    env.fails(&["serve", "--port", "0", "--enable-auth", "--auth-keys", "k1"], 2, "KEY:TENANT");
    std::fs::write(env.path("keys.json"), r#"{"fk": "filetenant"}"#).unwrap();
    let mut cmd = env.cmd();
    cmd.args(["serve", "-q"])
        .env("FAISSX_PORT", "0")
        .env("FAISSX_BIND_ADDRESS", "127.0.0.1")
        .env("FAISSX_ENABLE_AUTH", "true")
        .env("FAISSX_AUTH_FILE", env.path("keys.json"));
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let srv = Server { child, endpoint: line.trim().to_string() };
    let mut c = srv.client(Some("fk"), None);
    c.create_index("a", 4, "Flat", None).unwrap();
    let mut bad = srv.client(Some("k1"), None);
    assert_eq!(bad.call("list_indices", vec![]).unwrap_err().kind(), ErrorKind::Auth);
    srv.stop();
}

#[test]
fn pipelined_requests_get_their_own_replies() {
    let env = TestEnv::new("serve-pipeline");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    let d = 8;
    let base = lcg_vectors(500, d, 7);
    c.create_index("p", d, "Flat", None).unwrap();
    c.add_vectors("p", &base, d, None, None).unwrap();
    // Every base vector is its own nearest neighbour; request 7 has the wrong width.
    let cfg = c.config().clone();
    let reqs: Vec<Vec<u8>> = (0..500)
        .map(|i| {
            let w = if i == 7 { d - 1 } else { d };
            cfg.search_request("p", &base[i * d..i * d + w], w, &knn(1), false)
        })
        .collect();
    let mut seen = vec![false; 500];
    c.pipeline(reqs, 16, |i, r, took| {
        assert!(!seen[i], "request {i} answered twice");
        seen[i] = true;
        assert!(took > Duration::ZERO);
        if i == 7 {
            assert_eq!(r.unwrap_err().kind(), ErrorKind::DimensionMismatch);
        } else {
            let (n, _) = faissx::engine::client::search_reply(r?, 1)?;
            assert_eq!(n.ids, vec![i as i64], "reply of request {i}");
        }
        Ok(())
    })
    .unwrap();
    assert!(seen.iter().all(|&b| b), "every request answered");
    // An error from the callback stops the pipeline; the connection stays usable.
    let e = c
        .pipeline((0..50).map(|_| c.config().request("ping", vec![])).collect::<Vec<_>>(), 8, |i, _, _| {
            if i == 3 {
                Err(faissx::engine::Error::invalid("stop here"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(e.to_string().contains("stop here"), "{e}");
    assert_eq!(c.ping().unwrap().str("message").unwrap(), Some("pong"));
}

#[test]
fn serve_debug_log_counts_rows_of_binary_payloads() {
    let env = TestEnv::new("serve-log");
    let mut cmd = env.cmd();
    cmd.args(["serve", "--bind-address", "127.0.0.1", "--port", "0", "--log-level", "DEBUG"]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let stderr = child.stderr.take().unwrap();
    let srv = Server { child, endpoint: line.trim().to_string() };
    let mut c = srv.client(None, None);
    let d = 4;
    c.create_index("lg", d, "Flat", None).unwrap();
    c.add_vectors("lg", &lcg_vectors(3, d, 1), d, None, None).unwrap();
    c.search("lg", &lcg_vectors(2, d, 2), d, &knn(5), false).unwrap();
    drop(c);
    drop(srv); // kills the server, closing its stderr
    let mut log = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut log).unwrap();
    assert!(log.contains("op=add_vectors nq=3 "), "{log}");
    assert!(log.contains("op=search nq=2 k=5 "), "{log}");
}
