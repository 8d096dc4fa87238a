//! Ids: which ids an index takes, stores and can give up, and the checks on ids and positions
//! that run before FAISS sees them. [`check_ids`] and [`check_id_count`] are the one place
//! for "ids are non-negative" and "one id per vector", used by the engine, the CLI and the
//! server alike.

use super::raw::{refuse_binary_hash, Raw};
use super::{ffi::RawInfo, IdMode, Index};
use crate::engine::error::{Error, ErrorKind, Result};

/// Refuse user ids FAISS cannot store faithfully: negative ones (FAISS reports missing
/// results as -1).
///
/// Errors: `InvalidInput` naming the first negative id.
pub fn check_ids(ids: &[i64]) -> Result<()> {
    match ids.iter().find(|&&i| i < 0) {
        Some(bad) => {
            Err(Error::invalid(format!("id {bad} is negative: ids must be >= 0 (FAISS reports missing results as -1)")))
        }
        None => Ok(()),
    }
}

/// Ids given with vectors must be exactly one per vector.
///
/// Errors: `InvalidInput`, "`n_ids` ids for `n_vectors` vectors: give exactly one id per
/// vector" (callers add where the vectors came from with [`Error::context`]).
pub fn check_id_count(n_ids: usize, n_vectors: usize) -> Result<()> {
    if n_ids != n_vectors {
        return Err(Error::invalid(format!("{n_ids} ids for {n_vectors} vectors: give exactly one id per vector")));
    }
    Ok(())
}

/// Whether FAISS's inner index class keeps ids in its inverted lists (float or binary IVF).
fn is_ivf(info: &RawInfo) -> bool {
    info.inner_name.starts_with("IndexIVF") || info.inner_name.starts_with("IndexBinaryIVF")
}

impl Index {
    /// Whether the index takes user ids (`add` with ids): IDMap wrappers, and IVF indices,
    /// whose inverted lists hold ids.
    pub fn takes_ids(&self) -> Result<bool> {
        let info = self.raw.describe()?;
        Ok(info.idmap > 0 || is_ivf(&info))
    }

    /// Whether the index *requires* ids on add (IDMap wrappers refuse plain `add`).
    pub fn requires_ids(&self) -> Result<bool> {
        Ok(self.raw.describe()?.idmap > 0)
    }

    /// Whether the index stores ids of its own (IDMap/IDMap2, or IVF, whose inverted lists
    /// hold ids) rather than numbering vectors by position.
    pub fn stores_ids(&self) -> Result<bool> {
        self.takes_ids()
    }

    /// What every add checks before FAISS sees `n` vectors: trained, ids given exactly when
    /// the index needs them, non-negative, one per vector.
    pub(super) fn check_add(&self, n: usize, ids: Option<&[i64]>) -> Result<()> {
        if !self.raw.is_trained() {
            return Err(Error::new(
                ErrorKind::NotTrained,
                "index is not trained: train it first (faissx build trains on a sample of its input)",
            ));
        }
        match ids {
            Some(ids) => {
                check_ids(ids)?;
                check_id_count(ids.len(), n)?;
                if !self.takes_ids()? {
                    return Err(Error::invalid(
                        "this index does not store ids (not IDMap/IDMap2 or IVF); rebuild it with --ids, or use factory \"IDMap2,<factory>\"",
                    ));
                }
            }
            None => {
                if self.requires_ids()? {
                    return Err(Error::invalid(
                        "this index stores explicit ids (IDMap): pass ids for the new vectors (--ids)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuse an id that cannot name a stored vector before FAISS sees it: negative ids
    /// (FAISS's "no result" is -1), and ids outside `0..ntotal` where ids are positions (no
    /// IDMap and not IVF; a refine index reconstructs from its flat refinement by position).
    pub(super) fn check_key(&self, info: &RawInfo, key: i64) -> Result<()> {
        let by_position = info.idmap == 0 && (!is_ivf(info) || info.type_name.starts_with("IndexRefine"));
        if key < 0 || (by_position && key as u64 >= self.ntotal() as u64) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("id {key} is not in the index (ntotal={})", self.ntotal()),
            ));
        }
        Ok(())
    }

    /// Refuse positions `i0..i0+n` that are not all below `ntotal` (overflow included).
    pub(super) fn check_range(&self, i0: usize, n: usize) -> Result<()> {
        match i0.checked_add(n) {
            Some(end) if end <= self.ntotal() => Ok(()),
            _ => Err(Error::invalid(format!("positions {i0}..{i0}+{n} are past ntotal={}", self.ntotal()))),
        }
    }

    /// Remove ids; returns how many were removed.
    ///
    /// Errors: `Unsupported` for an IDMap over an IVF index (FAISS's IDMap compacts its id
    /// table while IVF keeps its internal ids, so later results would name wrong ids), for
    /// HNSW and for binary hash indices ([`Index::check_removable`]).
    pub fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        self.check_removable()?;
        self.raw.remove_ids(ids)
    }

    /// Whether [`Index::remove_ids`] can work on this index, checked before anything is
    /// logged or changed: not on mapped or on-disk indices, binary hash indices, IDMap over
    /// IVF (see `remove_ids`), or graph indices (HNSW: FAISS cannot remove from its graph).
    ///
    /// Errors: `Unsupported` naming the reason.
    pub fn check_removable(&self) -> Result<()> {
        self.check_writable("remove ids")?;
        let info = self.raw.describe()?;
        refuse_binary_hash(&info, "remove vectors")?;
        if info.idmap > 0 && is_ivf(&info) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "removing from an IDMap over an IVF index is not supported: IVF indices store ids themselves, create the index without IDMap",
            ));
        }
        if info.inner_name.starts_with("IndexHNSW") || info.inner_name.starts_with("IndexBinaryHNSW") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{} cannot remove vectors (FAISS's HNSW graph does not support removal)", info.type_name),
            ));
        }
        Ok(())
    }

    /// Ids of positions `i0..i0+n` in storage order (IVF: list by list; IDMap: the wrapped
    /// index's order; otherwise the id is the position). Float indices only.
    pub fn stored_ids(&self, i0: usize, n: usize) -> Result<Vec<i64>> {
        Ok(self.raw.float()?.extract(i0, n, false)?.0)
    }

    /// Ids and reconstructed vectors (`n × d`, as stored: normalized for cosine, decoded for
    /// compressed indices) of positions `i0..i0+n`, in the order of [`Index::stored_ids`].
    ///
    /// Errors: `Faiss` when the index cannot reconstruct its vectors; `Unsupported` for a
    /// binary index.
    pub fn extract(&self, i0: usize, n: usize) -> Result<(Vec<i64>, Vec<f32>)> {
        self.raw.float()?.extract(i0, n, true)
    }

    /// Renumber the vectors `base..base+ntotal`: IDMap in insertion order, IVF in the order
    /// of the old ids (for an IVF built without ids, insertion order); position-numbered
    /// indices accept only `base` 0.
    pub fn renumber_ids(&mut self, base: i64) -> Result<()> {
        self.check_writable("renumber")?;
        self.raw.float_mut()?.renumber(base)
    }

    /// Wrap this index in `IndexIDMap` (`IndexIDMap2` when `v2`) so it takes user ids; the
    /// index must be empty. Added for the server's `IDMap:<base>` index type.
    pub fn wrap_idmap(self, v2: bool) -> Result<Index> {
        if self.ntotal() > 0 {
            return Err(Error::invalid("only an empty index can be wrapped in an IDMap"));
        }
        let Index { raw, mut meta, has_sidecar, storage } = self;
        let raw = raw.wrap_idmap(v2)?;
        let prefix = if v2 { "IDMap2" } else { "IDMap" };
        meta.factory = if meta.factory.is_empty() { String::new() } else { format!("{prefix},{}", meta.factory) };
        meta.ids = IdMode::Explicit;
        Ok(Index { raw, meta, has_sidecar, storage })
    }

    /// Wrap a position-numbered index in `IDMap2` with ids `0..ntotal`, so that removing
    /// vectors keeps the other vectors' ids. The sidecar's factory gains the `IDMap2,` prefix.
    pub fn into_idmap2(self) -> Result<Index> {
        self.check_writable("wrap")?;
        let Index { raw, mut meta, has_sidecar, storage } = self;
        let Raw::Float(raw) = raw else {
            return Err(Error::new(ErrorKind::Unsupported, "binary indices cannot be wrapped in IDMap2 here"));
        };
        let raw = Raw::Float(raw.wrap_idmap2()?);
        if !meta.factory.is_empty() && !meta.factory.starts_with("IDMap") {
            meta.factory = format!("IDMap2,{}", meta.factory);
        }
        meta.ids = IdMode::Explicit;
        Ok(Index { raw, meta, has_sidecar, storage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_vector() {
        assert!(check_id_count(3, 3).is_ok());
        let e = check_id_count(2, 3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "2 ids for 3 vectors: give exactly one id per vector");
    }

    #[test]
    fn add_checks_the_id_count_before_faiss() {
        let spec = super::super::IndexSpec { factory: "Flat".into(), metric: super::super::Metric::L2, dim: 2 };
        let mut ix = Index::create(&spec, true).unwrap();
        let e = ix.add(&[0.0f32, 0.0, 1.0, 1.0], Some(&[7])).unwrap_err();
        assert_eq!(e.to_string(), "1 ids for 2 vectors: give exactly one id per vector");
        assert_eq!(ix.ntotal(), 0);
        ix.add(&[0.0f32, 0.0, 1.0, 1.0], Some(&[7, 9])).unwrap();
        assert_eq!(ix.stored_ids(0, 2).unwrap(), vec![7, 9]);
    }
}
