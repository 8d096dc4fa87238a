//! `faissx merge`: several indices of the same kind → one index file plus its sidecar.

use super::common::BatchArgs;
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::index::{storage, OpenOptions, Storage};
use crate::engine::io::atomic;
use crate::engine::jobs;
use crate::engine::merge::{self, IdPolicy, MergeMethod};
use crate::engine::{Error, ErrorKind, Index, Result};
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
  faissx merge shards/all.*.index -o all.index --on-disk";

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
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct MergeArgs {
    /// Index files to merge (two or more), in order.
    #[arg(value_name = "INDEX", required = true, num_args = 2..)]
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

    /// Put the merged inverted lists in OUTPUT.ivfdata (IVF inputs sharing a quantizer).
    #[arg(long)]
    pub on_disk: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,
}

/// Run `faissx merge`.
pub fn run(ctx: &Ctx, a: MergeArgs) -> Result<()> {
    if a.output.exists() && !a.force {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{}: already exists (use --force to replace it)", a.output.display()),
        ));
    }
    let policy = match a.ids {
        None => IdPolicy::Auto,
        Some(IdsArg::Keep) => IdPolicy::Keep,
        Some(IdsArg::Renumber) => IdPolicy::Renumber,
    };
    // On-disk merges only read their inputs, so map them (renumbering ids needs them loaded).
    let opts = OpenOptions { mmap: a.on_disk && policy != IdPolicy::Renumber, warm: false };
    let mut inputs =
        a.indexes.iter().map(|p| Ok((p.clone(), Index::open_float(p, &opts)?))).collect::<Result<Vec<_>>>()?;
    if a.on_disk && !merge::keeps_ids(&inputs, policy)? {
        for (p, idx) in inputs.iter_mut() {
            if idx.storage() == Storage::Mapped {
                *idx = Index::open_float(p, &OpenOptions::default())?;
            }
        }
    }
    if !a.on_disk {
        if let Some((p, _)) = inputs.iter().find(|(_, i)| i.storage() != Storage::Loaded) {
            return Err(Error::invalid(format!(
                "{}: has on-disk inverted lists (read-only): merge it with --on-disk",
                p.display()
            )));
        }
    }
    let n_inputs = inputs.len();
    let progress = StderrProgress::new(ctx.quiet);
    let (_index, report) = if a.on_disk {
        let data = atomic::tmp_path(&storage::ivfdata_path(&a.output));
        let res = merge::merge_on_disk(inputs, policy, &data, &progress, &ctx.stop)
            .and_then(|(mut index, report)| jobs::save(&mut index, &a.output).map(|()| (index, report)));
        if res.is_err() {
            let _ = std::fs::remove_file(&data);
        }
        res?
    } else {
        let (mut index, report) = merge::merge_into(inputs, policy, a.batch.batch as usize, &progress, &ctx.stop)?;
        index.save(&a.output)?;
        (index, report)
    };
    note(
        ctx.quiet,
        &format!(
            "merged {n_inputs} indices into {}{} ({} vectors, ids {}, {})",
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
