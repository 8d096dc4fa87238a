//! Merging several indices of the same kind into one (`faissx merge`).
//!
//! FAISS's own `merge_from` is used where it exists: Flat and other flat-code indices, IVF
//! indices that share their trained coarse quantizer, IDMap/IDMap2 and PreTransform over
//! those. Where FAISS refuses (HNSW, IVF with different quantizers, …) but the vectors can be
//! reconstructed, they are re-added to the first index in batches, which reports a `rebuild`
//! progress stage and a note. Otherwise the error says why. This module owns the id policy
//! (keep or renumber, refusing colliding ids) and the merged sidecar; [`merge_files`] opens the
//! inputs and writes the result through an [`IndexOutput`].

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::filter::MetaTable;
use crate::engine::index::{IdMode, Index, IndexMeta, OpenOptions, Storage};
use crate::engine::jobs::stopped;
use crate::engine::output::{check_new, IndexOutput};
use crate::engine::Progress;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What happens to ids when indices are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdPolicy {
    /// Keep ids when every input stores its own ids (IDMap, IVF built with ids), renumber
    /// otherwise.
    #[default]
    Auto,
    /// Keep every vector's id; refuse when two inputs share an id.
    Keep,
    /// Number vectors 0..N in input order (first input's vectors first).
    Renumber,
}

/// How the inputs were combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMethod {
    /// FAISS's `merge_from` for every input.
    Native,
    /// At least one input's vectors were reconstructed and re-added.
    Rebuilt,
}

/// The outcome of [`merge_into`].
#[derive(Debug, Clone)]
pub struct MergeReport {
    /// Vectors in the merged index.
    pub ntotal: usize,
    /// Whether ids were kept (true) or renumbered 0..N (false).
    pub kept_ids: bool,
    /// How the inputs were combined.
    pub method: MergeMethod,
    /// How each input's ids changed, in input order (carried to metadata tables).
    pub id_changes: Vec<IdChange>,
}

/// How one input's ids changed in a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdChange {
    /// Kept.
    Same,
    /// Vectors numbered by position: old id + offset.
    Offset(i64),
    /// Renumbered stored ids: old id → new id.
    Map(HashMap<i64, i64>),
    /// Renumbered, not recorded (the caller did not ask: no input has a metadata table, and
    /// a map of every id of a large index costs memory for nothing).
    Unrecorded,
}

impl IdChange {
    /// The new id of old id `id` (`None` for an id the input did not hold).
    pub fn apply(&self, id: i64) -> Option<i64> {
        match self {
            IdChange::Same => Some(id),
            IdChange::Offset(o) => Some(id + o),
            IdChange::Map(m) => m.get(&id).copied(),
            IdChange::Unrecorded => None,
        }
    }
}

/// Renumber `index`'s stored ids from `base`, recording old → new when `record`.
fn renumber_recording(index: &mut Index, base: i64, record: bool) -> Result<IdChange> {
    if !record {
        index.renumber_ids(base)?;
        return Ok(IdChange::Unrecorded);
    }
    let n = index.ntotal();
    let before = index.stored_ids(0, n)?;
    index.renumber_ids(base)?;
    let after = index.stored_ids(0, n)?;
    Ok(IdChange::Map(before.into_iter().zip(after).collect()))
}

/// Whether an index's ids were chosen by the user (IDMap, or IVF built with ids) rather than
/// being positions.
fn explicit_ids(index: &Index) -> Result<bool> {
    Ok(index.requires_ids()? || (index.stores_ids()? && index.meta().ids == IdMode::Explicit))
}

/// Check that the inputs can be merged at all: same class (after and before wrappers), `d`,
/// metric and normalization, all trained.
pub fn check_compatible(inputs: &[(PathBuf, Index)]) -> Result<()> {
    let Some((p0, first)) = inputs.first() else {
        return Err(Error::invalid("merge needs at least two indices"));
    };
    let t0 = first.describe()?;
    for (p, idx) in inputs {
        if !idx.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, format!("{}: index is not trained", p.display())));
        }
    }
    crate::engine::shards::check_same_space(
        inputs,
        "only indices of the same d merge",
        "only indices of the same metric merge",
    )?;
    for (p, idx) in &inputs[1..] {
        let t = idx.describe()?;
        if t.type_name != t0.type_name || t.inner_name != t0.inner_name {
            let name = |a: &str, b: &str| if a == b { a.to_string() } else { format!("{a} over {b}") };
            return Err(Error::invalid(format!(
                "{}: is {}, but {} is {}: only indices of the same type merge",
                p.display(),
                name(&t.type_name, &t.inner_name),
                p0.display(),
                name(&t0.type_name, &t0.inner_name)
            )));
        }
    }
    Ok(())
}

/// Whether merging `inputs` under `policy` keeps their ids (true) or renumbers 0..N.
pub fn keeps_ids(inputs: &[(PathBuf, Index)], policy: IdPolicy) -> Result<bool> {
    Ok(match policy {
        IdPolicy::Keep => true,
        IdPolicy::Renumber => false,
        IdPolicy::Auto => all_explicit(inputs)?,
    })
}

fn all_explicit(inputs: &[(PathBuf, Index)]) -> Result<bool> {
    for (_, i) in inputs {
        if !explicit_ids(i)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Stored ids read per call when scanning an input (256 Ki ids, 2 MiB): the scans below keep
/// one such chunk in memory, not an input's ids.
const ID_CHUNK: usize = 1 << 18;

/// The ids of `index` in storage order, in chunks of at most `chunk`.
fn id_chunks(index: &Index, chunk: usize) -> impl Iterator<Item = Result<Vec<i64>>> + '_ {
    let n = index.ntotal();
    (0..n).step_by(chunk.max(1)).map(move |s| index.stored_ids(s, chunk.max(1).min(n - s)))
}

/// Refuse ids that occur in more than one input (or twice in one).
fn check_unique_ids(inputs: &[(PathBuf, Index)]) -> Result<()> {
    check_unique_ids_chunked(inputs, ID_CHUNK)
}

/// [`check_unique_ids`] reading `chunk` ids at a time. Memory: when the ids are dense (their
/// range spans at most 64 × the number of ids, as the global row numbers of a split build
/// do) one bit per id of the range, at most 8 bytes per id; otherwise every id, sorted
/// (8 bytes per id). The ids themselves are streamed in chunks, so merging on disk stays
/// small next to the index (a hash map of every id would take ~36 bytes per vector: more
/// than an IVF-PQ index itself, BENCHMARKS.md "Split builds").
fn check_unique_ids_chunked(inputs: &[(PathBuf, Index)], chunk: usize) -> Result<()> {
    let (mut lo, mut hi, mut total) = (i64::MAX, i64::MIN, 0usize);
    for (_, idx) in inputs {
        for ids in id_chunks(idx, chunk) {
            for id in ids? {
                lo = lo.min(id);
                hi = hi.max(id);
            }
        }
        total += idx.ntotal();
    }
    if total == 0 {
        return Ok(());
    }
    let span = (hi as i128 - lo as i128 + 1) as u128;
    let dup = if span <= 64 * total as u128 {
        let mut seen = vec![0u64; (span as usize).div_ceil(64)];
        let mut dup = None;
        'scan: for (_, idx) in inputs {
            for ids in id_chunks(idx, chunk) {
                for id in ids? {
                    let bit = (id - lo) as usize;
                    let (word, mask) = (bit / 64, 1u64 << (bit % 64));
                    if seen[word] & mask != 0 {
                        dup = Some(id);
                        break 'scan;
                    }
                    seen[word] |= mask;
                }
            }
        }
        dup
    } else {
        let mut all = Vec::with_capacity(total);
        for (_, idx) in inputs {
            for ids in id_chunks(idx, chunk) {
                all.extend(ids?);
            }
        }
        all.sort_unstable();
        all.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
    };
    let Some(id) = dup else { return Ok(()) };
    // Name the inputs holding the first two copies of `id` (an error path: scanning again is fine).
    let mut first = None;
    for (i, (p, idx)) in inputs.iter().enumerate() {
        for ids in id_chunks(idx, chunk) {
            for _ in ids?.into_iter().filter(|&x| x == id) {
                let Some(j) = first else {
                    first = Some(i);
                    continue;
                };
                let hint = if explicit_ids(idx)? { "" } else { " (this index numbers its vectors from 0)" };
                return Err(Error::invalid(format!(
                    "{}: id {id} is also in {}{hint}: ids collide, so they cannot be kept; use --ids renumber",
                    p.display(),
                    inputs[j].0.display()
                )));
            }
        }
    }
    Err(Error::invalid(format!("id {id} is stored twice: ids collide, so they cannot be kept; use --ids renumber")))
}

/// Merge `inputs` (at least two; opened, so they can be checked before anything is written)
/// into the first of them and return it with a report. The inputs are consumed: FAISS's
/// merge moves their vectors. With `record_ids`, the report's `id_changes` map every
/// renumbered id (for metadata tables); without, renumbered inputs are
/// [`IdChange::Unrecorded`].
///
/// Errors: `DimensionMismatch`/`InvalidInput` for incompatible inputs or colliding ids
/// (nothing is merged then), `InvalidInput` when FAISS cannot merge the type and the vectors
/// cannot be reconstructed.
pub fn merge_into(
    mut inputs: Vec<(PathBuf, Index)>,
    policy: IdPolicy,
    record_ids: bool,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<(Index, MergeReport)> {
    if inputs.len() < 2 {
        return Err(Error::invalid("merge needs at least two indices"));
    }
    check_compatible(&inputs)?;
    let all_explicit = all_explicit(&inputs)?;
    let keep = keeps_ids(&inputs, policy)?;
    if keep {
        check_unique_ids(&inputs)?;
    }
    let total: usize = inputs.iter().map(|(_, i)| i.ntotal()).sum();
    let batch = batch.max(1);
    let rest = inputs.split_off(1);
    let (p0, mut dst) = inputs.pop().expect("invariant: two or more inputs");
    let mut inputs_meta = dst.meta().inputs.clone();
    let mut id_changes = Vec::with_capacity(rest.len() + 1);
    id_changes.push(if keep {
        IdChange::Same
    } else if dst.stores_ids()? {
        renumber_recording(&mut dst, 0, record_ids)?
    } else {
        IdChange::Offset(0)
    });
    let mut method = MergeMethod::Native;
    progress.start("merge", total as u64);
    progress.inc(dst.ntotal() as u64);
    for (p, mut src) in rest {
        stopped(stop)?;
        inputs_meta.extend(src.meta().inputs.iter().cloned());
        let base = dst.ntotal() as i64;
        let n = src.ntotal();
        id_changes.push(if keep {
            IdChange::Same
        } else if src.stores_ids()? {
            renumber_recording(&mut src, base, record_ids)?
        } else {
            IdChange::Offset(base)
        });
        let native = dst.merge_from(&mut src, 0);
        let cause = match native {
            Ok(()) => {
                progress.inc(n as u64);
                continue;
            }
            Err(e) => e.chain(),
        };
        // FAISS cannot merge these: reconstruct src's vectors and add them to dst.
        let type_name = src.describe()?.type_name;
        let cause = cause.trim_start_matches("merging indices: ").to_string();
        if n > 0 {
            if let Err(e) = src.extract(0, 1) {
                return Err(Error::invalid(format!(
                    "{}: cannot merge into {}: FAISS cannot merge {type_name} indices ({cause}) and cannot reconstruct their vectors to rebuild ({})",
                    p.display(),
                    p0.display(),
                    e.chain().trim_start_matches("reading stored vectors 0..1: ")
                )));
            }
        }
        progress.note(&format!(
            "FAISS cannot merge {type_name} indices ({cause}): rebuilding from {n} vectors of {} reconstructed",
            p.display()
        ));
        method = MergeMethod::Rebuilt;
        let takes_ids = dst.takes_ids()?;
        let mut start = 0;
        while start < n {
            stopped(stop)?;
            let rows = batch.min(n - start);
            let (ids, x) = src.extract(start, rows)?;
            // Renumbered inputs that store ids were renumbered above; the others append.
            let ids = takes_ids.then_some(ids);
            dst.add(&x, ids.as_deref()).map_err(|e| e.context(format!("{}: re-adding vectors", p.display())))?;
            progress.inc(rows as u64);
            start += rows;
        }
    }
    progress.finish();
    finish(&mut dst, inputs_meta, keep && all_explicit, total)?;
    Ok((dst, MergeReport { ntotal: total, kept_ids: keep, method, id_changes }))
}

/// Merge IVF `inputs` that share one trained coarse quantizer into a new index whose
/// inverted lists go to the on-disk file `data` (FAISS's `merge_ondisk`: the lists of each
/// input are appended with `OnDiskInvertedLists::merge_from`). The inputs are only read, so
/// they may be memory-mapped or have on-disk lists themselves, and memory stays bounded by
/// one input's lists. `data` is the [`IndexOutput::lists_tmp`] of the output the result is
/// committed to.
///
/// Ids: kept as stored (refused when they collide); renumbering needs loaded inputs, which
/// are renumbered in place (recorded as in [`merge_into`] with `record_ids`).
///
/// Errors: `InvalidInput` for non-IVF inputs or inputs with different quantizers (nothing
/// is written but `data`, which its output removes), `Unsupported` when ids must be
/// renumbered in an input that is mapped or on disk.
pub fn merge_on_disk(
    mut inputs: Vec<(PathBuf, Index)>,
    policy: IdPolicy,
    record_ids: bool,
    data: &Path,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<(Index, MergeReport)> {
    if inputs.len() < 2 {
        return Err(Error::invalid("merge needs at least two indices"));
    }
    check_compatible(&inputs)?;
    for (p, idx) in &inputs {
        let t = idx.describe()?;
        if !t.type_name.starts_with("IndexIVF") {
            return Err(Error::invalid(format!(
                "{}: is {}: --on-disk merges bare IVF indices (e.g. IVF1024,Flat) sharing a trained quantizer",
                p.display(),
                t.type_name
            )));
        }
    }
    let all_explicit = all_explicit(&inputs)?;
    let keep = keeps_ids(&inputs, policy)?;
    let mut id_changes = vec![IdChange::Same; inputs.len()];
    if keep {
        check_unique_ids(&inputs)?;
    } else {
        let mut base = 0i64;
        for (i, (p, idx)) in inputs.iter_mut().enumerate() {
            if idx.storage() != crate::engine::index::Storage::Loaded {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{}: ids must be renumbered (not every input stores its own ids), which needs a loaded index, but it is {}: use --ids keep, or inputs built with --ids",
                        p.display(),
                        if idx.storage() == crate::engine::index::Storage::OnDisk { "on disk" } else { "memory-mapped" }
                    ),
                ));
            }
            id_changes[i] =
                if idx.stores_ids()? { renumber_recording(idx, base, record_ids)? } else { IdChange::Offset(base) };
            base += idx.ntotal() as i64;
        }
    }
    let total: usize = inputs.iter().map(|(_, i)| i.ntotal()).sum();
    let p0 = inputs[0].0.clone();
    let mut dst = inputs[0].1.empty_ivf_copy()?;
    dst.lists_to_disk(data)?;
    let mut inputs_meta = Vec::new();
    stopped(stop)?;
    progress.start("merge", total as u64);
    for (_, src) in &inputs {
        inputs_meta.extend(src.meta().inputs.iter().cloned());
    }
    let mut srcs: Vec<&mut Index> = inputs.iter_mut().map(|(_, i)| i).collect();
    dst.merge_to_disk(&mut srcs).map_err(|e| {
        if e.chain().contains("coarse quantizers") {
            Error::invalid(format!(
                "the inputs' coarse quantizers differ (all must match {}'s): --on-disk merges IVF indices that share one trained quantizer",
                p0.display()
            ))
        } else {
            e
        }
    })?;
    progress.inc(total as u64);
    progress.finish();
    finish(&mut dst, inputs_meta, keep && all_explicit, total)?;
    Ok((dst, MergeReport { ntotal: total, kept_ids: keep, method: MergeMethod::Native, id_changes }))
}

/// What [`merge_files`] does.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeOptions {
    /// What happens to ids.
    pub policy: IdPolicy,
    /// Put the merged inverted lists in `<output>.ivfdata` ([`merge_on_disk`]; IVF inputs
    /// sharing a quantizer, memory-mapped and only read) instead of merging in memory
    /// ([`merge_into`]).
    pub on_disk: bool,
    /// Vectors per batch when re-adding reconstructed vectors.
    pub batch: usize,
    /// Replace `output` if it exists.
    pub force: bool,
    /// Merge only some parts of a split build (one level of a tree of merges); without it,
    /// parts of a split build must all be there.
    pub partial: bool,
}

/// Merge the index files `inputs` (two or more, in order) into `output` (index, sidecar and,
/// with `on_disk`, `<output>.ivfdata`). Every input is opened and checked before anything
/// is written; the output is written atomically, and nothing of it remains on failure.
///
/// Errors: `AlreadyExists` for an existing `output` without `force`; `InvalidInput` for an
/// input with on-disk lists without `on_disk`; those of [`merge_into`] / [`merge_on_disk`].
pub fn merge_files(
    inputs: &[PathBuf],
    output: &Path,
    opts: &MergeOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<MergeReport> {
    check_new(output, opts.force)?;
    let parts = inputs
        .iter()
        .map(|p| Ok((p.clone(), IndexMeta::load(p)?.and_then(|m| m.parts))))
        .collect::<Result<Vec<_>>>()?;
    let parts = crate::engine::parts::check_parts(&parts, opts.partial)?;
    // Locked before the inputs are read: a second merge into `output` fails at once.
    let out = IndexOutput::create(output, opts.force, opts.on_disk)?;
    let policy = opts.policy;
    // On-disk merges only read their inputs, so map them (renumbering ids needs them loaded).
    // Merged inputs are never searched: no IVF-PQ search tables.
    let open = OpenOptions { mmap: opts.on_disk && policy != IdPolicy::Renumber, warm: false, no_search: true };
    let mut inputs =
        inputs.iter().map(|p| Ok((p.clone(), Index::open_float(p, &open)?))).collect::<Result<Vec<_>>>()?;
    if opts.on_disk && !keeps_ids(&inputs, policy)? {
        for (p, idx) in inputs.iter_mut() {
            if idx.storage() == Storage::Mapped {
                *idx = Index::open_float(p, &OpenOptions { no_search: true, ..Default::default() })?;
            }
        }
    }
    if !opts.on_disk {
        if let Some((p, _)) = inputs.iter().find(|(_, i)| i.storage() != Storage::Loaded) {
            return Err(Error::invalid(format!(
                "{}: has on-disk inverted lists (read-only): merge it with --on-disk",
                p.display()
            )));
        }
    }
    let tables = inputs.iter().map(|(p, i)| MetaTable::open_for(p, i.meta())).collect::<Result<Vec<_>>>()?;
    let record = tables.iter().any(Option::is_some);
    let (mut index, report) = match out.lists_tmp() {
        Some(data) => merge_on_disk(inputs, policy, record, data, progress, stop)?,
        None => merge_into(inputs, policy, record, opts.batch, progress, stop)?,
    };
    let table = merge_tables(tables, &report.id_changes)?;
    index.meta_mut().parts = parts;
    out.commit_with(&mut index, table.as_ref())?;
    Ok(report)
}

/// The merged index's metadata table: each input's rows with its ids changed as the merge
/// changed them, in input order (`None` when no input has one).
///
/// Errors: `InvalidInput` when inputs with string ids and integer ids are mixed, or two inputs
/// share a string id.
fn merge_tables(tables: Vec<Option<MetaTable>>, changes: &[IdChange]) -> Result<Option<MetaTable>> {
    if tables.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut out: Option<MetaTable> = None;
    for (t, change) in tables.into_iter().zip(changes) {
        let Some(t) = t else { continue };
        let t = t.renumber(&|id| change.apply(id))?;
        out = Some(match out {
            None => t,
            Some(acc) => {
                if let Some(keys) = t.keys() {
                    if let Some(dup) = keys.iter().flatten().find(|k| acc.id_of_key(k).is_some()) {
                        return Err(Error::invalid(format!(
                            "string id {dup:?} is in two inputs: ids must be unique in the merged index"
                        )));
                    }
                }
                acc.append(&t)?
            }
        });
    }
    Ok(out)
}

/// Record the merged inputs and id mode in the sidecar, and check the merge produced exactly
/// `total` vectors (a partial merge is never written).
fn finish(
    dst: &mut Index,
    inputs: Vec<crate::engine::index::InputInfo>,
    explicit_ids: bool,
    total: usize,
) -> Result<()> {
    let meta = dst.meta_mut();
    meta.inputs = inputs;
    meta.ids = if explicit_ids { IdMode::Explicit } else { IdMode::Sequential };
    let ntotal = dst.ntotal();
    if ntotal != total {
        return Err(Error::new(
            ErrorKind::Faiss,
            format!("merge produced {ntotal} vectors, expected {total}: refusing to write it"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::{IndexSpec, Metric};

    /// A Flat index of `ids.len()` vectors of d = 2 storing `ids` (IDMap2).
    fn with_ids(name: &str, ids: &[i64]) -> (PathBuf, Index) {
        let spec = IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 2 };
        let mut ix = Index::create(&spec, true).unwrap();
        let x: Vec<f32> = (0..ids.len()).flat_map(|i| [i as f32, 0.0]).collect();
        ix.add(x.as_slice(), Some(ids)).unwrap();
        (PathBuf::from(name), ix)
    }

    #[test]
    fn unique_ids_are_checked_in_chunks_dense_and_sparse() {
        // Dense ranges (a split build's parts) and sparse ids, each read 7 ids at a time.
        let dense = [with_ids("a", &(0..20).collect::<Vec<_>>()), with_ids("b", &(20..45).rev().collect::<Vec<_>>())];
        check_unique_ids_chunked(&dense, 7).unwrap();
        let sparse = [with_ids("a", &[5, 1 << 40, 3]), with_ids("b", &[i64::MAX, 0, 6])];
        check_unique_ids_chunked(&sparse, 2).unwrap();
        for (a, b, want) in [
            ((0..20).collect::<Vec<i64>>(), (19..45).collect::<Vec<i64>>(), "b: id 19 is also in a"),
            (vec![5, 1 << 40, 3], vec![i64::MAX, 1 << 40], "b: id 1099511627776 is also in a"),
            ((0..30).chain([12]).collect(), (30..40).collect(), "a: id 12 is also in a"),
            (vec![1, i64::MAX, 7], vec![8, 7, i64::MAX], "b: id 7 is also in a"),
        ] {
            let inputs = [with_ids("a", &a), with_ids("b", &b)];
            for chunk in [1, 7, ID_CHUNK] {
                let e = check_unique_ids_chunked(&inputs, chunk).unwrap_err().to_string();
                assert!(e.contains(want) && e.contains("ids collide"), "{chunk}: {e}");
            }
        }
    }
}
