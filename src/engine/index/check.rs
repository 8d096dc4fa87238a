//! Structural checks of index files that FAISS's reader does not make, run on files without
//! a sidecar checksum before FAISS reads them (in the child process of [`super::probe`]).
//! FAISS reads sizes and arrays faithfully but trusts the numbers inside them: an IDMap's
//! `ntotal` larger than its id table, an HNSW neighbour id past the end of the index, or a
//! node linked at a level it does not have make it read out of bounds — a crash, or a search
//! that never ends. These checks parse only what they check and stream the file (memory:
//! 12 bytes per HNSW node).
//!
//! Covered: IDMap/IDMap2 (float and binary); HNSW (`IHNf`, `IHNp`, `IHNs`, `IHN2`, binary
//! `IBHf`) at the top level or directly under an IDMap. Not covered: HNSW inside other
//! wrappers (PreTransform, an IVF's quantizer), NSG, and everything the child process checks
//! by opening and searching.

use crate::engine::error::{Error, Result};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// FAISS's own bound on a serialized vector's length (`READVECTOR`).
const MAX_VECTOR: u64 = 1 << 40;

/// Run every check that applies to the file at `path`.
///
/// Errors: `Format` naming `path` and what is wrong; `Io` if it cannot be read.
pub fn check_file(path: &Path) -> Result<()> {
    check_idmap(path)?;
    check_hnsw(path)
}

struct Reader<'a> {
    r: BufReader<std::fs::File>,
    pos: u64,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn open(path: &'a Path) -> Result<Reader<'a>> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Reader { r: BufReader::with_capacity(1 << 16, f), pos: 0, path })
    }

    fn bad(&self, detail: impl std::fmt::Display) -> Error {
        Error::format(self.path, detail)
    }

    fn fill(&mut self, b: &mut [u8]) -> Result<()> {
        match self.r.read_exact(b) {
            Ok(()) => {
                self.pos += b.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.bad(format!("damaged index file: it ends inside a field at byte {}", self.pos)))
            }
            Err(e) => Err(Error::io(self.path, e)),
        }
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.bytes::<4>()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.bytes::<8>()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes::<8>()?))
    }
    fn skip(&mut self, n: u64) -> Result<()> {
        self.r.seek_relative(n as i64).map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }
    /// A serialized vector's length (elements of `elem` bytes), checked against FAISS's bound
    /// and the bytes left in the file.
    fn len(&mut self, what: &str, elem: u64, file_len: u64) -> Result<u64> {
        let n = self.u64()?;
        if n >= MAX_VECTOR || n.saturating_mul(elem) > file_len.saturating_sub(self.pos) {
            return Err(self.bad(format!("damaged HNSW: {what} claims {n} entries, more than the file holds")));
        }
        Ok(n)
    }
}

/// Float index header after the fourcc: d, ntotal, two dummies, is_trained, metric
/// [+ metric_arg]. Returns (d, ntotal).
fn float_header(r: &mut Reader) -> Result<(i64, i64)> {
    let d = r.i32()? as i64;
    let ntotal = r.i64()?;
    r.skip(16 + 1)?;
    if r.i32()? > 1 {
        r.skip(4)?;
    }
    Ok((d, ntotal))
}

/// Binary index header after the fourcc: d, code_size, ntotal, is_trained, metric.
fn binary_header(r: &mut Reader) -> Result<(i64, i64)> {
    let d = r.i32()? as i64;
    r.skip(4)?;
    let ntotal = r.i64()?;
    r.skip(1 + 4)?;
    Ok((d, ntotal))
}

/// An IDMap file's `ntotal` must be the length of its id table, which ends the file: FAISS
/// builds an IDMap2's reverse map from `ntotal` entries of that table, so a damaged `ntotal`
/// reads past it for minutes, or crashes.
pub fn check_idmap(path: &Path) -> Result<()> {
    let mut r = Reader::open(path)?;
    let len = r.r.get_ref().metadata().map_err(|e| Error::io(path, e))?.len();
    let Ok(cc) = r.bytes::<4>() else { return Ok(()) };
    let ntotal = match &cc {
        b"IxMp" | b"IxM2" => float_header(&mut r)?.1,
        b"IBMp" | b"IBM2" => binary_header(&mut r)?.1,
        _ => return Ok(()),
    };
    let bad = |detail: String| Err(Error::format(path, format!("damaged IDMap: {detail}")));
    // The id table: a u64 count, then `ntotal` i64 ids, at the end of the file.
    let table = u64::try_from(ntotal).ok().and_then(|n| n.checked_mul(8)).and_then(|b| b.checked_add(8));
    let Some(start) = table.and_then(|t| len.checked_sub(t)).filter(|&s| s >= r.pos) else {
        return bad(format!("the header says {ntotal} vectors, more than a {len}-byte file holds"));
    };
    r.r.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
    r.pos = start;
    let count = r.u64()?;
    if count != ntotal as u64 {
        return bad(format!("the header says {ntotal} vectors but its id table holds {count}"));
    }
    Ok(())
}

/// An HNSW graph must be consistent before FAISS searches it: per node a level count within
/// the levels the graph has, neighbour lists laid out as FAISS lays them out
/// (`offsets[i+1] = offsets[i] + cum_nneighbor_per_level[levels[i]]`), every neighbour −1 or
/// a node that exists at that level, an entry point that exists at the top level, and a
/// storage index holding the same number of vectors of the same `d`.
pub fn check_hnsw(path: &Path) -> Result<()> {
    let mut r = Reader::open(path)?;
    let len = r.r.get_ref().metadata().map_err(|e| Error::io(path, e))?.len();
    let Ok(mut cc) = r.bytes::<4>() else { return Ok(()) };
    if matches!(&cc, b"IxMp" | b"IxM2") {
        float_header(&mut r)?;
        let Ok(inner) = r.bytes::<4>() else { return Ok(()) };
        cc = inner;
    } else if matches!(&cc, b"IBMp" | b"IBM2") {
        binary_header(&mut r)?;
        let Ok(inner) = r.bytes::<4>() else { return Ok(()) };
        cc = inner;
    }
    let binary = &cc == b"IBHf";
    let (d, n) = match &cc {
        b"IHNf" | b"IHNp" | b"IHNs" | b"IHN2" => float_header(&mut r)?,
        b"IBHf" => binary_header(&mut r)?,
        _ => return Ok(()),
    };
    let bad = |r: &Reader, detail: String| Err(r.bad(format!("damaged HNSW graph: {detail}")));
    if n < 0 || n as u64 > len {
        return bad(&r, format!("ntotal {n} is impossible in a {len}-byte file"));
    }
    let n = n as usize;
    // assign_probas (f64), skipped.
    let k = r.len("assign_probas", 8, len)?;
    r.skip(k * 8)?;
    let k = r.len("cum_nneighbor_per_level", 4, len)?;
    let mut cum = Vec::with_capacity(k as usize);
    for _ in 0..k {
        cum.push(r.i32()? as i64);
    }
    if cum.len() < 2 || cum[0] != 0 || cum.windows(2).any(|w| w[1] < w[0]) {
        let shown: Vec<i64> = cum.iter().copied().take(12).collect();
        return bad(&r, format!("neighbours per level {shown:?}… are not a running total from 0"));
    }
    let nlevels = cum.len() - 1;
    if r.len("levels", 4, len)? != n as u64 {
        return bad(&r, format!("the level table does not have ntotal = {n} entries"));
    }
    let mut levels = Vec::with_capacity(n);
    for i in 0..n {
        let l = r.i32()?;
        if l < 1 || l as usize > nlevels {
            return bad(&r, format!("node {i} has {l} levels; the graph has {nlevels}"));
        }
        levels.push(l as u32);
    }
    if r.len("offsets", 8, len)? != n as u64 + 1 {
        return bad(&r, format!("the offset table does not have ntotal + 1 = {} entries", n + 1));
    }
    let mut offsets = Vec::with_capacity(n + 1);
    for i in 0..=n {
        let o = r.u64()?;
        let want = match i {
            0 => 0,
            _ => offsets[i - 1] + cum[levels[i - 1] as usize] as u64,
        };
        if o != want {
            return bad(&r, format!("offset {i} is {o}, not {want}"));
        }
        offsets.push(o);
    }
    let total = r.len("neighbors", 4, len)?;
    if total != offsets[n] {
        return bad(&r, format!("{total} neighbour slots, but the offsets need {}", offsets[n]));
    }
    let mut buf = Vec::new();
    for (v, &lv) in levels.iter().enumerate() {
        // Node v's lists, all levels at once (read in one call: this is most of the file).
        buf.resize((offsets[v + 1] - offsets[v]) as usize * 4, 0);
        r.fill(&mut buf)?;
        for level in 0..lv as usize {
            for slot in cum[level]..cum[level + 1] {
                let b = &buf[slot as usize * 4..slot as usize * 4 + 4];
                let u = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if u == -1 {
                    continue;
                }
                if u < 0 || u as usize >= n || (levels[u as usize] as usize) <= level {
                    return bad(&r, format!("node {v} links to {u} at level {level}, which has no such node"));
                }
            }
        }
    }
    let entry = r.i32()?;
    let max_level = r.i32()?;
    r.skip(3 * 4)?; // efConstruction, efSearch, a retired field
    let entry_ok = if n == 0 {
        true
    } else {
        entry >= 0 && (entry as usize) < n && max_level >= 0 && (max_level as u32) < levels[entry as usize]
    };
    if !entry_ok {
        return bad(&r, format!("entry point {entry} at level {max_level} is not a node of that level"));
    }
    // The storage index: its vectors are the graph's nodes.
    let Ok(_) = r.bytes::<4>() else {
        return bad(&r, "the storage index is missing".into());
    };
    let (sd, sn) = if binary { binary_header(&mut r)? } else { float_header(&mut r)? };
    if sn != n as i64 || sd != d {
        return bad(&r, format!("the graph has {n} nodes of d={d}, its storage {sn} vectors of d={sd}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, b: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("faissx-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    }

    fn header(cc: &[u8], d: i32, n: i64) -> Vec<u8> {
        let mut b = cc.to_vec();
        b.extend_from_slice(&d.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b.push(1);
        b.extend_from_slice(&1i32.to_le_bytes());
        b
    }

    fn vec_of(b: &mut Vec<u8>, elem: usize, items: &[i64]) {
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for &x in items {
            b.extend_from_slice(&x.to_le_bytes()[..elem]);
        }
    }

    /// A 3-node HNSW with 2 levels (2 neighbours at level 0, 1 at level 1): node 1 is on
    /// both levels and the entry point.
    fn hnsw(neighbors: &[i64], entry: i32, storage_n: i64) -> Vec<u8> {
        let mut b = header(b"IHNf", 4, 3);
        vec_of(&mut b, 8, &[0, 0]);
        vec_of(&mut b, 4, &[0, 2, 3]);
        vec_of(&mut b, 4, &[1, 2, 1]);
        vec_of(&mut b, 8, &[0, 2, 5, 7]);
        vec_of(&mut b, 4, neighbors);
        for x in [entry, 1, 40, 16, 1] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend(header(b"IxF2", 4, storage_n));
        b.extend_from_slice(&[0u8; 64]);
        b
    }

    #[test]
    fn hnsw_links_must_stay_in_the_graph() {
        let good = [1, 2, 0, 2, -1, 0, 1];
        check_hnsw(&write("ok.index", &hnsw(&good, 1, 3))).unwrap();
        let err = |b: Vec<u8>| check_hnsw(&write("bad.index", &b)).unwrap_err().to_string();
        let mut past = good;
        past[1] = 3;
        assert!(err(hnsw(&past, 1, 3)).contains("node 0 links to 3 at level 0"));
        let mut up = good;
        up[4] = 0; // node 1's level-1 link to node 0, which has level 0 only
        assert!(err(hnsw(&up, 1, 3)).contains("node 1 links to 0 at level 1"));
        assert!(err(hnsw(&good, 0, 3)).contains("entry point 0 at level 1"));
        assert!(err(hnsw(&good, 1, 2)).contains("its storage 2 vectors"));
        let mut b = hnsw(&good, 1, 3);
        b.truncate(120);
        assert!(err(b).contains("damaged HNSW"));
        // Under an IDMap2 the same graph is checked.
        let mut m = header(b"IxM2", 4, 3);
        m.extend(hnsw(&past, 1, 3));
        vec_of(&mut m, 8, &[5, 6, 7]);
        assert!(check_hnsw(&write("m.index", &m)).unwrap_err().to_string().contains("links to 3"));
        check_idmap(&write("m.index", &m)).unwrap();
    }

    #[test]
    fn idmap_ntotal_must_match_its_id_table() {
        let mut b = header(b"IxM2", 4, 2);
        b.extend_from_slice(b"an inner index..");
        vec_of(&mut b, 8, &[7, 9]);
        let p = write("x.index", &b);
        check_idmap(&p).unwrap();
        b[8] = 3;
        std::fs::write(&p, &b).unwrap();
        let e = check_idmap(&p).unwrap_err().to_string();
        assert!(e.contains("x.index: damaged IDMap: the header says 3 vectors but its id table holds"), "{e}");
        b[15] = 0x7f;
        std::fs::write(&p, &b).unwrap();
        assert!(check_idmap(&p).unwrap_err().to_string().contains("more than a 77-byte file holds"));
        std::fs::write(&p, b"IxFI not an idmap").unwrap();
        check_idmap(&p).unwrap();
        check_hnsw(&p).unwrap();
    }
}
