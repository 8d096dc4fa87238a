//! Checks of FAISS factory strings before FAISS sees them.
//!
//! FAISS's `index_factory` and the indices it builds trust their parameters: a zero number of
//! sub-quantizers or bits divides by zero (`PQ0x8`, `PQ4x0`, `OPQ0`: SIGFPE), `IVF0`, `RQ2x0`,
//! `RR0` and `IVF4_HNSW0` crash on the first add or search, `HNSW1` loops forever, and FAISS
//! 1.12's NSG build (NNDescent) hangs on duplicate vectors and aborts the process on small
//! inputs (issue 10; measured with FAISS 1.12 in `faissx` and in Python `faiss-cpu`). This
//! module refuses those with an error naming the parameter ([`check_safe`], for every command
//! and the server), and estimates what an index will allocate ([`check_cost`], the server's
//! per-index limits). It parses just enough of the factory grammar (the FAISS wiki's "The index
//! factory") to find the numbers; everything else is left to FAISS's own parser, whose errors
//! are C++ exceptions that faissx turns into error replies.

use crate::engine::error::{Error, Result};

/// Largest `nlist` the server creates (IVF, IMI's `2^(2·nbits)`, binary IVF): an empty IVF
/// index costs about 160 bytes per list before any vector is added (`IVF1000000,Flat`: 156 MB).
pub const MAX_NLIST: u64 = 1 << 18;

/// Largest HNSW `M` (neighbours per node and level).
pub const MAX_HNSW_M: u64 = 512;

/// Largest bits per code of PQ, RQ, LSQ and their variants (codebooks of `2^nbits` entries).
pub const MAX_NBITS: u64 = 16;

/// Largest codebook memory of one quantizer the server accepts, in bytes (PQ: `2^nbits × d`
/// floats; additive quantizers: `M × 2^nbits × d` floats).
pub const MAX_CODEBOOK_BYTES: u64 = 256 << 20;

/// One component of a factory string: a name and the numbers that follow it, e.g. `PQ16x8`
/// is `("PQ", [16, 8])`, `IVF4096` is `("IVF", [4096])`.
#[derive(Debug, PartialEq, Eq)]
struct Part<'a> {
    name: &'a str,
    nums: Vec<u64>,
}

/// Split a factory string into its parts: components are separated by `,`, `_`, `(`, `)` and
/// `+`; within one, the leading letters name it and the numbers are the digit runs after them.
/// A number too large for u64 is an error.
fn parts(factory: &str) -> Result<Vec<Part<'_>>> {
    let mut out = Vec::new();
    for comp in factory.split([',', '_', '(', ')', '+']).filter(|c| !c.is_empty()) {
        let name_end = comp.find(|c: char| c.is_ascii_digit()).unwrap_or(comp.len());
        let mut nums = Vec::new();
        for run in comp[name_end..].split(|c: char| !c.is_ascii_digit()).filter(|r| !r.is_empty()) {
            let n = run.parse::<u64>().map_err(|_| {
                Error::invalid(format!("factory string {factory:?}: parameter {run} of {comp:?} is too large"))
            })?;
            nums.push(n);
        }
        out.push(Part { name: &comp[..name_end], nums });
    }
    Ok(out)
}

/// Refuse factory strings whose parameters crash or hang FAISS: any zero parameter, HNSW with
/// `M < 2`, NSG and NNDescent indices (FAISS 1.12's NNDescent hangs on duplicate vectors and
/// aborts on inputs of ~100 rows), and code sizes above [`MAX_NBITS`] bits. Applies to float
/// and binary (`B…`) factory strings alike.
///
/// Errors: `InvalidInput` naming the factory string and the offending part.
pub fn check_safe(factory: &str) -> Result<()> {
    let bad = |what: String| Err(Error::invalid(format!("factory string {factory:?}: {what}")));
    for p in parts(factory)? {
        let name = p.name.strip_prefix('B').filter(|n| n.starts_with("IVF") || n.starts_with("HNSW")).unwrap_or(p.name);
        if name.starts_with("NSG") || name.starts_with("NNDescent") {
            return bad(format!(
                "{} indices are refused: FAISS 1.12's NSG build hangs on duplicate vectors and aborts on small inputs (use HNSW)",
                p.name
            ));
        }
        if p.nums.contains(&0) {
            return bad(format!("{}{}: parameters must be at least 1", p.name, join(&p.nums)));
        }
        if name == "HNSW" && p.nums.first().is_some_and(|&m| m < 2) {
            return bad("HNSW needs M >= 2 (HNSW1 never finishes adding)".to_string());
        }
        if let Some(nbits) = nbits(name, &p.nums) {
            if nbits > MAX_NBITS {
                return bad(format!("{}{}: at most {MAX_NBITS} bits per code", p.name, join(&p.nums)));
            }
        }
    }
    Ok(())
}

/// The server's limits on what one index may allocate, on top of [`check_safe`]: `nlist` up to
/// [`MAX_NLIST`], HNSW `M` up to [`MAX_HNSW_M`], codebooks up to [`MAX_CODEBOOK_BYTES`] for
/// vectors of `d` components.
///
/// Errors: `InvalidInput` naming the part and the limit.
pub fn check_cost(factory: &str, d: usize) -> Result<()> {
    check_safe(factory)?;
    let bad = |what: String| Err(Error::invalid(format!("factory string {factory:?}: {what}")));
    let d = d as u64;
    for p in parts(factory)? {
        let name = p.name.strip_prefix('B').filter(|n| n.starts_with("IVF") || n.starts_with("HNSW")).unwrap_or(p.name);
        let first = p.nums.first().copied();
        let nlist = match name {
            "IVF" => first,
            // IMI2x<b>: 2^(2b) inverted lists.
            "IMI" if p.nums.len() == 2 => {
                let bits = p.nums[0].saturating_mul(p.nums[1]);
                Some(if bits >= 64 { u64::MAX } else { 1 << bits })
            }
            _ => None,
        };
        if let Some(n) = nlist {
            if n > MAX_NLIST {
                return bad(format!("{} has {n} inverted lists; the server's limit is {MAX_NLIST}", p.name));
            }
        }
        if name == "HNSW" && first.is_some_and(|m| m > MAX_HNSW_M) {
            return bad(format!("HNSW M={} is above the server's limit of {MAX_HNSW_M}", first.unwrap_or(0)));
        }
        if let Some(nbits) = nbits(name, &p.nums) {
            let entries = 1u64 << nbits.min(MAX_NBITS);
            let books = if is_additive(name) { first.unwrap_or(1) } else { 1 };
            let bytes = entries.saturating_mul(books).saturating_mul(d).saturating_mul(4);
            if bytes > MAX_CODEBOOK_BYTES {
                return bad(format!(
                    "{}{} on d={d} needs {} MiB of codebooks; the server's limit is {} MiB",
                    p.name,
                    join(&p.nums),
                    bytes >> 20,
                    MAX_CODEBOOK_BYTES >> 20
                ));
            }
        }
    }
    Ok(())
}

/// Residual and local-search quantizers, whose `M` codebooks each span all `d` components.
fn is_additive(name: &str) -> bool {
    matches!(name, "RQ" | "LSQ" | "PRQ" | "PLSQ")
}

/// Bits per code of a quantizer part (`PQ<M>x<nbits>`, `RQ<M>x<nbits>`, `PRQ<n>x<M>x<nbits>`,
/// …; PQ without `x<nbits>` is 8).
fn nbits(name: &str, nums: &[u64]) -> Option<u64> {
    match name {
        "PQ" | "RQ" | "LSQ" if nums.len() >= 2 => Some(nums[1]),
        "PQ" if nums.len() == 1 => Some(8),
        "PRQ" | "PLSQ" if nums.len() >= 3 => Some(nums[2]),
        _ => None,
    }
}

fn join(nums: &[u64]) -> String {
    nums.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_components_and_numbers() {
        let p = parts("OPQ16_64,IVF4096_HNSW32,PQ16x8").unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name).collect();
        assert_eq!(names, ["OPQ", "", "IVF", "HNSW", "PQ"]);
        assert_eq!(p[0].nums, [16]);
        assert_eq!(p[1].nums, [64]);
        assert_eq!(p[4].nums, [16, 8]);
        assert!(parts("IVF99999999999999999999999,Flat").is_err());
    }

    #[test]
    fn crashing_factories_are_refused() {
        for f in [
            "PQ0x8",
            "PQ4x0",
            "PQ1x0",
            "IVF4,PQ1x0",
            "IVF4,PQ8x0",
            "OPQ0,Flat",
            "HNSW2,PQ8x0",
            "IVF0,Flat",
            "RQ2x0",
            "RR0,Flat",
            "IVF4_HNSW0,Flat",
            "HNSW1",
            "NSG32",
            "NSG64,Flat",
            "IVF4,NSG32,Flat",
            "BIVF0",
            "BHNSW1",
            "PQ4x17",
            "LSQ0x4",
        ] {
            let e = check_safe(f).unwrap_err();
            assert!(e.to_string().contains(f), "{f}: {e}");
        }
    }

    #[test]
    fn ordinary_factories_pass() {
        for f in [
            "Flat",
            "IVF1024,Flat",
            "HNSW32",
            "HNSW2",
            "OPQ16_64,IVF1024,PQ16",
            "IVF4096,PQ32x4fs",
            "SQfp16",
            "SQ8",
            "IVF1024_HNSW32,SQ8",
            "PCA64,IVF256,Flat",
            "IDMap2,Flat",
            "LSH",
            "PQ8",
            "RQ4x8",
            "BIVF16",
            "BHNSW16",
            "BFlat",
            "IVF256,Flat,RFlat",
            "L2norm,Flat",
        ] {
            check_safe(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            check_cost(f, 128).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn server_limits_memory_per_index() {
        assert!(check_cost("IVF1000000,Flat", 8).unwrap_err().to_string().contains("inverted lists"));
        assert!(check_cost("IVF262144,Flat", 8).is_ok());
        assert!(check_cost("IMI2x10,Flat", 8).is_err());
        assert!(check_cost("HNSW100000", 8).is_err());
        assert!(check_cost("PQ1x16", 65_536).unwrap_err().to_string().contains("codebooks"));
        assert!(check_cost("RQ64x12", 4096).is_err());
        // The CLI only applies the safety checks.
        assert!(check_safe("IVF1000000,Flat").is_ok());
    }
}
