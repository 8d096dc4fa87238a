//! Vectors into and out of an [`Index`]: train, add, search, range search, reconstruct — one
//! method each for float rows and binary codes alike ([`RowsRef`] in, [`Rows`] out; see
//! `types.rs`). Here are the checks every caller (CLI, server, bench) gets before FAISS sees
//! the vectors: their form and width, finite values, cosine normalization, training, ids.

use super::raw::refuse_binary_hash;
use super::{ffi, IdMode, Index, Neighbors, RangeHits, Rows, RowsRef, SearchParams};
use crate::engine::error::{Error, ErrorKind, Result};

/// Vectors checked for an index: `n` of them, and what FAISS gets (float rows copied and
/// normalized when the metric is cosine, otherwise the caller's own).
pub(super) struct Checked<'a> {
    pub(super) n: usize,
    x: RowsRef<'a>,
    normalized: Option<Vec<f32>>,
}

impl Checked<'_> {
    pub(super) fn rows(&self) -> RowsRef<'_> {
        match &self.normalized {
            Some(v) => RowsRef::Float(v),
            None => self.x,
        }
    }
}

impl Index {
    /// How many vectors `x` holds for this index (`n × d` floats or `n × d/8` bytes).
    ///
    /// Errors: `Unsupported` for the other form of vectors than the index takes;
    /// `DimensionMismatch` for a length that is not a whole number of vectors.
    pub fn rows_in<'a>(&self, x: impl Into<RowsRef<'a>>) -> Result<usize> {
        self.raw.count(x.into(), "vectors")
    }

    /// Check `x` (form, whole number of vectors, finite float values) and copy-normalize float
    /// rows when the metric is cosine. `what` names the input in errors.
    pub(super) fn check<'a>(&self, x: RowsRef<'a>, what: &str) -> Result<Checked<'a>> {
        let n = self.raw.count(x, what)?;
        let mut normalized = None;
        if let RowsRef::Float(v) = x {
            let d = self.d();
            if let Some(pos) = crate::engine::io::first_out_of_range(v) {
                return Err(Error::invalid(format!(
                    "{what}: vector {} component {} is {} ({})",
                    pos / d,
                    pos % d,
                    v[pos],
                    crate::engine::io::out_of_range_reason(v[pos])
                )));
            }
            if self.meta.normalize {
                let mut v = v.to_vec();
                ffi::normalize_l2(&mut v, d);
                normalized = Some(v);
            }
        }
        Ok(Checked { n, x, normalized })
    }

    /// `NotTrained` unless the index is trained (searches need it).
    pub(super) fn searchable(&self) -> Result<()> {
        if !self.raw.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, "index is not trained: nothing can be searched"));
        }
        Ok(())
    }

    /// The training size below which FAISS's k-means would warn: `K × 39` for the largest
    /// clustering of `K` centroids the index trains (IVF lists, PQ/RQ codebooks, OPQ), 0
    /// when its training clusters nothing. [`Index::train`] does not print FAISS's warning;
    /// callers report this advice through their own logging.
    pub fn min_train_points(&self) -> Result<usize> {
        self.raw.min_train_points()
    }

    /// Train on `x` (`n × d` f32 row-major, or `n × d/8` bytes for a binary index; binary IVF
    /// trains its coarse quantizer). A no-op for indices that need no training.
    ///
    /// Errors: `InvalidInput` for no vectors or non-finite values; `DimensionMismatch`;
    /// `Unsupported` for a read-only index or the other form of vectors.
    pub fn train<'a>(&mut self, x: impl Into<RowsRef<'a>>) -> Result<()> {
        self.check_writable("train")?;
        let x = self.check(x.into(), "training vectors")?;
        if x.n == 0 {
            return Err(Error::invalid("training needs at least one vector"));
        }
        let _lsq = self.lsq_guard();
        self.raw.train(x.rows())?;
        self.meta.train_size = x.n;
        Ok(())
    }

    /// Add `x` (`n × d` f32 row-major, or `n × d/8` bytes for a binary index), with `ids`
    /// (`n`) if given.
    ///
    /// Errors: `NotTrained` for an untrained index, `InvalidInput` when ids are required but
    /// missing, given to an index that cannot store them, negative, or of the wrong count;
    /// `DimensionMismatch`; `Unsupported` for a read-only index or the other form of vectors.
    pub fn add<'a>(&mut self, x: impl Into<RowsRef<'a>>, ids: Option<&[i64]>) -> Result<()> {
        self.check_writable("add vectors")?;
        let x = self.check(x.into(), "vectors")?;
        self.check_add(x.n, ids)?;
        if x.n == 0 {
            // Nothing to add: FAISS is not asked (some index types, binary HNSW among them,
            // read the first vector regardless).
            return Ok(());
        }
        let _lsq = self.lsq_guard();
        self.raw.add(x.rows(), ids)?;
        if ids.is_some() {
            self.meta.ids = IdMode::Explicit;
        }
        Ok(())
    }

    /// k-NN search of `queries` (`nq × d` f32 row-major, or `nq × d/8` bytes for a binary
    /// index: Hamming distances as f32, closest first). `params.nprobe` applies to IVF,
    /// `params.ef_search` to HNSW (not to binary indices).
    ///
    /// Errors: `InvalidInput` for `k` = 0 or a zero nprobe / efSearch; `DimensionMismatch`;
    /// `NotTrained`; `Unsupported` for the other form of vectors.
    pub fn search<'a>(&self, queries: impl Into<RowsRef<'a>>, params: &SearchParams) -> Result<Neighbors> {
        self.raw.check_search(params)?;
        self.searchable()?;
        let q = self.check(queries.into(), "queries")?;
        let (nq, k) = (q.n, params.k);
        if nq == 0 {
            return Ok(Neighbors { nq: 0, k, ids: Vec::new(), dists: Vec::new() });
        }
        if self.ntotal() == 0 {
            // What FAISS answers for an empty index (id -1, the heap's neutral distance),
            // without asking it: fast-scan PQ indices crash searching an empty index.
            let worst = if self.raw.is_inner_product() { -f32::MAX } else { f32::MAX };
            let n = nq.saturating_mul(k);
            return Ok(Neighbors { nq, k, ids: vec![-1; n], dists: vec![worst; n] });
        }
        let (dists, ids) = self.raw.search(q.rows(), params)?;
        Ok(Neighbors { nq, k, ids, dists })
    }

    /// Range search: every stored vector within `radius` of each query (squared L2 for `l2`;
    /// for `ip`/`cosine`, similarity above `radius`; for binary indices, Hamming distance
    /// below `radius`). Hits sorted closest first.
    ///
    /// Errors: `InvalidInput` for a radius that is not finite (binary: not a non-negative
    /// distance); `DimensionMismatch`; `NotTrained`; `Unsupported` for the other form.
    pub fn range_search<'a>(&self, queries: impl Into<RowsRef<'a>>, radius: f32) -> Result<RangeHits> {
        self.raw.check_radius(radius)?;
        self.searchable()?;
        let q = self.check(queries.into(), "queries")?;
        self.raw.range_search(q.rows(), radius)
    }

    /// The vector stored under id `key`: `d` floats, or `d/8` bytes for a binary index.
    ///
    /// Errors: `NotFound` for a negative id, for an id outside `0..ntotal` of an index that
    /// numbers its vectors by position (FAISS itself only checks `key < ntotal`, so a negative
    /// key would read memory outside the index), and for an id an IVF index does not hold;
    /// `Unsupported` for binary hash indices, which cannot reconstruct.
    pub fn reconstruct(&self, key: i64) -> Result<Rows> {
        let info = self.raw.describe()?;
        refuse_binary_hash(&info, "reconstruct vectors")?;
        self.check_key(&info, key)?;
        self.raw.reconstruct(key)
    }

    /// The `n` vectors from internal position `i0` (`n × d` floats, or `n × d/8` bytes):
    /// IDMap wrappers by the wrapped index's positions, IVF by ids `i0..i0+n` (binary IVF:
    /// zeros for ids not stored), others by position.
    ///
    /// Errors: `InvalidInput` when `i0 + n` is past `ntotal` (or overflows); `Unsupported`
    /// for binary hash indices.
    pub fn reconstruct_n(&self, i0: usize, n: usize) -> Result<Rows> {
        refuse_binary_hash(&self.raw.describe()?, "reconstruct vectors")?;
        self.check_range(i0, n)?;
        self.raw.reconstruct_n(i0, n)
    }
}

/// Held while FAISS trains or encodes with a LocalSearchQuantizer (see [`Index::lsq_guard`]).
static LSQ: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Index {
    /// FAISS 1.12's LocalSearchQuantizer records its timings in one process-wide table
    /// (`faiss::lsq::lsq_timer`, a `std::unordered_map`) without a lock, on every train and
    /// every encode (add): two LSQ indices trained or filled on different threads at once
    /// corrupt it (SIGSEGV in `LSQTimer::add`; the server's per-index queues did exactly that
    /// under the fuzzer). So every LSQ train and add in the process takes this one lock;
    /// other index types never wait for it. `None` for them.
    fn lsq_guard(&self) -> Option<std::sync::MutexGuard<'static, ()>> {
        let info = self.describe().ok()?;
        let lsq = |n: &str| n.contains("LocalSearch");
        (lsq(&info.type_name) || lsq(&info.inner_name)).then(|| LSQ.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IndexSpec, Metric, Storage};
    use super::*;

    /// FAISS's LocalSearchQuantizer keeps its timings in one global table without a lock:
    /// LSQ indices trained or filled on several threads at once (the server's per-index
    /// queues) crashed the process (SIGSEGV in `faiss::lsq::LSQTimer::add`, found by the
    /// server fuzzer). A crash here ends the test binary.
    #[test]
    fn lsq_indices_train_and_add_on_many_threads() {
        use crate::engine::index::{IndexSpec, Metric};
        let x: Vec<f32> = (0..300 * 8).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let x = x.clone();
                std::thread::spawn(move || {
                    super::super::set_threads(1);
                    for _ in 0..6 {
                        let spec = IndexSpec { factory: "LSQ2x4".into(), metric: Metric::L2, dim: 8 };
                        let mut ix = Index::create(&spec, false).unwrap();
                        ix.train(&x[..]).unwrap();
                        ix.add(&x[..], None).unwrap();
                        assert_eq!(ix.ntotal(), 300);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    fn flat(d: usize, metric: Metric) -> Index {
        Index::create(&IndexSpec { factory: "Flat".into(), metric, dim: d }, false).unwrap()
    }

    fn params(k: usize) -> SearchParams {
        SearchParams { k, nprobe: None, ef_search: None }
    }

    #[test]
    fn one_method_family_serves_float_rows() {
        let mut ix = flat(2, Metric::L2);
        let x = vec![0.0f32, 0.0, 1.0, 1.0, 5.0, 5.0];
        ix.add(&x, None).unwrap();
        assert_eq!(ix.rows_in(&x).unwrap(), 3);
        let n = ix.search(&[1.1f32, 1.0], &params(2)).unwrap();
        assert_eq!(n.ids, vec![1, 0]);
        let h = ix.range_search(&[0.0f32, 0.0], 2.5).unwrap();
        assert_eq!(h.row(0).0, &[0, 1]);
        assert_eq!(ix.reconstruct(2).unwrap(), Rows::Float(vec![5.0, 5.0]));
        assert_eq!(ix.reconstruct_n(0, 3).unwrap(), Rows::Float(x));
    }

    #[test]
    fn one_method_family_serves_binary_codes() {
        let mut ix = Index::create_binary(16, "BFlat").unwrap();
        let codes: Vec<u8> = vec![0b0000_0000, 0, 0b0000_0111, 0, 0xff, 0xff];
        ix.add(&codes, None).unwrap();
        assert_eq!(ix.rows_in(&codes).unwrap(), 3);
        let n = ix.search(&[0b0000_0011u8, 0], &params(2)).unwrap();
        assert_eq!((n.ids.clone(), n.dists.clone()), (vec![1, 0], vec![1.0, 2.0]));
        // Binary range search is strict: Hamming distance below the radius.
        let h = ix.range_search(&[0u8, 0], 3.0).unwrap();
        assert_eq!(h.row(0).0, &[0]);
        assert_eq!(ix.reconstruct(2).unwrap(), Rows::Codes(vec![0xff, 0xff]));
        assert_eq!(ix.reconstruct_n(0, 3).unwrap(), Rows::Codes(codes));
        // An empty index answers without asking FAISS, padded as FAISS pads.
        let empty = Index::create_binary(16, "BFlat").unwrap();
        let n = empty.search(&[0u8, 0], &params(1)).unwrap();
        assert_eq!((n.ids, n.dists), (vec![-1], vec![f32::MAX]));
    }

    #[test]
    fn the_other_form_of_vectors_is_refused() {
        let mut f = flat(16, Metric::L2);
        let e = f.add(&[0u8, 0], None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("float vectors, not binary codes"), "{e}");
        let b = Index::create_binary(16, "BFlat").unwrap();
        let e = b.search(&[0.0f32; 16], &params(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("binary (Hamming) index"), "{e}");
        let e = b.rows_in(&[0u8, 0, 0]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DimensionMismatch);
    }

    #[test]
    fn cosine_normalizes_a_copy_and_leaves_the_input_alone() {
        let mut ix = flat(2, Metric::Cosine);
        let x = vec![3.0f32, 4.0];
        ix.add(&x, None).unwrap();
        assert_eq!(x, vec![3.0, 4.0]);
        assert_eq!(ix.reconstruct(0).unwrap(), Rows::Float(vec![0.6, 0.8]));
    }

    #[test]
    fn read_only_indices_refuse_changes_before_faiss() {
        let mut ix = flat(2, Metric::L2);
        ix.storage = Storage::Mapped;
        let e = ix.add(&[1.0f32, 2.0], None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("cannot add vectors: the index is memory-mapped"), "{e}");
        ix.storage = Storage::OnDisk;
        let e = ix.check_writable("train").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("cannot train: the index has on-disk inverted lists"), "{e}");
        assert_eq!(ix.ntotal(), 0);
    }
}
