//! Quotas per tenant (`serve --max-indices`, `--max-vectors`, `--max-k`, `--max-nq`;
//! docs/protocol.md §6): what one tenant may hold and ask for. Each refusal is a
//! `QUOTA_EXCEEDED` error reply, returned before anything changes (nothing is logged to the
//! WAL, created, imported or searched).
//!
//! Counts are read from the registry's atomics at the time of the request. Writes to
//! different indices of one tenant run concurrently, so two adds racing on two indices may
//! together overshoot `--max-vectors` by at most one request each; a single index never does.

use super::{Key, Service};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::MAX_K;
use std::sync::atomic::Ordering;

/// Default of `--max-indices`: indices (served and quarantined) per tenant. Each persisted
/// index keeps its write-ahead log open, so this also keeps file descriptors in check.
pub const DEFAULT_MAX_INDICES: usize = 1000;

/// Default of `--max-nq`: queries per search request. As large as the existing limit of
/// `nq × k` ≤ [`MAX_RESULTS`](super::MAX_RESULTS) allows at `k` = 1, so the default adds no
/// refusal of its own.
pub const DEFAULT_MAX_NQ: usize = super::MAX_RESULTS;

/// The limits of one tenant (the same for every tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Indices a tenant may have (served plus quarantined); `create_index` and
    /// `import_index` of a new name beyond it are refused.
    pub max_indices: usize,
    /// Vectors (sum of `ntotal`) a tenant may hold over all its indices; `None`: no limit.
    /// Checked by `add_vectors`, `add_with_ids`, `merge_indices` and `import_index`.
    pub max_vectors: Option<u64>,
    /// Largest `k` of a search (at most the protocol's [`MAX_K`]).
    pub max_k: usize,
    /// Most queries in one `search`, `search_and_reconstruct` or `range_search`.
    pub max_nq: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas { max_indices: DEFAULT_MAX_INDICES, max_vectors: None, max_k: MAX_K, max_nq: DEFAULT_MAX_NQ }
    }
}

fn exceeded(msg: String) -> Error {
    Error::new(ErrorKind::QuotaExceeded, msg)
}

impl Quotas {
    /// Refuse `k` above `--max-k` (a `k` outside the protocol's range is refused earlier,
    /// as invalid input).
    pub fn check_k(&self, k: usize) -> Result<()> {
        if k > self.max_k {
            return Err(exceeded(format!("k={k} exceeds the server's quota of {} (--max-k)", self.max_k)));
        }
        Ok(())
    }

    /// Refuse a search of more than `--max-nq` queries.
    pub fn check_nq(&self, nq: usize) -> Result<()> {
        if nq > self.max_nq {
            return Err(exceeded(format!(
                "{nq} queries in one request exceed the server's quota of {} (--max-nq): split the queries",
                self.max_nq
            )));
        }
        Ok(())
    }
}

impl Service {
    /// Refuse a new index for `tenant` once it has `--max-indices` (served and quarantined).
    pub(super) fn check_index_quota(&self, tenant: &str) -> Result<()> {
        let served = self.indices.read().unwrap_or_else(|p| p.into_inner()).keys().filter(|(t, _)| t == tenant).count();
        let quarantined =
            self.quarantined.read().unwrap_or_else(|p| p.into_inner()).keys().filter(|(t, _)| t == tenant).count();
        let max = self.quotas.max_indices;
        if served + quarantined >= max {
            return Err(exceeded(format!(
                "tenant {tenant:?} has {} indices, the server's quota (--max-indices {max}): delete one first",
                served + quarantined
            )));
        }
        Ok(())
    }

    /// Refuse a change that would take `tenant`'s vectors past `--max-vectors`: `adding`
    /// vectors, while the index `replacing` (if any; an import over it) goes away.
    pub(super) fn check_vector_quota(&self, tenant: &str, adding: u64, replacing: Option<&Key>) -> Result<()> {
        let Some(max) = self.quotas.max_vectors else { return Ok(()) };
        let map = self.indices.read().unwrap_or_else(|p| p.into_inner());
        let held: u64 = map
            .iter()
            .filter(|(k, _)| k.0 == tenant && Some(*k) != replacing)
            .map(|(_, e)| e.ntotal.load(Ordering::Relaxed) as u64)
            .sum();
        if held.saturating_add(adding) > max {
            return Err(exceeded(format!(
                "tenant {tenant:?} holds {held} vectors; {adding} more exceed the server's quota of {max} (--max-vectors)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_quotas_refuse_with_their_own_kind() {
        let q = Quotas { max_k: 5, max_nq: 3, ..Quotas::default() };
        assert!(q.check_k(5).is_ok() && q.check_nq(3).is_ok());
        assert_eq!(q.check_k(6).unwrap_err().kind(), ErrorKind::QuotaExceeded);
        let e = q.check_nq(4).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        assert!(e.to_string().contains("--max-nq"), "{e}");
        let d = Quotas::default();
        assert_eq!((d.max_k, d.max_nq, d.max_vectors), (MAX_K, 1 << 20, None));
    }
}
