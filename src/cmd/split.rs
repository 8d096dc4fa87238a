//! `faissx split`: one index → N shard files that keep the original ids.

use super::common::BatchArgs;
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::index::{sidecar_path, storage};
use crate::engine::io::atomic;
use crate::engine::jobs;
use crate::engine::split::{self, SplitBy};
use crate::engine::{Error, ErrorKind, Index, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

const EXAMPLES: &str = "\
Examples:
  # four shards by contiguous id ranges: shards/all.0.index … shards/all.3.index
  faissx split all.index --shards 4 -o shards/

  # by id hash, then search all shards as one index (scatter-gather)
  faissx split all.index --shards 8 --by hash -o shards/
  faissx search shards/all.*.index query.bvecs -k 10

  # IVF shards whose lists are on disk (shards/all.0.index.ivfdata, …)
  faissx split all.index --shards 4 -o shards/ --on-disk";

/// How to assign vectors to shards (`--by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitByArg {
    /// Contiguous ranges of the sorted ids.
    Range,
    /// The r-th smallest id goes to shard r mod N.
    RoundRobin,
    /// A hash of the id, mod N.
    Hash,
}

/// Split an index into N shards that keep the original ids.
///
/// Writes OUTDIR/STEM.0.index … OUTDIR/STEM.(N-1).index, each with its sidecar. Every
/// shard is an index of the same kind: indices that store ids (IDMap, IVF) keep their type;
/// indices that number vectors by position (Flat, HNSW, PQ) become IDMap2 over the same type
/// with the original positions as ids. Searching all shards and merging the top-k (`faissx
/// search` and `faissx bench` accept several index files and do this) equals searching the
/// whole index, exactly for Flat. HNSW shards are rebuilt from the stored vectors. With
/// --on-disk (IVF indices), each shard's inverted lists go to STEM.i.index.ivfdata.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct SplitArgs {
    /// Index file to split.
    #[arg(value_name = "INDEX")]
    pub index: PathBuf,

    /// Number of shards.
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub shards: u64,

    /// Directory for the shards (created if missing).
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,

    /// How vectors are assigned to shards.
    #[arg(long, value_enum, default_value_t = SplitByArg::Range)]
    pub by: SplitByArg,

    /// Replace shard files that exist.
    #[arg(short, long)]
    pub force: bool,

    /// Write each shard's inverted lists to SHARD.ivfdata (IVF indices).
    #[arg(long)]
    pub on_disk: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,
}

/// The path of shard `i` of `index` in `dir`: `<dir>/<stem>.<i>.index`.
pub fn shard_path(dir: &Path, index: &Path, i: usize) -> PathBuf {
    let stem = index.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
    let ext = index.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
    dir.join(format!("{stem}.{i}.{ext}"))
}

/// Run `faissx split`.
pub fn run(ctx: &Ctx, a: SplitArgs) -> Result<()> {
    let n = a.shards as usize;
    if a.output.exists() && !a.output.is_dir() {
        return Err(Error::invalid(format!("{}: -o must be a directory", a.output.display())));
    }
    let paths: Vec<PathBuf> = (0..n).map(|i| shard_path(&a.output, &a.index, i)).collect();
    if !a.force {
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{}: already exists (use --force to replace it)", p.display()),
            ));
        }
    }
    let mut index = Index::open_float(&a.index, &Default::default())?;
    if a.on_disk {
        // Refuse non-IVF indices before anything is written.
        index.empty_ivf_copy().map_err(|e| e.context("--on-disk"))?;
    }
    let by = match a.by {
        SplitByArg::Range => SplitBy::Range,
        SplitByArg::RoundRobin => SplitBy::RoundRobin,
        SplitByArg::Hash => SplitBy::Hash,
    };
    let created_dir = !a.output.exists();
    std::fs::create_dir_all(&a.output).map_err(|e| Error::io(&a.output, e))?;
    let progress = StderrProgress::new(ctx.quiet);
    let mut written: Vec<PathBuf> = Vec::new();
    let on_disk = a.on_disk;
    let res = split::split_by(&index, n, by, a.batch.batch as usize, &progress, &ctx.stop, &mut |i, mut shard| {
        written.push(paths[i].clone());
        if on_disk {
            let data = atomic::tmp_path(&storage::ivfdata_path(&paths[i]));
            let mut od = shard.empty_ivf_copy()?;
            let res = od
                .lists_to_disk(&data)
                .and_then(|()| od.merge_shard_to_disk(&mut shard))
                .and_then(|()| jobs::save(&mut od, &paths[i]));
            if res.is_err() {
                let _ = std::fs::remove_file(&data);
            }
            res
        } else {
            shard.save(&paths[i])
        }
    });
    let counts = match res {
        Ok(c) => c,
        Err(e) => {
            // Nothing half-done stays behind: remove the shards already written.
            for p in &written {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_file(storage::ivfdata_path(p));
                let _ = std::fs::remove_file(sidecar_path(p));
            }
            if created_dir {
                let _ = std::fs::remove_dir(&a.output);
            }
            return Err(e);
        }
    };
    note(
        ctx.quiet,
        &format!(
            "split {} ({} vectors) into {n} shards in {}: {}",
            a.index.display(),
            index.ntotal(),
            a.output.display(),
            counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" + ")
        ),
    );
    Ok(())
}
