//! The faissx engine: vector file I/O, the FAISS wrapper, and the jobs built from them
//! (build, add, search, …). Commands in `cmd/` convert their flags into engine values, call
//! the engine and render its results. The engine never imports clap, indicatif or
//! comfy-table; long jobs report through [`Progress`] and stop when their stop flag is set.

pub mod bench;
pub mod client;
pub mod curve;
pub mod error;
pub mod filter;
pub mod index;
pub mod io;
pub mod jobs;
pub mod merge;
pub mod metrics;
pub mod output;
pub mod parts;
pub mod protocol;
pub mod router;
pub mod server;
pub mod shards;
pub mod split;
pub mod transfer;

pub use error::{Error, ErrorKind, Result};
pub use index::{Index, IndexInfo, IndexMeta, IndexSpec, Metric, Neighbors, RangeHits, SearchParams};
pub use io::{Batch, CsvOptions, VecFormat, VectorFile};

/// Progress of a long job, reported by the engine and drawn by the caller (a bar on a
/// terminal, log lines otherwise, nothing in the server).
pub trait Progress: Sync {
    /// A new stage begins (`"train"`, `"add"`, `"search"`) with `total` units (0 if unknown).
    fn start(&self, stage: &str, total: u64) {
        let _ = (stage, total);
    }
    /// `n` more units done.
    fn inc(&self, n: u64) {
        let _ = n;
    }
    /// The current stage is done.
    fn finish(&self) {}
    /// A diagnostic line for the user.
    fn note(&self, msg: &str) {
        let _ = msg;
    }
    /// A diagnostic line for a user who asked for more (`-v`): advice and FAISS's own
    /// messages that faissx reports for it (e.g. a training sample smaller than FAISS's
    /// k-means advises).
    fn detail(&self, msg: &str) {
        let _ = msg;
    }
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {}
