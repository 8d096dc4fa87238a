//! `faissx merge`: several indices of the same kind → one index file plus its sidecar.

use super::common::BatchArgs;
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::io::object;
use crate::engine::merge::{self, IdPolicy, MergeMethod, MergeOptions};
use crate::engine::output::{sidecar_of, LocalCopy, StagedOutput};
use crate::engine::parts::check_parts;
use crate::engine::{Error, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  # three parts built with the same factory (IVF parts must share the trained quantizer)
  faissx merge part1.index part2.index part3.index -o all.index

  # shards from `faissx split` back into one index, keeping their ids
  faissx merge shards/all.*.index -o all.index --ids keep

  # unrelated Flat indices, numbered 0..N in the order given
  faissx merge a.index b.index -o ab.index --ids renumber

  # IVF shards sharing a trained quantizer -> one index with its lists in all.index.ivfdata
  faissx merge shards/all.*.index -o all.index --on-disk

  # the parts of a split build, from object storage
  faissx merge 's3://idx/parts/*.index' -o docs.index --on-disk";

/// What to do with ids (`--ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdsArg {
    /// Keep every vector's id; refuse if two inputs share one.
    Keep,
    /// Number the vectors 0..N, first input first.
    Renumber,
}

/// Merge indices of the same type, d and metric into one.
///
/// Uses FAISS's own merge where it exists (Flat and other flat-code indices, IVF indices that
/// share the trained coarse quantizer, IDMap/IDMap2); where FAISS cannot merge (HNSW, IVF
/// with different quantizers) the vectors are reconstructed and re-added to the first index,
/// with a note on stderr; otherwise the error says why. Ids are kept when every input stores
/// its own ids (IDMap, IVF built with --ids) and renumbered 0..N otherwise, unless --ids
/// says. The sidecars are merged too (inputs listed in order). Every input is opened and
/// checked before anything is written; OUTPUT is written atomically.
///
/// With --on-disk, IVF inputs sharing one trained quantizer become one index whose inverted
/// lists are in OUTPUT.ivfdata (FAISS's merge_ondisk): the inputs are memory-mapped and only
/// read, so they may themselves be on-disk indices, and memory stays small.
///
/// INDEX and OUTPUT may be object-storage URLs (s3://, gs://, az://; a quoted glob in an INDEX
/// URL is expanded by listing): inputs are downloaded to $TMPDIR first, a URL OUTPUT is
/// uploaded when complete. --on-disk needs a local OUTPUT.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct MergeArgs {
    /// Index files or URLs to merge (two or more, or a glob that matches them), in order.
    #[arg(value_name = "INDEX", required = true, num_args = 1..)]
    pub indexes: Vec<PathBuf>,

    /// Merged index file to write.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// Ids: keep (refused when ids collide) or renumber 0..N (default: keep if every input
    /// stores its own ids, else renumber).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub ids: Option<IdsArg>,

    /// Replace OUTPUT if it exists.
    #[arg(short, long)]
    pub force: bool,

    /// Parts of a split build (`add --task`): merge only some of them, one level of a tree of
    /// merges. Without it every part of the build must be given, and a missing one is named.
    #[arg(long)]
    pub partial: bool,

    /// Put the merged inverted lists in OUTPUT.ivfdata (IVF inputs sharing a quantizer).
    #[arg(long)]
    pub on_disk: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,
}

/// Run `faissx merge`.
pub fn run(ctx: &Ctx, a: MergeArgs) -> Result<()> {
    let opts = MergeOptions {
        policy: match a.ids {
            None => IdPolicy::Auto,
            Some(IdsArg::Keep) => IdPolicy::Keep,
            Some(IdsArg::Renumber) => IdPolicy::Renumber,
        },
        on_disk: a.on_disk,
        batch: a.batch.batch as usize,
        force: a.force,
        partial: a.partial,
    };
    let indexes = object::expand(&a.indexes)?;
    if indexes.len() < 2 {
        return Err(Error::invalid(format!(
            "merge needs two or more indices; {} names {}",
            a.indexes[0].display(),
            indexes.len()
        )));
    }
    if a.on_disk && object::is_url(&a.output) {
        return Err(Error::invalid(format!(
            "{}: --on-disk writes inverted lists beside a local index; give a local -o",
            a.output.display()
        )));
    }
    let staged = StagedOutput::new(&a.output, a.force)?;
    if indexes.iter().any(|p| object::is_url(p)) {
        // The parts' sidecars first: a missing part is named before any index is downloaded.
        let parts = indexes.iter().map(|p| Ok((p.clone(), sidecar_of(p)?.and_then(|m| m.parts))));
        check_parts(&parts.collect::<Result<Vec<_>>>()?, a.partial)?;
    }
    let copies = indexes.iter().map(|p| LocalCopy::of(p, &ctx.stop)).collect::<Result<Vec<_>>>()?;
    let local: Vec<_> = copies.iter().map(|c| c.path().to_path_buf()).collect();
    let progress = StderrProgress::for_ctx(ctx);
    let force = a.force || staged.is_remote();
    let report = merge::merge_files(&local, staged.local(), &MergeOptions { force, ..opts }, &progress, &ctx.stop)
        .map_err(|e| {
            // Errors name what the user gave, not the copies in $TMPDIR.
            copies.iter().zip(&indexes).fold(e, |e, (copy, given)| copy.rename(e, given))
        })?;
    staged.publish(&ctx.stop)?;
    note(
        ctx.quiet,
        &format!(
            "merged {} indices into {}{} ({} vectors, ids {}, {})",
            indexes.len(),
            a.output.display(),
            if a.on_disk { " (lists on disk)" } else { "" },
            report.ntotal,
            if report.kept_ids { "kept" } else { "renumbered 0.." },
            match report.method {
                MergeMethod::Native => "FAISS merge",
                MergeMethod::Rebuilt => "rebuilt from reconstructed vectors",
            }
        ),
    );
    Ok(())
}
