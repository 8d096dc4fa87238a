//! Filtered search and string ids on `faissx serve` (issue 14): `filter` on search,
//! range_search and hybrid_search (and FAISSx's `metadata_filter`) equals a brute-force
//! filtered answer on a Flat index; bad filters are INVALID_ARGUMENT and change nothing;
//! string ids go through add → search → get_metadata → restart → `kill -9`; tenants do not
//! see each other's metadata or ids; `query-remote search --filter` end to end.

use crate::serve::{id, s, vecs, Server};
use crate::util::*;
use faissx::engine::client::Client;
use faissx::engine::protocol::json::from_json;
use faissx::engine::protocol::{Encoding, Msg, Value};
use faissx::engine::ErrorKind;

const D: usize = 8;
const N: usize = 300;

/// Row `i`'s metadata.
fn meta(i: usize) -> serde_json::Value {
    let tags: Vec<&str> =
        ["rust", "faiss", "go"].iter().enumerate().filter(|(t, _)| (i + t).is_multiple_of(4)).map(|p| *p.1).collect();
    let cat = ["A", "B", "C"][i % 3];
    serde_json::json!({"cat": cat, "year": 2000 + (i % 25) as i64, "tags": tags})
}

/// Whether row `i` matches filter number `f` of [`FILTERS`], evaluated here by hand.
fn matches(f: usize, i: usize) -> bool {
    let m = meta(i);
    let (cat, year) = (m["cat"].as_str().unwrap(), m["year"].as_i64().unwrap());
    let tags: Vec<&str> = m["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    match f {
        0 => cat == "A",
        1 => year >= 2015 && cat != "B",
        2 => cat == "C" || year < 2003,
        3 => tags.contains(&"rust"),
        4 => year == 2007 && cat == "B", // few matches: fewer than k
        _ => unreachable!(),
    }
}

const FILTERS: [&str; 5] = [
    r#"{"cat": "A"}"#,
    r#"{"year": {"$gte": 2015}, "cat": {"$ne": "B"}}"#,
    r#"{"$or": [{"cat": "C"}, {"year": {"$lt": 2003}}]}"#,
    r#"{"tags": {"$in": ["rust"]}}"#,
    r#"{"$and": [{"year": 2007}, {"cat": {"$eq": "B"}}]}"#,
];

fn filter_value(text: &str) -> Value {
    from_json(&serde_json::from_str(text).unwrap())
}

fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The exact filtered k-NN of every query: ids, nearest first, -1 past the matches.
fn brute(base: &[f32], q: &[f32], k: usize, keep: impl Fn(usize) -> bool) -> Vec<Vec<i64>> {
    q.chunks(D)
        .map(|qv| {
            let mut c: Vec<(f32, i64)> = (0..base.len() / D)
                .filter(|&i| keep(i))
                .map(|i| (dist(&base[i * D..(i + 1) * D], qv), i as i64))
                .collect();
            c.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let mut ids: Vec<i64> = c.iter().take(k).map(|p| p.1).collect();
            ids.resize(k, -1);
            ids
        })
        .collect()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    let Value::Map(m) = v else { panic!("not a map: {v:?}") };
    &m.iter().find(|(k, _)| k.as_str() == Some(key)).unwrap_or_else(|| panic!("no {key} in {v:?}")).1
}

fn ints(v: &Value) -> Vec<i64> {
    let Value::Array(a) = v else { panic!("not an array: {v:?}") };
    a.iter().map(|x| x.as_i64().unwrap()).collect()
}

fn strs(v: &Value) -> Vec<Option<String>> {
    let Value::Array(a) = v else { panic!("not an array: {v:?}") };
    a.iter().map(|x| x.as_str().map(str::to_string)).collect()
}

fn results(r: &Msg, key: &str) -> Vec<Value> {
    let Some(Value::Array(res)) = r.get("results") else { panic!("no results in {r:?}") };
    res.iter().map(|x| field(x, key).clone()).collect()
}

/// Create a Flat index `name` of N rows with [`meta`] metadata; returns the rows.
fn filled(c: &mut Client, name: &str) -> Vec<f32> {
    let base = lcg_vectors(N, D, 7);
    c.create_index(name, D, "L2", None).unwrap();
    let md: Vec<Value> = (0..N).map(|i| from_json(&meta(i))).collect();
    c.add_vectors(name, &base, D, None, Some(md)).unwrap();
    base
}

fn status_ntotal(c: &mut Client, name: &str) -> u64 {
    c.get_index_status(name).unwrap().ntotal
}

#[test]
fn serve_filter_equals_brute_force_on_flat() {
    let env = TestEnv::new("sf-brute");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    let base = filled(&mut c, "f");
    let q = lcg_vectors(6, D, 8);
    let k = 10;
    for (fi, text) in FILTERS.iter().enumerate() {
        let want = brute(&base, &q, k, |i| matches(fi, i));
        let fv = filter_value(text);
        // Binary replies through the typed client.
        let rep = c.search_filtered("f", &q, D, &knn(k), true, Some(&fv)).unwrap();
        let got: Vec<Vec<i64>> = rep.neighbors.ids.chunks(k).map(<[i64]>::to_vec).collect();
        assert_eq!(got, want, "filter {text}");
        let (path, n) = rep.filter.clone().expect("filter_path and filter_matches in the reply");
        assert_eq!(n as usize, (0..N).filter(|&i| matches(fi, i)).count(), "{text}");
        assert!(["selector", "exact"].contains(&path.as_str()), "{path}");
        // Each hit's metadata satisfies the filter.
        for (qi, row) in rep.metadata.unwrap().iter().enumerate() {
            let Value::Array(row) = row else { panic!() };
            for (r, m) in row.iter().enumerate() {
                if want[qi][r] >= 0 {
                    assert_eq!(faissx::engine::protocol::json::to_json(m), meta(want[qi][r] as usize));
                }
            }
        }
        // Nested replies: search, and hybrid_search with FAISSx's metadata_filter.
        let mut nested = vec![id("f"), ("query_vectors", vecs(&q, D, Encoding::Nested)), ("k", Value::from(k as u64))];
        let r = c.call("search", [nested.clone(), vec![("filter", fv.clone())]].concat()).unwrap();
        assert_eq!(results(&r, "indices").iter().map(ints).collect::<Vec<_>>(), want, "nested {text}");
        nested.push(("metadata_filter", fv.clone()));
        nested.push(("vector_weight", Value::F64(0.5)));
        let r = c.call("hybrid_search", nested).unwrap();
        assert_eq!(results(&r, "indices").iter().map(ints).collect::<Vec<_>>(), want, "hybrid {text}");
        assert!(r.str("filter_path").unwrap().is_some());
        // Range search: every matching vector within the radius (as a set per query).
        let radius = {
            let mut all: Vec<f32> = (0..N).map(|i| dist(&base[i * D..(i + 1) * D], &q[..D])).collect();
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            all[N / 3]
        };
        let r = c
            .call(
                "range_search",
                vec![
                    id("f"),
                    ("query_vectors", vecs(&q, D, Encoding::Binary)),
                    ("radius", Value::F64(radius as f64)),
                    ("filter", fv.clone()),
                ],
            )
            .unwrap();
        for (qi, hits) in results(&r, "indices").iter().enumerate() {
            let mut got = ints(hits);
            got.sort_unstable();
            let qv = &q[qi * D..(qi + 1) * D];
            let want: Vec<i64> = (0..N)
                .filter(|&i| matches(fi, i) && dist(&base[i * D..(i + 1) * D], qv) < radius)
                .map(|i| i as i64)
                .collect();
            // Vectors within a rounding error of the radius may go either way.
            let borderline = |i: i64| {
                (dist(&base[i as usize * D..(i as usize + 1) * D], qv) - radius).abs() < 1e-4 * radius.max(1.0)
            };
            let a: Vec<i64> = got.iter().copied().filter(|&i| !borderline(i)).collect();
            let b: Vec<i64> = want.iter().copied().filter(|&i| !borderline(i)).collect();
            assert_eq!(a, b, "range {text} query {qi}");
            assert!(got.iter().all(|&i| matches(fi, i as usize)));
        }
    }
    // Both filters of a hybrid search must match.
    let r = c
        .call(
            "hybrid_search",
            vec![
                id("f"),
                ("query_vectors", vecs(&q, D, Encoding::Nested)),
                ("k", Value::from(k as u64)),
                ("filter", filter_value(FILTERS[0])),
                ("metadata_filter", filter_value(FILTERS[3])),
            ],
        )
        .unwrap();
    let want = brute(&base, &q, k, |i| matches(0, i) && matches(3, i));
    assert_eq!(results(&r, "indices").iter().map(ints).collect::<Vec<_>>(), want);
}

#[test]
fn serve_bad_filters_are_invalid_and_change_nothing() {
    let env = TestEnv::new("sf-bad");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    filled(&mut c, "f");
    c.create_index("plain", D, "L2", None).unwrap();
    c.add_vectors("plain", &lcg_vectors(20, D, 3), D, None, None).unwrap();
    let q = lcg_vectors(2, D, 9);
    let before = c.search_filtered("f", &q, D, &knn(5), false, None).unwrap();
    for (index, filter, needle) in [
        ("f", filter_value(r#"{"year": {"$gt": "x"}}"#), "year"),
        ("f", filter_value(r#"{"colour": "red"}"#), "colour"),
        ("f", filter_value(r#"{"year": {"$bogus": 1}}"#), "$bogus"),
        ("f", filter_value(r#"{"$or": {"cat": "A"}}"#), "$or"),
        ("f", s("cat"), "map"),
        ("plain", filter_value(r#"{"cat": "A"}"#), "no per-vector metadata"),
    ] {
        for action in ["search", "range_search", "hybrid_search"] {
            let mut f = vec![id(index), ("query_vectors", vecs(&q, D, Encoding::Binary)), ("filter", filter.clone())];
            if action == "range_search" {
                f.push(("radius", Value::F64(1.0)));
            }
            let e = c.call(action, f).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{action} {filter:?}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(needle) && !msg.contains('\n'), "{action}: {msg}");
        }
    }
    assert_eq!(status_ntotal(&mut c, "f"), N as u64);
    assert_eq!(status_ntotal(&mut c, "plain"), 20);
    let after = c.search_filtered("f", &q, D, &knn(5), false, None).unwrap();
    assert_eq!(after.neighbors, before.neighbors);
    assert!(after.filter.is_none());
}

#[test]
fn serve_tenants_do_not_see_each_others_metadata_or_ids() {
    let env = TestEnv::new("sf-tenants");
    let srv = Server::start(&env, &["--enable-auth", "--auth-keys", "k1:acme,k2:globex"]);
    let x = lcg_vectors(4, D, 11);
    let keys = |p: &str| (0..4).map(|i| format!("{p}-{i}")).collect::<Vec<String>>();
    for (key, owner) in [("k1", "acme"), ("k2", "globex")] {
        let mut c = srv.client(Some(key), None);
        c.create_index("shared", D, "L2", None).unwrap();
        let md = (0..4).map(|i| from_json(&serde_json::json!({"owner": owner, "i": i}))).collect();
        c.add_vectors_keyed("shared", &x, D, &keys(owner), Some(md)).unwrap();
    }
    for (key, owner, other) in [("k1", "acme", "globex"), ("k2", "globex", "acme")] {
        let mut c = srv.client(Some(key), None);
        let p = knn(4);
        let mine = c
            .search_filtered("shared", &x, D, &p, false, Some(&filter_value(&format!(r#"{{"owner": "{owner}"}}"#))))
            .unwrap();
        assert_eq!(mine.filter.as_ref().unwrap().1, 4);
        let labels = mine.string_labels.unwrap();
        assert!(labels.iter().all(|l| l.as_deref().is_some_and(|l| l.starts_with(owner))), "{labels:?}");
        let theirs = c
            .search_filtered("shared", &x, D, &p, false, Some(&filter_value(&format!(r#"{{"owner": "{other}"}}"#))))
            .unwrap();
        assert_eq!(theirs.filter.unwrap(), ("empty".to_string(), 0));
        assert!(theirs.neighbors.ids.iter().all(|&i| i == -1));
        let r = c.get_metadata_keyed("shared", &[format!("{owner}-1"), format!("{other}-1")]).unwrap();
        let Some(Value::Array(md)) = r.get("metadata") else { panic!() };
        assert_eq!(faissx::engine::protocol::json::to_json(&md[0]), serde_json::json!({"owner": owner, "i": 1}));
        assert_eq!(md[1], Value::Nil, "{owner} sees {other}'s id");
    }
}

/// Search `name` for `q` (nested reply): the string ids of each query's hits.
fn keyed_hits(c: &mut Client, name: &str, q: &[f32], k: usize) -> Vec<Vec<Option<String>>> {
    let r = c
        .call("search", vec![id(name), ("query_vectors", vecs(q, D, Encoding::Nested)), ("k", Value::from(k as u64))])
        .unwrap();
    results(&r, "indices").iter().map(strs).collect()
}

fn md_of(c: &mut Client, name: &str, keys: &[&str]) -> Vec<serde_json::Value> {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let r = c.get_metadata_keyed(name, &keys).unwrap();
    let Some(Value::Array(md)) = r.get("metadata") else { panic!("{r:?}") };
    md.iter().map(faissx::engine::protocol::json::to_json).collect()
}

fn reconstruct_key(c: &mut Client, name: &str, key: &str) -> Vec<f32> {
    let r = c.call("reconstruct", vec![id(name), ("id", s(key))]).unwrap();
    let Some(Value::Array(v)) = r.get("vector") else { panic!("{r:?}") };
    v.iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn serve_string_ids_survive_restart_and_kill9() {
    let env = TestEnv::new("sf-keys");
    let data = env.path("data").display().to_string();
    let base = lcg_vectors(60, D, 21);
    let key = |i: usize| format!("doc-{i}");
    let keys = |r: std::ops::Range<usize>| r.map(key).collect::<Vec<String>>();
    let mds = |r: std::ops::Range<usize>| {
        r.map(|i| from_json(&serde_json::json!({"n": i, "even": i.is_multiple_of(2)}))).collect::<Vec<_>>()
    };
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    // A Flat index (ids are positions) and an IDMap2 one (ids stored).
    c.create_index("flat", D, "L2", None).unwrap();
    c.create_index("map", D, "IDMap2:Flat", None).unwrap();
    for name in ["flat", "map"] {
        c.add_vectors_keyed(name, &base[..40 * D], D, &keys(0..40), Some(mds(0..40))).unwrap();
        // The nearest vector to row 7 is row 7, shown by its string id.
        assert_eq!(keyed_hits(&mut c, name, &base[7 * D..8 * D], 1), vec![vec![Some(key(7))]], "{name}");
        assert_eq!(
            md_of(&mut c, name, &["doc-7", "nope"]),
            vec![serde_json::json!({"n": 7, "even": false}), serde_json::Value::Null]
        );
        assert_eq!(reconstruct_key(&mut c, name, "doc-7"), base[7 * D..8 * D].to_vec());
        // Binary replies carry the strings beside the int64 labels.
        let rep = c
            .search_filtered(name, &base[..2 * D], D, &knn(1), false, Some(&filter_value(r#"{"even": true}"#)))
            .unwrap();
        assert_eq!(rep.string_labels.unwrap(), vec![Some(key(0)), nearest_even(&base, 1)], "{name}");
        // Refused, and nothing changes: a duplicate, integer ids, a reused id, no ids.
        let x1 = &base[40 * D..41 * D];
        for (what, fields) in [
            ("duplicate", vec![("ids", Value::Array(vec![s("n1"), s("n1")]))]),
            ("existing", vec![("ids", Value::Array(vec![s("doc-3")]))]),
            ("integers", vec![("ids", Value::Array(vec![Value::from(99)]))]),
            ("none", vec![]),
        ] {
            let x = if what == "duplicate" { [x1, x1].concat() } else { x1.to_vec() };
            let f = [vec![id(name), ("vectors", vecs(&x, D, Encoding::Binary))], fields].concat();
            let e = c.call("add_vectors", f).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name} {what}: {e}");
        }
        assert_eq!(status_ntotal(&mut c, name), 40);
        // Integer ids where strings are expected.
        let e = c.get_metadata(name, &[7]).unwrap_err();
        assert!(e.to_string().contains("string ids"), "{e}");
        // Removing doc-0 moves the Flat index's later positions down; string ids follow.
        let r = c.call("remove_ids", vec![id(name), ("ids", Value::Array(vec![s("doc-0"), s("never")]))]).unwrap();
        assert_eq!(r.uint("removed").unwrap(), Some(1));
        assert_eq!(keyed_hits(&mut c, name, &base[5 * D..6 * D], 1), vec![vec![Some(key(5))]], "{name} after remove");
    }
    // Clean restart: checkpoint.
    srv.stop();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    for name in ["flat", "map"] {
        assert_eq!(keyed_hits(&mut c, name, &base[9 * D..10 * D], 1), vec![vec![Some(key(9))]], "{name} after restart");
        assert_eq!(
            md_of(&mut c, name, &["doc-9", "doc-0"]),
            vec![serde_json::json!({"n": 9, "even": false}), serde_json::Value::Null]
        );
        // An acknowledged add, then kill -9: the WAL keeps the vectors, ids and metadata.
        c.add_vectors_keyed(name, &base[40 * D..], D, &keys(40..60), Some(mds(40..60))).unwrap();
    }
    srv.kill9();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    for name in ["flat", "map"] {
        assert_eq!(status_ntotal(&mut c, name), 59, "{name}");
        assert_eq!(
            keyed_hits(&mut c, name, &base[55 * D..56 * D], 1),
            vec![vec![Some(key(55))]],
            "{name} after kill -9"
        );
        assert_eq!(
            keyed_hits(&mut c, name, &base[12 * D..13 * D], 1),
            vec![vec![Some(key(12))]],
            "{name} after kill -9"
        );
        assert_eq!(
            md_of(&mut c, name, &["doc-55", "doc-12"]),
            vec![serde_json::json!({"n": 55, "even": false}), serde_json::json!({"n": 12, "even": true})]
        );
        assert_eq!(reconstruct_key(&mut c, name, "doc-58"), base[58 * D..59 * D].to_vec());
        // New ids keep coming after a restart, never reusing a live one.
        c.add_vectors_keyed(name, &base[..D], D, &["again".to_string()], None).unwrap();
        assert_eq!(keyed_hits(&mut c, name, &base[..D], 1), vec![vec![Some("again".to_string())]], "{name}");
        assert_eq!(keyed_hits(&mut c, name, &base[41 * D..42 * D], 1), vec![vec![Some(key(41))]], "{name}");
    }
}

/// The string id of the even row of the first 40 nearest to row `row`.
fn nearest_even(base: &[f32], row: usize) -> Option<String> {
    let q = &base[row * D..(row + 1) * D];
    let d = |i: usize| dist(&base[i * D..(i + 1) * D], q);
    (0..40)
        .filter(|i: &usize| i.is_multiple_of(2))
        .min_by(|&a, &b| d(a).partial_cmp(&d(b)).unwrap())
        .map(|i| format!("doc-{i}"))
}

#[test]
fn query_remote_search_with_filter_and_string_ids() {
    let env = TestEnv::new("sf-qr");
    let srv = Server::start(&env, &[]);
    let n = 200;
    let base = lcg_vectors(n, D, 31);
    write_npy_f32(&env.path("base.npy"), n, D, &base);
    write_npy_f32(&env.path("q.npy"), 4, D, &lcg_vectors(4, D, 32));
    let ids: String = (0..n).map(|i| format!("item-{i}\n")).collect();
    std::fs::write(env.path("ids.txt"), ids).unwrap();
    let md: String = (0..n).map(|i| format!("{}\n", meta(i))).collect();
    std::fs::write(env.path("md.jsonl"), md).unwrap();
    let qr = |args: &[&str]| -> String {
        let mut all = vec!["query-remote", "--server", &srv.endpoint];
        all.extend_from_slice(args);
        env.ok(&all)
    };
    qr(&["create", "docs", "-d", "8"]);
    let out = qr(&["add", "docs", "base.npy", "--ids", "ids.txt", "--metadata", "md.jsonl", "--batch", "64", "-q"]);
    assert!(out.contains("\"ntotal\":200"), "{out}");
    let filter = r#"{"tags": {"$in": ["rust"]}}"#;
    let out =
        qr(&["search", "docs", "q.npy", "-k", "10", "--filter", filter, "--include-metadata", "--format", "jsonl"]);
    let q = lcg_vectors(4, D, 32);
    let want = brute(&base, &q, 10, |i| matches(3, i));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (qi, rec) in lines.iter().enumerate() {
        let got: Vec<String> = rec["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(got, want[qi].iter().map(|&i| format!("item-{i}")).collect::<Vec<_>>(), "query {qi}");
        for m in rec["metadata"].as_array().unwrap() {
            assert!(m["tags"].as_array().unwrap().contains(&serde_json::json!("rust")), "{m}");
        }
    }
    // CSV shows the string ids too.
    let out = qr(&["search", "docs", "q.npy", "-k", "3", "--filter", r#"{"cat": "B"}"#, "--format", "csv"]);
    let want = brute(&base, &q, 3, |i| i % 3 == 1);
    assert!(out.starts_with("query,rank,id,distance\n"), "{out}");
    assert_eq!(out.lines().nth(1).unwrap().split(',').nth(2).unwrap(), format!("item-{}", want[0][0]));
    // A bad filter is a usage error before anything is sent; an unknown field is the server's.
    env.fails(
        &[
            "query-remote",
            "--server",
            &srv.endpoint,
            "search",
            "docs",
            "q.npy",
            "--filter",
            r#"{"year": {"$bogus": 1}}"#,
        ],
        2,
        "$bogus",
    );
    env.fails(
        &["query-remote", "--server", &srv.endpoint, "search", "docs", "q.npy", "--filter", r#"{"colour": "red"}"#],
        2,
        "colour",
    );
    assert!(qr(&["info", "docs"]).contains("\"ntotal\":200"));
}
