//! texmex vector formats (`.fvecs`, `.bvecs`, `.ivecs`), as defined by the INRIA TEXMEX corpus
//! (Jégou et al., <http://corpus-texmex.irisa.fr/>) and used by ann-benchmarks: each record is a
//! little-endian i32 dimension `d` followed by `d` elements (f32, u8 or i32).

use super::{Elem, Layout};
use crate::engine::error::{Error, Result};
use std::path::Path;

/// Validate the shape of a file of `len` bytes whose first bytes are `bytes` (at least the
/// first record, or the whole file) and return its layout, `d` and record count.
pub(super) fn layout(path: &Path, bytes: &[u8], len: usize, elem: Elem) -> Result<(Layout, usize, usize)> {
    if len == 0 {
        return Err(Error::format(path, "file is empty"));
    }
    if len < 4 || bytes.len() < 4 {
        return Err(Error::format(path, format!("truncated: {len} bytes, no room for a record header")));
    }
    let d = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if d <= 0 || d > 1 << 20 {
        return Err(Error::format(path, format!("record 0 has dimension {d}; not a {} file?", ext(elem))));
    }
    let d = d as usize;
    let rec = 4 + d * elem.size();
    if !len.is_multiple_of(rec) {
        let whole = len / rec;
        // Tell apart a cut-off last record from records of another width.
        if whole > 0 {
            for i in 0..whole.min(1024).min(bytes.len() / rec) {
                check_header(path, &bytes[i * rec..(i + 1) * rec], d, i)?;
            }
        }
        return Err(Error::format(
            path,
            format!(
                "truncated: {len} bytes is not a whole number of {rec}-byte records (d={d}); record {whole} is incomplete"
            ),
        ));
    }
    let n = len / rec;
    Ok((Layout::Records { offset: 0, header: 4, elem }, d, n))
}

/// Check that `record` (one whole record) starts with dimension `d`.
pub(super) fn check_header(path: &Path, record: &[u8], d: usize, index: usize) -> Result<()> {
    let got = i32::from_le_bytes([record[0], record[1], record[2], record[3]]);
    if got as i64 != d as i64 {
        return Err(Error::format(
            path,
            format!("record {index} has dimension {got}, but record 0 has {d} (records of mixed dimension)"),
        ));
    }
    Ok(())
}

fn ext(elem: Elem) -> &'static str {
    match elem {
        Elem::F32 => "fvecs",
        Elem::U8 => "bvecs",
        _ => "ivecs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fvecs(rows: &[&[f32]]) -> Vec<u8> {
        let mut v = Vec::new();
        for r in rows {
            v.extend_from_slice(&(r.len() as i32).to_le_bytes());
            for x in *r {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v
    }

    #[test]
    fn whole_file_ok() {
        let b = fvecs(&[&[1.0, 2.0], &[3.0, 4.0]]);
        let (_, d, n) = layout(Path::new("a.fvecs"), &b, b.len(), Elem::F32).unwrap();
        assert_eq!((d, n), (2, 2));
    }

    #[test]
    fn layout_from_the_head_of_a_longer_file() {
        // An object's first bytes and its size decide the layout, as the whole file would.
        let b = fvecs(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0]]);
        let (_, d, n) = layout(Path::new("a.fvecs"), &b[..12], b.len(), Elem::F32).unwrap();
        assert_eq!((d, n), (2, 3));
        let e = layout(Path::new("a.fvecs"), &b[..12], b.len() - 1, Elem::F32).unwrap_err();
        assert!(e.to_string().contains("35 bytes is not a whole number of 12-byte records (d=2); record 2"), "{e}");
    }

    #[test]
    fn truncated_file_names_record() {
        let mut b = fvecs(&[&[1.0, 2.0], &[3.0, 4.0]]);
        b.truncate(b.len() - 2);
        let e = layout(Path::new("a.fvecs"), &b, b.len(), Elem::F32).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(e.to_string().contains("record 1"), "{e}");
    }

    #[test]
    fn mixed_dimension_names_record() {
        let b = fvecs(&[&[1.0, 2.0], &[3.0, 4.0, 5.0]]);
        let e = layout(Path::new("a.fvecs"), &b, b.len(), Elem::F32).unwrap_err();
        assert!(e.to_string().contains("record 1 has dimension 3"), "{e}");
    }
}
