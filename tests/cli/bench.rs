//! `faissx bench`: recall figures equal an independent computation on the Fashion-MNIST
//! sample, sweeps and --target-recall pick the right setting, ground truth is computed and
//! cached, shards are benchmarked as one index, and bad inputs fail cleanly.

use crate::util::*;

const BASE: &str = "fashion-mnist/base5k.bvecs";
const QUERY: &str = "fashion-mnist/query200.bvecs";
const GT: &str = "fashion-mnist/gt200.ivecs";

fn sample(rel: &str) -> String {
    testdata(rel).display().to_string()
}

fn records(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// IVF64,Flat over the 5k sample, built once per test.
fn ivf_index(env: &TestEnv) {
    env.ok(&["build", &sample(BASE), "-o", "fm.index", "--factory", "IVF64,Flat", "-q"]);
}

#[test]
fn bench_recall_equals_independent_computation_on_sample() {
    let env = TestEnv::new("bench-recall");
    ivf_index(&env);
    let out = env.ok(&[
        "bench",
        "fm.index",
        "--queries",
        &sample(QUERY),
        "--gt",
        &sample(GT),
        "-k",
        "10",
        "--nprobe",
        "1,2,8",
        "--single-queries",
        "20",
        "--format",
        "json",
        "-q",
    ]);
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    let gt = read_ivecs(&testdata(GT));
    for (rec, nprobe) in recs.iter().zip(["1", "2", "8"]) {
        assert_eq!(rec["nprobe"], nprobe.parse::<u64>().unwrap());
        // Independently: search with the same nprobe and count overlaps here.
        let rows = parse_jsonl(&env.ok(&["search", "fm.index", &sample(QUERY), "-k", "10", "--nprobe", nprobe]));
        let found: Vec<Vec<i64>> = rows.iter().map(|r| r.1.clone()).collect();
        let k_recall = recall(&found, &gt, 10);
        let first = |n: usize| {
            found.iter().zip(&gt).filter(|(f, t)| f[..n].contains(&(t[0] as i64))).count() as f64 / found.len() as f64
        };
        let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
        assert!(close(&rec["k_recall_at_k"], k_recall), "nprobe {nprobe}: {} vs {k_recall}", rec["k_recall_at_k"]);
        assert!(close(&rec["recall_at_1"], first(1)), "nprobe {nprobe}: R@1 {} vs {}", rec["recall_at_1"], first(1));
        assert!(close(&rec["recall_at_10"], first(10)), "nprobe {nprobe}");
        assert!(close(&rec["recall_at_k"], first(10)), "nprobe {nprobe}");
        assert_eq!(rec["nq"], 200);
        assert_eq!(rec["nq_single"], 20);
        assert!(rec["qps_batch"].as_f64().unwrap() > 0.0 && rec["qps_single"].as_f64().unwrap() > 0.0);
        let (p50, p99) = (rec["latency_p50_ms"].as_f64().unwrap(), rec["latency_p99_ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99);
        assert_eq!(rec["index_type"], "IndexIVFFlat");
        assert_eq!(rec["index_bytes"], std::fs::metadata(env.path("fm.index")).unwrap().len());
        assert!(rec["mem_peak_bytes"].as_u64().unwrap() > 1_000_000);
    }
    // More probes never lose recall on this data, and 8 of 64 lists find most neighbours.
    let r: Vec<f64> = recs.iter().map(|r| r["k_recall_at_k"].as_f64().unwrap()).collect();
    assert!(r[0] < r[2] && r[2] > 0.9, "{r:?}");
    // Stable field names.
    let mut keys: Vec<&str> = recs[0].as_object().unwrap().keys().map(|s| s.as_str()).collect();
    keys.sort();
    let mut want = vec![
        "target",
        "index_type",
        "shards",
        "setting",
        "nprobe",
        "ef_search",
        "k",
        "nq",
        "recall_at_1",
        "recall_at_10",
        "recall_at_k",
        "k_recall_at_k",
        "qps_batch",
        "qps_single",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "nq_single",
        "clients",
        "pipeline",
        "train_s",
        "add_s",
        "build_s",
        "index_bytes",
        "mem_peak_bytes",
        "rss_anon_bytes",
        "pareto",
        "chosen",
    ];
    want.sort();
    assert_eq!(keys, want);
}

#[test]
fn bench_factories_sweep_and_target_recall_picks_the_fastest_reaching_it() {
    let env = TestEnv::new("bench-sweep");
    let out = env.ok(&[
        "bench",
        "--base",
        &sample(BASE),
        "--queries",
        &sample(QUERY),
        "--gt",
        &sample(GT),
        "--factory",
        "IVF32,Flat",
        "--factory",
        "HNSW16",
        "--factory",
        "Flat",
        "-k",
        "10",
        "--nprobe",
        "1,4,32",
        "--ef-search",
        "16,64",
        "--single-queries",
        "10",
        "--format",
        "json",
        "-q",
        "--plot",
        "p.svg",
    ]);
    let recs = records(&out);
    let by = |t: &str| recs.iter().filter(|r| r["target"] == t).cloned().collect::<Vec<_>>();
    assert_eq!(by("IVF32,Flat").len(), 3);
    assert_eq!(by("HNSW16").iter().map(|r| r["ef_search"].as_u64().unwrap()).collect::<Vec<_>>(), vec![16, 64]);
    let flat = by("Flat");
    assert_eq!(flat.len(), 1);
    assert_eq!(flat[0]["k_recall_at_k"], 1.0, "Flat is exact on the sample");
    assert!(flat[0]["train_s"].as_f64().is_some() && flat[0]["add_s"].as_f64().unwrap() >= 0.0);
    assert!(by("IVF32,Flat")[2]["k_recall_at_k"].as_f64().unwrap() >= 0.999, "nprobe = nlist is exhaustive");
    let svg = std::fs::read_to_string(env.path("p.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("IVF32,Flat") && svg.contains("HNSW16") && svg.contains("<polyline")
    );

    // --target-recall: the IVF sweep doubles nprobe and stops at the first setting reaching 0.95.
    ivf_index(&env);
    let out = env
        .cmd()
        .args([
            "bench",
            "fm.index",
            "--queries",
            &sample(QUERY),
            "--gt",
            &sample(GT),
            "--target-recall",
            "0.95",
            "--single-queries",
            "0",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let recs = records(&String::from_utf8(out.stdout).unwrap());
    let chosen: Vec<_> = recs.iter().filter(|r| r["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1);
    let last = recs.last().unwrap();
    assert_eq!(chosen[0], last, "the sweep stops at the first setting reaching the target");
    assert!(last["k_recall_at_k"].as_f64().unwrap() >= 0.95);
    let nprobes: Vec<u64> = recs.iter().map(|r| r["nprobe"].as_u64().unwrap()).collect();
    assert_eq!(nprobes[0], 1);
    assert!(nprobes.windows(2).all(|w| w[1] == 2 * w[0]), "{nprobes:?}");
    assert!(recs[..recs.len() - 1].iter().all(|r| r["k_recall_at_k"].as_f64().unwrap() < 0.95));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fastest setting reaching"));
}

#[test]
fn bench_computes_caches_ground_truth_and_handles_shards() {
    let env = TestEnv::new("bench-gt");
    std::fs::copy(testdata(QUERY), env.path("q.bvecs")).unwrap();
    env.ok(&["build", &sample(BASE), "-o", "flat.index", "--factory", "Flat", "-q"]);
    env.ok(&["split", "flat.index", "--shards", "3", "--by", "hash", "-o", "s", "-q"]);
    let args = [
        "bench",
        "s/flat.0.index",
        "s/flat.1.index",
        "s/flat.2.index",
        "--base",
        &sample(BASE),
        "--queries",
        "q.bvecs",
        "-k",
        "20",
        "--single-queries",
        "5",
        "--format",
        "json",
    ];
    let out = env.cmd().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cache = env.path("q.gt-base5k-l2-k20.ivecs");
    assert!(cache.exists(), "ground truth cached next to the queries");
    // The cached exact neighbours equal the committed ground truth's first 20 columns.
    let gt = read_ivecs(&testdata(GT));
    let cached = read_ivecs(&cache);
    assert_eq!(cached.len(), 200);
    for (c, g) in cached.iter().zip(&gt) {
        assert_eq!(c[..], g[..20]);
    }
    let rec = &records(&String::from_utf8(out.stdout).unwrap())[0];
    assert_eq!(rec["shards"], 3);
    assert_eq!(rec["k_recall_at_k"], 1.0, "scatter-gather over Flat shards is exact");
    let out = env.cmd().args(args).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ground truth from cache"));
}

#[test]
fn bench_rejects_mismatched_inputs_with_one_line() {
    let env = TestEnv::new("bench-errors");
    ivf_index(&env);
    write_fvecs(&env.path("q8.fvecs"), 8, &lcg_vectors(10, 8, 1));
    let q = sample(QUERY);
    let gt = sample(GT);
    env.fails(&["bench", "fm.index", "--queries", "q8.fvecs", "--gt", &gt, "--plot", "x.svg"], 2, "d=8");
    env.fails(
        &["bench", "fm.index", "--queries", &q, "--gt", &gt, "-k", "101", "--plot", "x.svg"],
        2,
        "fewer than -k 101",
    );
    write_npy_i64(&env.path("short_gt.npy"), &[1, 2, 3]);
    env.fails(
        &["bench", "fm.index", "--queries", &q, "--gt", "short_gt.npy"],
        2,
        "ground truth has 3 rows for 200 queries",
    );
    env.fails(&["bench", "fm.index", "--queries", &q], 2, "no ground truth");
    env.fails(&["bench", "--factory", "Flat", "--queries", &q, "--gt", &gt], 2, "--base");
    write_fvecs(&env.path("b8.fvecs"), 8, &lcg_vectors(100, 8, 2));
    env.ok(&["build", "b8.fvecs", "-o", "d8.index", "-q"]);
    env.fails(&["bench", "fm.index", "d8.index", "--queries", &q, "--gt", &gt], 2, "shards must have the same d");
    assert!(!env.path("x.svg").exists(), "nothing written on error");
}

#[test]
fn bench_server_with_concurrent_clients() {
    let env = TestEnv::new("bench-server");
    let srv = crate::serve::Server::start(&env, &[]);
    let base = sample(BASE);
    let qr = |args: &[&str]| {
        let mut all = vec!["query-remote", "--server", &srv.endpoint];
        all.extend_from_slice(args);
        env.ok(&all)
    };
    qr(&["create", "docs", "--dimension", "784"]);
    qr(&["add", "docs", &base, "-q"]);
    let (query, gt) = (sample(QUERY), sample(GT));
    let bench = |extra: &[&str]| {
        let mut all = vec!["bench", "--server", &srv.endpoint, "--index", "docs", "--queries", &query, "--gt", &gt];
        all.extend_from_slice(extra);
        all.extend_from_slice(&["--format", "json", "-q"]);
        records(&env.ok(&all))
    };
    let recs = bench(&["--clients", "4", "--single-queries", "100"]);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["clients"], 4);
    assert_eq!(r["pipeline"], 1);
    assert_eq!(r["nq_single"], 100);
    assert_eq!(r["k_recall_at_k"], 1.0, "a Flat index on the server is exact");
    assert!(r["qps_single"].as_f64().unwrap() > 0.0);
    assert!(r["target"].as_str().unwrap().ends_with("/docs"));
    // One client keeping 8 requests in flight: every query answered once, same recall.
    let recs = bench(&["--pipeline", "8", "--single-queries", "150"]);
    let r = &recs[0];
    assert_eq!((r["clients"].as_u64(), r["pipeline"].as_u64()), (Some(1), Some(8)));
    assert_eq!(r["nq_single"], 150);
    assert_eq!(r["k_recall_at_k"], 1.0);
    // Queries of the wrong d are refused before any measuring.
    write_fvecs(&env.path("q8.fvecs"), 8, &lcg_vectors(10, 8, 1));
    env.fails(
        &["bench", "--server", &srv.endpoint, "--index", "docs", "--queries", "q8.fvecs", "--gt", &sample(GT)],
        2,
        "d=8",
    );
}

#[test]
fn bench_mmap_reports_small_anonymous_memory() {
    let env = TestEnv::new("bench-mmap");
    env.ok(&["build", &sample(BASE), "-o", "flat.index", "--factory", "Flat", "-q"]);
    let size = std::fs::metadata(env.path("flat.index")).unwrap().len() as f64;
    let (query, gt) = (sample(QUERY), sample(GT));
    let run = |mmap: bool| {
        let mut a = vec!["bench", "flat.index", "--queries", &query, "--gt", &gt];
        a.extend(["--single-queries", "10", "--format", "json", "-q"]);
        if mmap {
            a.push("--mmap");
        }
        let r = records(&env.ok(&a)).remove(0);
        (r["k_recall_at_k"].as_f64().unwrap(), r["rss_anon_bytes"].as_u64().unwrap() as f64)
    };
    let (loaded_recall, loaded_anon) = run(false);
    let (mapped_recall, mapped_anon) = run(true);
    assert_eq!(loaded_recall, mapped_recall, "same answers mapped");
    assert!(loaded_anon >= size, "loaded: RssAnon {loaded_anon} < file {size}");
    assert!(mapped_anon <= loaded_anon - 0.8 * size, "mapped RssAnon {mapped_anon} vs loaded {loaded_anon}");
}
