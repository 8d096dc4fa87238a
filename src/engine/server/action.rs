//! The actions of docs/protocol.md §5, parsed once per request into [`Action`]: the one list
//! of action names (with FAISSx's aliases) that scheduling, dispatch and `metrics` share.

use crate::engine::error::{Error, ErrorKind, Result};

/// What an action does to the server's state, which decides how it is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionClass {
    /// Server-wide and lock-free (`ping`, `health`, `metrics`, `list_indices`): answered by
    /// the I/O thread, never waits for an index.
    Admin,
    /// Reads one index under its read lock (or none): runs on a worker thread, concurrently
    /// with other reads.
    Read,
    /// Changes state: runs on the queue of the index it names, in arrival order.
    Write,
    /// A chunk of an upload or export: no index lock, disk I/O; runs on a worker thread.
    Transfer,
}

macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal $(| $alias:literal)* : $class:ident, )*) => {
        /// One action of the protocol. Aliases (FAISSx's `list_indexes`, `clear`) parse to the
        /// variant of the name they stand for.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $( $(#[$doc])* $variant, )*
        }

        impl Action {
            /// Every action, in protocol order.
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];

            /// The action named `s` (its name or an alias); `None` for any other string.
            pub fn parse(s: &str) -> Option<Action> {
                match s {
                    $( $name $(| $alias)* => Some(Action::$variant), )*
                    _ => None,
                }
            }

            /// The action's name on the wire (aliases give their canonical name).
            pub fn name(self) -> &'static str {
                match self {
                    $( Action::$variant => $name, )*
                }
            }

            /// How the action is scheduled.
            pub fn class(self) -> ActionClass {
                match self {
                    $( Action::$variant => ActionClass::$class, )*
                }
            }
        }
    };
}

actions! {
    /// Liveness, without authentication.
    Ping = "ping": Admin,
    /// Server status for the caller's tenant.
    Health = "health": Admin,
    /// Request counts and latencies of the caller's tenant.
    Metrics = "metrics": Admin,
    /// The caller's indices.
    ListIndices = "list_indices" | "list_indexes": Admin,
    /// A new index.
    CreateIndex = "create_index": Write,
    /// Vectors (`n × d`), optionally with ids and metadata.
    AddVectors = "add_vectors": Write,
    /// Vectors with their ids (ids required).
    AddWithIds = "add_with_ids": Write,
    /// `add_with_ids` with FAISSx's `batch_size` (one add, all or nothing).
    BatchAddWithIds = "batch_add_with_ids": Write,
    /// Train on `n × d` vectors.
    TrainIndex = "train_index": Write,
    /// Remove vectors by id.
    RemoveIds = "remove_ids": Write,
    /// Replace one vector of an IDMap2 index.
    ReplaceVector = "replace_vector": Write,
    /// Drop an index and its files.
    DeleteIndex = "delete_index": Write,
    /// Set `nprobe`, `efSearch` or `efConstruction`.
    SetParameter = "set_parameter": Write,
    /// Set `nprobe` / `efSearch` from the index's size and a level.
    OptimizeIndex = "optimize_index": Write,
    /// Retrain an IVF index's coarse quantizer with another number of lists.
    ReclusterIndex = "recluster_index": Write,
    /// Remove every vector (training kept).
    Reset = "reset" | "clear": Write,
    /// Merge source indices into a target.
    MergeIndices = "merge_indices": Write,
    /// Checkpoint one index or all of the tenant's.
    Snapshot = "snapshot": Write,
    /// k nearest neighbours of `nq × d` queries.
    Search = "search": Read,
    /// Search, with the neighbours' vectors.
    SearchAndReconstruct = "search_and_reconstruct": Read,
    /// Search with FAISSx's hybrid fields (`vector_weight`, `metadata_filter`).
    HybridSearch = "hybrid_search": Read,
    /// All neighbours within a radius.
    RangeSearch = "range_search": Read,
    /// One stored vector by id.
    Reconstruct = "reconstruct": Read,
    /// Stored vectors `start_idx .. start_idx + num_vectors`.
    ReconstructN = "reconstruct_n": Read,
    /// Stored vectors from `start_idx`, at most `limit`.
    GetVectors = "get_vectors": Read,
    /// An index's status.
    GetIndexStatus = "get_index_status": Read,
    /// An index's status (FAISSx's name).
    GetIndexStats = "get_index_stats": Read,
    /// An index's status with storage and index-level metadata.
    GetIndexInfo = "get_index_info": Read,
    /// One parameter of an index.
    GetParameter = "get_parameter": Read,
    /// Per-vector metadata by id.
    GetMetadata = "get_metadata": Read,
    /// k-means of the request's vectors (reads no index).
    ComputeClustering = "compute_clustering": Read,
    /// Start uploading an index file (for `import_index`).
    UploadBegin = "upload_begin": Transfer,
    /// One chunk of an upload.
    UploadChunk = "upload_chunk": Transfer,
    /// Make an upload or a server-side file the index, atomically.
    ImportIndex = "import_index": Write,
    /// Start an export: a point-in-time copy of an index's files.
    ExportBegin = "export_begin": Write,
    /// One chunk of an export.
    ExportChunk = "export_chunk": Transfer,
    /// End an upload or export, removing its files.
    TransferEnd = "transfer_end": Transfer,
}

impl Action {
    /// The action named `s`, or an `UNSUPPORTED` error naming it.
    pub fn from_name(s: &str) -> Result<Action> {
        Action::parse(s).ok_or_else(|| {
            let shown: String = s.chars().take(64).collect();
            Error::new(ErrorKind::Unsupported, format!("unknown action {shown:?}"))
        })
    }

    /// The field naming the index whose queue a write runs on (`None`: the tenant's
    /// server-wide queue, e.g. `snapshot` of every index).
    pub fn index_field(self) -> &'static str {
        match self {
            Action::MergeIndices => "target_index_id",
            _ => "index_id",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for &a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        assert_eq!(Action::parse("list_indexes"), Some(Action::ListIndices));
        assert_eq!(Action::parse("clear"), Some(Action::Reset));
        assert_eq!(Action::parse("Search"), None);
        assert_eq!(Action::from_name("nope").unwrap_err().kind(), ErrorKind::Unsupported);
        assert_eq!(Action::Search.class(), ActionClass::Read);
        assert_eq!(Action::Snapshot.class(), ActionClass::Write);
        assert_eq!(Action::Ping.class(), ActionClass::Admin);
        assert_eq!(Action::ComputeClustering.class(), ActionClass::Read);
        assert_eq!(Action::ReclusterIndex.class(), ActionClass::Write);
        assert_eq!(Action::parse("batch_add_with_ids"), Some(Action::BatchAddWithIds));
    }
}
