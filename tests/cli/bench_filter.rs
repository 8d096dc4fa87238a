//! `faissx bench --filter`: on Flat the filtered search equals the exact filtered ground
//! truth (recall 1.0), the post-filtering baseline's recall and fill equal an independent
//! computation (and fall short for a selective filter), and bad filters exit 2.

use crate::util::*;

const N: usize = 2000;
const D: usize = 8;
const NQ: usize = 30;

fn rare(i: usize) -> bool {
    i.is_multiple_of(100)
}

/// base.npy, q.npy, meta.jsonl (`g` is "rare" for every 100th vector: 1 %), and flat.index
/// built with that metadata; returns (base, queries).
fn setup(env: &TestEnv) -> (Vec<f32>, Vec<f32>) {
    let base = lcg_vectors(N, D, 7);
    let q = lcg_vectors(NQ, D, 8);
    write_npy_f32(&env.path("base.npy"), N, D, &base);
    write_npy_f32(&env.path("q.npy"), NQ, D, &q);
    let meta: String =
        (0..N).map(|i| format!("{{\"g\": \"{}\", \"n\": {i}}}\n", if rare(i) { "rare" } else { "common" })).collect();
    std::fs::write(env.path("meta.jsonl"), meta).unwrap();
    env.ok(&["build", "base.npy", "-o", "flat.index", "--factory", "Flat", "--metadata", "meta.jsonl", "-q"]);
    (base, q)
}

/// The `k` nearest base rows among those `keep` accepts, by squared L2, for each query.
fn brute(base: &[f32], q: &[f32], keep: &dyn Fn(usize) -> bool, k: usize) -> Vec<Vec<i64>> {
    q.chunks(D)
        .map(|x| {
            let mut d: Vec<(f32, i64)> = base
                .chunks(D)
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(i, b)| (b.iter().zip(x).map(|(a, c)| (a - c) * (a - c)).sum(), i as i64))
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            d.into_iter().take(k).map(|p| p.1).collect()
        })
        .collect()
}

fn overlap(found: &[Vec<i64>], truth: &[Vec<i64>], k: usize) -> f64 {
    let hits: usize =
        found.iter().zip(truth).map(|(f, t)| f.iter().filter(|id| **id >= 0 && t.contains(id)).count()).sum();
    hits as f64 / (found.len() * k) as f64
}

fn records(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn bench_filter_on_flat_is_exact_and_post_filtering_misses_selective_filters() {
    let env = TestEnv::new("bench-filter");
    let (base, q) = setup(&env);
    let out = env.ok(&[
        "bench",
        "flat.index",
        "--base",
        "base.npy",
        "--queries",
        "q.npy",
        "-k",
        "10",
        "--filter",
        r#"{"g": "rare"}"#,
        "--single-queries",
        "5",
        "--format",
        "jsonl",
        "-q",
    ]);
    let recs = records(&out);
    assert_eq!(recs.len(), 1, "{out}");
    let r = &recs[0];
    assert_eq!(r["filter"], r#"{"g": "rare"}"#);
    assert_eq!(r["matched"], 20);
    assert_eq!(r["selectivity"].as_f64().unwrap(), 0.01);
    assert_eq!(r["k_recall_at_k"].as_f64().unwrap(), 1.0, "Flat filtered search is exact: {r}");
    assert_eq!(r["recall_at_1"].as_f64().unwrap(), 1.0);
    assert!(["exact", "selector"].contains(&r["filter_path"].as_str().unwrap()), "{r}");
    assert!(r["filter_eval_ms"].as_f64().unwrap() >= 0.0 && r["qps_batch"].as_f64().unwrap() > 0.0);
    assert_eq!(r["baseline_k"], 100);
    // The baseline independently: the unfiltered top-100, its rare hits, the first 10 of them.
    let truth = brute(&base, &q, &|i| rare(i), 10);
    let wide = parse_jsonl(&env.ok(&["search", "flat.index", "q.npy", "-k", "100"]));
    let post: Vec<Vec<i64>> =
        wide.iter().map(|(_, ids, _)| ids.iter().copied().filter(|&i| rare(i as usize)).take(10).collect()).collect();
    let want = overlap(&post, &truth, 10);
    let got = r["baseline_k_recall_at_k"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-12, "baseline recall {got}, independently {want}");
    assert!(want < 0.5, "20 matches in 2000: the top-100 holds few of them ({want})");
    let filled = post.iter().map(Vec::len).sum::<usize>() as f64 / (NQ * 10) as f64;
    assert!((r["baseline_filled"].as_f64().unwrap() - filled).abs() < 1e-12, "{r}");
    let first: f64 = post.iter().zip(&truth).filter(|(p, t)| p.first() == t.first()).count() as f64 / NQ as f64;
    assert!((r["baseline_recall_at_1"].as_f64().unwrap() - first).abs() < 1e-12, "{r}");

    // Built by bench itself from --base with --metadata: two filters, one record each.
    let out = env.ok(&[
        "bench",
        "--base",
        "base.npy",
        "--metadata",
        "meta.jsonl",
        "--factory",
        "Flat",
        "--queries",
        "q.npy",
        "--filter",
        r#"{"g": "common", "n": {"$lt": 1000}}"#,
        "--filter",
        r#"{"n": {"$in": [3, 5, 7]}}"#,
        "--single-queries",
        "0",
        "--format",
        "jsonl",
        "-q",
    ]);
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "{out}");
    assert_eq!((recs[0]["matched"].as_u64(), recs[1]["matched"].as_u64()), (Some(990), Some(3)));
    for r in &recs {
        assert_eq!(r["k_recall_at_k"].as_f64().unwrap(), 1.0, "{r}");
        assert_eq!(r["target"], "Flat");
    }
    // Fewer matches than k: the ground truth and the search are padded alike.
    let few = brute(&base, &q, &|i| [3, 5, 7].contains(&i), 10);
    assert!(few.iter().all(|t| t.len() == 3));
    // Recall counts the true neighbours there are (3 per query), for the baseline too.
    let wide = parse_jsonl(&env.ok(&["search", "flat.index", "q.npy", "-k", "100"]));
    let post: Vec<Vec<i64>> = wide
        .iter()
        .map(|(_, ids, _)| ids.iter().copied().filter(|i| [3, 5, 7].contains(i)).take(10).collect())
        .collect();
    let hits: usize = post.iter().zip(&few).map(|(p, t)| p.iter().filter(|i| t.contains(i)).count()).sum();
    let got = recs[1]["baseline_k_recall_at_k"].as_f64().unwrap();
    assert!((got - hits as f64 / (NQ * 3) as f64).abs() < 1e-12, "baseline recall {got}, hits {hits}");
}

#[test]
fn bench_bad_filters_exit_2() {
    let env = TestEnv::new("bench-filter-bad");
    setup(&env);
    let run = |filter: &str, needle: &str| {
        env.fails(
            &["bench", "flat.index", "--base", "base.npy", "--queries", "q.npy", "--filter", filter, "-q"],
            2,
            needle,
        );
    };
    run(r#"{"g": {"$gt": 3}}"#, "field \"g\" holds string values, not numbers");
    run(r#"{"colour": "red"}"#, "no field \"colour\"");
    run(r#"{"g": {"$near": 1}}"#, "$near");
    run(r#"{"g": "#, "filter");
    env.fails(
        &["bench", "flat.index", "--queries", "q.npy", "--filter", r#"{"g": "rare"}"#],
        2,
        "--filter computes the exact filtered ground truth from the base vectors: give --base PATH",
    );
    env.ok(&["build", "base.npy", "-o", "plain.index", "--factory", "Flat", "-q"]);
    env.fails(
        &["bench", "plain.index", "--base", "base.npy", "--queries", "q.npy", "--filter", r#"{"g": "rare"}"#],
        2,
        "plain.index: the index has no metadata to filter on",
    );
    env.fails(
        &["bench", "--base", "base.npy", "--factory", "Flat", "--queries", "q.npy", "--filter", r#"{"g": "rare"}"#],
        2,
        "give the base vectors' metadata with --metadata PATH",
    );
}
