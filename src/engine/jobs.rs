//! Jobs over files: build an index from a vector file, add a file to an index, search a file
//! of queries. These are what `build`, `add` and `search` run; the server and bench reuse the
//! same [`Index`] methods underneath.
//!
//! Inputs stream through in batches (`--batch` rows), so a file larger than RAM can be added
//! to an index type that does not need all vectors at once; training uses a deterministic
//! sample (`--train-size`, seed `--seed`).

use crate::engine::error::{Error, Result};
use crate::engine::index::{self, Index, IndexSpec, InputInfo, OpenOptions};
use crate::engine::io::{check_dim, VectorFile};
#[cfg(doc)]
use crate::engine::output::IndexOutput;
use crate::engine::Progress;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Options for [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Rows in the training sample; `None`: automatic (all rows up to
    /// max(100,000, 256 × nlist), FAISS's own k-means subsampling cap).
    pub train_size: Option<usize>,
    /// Seed of the training sample.
    pub seed: u64,
    /// Rows per `add` call.
    pub batch: usize,
    /// Ids, one per input row (wraps the index in IDMap2 unless it is IVF).
    pub ids: Option<Vec<i64>>,
    /// HNSW efConstruction to set before adding.
    pub ef_construction: Option<usize>,
    /// Default nprobe stored in the index (IVF).
    pub nprobe: Option<usize>,
    /// Default efSearch stored in the index (HNSW).
    pub ef_search: Option<usize>,
    /// Build IVF lists on disk in this file, adding shard by shard in bounded memory: the
    /// [`IndexOutput::lists_tmp`] of the output the index goes to, whose commit moves the
    /// file into place (and whose drop removes it if the build fails).
    pub on_disk: Option<PathBuf>,
    /// Vectors per in-memory shard of an on-disk build (default: about 256 MiB of input).
    pub shard_size: Option<usize>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            train_size: None,
            seed: 42,
            batch: 65_536,
            ids: None,
            ef_construction: None,
            nprobe: None,
            ef_search: None,
            on_disk: None,
            shard_size: None,
        }
    }
}

/// The default training sample for `rows` input vectors and an index with `nlist` lists (0
/// when not IVF): all rows up to max(100,000, 256 × nlist), FAISS's own k-means subsampling
/// cap (`max_points_per_centroid` = 256).
pub fn default_train_size(rows: usize, nlist: usize) -> usize {
    rows.min(100_000.max(256 * nlist))
}

pub(crate) use crate::engine::error::stopped;

/// Build a new index from `input` per `spec` (whose `dim` must match the file): train on a
/// sample if the index needs training, then add every row in batches.
pub fn build(
    input: &VectorFile,
    spec: &IndexSpec,
    opts: &BuildOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Index> {
    check_dim(input.path(), input.dim(), spec.dim)?;
    if input.is_empty() {
        return Err(Error::invalid(format!("{}: no vectors to build from", input.path().display())));
    }
    let ids = opts.ids.as_deref().or(input.ids());
    check_ids(input, ids)?;
    let mut index = Index::create(spec, ids.is_some()).map_err(|e| e.context("--factory"))?;
    if let Some(ef) = opts.ef_construction {
        index.set_ef_construction(ef)?;
    }
    if opts.on_disk.is_some() && index.describe()?.nlist.is_none() {
        let t = index.describe()?.type_name;
        return Err(Error::invalid(format!(
            "--on-disk needs an IVF factory string (e.g. IVF65536,PQ32); {} gives {t}",
            spec.factory
        )));
    }
    if !index.is_trained() {
        let nlist = index.describe()?.nlist.unwrap_or(0);
        let n = opts.train_size.unwrap_or_else(|| default_train_size(input.len(), nlist)).min(input.len());
        if n == 0 {
            return Err(Error::invalid("--train-size must be at least 1"));
        }
        if n < nlist {
            return Err(Error::invalid(format!(
                "--factory {}: training {nlist} inverted lists needs at least {nlist} vectors, the training sample has {n} (from {})",
                spec.factory,
                input.path().display()
            )));
        }
        let need = index.min_train_points()?;
        if n < need {
            progress.detail(&format!(
                "training {} on {n} vectors: FAISS's k-means advises at least {need} (39 per centroid); centroids trained on fewer are less precise (see --train-size)",
                spec.factory
            ));
        }
        progress.start("sample", n as u64);
        let sample = input.sample(n, opts.seed)?;
        progress.finish();
        stopped(stop)?;
        progress.start("train", 0);
        let t = std::time::Instant::now();
        index.train(&sample).map_err(|e| e.context(format!("training {} on {n} vectors", spec.factory)))?;
        progress.finish();
        progress.note(&format!("trained on {n} vectors in {:.1} s", t.elapsed().as_secs_f64()));
    }
    match &opts.on_disk {
        None => add_rows(&mut index, input, ids, opts.batch, progress, stop)?,
        Some(data) => add_rows_on_disk(&mut index, input, ids, data, opts.batch, opts.shard_size, progress, stop)?,
    }
    if let Some(np) = opts.nprobe {
        index.set_nprobe(np)?;
    }
    if let Some(ef) = opts.ef_search {
        index.set_ef_search(ef)?;
    }
    Ok(index)
}

/// Ids, when given, must be one per input row ([`index::check_id_count`], naming the file).
fn check_ids(input: &VectorFile, ids: Option<&[i64]>) -> Result<()> {
    match ids {
        Some(ids) => index::check_id_count(ids.len(), input.len()).map_err(|e| e.context(input.path().display())),
        None => Ok(()),
    }
}

/// Note `input` in the index's sidecar.
fn record_input(index: &mut Index, input: &VectorFile) {
    index.meta_mut().inputs.push(InputInfo {
        path: input.path().display().to_string(),
        format: format!("{:?}", input.format()).to_lowercase(),
        rows: input.len(),
    });
}

/// Vectors per in-memory shard of an on-disk build: about 256 MiB of f32 input.
fn shard_rows(d: usize, batch: usize) -> usize {
    ((256usize << 20) / (4 * d.max(1))).max(batch).max(1_000)
}

/// Add `input` to a trained, empty IVF `index` whose lists go to `data`, the way FAISS's
/// `merge_ondisk` does it: rows are added shard by shard to in-memory clones of the trained
/// index (with their final ids), each shard is written to a temp file and dropped, and at the
/// end all shards, memory-mapped, are merged into the on-disk lists in one pass, which lays
/// the data file out exactly. Memory stays bounded by one shard.
#[allow(clippy::too_many_arguments)]
fn add_rows_on_disk(
    index: &mut Index,
    input: &VectorFile,
    ids: Option<&[i64]>,
    data: &Path,
    batch: usize,
    shard_size: Option<usize>,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<()> {
    let template = index.try_clone()?;
    let shard_dir = PathBuf::from(format!("{}.shards", data.display()));
    let _ = std::fs::remove_dir_all(&shard_dir);
    std::fs::create_dir_all(&shard_dir).map_err(|e| Error::io(&shard_dir, e))?;
    let res = (|| {
        let per_shard = shard_size.unwrap_or_else(|| shard_rows(input.dim(), batch)).max(1);
        progress.start("add", input.len() as u64);
        let mut buf = Vec::new();
        let mut files = Vec::new();
        let mut start = 0;
        while start < input.len() {
            let end = (start + per_shard).min(input.len());
            let mut shard = template.try_clone()?;
            let mut pos = start;
            while pos < end {
                stopped(stop)?;
                let rows = input.read_rows_into(pos, batch.min(end - pos), &mut buf)?;
                let shard_ids: Vec<i64> = match ids {
                    Some(ids) => ids[pos..pos + rows].to_vec(),
                    None => (pos as i64..(pos + rows) as i64).collect(),
                };
                shard
                    .add(&buf, Some(&shard_ids))
                    .map_err(|e| e.context(format!("{}: rows {pos}..{}", input.path().display(), pos + rows)))?;
                progress.inc(rows as u64);
                pos += rows;
            }
            let f = shard_dir.join(format!("shard-{}.index", files.len()));
            shard.save(&f)?;
            files.push(f);
            start = end;
        }
        progress.finish();
        progress.note(&format!("merging {} shard(s) into {}", files.len(), data.display()));
        let opts = OpenOptions { mmap: true, warm: false, ..Default::default() };
        let mut shards = files.iter().map(|f| Index::open_with(f, &opts)).collect::<Result<Vec<_>>>()?;
        index.lists_to_disk(data)?;
        let mut refs: Vec<&mut Index> = shards.iter_mut().collect();
        index.merge_to_disk(&mut refs)
    })();
    let _ = std::fs::remove_dir_all(&shard_dir);
    res?;
    record_input(index, input);
    if ids.is_some() {
        index.meta_mut().ids = crate::engine::index::IdMode::Explicit;
    }
    Ok(())
}

/// Add every row of `input` (with `ids`, if given) to `index` in batches of `batch` rows.
pub fn add_rows(
    index: &mut Index,
    input: &VectorFile,
    ids: Option<&[i64]>,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<()> {
    check_dim(input.path(), input.dim(), index.d())?;
    let ids = ids.or(input.ids());
    check_ids(input, ids)?;
    let d = input.dim();
    for_each_batch(input, batch, "add", progress, stop, &mut |start, x| {
        let rows = x.len() / d;
        let id_slice = ids.map(|ids| &ids[start..start + rows]);
        index
            .add(x, id_slice)
            .map_err(|e| e.context(format!("{}: rows {start}..{}", input.path().display(), start + rows)))
    })?;
    record_input(index, input);
    Ok(())
}

/// Decode `input` in batches of `batch` rows and hand each (first row, `rows × d` values) to
/// `f`, reporting progress as stage `stage` and checking the stop flag between batches. The
/// one batching loop that searches over files use.
pub fn for_each_batch(
    input: &VectorFile,
    batch: usize,
    stage: &str,
    progress: &dyn Progress,
    stop: &AtomicBool,
    f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    progress.start(stage, input.len() as u64);
    let mut buf = Vec::new();
    let mut start = 0;
    while start < input.len() {
        stopped(stop)?;
        let rows = input.read_rows_into(start, batch, &mut buf)?;
        f(start, &buf)?;
        progress.inc(rows as u64);
        start += rows;
    }
    progress.finish();
    Ok(())
}
