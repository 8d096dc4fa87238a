//! Filtered benchmarks (`bench --filter`, issue 14): recall and speed of a search restricted
//! to the vectors whose metadata match a filter, against the exact filtered ground truth, next
//! to the usual workaround measured in the same run (post-filtering: an unfiltered search for
//! `10·k` neighbours whose non-matching hits are then dropped).
//!
//! Per filter, once: the filter is evaluated over each shard's [`MetaTable`] (timed: the
//! median of [`EVAL_RUNS`] evaluations is `filter_eval_ms`, what every query with its own
//! filter would pay before searching), and the ground truth is computed by brute force over
//! just the matching base vectors (a Flat index of those rows, searched unfiltered), so it
//! shares no code with the filtered search it judges. Per search setting: the filtered search
//! ([`Index::search_in`](crate::engine::index::Index::search_in) on every shard, merged) and
//! the post-filtering baseline, both measured like [`sweep_local`](super::sweep_local).
//!
//! Recall in these records: `recall_at_1/10/k` as unfiltered; `k_recall_at_k` (and the
//! baseline's) by [`filtered_recall`], over the true neighbours there are when fewer than `k`
//! vectors match.
//!
//! The base vectors' row numbers must be the FAISS ids (an index built from `--base` without
//! `--ids`, as `bench --factory` builds, or string ids, which are positions too).

use super::{measure, record, settings_for, BenchOptions, BuildCost, GroundTruth, Record, Setting};
use crate::engine::error::{Error, Result};
use crate::engine::filter::{matching_ids, Filter, MetaTable};
use crate::engine::index::{FilterPath, IdSet, Index, IndexSpec, Metric, Neighbors, SearchParams};
use crate::engine::io::VectorFile;
use crate::engine::jobs::{for_each_batch, stopped};
use crate::engine::metrics::one_recall_at_k;
use crate::engine::shards::{merge_neighbors, ShardSet};
use crate::engine::Progress;
use serde::Serialize;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Instant;

/// Evaluations of each filter timed for `filter_eval_ms` (the median is reported).
pub const EVAL_RUNS: usize = 5;

/// How many times `k` the post-filtering baseline fetches before dropping non-matching hits.
pub const OVERFETCH: usize = 10;

/// A filter to benchmark: its JSON text (as given, for the record) and the parsed filter.
#[derive(Debug, Clone)]
pub struct FilterCase {
    /// The filter as the user wrote it.
    pub text: String,
    /// The parsed filter.
    pub filter: Filter,
}

impl FilterCase {
    /// Parse `text` ([`Filter::parse`]).
    ///
    /// Errors: `InvalidInput` naming the part of the filter at fault.
    pub fn parse(text: &str) -> Result<FilterCase> {
        Ok(FilterCase { text: text.to_string(), filter: Filter::parse(text)? })
    }
}

/// The filter facts and the post-filtering baseline of one record (flattened into it; absent
/// from unfiltered records).
#[derive(Debug, Clone, Serialize)]
pub struct FilterStats {
    /// The filter's JSON text.
    pub filter: String,
    /// Vectors matching the filter, over all shards.
    pub matched: usize,
    /// `matched / ntotal` (0 for an empty index).
    pub selectivity: f64,
    /// Evaluating the filter over the metadata to the set of ids, milliseconds (median of
    /// [`EVAL_RUNS`]; every shard's table). Paid once per batch here; once per query when each
    /// query has its own filter.
    pub filter_eval_ms: f64,
    /// The path the filtered search took on the first shard: `selector`, `exact` or `empty`
    /// ([`FilterPath::kind`]).
    pub filter_path: String,
    /// The path in words, with the widened nprobe/efSearch of the selector path.
    pub filter_path_detail: String,
    /// IVF nprobe the selector path used (widened from the setting's).
    pub filter_nprobe: Option<usize>,
    /// HNSW efSearch the selector path used (widened from the setting's).
    pub filter_ef_search: Option<usize>,
    /// Neighbours the post-filtering baseline asks for: [`OVERFETCH`]`·k`.
    pub baseline_k: usize,
    /// The baseline's 1-recall@1 against the filtered ground truth.
    pub baseline_recall_at_1: f64,
    /// The baseline's k-recall@k against the filtered ground truth ([`filtered_recall`]).
    pub baseline_k_recall_at_k: f64,
    /// Mean fraction of the k result slots the baseline filled (1: k matching hits were in
    /// every over-fetched list).
    pub baseline_filled: f64,
    /// The baseline's queries per second, all queries in batches (search and dropping).
    pub baseline_qps_batch: f64,
}

/// One filter evaluated over a set's shards.
pub struct Evaluated {
    /// The matching FAISS ids of each shard.
    pub sets: Vec<IdSet>,
    /// All matching ids (shards hold disjoint ids).
    pub all: IdSet,
    /// Median evaluation time, milliseconds.
    pub eval_ms: f64,
}

/// Evaluate `case` over `tables` (one per shard, in shard order), [`EVAL_RUNS`] times.
///
/// Errors: `InvalidInput` for a filter that does not fit the metadata (unknown field, type
/// mismatch), or when the number of tables is not the number of shards.
pub fn evaluate(case: &FilterCase, tables: &[MetaTable], shards: usize) -> Result<Evaluated> {
    if tables.len() != shards {
        return Err(Error::invalid(format!("{} metadata tables for {shards} shards", tables.len())));
    }
    let mut times = Vec::with_capacity(EVAL_RUNS);
    let mut sets = Vec::new();
    for _ in 0..EVAL_RUNS {
        let t = Instant::now();
        sets = tables.iter().map(|t| matching_ids(&case.filter, t).map(IdSet::new)).collect::<Result<Vec<_>>>()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let all = IdSet::new(sets.iter().flat_map(|s| s.as_slice().iter().copied()).collect());
    Ok(Evaluated { sets, all, eval_ms: times[times.len() / 2] })
}

/// Exact filtered ground truth: the `k` nearest of the `base` rows whose numbers are in
/// `matches`, for each query (`nq × d` f32), by a Flat index of just those rows with `metric`
/// (padded with −1 when fewer than `k` match). Reads the base once, `batch` rows at a time.
///
/// Errors: `InvalidInput` when a matching id is not a row of the base (the index's ids are not
/// base row numbers); reading errors; `Interrupted` when `stop` is set.
#[allow(clippy::too_many_arguments)]
pub fn filtered_ground_truth(
    base: &VectorFile,
    metric: Metric,
    queries: &[f32],
    matches: &IdSet,
    k: usize,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<GroundTruth> {
    let d = base.dim();
    let nq = queries.len() / d.max(1);
    let ids = matches.as_slice();
    if let Some(&last) = ids.last() {
        if last as u64 >= base.len() as u64 {
            return Err(Error::invalid(format!(
                "the filter matches id {last}, but {} has {} vectors: bench --filter needs an index whose ids are the base's row numbers (built from --base without --ids)",
                base.path().display(),
                base.len()
            )));
        }
    }
    let spec = IndexSpec { factory: "Flat".into(), metric, dim: d };
    let mut flat = Index::create(&spec, false)?;
    let mut next = 0usize;
    let mut picked: Vec<f32> = Vec::new();
    if !ids.is_empty() {
        for_each_batch(base, batch.max(1), "ground truth", progress, stop, &mut |start, x| {
            let end = (start + x.len() / d) as i64;
            picked.clear();
            while next < ids.len() && ids[next] < end {
                let r = ids[next] as usize - start;
                picked.extend_from_slice(&x[r * d..(r + 1) * d]);
                next += 1;
            }
            if picked.is_empty() {
                return Ok(());
            }
            flat.add(picked.as_slice(), None)
        })?;
    }
    let params = SearchParams { k, nprobe: None, ef_search: None };
    let mut out = Vec::with_capacity(nq * k);
    for chunk in queries.chunks(batch.max(1) * d.max(1)) {
        stopped(stop)?;
        let n = if ids.is_empty() { vec![-1; chunk.len() / d * k] } else { flat.search(chunk, &params)?.ids };
        out.extend(n.into_iter().map(|p| if p < 0 { -1 } else { ids[p as usize] }));
    }
    Ok(GroundTruth { nq, k, ids: out })
}

/// k-recall@k when fewer than `k` vectors may match: |found top-k ∩ true top-k| over the
/// number of true neighbours (ids ≥ 0 among the first `k` of each truth row), summed over
/// queries; equal to [`recall_at_k`](crate::engine::metrics::recall_at_k) when every truth
/// row is full, and 1 for a search that finds all of fewer than `k` matches. 1 when no query
/// has any true neighbour.
pub fn filtered_recall(found: &[i64], k_found: usize, gt: &GroundTruth, k: usize) -> f64 {
    let (mut hits, mut total) = (0usize, 0usize);
    for q in 0..gt.nq {
        let t = &gt.ids[q * gt.k..q * gt.k + k];
        let f = &found[q * k_found..q * k_found + k];
        total += t.iter().filter(|&&id| id >= 0).count();
        hits += f.iter().filter(|&&id| id >= 0 && t.contains(&id)).count();
    }
    if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    }
}

/// Post-filtering: of each row of `n` (nearest first), the first `k` ids in `keep`, padded
/// with −1 (distance `pad`) when fewer are there.
pub fn post_filter(n: &Neighbors, keep: &IdSet, k: usize, pad: f32) -> Neighbors {
    let mut out = Neighbors { nq: n.nq, k, ids: Vec::with_capacity(n.nq * k), dists: Vec::with_capacity(n.nq * k) };
    for q in 0..n.nq {
        let (ids, dists) = (&n.ids[q * n.k..(q + 1) * n.k], &n.dists[q * n.k..(q + 1) * n.k]);
        let before = out.ids.len();
        for (&id, &dist) in ids.iter().zip(dists) {
            if out.ids.len() - before == k {
                break;
            }
            if id >= 0 && keep.contains(id) {
                out.ids.push(id);
                out.dists.push(dist);
            }
        }
        let filled = out.ids.len() - before;
        out.ids.extend(std::iter::repeat_n(-1, k - filled));
        out.dists.extend(std::iter::repeat_n(pad, k - filled));
    }
    out
}

/// The filtered search over every shard, merged; the first shard's path goes to `path`.
fn search_filtered(
    set: &ShardSet,
    sets: &[IdSet],
    queries: &[f32],
    params: &SearchParams,
    path: &Mutex<Option<FilterPath>>,
) -> Result<Neighbors> {
    let mut parts = Vec::with_capacity(set.len());
    for (i, ((p, ix), sel)) in set.shards().iter().zip(sets).enumerate() {
        let (n, fp) =
            ix.search_in(queries, params, sel).map_err(|e| if set.len() > 1 { e.context(p.display()) } else { e })?;
        if i == 0 {
            *path.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        }
        parts.push(n);
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    Ok(merge_neighbors(&parts, params.k, set.metric().faiss_inner_product()))
}

/// Where the exact filtered ground truth comes from.
pub struct FilterBase<'a> {
    /// The base vectors (row numbers are FAISS ids).
    pub base: &'a VectorFile,
    /// Metric of the ground truth (the index's).
    pub metric: Metric,
}

/// Benchmark every filter in `cases` on `set` (whose shards have the metadata `tables`, in
/// shard order): for each filter, each setting of the sweep (as [`sweep_local`](super::sweep_local)
/// chooses them) gives one record of the filtered search with its [`FilterStats`] (the
/// post-filtering baseline measured at the same setting). Every filter is evaluated before
/// anything is searched, so a filter that does not fit the metadata fails first.
///
/// Errors: as [`evaluate`] and [`filtered_ground_truth`]; search errors; `Interrupted`.
#[allow(clippy::too_many_arguments)]
pub fn sweep_filtered(
    target: &str,
    set: &ShardSet,
    tables: &[MetaTable],
    cases: &[FilterCase],
    gt_from: &FilterBase,
    queries: &[f32],
    opts: &BenchOptions,
    cost: &BuildCost,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Vec<Record>> {
    let evaluated = cases
        .iter()
        .map(|c| evaluate(c, tables, set.len()).map_err(|e| e.context(format!("--filter {}", c.text))))
        .collect::<Result<Vec<_>>>()?;
    let info = set.shards()[0].1.describe()?;
    let settings = settings_for(
        info.nlist,
        info.hnsw_m.is_some(),
        false,
        &opts.nprobe,
        &opts.ef_search,
        opts.target_recall.is_some(),
    );
    let ntotal = set.ntotal();
    let pad = if set.metric().faiss_inner_product() { -f32::MAX } else { f32::MAX };
    let k = opts.k;
    let baseline_opts = BenchOptions { single_queries: 0, ..opts.clone() };
    let mut out = Vec::new();
    for (case, ev) in cases.iter().zip(&evaluated) {
        progress.note(&format!(
            "{target}: filter {} matches {} of {ntotal} vectors ({:.1} ms); exact filtered ground truth",
            case.text,
            ev.all.len(),
            ev.eval_ms
        ));
        let gt = filtered_ground_truth(gt_from.base, gt_from.metric, queries, &ev.all, k, opts.batch, progress, stop)?;
        let group = |s: &Setting| if s.ef_search.is_some() { s.nprobe.map_or(-1, |n| n as i64) } else { -2 };
        let mut reached = std::collections::HashSet::new();
        for s in &settings {
            if reached.contains(&group(s)) {
                continue;
            }
            stopped(stop)?;
            progress.note(&format!("{target}: {} filtered by {}", s.label(), case.text));
            let params = s.params(k);
            let path = Mutex::new(None);
            let m = measure(set.d(), queries, opts, stop, &|q| search_filtered(set, &ev.sets, q, &params, &path))?;
            let mut rec = record(target, &info.type_name, set.len(), 1, *s, &m, &gt, k, cost);
            rec.k_recall_at_k = filtered_recall(&m.found.ids, k, &gt, k);
            let wide = SearchParams { k: k * OVERFETCH, ..params };
            let b = measure(set.d(), queries, &baseline_opts, stop, &|q| {
                Ok(post_filter(&set.search(q, &wide)?, &ev.all, k, pad))
            })?;
            let f = &b.found;
            let filled = f.ids.iter().filter(|&&id| id >= 0).count() as f64 / (f.nq * k).max(1) as f64;
            let fp = path.into_inner().unwrap_or_else(|e| e.into_inner()).unwrap_or(FilterPath::Empty);
            let (fnp, fef) = match fp {
                FilterPath::Selector { nprobe, ef_search, .. } => (nprobe, ef_search),
                _ => (None, None),
            };
            rec.filter = Some(FilterStats {
                filter: case.text.clone(),
                matched: ev.all.len(),
                selectivity: if ntotal == 0 { 0.0 } else { ev.all.len() as f64 / ntotal as f64 },
                filter_eval_ms: ev.eval_ms,
                filter_path: fp.kind().to_string(),
                filter_path_detail: fp.to_string(),
                filter_nprobe: fnp,
                filter_ef_search: fef,
                baseline_k: k * OVERFETCH,
                baseline_recall_at_1: one_recall_at_k(&f.ids, k, &gt.ids, gt.k, 1),
                baseline_k_recall_at_k: filtered_recall(&f.ids, k, &gt, k),
                baseline_filled: filled,
                baseline_qps_batch: b.qps_batch,
            });
            if opts.target_recall.is_some_and(|r| rec.k_recall_at_k >= r) {
                reached.insert(group(s));
            }
            out.push(rec);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_filter_keeps_the_first_k_matches_and_pads() {
        let n =
            Neighbors { nq: 2, k: 4, ids: vec![5, 1, 7, 3, 2, 4, 6, -1], dists: vec![1., 2., 3., 4., 1., 2., 3., 9.] };
        let keep = IdSet::new(vec![1, 3, 6, 7]);
        let f = post_filter(&n, &keep, 2, f32::MAX);
        assert_eq!(f.ids, vec![1, 7, 6, -1]);
        assert_eq!(f.dists, vec![2., 3., 3., f32::MAX]);
        assert_eq!((f.nq, f.k), (2, 2));
    }

    #[test]
    fn filtered_recall_counts_only_true_neighbours() {
        let gt = GroundTruth { nq: 2, k: 3, ids: vec![1, 2, -1, 4, 5, 6] };
        // Query 0 has 2 true neighbours, both found; query 1 finds 1 of 3.
        assert_eq!(filtered_recall(&[2, 1, -1, 4, 9, -1], 3, &gt, 3), 3.0 / 5.0);
        let full = GroundTruth { nq: 1, k: 2, ids: vec![1, 2] };
        assert_eq!(filtered_recall(&[2, 7], 2, &full, 2), recall_at_k_ref(&[2, 7], &[1, 2]));
        let none = GroundTruth { nq: 1, k: 2, ids: vec![-1, -1] };
        assert_eq!(filtered_recall(&[-1, -1], 2, &none, 2), 1.0);
    }

    fn recall_at_k_ref(found: &[i64], truth: &[i64]) -> f64 {
        crate::engine::metrics::recall_at_k(found, found.len(), truth, truth.len(), found.len())
    }

    #[test]
    fn evaluation_counts_matches_per_shard() {
        let rows = vec![serde_json::json!({"g": "a"}), serde_json::json!({"g": "b"}), serde_json::json!({"g": "a"})];
        let b = crate::engine::filter::table::json_to_batch(&rows, "t").unwrap();
        let t1 = MetaTable::new(b.clone(), vec![0, 1, 2], None).unwrap();
        let t2 = MetaTable::new(b, vec![10, 11, 12], None).unwrap();
        let c = FilterCase::parse(r#"{"g": "a"}"#).unwrap();
        let ev = evaluate(&c, &[t1, t2], 2).unwrap();
        assert_eq!(ev.all.as_slice(), &[0, 2, 10, 12]);
        assert_eq!(ev.sets[1].as_slice(), &[10, 12]);
        assert!(ev.eval_ms >= 0.0);
        let bad = FilterCase::parse(r#"{"g": {"$gt": 3}}"#).unwrap();
        let t = MetaTable::new(
            crate::engine::filter::table::json_to_batch(&[serde_json::json!({"g": "a"})], "t").unwrap(),
            vec![0],
            None,
        )
        .unwrap();
        let e = evaluate(&bad, &[t], 1).err().unwrap().to_string();
        assert!(e.contains("holds string values, not numbers"), "{e}");
    }
}
