//! `faissx merge`, `faissx split` and scatter-gather search: merged indices answer like an
//! index built on the union, and searching all shards answers like the whole.

use crate::util::*;

const D: usize = 16;

/// Write `rows` of `data` (`n × D`) to `name` as fvecs.
fn part(env: &TestEnv, name: &str, data: &[f32]) {
    write_fvecs(&env.path(name), D, data);
}

/// One query's result: (query, ids, distances).
type Hits = (usize, Vec<i64>, Vec<Option<f64>>);

fn search(env: &TestEnv, args: &[&str]) -> Vec<Hits> {
    let mut a = vec!["search"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--format", "jsonl"]);
    parse_jsonl(&env.ok(&a))
}

fn info(env: &TestEnv, index: &str) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["info", index, "--format", "json"])).unwrap()
}

/// Three parts, their union, and queries.
fn fixture(name: &str) -> (TestEnv, Vec<f32>) {
    let env = TestEnv::new(name);
    let a = lcg_vectors(300, D, 11);
    let b = lcg_vectors(200, D, 12);
    let c = lcg_vectors(100, D, 13);
    part(&env, "a.fvecs", &a);
    part(&env, "b.fvecs", &b);
    part(&env, "c.fvecs", &c);
    let union: Vec<f32> = [a, b, c].concat();
    part(&env, "all.fvecs", &union);
    part(&env, "q.fvecs", &lcg_vectors(40, D, 99));
    (env, union)
}

#[test]
fn merge_flat_equals_index_built_on_union() {
    let (env, _) = fixture("merge-flat");
    for p in ["a", "b", "c", "all"] {
        env.ok(&["build", &format!("{p}.fvecs"), "-o", &format!("{p}.index"), "--factory", "Flat", "-q"]);
    }
    env.ok(&["merge", "a.index", "b.index", "c.index", "-o", "m.index", "-q"]);
    let m = info(&env, "m.index");
    assert_eq!(m["ntotal"], 600);
    assert_eq!(m["index_type"], "IndexFlatL2");
    assert_eq!(m["meta"]["inputs"].as_array().unwrap().len(), 3, "sidecars merged: {m}");
    let want = search(&env, &["all.index", "q.fvecs", "-k", "10"]);
    let got = search(&env, &["m.index", "q.fvecs", "-k", "10"]);
    assert_eq!(got, want);
}

#[test]
fn merge_ivf_with_shared_quantizer_is_native_and_equals_union() {
    let (env, _) = fixture("merge-ivf");
    env.ok(&["build", "all.fvecs", "-o", "all.index", "--factory", "IVF8,Flat", "-q"]);
    // Parts that share the trained quantizer: shards of the union index.
    env.ok(&["split", "all.index", "--shards", "3", "--by", "round-robin", "-o", "parts", "-q"]);
    assert_eq!(info(&env, "parts/all.1.index")["index_type"], "IndexIVFFlat");
    let out = env
        .cmd()
        .args([
            "merge",
            "parts/all.0.index",
            "parts/all.1.index",
            "parts/all.2.index",
            "-o",
            "m.index",
            "--ids",
            "keep",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FAISS merge") && !err.contains("rebuilding"), "native merge expected: {err}");
    assert_eq!(info(&env, "m.index")["ntotal"], 600);
    for nprobe in ["1", "3", "8"] {
        let want = search(&env, &["all.index", "q.fvecs", "-k", "10", "--nprobe", nprobe]);
        let got = search(&env, &["m.index", "q.fvecs", "-k", "10", "--nprobe", nprobe]);
        assert_eq!(got, want, "nprobe {nprobe}");
    }
}

#[test]
fn merge_ivf_with_different_quantizers_rebuilds_with_a_note() {
    let (env, _) = fixture("merge-ivf-rebuild");
    env.ok(&["build", "a.fvecs", "-o", "a.index", "--factory", "IVF4,Flat", "-q"]);
    env.ok(&["build", "b.fvecs", "-o", "b.index", "--factory", "IVF4,Flat", "-q"]);
    env.ok(&["build", "a.fvecs", "-o", "flat_a.index", "--factory", "Flat", "-q"]);
    let out = env.cmd().args(["merge", "a.index", "b.index", "-o", "m.index"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FAISS cannot merge") && err.contains("rebuilding"), "{err}");
    // Exhaustive probing makes IVF exact: the merge answers like Flat on the union of a and b.
    let ab: Vec<f32> = [lcg_vectors(300, D, 11), lcg_vectors(200, D, 12)].concat();
    part(&env, "ab.fvecs", &ab);
    env.ok(&["build", "ab.fvecs", "-o", "ab.index", "--factory", "Flat", "-q"]);
    let want = search(&env, &["ab.index", "q.fvecs", "-k", "10"]);
    let got = search(&env, &["m.index", "q.fvecs", "-k", "10", "--nprobe", "4"]);
    let ids = |r: &[Hits]| r.iter().map(|x| x.1.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&want));
    // Mixing types is refused with the reason, exit 2, nothing written.
    env.fails(&["merge", "flat_a.index", "b.index", "-o", "x.index"], 2, "only indices of the same type merge");
    assert!(!env.path("x.index").exists());
}

#[test]
fn merge_idmap_keeps_ids_refuses_collisions_and_renumbers() {
    let (env, _) = fixture("merge-idmap");
    write_npy_i64(&env.path("a_ids.npy"), &(0..300).map(|i| 1000 + i).collect::<Vec<_>>());
    write_npy_i64(&env.path("b_ids.npy"), &(0..200).map(|i| 5000 + 2 * i).collect::<Vec<_>>());
    write_npy_i64(&env.path("b_dup.npy"), &(0..200).map(|i| 1100 + i).collect::<Vec<_>>());
    env.ok(&["build", "a.fvecs", "-o", "a.index", "--factory", "Flat", "--ids", "a_ids.npy", "-q"]);
    env.ok(&["build", "b.fvecs", "-o", "b.index", "--factory", "Flat", "--ids", "b_ids.npy", "-q"]);
    env.ok(&["build", "b.fvecs", "-o", "dup.index", "--factory", "Flat", "--ids", "b_dup.npy", "-q"]);
    env.ok(&["merge", "a.index", "b.index", "-o", "m.index", "-q"]);
    let m = info(&env, "m.index");
    assert_eq!((m["index_type"].as_str(), m["ntotal"].as_u64()), (Some("IndexIDMap2"), Some(500)));
    // Same neighbours as an IDMap index built on the union with the union's ids.
    let all_ids: Vec<i64> = (0..300).map(|i| 1000 + i).chain((0..200).map(|i| 5000 + 2 * i)).collect();
    let ab: Vec<f32> = [lcg_vectors(300, D, 11), lcg_vectors(200, D, 12)].concat();
    part(&env, "ab.fvecs", &ab);
    write_npy_i64(&env.path("ab_ids.npy"), &all_ids);
    env.ok(&["build", "ab.fvecs", "-o", "ab.index", "--factory", "Flat", "--ids", "ab_ids.npy", "-q"]);
    assert_eq!(search(&env, &["m.index", "q.fvecs", "-k", "10"]), search(&env, &["ab.index", "q.fvecs", "-k", "10"]));
    // Each of b's vectors finds itself under its own id.
    for (q, ids, _) in search(&env, &["m.index", "b.fvecs", "-k", "1"]) {
        assert_eq!(ids[0], 5000 + 2 * q as i64);
    }
    // Colliding ids: refused, one line, exit 2, nothing written.
    env.fails(&["merge", "a.index", "dup.index", "-o", "x.index"], 2, "ids collide");
    assert!(!env.path("x.index").exists() && !env.path("x.index.meta.json").exists());
    // ... unless renumbered: a's vectors are 0..300, dup's 300..500.
    env.ok(&["merge", "a.index", "dup.index", "-o", "r.index", "--ids", "renumber", "-q"]);
    for (q, ids, _) in search(&env, &["r.index", "b.fvecs", "-k", "1"]) {
        assert_eq!(ids[0], 300 + q as i64);
    }
    assert_eq!(info(&env, "r.index")["meta"]["ids"], "sequential");
    // Flat indices number from 0, so keeping their ids is refused.
    env.ok(&["build", "a.fvecs", "-o", "fa.index", "--factory", "Flat", "-q"]);
    env.ok(&["build", "b.fvecs", "-o", "fb.index", "--factory", "Flat", "-q"]);
    env.fails(&["merge", "fa.index", "fb.index", "-o", "x.index", "--ids", "keep"], 2, "ids collide");
}

#[test]
fn merge_hnsw_rebuilds_from_reconstructed_vectors() {
    let (env, _) = fixture("merge-hnsw");
    env.ok(&["build", "a.fvecs", "-o", "a.index", "--factory", "HNSW16", "-q"]);
    env.ok(&["build", "b.fvecs", "-o", "b.index", "--factory", "HNSW16", "-q"]);
    let out = env.cmd().args(["merge", "a.index", "b.index", "-o", "m.index"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilding"));
    let m = info(&env, "m.index");
    assert_eq!((m["index_type"].as_str(), m["ntotal"].as_u64()), (Some("IndexHNSWFlat"), Some(500)));
    // b's vectors are numbered after a's and find themselves.
    let rows = search(&env, &["m.index", "b.fvecs", "-k", "1", "--ef-search", "64"]);
    let hits = rows.iter().filter(|(q, ids, _)| ids[0] == 300 + *q as i64).count();
    assert!(hits >= 198, "{hits}/200 of b's vectors find themselves");
}

#[test]
fn merge_refuses_different_d_and_missing_files() {
    let (env, _) = fixture("merge-errors");
    write_fvecs(&env.path("d8.fvecs"), 8, &lcg_vectors(50, 8, 5));
    env.ok(&["build", "a.fvecs", "-o", "a.index", "--factory", "Flat", "-q"]);
    env.ok(&["build", "d8.fvecs", "-o", "d8.index", "--factory", "Flat", "-q"]);
    env.fails(&["merge", "a.index", "d8.index", "-o", "x.index"], 2, "d8.index: d=8, but a.index has d=16");
    env.fails(&["merge", "a.index", "nope.index", "-o", "x.index"], 2, "nope.index");
    assert!(!env.path("x.index").exists());
    env.fails(&["merge", "a.index", "a.index", "-o", "a.index"], 2, "already exists");
}

fn assert_shards_equal_whole(env: &TestEnv, whole: &str, shards: &[String], extra: &[&str]) {
    let mut args: Vec<&str> = shards.iter().map(|s| s.as_str()).collect();
    args.extend_from_slice(&["q.fvecs", "-k", "20"]);
    args.extend_from_slice(extra);
    let mut wargs = vec![whole, "q.fvecs", "-k", "20"];
    wargs.extend_from_slice(extra);
    let got = search(env, &args);
    let want = search(env, &wargs);
    assert_eq!(got.len(), 40);
    assert_eq!(got, want, "scatter-gather over {shards:?} differs from {whole}");
}

#[test]
fn split_flat_then_scatter_gather_equals_whole_search() {
    let (env, _) = fixture("split-flat");
    env.ok(&["build", "all.fvecs", "-o", "all.index", "--factory", "Flat", "-q"]);
    for (by, n) in [("range", 4usize), ("round-robin", 3), ("hash", 5)] {
        let dir = format!("s-{by}");
        env.ok(&["split", "all.index", "--shards", &n.to_string(), "--by", by, "-o", &dir, "-q"]);
        let shards: Vec<String> = (0..n).map(|i| format!("{dir}/all.{i}.index")).collect();
        let mut total = 0;
        for s in &shards {
            let i = info(&env, s);
            assert_eq!(i["index_type"], "IndexIDMap2", "{s}");
            assert_eq!(i["inner_type"], "IndexFlatL2", "{s}");
            total += i["ntotal"].as_u64().unwrap();
        }
        assert_eq!(total, 600, "{by}: shards hold every vector once");
        assert_shards_equal_whole(&env, "all.index", &shards, &[]);
        if by == "range" {
            // Contiguous ranges: shard 1 of 4 holds positions 150..300 under their own ids.
            for (q, ids, _) in search(&env, &[&shards[1], "all.fvecs", "-k", "1"]).into_iter().skip(150).take(150) {
                assert_eq!(ids[0], q as i64);
            }
            // Merging the shards back (ids kept) gives the whole index's answers.
            let mut m = vec!["merge"];
            m.extend(shards.iter().map(|s| s.as_str()));
            m.extend_from_slice(&["-o", "back.index", "-q"]);
            env.ok(&m);
            assert_eq!(
                search(&env, &["back.index", "q.fvecs", "-k", "20"]),
                search(&env, &["all.index", "q.fvecs", "-k", "20"])
            );
        }
    }
    // Range search over shards: the same hits as the whole index.
    let shards =
        ["s-hash/all.0.index", "s-hash/all.1.index", "s-hash/all.2.index", "s-hash/all.3.index", "s-hash/all.4.index"];
    let mut a: Vec<&str> = shards.to_vec();
    a.extend_from_slice(&["q.fvecs", "--radius", "0.9"]);
    let got = search(&env, &a);
    let want = search(&env, &["all.index", "q.fvecs", "--radius", "0.9"]);
    assert!(want.iter().map(|r| r.1.len()).sum::<usize>() > 40, "radius finds hits");
    assert_eq!(got, want);
}

#[test]
fn split_ivf_and_hnsw_keep_their_type_and_ids() {
    let (env, _) = fixture("split-ivf-hnsw");
    env.ok(&["build", "all.fvecs", "-o", "ivf.index", "--factory", "IVF8,Flat", "-q"]);
    env.ok(&["split", "ivf.index", "--shards", "2", "--by", "hash", "-o", "s", "-q"]);
    assert_eq!(info(&env, "s/ivf.0.index")["index_type"], "IndexIVFFlat");
    let shards = vec!["s/ivf.0.index".to_string(), "s/ivf.1.index".to_string()];
    assert_shards_equal_whole(&env, "ivf.index", &shards, &["--nprobe", "8"]);

    env.ok(&["build", "all.fvecs", "-o", "h.index", "--factory", "HNSW16", "-q"]);
    env.ok(&["split", "h.index", "--shards", "3", "-o", "s", "-q"]);
    let i = info(&env, "s/h.2.index");
    assert_eq!((i["index_type"].as_str(), i["inner_type"].as_str()), (Some("IndexIDMap2"), Some("IndexHNSWFlat")));
    // The last range holds positions 400..600 and finds them under their original ids.
    let rows =
        search(&env, &["s/h.0.index", "s/h.1.index", "s/h.2.index", "all.fvecs", "-k", "1", "--ef-search", "64"]);
    let hits = rows.iter().filter(|(q, ids, _)| ids[0] == *q as i64).count();
    assert!(hits >= 595, "{hits}/600 vectors find themselves across HNSW shards");
}

#[test]
fn shards_of_different_d_are_refused() {
    let (env, _) = fixture("shards-d");
    write_fvecs(&env.path("d8.fvecs"), 8, &lcg_vectors(50, 8, 5));
    env.ok(&["build", "a.fvecs", "-o", "a.index", "--factory", "Flat", "-q"]);
    env.ok(&["build", "d8.fvecs", "-o", "d8.index", "--factory", "Flat", "-q"]);
    env.fails(&["search", "a.index", "d8.index", "q.fvecs"], 2, "shards must have the same d");
    let out = env.run(&["split", "a.index", "--shards", "0", "-o", "s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards"));
    assert!(!env.path("s").exists());
}

#[test]
fn on_disk_merge_and_split_answer_like_in_memory() {
    let env = TestEnv::new("ondisk-merge-split");
    let base = testdata("fashion-mnist/base5k.bvecs").display().to_string();
    let query = testdata("fashion-mnist/query200.bvecs").display().to_string();
    let k = ["-k", "10", "--nprobe", "8"];
    env.ok(&["build", &base, "-o", "all.index", "--factory", "IVF32,Flat", "-q"]);
    let whole = search(&env, &[&["all.index", &query][..], &k].concat());

    // split --on-disk: every shard's lists in <shard>.ivfdata; scatter-gather equals the whole.
    env.ok(&["split", "all.index", "--shards", "3", "-o", "od", "--on-disk", "-q"]);
    env.ok(&["split", "all.index", "--shards", "3", "-o", "mem", "-q"]);
    let shards = ["od/all.0.index", "od/all.1.index", "od/all.2.index"];
    for s in shards {
        assert!(env.path(&format!("{s}.ivfdata")).exists(), "{s}.ivfdata");
        assert_eq!(info(&env, s)["storage"], "on_disk", "{s}");
    }
    let gathered = search(&env, &[&shards[..], &[&query], &k].concat());
    assert_eq!(gathered, whole, "on-disk shards searched as one equal the whole");

    // merge --on-disk of in-memory shards, and of on-disk shards (read, never changed).
    let mem_shards = ["mem/all.0.index", "mem/all.1.index", "mem/all.2.index"];
    env.ok(&[&["merge"][..], &mem_shards, &["-o", "mem.index", "-q"]].concat());
    env.ok(&[&["merge"][..], &mem_shards, &["-o", "m1.index", "--on-disk", "-q"]].concat());
    let before = std::fs::read(env.path("od/all.0.index.ivfdata")).unwrap();
    env.ok(&[&["merge"][..], &shards, &["-o", "m2.index", "--on-disk", "--ids", "keep", "-q"]].concat());
    assert_eq!(before, std::fs::read(env.path("od/all.0.index.ivfdata")).unwrap(), "inputs unchanged");
    let in_memory = search(&env, &[&["mem.index", &query][..], &k].concat());
    assert_eq!(in_memory, whole);
    for m in ["m1.index", "m2.index"] {
        assert_eq!(search(&env, &[&[m, &query][..], &k].concat()), in_memory, "{m} equals the in-memory merge");
        let i = info(&env, m);
        assert_eq!((i["storage"].as_str(), i["ntotal"].as_u64()), (Some("on_disk"), Some(5000)), "{m}");
        assert_eq!(leftovers(&env.dir), Vec::<String>::new());
    }
    // Without --on-disk, on-disk inputs are refused with a hint; different quantizers are
    // refused and nothing is left behind.
    env.fails(&[&["merge"][..], &shards, &["-o", "x.index"]].concat(), 2, "--on-disk");
    env.ok(&[
        "build",
        &base,
        "-o",
        "other.index",
        "--factory",
        "IVF32,Flat",
        "--train-size",
        "3000",
        "--seed",
        "7",
        "-q",
    ]);
    env.fails(
        &["merge", "all.index", "other.index", "-o", "bad.index", "--on-disk", "--ids", "renumber"],
        2,
        "quantizer",
    );
    assert!(!env.path("bad.index").exists());
    assert_eq!(leftovers(&env.dir), Vec::<String>::new());
    env.ok(&["build", &base, "-o", "flat.index", "--factory", "Flat", "-q"]);
    env.fails(&["split", "flat.index", "--shards", "2", "-o", "flat", "--on-disk"], 2, "IVF");
    assert!(!env.path("flat").exists());
}
