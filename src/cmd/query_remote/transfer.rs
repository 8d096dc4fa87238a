//! `query-remote import` and `export`: index files into and out of a running server, one
//! index or a tenant's whole set (backup and restore). The engine does the transfer
//! (`engine::transfer`); this file turns flags into its calls and prints one JSON line per
//! index.

use super::Ctx;
use crate::cmd::render::println_out;
use crate::engine::client::Client;
use crate::engine::transfer::{self, ImportFrom};
use crate::engine::{Error, Result};
use clap::Args;
use std::path::PathBuf;

/// `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Index id on the server (with --all: the backup folder to restore).
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Index file to upload (FAISS format, float or binary: `faissx build`, an export, or
    /// Python's faiss.write_index), with its sidecar and metadata files if beside it.
    #[arg(value_name = "FILE", conflicts_with_all = ["server_path", "all"])]
    pub file: Option<PathBuf>,
    /// Import this file of the server's own disk instead (it must lie under one of the
    /// server's --import-dir folders); nothing is uploaded.
    #[arg(long, value_name = "PATH", conflicts_with = "all")]
    pub server_path: Option<String>,
    /// Only if the index is at this generation now (0: only if the name is new); otherwise
    /// fail with CONFLICT and change nothing.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub if_generation: Option<u64>,
    /// Restore a backup: import every index of the folder INDEX (its manifest.json, as
    /// `export --all` writes it), each new or replacing the one of its name.
    #[arg(long)]
    pub all: bool,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Index id on the server (omit with --all).
    #[arg(value_name = "INDEX", required_unless_present = "all", conflicts_with = "all")]
    pub index: Option<String>,
    /// Output index file (its sidecar and metadata are written beside it); with --all a
    /// folder (created if missing).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Back up every index of this tenant into the folder --output, with a manifest.json.
    #[arg(long)]
    pub all: bool,
}

fn progress(ctx: &Ctx) -> impl FnMut(&str, u64, u64) + '_ {
    let mut last = std::time::Instant::now();
    move |what: &str, done: u64, total: u64| {
        if ctx.quiet || last.elapsed().as_secs_f64() < 5.0 {
            return;
        }
        last = std::time::Instant::now();
        eprintln!("faissx: {what}: {} of {} MB", done >> 20, total >> 20);
    }
}

/// Run `query-remote import`.
pub fn import(ctx: &Ctx, c: &mut Client, a: ImportArgs) -> Result<()> {
    let mut p = progress(ctx);
    if a.all {
        let dir = PathBuf::from(&a.index);
        for (id, r) in transfer::import_all(c, &dir, &mut p)? {
            println_out(&imported_json(&id, &r).to_string())?;
        }
        return Ok(());
    }
    let from = match (&a.file, &a.server_path) {
        (Some(f), None) => ImportFrom::Upload(f),
        (None, Some(s)) => ImportFrom::ServerPath(s),
        (None, None) => ImportFrom::Reread,
        (Some(_), Some(_)) => return Err(Error::invalid("give FILE or --server-path, not both")),
    };
    let r =
        c.import_index(&a.index, &from, a.if_generation, &mut |d, t| p(&a.index, d, t)).map_err(|e| match &a.file {
            Some(f) => e.context(format!("importing {}", f.display())),
            None => e,
        })?;
    println_out(&imported_json(&a.index, &r).to_string())
}

fn imported_json(id: &str, r: &transfer::Imported) -> serde_json::Value {
    serde_json::json!({
        "index_id": id,
        "generation": r.generation,
        "checksum": r.checksum,
        "ntotal": r.ntotal,
        "dimension": r.dimension,
        "index_type": r.index_type,
        "replaced": r.replaced,
        "bytes_sent": r.bytes_sent,
    })
}

/// Run `query-remote export`.
pub fn export(ctx: &Ctx, c: &mut Client, a: ExportArgs) -> Result<()> {
    let mut p = progress(ctx);
    if a.all {
        let m = transfer::export_all(c, &a.output, &mut p)?;
        let n: u64 = m.indexes.iter().map(|e| e.ntotal).sum();
        return println_out(
            &serde_json::json!({"folder": a.output.display().to_string(), "indexes": m.indexes.len(), "vectors": n})
                .to_string(),
        );
    }
    let id = a.index.as_deref().ok_or_else(|| Error::invalid("give INDEX, or --all"))?;
    let e = c.export_index(id, &a.output, &mut |d, t| p(id, d, t))?;
    println_out(
        &serde_json::json!({
            "index_id": id,
            "generation": e.generation,
            "index_type": e.index_type,
            "ntotal": e.ntotal,
            "dimension": e.dimension,
            "files": e.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "bytes": e.bytes,
        })
        .to_string(),
    )
}
