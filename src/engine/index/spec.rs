//! What to build: factory string, metric, dimension.

use crate::engine::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Distance metric. `Cosine` is inner product on L2-normalized vectors: faissx normalizes
/// vectors on build, add and search, and records that in the sidecar so later commands do too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Squared Euclidean distance (FAISS METRIC_L2; distances are squared L2).
    #[default]
    L2,
    /// Inner product (FAISS METRIC_INNER_PRODUCT; larger is closer).
    Ip,
    /// Cosine similarity (inner product of normalized vectors; larger is closer).
    Cosine,
    /// Hamming distance between bit codes: the metric of binary indices (`faiss::IndexBinary`),
    /// which only the server creates (`BINARY_*` index types); not a `--metric` choice.
    Hamming,
}

impl Metric {
    /// Parse `l2`, `ip` (`inner_product`) or `cosine`.
    pub fn parse(s: &str) -> Result<Metric> {
        match s.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Ok(Metric::L2),
            "ip" | "inner_product" | "dot" => Ok(Metric::Ip),
            "cosine" | "angular" => Ok(Metric::Cosine),
            _ => Err(Error::invalid(format!("unknown metric {s:?} (expected l2, ip or cosine)"))),
        }
    }

    /// Whether FAISS should use METRIC_INNER_PRODUCT.
    pub fn faiss_inner_product(self) -> bool {
        matches!(self, Metric::Ip | Metric::Cosine)
    }

    /// Whether vectors are L2-normalized before they reach FAISS.
    pub fn normalizes(self) -> bool {
        matches!(self, Metric::Cosine)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::L2 => "l2",
            Metric::Ip => "ip",
            Metric::Cosine => "cosine",
            Metric::Hamming => "hamming",
        })
    }
}

/// An index to create: FAISS factory string (see the FAISS wiki "The index factory"), metric
/// and dimension `d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// FAISS factory string, e.g. `Flat`, `IVF1024,Flat`, `HNSW32`, `OPQ16,IVF1024,PQ16`.
    pub factory: String,
    /// Distance metric.
    pub metric: Metric,
    /// Vector dimension `d`.
    pub dim: usize,
}

impl IndexSpec {
    /// Check the parts that FAISS would not explain well, and refuse factory strings that
    /// crash or hang FAISS ([`super::factory::check_safe`]).
    pub fn validate(&self) -> Result<()> {
        if self.factory.trim().is_empty() {
            return Err(Error::invalid("--factory: empty factory string"));
        }
        if self.dim == 0 || self.dim > 65_536 {
            return Err(Error::invalid(format!("dimension d={} is out of range 1..=65536", self.dim)));
        }
        super::factory::check_safe(&self.factory)
    }
}
