//! Benchmarks the way the ANN field reports them (ann-benchmarks, FAISS's `bench_*` scripts):
//! recall against ground truth, QPS in batch and single-query mode, latency percentiles,
//! build/train/add time, index size and peak memory, swept over search parameters and
//! factory strings, with FAISS-style operating points (`--target-recall`).
//!
//! This module measures and returns [`Record`]s; it does not print. Ground truth comes from
//! a file (`.ivecs`/`.npy`) or from an exact (Flat) search over the base vectors, cached next
//! to the queries. [`plot`] draws records as an SVG. Remote targets (`--server`) live in
//! [`remote`]; filtered search (`--filter`) and its post-filtering baseline in [`filter`].

pub mod filter;
pub mod plot;
pub mod remote;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{Index, IndexSpec, Metric, Neighbors, SearchParams};
use crate::engine::io::{write as vwrite, CsvOptions, VectorFile};
use crate::engine::jobs::stopped;
use crate::engine::jobs::{self, BuildOptions};
use crate::engine::metrics::{one_recall_at_k, percentile, recall_at_k};
use crate::engine::shards::ShardSet;
use crate::engine::Progress;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ground truth: the true `k` nearest neighbours of each of `nq` queries (row-major ids).
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Number of queries.
    pub nq: usize,
    /// Neighbours per query.
    pub k: usize,
    /// `nq × k` ids.
    pub ids: Vec<i64>,
}

impl GroundTruth {
    /// Check the ground truth fits `nq` queries and `k` neighbours; `what` names it.
    pub fn check(&self, what: &Path, nq: usize, k: usize) -> Result<()> {
        if self.nq != nq {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!("{}: ground truth has {} rows for {nq} queries", what.display(), self.nq),
            ));
        }
        if self.k < k {
            return Err(Error::invalid(format!(
                "{}: ground truth has {} columns, fewer than -k {k}",
                what.display(),
                self.k
            )));
        }
        Ok(())
    }
}

/// Read ground truth from `.ivecs` or `.npy` (int32/int64, `nq × k`).
pub fn load_ground_truth(path: &Path) -> Result<GroundTruth> {
    let f = VectorFile::open(path, None, &CsvOptions::default())?;
    let ids = f.read_int_matrix()?;
    Ok(GroundTruth { nq: f.len(), k: f.dim(), ids })
}

/// Where the exact ground truth of `queries` over `base` is cached: next to the queries,
/// `<queries stem>.gt-<base stem>-<metric>-k<k>.ivecs`.
pub fn ground_truth_cache_path(queries: &Path, base: &Path, metric: Metric, k: usize) -> PathBuf {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = format!("{}.gt-{}-{metric}-k{k}.ivecs", stem(queries), stem(base));
    queries.parent().map_or_else(|| PathBuf::from(&name), |d| d.join(&name))
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Exact ground truth by Flat search over `base`, read from or written to the cache next to
/// the queries (a cache older than the base or the queries is recomputed). Returns the
/// ground truth and whether it came from the cache. A cache that cannot be written (read-only
/// directory) is reported through `progress` and skipped.
#[allow(clippy::too_many_arguments)]
pub fn exact_ground_truth(
    base: &VectorFile,
    queries_path: &Path,
    queries: &[f32],
    metric: Metric,
    k: usize,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<(GroundTruth, bool)> {
    let nq = queries.len() / base.dim().max(1);
    let cache = ground_truth_cache_path(queries_path, base.path(), metric, k);
    if let (Some(c), Some(b), Some(q)) = (mtime(&cache), mtime(base.path()), mtime(queries_path)) {
        if c >= b && c >= q {
            if let Ok(gt) = load_ground_truth(&cache) {
                if gt.nq == nq && gt.k >= k {
                    return Ok((gt, true));
                }
            }
        }
    }
    progress.note(&format!(
        "computing exact ground truth (Flat, {metric}) for {nq} queries over {}",
        base.path().display()
    ));
    let spec = IndexSpec { factory: "Flat".into(), metric, dim: base.dim() };
    let flat = jobs::build(base, &spec, &BuildOptions { batch, ..BuildOptions::default() }, progress, stop)?;
    let res = flat.search(queries, &SearchParams { k, nprobe: None, ef_search: None })?;
    if let Err(e) = vwrite::ivecs(&cache, k, &res.ids) {
        progress.note(&format!("not caching ground truth ({})", e.chain()));
    } else {
        progress.note(&format!("cached ground truth in {}", cache.display()));
    }
    Ok((GroundTruth { nq, k, ids: res.ids }, false))
}

/// One search setting of a sweep. `None` keeps the index's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setting {
    /// IVF nprobe.
    pub nprobe: Option<usize>,
    /// HNSW efSearch.
    pub ef_search: Option<usize>,
}

impl Setting {
    /// The search parameters of this setting for `k` neighbours per query.
    pub fn params(&self, k: usize) -> SearchParams {
        SearchParams { k, nprobe: self.nprobe, ef_search: self.ef_search }
    }

    /// `nprobe=16,efSearch=64`, or `default`.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.nprobe {
            parts.push(format!("nprobe={n}"));
        }
        if let Some(e) = self.ef_search {
            parts.push(format!("efSearch={e}"));
        }
        if parts.is_empty() {
            "default".into()
        } else {
            parts.join(",")
        }
    }
}

/// The settings to try on an index: its nprobe values if IVF, efSearch values if HNSW (both
/// when the IVF quantizer is HNSW), in increasing order. Empty lists with `auto` give
/// FAISS-style doubling sweeps (nprobe 1, 2, 4 … nlist; efSearch 16 … 1024); without `auto`
/// the index's own setting.
pub fn settings_for(
    nlist: Option<usize>,
    hnsw: bool,
    ivf_hnsw_quantizer: bool,
    nprobe: &[usize],
    ef_search: &[usize],
    auto: bool,
) -> Vec<Setting> {
    let mut np: Vec<Option<usize>> = vec![None];
    if let Some(nlist) = nlist {
        let mut v: Vec<usize> = nprobe.iter().copied().filter(|&n| n <= nlist).collect();
        if v.is_empty() && auto {
            v = std::iter::successors(Some(1usize), |&n| (n * 2 <= nlist).then_some(n * 2)).collect();
            if v.last() != Some(&nlist) {
                v.push(nlist);
            }
        }
        if !v.is_empty() {
            v.sort_unstable();
            v.dedup();
            np = v.into_iter().map(Some).collect();
        }
    }
    let mut ef: Vec<Option<usize>> = vec![None];
    if hnsw || ivf_hnsw_quantizer {
        let mut v: Vec<usize> = ef_search.to_vec();
        if v.is_empty() && auto && hnsw {
            v = vec![16, 32, 64, 128, 256, 512, 1024];
        }
        if !v.is_empty() {
            v.sort_unstable();
            v.dedup();
            ef = v.into_iter().map(Some).collect();
        }
    }
    let mut out = Vec::new();
    for &n in &np {
        for &e in &ef {
            out.push(Setting { nprobe: n, ef_search: e });
        }
    }
    out
}

/// What one target (an index built from a factory string, or index files) cost to make.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildCost {
    /// Training time in seconds (`None` for index files).
    pub train_s: Option<f64>,
    /// Adding time in seconds.
    pub add_s: Option<f64>,
    /// Whole build (or load) time in seconds.
    pub build_s: f64,
    /// Serialized index size in bytes.
    pub index_bytes: u64,
    /// Peak resident memory (VmHWM) while building/loading and searching this target.
    pub mem_peak_bytes: u64,
    /// Resident anonymous memory (RssAnon) after searching, with the target still open: what
    /// a loaded index costs in heap; small for a memory-mapped one (`bench --mmap`).
    pub rss_anon_bytes: u64,
}

/// One measured setting: the JSON record of `faissx bench --format json` (stable names).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Factory string, index path(s) joined by `+`, or `server:<index>`.
    pub target: String,
    /// FAISS class of the (first) index.
    pub index_type: String,
    /// Number of shards searched as one.
    pub shards: usize,
    /// `nprobe=16`, `efSearch=64`, `default`.
    pub setting: String,
    /// IVF nprobe used (null: the index's own).
    pub nprobe: Option<usize>,
    /// HNSW efSearch used (null: the index's own).
    pub ef_search: Option<usize>,
    /// Neighbours per query.
    pub k: usize,
    /// Queries measured in batch mode.
    pub nq: usize,
    /// Fraction of queries whose true nearest neighbour is ranked first (FAISS R@1).
    pub recall_at_1: f64,
    /// Fraction of queries whose true nearest neighbour is among the first 10 (FAISS R@10;
    /// null when k < 10).
    pub recall_at_10: Option<f64>,
    /// Fraction of queries whose true nearest neighbour is among the first k (FAISS R@k).
    pub recall_at_k: f64,
    /// |found top-k ∩ true top-k| / k averaged over queries (ann-benchmarks' recall).
    pub k_recall_at_k: f64,
    /// Queries per second, all queries in one batch (best of the runs).
    pub qps_batch: f64,
    /// Queries per second, one query per call (null when single-query mode is off).
    pub qps_single: Option<f64>,
    /// Single-query latency, 50th percentile, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// Single-query latency, 95th percentile, milliseconds.
    pub latency_p95_ms: Option<f64>,
    /// Single-query latency, 99th percentile, milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Queries timed in single-query mode.
    pub nq_single: usize,
    /// Concurrent clients (remote targets; 1 otherwise).
    pub clients: usize,
    /// Single-query requests in flight per client (remote targets; 1 otherwise).
    pub pipeline: usize,
    /// Build cost of the target.
    #[serde(flatten)]
    pub cost: BuildCost,
    /// On the recall/QPS Pareto front of its target (FAISS's operating points).
    pub pareto: bool,
    /// The fastest setting reaching `--target-recall`.
    pub chosen: bool,
    /// Filtered search (`bench --filter`): the filter, its selectivity and evaluation time,
    /// the path taken and the post-filtering baseline. Absent from unfiltered records.
    #[serde(flatten)]
    pub filter: Option<filter::FilterStats>,
}

impl Record {
    /// The filter's text, if this record measured a filtered search.
    pub fn filter_text(&self) -> Option<&str> {
        self.filter.as_ref().map(|f| f.filter.as_str())
    }
}

/// Sweep options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Neighbours per query.
    pub k: usize,
    /// nprobe values to sweep (IVF).
    pub nprobe: Vec<usize>,
    /// efSearch values to sweep (HNSW).
    pub ef_search: Vec<usize>,
    /// Stop a target's sweep once `k_recall_at_k` reaches this, and mark the fastest such
    /// setting overall.
    pub target_recall: Option<f64>,
    /// Batch-mode repetitions (the best is reported, as ann-benchmarks does).
    pub runs: usize,
    /// Queries timed one by one (0: no single-query mode).
    pub single_queries: usize,
    /// Queries per batch in batch mode.
    pub batch: usize,
}

/// Measures of one search setting.
struct Measured {
    found: Neighbors,
    qps_batch: f64,
    latencies_ms: Vec<f64>,
}

/// Run the queries through `search` in batch mode (`runs` times, best kept) and one by one
/// for the first `single` queries.
fn measure(
    d: usize,
    queries: &[f32],
    opts: &BenchOptions,
    stop: &AtomicBool,
    search: &dyn Fn(&[f32]) -> Result<Neighbors>,
) -> Result<Measured> {
    let nq = queries.len() / d;
    let mut best = f64::INFINITY;
    let mut found = Neighbors::default();
    for _ in 0..opts.runs.max(1) {
        stopped(stop)?;
        let t = Instant::now();
        let mut all = Neighbors { nq: 0, k: opts.k, ids: Vec::with_capacity(nq * opts.k), dists: Vec::new() };
        for chunk in queries.chunks(opts.batch.max(1) * d) {
            let r = search(chunk)?;
            all.nq += r.nq;
            all.ids.extend_from_slice(&r.ids);
            all.dists.extend_from_slice(&r.dists);
        }
        best = best.min(t.elapsed().as_secs_f64());
        found = all;
    }
    let mut latencies_ms = Vec::with_capacity(opts.single_queries.min(nq));
    for q in queries.chunks(d).take(opts.single_queries) {
        stopped(stop)?;
        let t = Instant::now();
        search(q)?;
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Measured { found, qps_batch: nq as f64 / best.max(1e-9), latencies_ms })
}

/// Turn measures into a record (recall against `gt`).
#[allow(clippy::too_many_arguments)]
fn record(
    target: &str,
    index_type: &str,
    shards: usize,
    clients: usize,
    s: Setting,
    m: &Measured,
    gt: &GroundTruth,
    k: usize,
    cost: &BuildCost,
) -> Record {
    let f = &m.found;
    let single = !m.latencies_ms.is_empty();
    let total_ms: f64 = m.latencies_ms.iter().sum();
    let p = |x: f64| single.then(|| percentile(&m.latencies_ms, x));
    Record {
        target: target.to_string(),
        index_type: index_type.to_string(),
        shards,
        setting: s.label(),
        nprobe: s.nprobe,
        ef_search: s.ef_search,
        k,
        nq: f.nq,
        recall_at_1: one_recall_at_k(&f.ids, k, &gt.ids, gt.k, 1),
        recall_at_10: (k >= 10).then(|| one_recall_at_k(&f.ids, k, &gt.ids, gt.k, 10)),
        recall_at_k: one_recall_at_k(&f.ids, k, &gt.ids, gt.k, k),
        k_recall_at_k: recall_at_k(&f.ids, k, &gt.ids, gt.k, k),
        qps_batch: m.qps_batch,
        qps_single: single.then(|| m.latencies_ms.len() as f64 / (total_ms / 1e3).max(1e-12)),
        latency_p50_ms: p(50.0),
        latency_p95_ms: p(95.0),
        latency_p99_ms: p(99.0),
        nq_single: m.latencies_ms.len(),
        clients,
        pipeline: 1,
        cost: cost.clone(),
        pareto: false,
        chosen: false,
        filter: None,
    }
}

/// Reset the kernel's peak-RSS counter (VmHWM) so the next target's peak is its own
/// (`/proc/self/clear_refs`, Linux ≥ 4.0); a no-op where that is not allowed.
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory (VmHWM) of this process in bytes (0 if unknown).
pub fn peak_memory() -> u64 {
    crate::engine::index::MemStats::current().vm_hwm
}

/// A [`Progress`] wrapper that times the `train` and `add` stages of a build.
struct StageTimer<'a> {
    inner: &'a dyn Progress,
    cur: Mutex<Option<(String, Instant)>>,
    done: Mutex<Vec<(String, Duration)>>,
}

impl StageTimer<'_> {
    fn total(&self, stage: &str) -> Option<f64> {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let v: Vec<f64> = done.iter().filter(|(s, _)| s == stage).map(|(_, d)| d.as_secs_f64()).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }
}

impl Progress for StageTimer<'_> {
    fn start(&self, stage: &str, total: u64) {
        *self.cur.lock().unwrap_or_else(|p| p.into_inner()) = Some((stage.to_string(), Instant::now()));
        self.inner.start(stage, total);
    }
    fn inc(&self, n: u64) {
        self.inner.inc(n);
    }
    fn finish(&self) {
        if let Some((s, t)) = self.cur.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.done.lock().unwrap_or_else(|p| p.into_inner()).push((s, t.elapsed()));
        }
        self.inner.finish();
    }
    fn note(&self, msg: &str) {
        self.inner.note(msg);
    }
}

/// Build an index from `base` for `factory` with `metric`, timing train and add, and
/// measuring its serialized size (written to a temp file and removed).
pub fn build_target(
    base: &VectorFile,
    factory: &str,
    metric: Metric,
    build: &BuildOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<(Index, BuildCost)> {
    let timer = StageTimer { inner: progress, cur: Mutex::new(None), done: Mutex::new(Vec::new()) };
    let spec = IndexSpec { factory: factory.to_string(), metric, dim: base.dim() };
    let t = Instant::now();
    let mut index =
        jobs::build(base, &spec, build, &timer, stop).map_err(|e| e.context(format!("--factory {factory}")))?;
    let build_s = t.elapsed().as_secs_f64();
    // The size FAISS writes, measured in a private temp folder (removed with what is in it).
    let dir = tempfile::Builder::new()
        .prefix("faissx-bench-")
        .tempdir()
        .map_err(|e| Error::io(&std::env::temp_dir(), e).context("creating a temp folder"))?;
    let tmp = dir.path().join("built.index");
    index.save(&tmp)?;
    let index_bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    drop(dir);
    let cost = BuildCost {
        train_s: Some(timer.total("train").unwrap_or(0.0)),
        add_s: timer.total("add"),
        build_s,
        index_bytes,
        mem_peak_bytes: 0,
        rss_anon_bytes: 0,
    };
    Ok((index, cost))
}

/// Sweep the settings of one local target (an index or shards) and return its records.
/// With a target recall the sweep of each group of settings (increasing nprobe/efSearch)
/// stops at the first setting that reaches it, as FAISS's operating-point search does.
#[allow(clippy::too_many_arguments)]
pub fn sweep_local(
    target: &str,
    set: &ShardSet,
    queries: &[f32],
    gt: &GroundTruth,
    opts: &BenchOptions,
    cost: &BuildCost,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Vec<Record>> {
    let first = &set.shards()[0].1;
    let info = first.describe()?;
    let settings = settings_for(
        info.nlist,
        info.hnsw_m.is_some(),
        false,
        &opts.nprobe,
        &opts.ef_search,
        opts.target_recall.is_some(),
    );
    // Settings with an efSearch form one group per nprobe; nprobe-only settings one group.
    let group = |s: &Setting| if s.ef_search.is_some() { s.nprobe.map_or(-1, |n| n as i64) } else { -2 };
    let mut reached = std::collections::HashSet::new();
    let mut out = Vec::new();
    for s in settings {
        // Values increase within a group, so once the target is reached the rest only cost more.
        if reached.contains(&group(&s)) {
            continue;
        }
        stopped(stop)?;
        progress.note(&format!("{target}: {}", s.label()));
        let params = s.params(opts.k);
        let m = measure(set.d(), queries, opts, stop, &|q| set.search(q, &params))?;
        let rec = record(target, &info.type_name, set.len(), 1, s, &m, gt, opts.k, cost);
        if opts.target_recall.is_some_and(|r| rec.k_recall_at_k >= r) {
            reached.insert(group(&s));
        }
        out.push(rec);
    }
    Ok(out)
}

/// Mark each target's Pareto-optimal records (no other record of the target, with the same
/// filter, has both higher recall and higher QPS) and, with a target recall, the fastest record reaching it.
/// Returns the index of the chosen record.
pub fn mark(records: &mut [Record], target_recall: Option<f64>) -> Option<usize> {
    let n = records.len();
    for i in 0..n {
        let (ri, qi) = (records[i].k_recall_at_k, records[i].qps_batch);
        let dominated = (0..n).any(|j| {
            j != i
                && records[j].target == records[i].target
                && records[j].filter_text() == records[i].filter_text()
                && records[j].k_recall_at_k >= ri
                && records[j].qps_batch >= qi
                && (records[j].k_recall_at_k > ri || records[j].qps_batch > qi)
        });
        records[i].pareto = !dominated;
    }
    let r = target_recall?;
    let best = (0..n)
        .filter(|&i| records[i].k_recall_at_k >= r)
        .max_by(|&a, &b| records[a].qps_batch.total_cmp(&records[b].qps_batch))?;
    records[best].chosen = true;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_index_kind() {
        let s = settings_for(Some(16), false, false, &[64, 4, 1], &[32], false);
        assert_eq!(s.iter().map(|s| s.nprobe).collect::<Vec<_>>(), vec![Some(1), Some(4)]);
        assert!(s.iter().all(|s| s.ef_search.is_none()));
        let s = settings_for(Some(8), false, false, &[], &[], true);
        assert_eq!(s.iter().map(|s| s.nprobe.unwrap()).collect::<Vec<_>>(), vec![1, 2, 4, 8]);
        let s = settings_for(None, true, false, &[4], &[256, 16], false);
        assert_eq!(s.iter().map(|s| s.ef_search.unwrap()).collect::<Vec<_>>(), vec![16, 256]);
        assert_eq!(settings_for(None, false, false, &[4], &[16], true), vec![Setting::default()]);
    }

    fn rec(target: &str, r: f64, q: f64) -> Record {
        let m = Measured { found: Neighbors::default(), qps_batch: q, latencies_ms: vec![] };
        let gt = GroundTruth { nq: 0, k: 1, ids: vec![] };
        let mut x = record(target, "T", 1, 1, Setting::default(), &m, &gt, 1, &BuildCost::default());
        x.k_recall_at_k = r;
        x
    }

    #[test]
    fn pareto_and_target_recall() {
        let mut v = vec![rec("a", 0.5, 1000.0), rec("a", 0.9, 500.0), rec("a", 0.8, 400.0), rec("b", 0.95, 300.0)];
        assert_eq!(mark(&mut v, Some(0.9)), Some(1));
        assert_eq!(v.iter().map(|r| r.pareto).collect::<Vec<_>>(), vec![true, true, false, true]);
        assert!(v[1].chosen && !v[3].chosen);
        assert_eq!(mark(&mut v, Some(0.99)), None);
    }
}
