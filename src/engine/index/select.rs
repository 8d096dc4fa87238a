//! Search restricted to a set of ids (issue 14): a metadata filter, evaluated elsewhere, yields
//! the FAISS ids ([`IdSet`]) that may be returned, and [`Index::search_in`] /
//! [`Index::range_search_in`] search only those, inside FAISS, so that k results come back
//! whenever k vectors match (post-filtering an over-fetched result cannot promise that).
//!
//! **Two paths** ([`FilterPath`]), chosen per call:
//! - *Selector*: a FAISS `IDSelector` (a bitmap when the ids are dense, `IDSelectorBatch`
//!   otherwise) in the per-call `SearchParameters` of the index that does the work, through
//!   IDMap/IDMap2, PreTransform and Refine wrappers. An approximate index must look further
//!   when few vectors match, so with `s = len / ntotal` the search is widened from the caller's
//!   `nprobe` / `ef_search` (else the index's own): IVF `nprobe' = min(nlist, ⌈nprobe / s⌉)`,
//!   HNSW `efSearch' = min(`[`EF_SEARCH_CAP`]`, ⌈max(efSearch, k) / s⌉)` (never below
//!   efSearch). The values used are reported.
//! - *Exact*: the matching vectors are reconstructed (4 MiB at a time) and compared with every
//!   query by FAISS's brute-force kernels: exact, and cheaper when few vectors match. The
//!   distances are those the index reports (squared L2 or inner product of the decoded
//!   vectors; in the space after a PreTransform; a Refine's refinement index).
//!
//! **The rule** ([`Index::search_in`]): exact when the index cannot take a selector (FAISS's
//! IndexPQ, additive quantizers such as RQ/LSQ, fast-scan PQ refuse one), or when `len` is at
//! most the number of distances the widened selector search is estimated to compute per query:
//! `ntotal` for flat indices (they scan everything), `nlist + nprobe' · ntotal / nlist` list
//! entries for IVF, `2 · M · efSearch'` for HNSW (the level-0 links of each node it expands).
//! Otherwise the selector. An index that allows neither (LSH, IVF spectral hashing: Hamming
//! distances; binary indices) refuses filters.
//!
//! Range search takes the selector when the index honours one, so its hits are exactly the
//! unfiltered hits that are in the set; otherwise the exact scan within the radius.

use super::ffi::{RawIndex, RawInfo};
use super::{Index, Neighbors, RangeHits, RowsRef, SearchParams};
use crate::engine::error::{Error, ErrorKind, Result};
use std::fmt;

/// The most a filtered HNSW search widens `efSearch` to. A set so small that it would need
/// more (`len / ntotal < max(efSearch, k) / 2048`) goes to the exact scan whenever it holds at
/// most `2 · M · 2048` vectors (131 072 for HNSW32): with efSearch 16, every such set of an
/// HNSW32 index below 16 M vectors. Above that, the selector's recall drops.
pub const EF_SEARCH_CAP: usize = 2048;

/// The FAISS ids a search is restricted to: sorted ascending, deduplicated, all >= 0. Under
/// IDMap/IDMap2 these are the user's ids; otherwise the index's own (positions, or IVF ids).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdSet {
    ids: Vec<i64>,
}

impl IdSet {
    /// The set of `ids`: sorted and deduplicated; negative ids (which name no stored vector:
    /// FAISS's "no result" is -1) are dropped.
    pub fn new(mut ids: Vec<i64>) -> IdSet {
        ids.retain(|&i| i >= 0);
        ids.sort_unstable();
        ids.dedup();
        IdSet { ids }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no ids (a search in it matches nothing).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, ascending.
    pub fn as_slice(&self) -> &[i64] {
        &self.ids
    }

    /// Whether `id` is in the set (binary search).
    pub fn contains(&self, id: i64) -> bool {
        self.ids.binary_search(&id).is_ok()
    }
}

impl FromIterator<i64> for IdSet {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> IdSet {
        IdSet::new(iter.into_iter().collect())
    }
}

/// Which path a restricted search ran (reported to users with `-v` and in bench records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPath {
    /// Nothing matched (empty set or empty index): every label -1, FAISS not asked.
    Empty,
    /// Exact scan of just the matching vectors; `candidates` is how many were found in the
    /// index.
    Exact {
        /// Vectors scanned.
        candidates: usize,
    },
    /// An IDSelector in FAISS's SearchParameters, with the widened parameters actually used.
    Selector {
        /// Ids in the set.
        candidates: usize,
        /// IVF lists probed (IVF only).
        nprobe: Option<usize>,
        /// HNSW efSearch (HNSW only).
        ef_search: Option<usize>,
        /// Queries that got fewer than k matches this way and were answered by the exact
        /// scan instead (a filter correlated with where the vectors lie).
        rescued: usize,
    },
}

impl FilterPath {
    /// A stable one-word name for records: `empty`, `exact` or `selector`.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterPath::Empty => "empty",
            FilterPath::Exact { .. } => "exact",
            FilterPath::Selector { .. } => "selector",
        }
    }
}

impl fmt::Display for FilterPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterPath::Empty => write!(f, "no vector matches"),
            FilterPath::Exact { candidates } => write!(f, "exact scan of {candidates} vectors"),
            FilterPath::Selector { candidates, nprobe, ef_search, rescued } => {
                write!(f, "IDSelector ({candidates} candidates")?;
                if let Some(n) = nprobe {
                    write!(f, ", nprobe {n}")?;
                }
                if let Some(e) = ef_search {
                    write!(f, ", efSearch {e}")?;
                }
                if *rescued > 0 {
                    write!(f, "; {rescued} queries short of k matches rescanned exactly")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// Which path to run (tests can force one; the public methods never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Force {
    Auto,
    #[cfg(test)]
    Exact,
    #[cfg(test)]
    Selector,
}

/// The selector parameters for `sel` on an index described by `info`: widened nprobe /
/// efSearch to pass (None: the index's own) and the estimated distance computations per
/// query (see the module documentation).
fn widen(info: &RawInfo, ntotal: usize, params: &SearchParams, len: usize) -> (Option<usize>, Option<usize>, usize) {
    let s = (len as f64 / ntotal.max(1) as f64).clamp(f64::MIN_POSITIVE, 1.0);
    let grow = |base: usize| (base as f64 / s).ceil().min(usize::MAX as f64) as usize;
    if let Some(nlist) = info.nlist.filter(|&n| n > 0) {
        let base = params.nprobe.or(info.nprobe).unwrap_or(1).max(1);
        let nprobe = grow(base).min(nlist).max(base.min(nlist));
        let cost = nlist.saturating_add(nprobe.saturating_mul(ntotal) / nlist);
        // An IVF with an HNSW quantizer keeps the caller's efSearch for that quantizer.
        return (Some(nprobe), params.ef_search, cost);
    }
    if let Some(m) = info.hnsw_m {
        let base = params.ef_search.or(info.ef_search).unwrap_or(16).max(1);
        let ef = grow(base.max(params.k)).min(EF_SEARCH_CAP).max(base);
        return (None, Some(ef), ef.saturating_mul(2 * m.max(1)));
    }
    (None, None, ntotal)
}

/// `Unsupported` for a filtered search on a binary index.
fn refuse_binary(ix: &Index) -> Result<()> {
    if ix.is_binary() {
        return Err(Error::new(ErrorKind::Unsupported, "filters are not supported on binary indices"));
    }
    Ok(())
}

/// `Unsupported` when neither path applies.
fn neither(raw: &RawIndex) -> Result<Error> {
    let t = raw.describe()?.type_name;
    Ok(Error::new(
        ErrorKind::Unsupported,
        format!("filters are not supported on {t} (it neither takes an IDSelector nor reports plain L2 / inner-product distances)"),
    ))
}

impl Index {
    /// k-NN search of `queries` (`nq × d` f32 row-major) restricted to the ids in `sel`: the
    /// same contract as [`Index::search`] (distances, padding with id -1 past the matches,
    /// cosine normalization), plus the path that ran. `params.nprobe` / `params.ef_search`
    /// are the base the selector path widens from (see the module documentation).
    ///
    /// Errors: as [`Index::search`]; `Unsupported` for binary indices ("filters are not
    /// supported on binary indices") and index types that allow neither path (LSH, IVF
    /// spectral hashing).
    pub fn search_in<'a>(
        &self,
        queries: impl Into<RowsRef<'a>>,
        params: &SearchParams,
        sel: &IdSet,
    ) -> Result<(Neighbors, FilterPath)> {
        self.search_in_with(queries.into(), params, sel, Force::Auto)
    }

    fn search_in_with(
        &self,
        queries: RowsRef,
        params: &SearchParams,
        sel: &IdSet,
        force: Force,
    ) -> Result<(Neighbors, FilterPath)> {
        refuse_binary(self)?;
        self.raw.check_search(params)?;
        self.searchable()?;
        let q = self.check(queries, "queries")?;
        let (nq, k) = (q.n, params.k);
        let worst = if self.raw.is_inner_product() { -f32::MAX } else { f32::MAX };
        let padded = |path| {
            let n = nq.saturating_mul(k);
            Ok((Neighbors { nq, k, ids: vec![-1; n], dists: vec![worst; n] }, path))
        };
        if sel.is_empty() || self.ntotal() == 0 {
            return padded(FilterPath::Empty);
        }
        let raw = self.raw.float()?;
        let support = raw.filter_support()?;
        let info = raw.describe()?;
        let (nprobe, ef_search, cost) = widen(&info, self.ntotal(), params, sel.len());
        // An IVF's exact scan first walks every inverted list to find the matching vectors
        // (once per call, about twice the cost of checking each id), so it pays for a batch of
        // queries, not for one: per query it costs 2 · ntotal / nq + len against the
        // selector's probing (measured at 1M vectors, 0.1 %: one query 14.8 ms exact vs 6.2 ms
        // selector; 1,000 queries 32,000 vs 260 QPS).
        let ivf = info.nlist.is_some_and(|n| n > 0);
        let exact_cost = if ivf { 2 * self.ntotal() / nq.max(1) + sel.len() } else { sel.len() };
        let exact = match force {
            Force::Auto => support.exact && (!support.selector || exact_cost <= cost),
            #[cfg(test)]
            Force::Exact => true,
            #[cfg(test)]
            Force::Selector => false,
        };
        // Never a path the index does not allow (a selector can end the process when an IVF
        // scanner throws on it inside FAISS's OpenMP region).
        if !support.allows(exact) {
            return Err(neither(raw)?);
        }
        let selector = FilterPath::Selector { candidates: sel.len(), nprobe, ef_search, rescued: 0 };
        if nq == 0 {
            let path = if exact { FilterPath::Exact { candidates: 0 } } else { selector };
            return Ok((Neighbors { nq, k, ids: Vec::new(), dists: Vec::new() }, path));
        }
        let RowsRef::Float(x) = q.rows() else { return Err(self.raw.wrong_form()) };
        if !exact {
            if let Some((mut dists, mut ids)) = raw.search_selected(x, k, sel.as_slice(), nprobe, ef_search)? {
                // A graph or list search explores near the query; when the matching vectors
                // lie elsewhere (a filter correlated with the vectors: "only shoes" for a
                // query that is a shirt) it can end with fewer than k of them. Those queries
                // are answered again by the exact scan, so k results come back whenever k
                // vectors match.
                let want = k.min(sel.len());
                let short: Vec<usize> =
                    (0..nq).filter(|&i| ids[i * k..(i + 1) * k].iter().filter(|&&l| l >= 0).count() < want).collect();
                if !short.is_empty() && support.exact {
                    let d = self.d();
                    let xs: Vec<f32> = short.iter().flat_map(|&i| x[i * d..(i + 1) * d].iter().copied()).collect();
                    let (ed, ei, _) = raw.search_exact(&xs, k, sel.as_slice())?;
                    for (j, &i) in short.iter().enumerate() {
                        dists[i * k..(i + 1) * k].copy_from_slice(&ed[j * k..(j + 1) * k]);
                        ids[i * k..(i + 1) * k].copy_from_slice(&ei[j * k..(j + 1) * k]);
                    }
                }
                let path = FilterPath::Selector { candidates: sel.len(), nprobe, ef_search, rescued: short.len() };
                return Ok((Neighbors { nq, k, ids, dists }, path));
            }
            if !support.exact {
                return Err(Error::faiss(
                    "filtered search".to_string(),
                    "the index returned ids outside the filter (it ignored the IDSelector)".into(),
                ));
            }
        }
        let (dists, ids, found) = raw.search_exact(x, k, sel.as_slice())?;
        Ok((Neighbors { nq, k, ids, dists }, FilterPath::Exact { candidates: found }))
    }

    /// Range search of `queries` restricted to the ids in `sel`: the contract of
    /// [`Index::range_search`] (hits sorted closest first). Through an IDSelector when the
    /// index honours one (the hits are then exactly the unfiltered hits that are in `sel`),
    /// else an exact scan of the matching vectors within `radius`.
    ///
    /// Errors: as [`Index::range_search`]; `Unsupported` as [`Index::search_in`].
    pub fn range_search_in<'a>(&self, queries: impl Into<RowsRef<'a>>, radius: f32, sel: &IdSet) -> Result<RangeHits> {
        self.range_search_in_with(queries.into(), radius, sel, Force::Auto)
    }

    fn range_search_in_with(&self, queries: RowsRef, radius: f32, sel: &IdSet, force: Force) -> Result<RangeHits> {
        refuse_binary(self)?;
        self.raw.check_radius(radius)?;
        self.searchable()?;
        let q = self.check(queries, "queries")?;
        if sel.is_empty() || self.ntotal() == 0 || q.n == 0 {
            return Ok(RangeHits { lims: vec![0; q.n + 1], ids: Vec::new(), dists: Vec::new() });
        }
        let raw = self.raw.float()?;
        let support = raw.filter_support()?;
        let exact = match force {
            Force::Auto => !support.selector,
            #[cfg(test)]
            Force::Exact => true,
            #[cfg(test)]
            Force::Selector => false,
        };
        if !support.allows(exact) {
            return Err(neither(raw)?);
        }
        let RowsRef::Float(x) = q.rows() else { return Err(self.raw.wrong_form()) };
        let (lims, ids, dists) = raw.range_search_in(x, radius, sel.as_slice(), exact)?;
        Ok(RangeHits::sorted(lims, ids, dists, self.raw.is_inner_product()))
    }
}

#[cfg(test)]
mod tests;
