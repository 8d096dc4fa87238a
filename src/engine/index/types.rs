//! The values that go into and come out of an [`Index`](super::Index): vectors ([`RowsRef`]
//! in, [`Rows`] out), k-NN and range results, and index facts. Plain data: no FAISS calls.
//!
//! **One vector type for float and binary indices.** Float indices take rows of `d` f32
//! (`n × d`, row-major); binary indices take packed bit codes of `d` bits (`n × d/8` bytes,
//! bit j in byte j/8 at bit j%8, least significant first). Inputs are a borrowed
//! [`RowsRef`], so a batch read from a file or a request is never copied on its way to FAISS;
//! `&[f32]`, `&Vec<f32>`, `&[u8]`, `&Vec<u8>` and `&Rows` convert into it (`Into<RowsRef>`),
//! which is what the `Index` methods take. Outputs (`reconstruct`, `reconstruct_n`) are an
//! owned [`Rows`], whose [`Rows::view`] is the matching input.

use super::{FileKind, Storage};
use super::{IndexMeta, Metric};
use serde::Serialize;

/// Vectors a caller owns, in the form an index takes: float rows (`n × d` f32, row-major)
/// for `faiss::Index`, packed bit codes (`n × d/8` bytes, bit j in byte j/8 at bit j%8,
/// least significant first) for binary indices. [`Rows::view`] borrows them as input.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    /// `n × d` f32, row-major.
    Float(Vec<f32>),
    /// `n × d/8` bytes.
    Codes(Vec<u8>),
}

impl Rows {
    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.view().is_empty()
    }

    /// The same vectors, borrowed: what the `Index` methods take.
    pub fn view(&self) -> RowsRef<'_> {
        match self {
            Rows::Float(v) => RowsRef::Float(v),
            Rows::Codes(c) => RowsRef::Codes(c),
        }
    }
}

/// Borrowed vectors, the input of every `Index` vector method: float rows (`n × d` f32,
/// row-major) or packed bit codes (`n × d/8` bytes), as in [`Rows`]. Slices and `&Rows`
/// convert into it without copying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowsRef<'a> {
    /// `n × d` f32, row-major.
    Float(&'a [f32]),
    /// `n × d/8` bytes.
    Codes(&'a [u8]),
}

impl RowsRef<'_> {
    /// Whether there are no values at all.
    pub fn is_empty(&self) -> bool {
        match self {
            RowsRef::Float(v) => v.is_empty(),
            RowsRef::Codes(c) => c.is_empty(),
        }
    }
}

/// What a vector is made of: `f32` (float rows, [`RowsRef::Float`]) or `u8` (packed bit
/// codes, [`RowsRef::Codes`]). Slices, vectors and arrays of either convert into a
/// [`RowsRef`] without copying.
pub trait Element: Sized {
    /// `x` as vectors of this element.
    fn rows(x: &[Self]) -> RowsRef<'_>;
}

impl Element for f32 {
    fn rows(x: &[f32]) -> RowsRef<'_> {
        RowsRef::Float(x)
    }
}

impl Element for u8 {
    fn rows(x: &[u8]) -> RowsRef<'_> {
        RowsRef::Codes(x)
    }
}

impl<'a, E: Element> From<&'a [E]> for RowsRef<'a> {
    fn from(x: &'a [E]) -> Self {
        E::rows(x)
    }
}

impl<'a, E: Element> From<&'a Vec<E>> for RowsRef<'a> {
    fn from(x: &'a Vec<E>) -> Self {
        E::rows(x)
    }
}

impl<'a, E: Element, const N: usize> From<&'a [E; N]> for RowsRef<'a> {
    fn from(x: &'a [E; N]) -> Self {
        E::rows(x)
    }
}

impl<'a> From<&'a Rows> for RowsRef<'a> {
    fn from(x: &'a Rows) -> Self {
        x.view()
    }
}

/// Packed binary codes (`n × d/8` bytes) from one value per bit (`n × d`, `d` a multiple
/// of 8): `> 0.5` is 1, as FAISSx reads bits; bit j goes to byte j/8 at bit position j%8,
/// least significant first (numpy `packbits(..., bitorder="little")`).
pub fn pack_bits(bits: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len() / 8];
    for (j, _) in bits.iter().enumerate().filter(|(_, &b)| b > 0.5) {
        out[j / 8] |= 1 << (j % 8);
    }
    out
}

/// k-NN results: `nq × k` row-major ids and distances. Missing neighbours (k > ntotal) are
/// id −1 with FAISS's padding distance (f32::MAX for L2 and Hamming, −f32::MAX for inner
/// product). Distances are squared L2 for `l2`, inner products for `ip` and `cosine`,
/// Hamming distances for binary indices.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Neighbors {
    /// Number of queries.
    pub nq: usize,
    /// Neighbours per query.
    pub k: usize,
    /// `nq × k` ids.
    pub ids: Vec<i64>,
    /// `nq × k` distances.
    pub dists: Vec<f32>,
}

impl Neighbors {
    /// Row `q`: (ids, distances).
    pub fn row(&self, q: usize) -> (&[i64], &[f32]) {
        (&self.ids[q * self.k..(q + 1) * self.k], &self.dists[q * self.k..(q + 1) * self.k])
    }
}

/// Range-search results: query `i`'s hits are `lims[i]..lims[i+1]` of `ids`/`dists`, sorted
/// by distance (closest first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeHits {
    /// `nq + 1` offsets.
    pub lims: Vec<usize>,
    /// Hit ids.
    pub ids: Vec<i64>,
    /// Hit distances.
    pub dists: Vec<f32>,
}

impl RangeHits {
    /// Hits as FAISS returns them (unordered within a query), each query's sorted closest
    /// first: ascending distance, or descending similarity when `descending`.
    pub(super) fn sorted(lims: Vec<usize>, mut ids: Vec<i64>, mut dists: Vec<f32>, descending: bool) -> RangeHits {
        for w in lims.windows(2) {
            let (a, b) = (w[0], w[1]);
            let mut order: Vec<usize> = (a..b).collect();
            order.sort_by(|&i, &j| {
                let o = dists[i].total_cmp(&dists[j]);
                if descending {
                    o.reverse()
                } else {
                    o
                }
            });
            let sid: Vec<i64> = order.iter().map(|&i| ids[i]).collect();
            let sd: Vec<f32> = order.iter().map(|&i| dists[i]).collect();
            ids[a..b].copy_from_slice(&sid);
            dists[a..b].copy_from_slice(&sd);
        }
        RangeHits { lims, ids, dists }
    }

    /// Number of queries.
    pub fn nq(&self) -> usize {
        self.lims.len().saturating_sub(1)
    }
    /// Query `q`'s hits: (ids, distances).
    pub fn row(&self, q: usize) -> (&[i64], &[f32]) {
        let (a, b) = (self.lims[q], self.lims[q + 1]);
        (&self.ids[a..b], &self.dists[a..b])
    }
}

/// Facts about an index for `info` and the server's status replies.
#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    /// Path of the index file, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Outermost FAISS class (`IndexIDMap2`, `IndexIVFFlat`, …).
    pub index_type: String,
    /// Innermost FAISS class after wrappers.
    pub inner_type: String,
    /// Dimension.
    pub d: usize,
    /// Number of vectors.
    pub ntotal: usize,
    /// Metric (`l2`, `ip`, `cosine`).
    pub metric: Metric,
    /// Training done.
    pub is_trained: bool,
    /// IVF lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlist: Option<usize>,
    /// IVF lists probed per query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// HNSW `M`.
    #[serde(rename = "M", skip_serializing_if = "Option::is_none")]
    pub hnsw_m: Option<usize>,
    /// HNSW `efSearch`.
    #[serde(rename = "efSearch", skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    /// HNSW `efConstruction`.
    #[serde(rename = "efConstruction", skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    /// Whether the index stores explicit ids (IDMap, IDMap2, or IVF built with ids).
    pub explicit_ids: bool,
    /// File size in bytes (0 if not on disk).
    pub size_bytes: u64,
    /// How this index is held: loaded, mapped, or with on-disk lists.
    pub storage: Storage,
    /// What the file header says (type fourcc, IVF, on-disk lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileKind>,
    /// FAISS read flags `--mmap` uses for this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmap_flags: Option<String>,
    /// Size of the `.ivfdata` file of on-disk lists, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivfdata_bytes: Option<u64>,
    /// The sidecar, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<IndexMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_borrow_the_callers_vectors() {
        let v = vec![1.0f32, 2.0];
        let RowsRef::Float(s) = RowsRef::from(&v) else { panic!("float rows expected") };
        assert_eq!(s.as_ptr(), v.as_ptr());
        let c = vec![1u8, 2];
        let RowsRef::Codes(s) = RowsRef::from(&c[..]) else { panic!("codes expected") };
        assert_eq!(s.as_ptr(), c.as_ptr());
        let owned = Rows::Codes(c.clone());
        assert_eq!(RowsRef::from(&owned), RowsRef::Codes(&c));
        assert!(Rows::Float(Vec::new()).is_empty());
    }

    #[test]
    fn bits_pack_least_significant_first() {
        let mut bits = vec![0.0f32; 16];
        bits[0] = 1.0;
        bits[9] = 1.0;
        assert_eq!(pack_bits(&bits), vec![0b0000_0001, 0b0000_0010]);
    }
}
