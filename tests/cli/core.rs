//! The main job end to end: build, search, add, info on real Fashion-MNIST files.

use crate::util::*;

const SAMPLE_BASE: &str = "fashion-mnist/base5k.bvecs";
const SAMPLE_QUERY: &str = "fashion-mnist/query200.bvecs";
const SAMPLE_GT: &str = "fashion-mnist/gt200.ivecs";

fn sample(rel: &str) -> String {
    testdata(rel).display().to_string()
}

#[test]
fn flat_search_returns_exact_ground_truth_on_sample() {
    let env = TestEnv::new("flat-sample");
    env.ok(&["build", &sample(SAMPLE_BASE), "-o", "s.index", "--factory", "Flat", "-q"]);
    let out = env.ok(&["search", "s.index", &sample(SAMPLE_QUERY), "-k", "100", "--format", "jsonl"]);
    let rows = parse_jsonl(&out);
    let gt = read_ivecs(&testdata(SAMPLE_GT));
    assert_eq!(rows.len(), 200);
    for (q, ids, dists) in &rows {
        let want: Vec<i64> = gt[*q].iter().map(|&x| x as i64).collect();
        assert_eq!(ids, &want, "query {q}");
        assert!(dists.windows(2).all(|w| w[0].unwrap() <= w[1].unwrap()), "distances sorted for query {q}");
    }
}

#[test]
fn flat_and_ivf_on_full_fashion_mnist_match_groundtruth() {
    let env = TestEnv::new("full-fm");
    let base = fashion_mnist("base.bvecs").display().to_string();
    let query = fashion_mnist("query.bvecs").display().to_string();
    let gt = read_ivecs(&fashion_mnist("groundtruth.ivecs"));
    // 500 queries: a sample, read from stdin-free file slices.
    let qbytes = std::fs::read(&query).unwrap();
    std::fs::write(env.path("q500.bvecs"), &qbytes[..500 * 788]).unwrap();

    env.ok(&["build", &base, "-o", "flat.index", "--factory", "Flat", "-q"]);
    let rows = parse_jsonl(&env.ok(&["search", "flat.index", "q500.bvecs", "-k", "10"]));
    let found: Vec<Vec<i64>> = rows.iter().map(|r| r.1.clone()).collect();
    let r_flat = recall(&found, &gt[..500], 10);
    // Exact search: every true neighbour is found (ties in integer distances are rare; allow
    // at most one swapped id per thousand).
    assert!(r_flat >= 0.999, "Flat recall@10 = {r_flat}");

    // IVF1024,Flat reaches recall@10 >= 0.95 at nprobe 16 (the documented setting).
    env.ok(&["build", &base, "-o", "fm.index", "--factory", "IVF1024,Flat", "--metric", "l2", "-q"]);
    let rows =
        parse_jsonl(&env.ok(&["search", "fm.index", "q500.bvecs", "-k", "10", "--nprobe", "16", "--format", "jsonl"]));
    let found: Vec<Vec<i64>> = rows.iter().map(|r| r.1.clone()).collect();
    let r16 = recall(&found, &gt[..500], 10);
    assert!(r16 >= 0.95, "IVF1024,Flat recall@10 at nprobe 16 = {r16}");
    // And nprobe matters: 1 probe is clearly worse.
    let rows = parse_jsonl(&env.ok(&["search", "fm.index", "q500.bvecs", "-k", "10", "--nprobe", "1"]));
    let found: Vec<Vec<i64>> = rows.iter().map(|r| r.1.clone()).collect();
    let r1 = recall(&found, &gt[..500], 10);
    assert!(r1 < r16, "nprobe 1 recall {r1} should be below nprobe 16 recall {r16}");
}

#[test]
fn add_with_ids_then_search_finds_new_ids() {
    let env = TestEnv::new("add-ids");
    let d = 16;
    let base = lcg_vectors(1000, d, 1);
    write_fvecs(&env.path("base.fvecs"), d, &base);
    write_npy_i64(&env.path("ids.npy"), &(0..1000).map(|i| 10_000 + i as i64).collect::<Vec<_>>());
    env.ok(&["build", "base.fvecs", "-o", "x.index", "--factory", "Flat", "--ids", "ids.npy", "-q"]);
    let more = lcg_vectors(50, d, 2);
    write_npy_f32(&env.path("more.npy"), 50, d, &more);
    write_npy_i64(&env.path("more_ids.npy"), &(0..50).map(|i| 90_000 + i as i64).collect::<Vec<_>>());
    env.ok(&["add", "x.index", "more.npy", "--ids", "more_ids.npy", "-q"]);
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "x.index", "--format", "json"])).unwrap();
    assert_eq!(info["ntotal"], 1050);
    assert_eq!(info["index_type"], "IndexIDMap2");
    assert_eq!(info["explicit_ids"], true);
    // Query with the added vectors themselves: each finds its own id first at distance 0.
    let rows = parse_jsonl(&env.ok(&["search", "x.index", "more.npy", "-k", "3"]));
    for (q, ids, d) in rows {
        assert_eq!(ids[0], 90_000 + q as i64);
        assert!(d[0].unwrap() < 1e-4);
    }
    // Adding without ids to an index that stores ids is refused and changes nothing.
    let before = std::fs::read(env.path("x.index")).unwrap();
    env.fails(&["add", "x.index", "more.npy"], 2, "pass ids");
    assert_eq!(before, std::fs::read(env.path("x.index")).unwrap());
}

#[test]
fn add_appends_sequential_ids_to_ivf() {
    let env = TestEnv::new("add-ivf");
    let d = 8;
    write_fvecs(&env.path("a.fvecs"), d, &lcg_vectors(2000, d, 3));
    write_fvecs(&env.path("b.fvecs"), d, &lcg_vectors(100, d, 4));
    env.ok(&["build", "a.fvecs", "-o", "x.index", "--factory", "IVF16,Flat", "--nprobe", "16", "-q"]);
    env.ok(&["add", "x.index", "b.fvecs", "-q"]);
    let rows = parse_jsonl(&env.ok(&["search", "x.index", "b.fvecs", "-k", "1"]));
    for (q, ids, _) in rows {
        assert_eq!(ids[0], 2000 + q as i64, "added vector {q} keeps id ntotal+{q}");
    }
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "x.index"])).unwrap();
    assert_eq!(info["nprobe"], 16);
    assert_eq!(info["nlist"], 16);
    assert_eq!(info["meta"]["inputs"].as_array().unwrap().len(), 2);
}

#[test]
fn cosine_metric_normalizes_on_build_add_and_search() {
    let env = TestEnv::new("cosine");
    let d = 4;
    // Same directions, different lengths: cosine must treat them as identical.
    let base = vec![1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0];
    write_fvecs(&env.path("b.fvecs"), d, &base);
    write_fvecs(&env.path("q.fvecs"), d, &[0.0, 0.0, 30.0, 0.0]);
    env.ok(&["build", "b.fvecs", "-o", "c.index", "--factory", "Flat", "--metric", "cosine", "-q"]);
    let rows = parse_jsonl(&env.ok(&["search", "c.index", "q.fvecs", "-k", "2"]));
    assert_eq!(rows[0].1[0], 2);
    assert!((rows[0].2[0].unwrap() - 1.0).abs() < 1e-5, "cosine similarity 1, got {:?}", rows[0].2);
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "c.index"])).unwrap();
    assert_eq!(info["metric"], "cosine");
    assert_eq!(info["meta"]["normalize"], true);
}

#[test]
fn hnsw_build_reports_parameters_and_ef_search_changes_results() {
    let env = TestEnv::new("hnsw");
    env.ok(&[
        "build",
        &sample(SAMPLE_BASE),
        "-o",
        "h.index",
        "--factory",
        "HNSW16",
        "--ef-construction",
        "40",
        "--ef-search",
        "24",
        "-q",
    ]);
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", "h.index"])).unwrap();
    assert_eq!(info["M"], 16);
    assert_eq!(info["efSearch"], 24);
    assert_eq!(info["efConstruction"], 40);
    let gt = read_ivecs(&testdata(SAMPLE_GT));
    let recall_at = |ef: &str| {
        let rows = parse_jsonl(&env.ok(&["search", "h.index", &sample(SAMPLE_QUERY), "-k", "10", "--ef-search", ef]));
        recall(&rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), &gt, 10)
    };
    let lo = recall_at("10");
    let hi = recall_at("200");
    assert!(hi >= 0.95 && hi > lo, "efSearch 200 recall {hi}, efSearch 10 recall {lo}");
}

#[test]
fn inputs_in_every_format_give_the_same_index() {
    let env = TestEnv::new("formats");
    let d = 3;
    let data: Vec<f32> = vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 9.0, 8.0, 7.0];
    write_fvecs(&env.path("v.fvecs"), d, &data);
    write_npy_f32(&env.path("v.npy"), 4, d, &data);
    let f16: Vec<u8> = data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    write_npy(&env.path("h.npy"), "<f2", "(4, 3)", &f16);
    let u8s: Vec<u8> = data.iter().map(|&x| x as u8).collect();
    write_npy(&env.path("u.npy"), "|u1", "(4, 3)", &u8s);
    std::fs::write(env.path("v.csv"), "id,a,b,c\n100,0,0,0\n101,1,1,1\n102,5,5,5\n103,9,8,7\n").unwrap();
    let mut bvecs = Vec::new();
    for row in data.chunks(d) {
        bvecs.extend_from_slice(&(d as i32).to_le_bytes());
        bvecs.extend(row.iter().map(|&x| x as u8));
    }
    std::fs::write(env.path("v.bvecs"), bvecs).unwrap();
    std::fs::write(env.path("q.csv"), "4.9,5.1,5\n").unwrap();

    let mut results = Vec::new();
    for (file, extra) in [
        ("v.fvecs", vec![]),
        ("v.npy", vec![]),
        ("h.npy", vec![]),
        ("u.npy", vec![]),
        ("v.bvecs", vec![]),
        ("v.csv", vec!["--id-column", "id"]),
    ] {
        let out = format!("{file}.index");
        let mut args = vec!["build", file, "-o", &out, "-q"];
        args.extend(extra);
        env.ok(&args);
        let rows = parse_jsonl(&env.ok(&["search", &out, "q.csv", "-k", "2"]));
        results.push((file, rows[0].1.clone()));
    }
    for (file, ids) in &results {
        let want = if *file == "v.csv" { vec![102, 103] } else { vec![2, 3] };
        assert_eq!(ids, &want, "{file}");
    }
    // stdin with --input-format
    let out = env
        .cmd()
        .args(["search", "v.fvecs.index", "-", "--input-format", "fvecs", "-k", "1"])
        .stdin(std::fs::File::open(env.path("v.fvecs")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = parse_jsonl(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(rows.iter().map(|r| r.1[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

#[test]
fn output_formats_agree() {
    let env = TestEnv::new("outputs");
    let d = 8;
    write_fvecs(&env.path("b.fvecs"), d, &lcg_vectors(300, d, 9));
    write_fvecs(&env.path("q.fvecs"), d, &lcg_vectors(7, d, 10));
    env.ok(&["build", "b.fvecs", "-o", "x.index", "-q"]);
    let jsonl = parse_jsonl(&env.ok(&["search", "x.index", "q.fvecs", "-k", "5", "--format", "jsonl"]));
    let csv = env.ok(&["search", "x.index", "q.fvecs", "-k", "5", "--format", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("query,rank,id,distance"));
    let csv_ids: Vec<i64> = lines.map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    let json_ids: Vec<i64> = jsonl.iter().flat_map(|r| r.1.clone()).collect();
    assert_eq!(csv_ids, json_ids);
    // Text formats with -o go to the file (atomically), not stdout.
    let to_file = env.ok(&["search", "x.index", "q.fvecs", "-k", "5", "--format", "csv", "-o", "hits.csv"]);
    assert!(to_file.is_empty());
    assert_eq!(std::fs::read_to_string(env.path("hits.csv")).unwrap(), csv);
    assert_eq!(leftovers(&env.dir), Vec::<String>::new());
    let table = env.ok(&["search", "x.index", "q.fvecs", "-k", "5", "--format", "table"]);
    assert!(table.contains("distance") && table.contains(&json_ids[0].to_string()));

    env.ok(&["search", "x.index", "q.fvecs", "-k", "5", "--format", "ivecs", "-o", "hits.ivecs"]);
    let iv: Vec<i64> = read_ivecs(&env.path("hits.ivecs")).into_iter().flatten().map(|x| x as i64).collect();
    assert_eq!(iv, json_ids);
    assert!(env.path("hits.fvecs").exists(), "distances beside the ids");

    env.ok(&["search", "x.index", "q.fvecs", "-k", "5", "--format", "npy", "-o", "hits.npy"]);
    let npy = std::fs::read(env.path("hits.npy")).unwrap();
    let body = &npy[npy.len() - 7 * 5 * 8..];
    let ids: Vec<i64> = body.chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(ids, json_ids);
    let dnpy = std::fs::read(env.path("hits.distances.npy")).unwrap();
    let dbody = &dnpy[dnpy.len() - 7 * 5 * 4..];
    let d0 = f32::from_le_bytes(dbody[..4].try_into().unwrap()) as f64;
    assert!((d0 - jsonl[0].2[0].unwrap()).abs() < 1e-4);
}

#[test]
fn k_larger_than_ntotal_pads_with_minus_one() {
    let env = TestEnv::new("pad");
    write_fvecs(&env.path("b.fvecs"), 2, &[0.0, 0.0, 1.0, 1.0]);
    env.ok(&["build", "b.fvecs", "-o", "x.index", "-q"]);
    let rows = parse_jsonl(&env.ok(&["search", "x.index", "b.fvecs", "-k", "4"]));
    assert_eq!(rows[0].1, vec![0, 1, -1, -1]);
    assert_eq!(rows[0].2[2], None);
}

#[test]
fn range_search_returns_everything_within_radius() {
    let env = TestEnv::new("range");
    write_fvecs(&env.path("b.fvecs"), 1, &[0.0, 1.0, 2.0, 3.0, 10.0]);
    write_fvecs(&env.path("q.fvecs"), 1, &[1.1]);
    env.ok(&["build", "b.fvecs", "-o", "x.index", "-q"]);
    // squared L2 radius 1.5: 1 (0.01), 2 (0.81), 0 (1.21)
    let rows = parse_jsonl(&env.ok(&["search", "x.index", "q.fvecs", "--radius", "1.5"]));
    assert_eq!(rows[0].1, vec![1, 2, 0]);
}
