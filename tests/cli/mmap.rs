//! Memory-mapped and on-disk indices (issue 5): same neighbours as a loaded index, resident
//! anonymous memory a small fraction of the file, mutations refused.

use crate::eqnice;
use crate::util::*;

fn sample(rel: &str) -> String {
    testdata(rel).display().to_string()
}

/// RssAnon reported by `faissx search -v` while the index is open.
fn rss_anon(stderr: &str) -> u64 {
    let l =
        stderr.lines().find(|l| l.contains("memory: RssAnon")).unwrap_or_else(|| panic!("no memory line in {stderr}"));
    l.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn every_index_type_gives_the_same_neighbours_mapped() {
    let env = TestEnv::new("mmap-types");
    let base = sample("fashion-mnist/base5k.bvecs");
    let query = sample("fashion-mnist/query200.bvecs");
    write_npy_i64(&env.path("ids.npy"), &(0..5000).map(|i| 7 * i as i64 + 3).collect::<Vec<_>>());
    for (name, factory, ids) in [
        ("flat", "Flat", false),
        ("ivfflat", "IVF32,Flat", false),
        ("ivfpq", "IVF32,PQ8", false),
        ("ivfsq", "IVF32,SQ8", false),
        ("sq", "SQ8", false),
        ("pq", "PQ8", false),
        ("hnsw", "HNSW16", false),
        ("idmap2", "Flat", true),
    ] {
        let idx = format!("{name}.index");
        // A small training sample keeps PQ training quick; the test compares mapped and loaded.
        let mut args = vec!["build", &base, "-o", &idx, "--factory", factory, "--train-size", "2000", "-q"];
        if ids {
            args.extend(["--ids", "ids.npy"]);
        }
        env.ok(&args);
        let knobs: Vec<&str> = match name {
            "ivfflat" | "ivfpq" | "ivfsq" => vec!["--nprobe", "8"],
            "hnsw" => vec!["--ef-search", "64"],
            _ => vec![],
        };
        let run = |mmap: bool| {
            let mut a = vec!["search", &idx, &query, "-k", "10"];
            a.extend(knobs.iter().copied());
            if mmap {
                a.push("--mmap");
            }
            parse_jsonl(&env.ok(&a)).into_iter().map(|r| r.1).collect::<Vec<_>>()
        };
        let loaded = run(false);
        let mapped = run(true);
        assert_eq!(loaded, mapped, "{name}: mapped search differs from loaded");
        let info: serde_json::Value =
            serde_json::from_str(&env.ok(&["info", &idx, "--mmap", "--format", "json"])).unwrap();
        assert_eq!(info["storage"], "mapped", "{name}");
        let want = if name.starts_with("ivf") { "IO_FLAG_MMAP" } else { "IO_FLAG_MMAP_IFC" };
        assert!(info["mmap_flags"].as_str().unwrap().starts_with(want), "{name}: {}", info["mmap_flags"]);
        if ids {
            assert_eq!(mapped[0][0] % 7, 3, "ids kept through the map");
        }
    }
}

#[test]
fn mapped_index_keeps_anonymous_memory_small() {
    let env = TestEnv::new("mmap-rss");
    let (n, d) = (200_000, 256);
    write_fvecs(&env.path("b.fvecs"), d, &lcg_vectors(n, d, 11));
    write_fvecs(&env.path("q.fvecs"), d, &lcg_vectors(1000, d, 12));
    for (name, factory) in [("flat", "Flat"), ("ivf", "IVF64,Flat")] {
        let idx = format!("{name}.index");
        env.ok(&["build", "b.fvecs", "-o", &idx, "--factory", factory, "--train-size", "10000", "-q"]);
        let size = std::fs::metadata(env.path(&idx)).unwrap().len();
        assert!(size >= 200_000_000, "{name}: index is {size} bytes, test needs >= 200 MB");
        let search = |mmap: bool| {
            let mut a = vec!["search", &idx, "q.fvecs", "-k", "10", "-v", "--nprobe", "4"];
            if name == "flat" {
                a.truncate(6);
            }
            if mmap {
                a.push("--mmap");
            }
            let out = env.run(&a);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            (rss_anon(&String::from_utf8_lossy(&out.stderr)), out.stdout)
        };
        let (loaded_anon, loaded_out) = search(false);
        let (mapped_anon, mapped_out) = search(true);
        assert_eq!(loaded_out, mapped_out, "{name}: same results mapped and loaded");
        // The loaded index really sits in anonymous memory; the mapped one does not.
        assert!(loaded_anon as f64 >= 0.9 * size as f64, "{name}: loaded RssAnon {loaded_anon} of {size}");
        assert!((mapped_anon as f64) <= 0.05 * size as f64, "{name}: mapped RssAnon {mapped_anon} > 5% of {size}");
    }
}

#[test]
fn mapped_and_on_disk_indices_refuse_mutations() {
    let env = TestEnv::new("mmap-readonly");
    let base = sample("fashion-mnist/base5k.bvecs");
    env.ok(&["build", &base, "-o", "x.index", "-q"]);
    let mut idx = faissx::engine::Index::open_with(
        &env.path("x.index"),
        &faissx::engine::index::OpenOptions { mmap: true, warm: true, no_search: false },
    )
    .unwrap();
    let v = vec![0.0f32; 784];
    let e = idx.add(&v, None).unwrap_err();
    assert_eq!(e.kind(), faissx::engine::ErrorKind::Unsupported);
    assert!(e.to_string().contains("memory-mapped"), "{e}");
    assert!(idx.remove_ids(&[1]).is_err());
    assert!(idx.reset().is_err());
    assert_eq!(idx.ntotal(), 5000);

    env.ok(&["build", &base, "-o", "od.index", "--factory", "IVF16,Flat", "--on-disk", "-q"]);
    let before = std::fs::read(env.path("od.index")).unwrap();
    let out = env.run(&["add", "od.index", &sample("fashion-mnist/query200.bvecs")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("on-disk"));
    assert_eq!(before, std::fs::read(env.path("od.index")).unwrap());
}

#[test]
fn on_disk_build_searches_like_an_in_memory_build() {
    let env = TestEnv::new("ondisk");
    let base = sample("fashion-mnist/base5k.bvecs");
    let query = sample("fashion-mnist/query200.bvecs");
    env.ok(&["build", &base, "-o", "mem.index", "--factory", "IVF32,Flat", "-q"]);
    // Several shards (1,200 rows each) of several add batches (500 rows) each.
    let out = env.run(&[
        "build",
        &base,
        "-o",
        "od.index",
        "--factory",
        "IVF32,Flat",
        "--on-disk",
        "--shard-size",
        "1200",
        "--batch",
        "500",
        "-v",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "FAISS's progress printfs must not reach stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("merging 5 shard(s)"), "{err}");
    assert!(env.path("od.index.ivfdata").exists());
    assert_eq!(leftovers(&env.dir), Vec::<String>::new(), "temp lists and temp shards are removed");
    let mem = env.ok(&["search", "mem.index", &query, "-k", "10", "--nprobe", "8"]);
    let od = env.ok(&["search", "od.index", &query, "-k", "10", "--nprobe", "8"]);
    eqnice!(mem, od);
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "od.index"])).unwrap();
    assert_eq!(info["storage"], "on_disk");
    assert_eq!(info["ntotal"], 5000);
    // Laid out exactly by one merge pass: codes + ids, no growth slack.
    let ivfdata = info["ivfdata_bytes"].as_u64().unwrap();
    let exact = 5000 * (784 * 4 + 8);
    assert!((exact..exact * 11 / 10).contains(&ivfdata), "{ivfdata}");
    // The pair moves together: the data file is found beside the index.
    std::fs::create_dir_all(env.path("moved")).unwrap();
    for f in ["od.index", "od.index.ivfdata", "od.index.meta.json"] {
        std::fs::rename(env.path(f), env.path(&format!("moved/{f}"))).unwrap();
    }
    let moved = env.ok(&["search", "moved/od.index", &query, "-k", "10", "--nprobe", "8"]);
    eqnice!(mem, moved);
    // A non-IVF factory is refused before anything is written.
    env.fails(&["build", &base, "-o", "bad.index", "--factory", "HNSW16", "--on-disk"], 2, "IVF");
    assert!(!env.path("bad.index").exists() && !env.path("bad.index.ivfdata").exists());
}

/// RssAnon of a running process, from /proc/<pid>/status, in bytes.
fn proc_rss_anon(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn serve_mmap_maps_persisted_indices_read_only() {
    use crate::serve::Server;
    use faissx::engine::protocol::{self, Value};
    use faissx::engine::{ErrorKind, SearchParams};
    let env = TestEnv::new("serve-mmap");
    let data = env.path("data").display().to_string();
    let (n, d) = (200_000, 128);
    let base = lcg_vectors(n, d, 21);
    let q = lcg_vectors(20, d, 22);
    let (small_d, small) = (8, lcg_vectors(400, 8, 23));
    let small_q = lcg_vectors(5, 8, 24);
    let np = |k| SearchParams { nprobe: Some(4), ..knn(k) };
    let (before_big, before_ivf, loaded_anon);
    {
        let srv = Server::start(&env, &["--data-dir", &data]);
        let mut c = srv.client(None, None);
        c.create_index("big", d, "Flat", None).unwrap();
        for chunk in base.chunks(50_000 * d) {
            c.add_vectors("big", chunk, d, None, None).unwrap();
        }
        c.call("snapshot", vec![("index_id", Value::from("big"))]).unwrap();
        // This one stays in the WAL only (kill -9 below): a restart with --mmap replays it
        // into a loaded copy, checkpoints, then maps it.
        c.create_index("ivf", small_d, "IVF4", None).unwrap();
        c.train("ivf", &small, small_d).unwrap();
        c.add_vectors("ivf", &small, small_d, None, None).unwrap();
        before_big = c.search("big", &q, d, &knn(10), false).unwrap().0;
        before_ivf = c.search("ivf", &small_q, small_d, &np(5), false).unwrap().0;
        loaded_anon = proc_rss_anon(srv.child.id());
        srv.kill9();
    }
    let size = (n * d * 4) as u64;
    assert!(loaded_anon >= size, "loaded server holds the index in anonymous memory: {loaded_anon} < {size}");

    let srv = Server::start(&env, &["--data-dir", &data, "--mmap"]);
    let mut c = srv.client(None, None);
    assert_eq!(c.search("big", &q, d, &knn(10), false).unwrap().0, before_big, "same results mapped");
    assert_eq!(c.search("ivf", &small_q, small_d, &np(5), false).unwrap().0, before_ivf, "WAL replayed, then mapped");
    let anon = proc_rss_anon(srv.child.id());
    assert!((anon as f64) < 0.25 * size as f64, "mapped server RssAnon {anon} is not well below the index's {size}");
    for name in ["big", "ivf"] {
        let st = c.call("get_index_status", vec![("index_id", Value::from(name))]).unwrap();
        assert_eq!(st.map("status").unwrap().unwrap().str("storage").unwrap(), Some("mapped"), "{name}");
    }
    let info = c.call("get_index_info", vec![("index_id", Value::from("big"))]).unwrap();
    assert_eq!(info.map("storage").unwrap().unwrap().str("mode").unwrap(), Some("mapped"));

    // Every mutation is refused before FAISS sees it, and the server keeps serving.
    let e = c.add_vectors("big", &base[..d], d, None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("memory-mapped"), "{e}");
    let big = || ("index_id", Value::from("big"));
    let refused: Vec<(&str, Vec<(&str, Value)>)> = vec![
        (
            "train_index",
            vec![big(), ("training_vectors", protocol::vectors_value(&base[..d], d, protocol::Encoding::Binary))],
        ),
        ("remove_ids", vec![big(), ("ids", protocol::ints_value(&[1, 2]))]),
        ("reset", vec![big()]),
        (
            "set_parameter",
            vec![("index_id", Value::from("ivf")), ("parameter", Value::from("nprobe")), ("value", Value::from(2u64))],
        ),
        (
            "merge_indices",
            vec![("target_index_id", Value::from("big")), ("source_index_ids", Value::Array(vec![Value::from("ivf")]))],
        ),
    ];
    for (action, fields) in refused {
        let e = c.call(action, fields).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{action}: {e}");
    }
    c.ping().unwrap();
    assert_eq!(c.search("big", &q, d, &knn(10), false).unwrap().0, before_big, "still serving, unchanged");
    // A new index is loaded and writable.
    c.create_index("fresh", small_d, "Flat", None).unwrap();
    c.add_vectors("fresh", &small, small_d, None, None).unwrap();
    let st = c.call("get_index_status", vec![("index_id", Value::from("fresh"))]).unwrap();
    assert_eq!(st.map("status").unwrap().unwrap().str("storage").unwrap(), Some("loaded"));
}
