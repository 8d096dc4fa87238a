//! FAISSx's clustering actions, both through FAISS's own k-means (`index::kmeans`):
//! `compute_clustering`, a read that clusters the request's vectors and touches no index, and
//! `recluster_index`, a write that rebuilds an IVF index around a freshly trained coarse
//! quantizer (checkpointed before it replaces the served index, like `train_index`).

use super::limits::{MAX_KMEANS_WORK, MAX_NITER};
use super::types::metric_of;
use super::{Service, Slot};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{factory::MAX_NLIST, kmeans, Metric, Rows};
use crate::engine::protocol::{self, Encoding, Msg, Value, MAX_DIMENSION};

impl Service {
    /// `compute_clustering`: k-means of `vectors` into `n_clusters` (docs/protocol.md §7).
    pub(super) fn compute_clustering(&self, m: &Msg) -> Result<Msg> {
        let d = match (m.int("dimension")?, m.width_hint("vectors")) {
            (Some(d), _) => d,
            (None, Some(w)) => w as i64,
            (None, None) => {
                return Err(match m.get("vectors") {
                    None => Error::invalid("missing field \"vectors\""),
                    Some(Value::Binary(_)) => {
                        Error::invalid("\"vectors\" is a bin of float32: give \"dimension\", the width of its rows")
                    }
                    Some(_) => Error::invalid("compute_clustering needs at least one vector"),
                })
            }
        };
        if !(1..=MAX_DIMENSION as i64).contains(&d) {
            return Err(Error::invalid(format!("dimension={d} is out of range 1..={MAX_DIMENSION}")));
        }
        let d = d as usize;
        let k = m.int("n_clusters")?.ok_or_else(|| Error::invalid("missing field \"n_clusters\""))?;
        let niter = m.int("niter")?.unwrap_or(kmeans::DEFAULT_NITER as i64);
        if !(1..=MAX_NITER).contains(&niter) {
            return Err(Error::invalid(format!("niter={niter} is out of range 1..={MAX_NITER}")));
        }
        let metric = metric_of(m)?.unwrap_or(Metric::L2);
        let x = m.vectors("vectors", d)?;
        let n = x.len() / d;
        if n == 0 {
            return Err(Error::invalid("compute_clustering needs at least one vector"));
        }
        if k < 1 || k as usize > n {
            return Err(Error::invalid(format!(
                "n_clusters={k} is out of range 1..={n}: there are {n} vectors (FAISS's k-means needs at least one per cluster)"
            )));
        }
        let k = k as usize;
        let work = kmeans::kmeans_work(n, d, k, niter as u32);
        if work > MAX_KMEANS_WORK {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "k-means of {n} vectors of d={d} into {k} clusters with niter={niter} is about {work} multiply-adds, over the server's limit of {MAX_KMEANS_WORK}: use fewer vectors, clusters or iterations"
                ),
            ));
        }
        // Like a search: big work on every core, small work on this worker's thread.
        crate::engine::index::set_threads(if work >= 1 << 26 { self.cores } else { 1 });
        let c = kmeans::kmeans(&x, d, k, niter as u32, metric);
        crate::engine::index::set_threads(1);
        let c = c?;
        let enc = if m.flag("binary")? { Encoding::Binary } else { Encoding::Nested };
        let assignments = match enc {
            Encoding::Binary => Value::Binary(protocol::i64_bytes(&c.assignments)),
            Encoding::Nested => protocol::ints_value(&c.assignments),
        };
        Ok(Msg::default()
            .with("centroids", protocol::rows_value(&Rows::Float(c.centroids), d, enc))
            .with("assignments", assignments)
            .with("cluster_sizes", Value::Array(c.sizes.iter().map(|&s| Value::from(s)).collect()))
            .with("n_clusters", k as u64)
            .with("dimension", d as u64)
            .with("obj", c.obj as f64))
    }
}

/// `recluster_index` on the slot of `id` (under its write lock): the rebuilt index
/// ([`Index::reclustered`](crate::engine::index::Index::reclustered)) is checkpointed first
/// (with `--data-dir`) and only then replaces the served one, so a failure leaves memory and
/// disk as they were. Ids, and so per-vector metadata, are unchanged.
pub(super) fn recluster(id: &str, m: &Msg, s: &mut Slot) -> Result<Msg> {
    let nlist = match m.int("n_clusters")? {
        Some(n) if !(1..=MAX_NLIST as i64).contains(&n) => {
            return Err(Error::invalid(format!("n_clusters={n} is out of range 1..={MAX_NLIST}")))
        }
        Some(n) => n as usize,
        None => s.index.describe()?.nlist.ok_or_else(|| {
            Error::new(ErrorKind::Unsupported, "reclustering needs an IVF index (it has no inverted lists)")
        })?,
    };
    let ratio = m.float("sample_ratio")?.unwrap_or(0.5);
    if !(ratio.is_finite() && ratio > 0.0) {
        return Err(Error::invalid(format!("sample_ratio={ratio} must be a positive number")));
    }
    let r = s.index.reclustered(nlist, ratio)?;
    let mut index = r.index;
    if let Some(st) = s.store.as_mut() {
        st.checkpoint(&mut index, &s.md)?;
    }
    s.index = index;
    let ntotal = s.index.ntotal() as u64;
    Ok(Msg::default()
        .with("message", format!("index {id} reclustered with {nlist} clusters"))
        .with("previous_nlist", r.previous_nlist as u64)
        .with("new_nlist", nlist as u64)
        .with("ntotal", ntotal))
}
