//! `faissx split`: one index → N shard files that keep the original ids.

use super::common::BatchArgs;
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::split::{self, SplitBy, SplitOptions};
use crate::engine::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

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

/// Run `faissx split`.
pub fn run(ctx: &Ctx, a: SplitArgs) -> Result<()> {
    let opts = SplitOptions {
        shards: a.shards as usize,
        by: match a.by {
            SplitByArg::Range => SplitBy::Range,
            SplitByArg::RoundRobin => SplitBy::RoundRobin,
            SplitByArg::Hash => SplitBy::Hash,
        },
        batch: a.batch.batch as usize,
        on_disk: a.on_disk,
        force: a.force,
    };
    let progress = StderrProgress::for_ctx(ctx);
    let report = split::split_file(&a.index, &a.output, &opts, &progress, &ctx.stop)?;
    note(
        ctx.quiet,
        &format!(
            "split {} ({} vectors) into {} shards in {}: {}",
            a.index.display(),
            report.ntotal,
            opts.shards,
            a.output.display(),
            report.counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" + ")
        ),
    );
    Ok(())
}
