//! From index file to live server and back (issue 12): `query-remote import` of a built index
//! into a new name and over a served one while searches run, `--if-generation`, interrupted
//! and corrupted uploads, `--server-path` and `--import-dir`, `serve --index` (also after the
//! file is replaced), export and `export --all`/`import --all`, and durability of an
//! acknowledged import across restart and `kill -9`.

use crate::serve::Server;
use crate::util::*;
use faissx::engine::protocol::Value;
use faissx::engine::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const D: usize = 16;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

fn remote<'a>(srv: &'a Server, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["query-remote", "--server", srv.endpoint.as_str()];
    v.extend_from_slice(args);
    v
}

/// Top-1 ids of the queries, through the server.
fn top1(srv: &Server, id: &str, q: &[f32]) -> Vec<i64> {
    let mut c = srv.client(None, None);
    let (n, _) = c.search(id, q, D, &knn(1), false).unwrap();
    n.ids
}

/// Files left in the server's spool (`DATA/.tmp`, recursively).
fn spooled(data: &Path) -> usize {
    fn count(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    count(&data.join(".tmp"))
}

#[test]
fn import_swaps_atomically_while_searches_run() {
    let env = TestEnv::new("import-swap");
    let a = build_with_ids(&env, "a", 500, D, 1, 0);
    let b = build_with_ids(&env, "b", 500, D, 2, 100_000);
    let srv = Server::start(&env, &["--data-dir", "data"]);
    // A new name, then the same name again (a swap), alternately, under a search load.
    let r = json(&env.ok(&remote(&srv, &["import", "docs", "a.index"])));
    assert_eq!(
        (r["generation"].as_u64(), r["replaced"].as_bool(), r["ntotal"].as_u64()),
        (Some(1), Some(false), Some(500))
    );
    assert!(r["checksum"].as_str().unwrap().starts_with("crc32:"));
    let q: Vec<f32> = a[..4 * D].iter().chain(&b[..4 * D]).copied().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, q) = (stop.clone(), q.clone());
        let mut c = srv.client(None, None);
        std::thread::spawn(move || {
            let (mut answered, mut versions) = (0, std::collections::BTreeSet::new());
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (n, _) = c.search("docs", &q[..], D, &knn(1), false).expect("every search is answered");
                // Each answer comes whole from one version: ids < 100000 (a) or >= (b).
                let old = n.ids.iter().filter(|&&i| i < 100_000).count();
                assert!(old == 0 || old == n.ids.len(), "a search mixed two versions: {:?}", n.ids);
                versions.insert(old == 0);
                answered += 1;
            }
            (answered, versions)
        })
    };
    for (i, file) in ["b.index", "a.index", "b.index"].iter().enumerate() {
        let r = json(&env.ok(&remote(&srv, &["import", "docs", file])));
        assert_eq!(r["generation"].as_u64(), Some(i as u64 + 2));
        assert_eq!(r["replaced"].as_bool(), Some(true));
    }
    stop.store(true, Ordering::Relaxed);
    let (answered, versions) = load.join().unwrap();
    assert!(answered > 0);
    assert!(versions.contains(&true), "searches saw the new version");
    // After the last swap: b's own vectors find themselves.
    assert_eq!(top1(&srv, "docs", &b[..4 * D]), vec![100_000, 100_001, 100_002, 100_003]);
    let st = srv.client(None, None).call("get_index_status", vec![("index_id", Value::from("docs"))]).unwrap();
    let st = st.map("status").unwrap().unwrap();
    assert_eq!(st.uint("generation").unwrap(), Some(4));
    assert_eq!(spooled(&env.path("data")), 0, "no spooled file is left behind");

    // --if-generation: the current one swaps, a stale one is a CONFLICT and changes nothing.
    env.fails(&remote(&srv, &["import", "docs", "a.index", "--if-generation", "3"]), 1, "generation 4, not 3");
    env.fails(&remote(&srv, &["import", "new", "a.index", "--if-generation", "1"]), 1, "generation 0, not 1");
    assert_eq!(top1(&srv, "docs", &b[..D]), vec![100_000]);
    let r = json(&env.ok(&remote(&srv, &["import", "docs", "a.index", "--if-generation", "4"])));
    assert_eq!(r["generation"].as_u64(), Some(5));

    // Acknowledged imports survive a restart and kill -9.
    srv.kill9();
    let srv = Server::start(&env, &["--data-dir", "data"]);
    assert_eq!(top1(&srv, "docs", &a[..2 * D]), vec![0, 1]);
    let st = srv.client(None, None).call("get_index_status", vec![("index_id", Value::from("docs"))]).unwrap();
    assert_eq!(st.map("status").unwrap().unwrap().uint("generation").unwrap(), Some(5));
    env.ok(&remote(&srv, &["import", "docs", "b.index"]));
    srv.stop();
    let srv = Server::start(&env, &["--data-dir", "data"]);
    assert_eq!(top1(&srv, "docs", &b[..D]), vec![100_000]);
}

#[test]
fn bad_uploads_leave_the_old_index_serving_and_nothing_behind() {
    let env = TestEnv::new("import-bad");
    let a = build_with_ids(&env, "a", 300, D, 3, 0);
    std::fs::write(env.path("junk.index"), vec![7u8; 4096]).unwrap();
    let srv = Server::start(&env, &["--data-dir", "data", "--transfer-timeout", "1"]);
    env.ok(&remote(&srv, &["import", "docs", "a.index"]));
    // A file FAISS cannot read.
    env.fails(&remote(&srv, &["import", "docs", "junk.index"]), 2, "imported file");
    // Another shape (metric) than the served index.
    env.ok(&["build", "a.npy", "-o", "wide.index", "--factory", "Flat", "-q", "--metric", "ip"]);
    env.fails(&remote(&srv, &["import", "docs", "wide.index"]), 2, "delete the index first");
    assert_eq!(top1(&srv, "docs", &a[..D]), vec![0]);

    // A corrupted chunk is refused (and may be sent again); chunks out of order are refused.
    let mut c = srv.client(None, None);
    let up = c.call("upload_begin", vec![]).unwrap();
    let uid = up.str("upload_id").unwrap().unwrap().to_string();
    let bytes = std::fs::read(env.path("a.index")).unwrap();
    let chunk = |off: usize, data: &[u8], crc: u32| {
        vec![
            ("upload_id", Value::from(uid.as_str())),
            ("part", Value::from("index")),
            ("offset", Value::from(off as u64)),
            ("crc32", Value::from(u64::from(crc))),
            ("data", Value::Binary(data.to_vec())),
        ]
    };
    let half = bytes.len() / 2;
    let e = c.call("upload_chunk", chunk(0, &bytes[..half], crc32fast::hash(&bytes[..half]) ^ 1)).unwrap_err();
    assert!(e.to_string().contains("corrupted in transit"), "{e}");
    let e = c.call("upload_chunk", chunk(half, &bytes[half..], crc32fast::hash(&bytes[half..]))).unwrap_err();
    assert!(e.to_string().contains("in order"), "{e}");
    c.call("upload_chunk", chunk(0, &bytes[..half], crc32fast::hash(&bytes[..half]))).unwrap();
    // Another tenant cannot see, feed or import this upload.
    let mut other = srv.client(None, Some("other"));
    let e = other.call("import_index", vec![("index_id", Value::from("x")), ("upload_id", Value::from(uid.as_str()))]);
    assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
    // Interrupted: the client goes away. The upload times out with its files; the old index
    // serves on.
    assert_eq!(c.call("health", vec![]).unwrap().uint("transfers").unwrap(), Some(1));
    assert!(spooled(&env.path("data")) > 0);
    let mut gone = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if c.call("health", vec![]).unwrap().uint("transfers").unwrap() == Some(0) && spooled(&env.path("data")) == 0 {
            gone = true;
            break;
        }
    }
    assert!(gone, "an idle upload is dropped with its files");
    let e = c.call("upload_chunk", chunk(half, &bytes[half..], crc32fast::hash(&bytes[half..]))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(top1(&srv, "docs", &a[..D]), vec![0]);
    // A truncated upload (half a file) is refused at import, and the upload is gone after.
    let uid = c.call("upload_begin", vec![]).unwrap().str("upload_id").unwrap().unwrap().to_string();
    let f = vec![
        ("upload_id", Value::from(uid.as_str())),
        ("part", Value::from("index")),
        ("offset", Value::from(0u64)),
        ("crc32", Value::from(u64::from(crc32fast::hash(&bytes[..half])))),
        ("data", Value::Binary(bytes[..half].to_vec())),
    ];
    c.call("upload_chunk", f).unwrap();
    let e = c.call("import_index", vec![("index_id", Value::from("docs")), ("upload_id", Value::from(uid.as_str()))]);
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(spooled(&env.path("data")), 0);
    assert_eq!(top1(&srv, "docs", &a[..D]), vec![0]);
    let st = c.call("get_index_status", vec![("index_id", Value::from("docs"))]).unwrap();
    assert_eq!(st.map("status").unwrap().unwrap().uint("generation").unwrap(), Some(1));
}

#[test]
fn server_paths_only_under_import_dirs_and_served_files_follow_their_file() {
    let env = TestEnv::new("import-paths");
    let a = build_with_ids(&env, "a", 200, D, 4, 0);
    let b = build_with_ids(&env, "b", 200, D, 5, 100_000);
    std::fs::create_dir_all(env.path("allowed")).unwrap();
    std::fs::copy(env.path("a.index"), env.path("allowed/a.index")).unwrap();
    std::fs::copy(env.path("a.index.meta.json"), env.path("allowed/a.index.meta.json")).unwrap();
    std::os::unix::fs::symlink(env.path("b.index"), env.path("allowed/escape.index")).unwrap();
    std::fs::copy(env.path("a.index"), env.path("served.index")).unwrap();
    let srv = Server::start(
        &env,
        &[
            "--data-dir",
            "data",
            "--import-dir",
            "allowed",
            "--index",
            "live=served.index",
            "--index",
            "acme/faq=b.index",
        ],
    );
    let sp = env.path("allowed/a.index").display().to_string();
    let r = json(&env.ok(&remote(&srv, &["import", "docs", "--server-path", &sp])));
    assert_eq!(r["ntotal"].as_u64(), Some(200));
    assert_eq!(top1(&srv, "docs", &a[..D]), vec![0]);
    assert!(env.path("allowed/a.index").exists(), "the operator's file is copied, never moved");
    for (p, why) in [
        (env.path("b.index").display().to_string(), "outside"),
        (env.path("allowed/escape.index").display().to_string(), "outside"),
        (format!("{}/../b.index", env.path("allowed").display()), "outside"),
        (env.path("allowed/none.index").display().to_string(), "no such file"),
    ] {
        env.fails(&remote(&srv, &["import", "docs", "--server-path", &p]), 2, why);
    }
    // `serve --index`: served read-only under its name (and tenant), re-read when replaced.
    assert_eq!(top1(&srv, "live", &a[..D]), vec![0]);
    let mut acme = srv.client(None, Some("acme"));
    assert_eq!(acme.search("faq", &b[..D], D, &knn(1), false).unwrap().0.ids, vec![100_000]);
    let e = srv.client(None, None).call("reset", vec![("index_id", Value::from("live"))]).unwrap_err();
    assert!(e.to_string().contains("serve --index"), "{e}");
    let tmp = env.path("served.index.new");
    std::fs::copy(env.path("b.index"), &tmp).unwrap();
    std::fs::rename(&tmp, env.path("served.index")).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if top1(&srv, "live", &b[..D]) == vec![100_000] {
            switched = true;
            break;
        }
    }
    assert!(switched, "a replaced --index file is served within seconds");
    let st = srv.client(None, None).call("get_index_status", vec![("index_id", Value::from("live"))]).unwrap();
    assert_eq!(st.map("status").unwrap().unwrap().uint("generation").unwrap(), Some(2));
    // An unreadable replacement keeps the version being served.
    std::fs::write(&tmp, b"not an index").unwrap();
    std::fs::rename(&tmp, env.path("served.index")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(top1(&srv, "live", &b[..D]), vec![100_000]);
}

#[test]
fn export_and_backup_round_trip() {
    let env = TestEnv::new("export");
    let a = build_with_ids(&env, "a", 300, D, 6, 0);
    let srv = Server::start(&env, &["--data-dir", "data"]);
    env.ok(&remote(&srv, &["import", "docs", "a.index"]));
    // Writes after the import (in the WAL) are in the export, with their metadata.
    let mut c = srv.client(None, None);
    let extra = lcg_vectors(5, D, 9);
    let md: Vec<Value> = (0..5).map(|i| Value::from(format!("doc-{i}"))).collect();
    c.add_vectors("docs", &extra[..], D, Some(&[900, 901, 902, 903, 904]), Some(md)).unwrap();
    c.create_index("other", D, "HNSW8", None).unwrap();
    c.add_vectors("other", &a[..50 * D], D, None, None).unwrap();
    let r = json(&env.ok(&remote(&srv, &["export", "docs", "-o", "copy.index"])));
    assert_eq!(r["ntotal"].as_u64(), Some(305));
    write_npy_f32(&env.path("q.npy"), 10, D, &[&a[..5 * D], &extra[..]].concat());
    let local = parse_jsonl(&env.ok(&["search", "copy.index", "q.npy", "-k", "5", "--format", "jsonl"]));
    let served = parse_jsonl(&env.ok(&remote(&srv, &["search", "docs", "q.npy", "-k", "5", "--format", "jsonl"])));
    assert_eq!(local, served, "the export searches exactly as the server");
    assert!(env.path("copy.index.metadata.msgpack").exists());
    assert_eq!(spooled(&env.path("data")), 0, "the export's spool is gone once it ended");

    // Backup and restore into a fresh server: same results, same metadata.
    let r = json(&env.ok(&remote(&srv, &["export", "--all", "-o", "backup"])));
    assert_eq!(r["indexes"].as_u64(), Some(2));
    assert!(env.path("backup/manifest.json").exists());
    let fresh = Server::start(&env, &["--data-dir", "data2"]);
    let out = env.ok(&remote(&fresh, &["import", "--all", "backup"]));
    assert_eq!(out.lines().count(), 2);
    for id in ["docs", "other"] {
        let want = parse_jsonl(&env.ok(&remote(&srv, &["search", id, "q.npy", "-k", "5", "--format", "jsonl"])));
        let got = parse_jsonl(&env.ok(&remote(&fresh, &["search", id, "q.npy", "-k", "5", "--format", "jsonl"])));
        assert_eq!(want, got, "{id}");
    }
    let mut f = fresh.client(None, None);
    let m = f.get_metadata("docs", &[902, 0]).unwrap();
    assert_eq!(
        m.get("metadata"),
        Some(&Value::Array(vec![Value::from("doc-2"), Value::Nil])),
        "per-vector metadata travels with the backup"
    );

    // An in-memory server exports what it holds too (written from memory, not a checkpoint).
    let mem = Server::start(&env, &[]);
    env.ok(&remote(&mem, &["import", "docs", "copy.index"]));
    env.ok(&remote(&mem, &["export", "docs", "-o", "mem.index"]));
    let again = parse_jsonl(&env.ok(&["search", "mem.index", "q.npy", "-k", "5", "--format", "jsonl"]));
    assert_eq!(again, local);
}

#[test]
fn a_full_disk_during_spooling_is_an_error_and_leaves_nothing() {
    let env = TestEnv::new("import-full");
    let a = build_with_ids(&env, "a", 300, D, 7, 0);
    build_with_ids(&env, "big", 4000, D, 8, 500_000);
    let data = env.path("data");
    let srv = crate::serve_durability::start(&env, &data, None);
    env.ok(&remote(&srv, &["import", "docs", "a.index"]));
    // Files the server writes may not grow past 64 KiB from now on (EFBIG, as a full disk).
    crate::serve_durability::set_file_size_limit(&srv, 64 << 10);
    let err = env.fails(&remote(&srv, &["import", "docs", "big.index"]), 1, "big.index");
    assert!(err.contains("could not store the index chunk") && err.contains("File too large"), "{err}");
    assert_eq!(spooled(&data), 0, "the failed upload's files are removed");
    assert_eq!(top1(&srv, "docs", &a[..D]), vec![0]);
    let mut c = srv.client(None, None);
    assert_eq!(c.call("health", vec![]).unwrap().uint("transfers").unwrap(), Some(0));
}
