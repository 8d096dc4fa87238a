//! `faissx add`: append vectors (and ids) to an existing index, atomically.

use super::common::{BatchArgs, InputArgs, MetadataArgs};
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::filter::rows::plan_add;
use crate::engine::filter::MetaTable;
use crate::engine::output::save_with_table;
use crate::engine::{io, jobs, Index, Result};
use clap::Args;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  faissx add fm.index more.npy
  faissx add fm.index more.npy --ids more_ids.npy
  faissx add docs.index more.npy --ids more_ids.txt --metadata more.jsonl
  cat new.fvecs | faissx add fm.index - --input-format fvecs";

/// Append vectors (and ids) to an existing index.
///
/// The index is read, INPUT is added in batches (normalized first if the index was built with
/// --metric cosine), and the result replaces INDEX atomically: if anything fails, INDEX is
/// left exactly as it was. Indices that store ids (built with --ids, IDMap/IDMap2 factories)
/// need --ids; others refuse it.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct AddArgs {
    /// Index file to extend (rewritten in place, atomically).
    #[arg(value_name = "INDEX")]
    pub index: PathBuf,

    /// Vector file to add (- for stdin).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Ids file, one per vector (.npy int32/int64, .ivecs, or text).
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

/// Run `faissx add`.
pub fn run(ctx: &Ctx, a: AddArgs) -> Result<()> {
    // Held from read to rename: two `add`s to one index would otherwise each write the old
    // index plus their own vectors, and one batch would be lost.
    let _lock = io::atomic::OutputLock::acquire(&a.index)?;
    let mut index = Index::open_float(&a.index, &Default::default())?;
    let table = MetaTable::open_for(&a.index, index.meta())?;
    let input = a.meta.open_input(&a.input_args, &a.input)?;
    let what = a.meta.sources(&a.input);
    let plan = plan_add(&index, table.as_ref(), input.len(), a.meta.ids(&input)?, a.meta.fields(&input)?, &what)?;
    let before = index.ntotal();
    let progress = StderrProgress::for_ctx(ctx);
    jobs::add_rows(&mut index, &input, plan.faiss_ids.as_deref(), a.batch.batch as usize, &progress, &ctx.stop)?;
    save_with_table(&mut index, &a.index, plan.table.as_ref())?;
    note(
        ctx.quiet,
        &format!("added {} vectors to {} (ntotal {} → {})", input.len(), a.index.display(), before, index.ntotal()),
    );
    Ok(())
}
