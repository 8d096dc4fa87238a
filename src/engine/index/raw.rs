//! The FAISS object behind an [`Index`](super::Index): a float index (`faiss::Index`, vectors
//! of `d` f32) or a binary one (`faiss::IndexBinary`, codes of `d` bits packed in `d / 8`
//! bytes, Hamming distances). Binary indices come from the server's `BINARY_*` index types.
//!
//! [`Raw`] is the one place that tells the two kinds apart: each call goes to
//! [`RawIndex`] or [`RawBinaryIndex`], and a vector call given the other form of vectors
//! ([`RowsRef`]) is refused here. What is the same for both kinds (argument checks,
//! normalization, ids, sidecar) stays in `Index`.

use super::ffi::{Param, RawBinaryIndex, RawIndex, RawInfo};
use super::{RangeHits, Rows, RowsRef, SearchParams};
use crate::engine::error::{Error, ErrorKind, Result};
use std::path::Path;

/// A float or a binary FAISS index.
pub(super) enum Raw {
    Float(RawIndex),
    Binary(RawBinaryIndex),
}

impl Raw {
    pub(super) fn d(&self) -> usize {
        match self {
            Raw::Float(r) => r.d(),
            Raw::Binary(r) => r.d(),
        }
    }

    pub(super) fn ntotal(&self) -> usize {
        match self {
            Raw::Float(r) => r.ntotal(),
            Raw::Binary(r) => r.ntotal(),
        }
    }

    pub(super) fn is_trained(&self) -> bool {
        match self {
            Raw::Float(r) => r.is_trained(),
            Raw::Binary(r) => r.is_trained(),
        }
    }

    /// Whether larger distances are closer (inner product); false for L2 and Hamming.
    pub(super) fn is_inner_product(&self) -> bool {
        matches!(self, Raw::Float(r) if r.is_inner_product())
    }

    pub(super) fn describe(&self) -> Result<RawInfo> {
        match self {
            Raw::Float(r) => r.describe(),
            Raw::Binary(r) => r.describe(),
        }
    }

    pub(super) fn min_train_points(&self) -> Result<usize> {
        match self {
            Raw::Float(r) => r.min_train_points(),
            Raw::Binary(r) => r.min_train_points(),
        }
    }

    pub(super) fn write(&self, path: &Path) -> Result<()> {
        match self {
            Raw::Float(r) => r.write(path),
            Raw::Binary(r) => r.write(path),
        }
    }

    pub(super) fn try_clone(&self) -> Result<Raw> {
        Ok(match self {
            Raw::Float(r) => Raw::Float(r.try_clone()?),
            Raw::Binary(r) => Raw::Binary(r.try_clone()?),
        })
    }

    pub(super) fn remove_ids(&mut self, ids: &[i64]) -> Result<usize> {
        match self {
            Raw::Float(r) => r.remove_ids(ids),
            Raw::Binary(r) => r.remove_ids(ids),
        }
    }

    pub(super) fn reset(&mut self) -> Result<()> {
        match self {
            Raw::Float(r) => r.reset(),
            Raw::Binary(r) => r.reset(),
        }
    }

    pub(super) fn set_param(&mut self, p: Param, v: usize) -> Result<bool> {
        match self {
            Raw::Float(r) => r.set_param(p, v),
            Raw::Binary(r) => r.set_param(p, v),
        }
    }

    /// Wrap in `IDMap` (`IDMap2` when `v2`); the index must be empty.
    pub(super) fn wrap_idmap(self, v2: bool) -> Result<Raw> {
        Ok(match self {
            Raw::Float(r) => Raw::Float(r.wrap_idmap(v2)?),
            Raw::Binary(r) => Raw::Binary(r.wrap_idmap(v2)?),
        })
    }

    /// The float index, or `Unsupported` for a binary one (whose vectors are bit codes).
    pub(super) fn float(&self) -> Result<&RawIndex> {
        match self {
            Raw::Float(r) => Ok(r),
            Raw::Binary(_) => Err(self.wrong_form()),
        }
    }

    /// [`Raw::float`], mutable.
    pub(super) fn float_mut(&mut self) -> Result<&mut RawIndex> {
        match self {
            Raw::Float(r) => Ok(r),
            Raw::Binary(_) => Err(wrong_form(true)),
        }
    }

    /// `Unsupported`: the vectors (or the operation) are of the other kind than this index.
    pub(super) fn wrong_form(&self) -> Error {
        wrong_form(matches!(self, Raw::Binary(_)))
    }

    /// How many vectors `x` holds: its length must be a whole number of this index's vectors
    /// (`d` floats, or `d / 8` bytes). `what` names the input in errors.
    ///
    /// Errors: `Unsupported` for the other form of vectors; `DimensionMismatch`.
    pub(super) fn count(&self, x: RowsRef, what: &str) -> Result<usize> {
        let (len, width) = match (self, x) {
            (Raw::Float(r), RowsRef::Float(v)) => (v.len(), r.row_len()),
            (Raw::Binary(r), RowsRef::Codes(c)) => (c.len(), r.row_len()),
            _ => return Err(self.wrong_form()),
        };
        if len.is_multiple_of(width) {
            return Ok(len / width);
        }
        let msg = match self {
            Raw::Float(_) => format!("{what}: {len} values is not a whole number of d={width} vectors"),
            Raw::Binary(_) => {
                format!("{what}: {len} bytes is not a whole number of d={} bit codes ({width} bytes each)", self.d())
            }
        };
        Err(Error::new(ErrorKind::DimensionMismatch, msg))
    }

    pub(super) fn train(&mut self, x: RowsRef) -> Result<()> {
        match (self, x) {
            (Raw::Float(r), RowsRef::Float(v)) => r.train(v),
            (Raw::Binary(r), RowsRef::Codes(c)) => r.train(c),
            (raw, _) => Err(raw.wrong_form()),
        }
    }

    pub(super) fn add(&mut self, x: RowsRef, ids: Option<&[i64]>) -> Result<()> {
        match (self, x) {
            (Raw::Float(r), RowsRef::Float(v)) => r.add(v, ids),
            (Raw::Binary(r), RowsRef::Codes(c)) => r.add(c, ids),
            (raw, _) => Err(raw.wrong_form()),
        }
    }

    /// Refuse search parameters this kind cannot use: `k` = 0, and nprobe / efSearch 0
    /// (binary indices ignore efSearch).
    pub(super) fn check_search(&self, params: &SearchParams) -> Result<()> {
        match self {
            Raw::Float(_) if params.k == 0 => Err(Error::invalid("-k must be at least 1")),
            Raw::Float(_) if params.nprobe == Some(0) || params.ef_search == Some(0) => {
                Err(Error::invalid("--nprobe and --ef-search must be at least 1"))
            }
            Raw::Binary(_) if params.k == 0 || params.nprobe == Some(0) => {
                Err(Error::invalid("k and nprobe must be at least 1"))
            }
            _ => Ok(()),
        }
    }

    /// k-NN search: `(distances, ids)`, each `nq × k`. Binary indices use `nprobe` only.
    pub(super) fn search(&self, q: RowsRef, params: &SearchParams) -> Result<(Vec<f32>, Vec<i64>)> {
        match (self, q) {
            (Raw::Float(r), RowsRef::Float(v)) => r.search(v, params.k, params.nprobe, params.ef_search),
            (Raw::Binary(r), RowsRef::Codes(c)) => r.search(c, params.k, params.nprobe),
            (raw, _) => Err(raw.wrong_form()),
        }
    }

    /// Refuse a radius this kind cannot use: not finite; for binary indices, not a
    /// non-negative Hamming distance.
    pub(super) fn check_radius(&self, radius: f32) -> Result<()> {
        match self {
            Raw::Float(_) if !radius.is_finite() => Err(Error::invalid("--radius must be a finite number")),
            Raw::Binary(_) if !radius.is_finite() || radius < 0.0 || radius > i32::MAX as f32 => {
                Err(Error::invalid("radius must be a non-negative Hamming distance"))
            }
            _ => Ok(()),
        }
    }

    /// Range search, hits sorted closest first. Float: squared L2 within `radius`, or
    /// similarity above it for inner product; binary: Hamming distance below `radius`
    /// (rounded up; FAISS's binary range search is strict).
    pub(super) fn range_search(&self, q: RowsRef, radius: f32) -> Result<RangeHits> {
        let (lims, ids, dists) = match (self, q) {
            (Raw::Float(r), RowsRef::Float(v)) => r.range_search(v, radius)?,
            (Raw::Binary(r), RowsRef::Codes(c)) => r.range_search(c, radius.ceil() as i32)?,
            (raw, _) => return Err(raw.wrong_form()),
        };
        Ok(RangeHits::sorted(lims, ids, dists, self.is_inner_product()))
    }

    pub(super) fn reconstruct(&self, key: i64) -> Result<Rows> {
        Ok(match self {
            Raw::Float(r) => Rows::Float(r.reconstruct(key)?),
            Raw::Binary(r) => Rows::Codes(r.reconstruct(key)?),
        })
    }

    pub(super) fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Rows> {
        Ok(match self {
            Raw::Float(r) => Rows::Float(r.reconstruct_n(i0, n)?),
            Raw::Binary(r) => Rows::Codes(r.reconstruct_n(i0, n)?),
        })
    }
}

/// `Unsupported` for vectors (or an operation) of the other kind than a binary or float index.
fn wrong_form(binary: bool) -> Error {
    let msg = if binary {
        "this is a binary (Hamming) index: its vectors are bit codes, and this operation takes float vectors"
    } else {
        "this index holds float vectors, not binary codes"
    };
    Error::new(ErrorKind::Unsupported, msg)
}

/// `Unsupported` for FAISS's binary hash indices, which can neither reconstruct nor remove.
pub(super) fn refuse_binary_hash(info: &RawInfo, what: &str) -> Result<()> {
    if info.inner_name.starts_with("IndexBinaryHash") || info.inner_name.starts_with("IndexBinaryMultiHash") {
        return Err(Error::new(ErrorKind::Unsupported, format!("binary hash indices cannot {what}")));
    }
    Ok(())
}
