//! Limits of one request (docs/protocol.md §6): what a client may ask the server to allocate
//! or compute, checked before FAISS sees the request.

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::SearchParams;
use crate::engine::protocol::{Msg, MAX_K};

/// Largest `nq × k` of one search (results the server allocates and encodes: 12 bytes each,
/// plus the reply's msgpack).
pub const MAX_RESULTS: usize = 1 << 20;

/// Largest `efSearch` / `efConstruction` (HNSW allocates search heaps of this size per query;
/// `efSearch = 5e7` took 400 MB for one query).
pub const MAX_EF: u64 = 1 << 16;

/// Largest `nq × ntotal` of one range search (every stored vector may be a hit: FAISS
/// allocates 12 bytes per hit before the server can count them).
pub const MAX_RANGE_CANDIDATES: usize = 1 << 25;

/// Largest k-means work of one `compute_clustering`, in multiply-adds
/// ([`kmeans_work`](crate::engine::index::kmeans::kmeans_work)): a few seconds of one core.
pub const MAX_KMEANS_WORK: u128 = 1 << 36;

/// Largest `niter` of one `compute_clustering`.
pub const MAX_NITER: i64 = 1000;

/// Check a search knob against the server's limits (`nprobe` ≤ [`MAX_NLIST`](crate::engine::index::factory::MAX_NLIST), which
/// FAISS clamps to nlist anyway; `efSearch`/`efConstruction` ≤ [`MAX_EF`]).
pub fn knob(name: &str, v: u64) -> Result<usize> {
    let max = if name == "nprobe" { crate::engine::index::factory::MAX_NLIST } else { MAX_EF };
    if v == 0 || v > max {
        return Err(Error::invalid(format!("{name}={v} is out of range 1..={max}")));
    }
    Ok(v as usize)
}

/// Search parameters from a request's `params` map.
pub fn search_params(m: &Msg, k: usize) -> Result<SearchParams> {
    crate::engine::protocol::params::search_params(m, k, knob)
}

/// Refuse a search of `nq` queries whose `nq × k` results exceed [`MAX_RESULTS`].
pub fn check_results(nq: usize, k: usize) -> Result<()> {
    if nq.saturating_mul(k) > MAX_RESULTS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "nq={nq} × k={k} results exceed the server's limit of {MAX_RESULTS} per request: split the queries"
            ),
        ));
    }
    Ok(())
}

/// The request's `k` (default 10), in `1..=MAX_K`.
pub fn k_of(m: &Msg) -> Result<usize> {
    let k = m.int("k")?.unwrap_or(10);
    if !(1..=MAX_K as i64).contains(&k) {
        return Err(Error::invalid(format!("k={k} is out of range 1..={MAX_K}")));
    }
    Ok(k as usize)
}
