//! Per-vector metadata and filters over it (issue 14).
//!
//! | file | owns |
//! |---|---|
//! | `lang.rs` | the filter language (MongoDB / Pinecone / Chroma style JSON) and its parser |
//! | `table.rs` | [`MetaTable`]: metadata rows as Arrow columns, stored as `<index>.meta.parquet`; string ids |
//! | `rows.rs` | reading metadata inputs; the ids and metadata of vectors being added ([`rows::plan_add`]) |
//! | `eval.rs` | evaluating a filter over a table with Arrow's compute kernels, to the matching FAISS ids |
//!
//! The ids a filter matches become an [`IdSet`](crate::engine::index::IdSet) that the index
//! searches inside FAISS ([`Index::search_in`](crate::engine::index::Index::search_in)). This
//! module never calls FAISS itself.

pub mod eval;
pub mod lang;
pub mod rows;
pub mod table;

pub use eval::matching_ids;
pub use lang::Filter;
pub use table::{MetaTable, UserIds};
