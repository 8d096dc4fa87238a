//! `faissx info`: describe an index file.

use super::render;
use super::Ctx;
use crate::engine::index::{MemStats, OpenOptions};
use crate::engine::{Error, Index, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  faissx info fm.index
  faissx info fm.index --format json | jq .ntotal
  faissx info big.index --mmap      # how it maps, and what mapping it costs";

/// Describe an index: type, d, ntotal, metric, trained, parameters, size on disk.
///
/// Works on any FAISS index file, also ones written by Python; faissx's sidecar facts
/// (factory string, normalization, ids, inputs) are shown when INDEX.meta.json exists.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct InfoArgs {
    /// Index file.
    #[arg(value_name = "INDEX")]
    pub index: PathBuf,

    /// Output format (default: table on a terminal, json otherwise).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<InfoFormat>,

    /// Open the index memory-mapped and report the memory it then takes (measured).
    #[arg(long)]
    pub mmap: bool,
}

/// `info` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InfoFormat {
    /// Key/value table.
    Table,
    /// One JSON object.
    Json,
}

/// Run `faissx info`.
pub fn run(_ctx: &Ctx, a: InfoArgs) -> Result<()> {
    let before = MemStats::current();
    let index = Index::open_with(&a.index, &OpenOptions { mmap: a.mmap, warm: false, ..Default::default() })?;
    let after = MemStats::current();
    let info = index.info(Some(&a.index))?;
    // What opening cost this process: anonymous (heap) vs file-backed (mapped) resident bytes.
    let opened = OpenedMemory {
        rss_anon_bytes: after.rss_anon.saturating_sub(before.rss_anon),
        rss_file_bytes: after.rss_file.saturating_sub(before.rss_file),
    };
    let fmt = a.format.unwrap_or(if render::stdout_is_tty() { InfoFormat::Table } else { InfoFormat::Json });
    match fmt {
        InfoFormat::Json => {
            let mut v = serde_json::to_value(&info).map_err(|e| Error::invalid(e.to_string()))?;
            v["opened_memory"] = serde_json::to_value(opened).map_err(|e| Error::invalid(e.to_string()))?;
            let s = serde_json::to_string_pretty(&v).map_err(|e| Error::invalid(e.to_string()))?;
            render::println_out(&s)
        }
        InfoFormat::Table => {
            let mut rows: Vec<(String, String)> =
                vec![("path".into(), a.index.display().to_string()), ("index type".into(), info.index_type.clone())];
            if info.inner_type != info.index_type {
                rows.push(("inner type".into(), info.inner_type.clone()));
            }
            rows.push(("d".into(), info.d.to_string()));
            rows.push(("ntotal".into(), info.ntotal.to_string()));
            rows.push(("metric".into(), info.metric.to_string()));
            rows.push(("trained".into(), info.is_trained.to_string()));
            let opt = |v: Option<usize>| v.map(|x| x.to_string());
            for (k, v) in [
                ("nlist", opt(info.nlist)),
                ("nprobe", opt(info.nprobe)),
                ("M", opt(info.hnsw_m)),
                ("efSearch", opt(info.ef_search)),
                ("efConstruction", opt(info.ef_construction)),
            ] {
                if let Some(v) = v {
                    rows.push((k.into(), v));
                }
            }
            rows.push(("explicit ids".into(), info.explicit_ids.to_string()));
            rows.push(("size on disk".into(), format!("{} bytes", info.size_bytes)));
            if let Some(b) = info.ivfdata_bytes {
                rows.push(("ivfdata".into(), format!("{b} bytes (on-disk inverted lists)")));
            }
            rows.push(("storage".into(), format!("{:?}", info.storage).to_lowercase()));
            if let Some(f) = &info.mmap_flags {
                rows.push(("flags for --mmap".into(), f.clone()));
            }
            rows.push((
                "memory to open".into(),
                format!("{} bytes anonymous, {} bytes file-backed", opened.rss_anon_bytes, opened.rss_file_bytes),
            ));
            match &info.meta {
                Some(m) => {
                    if !m.factory.is_empty() {
                        rows.push(("factory".into(), m.factory.clone()));
                    }
                    rows.push(("normalized".into(), m.normalize.to_string()));
                    rows.push(("train size".into(), m.train_size.to_string()));
                    for i in &m.inputs {
                        rows.push(("input".into(), format!("{} ({}, {} rows)", i.path, i.format, i.rows)));
                    }
                    rows.push(("faissx version".into(), m.faissx_version.clone()));
                    if let Some(md) = &m.metadata {
                        let ids = if md.string_ids { "string ids" } else { "integer ids" };
                        rows.push((
                            "metadata".into(),
                            format!("{} rows, {ids}, {} bytes ({}.meta.parquet)", md.rows, md.bytes, a.index.display()),
                        ));
                        for f in &md.fields {
                            rows.push(("  field".into(), format!("{}: {} ({} rows)", f.name, f.ty, f.count)));
                        }
                    }
                }
                None => rows.push(("sidecar".into(), "none (index not written by faissx)".into())),
            }
            render::println_out(&render::kv_table(&rows))
        }
    }
}

/// Resident memory the open took, measured from `/proc/self/status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct OpenedMemory {
    rss_anon_bytes: u64,
    rss_file_bytes: u64,
}
