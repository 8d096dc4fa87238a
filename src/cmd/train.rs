//! `faissx train`: a trained, empty index from a sample of several vector files (the first
//! step of a build split into tasks; see `engine::parts`).

use super::common::{InputArgs, TrainingArgs};
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::index::IndexSpec;
use crate::engine::io::object;
use crate::engine::output::IndexOutput;
use crate::engine::output::StagedOutput;
use crate::engine::parts::{self, InputSet};
use crate::engine::Result;
use clap::Args;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  # train once; then N tasks add slices (faissx add --task), then merge the parts
  faissx train part-*.npy -o trained.index --factory IVF4096,PQ32 --train-size 1000000
  faissx add trained.index part-*.npy --task 0/4 -o parts/   # ... up to 3/4, in parallel
  faissx merge parts/part-*-of-4.index -o docs.index --on-disk
  # inputs and output in object storage (credentials from AWS_* variables)
  faissx train 's3://emb/part-*.npy' -o s3://idx/trained.index --factory IVF65536,PQ32";

/// Train an index on a sample drawn across several vector files, without adding vectors.
///
/// Writes OUTPUT (and its sidecar): the trained, empty index that the tasks of a split build
/// copy (`faissx add TRAINED INPUT... --task i/N -o DIR`). The training sample (--train-size
/// rows, default as in `faissx build`) is drawn with --seed across all INPUT files taken in
/// order, reading only the chosen rows.
///
/// INPUT and OUTPUT may be object-storage URLs (s3://, gs://, az://; credentials and endpoint
/// from the usual AWS_*, GOOGLE_*, AZURE_* variables); a quoted glob in INPUT is expanded
/// (for URLs by listing the bucket).
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct TrainArgs {
    /// Vector files or URLs to sample (all of one d), in order; globs are expanded.
    #[arg(value_name = "INPUT", required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,

    /// Trained index file (or URL) to write.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// FAISS factory string of an index type that needs training (IVF…, PQ…).
    #[arg(long, value_name = "STR")]
    pub factory: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub training: TrainingArgs,

    /// Replace OUTPUT if it exists.
    #[arg(short, long)]
    pub force: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,
}

/// Run `faissx train`.
pub fn run(ctx: &Ctx, a: TrainArgs) -> Result<()> {
    let paths = object::expand(&a.inputs)?;
    let files = paths.iter().map(|p| a.input_args.open(p)).collect::<Result<Vec<_>>>()?;
    let inputs = InputSet::new(files)?;
    let spec = IndexSpec { factory: a.factory.clone(), metric: a.training.metric.into(), dim: inputs.dim() };
    let staged = StagedOutput::new(&a.output, a.force)?;
    let out = IndexOutput::create(staged.local(), a.force || staged.is_remote(), false)?;
    let progress = StderrProgress::for_ctx(ctx);
    let t = std::time::Instant::now();
    let mut index = parts::train(&inputs, &spec, a.training.train_size(), a.training.seed, &progress, &ctx.stop)?;
    out.commit(&mut index)?;
    staged.publish(&ctx.stop)?;
    note(
        ctx.quiet,
        &format!(
            "trained {} ({}, d={}) on {} of {} vectors in {:.1} s",
            a.output.display(),
            a.factory,
            index.d(),
            index.meta().train_size,
            inputs.len(),
            t.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
