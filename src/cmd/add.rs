//! `faissx add`: append vectors (and ids) to an existing index, atomically.

use super::common::{BatchArgs, InputArgs, MetadataArgs};
use super::render::{note, StderrProgress};
use super::Ctx;
use crate::engine::filter::rows::plan_add;
use crate::engine::filter::MetaTable;
use crate::engine::index::OpenOptions;
use crate::engine::io::object;
use crate::engine::output::{save_with_table, IndexOutput, LocalCopy, StagedOutput};
use crate::engine::parts::{self, InputSet, Task};
use crate::engine::{io, jobs, Error, Index, Result};
use clap::Args;
use std::path::{Path, PathBuf};

const EXAMPLES: &str = "\
Examples:
  faissx add fm.index more.npy
  faissx add fm.index more.npy --ids more_ids.npy
  faissx add docs.index more.npy --ids more_ids.txt --metadata more.jsonl
  cat new.fvecs | faissx add fm.index - --input-format fvecs
  # task 3 of 64 of a split build (or --task-count 64 in a Kubernetes Indexed Job)
  faissx add trained.index emb-*.npy --task 3/64 -o parts/
  # the same with everything in object storage (credentials from AWS_* variables)
  faissx add s3://idx/trained.index 's3://emb/part-*.npy' --task-count 64 -o s3://idx/parts/";

/// Append vectors (and ids) to an existing index.
///
/// The index is read, INPUT is added in batches (normalized first if the index was built with
/// --metric cosine), and the result replaces INDEX atomically: if anything fails, INDEX is
/// left exactly as it was. Indices that store ids (built with --ids, IDMap/IDMap2 factories)
/// need --ids; others refuse it.
///
/// With --task / --task-count, INDEX, INPUT and DIR may be object-storage URLs (s3://, gs://,
/// az://; credentials from the usual AWS_*, GOOGLE_*, AZURE_* variables): inputs are read by
/// ranges, only the task's rows; the part is uploaded when complete. A quoted glob in INPUT is
/// expanded (for URLs by listing the bucket).
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct AddArgs {
    /// Index file to extend (rewritten in place, atomically).
    #[arg(value_name = "INDEX")]
    pub index: PathBuf,

    /// Vector file to add (- for stdin); several, in order, with --task / --task-count.
    #[arg(value_name = "INPUT", required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,

    /// Split build: add this task's slice of the INPUT rows (task i of N, numbered from 0;
    /// rows ⌊i·T/N⌋..⌊(i+1)·T/N⌋ of all inputs; ids = global row numbers, or with --ids one
    /// integer ids file per INPUT, e.g. 'ids-*.npy') to a copy of INDEX,
    /// the trained index from `faissx train`, and write `OUTPUT/part-<i>-of-<N>.index`
    /// (replaced when the task is re-run). INDEX is not changed.
    #[arg(long, value_name = "i/N", requires = "output", conflicts_with = "task_count")]
    pub task: Option<String>,

    /// Split build of N tasks whose task number comes from the scheduler:
    /// JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm job array
    /// `--array=0-<N-1>`).
    #[arg(long, value_name = "N", requires = "output", value_parser = clap::value_parser!(u64).range(1..))]
    pub task_count: Option<u64>,

    /// With --task / --task-count: the directory the part is written to.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

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
    if let Some(dir) = a.output.clone() {
        return run_task(ctx, &a, &dir);
    }
    if object::is_url(&a.index) {
        return Err(Error::invalid(format!(
            "{}: add rewrites INDEX in place, which needs a local file (an index in object storage is copied by the tasks of a split build: --task i/N -o DIR)",
            a.index.display()
        )));
    }
    let [input] = a.inputs.as_slice() else {
        return Err(Error::invalid(
            "several INPUT files are added by tasks: give --task i/N (or --task-count N) and -o DIR",
        ));
    };
    // Held from read to rename: two `add`s to one index would otherwise each write the old
    // index plus their own vectors, and one batch would be lost.
    let _lock = io::atomic::OutputLock::acquire(&a.index)?;
    let mut index = Index::open_float(&a.index, &OpenOptions { no_search: true, ..Default::default() })?;
    let table = MetaTable::open_for(&a.index, index.meta())?;
    let input = a.meta.open_input(&a.input_args, input)?;
    let what = a.meta.sources(input.path());
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

/// The task number from the scheduler's environment (`JOB_COMPLETION_INDEX`, then
/// `SLURM_ARRAY_TASK_ID`).
fn task_from_env(count: usize) -> Result<Task> {
    for var in ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"] {
        if let Ok(v) = std::env::var(var) {
            let i =
                v.trim().parse::<usize>().map_err(|_| Error::invalid(format!("{var}={v:?} is not a task number")))?;
            return Task::new(i, count).map_err(|e| e.context(var));
        }
    }
    Err(Error::invalid(
        "--task-count: no task number in JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID (give --task i/N to run one by hand)",
    ))
}

/// `add --task`: one task of a split build (see `engine::parts`).
fn run_task(ctx: &Ctx, a: &AddArgs, dir: &Path) -> Result<()> {
    let task = match (&a.task, a.task_count) {
        (Some(t), _) => Task::parse(t)?,
        (None, Some(n)) => task_from_env(n as usize)?,
        (None, None) => return Err(Error::invalid("-o DIR writes one task's part: give --task i/N or --task-count N")),
    };
    if a.meta.metadata.is_some() {
        return Err(Error::invalid("--task: --metadata is not taken by tasks (add it to the merged index)"));
    }
    // One ids file per input (a glob, expanded like the inputs), or global row numbers.
    let ids = a.meta.ids.as_ref().map(|p| object::expand(std::slice::from_ref(p))).transpose()?;
    let paths = object::expand(&a.inputs)?;
    let files = paths.iter().map(|p| a.input_args.open(p)).collect::<Result<Vec<_>>>()?;
    let inputs = InputSet::new(files)?;
    let trained = LocalCopy::of(&a.index, &ctx.stop)?;
    if !object::is_url(dir) {
        let dir = object::local_path(dir)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let path = object::join(dir, &task.part_name());
    let staged = StagedOutput::new(&path, true)?;
    let out = IndexOutput::create(staged.local(), true, false)?;
    let mut index = Index::open_float(trained.path(), &OpenOptions { no_search: true, ..Default::default() })
        .map_err(|e| trained.rename(e, &a.index))?;
    let progress = StderrProgress::for_ctx(ctx);
    let t = std::time::Instant::now();
    let n = parts::add_task(&mut index, &inputs, ids.as_deref(), task, a.batch.batch as usize, &progress, &ctx.stop)?;
    out.commit(&mut index)?;
    staged.publish(&ctx.stop)?;
    note(
        ctx.quiet,
        &format!(
            "task {} of {}: added rows {:?} ({n} vectors) to {} in {:.1} s",
            task.index,
            task.count,
            task.rows(inputs.len()),
            path.display(),
            t.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
