//! Moving stored vectors between indices: FAISS's merges, and on-disk inverted lists
//! (`build --on-disk`: lists in a separate `.ivfdata` file, built shard by shard in bounded
//! memory with FAISS's `OnDiskInvertedLists`). Float IVF indices only, except `merge_from`,
//! which also takes Flat-like indices.

use super::ffi::RawIndex;
use super::raw::Raw;
use super::{Index, Storage};
use crate::engine::error::{Error, Result};
use std::path::Path;

impl Index {
    /// FAISS's own `merge_from`: move all of `other`'s vectors into this index, adding
    /// `add_id` to the ids of `other` (IVF, IDMap; must be 0 for Flat-like indices). Works
    /// for Flat and other flat-code indices, IVF with the same trained quantizer,
    /// IDMap/IDMap2 and PreTransform over those. On error (FAISS cannot merge these) `self`
    /// is unchanged.
    pub fn merge_from(&mut self, other: &mut Index, add_id: i64) -> Result<()> {
        self.check_writable("merge into")?;
        other.check_writable("merge from")?;
        let b = other.raw.float_mut()?;
        self.raw.float_mut()?.merge_from(b, add_id)
    }

    /// Move all of `other`'s vectors into this index with FAISS's IVF `merge_from` (same
    /// trained quantizer required). Returns false when either is not a bare IVF index.
    pub fn ivf_merge_from(&mut self, other: &mut Index, add_id: i64) -> Result<bool> {
        self.check_writable("merge into")?;
        let (Raw::Float(a), Raw::Float(b)) = (&mut self.raw, &mut other.raw) else {
            return Ok(false);
        };
        a.ivf_merge_from(b, add_id)
    }

    /// Move this trained, empty IVF index's lists to on-disk lists in `data`.
    ///
    /// Errors: `InvalidInput` when the index is not trained, not empty, or not IVF.
    pub fn lists_to_disk(&mut self, data: &Path) -> Result<()> {
        self.check_writable("move lists to disk")?;
        if self.ntotal() != 0 || !self.is_trained() {
            return Err(Error::invalid("on-disk lists start from a trained, empty index"));
        }
        if !self.raw.float_mut()?.ondisk_create(data)? {
            let t = self.raw.describe()?.type_name;
            return Err(Error::invalid(format!(
                "--on-disk needs an IVF index (e.g. IVF65536,PQ32); this factory gives {t}"
            )));
        }
        Ok(())
    }

    /// Move a shard's lists (an IVF index with the same trained quantizer, holding vectors
    /// with their final ids) into this index's empty on-disk lists; for several shards use
    /// [`Index::merge_to_disk`].
    pub fn merge_shard_to_disk(&mut self, shard: &mut Index) -> Result<()> {
        let shard = shard.raw.float_mut()?;
        if !self.raw.float_mut()?.ondisk_merge_shard(shard)? {
            return Err(Error::invalid("merging a shard needs an index with on-disk lists and an IVF shard"));
        }
        Ok(())
    }

    /// Merge the lists of every index in `srcs` (same trained quantizer; only read, so they
    /// may be mapped or on disk) into this index's empty on-disk lists in one pass.
    ///
    /// Errors: `InvalidInput` when this index has no on-disk lists or a source is not IVF;
    /// `Faiss` naming the check that failed (e.g. different coarse quantizers).
    pub fn merge_to_disk(&mut self, srcs: &mut [&mut Index]) -> Result<()> {
        let mut raws = srcs.iter_mut().map(|s| s.raw.float_mut()).collect::<Result<Vec<&mut RawIndex>>>()?;
        if !self.raw.float_mut()?.ondisk_merge_many(&mut raws)? {
            return Err(Error::invalid("merging into on-disk lists needs IVF indices and on-disk lists"));
        }
        Ok(())
    }

    /// Record the final location of the `.ivfdata` file (after it was renamed into place).
    pub fn set_lists_file(&mut self, data: &Path) -> Result<()> {
        if !self.raw.float_mut()?.ondisk_configure(Some(data), None)? {
            return Err(Error::invalid("index has no on-disk lists"));
        }
        Ok(())
    }

    /// A trained, empty, in-memory copy of this bare IVF index (same quantizer, parameters
    /// and sidecar), made without reading its lists, so it works on mapped and on-disk
    /// indices too: the start of an on-disk merge or an on-disk shard.
    ///
    /// Errors: `InvalidInput` when the index is not a bare IVF index.
    pub fn empty_ivf_copy(&mut self) -> Result<Index> {
        match self.raw.float_mut()?.ivf_empty_clone()? {
            Some(raw) => Ok(Index {
                raw: Raw::Float(raw),
                meta: self.meta.clone(),
                has_sidecar: self.has_sidecar,
                storage: Storage::Loaded,
            }),
            None => {
                let t = self.raw.describe()?.type_name;
                Err(Error::invalid(format!(
                    "on-disk inverted lists need a bare IVF index (e.g. IVF1024,Flat); this is {t}"
                )))
            }
        }
    }

    /// Whether the inverted lists live on disk.
    pub fn lists_on_disk(&self) -> bool {
        matches!(&self.raw, Raw::Float(r) if r.is_ondisk())
    }
}
