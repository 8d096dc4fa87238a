//! Scatter-gather over shards: several index files searched as one.
//!
//! A [`ShardSet`] holds opened indices of the same `d` and metric; a k-NN search asks every
//! shard for its top-k and merges them by distance (smaller is closer for l2, larger for
//! ip/cosine), a range search concatenates and sorts. With one shard it is the index itself.
//! Shards made by `faissx split` keep the original ids, so searching them equals searching
//! the whole (exactly, for Flat). This module must not open files or know about clap.

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{FilterPath, IdSet, Index, Metric, Neighbors, RangeHits, SearchParams};
use crate::engine::io::{check_dim, VectorFile};
use crate::engine::{jobs, Progress};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Opened shards searched as one index, optionally restricted to a set of ids per shard
/// (a metadata filter's matches, [`ShardSet::restrict`]).
pub struct ShardSet {
    shards: Vec<(PathBuf, Index)>,
    only: Option<Vec<IdSet>>,
    path: std::sync::Mutex<Option<FilterPath>>,
}

/// Check that every index has the first one's `d` and metric (normalization included),
/// naming the odd file; `same_d` / `same_metric` end the messages.
///
/// Errors: `DimensionMismatch` or `InvalidInput`.
pub(crate) fn check_same_space(items: &[(PathBuf, Index)], same_d: &str, same_metric: &str) -> Result<()> {
    let Some((p0, first)) = items.first() else {
        return Ok(());
    };
    for (p, idx) in &items[1..] {
        if idx.d() != first.d() {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!("{}: d={}, but {} has d={}: {same_d}", p.display(), idx.d(), p0.display(), first.d()),
            ));
        }
        if idx.metric() != first.metric() || idx.meta().normalize != first.meta().normalize {
            return Err(Error::invalid(format!(
                "{}: metric {}, but {} has metric {}: {same_metric}",
                p.display(),
                idx.metric(),
                p0.display(),
                first.metric()
            )));
        }
    }
    Ok(())
}

/// Refuse shards that share an id: the merged results would list such vectors twice (or
/// two different vectors under one id), with nothing to tell them apart. This happens with
/// indices built separately without `--ids` (each numbers its vectors from 0) and with a
/// shard left in a folder by an earlier split into more shards. Shards made by one `faissx
/// split` never overlap.
///
/// Costs one pass over every shard's ids (8 bytes per vector, plus a sort): IVF indices
/// read them from their lists, IDMap indices from their map; position-numbered indices have
/// the ids `0..ntotal` without reading anything.
///
/// Errors: `InvalidInput` naming two shards and an id they share.
pub fn check_disjoint_ids(shards: &[(PathBuf, Index)]) -> Result<()> {
    if shards.len() < 2 {
        return Ok(());
    }
    let total = shards.iter().map(|(_, s)| s.ntotal()).sum();
    let mut all: Vec<(i64, u32)> = Vec::with_capacity(total);
    for (i, (p, s)) in shards.iter().enumerate() {
        let ids = s.stored_ids(0, s.ntotal()).map_err(|e| e.context(format!("{}: reading its ids", p.display())))?;
        all.extend(ids.into_iter().map(|id| (id, i as u32)));
    }
    all.sort_unstable();
    if let Some(w) = all.windows(2).find(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1) {
        let (a, b) = (&shards[w[0].1 as usize].0, &shards[w[1].1 as usize].0);
        return Err(Error::invalid(format!(
            "{} and {} both hold id {}: searched together they would return vectors twice; give shards of one `faissx split` (a stale shard of an earlier split?) or indices built with disjoint --ids",
            a.display(),
            b.display(),
            w[0].0
        )));
    }
    Ok(())
}

impl ShardSet {
    /// A set of opened shards (at least one). All must have the same `d` and metric, and no
    /// id may be in two shards ([`check_disjoint_ids`]).
    ///
    /// Errors: `DimensionMismatch` naming the odd shard; `InvalidInput` for a metric mismatch
    /// or an id in two shards.
    pub fn new(shards: Vec<(PathBuf, Index)>) -> Result<ShardSet> {
        if shards.is_empty() {
            return Err(Error::invalid("no index given"));
        }
        check_same_space(&shards, "shards must have the same d", "shards must share the metric")?;
        check_disjoint_ids(&shards)?;
        Ok(ShardSet { shards, only: None, path: std::sync::Mutex::new(None) })
    }

    /// Open every path with `open` and check them as [`ShardSet::new`] does.
    pub fn open_with(paths: &[PathBuf], open: impl Fn(&Path) -> Result<Index>) -> Result<ShardSet> {
        let shards = paths.iter().map(|p| Ok((p.clone(), open(p)?))).collect::<Result<Vec<_>>>()?;
        ShardSet::new(shards)
    }

    /// The shards.
    pub fn shards(&self) -> &[(PathBuf, Index)] {
        &self.shards
    }

    /// Mutable shards (to set persistent parameters).
    pub fn shards_mut(&mut self) -> &mut [(PathBuf, Index)] {
        &mut self.shards
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a set has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Dimension `d`.
    pub fn d(&self) -> usize {
        self.shards[0].1.d()
    }

    /// The shared metric.
    pub fn metric(&self) -> Metric {
        self.shards[0].1.metric()
    }

    /// Vectors over all shards.
    pub fn ntotal(&self) -> usize {
        self.shards.iter().map(|(_, s)| s.ntotal()).sum()
    }

    /// A name for messages: the path, or `a.index+b.index+…`.
    pub fn name(&self) -> String {
        self.shards.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join("+")
    }

    /// k-NN search of every shard, merged into the overall top-k.
    pub fn search(&self, queries: &[f32], params: &SearchParams) -> Result<Neighbors> {
        let one = |i: usize| -> Result<Neighbors> {
            let (p, s) = &self.shards[i];
            match &self.only {
                None => s.search(queries, params),
                Some(sets) => {
                    let (n, path) = s.search_in(queries, params, &sets[i])?;
                    if i == 0 {
                        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
                    }
                    Ok(n)
                }
            }
            .map_err(|e| if self.shards.len() > 1 { e.context(p.display()) } else { e })
        };
        if self.shards.len() == 1 {
            return one(0);
        }
        let parts = (0..self.shards.len()).map(one).collect::<Result<Vec<_>>>()?;
        Ok(merge_neighbors(&parts, params.k, self.metric().faiss_inner_product()))
    }

    /// Range search of every shard, hits of each query merged and sorted closest first.
    pub fn range_search(&self, queries: &[f32], radius: f32) -> Result<RangeHits> {
        let one = |i: usize| -> Result<RangeHits> {
            let (p, s) = &self.shards[i];
            match &self.only {
                None => s.range_search(queries, radius),
                Some(sets) => s.range_search_in(queries, radius, &sets[i]),
            }
            .map_err(|e| if self.shards.len() > 1 { e.context(p.display()) } else { e })
        };
        if self.shards.len() == 1 {
            return one(0);
        }
        let parts = (0..self.shards.len()).map(one).collect::<Result<Vec<_>>>()?;
        let ip = self.metric().faiss_inner_product();
        let nq = parts[0].nq();
        let mut out = RangeHits { lims: vec![0], ids: Vec::new(), dists: Vec::new() };
        for q in 0..nq {
            let mut hits: Vec<(f32, i64)> = Vec::new();
            for part in &parts {
                let (ids, d) = part.row(q);
                hits.extend(d.iter().copied().zip(ids.iter().copied()));
            }
            sort_hits(&mut hits, ip);
            out.ids.extend(hits.iter().map(|h| h.1));
            out.dists.extend(hits.iter().map(|h| h.0));
            out.lims.push(out.ids.len());
        }
        Ok(out)
    }

    /// Restrict every later search to `sets[i]` on shard `i` (one set per shard).
    ///
    /// Errors: `InvalidInput` when the number of sets is not the number of shards.
    pub fn restrict(&mut self, sets: Vec<IdSet>) -> Result<()> {
        if sets.len() != self.shards.len() {
            return Err(Error::invalid(format!("{} id sets for {} shards", sets.len(), self.shards.len())));
        }
        self.only = Some(sets);
        Ok(())
    }

    /// How the last restricted k-NN search ran on the first shard.
    pub fn last_path(&self) -> Option<FilterPath> {
        *self.path.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set a persistent nprobe on every shard (range search has no per-call parameters).
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        self.shards.iter_mut().try_for_each(|(_, s)| s.set_nprobe(nprobe))
    }

    /// Set a persistent efSearch on every shard.
    pub fn set_ef_search(&mut self, ef: usize) -> Result<()> {
        self.shards.iter_mut().try_for_each(|(_, s)| s.set_ef_search(ef))
    }
}

/// Sort hits closest first (ascending distance for l2, descending similarity for ip); ties
/// keep their order (shard order, then rank within the shard).
fn sort_hits(hits: &mut [(f32, i64)], ip: bool) {
    hits.sort_by(|a, b| if ip { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) });
}

/// Merge per-shard top-k lists (each `nq × k`) into the overall top-k; ids of −1 (missing
/// neighbours) are dropped and the result padded like FAISS pads (−1, ±f32::MAX).
pub fn merge_neighbors(parts: &[Neighbors], k: usize, inner_product: bool) -> Neighbors {
    let nq = parts.first().map_or(0, |p| p.nq);
    let pad = if inner_product { -f32::MAX } else { f32::MAX };
    let mut out = Neighbors { nq, k, ids: Vec::with_capacity(nq * k), dists: Vec::with_capacity(nq * k) };
    let mut hits: Vec<(f32, i64)> = Vec::new();
    for q in 0..nq {
        hits.clear();
        for part in parts {
            let (ids, d) = part.row(q);
            hits.extend(d.iter().copied().zip(ids.iter().copied()).filter(|h| h.1 >= 0));
        }
        sort_hits(&mut hits, inner_product);
        hits.truncate(k);
        out.ids.extend(hits.iter().map(|h| h.1));
        out.dists.extend(hits.iter().map(|h| h.0));
        for _ in hits.len()..k {
            out.ids.push(-1);
            out.dists.push(pad);
        }
    }
    out
}

/// Search every row of `queries` over a shard set in batches, handing each batch's merged
/// results (with the index of its first query) to `sink`.
pub fn search_file(
    set: &ShardSet,
    queries: &VectorFile,
    params: &SearchParams,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(usize, &Neighbors) -> Result<()>,
) -> Result<()> {
    check_dim(queries.path(), queries.dim(), set.d())?;
    jobs::for_each_batch(queries, batch, "search", progress, stop, &mut |start, q| sink(start, &set.search(q, params)?))
}

/// Range-search every row of `queries` over a shard set in batches, like [`search_file`].
pub fn range_search_file(
    set: &ShardSet,
    queries: &VectorFile,
    radius: f32,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(usize, &RangeHits) -> Result<()>,
) -> Result<()> {
    check_dim(queries.path(), queries.dim(), set.d())?;
    jobs::for_each_batch(queries, batch, "search", progress, stop, &mut |start, q| {
        sink(start, &set.range_search(q, radius)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_with_ids(ids: &[i64]) -> (PathBuf, Index) {
        let spec = crate::engine::index::IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 2 };
        let mut ix = Index::create(&spec, true).unwrap();
        let x: Vec<f32> = (0..ids.len() * 2).map(|v| v as f32).collect();
        ix.add(&x, Some(ids)).unwrap();
        (PathBuf::from(format!("ids{}.index", ids[0])), ix)
    }

    #[test]
    fn shards_sharing_an_id_are_refused_by_name() {
        ShardSet::new(vec![flat_with_ids(&[1, 2, 3]), flat_with_ids(&[7, 4])]).unwrap();
        let e = ShardSet::new(vec![flat_with_ids(&[1, 2, 3]), flat_with_ids(&[7, 8]), flat_with_ids(&[9, 3])])
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().starts_with("ids1.index and ids9.index both hold id 3"), "{}", e.message());
    }

    #[test]
    fn merge_takes_global_top_k_and_pads() {
        let a = Neighbors { nq: 1, k: 3, ids: vec![1, 5, -1], dists: vec![0.5, 2.0, f32::MAX] };
        let b = Neighbors { nq: 1, k: 3, ids: vec![7, 8, 9], dists: vec![0.1, 1.0, 3.0] };
        let m = merge_neighbors(&[a.clone(), b.clone()], 3, false);
        assert_eq!(m.ids, vec![7, 1, 8]);
        let m = merge_neighbors(&[a, b], 6, false);
        assert_eq!(m.ids, vec![7, 1, 8, 5, 9, -1]);
        assert_eq!(m.dists[5], f32::MAX);
        let c = Neighbors { nq: 1, k: 2, ids: vec![1, 2], dists: vec![0.9, 0.2] };
        let d = Neighbors { nq: 1, k: 2, ids: vec![3, 4], dists: vec![0.5, 0.4] };
        assert_eq!(merge_neighbors(&[c, d], 2, true).ids, vec![1, 3]);
    }
}
