//! `faissx build`: vectors → a FAISS index file plus its sidecar.

use super::common::{BatchArgs, InputArgs, MetadataArgs, TrainingArgs};
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::filter::rows::plan_build;
use crate::engine::index::IndexSpec;
use crate::engine::jobs::{self, BuildOptions};
use crate::engine::output::{check_new, IndexOutput};
use crate::engine::{io, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  # IVF index over Fashion-MNIST (uint8 .bvecs are converted to float32)
  faissx build base.bvecs -o fm.index --factory IVF1024,Flat --metric l2

  # HNSW with cosine similarity, from NumPy, with explicit ids
  faissx build emb.npy -o emb.index --factory HNSW32 --metric cosine --ids emb_ids.npy

  # with metadata for `search --filter` (one JSON object per row) and string ids
  faissx build docs.npy -o docs.index --factory HNSW32 --metadata docs.jsonl --ids ids.txt

  # from a CSV whose doc_id column is the ids and lang,year,tags columns are metadata
  faissx build docs.csv -o docs.index --factory IVF1024,Flat --id-column doc_id \\
      --metadata-columns lang,year,tags

  # IVF-PQ whose lists live in huge.index.ivfdata, built in bounded memory
  faissx build huge.fvecs -o huge.index --factory IVF65536,PQ32 --on-disk --train-size 1000000

  # From a pipe (.npy is recognised by its first bytes; other formats need --input-format)
  python make_vectors.py | faissx build - -o x.index --factory Flat
  cat base.fvecs | faissx build - --input-format fvecs -o x.index";

/// Build a FAISS index from a vector file.
///
/// Reads INPUT (.npy, .fvecs, .bvecs, .csv, or - with --input-format), creates the index
/// described by the FAISS factory string, trains it on a deterministic sample when the index
/// type needs training, adds every vector in batches, and writes OUTPUT in FAISS's own format
/// (readable by Python's faiss.read_index) plus OUTPUT.meta.json. Both are written to a temp
/// file and renamed, so a failed or interrupted build leaves nothing under OUTPUT.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct BuildArgs {
    /// Vector file to index (- for stdin).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Index file to write.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// FAISS factory string: Flat, IVF4096,PQ32, HNSW32, OPQ16,IVF1024,PQ16, …
    #[arg(long, value_name = "STR", default_value = "Flat")]
    pub factory: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub training: TrainingArgs,

    /// Default nprobe stored in an IVF index.
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub nprobe: Option<u64>,

    /// Default efSearch stored in an HNSW index.
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub ef_search: Option<u64>,

    /// HNSW efConstruction used while adding.
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub ef_construction: Option<u64>,

    /// IVF only: keep the inverted lists in OUTPUT.ivfdata instead of the index file, built
    /// shard by shard in bounded memory; the index is then searched with its lists mapped
    /// from disk (read-only).
    #[arg(long)]
    pub on_disk: bool,

    /// With --on-disk: vectors per in-memory shard (default: about 256 MiB of input). Lower
    /// it to build in less memory.
    #[arg(long, value_name = "NUM", requires = "on_disk", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: Option<u64>,

    /// Replace OUTPUT if it exists.
    #[arg(short, long)]
    pub force: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub meta: MetadataArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,
}

/// Run `faissx build`.
pub fn run(ctx: &Ctx, a: BuildArgs) -> Result<()> {
    check_new(&a.output, a.force)?;
    io::atomic::check_dest(&a.output)?;
    let input = a.meta.open_input(&a.input_args, &a.input)?;
    let what = a.meta.sources(&a.input);
    let plan = plan_build(&a.factory, input.len(), a.meta.ids(&input)?, a.meta.fields(&input)?, &what)?;
    let spec = IndexSpec { factory: a.factory.clone(), metric: a.training.metric.into(), dim: input.dim() };
    let out = IndexOutput::create(&a.output, a.force, a.on_disk)?;
    let opts = BuildOptions {
        train_size: a.training.train_size(),
        seed: a.training.seed,
        batch: a.batch.batch as usize,
        ids: plan.faiss_ids,
        ef_construction: a.ef_construction.map(|v| v as usize),
        nprobe: a.nprobe.map(|v| v as usize),
        ef_search: a.ef_search.map(|v| v as usize),
        on_disk: out.lists_tmp().map(Path::to_path_buf),
        shard_size: a.shard_size.map(|v| v as usize),
    };
    let progress = StderrProgress::for_ctx(ctx);
    let t = Instant::now();
    let mut index = jobs::build(&input, &spec, &opts, &progress, &ctx.stop)?;
    out.commit_with(&mut index, plan.table.as_ref())?;
    note(
        ctx.quiet,
        &format!(
            "built {} ({}, d={}, ntotal={}, metric {}) in {:.1} s",
            a.output.display(),
            index.meta().factory,
            index.d(),
            index.ntotal(),
            index.metric(),
            t.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
