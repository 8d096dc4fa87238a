//! Issue 15 end to end: `faissx serve --cluster` replicas with snapshots and staged imports
//! in a real S3 API (moto's server, tests/python/s3_server.py), the official FAISSx Python
//! client against a replica, and imports that replace an index on every replica.

use crate::cluster::{nats, nats_and_two, nats_cluster, seq_of, state_of, wait_applied, Replica, D};
use crate::object_store::S3;
use crate::serve::s;
use crate::util::*;
use faissx::engine::client::Client;
use faissx::engine::protocol::{Msg, Value};

/// Object-store credentials given to the replicas: distinctive, so that finding them in a
/// log is not a coincidence (moto accepts any).
const KEY_ID: &str = "AKIAFXCLUSTERTEST7Q2";
const SECRET: &str = "fxSecret/8c1f2e9d7a+MustNeverBeLogged";

/// The S3 server's variables with [`KEY_ID`] and [`SECRET`] as the keys.
fn s3_vars(s3: &S3) -> Vec<(String, String)> {
    s3.vars()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "AWS_ACCESS_KEY_ID" => (k, KEY_ID.to_string()),
            "AWS_SECRET_ACCESS_KEY" => (k, SECRET.to_string()),
            _ => (k, v),
        })
        .collect()
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The last JSON line of `s`.
fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

/// `faissx query-remote --server ENDPOINT ARGS...`.
fn remote<'a>(endpoint: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["query-remote", "--server", endpoint];
    v.extend_from_slice(args);
    v
}

/// The `cluster` part of `health`.
fn cluster_health(c: &mut Client) -> Msg {
    c.health().unwrap().map("cluster").unwrap().expect("health has a cluster part")
}

/// The last log sequence `c`'s replica applied.
fn applied_of(c: &mut Client) -> u64 {
    cluster_health(c).uint("applied_seq").unwrap().unwrap()
}

/// The generation of index `id`.
fn generation(c: &mut Client, id: &str) -> u64 {
    let r = c.call("get_index_status", vec![("index_id", s(id))]).unwrap();
    r.map("status").unwrap().unwrap().uint("generation").unwrap().unwrap()
}

/// [`state_of`] for every index of the restore test: an index with string ids is read by
/// its search reply's string ids and metadata (its integer ids are internal).
fn state(c: &mut Client, id: &str, q: &[f32], min_seq: u64) -> String {
    if id == "flat" {
        return state_of(c, id, q, min_seq);
    }
    let r = c.call("get_index_status", vec![("index_id", s(id)), ("min_seq", Value::from(min_seq))]).unwrap();
    assert!(r.uint("applied_seq").unwrap().unwrap() >= min_seq, "{r:?}");
    let st = c.get_index_status(id).unwrap();
    let r = c.search_filtered(id, q, D, &knn(10), true, None).unwrap();
    let keys = r.string_labels.unwrap_or_else(|| panic!("{id}: no string ids in the search reply"));
    let dist_bits: Vec<u32> = r.neighbors.dists.iter().map(|d| d.to_bits()).collect();
    format!("ntotal={} keys={keys:?} dists={dist_bits:?} md={:?}", st.ntotal, r.metadata)
}

/// `name.index` built locally with `faissx build` (Flat): `n` vectors (seed `seed`) with
/// string ids `<name>-<row>` and one metadata object per vector. Returns the vectors and ids.
fn build_keyed(env: &TestEnv, name: &str, n: usize, seed: u64) -> (Vec<f32>, Vec<String>) {
    let x = lcg_vectors(n, D, seed);
    write_npy_f32(&env.path(&format!("{name}.npy")), n, D, &x);
    let keys: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    std::fs::write(env.path(&format!("{name}_ids.txt")), keys.join("\n") + "\n").unwrap();
    let md: Vec<String> = (0..n).map(|i| format!("{{\"row\": {i}, \"tag\": \"t{}\"}}", i % 3)).collect();
    std::fs::write(env.path(&format!("{name}.jsonl")), md.join("\n") + "\n").unwrap();
    env.ok(&[
        "build",
        &format!("{name}.npy"),
        "-o",
        &format!("{name}.index"),
        "--factory",
        "Flat",
        "--ids",
        &format!("{name}_ids.txt"),
        "--metadata",
        &format!("{name}.jsonl"),
        "-q",
    ]);
    (x, keys)
}

/// Keys of the bucket `faissx` under `prefix`.
fn keys_under(s3: &S3, prefix: &str) -> Vec<String> {
    s3.ls("faissx").into_iter().map(|(k, _)| k).filter(|k| k.starts_with(prefix)).collect()
}

#[test]
fn s3_snapshots_restore_a_new_replica() {
    let env = TestEnv::new("cluster-s3-restore");
    let n = nats(&env);
    let s3 = S3::start(&env, &["faissx".to_string()]);
    let vars = s3_vars(&s3);
    let envs = refs(&vars);
    let snap = "s3://faissx/snap";
    let logs = [env.path("a.log"), env.path("b.log"), env.path("c.log")];
    // Replica a logs everything (DEBUG: the object store's and NATS's client libraries too).
    let a = Replica::start_logged(&env, &n.url(), snap, "a", &["--log-level", "DEBUG"], &envs, &logs[0]);
    let b = Replica::start_logged(&env, &n.url(), snap, "b", &["--log-level", "INFO"], &envs, &logs[1]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let base = lcg_vectors(300, D, 11);
    let q = lcg_vectors(5, D, 12);

    // Adds with metadata from both replicas; adds with string ids and metadata.
    ca.create_index("flat", D, "L2", None).unwrap();
    for (i, chunk) in base.chunks(100 * D).enumerate() {
        let md: Vec<Value> = (0..100).map(|j| Value::from(format!("v{}", i * 100 + j))).collect();
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        assert_eq!(c.add_vectors("flat", chunk, D, None, Some(md)).unwrap().count, 100);
    }
    cb.create_index("keyed", D, "IDMap2:Flat", None).unwrap();
    let keys: Vec<String> = (0..120).map(|i| format!("doc-{i}")).collect();
    let md: Vec<Value> = keys.iter().map(|k| Value::from(format!("md-{k}"))).collect();
    assert_eq!(cb.add_vectors_keyed("keyed", &base[..120 * D], D, &keys, Some(md)).unwrap().count, 120);

    // An index file built here, imported through replica a: it travels through the bucket.
    let (imp, imp_keys) = build_keyed(&env, "imp", 200, 13);
    let r = json(&env.ok(&remote(&a.endpoint, &["import", "imp", "imp.index"])));
    assert_eq!(
        (r["generation"].as_u64(), r["replaced"].as_bool(), r["ntotal"].as_u64()),
        (Some(1), Some(false), Some(200)),
        "{r}"
    );
    let staged = keys_under(&s3, "snap/imports/");
    let ends: Vec<&str> = staged.iter().map(|k| k.rsplit_once('/').unwrap().1).collect();
    assert!(ends.contains(&"index") && ends.contains(&"meta"), "no staged import in the bucket: {staged:?}");
    let folders: std::collections::BTreeSet<&str> = staged.iter().map(|k| k.rsplit_once('/').unwrap().0).collect();
    assert_eq!(folders.len(), 1, "one staged import: {staged:?}");

    let last = applied_of(&mut ca);
    let ids = ["flat", "imp", "keyed"];
    let sa: Vec<String> = ids.iter().map(|id| state(&mut ca, id, &q, last)).collect();
    let sb: Vec<String> = ids.iter().map(|id| state(&mut cb, id, &q, last)).collect();
    assert_eq!(sa, sb, "replicas diverged");
    assert!(sa[1].contains("ntotal=200"), "{}", sa[1]);
    // The import's string ids and metadata came along, the same on both.
    let mda = ca.get_metadata_keyed("imp", &imp_keys[..5]).unwrap();
    let mdb = cb.get_metadata_keyed("imp", &imp_keys[..5]).unwrap();
    assert_eq!(format!("{:?}", mda.get("metadata")), format!("{:?}", mdb.get("metadata")));
    match mda.get("metadata") {
        Some(Value::Array(v)) => {
            assert_eq!(v.len(), 5);
            assert!(v.iter().all(|m| *m != Value::Nil), "metadata missing: {v:?}");
            assert!(format!("{:?}", v[2]).contains("t2"), "{v:?}");
        }
        other => panic!("no metadata: {other:?}"),
    }
    assert_eq!((generation(&mut ca, "imp"), generation(&mut cb, "imp")), (1, 1));

    // A snapshot on request: every index at one sequence, the manifest last.
    let r = json(&env.ok(&remote(&a.endpoint, &["snapshot"])));
    let s1 = r["snapshot_seq"].as_u64().unwrap_or_else(|| panic!("no snapshot_seq: {r}"));
    assert!(s1 > last, "the snapshot is a record of its own: {s1} <= {last}");
    let f1 = format!("snap/{s1:020}/");
    let files: Vec<String> = keys_under(&s3, &f1).into_iter().map(|k| k[f1.len()..].to_string()).collect();
    for want in ["manifest.json", "0.index", "0.meta", "1.index", "1.meta", "2.index", "2.meta"] {
        assert!(files.iter().any(|f| f == want), "{f1}{want} missing: {files:?}");
    }
    s3.get("faissx", &format!("{f1}manifest.json"), &env.path("manifest.json"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(env.path("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["seq"].as_u64(), Some(s1), "{m}");
    assert_eq!(m["replica"], "a", "{m}");
    let listed: Vec<(&str, u64)> = m["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["generation"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, vec![("flat", 1), ("imp", 1), ("keyed", 1)], "{m}");

    // More writes, then a second snapshot through b: the log is trimmed below the first, and
    // the staged import (now in both snapshots) leaves the bucket.
    let more: Vec<String> = (0..10).map(|i| format!("imp-new-{i}")).collect();
    cb.add_vectors_keyed("imp", &imp[..10 * D], D, &more, None).unwrap();
    ca.remove_ids("flat", &[1, 2, 3]).unwrap();
    let r = cb.snapshot(None).unwrap();
    let s2 = r.uint("snapshot_seq").unwrap().unwrap();
    assert!(s2 > s1, "{r:?}");
    assert_eq!(n.stream_seqs().0, s1 + 1, "the log is trimmed below the older snapshot kept");
    assert!(keys_under(&s3, &format!("snap/{s2:020}/")).iter().any(|k| k.ends_with("/manifest.json")));
    assert!(keys_under(&s3, &format!("{f1}manifest.json")).len() == 1, "two snapshots are kept");
    assert_eq!(keys_under(&s3, "snap/imports/"), Vec::<String>::new(), "staged import left behind");

    // A replica started from nothing restores the newest snapshot from the bucket and
    // equals the others at once.
    let want: Vec<String> = ids.iter().map(|id| state(&mut ca, id, &q, s2)).collect();
    assert_eq!(want, ids.iter().map(|id| state(&mut cb, id, &q, s2)).collect::<Vec<_>>());
    assert!(want[1].contains("ntotal=210"), "{}", want[1]);
    let c = Replica::start_logged(&env, &n.url(), snap, "c", &["--log-level", "INFO"], &envs, &logs[2]);
    let mut cc = c.client();
    let sc: Vec<String> = ids.iter().map(|id| state(&mut cc, id, &q, 0)).collect();
    assert_eq!(sc, want, "the restored replica differs");
    let mdc = cc.get_metadata_keyed("imp", &imp_keys[..5]).unwrap();
    assert_eq!(format!("{:?}", mdc.get("metadata")), format!("{:?}", mda.get("metadata")));
    assert_eq!(generation(&mut cc, "imp"), 1);
    let clog = std::fs::read_to_string(&logs[2]).unwrap();
    assert!(clog.contains("restored snapshot") && clog.contains(&format!("seq={s2}")), "{clog}");
    // And it takes writes, which reach the others.
    let r = cc.call("add_vectors", vec![("index_id", s("flat")), ("vectors", crate::cluster::bin(&q))]).unwrap();
    let seq = seq_of(&r);
    assert_eq!(state_of(&mut ca, "flat", &q, seq), state_of(&mut cc, "flat", &q, seq));
    // Replica b killed and restarted: it restores the same snapshot and replays that write.
    let b = b.kill9_restart(&env);
    let mut cb = b.client();
    let now: Vec<String> = ids.iter().map(|id| state(&mut ca, id, &q, seq)).collect();
    assert_eq!(ids.iter().map(|id| state(&mut cb, id, &q, seq)).collect::<Vec<_>>(), now, "b after kill -9");

    // The object store's credentials never reach a replica's log, not even at DEBUG.
    drop((a, b, c));
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains(SECRET), "{}: the secret key is logged", log.display());
        assert!(!text.contains(KEY_ID), "{}: the access key id is logged", log.display());
    }
    let alog = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(alog.contains("DEBUG") && alog.contains("snapshot written"), "replica a's log is not verbose:\n{alog}");
    // ... and it shows the object store's traffic (the HTTP client's DEBUG events).
    assert!(alog.contains(&format!("127.0.0.1:{}", s3.port)), "no object-store traffic in replica a's log:\n{alog}");
}

#[test]
fn official_python_client_works_against_a_replica() {
    let env = TestEnv::new("cluster-python");
    let (_nats, a, b) = nats_and_two(&env, &[]);
    // FAISSx's own scenarios, through replica a: every write goes through the log.
    crate::serve_python::check_official_client(&a.endpoint);
    let (mut ca, mut cb) = (a.client(), b.client());
    let seq = applied_of(&mut ca);
    assert!(seq > 0, "nothing went through the log");
    wait_applied(&mut cb, seq);
    let (la, lb) = (ca.list_indices().unwrap(), cb.list_indices().unwrap());
    assert_eq!(format!("{:?}", la.get("indexes")), format!("{:?}", lb.get("indexes")), "replica b differs");
    let rows = match la.get("indexes") {
        Some(Value::Array(r)) => r.clone(),
        other => panic!("no indexes: {other:?}"),
    };
    let total: u64 =
        rows.iter().map(|r| Msg::from_value(r.clone()).unwrap().uint("vector_count").unwrap().unwrap_or(0)).sum();
    assert!(!rows.is_empty() && total > 0, "the client left nothing to compare: {rows:?}");
    // A record that failed, failed on both alike.
    let fa = cluster_health(&mut ca).uint("failed_records").unwrap();
    assert_eq!(fa, cluster_health(&mut cb).uint("failed_records").unwrap());
}

#[test]
fn import_replaces_an_index_on_every_replica() {
    let env = TestEnv::new("cluster-import-replace");
    // On a 3-node NATS cluster, the log and KV buckets replicated on all three.
    let nodes = nats_cluster(&env);
    let urls = nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
    let snap = format!("file://{}", env.path("snap").display());
    let opts = ["--cluster-replicas", "3"];
    let a = Replica::start(&env, &urls, &snap, "a", &opts, &[]);
    let b = Replica::start(&env, &urls, &snap, "b", &opts, &[]);
    let one = build_with_ids(&env, "one", 300, D, 1, 0);
    let two = build_with_ids(&env, "two", 300, D, 2, 100_000);
    let wide = lcg_vectors(50, 2 * D, 3);
    write_npy_f32(&env.path("wide.npy"), 50, 2 * D, &wide);
    env.ok(&["build", "wide.npy", "-o", "wide.index", "--factory", "Flat", "-q"]);
    let (ea, eb) = (a.endpoint.as_str(), b.endpoint.as_str());

    let r = json(&env.ok(&remote(ea, &["import", "docs", "one.index"])));
    assert_eq!((r["generation"].as_u64(), r["replaced"].as_bool()), (Some(1), Some(false)), "{r}");
    // Replaced through the other replica, at the generation it is at.
    let r = json(&env.ok(&remote(eb, &["import", "docs", "two.index", "--if-generation", "1"])));
    assert_eq!(
        (r["generation"].as_u64(), r["replaced"].as_bool(), r["ntotal"].as_u64()),
        (Some(2), Some(true), Some(300)),
        "{r}"
    );
    // Stale generations and a new name's 0: CONFLICT, through either replica, nothing changed.
    env.fails(&remote(ea, &["import", "docs", "one.index", "--if-generation", "1"]), 1, "generation 2, not 1");
    env.fails(&remote(eb, &["import", "docs", "one.index", "--if-generation", "0"]), 1, "generation 2, not 0");
    let r = json(&env.ok(&remote(eb, &["import", "fresh", "one.index", "--if-generation", "0"])));
    assert_eq!(r["generation"].as_u64(), Some(1), "{r}");
    // Another shape does not replace it.
    env.fails(&remote(ea, &["import", "docs", "wide.index"]), 2, "delete the index first");

    let (mut ca, mut cb) = (a.client(), b.client());
    let last = applied_of(&mut ca).max(applied_of(&mut cb));
    let q: Vec<f32> = two[..3 * D].iter().chain(&one[..2 * D]).copied().collect();
    for id in ["docs", "fresh"] {
        assert_eq!(state_of(&mut ca, id, &q, last), state_of(&mut cb, id, &q, last), "{id} differs");
    }
    for c in [&mut ca, &mut cb] {
        assert_eq!((generation(c, "docs"), generation(c, "fresh")), (2, 1));
        let (nb, _) = c.search("docs", &q[..], D, &knn(1), false).unwrap();
        assert_eq!(nb.ids[..3], [100_000, 100_001, 100_002], "docs holds two.index");
        let (nb, _) = c.search("fresh", &q[3 * D..], D, &knn(1), false).unwrap();
        assert_eq!(nb.ids, vec![0, 1], "fresh holds one.index");
        // The three refused imports were refused by every replica alike.
        assert_eq!(cluster_health(c).uint("failed_records").unwrap(), Some(3));
    }
}
