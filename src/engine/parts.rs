//! Builds split into tasks (issue 17, local files): train once on a sample drawn across all
//! input files ([`train`]), add a slice of the rows to a copy of the trained index in each of N
//! tasks ([`add_task`], writing `part-<i>-of-<N>.index`, whose sidecar records which part it
//! is), then merge the parts ([`check_parts`] refuses a missing or duplicate part before
//! `merge` runs; `merge --partial` makes one level of a tree of merges). This is the shape
//! of FAISS's own distributed / on-disk demos and of autofaiss's Spark build.
//!
//! Slices are global row ranges over the inputs taken in order (task i of N gets rows
//! `⌊i·T/N⌋ .. ⌊(i+1)·T/N⌋`), and every vector's id is its global row number (or, with one ids
//! file per input, the user's id of that row), so the merged parts equal one `add` of every
//! input to the same trained index. This module does not know
//! schedulers or clap: the task number comes in as a [`Task`].

use crate::engine::error::{Error, Result};
use crate::engine::index::{IdMode, Index, IndexSpec, PartsInfo};
use crate::engine::io::{check_dim, read_ids, sample_indices, VectorFile};
use crate::engine::jobs::{default_train_size, stopped};
use crate::engine::Progress;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Several vector files read as one sequence of rows (all of one `d`).
pub struct InputSet {
    files: Vec<VectorFile>,
    /// Global row number of each file's first row, plus the total at the end.
    starts: Vec<usize>,
}

impl InputSet {
    /// The opened `files`, in order.
    ///
    /// Errors: `InvalidInput` for no files; `DimensionMismatch` naming the first file whose
    /// `d` differs from the first file's.
    pub fn new(files: Vec<VectorFile>) -> Result<InputSet> {
        let Some(first) = files.first() else { return Err(Error::invalid("no input files")) };
        let d = first.dim();
        let mut starts = vec![0];
        for f in &files {
            check_dim(f.path(), f.dim(), d)?;
            starts.push(starts.last().copied().unwrap_or(0) + f.len());
        }
        Ok(InputSet { files, starts })
    }

    /// Vector dimension `d`.
    pub fn dim(&self) -> usize {
        self.files[0].dim()
    }

    /// Rows in all files.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file and row within it of global row `row`.
    fn locate(&self, row: usize) -> (usize, usize) {
        let f = self.starts.partition_point(|&s| s <= row) - 1;
        (f, row - self.starts[f])
    }

    /// `n` distinct rows chosen with `seed` across all files (`n × d`, in global row order):
    /// only the chosen rows are read, not every file in full.
    ///
    /// Errors: those of reading the files (naming file and record).
    pub fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        let mut rows = sample_indices(self.len(), n, seed);
        rows.sort_unstable();
        let mut out = Vec::with_capacity(rows.len() * self.dim());
        let mut buf = Vec::new();
        let mut rest = rows.as_slice();
        while let Some(&first) = rest.first() {
            // The sample's rows in the file of `first`, read in one call per file.
            let (f, _) = self.locate(first);
            let here = rest.partition_point(|&r| r < self.starts[f + 1]);
            let local: Vec<usize> = rest[..here].iter().map(|r| r - self.starts[f]).collect();
            self.files[f].read_rows_at(&local, &mut buf)?;
            out.extend_from_slice(&buf);
            rest = &rest[here..];
        }
        Ok(out)
    }

    /// Hand `f` the rows `range` (global) in batches of at most `batch`: (first global row,
    /// `rows × d` values).
    fn for_each_batch(
        &self,
        range: std::ops::Range<usize>,
        batch: usize,
        stop: &AtomicBool,
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let mut row = range.start;
        let mut buf = Vec::new();
        while row < range.end {
            stopped(stop)?;
            let (fi, local) = self.locate(row);
            let in_file = self.starts[fi + 1] - row;
            if row == range.start || local == 0 {
                // This task's rows of this file: an object fetches nothing else.
                self.files[fi].advise_rows(local..local + in_file.min(range.end - row));
            }
            let n = batch.max(1).min(in_file).min(range.end - row);
            self.files[fi].read_rows_into(local, n, &mut buf)?;
            f(row, &buf)?;
            row += n;
        }
        Ok(())
    }
}

/// Task `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// This task's number, `0..count`.
    pub index: usize,
    /// How many tasks share the rows.
    pub count: usize,
}

impl Task {
    /// A task, checked.
    ///
    /// Errors: `InvalidInput` for `count` 0 or `index >= count`.
    pub fn new(index: usize, count: usize) -> Result<Task> {
        if count == 0 || index >= count {
            return Err(Error::invalid(format!(
                "task {index} of {count}: the task number must be below the task count"
            )));
        }
        Ok(Task { index, count })
    }

    /// Parse `i/N`.
    ///
    /// Errors: `InvalidInput` naming the text.
    pub fn parse(s: &str) -> Result<Task> {
        let bad = || Error::invalid(format!("--task {s:?}: expected i/N, e.g. 3/64 (task 3 of 64, numbered from 0)"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        Task::new(i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?)
    }

    /// The global rows of this task out of `total`: `⌊i·T/N⌋ .. ⌊(i+1)·T/N⌋`.
    pub fn rows(&self, total: usize) -> std::ops::Range<usize> {
        let at = |i: usize| ((i as u128 * total as u128) / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// `part-<i>-of-<N>.index`, the file name of this task's part.
    pub fn part_name(&self) -> String {
        format!("part-{}-of-{}.index", self.index, self.count)
    }
}

/// A trained, empty index for `inputs` per `spec`, trained on `train_size` rows (default as
/// `build`) sampled with `seed` across all files.
///
/// Errors: `InvalidInput` for empty inputs, a bad factory string, or a factory that needs no
/// training (nothing to share between tasks); `Faiss` from training.
pub fn train(
    inputs: &InputSet,
    spec: &IndexSpec,
    train_size: Option<usize>,
    seed: u64,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Index> {
    if inputs.is_empty() {
        return Err(Error::invalid("no vectors to train on"));
    }
    let mut index = Index::create(spec, false).map_err(|e| e.context("--factory"))?;
    if index.is_trained() {
        return Err(Error::invalid(format!(
            "--factory {}: this index type needs no training; build it with `faissx build`",
            spec.factory
        )));
    }
    let nlist = index.describe()?.nlist.unwrap_or(0);
    let n = train_size.unwrap_or_else(|| default_train_size(inputs.len(), nlist)).min(inputs.len());
    progress.start("sample", n as u64);
    let sample = inputs.sample(n, seed)?;
    progress.finish();
    stopped(stop)?;
    progress.start("train", 0);
    index.train(&sample).map_err(|e| e.context(format!("training {} on {n} vectors", spec.factory)))?;
    progress.finish();
    index.meta_mut().train_size = n;
    Ok(index)
}

/// Add `task`'s slice of `inputs` to `index` (a copy of the trained index, empty), in batches
/// of `batch` rows. Each vector's id is its global row number, or, with `ids` (one integer ids
/// file per input, in order: `.npy`, `.ivecs` or text), the id at its row in its input's ids
/// file; only the ids files of the task's rows are read. Returns the rows added.
///
/// Errors: `DimensionMismatch`; `InvalidInput` when `index` already holds vectors or is not
/// trained, for a count of ids files other than the inputs', or an ids file whose length is not
/// its input's (naming both); those of reading and adding (naming file and rows).
pub fn add_task(
    index: &mut Index,
    inputs: &InputSet,
    ids: Option<&[PathBuf]>,
    task: Task,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<usize> {
    check_dim(Path::new("inputs"), inputs.dim(), index.d())?;
    if index.ntotal() != 0 {
        return Err(Error::invalid("the trained index already holds vectors: tasks add to an empty trained index"));
    }
    if let Some(files) = ids {
        if files.len() != inputs.files.len() {
            return Err(Error::invalid(format!(
                "--ids: {} ids files for {} inputs: give one ids file per input, in the same order",
                files.len(),
                inputs.files.len()
            )));
        }
    }
    let rows = task.rows(inputs.len());
    progress.start("add", rows.len() as u64);
    let d = inputs.dim();
    // The ids of the input file being added (read when the task's rows reach it).
    let mut loaded: Option<(usize, Vec<i64>)> = None;
    inputs.for_each_batch(rows.clone(), batch, stop, &mut |first, x| {
        let n = x.len() / d;
        let batch_ids: Vec<i64> = match ids {
            None => (first as i64..(first + n) as i64).collect(),
            Some(files) => {
                let (f, local) = inputs.locate(first);
                if loaded.as_ref().is_none_or(|(lf, _)| *lf != f) {
                    let v = read_ids(&files[f])?;
                    if v.len() != inputs.files[f].len() {
                        return Err(Error::invalid(format!(
                            "{}: {} ids for the {} vectors of {}",
                            files[f].display(),
                            v.len(),
                            inputs.files[f].len(),
                            inputs.files[f].path().display()
                        )));
                    }
                    loaded = Some((f, v));
                }
                let (_, v) = loaded.as_ref().ok_or_else(|| Error::invalid("invariant: ids loaded"))?;
                v[local..local + n].to_vec()
            }
        };
        index.add(x, Some(&batch_ids)).map_err(|e| e.context(format!("rows {first}..{}", first + n)))?;
        progress.inc(n as u64);
        Ok(())
    })?;
    progress.finish();
    let trained = index.meta().index_crc32;
    let meta = index.meta_mut();
    meta.parts = Some(PartsInfo { count: task.count, have: vec![task.index], trained });
    if ids.is_some() {
        meta.ids = IdMode::Explicit;
    }
    Ok(rows.len())
}

/// The parts of a split build that merging `inputs` (path, sidecar facts) gives, from the
/// parts their sidecars record (`None` when no input is a part). Unless `partial` (one level of
/// a tree of merges), every part of the build must be there.
///
/// Errors: `InvalidInput` naming the first missing part (`part-17-of-64 missing`), a part given
/// twice, parts of builds with different task counts, or an input that is not a part.
pub fn check_parts(inputs: &[(PathBuf, Option<PartsInfo>)], partial: bool) -> Result<Option<PartsInfo>> {
    if inputs.iter().all(|(_, p)| p.is_none()) {
        return Ok(None);
    }
    let mut count = None;
    let mut trained: Option<(&Path, u32)> = None;
    let mut seen: Vec<Option<&Path>> = Vec::new();
    for (path, info) in inputs {
        let Some(info) = info else {
            return Err(Error::invalid(format!(
                "{}: not a part of a split build, merged with parts (merge parts with parts)",
                path.display()
            )));
        };
        if let Some(crc) = info.trained {
            match trained {
                Some((first, want)) if want != crc => {
                    return Err(Error::invalid(format!(
                        "{}: built from another trained index (crc32 {crc:08x}; {} from {want:08x}): merge the parts of one `faissx train` output",
                        path.display(),
                        first.display()
                    )))
                }
                Some(_) => {}
                None => trained = Some((path, crc)),
            }
        }
        let n = *count.get_or_insert(info.count);
        if info.count != n {
            return Err(Error::invalid(format!(
                "{}: a part of {} tasks, merged with parts of {n}: merge the parts of one build",
                path.display(),
                info.count
            )));
        }
        seen.resize(n, None);
        for &i in &info.have {
            if i >= n {
                return Err(Error::invalid(format!("{}: part {i} of {n} is out of range", path.display())));
            }
            if let Some(other) = seen[i] {
                return Err(Error::invalid(format!(
                    "part-{i}-of-{n} given twice ({} and {})",
                    other.display(),
                    path.display()
                )));
            }
            seen[i] = Some(path);
        }
    }
    let n = count.unwrap_or(0);
    if !partial {
        if let Some(i) = seen.iter().position(Option::is_none) {
            return Err(Error::invalid(format!(
                "part-{i}-of-{n} missing: every part of the build must be merged (--partial for one level of a tree of merges)"
            )));
        }
    }
    let have = (0..n).filter(|&i| seen[i].is_some()).collect();
    Ok(Some(PartsInfo { count: n, have, trained: trained.map(|(_, crc)| crc) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_cover_every_row_once() {
        for total in [0, 1, 7, 100, 1001] {
            for n in [1, 3, 4, 64] {
                let mut next = 0;
                for i in 0..n {
                    let r = Task::new(i, n).unwrap().rows(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
        assert!(Task::parse("4/4").unwrap_err().to_string().contains("below the task count"));
        assert!(Task::parse("x").unwrap_err().to_string().contains("expected i/N"));
        assert_eq!(Task::parse("3/64").unwrap().part_name(), "part-3-of-64.index");
    }

    #[test]
    fn parts_are_checked() {
        let part = |name: &str, n: usize, have: &[usize]| {
            (PathBuf::from(name), Some(PartsInfo { count: n, have: have.to_vec(), trained: Some(7) }))
        };
        let all = [part("a", 3, &[0]), part("b", 3, &[2]), part("c", 3, &[1])];
        assert_eq!(
            check_parts(&all, false).unwrap(),
            Some(PartsInfo { count: 3, have: vec![0, 1, 2], trained: Some(7) })
        );
        assert_eq!(check_parts(&[(PathBuf::from("x"), None)], false).unwrap(), None);
        let e = check_parts(&[part("a", 3, &[0]), part("b", 3, &[2])], false).unwrap_err();
        assert!(e.to_string().contains("part-1-of-3 missing"), "{e}");
        let half = check_parts(&[part("a", 3, &[0]), part("b", 3, &[2])], true).unwrap();
        assert_eq!(half, Some(PartsInfo { count: 3, have: vec![0, 2], trained: Some(7) }));
        let e = check_parts(&[part("a", 2, &[0]), part("b", 2, &[0, 1])], false).unwrap_err();
        assert!(e.to_string().contains("part-0-of-2 given twice (a and b)"), "{e}");
        let e = check_parts(&[part("a", 2, &[0]), part("b", 3, &[1])], false).unwrap_err();
        assert!(e.to_string().contains("a part of 3 tasks, merged with parts of 2"), "{e}");
        let e = check_parts(&[part("a", 2, &[0]), (PathBuf::from("x"), None)], false).unwrap_err();
        assert!(e.to_string().contains("x: not a part"), "{e}");
        let mut other = part("b", 2, &[1]);
        other.1.as_mut().unwrap().trained = Some(8);
        let e = check_parts(&[part("a", 2, &[0]), other], false).unwrap_err();
        assert!(e.to_string().contains("b: built from another trained index (crc32 00000008; a from 00000007)"), "{e}");
    }
}
