//! Clustering through FAISS's own k-means: [`kmeans`] over caller-given vectors (what the
//! server's `compute_clustering` answers) and [`Index::reclustered`], an IVF index rebuilt
//! around a freshly trained coarse quantizer (`recluster_index`).

use super::ffi::clustering;
use super::{Index, Metric, Raw};
use crate::engine::error::{Error, ErrorKind, Result};

/// Seed of every clustering here: FAISS's default (`ClusteringParameters::seed`), which
/// Python's `faiss.Kmeans` also uses, so the same input gives the same clusters.
pub const SEED: u32 = 1234;

/// Iterations of [`kmeans`] when the caller names none: FAISS's default, as FAISSx's.
pub const DEFAULT_NITER: u32 = 25;

/// Points per centroid above which FAISS's k-means trains on a random subsample
/// (`ClusteringParameters::max_points_per_centroid`).
pub const MAX_POINTS_PER_CENTROID: usize = 256;

/// A k-means clustering of `n` vectors of dimension `d` into `k` clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// Vector dimension.
    pub d: usize,
    /// Number of clusters.
    pub k: usize,
    /// `k × d` centroids, row-major (unit length for inner product and cosine).
    pub centroids: Vec<f32>,
    /// For each of the `n` input vectors, in input order, its cluster `0..k`: the nearest
    /// final centroid (L2, or largest inner product).
    pub assignments: Vec<i64>,
    /// Vectors per cluster (`k` counts summing to `n`).
    pub sizes: Vec<u64>,
    /// FAISS's objective after the last iteration: the sum over the clustered points of the
    /// squared L2 distance to their centroid (L2), or of their inner product with it (inner
    /// product and cosine). 0 when `n == k`, where FAISS takes the points as centroids.
    pub obj: f32,
}

/// Cluster the `n × d` vectors `x` (row-major, `n = x.len() / d`) into `k` clusters with
/// FAISS's k-means (`faiss::Clustering`, seed [`SEED`], `niter` iterations; above
/// [`MAX_POINTS_PER_CENTROID`] points per cluster FAISS trains on a random subsample, and
/// every vector is then assigned to its nearest centroid). `metric`: `L2` is Lloyd's k-means,
/// as Python's `faiss.Kmeans(d, k, niter=niter)`; `Ip` is spherical k-means (normalized
/// centroids, assignment by largest inner product, `faiss.Kmeans(..., spherical=True)`);
/// `Cosine` is the same on normalized copies of the vectors.
///
/// Errors: `InvalidInput` for `d == 0`, a length that is not whole rows, `k == 0`, fewer
/// vectors than clusters, `niter == 0`, NaN/∞ components or the `Hamming` metric.
pub fn kmeans(x: &[f32], d: usize, k: usize, niter: u32, metric: Metric) -> Result<Clusters> {
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(Error::invalid(format!("{} floats are not whole vectors of d={d}", x.len())));
    }
    let n = x.len() / d;
    if k == 0 {
        return Err(Error::invalid("the number of clusters must be at least 1"));
    }
    if n < k {
        return Err(Error::invalid(format!(
            "{n} vectors cannot form {k} clusters: give at least as many vectors as clusters"
        )));
    }
    if niter == 0 {
        return Err(Error::invalid("k-means needs at least one iteration (niter >= 1)"));
    }
    if let Some(pos) = crate::engine::io::first_out_of_range(x) {
        return Err(Error::invalid(format!(
            "vector {} component {} is {} ({})",
            pos / d,
            pos % d,
            x[pos],
            crate::engine::io::out_of_range_reason(x[pos])
        )));
    }
    let (spherical, normalized) = match metric {
        Metric::L2 => (false, None),
        Metric::Ip => (true, None),
        Metric::Cosine => {
            let mut c = x.to_vec();
            super::ffi::normalize_l2(&mut c, d);
            (true, Some(c))
        }
        Metric::Hamming => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "k-means clusters float vectors (l2, ip or cosine), not bit codes",
            ))
        }
    };
    let out = clustering::kmeans(normalized.as_deref().unwrap_or(x), d, k, niter, spherical, SEED)?;
    let mut sizes = vec![0u64; k];
    for &a in &out.assign {
        match usize::try_from(a).ok().and_then(|a| sizes.get_mut(a)) {
            Some(s) => *s += 1,
            None => return Err(Error::faiss("k-means", format!("a vector was assigned to cluster {a} of {k}"))),
        }
    }
    Ok(Clusters { d, k, centroids: out.centroids, assignments: out.assign, sizes, obj: out.obj })
}

/// Multiply-adds of one [`kmeans`] run, roughly: `niter` assignments of the points FAISS
/// trains on (at most `k ×` [`MAX_POINTS_PER_CENTROID`]) to `k` centroids in `d`
/// dimensions, plus the final assignment of all `n`. For limits on requests.
pub fn kmeans_work(n: usize, d: usize, k: usize, niter: u32) -> u128 {
    let trained = n.min(k.saturating_mul(MAX_POINTS_PER_CENTROID)) as u128;
    let per_point = (k as u128) * (d as u128);
    trained * per_point * niter as u128 + (n as u128) * per_point
}

/// How many stored vectors [`Index::reclustered`] trains the coarse quantizer on, as FAISSx
/// samples: `max(10 × nlist, ⌊ntotal × sample_ratio⌋)`, at most `ntotal`.
pub fn recluster_sample(ntotal: usize, nlist: usize, sample_ratio: f64) -> usize {
    let by_ratio = (ntotal as f64 * sample_ratio).floor();
    let by_ratio = if by_ratio.is_finite() && by_ratio > 0.0 { by_ratio.min(usize::MAX as f64) as usize } else { 0 };
    nlist.saturating_mul(10).max(by_ratio).min(ntotal)
}

/// What [`Index::reclustered`] made.
pub struct Reclustered {
    /// The rebuilt index (same class, metric, ids, parameters and sidecar facts; `nlist`
    /// lists).
    pub index: Index,
    /// `nlist` before.
    pub previous_nlist: usize,
    /// Vectors the coarse quantizer was trained on.
    pub sample: usize,
}

impl Index {
    /// A copy of this IVF index with `nlist` inverted lists: FAISS's IVF training of a fresh
    /// coarse quantizer (k-means with the index's metric, seed [`SEED`]) on
    /// [`recluster_sample`]`(ntotal, nlist, sample_ratio)` of the stored vectors, drawn by
    /// FAISS's `rand_perm`; the PQ or scalar quantizer retrained on the stored vectors; every
    /// vector re-added under its id (compressed vectors are decoded first, so they are
    /// re-encoded). `nprobe` is kept, capped at `nlist`. `self` is unchanged. Works for
    /// in-memory `IndexIVFFlat`, `IndexIVFPQ` and `IndexIVFScalarQuantizer` with a flat or
    /// HNSW-flat coarse quantizer, and IDMap/IDMap2 over those.
    ///
    /// Errors: `Unsupported` for other index kinds (binary, not IVF, pre-transformed,
    /// memory-mapped or on-disk lists); `InvalidInput` for `nlist == 0`, an empty index, or
    /// fewer sampled vectors than `nlist`; `Faiss` when FAISS fails.
    pub fn reclustered(&self, nlist: usize, sample_ratio: f64) -> Result<Reclustered> {
        self.check_writable("recluster")?;
        let raw = match &self.raw {
            Raw::Float(r) => r,
            Raw::Binary(_) => {
                return Err(Error::new(ErrorKind::Unsupported, "binary (Hamming) indices cannot be reclustered"))
            }
        };
        let info = raw.describe()?;
        if info.pretransform
            || !matches!(info.inner_name.as_str(), "IndexIVFFlat" | "IndexIVFPQ" | "IndexIVFScalarQuantizer")
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "reclustering needs an IndexIVFFlat, IndexIVFPQ or IndexIVFScalarQuantizer (possibly inside an IDMap), not {}",
                    info.type_name
                ),
            ));
        }
        if nlist == 0 {
            return Err(Error::invalid("the number of clusters must be at least 1"));
        }
        if !(sample_ratio.is_finite() && sample_ratio > 0.0) {
            return Err(Error::invalid(format!("sample_ratio={sample_ratio} must be a positive number")));
        }
        let n = self.ntotal();
        if n == 0 {
            return Err(Error::invalid("the index is empty: there is nothing to recluster"));
        }
        let sample = recluster_sample(n, nlist, sample_ratio);
        if sample < nlist {
            return Err(Error::invalid(format!("{nlist} clusters need at least {nlist} vectors; the index holds {n}")));
        }
        let (raw, previous_nlist) = raw.ivf_reclustered(nlist, sample, SEED)?;
        let mut meta = self.meta.clone();
        meta.factory = with_nlist(&meta.factory, previous_nlist, nlist);
        meta.train_size = sample;
        let index = Index { raw: Raw::Float(raw), meta, has_sidecar: self.has_sidecar, storage: self.storage };
        Ok(Reclustered { index, previous_nlist, sample })
    }
}

/// `factory` with its `IVF<old>` component (if any) saying `IVF<new>`.
fn with_nlist(factory: &str, old: usize, new: usize) -> String {
    let from = format!("IVF{old}");
    factory
        .split(',')
        .map(|part| match part.strip_prefix(&from) {
            Some(rest) if !rest.starts_with(|c: char| c.is_ascii_digit()) => format!("IVF{new}{rest}"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::{IndexSpec, Rows};

    /// `n` points around `centers` (each `d` long), deterministic.
    fn blobs(centers: &[Vec<f32>], per: usize) -> Vec<f32> {
        let mut x = Vec::new();
        let mut s = 7u32;
        for c in centers {
            for _ in 0..per {
                for &v in c {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    x.push(v + ((s >> 16) % 1000) as f32 / 10_000.0);
                }
            }
        }
        x
    }

    #[test]
    fn kmeans_finds_separated_blobs() {
        let centers = vec![vec![0.0, 0.0, 0.0], vec![10.0, 0.0, 0.0], vec![0.0, 10.0, 0.0]];
        let x = blobs(&centers, 40);
        let c = kmeans(&x, 3, 3, DEFAULT_NITER, Metric::L2).unwrap();
        assert_eq!((c.d, c.k, c.centroids.len(), c.assignments.len()), (3, 3, 9, 120));
        assert_eq!(c.sizes, vec![40, 40, 40]);
        // Points of one blob share a cluster, and different blobs have different clusters.
        let first: Vec<i64> = (0..3).map(|b| c.assignments[b * 40]).collect();
        for (b, &f) in first.iter().enumerate() {
            assert!(c.assignments[b * 40..(b + 1) * 40].iter().all(|&a| a == f), "blob {b}");
        }
        assert!(first[0] != first[1] && first[1] != first[2] && first[0] != first[2]);
        // The objective is the sum of squared distances to the (tight) centroids.
        assert!(c.obj > 0.0 && c.obj < 120.0 * 3.0 * 0.01, "obj {}", c.obj);
        // Deterministic.
        assert_eq!(kmeans(&x, 3, 3, DEFAULT_NITER, Metric::L2).unwrap(), c);
    }

    #[test]
    fn kmeans_inner_product_normalizes_centroids() {
        let centers = vec![vec![5.0, 0.1], vec![0.1, 5.0]];
        let x = blobs(&centers, 20);
        for metric in [Metric::Ip, Metric::Cosine] {
            let c = kmeans(&x, 2, 2, 10, metric).unwrap();
            for r in c.centroids.chunks(2) {
                let norm = (r[0] * r[0] + r[1] * r[1]).sqrt();
                assert!((norm - 1.0).abs() < 1e-3, "{metric}: centroid norm {norm}");
            }
            assert_eq!(c.sizes, vec![20, 20], "{metric}");
        }
    }

    #[test]
    fn kmeans_refuses_bad_input() {
        let x = vec![0.0f32; 12];
        assert!(kmeans(&x, 5, 1, 10, Metric::L2).is_err(), "not whole rows");
        assert!(kmeans(&x, 0, 1, 10, Metric::L2).is_err(), "d = 0");
        assert!(kmeans(&x, 3, 0, 10, Metric::L2).is_err(), "k = 0");
        assert!(kmeans(&x, 3, 5, 10, Metric::L2).is_err(), "more clusters than points");
        assert!(kmeans(&x, 3, 2, 0, Metric::L2).is_err(), "niter = 0");
        let mut bad = x.clone();
        bad[4] = f32::NAN;
        let e = kmeans(&bad, 3, 2, 10, Metric::L2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("vector 1 component 1"), "{e}");
        // n == k: FAISS takes the points as they are.
        let c = kmeans(&[1.0, 2.0, 3.0, 4.0], 2, 2, 5, Metric::L2).unwrap();
        assert_eq!(c.obj, 0.0);
        assert_eq!(c.sizes, vec![1, 1]);
    }

    #[test]
    fn recluster_sample_follows_faissx() {
        assert_eq!(recluster_sample(1000, 20, 0.5), 500);
        assert_eq!(recluster_sample(1000, 80, 0.5), 800);
        assert_eq!(recluster_sample(1000, 200, 0.5), 1000);
        assert_eq!(recluster_sample(1000, 5, 7.0), 1000);
        assert_eq!(recluster_sample(0, 5, 0.5), 0);
    }

    #[test]
    fn factory_string_follows_the_new_nlist() {
        assert_eq!(with_nlist("IVF16,Flat", 16, 4), "IVF4,Flat");
        assert_eq!(with_nlist("IDMap2,IVF16_HNSW32,PQ4", 16, 40), "IDMap2,IVF40_HNSW32,PQ4");
        assert_eq!(with_nlist("IVF160,Flat", 16, 4), "IVF160,Flat");
        assert_eq!(with_nlist("", 16, 4), "");
    }

    fn ivf(factory: &str, x: &[f32], d: usize) -> Index {
        let mut ix = Index::create(&IndexSpec { factory: factory.into(), metric: Metric::L2, dim: d }, false).unwrap();
        ix.train(x).unwrap();
        ix.add(x, None).unwrap();
        ix
    }

    #[test]
    fn reclustered_ivf_keeps_vectors_and_ids() {
        let d = 4;
        let centers: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32, (i * i) as f32 % 5.0, 1.0, -(i as f32)]).collect();
        let x = blobs(&centers, 50);
        for factory in ["IVF8,Flat", "IVF8,SQ8", "IVF8,PQ2x4np"] {
            let mut ix = ivf(factory, &x, d);
            // Remove a few, so ids are not 0..n any more.
            ix.remove_ids(&[0, 5, 399]).unwrap();
            let before = ix.ntotal();
            let r = ix.reclustered(4, 0.5).unwrap();
            assert_eq!(r.previous_nlist, 8, "{factory}");
            assert_eq!(r.sample, before / 2, "{factory}");
            let info = r.index.describe().unwrap();
            assert_eq!(info.nlist, Some(4), "{factory}");
            assert_eq!(r.index.ntotal(), before, "{factory}");
            assert!(r.index.is_trained());
            let mut a = ix.stored_ids(0, before).unwrap();
            let mut b = r.index.stored_ids(0, before).unwrap();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{factory}: same ids");
            assert_eq!(ix.describe().unwrap().nlist, Some(8), "{factory}: the original is unchanged");
            assert_eq!(r.index.meta().factory, factory.replacen("IVF8", "IVF4", 1));
            if factory == "IVF8,Flat" {
                // Lossless: every id still holds its vector.
                assert_eq!(r.index.reconstruct(7).unwrap(), Rows::Float(x[7 * d..8 * d].to_vec()));
            }
        }
    }

    #[test]
    fn recluster_refuses_what_it_cannot_rebuild() {
        let x = blobs(&[vec![0.0, 0.0], vec![3.0, 3.0]], 20);
        let mut flat = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 2 }, false).unwrap();
        flat.add(&x, None).unwrap();
        assert_eq!(flat.reclustered(2, 0.5).err().unwrap().kind(), ErrorKind::Unsupported);
        let ix = ivf("IVF2,Flat", &x, 2);
        assert_eq!(ix.reclustered(0, 0.5).err().unwrap().kind(), ErrorKind::InvalidInput);
        assert_eq!(ix.reclustered(41, 0.5).err().unwrap().kind(), ErrorKind::InvalidInput, "more lists than vectors");
        assert_eq!(ix.reclustered(2, f64::NAN).err().unwrap().kind(), ErrorKind::InvalidInput);
        let empty =
            Index::create(&IndexSpec { factory: "IVF2,Flat".into(), metric: Metric::L2, dim: 2 }, false).unwrap();
        assert_eq!(empty.reclustered(2, 0.5).err().unwrap().kind(), ErrorKind::InvalidInput);
    }
}
