//! Cutting an index into shards (`faissx split`).
//!
//! Every shard is an index of the same kind that keeps the original ids: indices that store
//! ids (IDMap/IDMap2, IVF) are cloned and the other shards' ids removed; indices that number
//! vectors by position (Flat, HNSW, PQ, …) are first wrapped in `IDMap2` with ids
//! `0..ntotal`. Where FAISS cannot remove ids (HNSW), a shard is rebuilt from the
//! reconstructed vectors into an emptied copy that keeps the training. Searching all shards
//! and merging the top-k therefore equals searching the whole (exactly, for Flat). This
//! module decides which vector goes where and produces shards one at a time ([`split_by`]);
//! [`split_file`] writes them as files that stand or fall together ([`OutputSet`]).

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::filter::MetaTable;
use crate::engine::index::Index;
use crate::engine::jobs::stopped;
use crate::engine::output::{check_new, IndexOutput, OutputSet};
use crate::engine::Progress;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// How vectors are assigned to shards. All three look at ids, so the assignment does not
/// depend on FAISS's storage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitBy {
    /// Contiguous ranges of ids: shard `s` holds the `s`-th of N equal slices of the sorted
    /// ids (for position-numbered indices, ranges of positions).
    #[default]
    Range,
    /// Round robin over the sorted ids: the `r`-th smallest id goes to shard `r mod N`.
    RoundRobin,
    /// A hash of the id (SplitMix64) modulo N: stable when more vectors are added later.
    Hash,
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash of an id.
pub fn hash_id(id: i64) -> u64 {
    let mut z = (id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shard of each of `ids` (by position) under `by` with `shards` shards.
pub fn assign(ids: &[i64], shards: usize, by: SplitBy) -> Vec<usize> {
    let n = ids.len();
    let shards = shards.max(1);
    match by {
        SplitBy::Hash => ids.iter().map(|&id| (hash_id(id) % shards as u64) as usize).collect(),
        SplitBy::Range | SplitBy::RoundRobin => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&p| (ids[p], p));
            let mut out = vec![0usize; n];
            for (rank, &p) in order.iter().enumerate() {
                out[p] = match by {
                    SplitBy::Range => rank * shards / n.max(1),
                    _ => rank % shards,
                };
            }
            out
        }
    }
}

/// Split `index` into `shards` shards by `by`, handing each finished shard (number, index)
/// to `sink` before the next is made, so only one copy is in memory at a time. Returns the
/// number of vectors per shard.
///
/// Errors: `InvalidInput` for `shards` < 1; `Faiss`/`InvalidInput` when the index can
/// neither remove ids nor reconstruct its vectors.
pub fn split_by(
    index: &Index,
    shards: usize,
    by: SplitBy,
    batch: usize,
    progress: &dyn Progress,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(usize, Index) -> Result<()>,
) -> Result<Vec<usize>> {
    if shards == 0 {
        return Err(Error::invalid("--shards must be at least 1"));
    }
    let n = index.ntotal();
    let ids = index.stored_ids(0, n)?;
    let owner = assign(&ids, shards, by);
    let mut counts = vec![0usize; shards];
    for &s in &owner {
        counts[s] += 1;
    }
    // The template every shard starts from: a copy that stores ids.
    let template = if index.stores_ids()? { index.try_clone()? } else { index.try_clone()?.into_idmap2()? };
    let batch = batch.max(1);
    progress.start("split", n as u64);
    for (s, &want) in counts.iter().enumerate() {
        stopped(stop)?;
        let remove: Vec<i64> = ids.iter().zip(&owner).filter(|(_, &o)| o != s).map(|(&id, _)| id).collect();
        let mut shard = template.try_clone()?;
        let removed = if remove.is_empty() { Ok(0) } else { shard.remove_ids(&remove) };
        match removed {
            Ok(r) if r == remove.len() => {}
            Ok(r) => {
                return Err(Error::new(
                    ErrorKind::Faiss,
                    format!(
                        "shard {s}: FAISS removed {r} of {} vectors; refusing to write a wrong shard",
                        remove.len()
                    ),
                ))
            }
            Err(e) => {
                // FAISS cannot remove from this type (HNSW): rebuild the shard from the
                // reconstructed vectors in an emptied copy that keeps the training.
                if s == 0 {
                    progress.note(&format!(
                        "FAISS cannot remove vectors from this index ({}): rebuilding each shard from reconstructed vectors",
                        e.chain()
                    ));
                }
                shard = template.try_clone()?;
                shard.reset()?;
                let mut start = 0;
                while start < n {
                    stopped(stop)?;
                    let rows = batch.min(n - start);
                    let (bids, x) = index.extract(start, rows).map_err(|e2| {
                        Error::invalid(format!(
                            "cannot split: FAISS can neither remove vectors from this index ({}) nor reconstruct them ({})",
                            e.chain(),
                            e2.chain()
                        ))
                    })?;
                    let d = index.d();
                    let mut keep_x = Vec::new();
                    let mut keep_ids = Vec::new();
                    for j in 0..rows {
                        if owner[start + j] == s {
                            keep_ids.push(bids[j]);
                            keep_x.extend_from_slice(&x[j * d..(j + 1) * d]);
                        }
                    }
                    if !keep_ids.is_empty() {
                        shard.add(&keep_x, Some(&keep_ids))?;
                    }
                    start += rows;
                }
            }
        }
        if shard.ntotal() != want {
            return Err(Error::new(
                ErrorKind::Faiss,
                format!("shard {s} holds {} vectors, expected {want}; refusing to write it", shard.ntotal()),
            ));
        }
        progress.inc(want as u64);
        sink(s, shard)?;
    }
    progress.finish();
    Ok(counts)
}

/// What [`split_file`] does.
#[derive(Debug, Clone, Copy)]
pub struct SplitOptions {
    /// Number of shards (≥ 1).
    pub shards: usize,
    /// How vectors are assigned to shards.
    pub by: SplitBy,
    /// Vectors per batch when a shard is rebuilt from reconstructed vectors.
    pub batch: usize,
    /// Write each shard's inverted lists to `<shard>.ivfdata` (IVF indices).
    pub on_disk: bool,
    /// Replace shard files that exist.
    pub force: bool,
}

/// The outcome of [`split_file`].
#[derive(Debug, Clone)]
pub struct SplitReport {
    /// Vectors in the split index.
    pub ntotal: usize,
    /// Vectors per shard.
    pub counts: Vec<usize>,
    /// The shard files written, in shard order.
    pub paths: Vec<PathBuf>,
    /// Stale shards of an earlier split removed (with `force`).
    pub removed: Vec<PathBuf>,
}

/// The path of shard `i` of `index` in `dir`: `<dir>/<stem>.<i>.<ext>` (`ext` defaults to
/// `index`).
pub fn shard_path(dir: &Path, index: &Path, i: usize) -> PathBuf {
    let stem = index.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
    let ext = index.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
    dir.join(format!("{stem}.{i}.{ext}"))
}

/// Shards of `index` in `dir` that a split into `n` shards would not write: files named
/// like [`shard_path`] (`<stem>.<i>.<ext>`) with `i ≥ n`, left by an earlier split into more
/// shards. Sorted by `i`.
pub fn stale_shards(dir: &Path, index: &Path, n: usize) -> Vec<PathBuf> {
    let probe = shard_path(dir, index, 0);
    let name = probe.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once(".0.") else { return Vec::new() };
    let (prefix, suffix) = (format!("{prefix}."), format!(".{suffix}"));
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(usize, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let num = name.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || (num.len() > 1 && num.starts_with('0')) {
                return None;
            }
            let i: usize = num.parse().ok()?;
            (i >= n).then(|| (i, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Split the index file `index` into `opts.shards` shard files in `dir` (created if
/// missing), named by [`shard_path`], each with its sidecar (and its `.ivfdata` with
/// `on_disk`). Shard files are checked before anything is written; on failure none of them
/// remains (nor `dir`, if it was created). Each shard is written under its
/// [`OutputLock`](crate::engine::io::atomic::OutputLock), so two splits into the same
/// directory never mix one shard's index and sidecar.
///
/// Shards of the same stem left by an earlier split into more shards ([`stale_shards`])
/// would be searched with the new ones by `search DIR/STEM.*.index`, adding vectors twice:
/// without `force` they are refused; with `force` they are removed once the new shards are
/// written.
///
/// Errors: `InvalidInput` when `dir` is not a directory or, with `on_disk`, the index is not
/// a bare IVF index; `AlreadyExists` for an existing or stale shard file without `force`;
/// `Busy` when another faissx is writing a shard; those of [`split_by`].
pub fn split_file(
    index: &Path,
    dir: &Path,
    opts: &SplitOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<SplitReport> {
    let n = opts.shards;
    if dir.exists() && !dir.is_dir() {
        return Err(Error::invalid(format!("{}: -o must be a directory", dir.display())));
    }
    let paths: Vec<PathBuf> = (0..n).map(|i| shard_path(dir, index, i)).collect();
    for p in &paths {
        check_new(p, opts.force)?;
    }
    let stale = stale_shards(dir, index, n);
    if let (Some(p), false) = (stale.first(), opts.force) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{}: a shard left by an earlier split into more shards (searching the shards together would add its vectors twice); use --force to replace the whole split",
                p.display()
            ),
        ));
    }
    let mut ix = Index::open_float(index, &Default::default())?;
    if opts.on_disk {
        // Refuse non-IVF indices before anything is written.
        ix.empty_ivf_copy().map_err(|e| e.context("--on-disk"))?;
    }
    let table = MetaTable::open_for(index, ix.meta())?;
    let mut set = OutputSet::in_dir(dir)?;
    let counts = split_by(&ix, n, opts.by, opts.batch, progress, stop, &mut |i, mut shard| {
        let out = IndexOutput::create(&paths[i], opts.force, opts.on_disk)?;
        // Each shard keeps the metadata rows of the ids it holds.
        let part = match &table {
            None => None,
            Some(t) => {
                let held: std::collections::HashSet<i64> = shard.stored_ids(0, shard.ntotal())?.into_iter().collect();
                Some(t.take_ids(&held)?)
            }
        };
        match out.lists_tmp() {
            None => set.commit_with(out, &mut shard, part.as_ref()),
            Some(data) => {
                // The shard's lists move into on-disk lists of an emptied copy.
                let mut od = shard.empty_ivf_copy()?;
                od.lists_to_disk(data)?;
                od.merge_shard_to_disk(&mut shard)?;
                set.commit_with(out, &mut od, part.as_ref())
            }
        }
    })?;
    set.keep();
    for p in &stale {
        for f in IndexOutput::files(p) {
            match std::fs::remove_file(&f) {
                Ok(()) => progress.note(&format!("removed {}, left by an earlier split", f.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&f, e).context("removing a stale shard")),
            }
        }
    }
    Ok(SplitReport { ntotal: ix.ntotal(), counts, paths, removed: stale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_shards_are_the_higher_numbers_of_the_same_stem() {
        let dir = std::env::temp_dir().join(format!("faissx-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["all.0.index", "all.1.index", "all.2.index", "all.10.index", "all.3.index.meta.json", "all.02.index"]
        {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        for f in ["other.5.index", "all.x.index", "all.7.faiss"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let got = stale_shards(&dir, Path::new("src/all.index"), 2);
        assert_eq!(got, vec![dir.join("all.2.index"), dir.join("all.10.index")]);
        assert!(stale_shards(&dir, Path::new("all.index"), 11).is_empty());
        assert!(stale_shards(&dir.join("missing"), Path::new("all.index"), 1).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn assignments_cover_every_shard_evenly() {
        let ids: Vec<i64> = (0..10).rev().collect();
        let r = assign(&ids, 3, SplitBy::Range);
        // ids 9..0 by position; sorted ranks 0..9 → shards 0,0,0,0,1,1,1,2,2,2 by rank.
        assert_eq!(r, vec![2, 2, 2, 1, 1, 1, 0, 0, 0, 0]);
        let rr = assign(&ids, 3, SplitBy::RoundRobin);
        assert_eq!(rr[9], 0); // id 0 has rank 0
        assert_eq!(rr[8], 1);
        assert_eq!(rr[7], 2);
        let h = assign(&ids, 3, SplitBy::Hash);
        assert!(h.iter().all(|&s| s < 3));
        assert_eq!(h, assign(&ids, 3, SplitBy::Hash));
        let big: Vec<i64> = (0..3000).collect();
        let mut c = [0usize; 3];
        for s in assign(&big, 3, SplitBy::Hash) {
            c[s] += 1;
        }
        assert!(c.iter().all(|&x| x > 900), "hash spreads ids: {c:?}");
    }
}
