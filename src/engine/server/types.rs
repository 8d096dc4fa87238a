//! FAISSx's index-type strings (`L2`, `IP`, `IVF<n>_SQ<q>`, `PQ<M>x<b>`, `HNSW<M>_IP`,
//! `BINARY_FLAT`, `IDMap2:<base>`, `PCA4,L2`, …) as the FAISS indices the Python FAISSx server
//! and client classes build for them; any other string is taken as a FAISS factory string, as
//! FAISS defines it.

use crate::engine::error::{Error, Result};
use crate::engine::index::Metric;
use crate::engine::protocol::Msg;

/// What an `index_type` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeSpec {
    /// A float index from FAISS's factory.
    Factory {
        /// The factory string.
        factory: String,
        /// Its metric.
        metric: Metric,
    },
    /// A binary (Hamming) index from FAISS's binary factory.
    Binary {
        /// The binary factory string.
        factory: String,
    },
    /// `IDMap:<base>` / `IDMap2:<base>`: an IDMap around `base` (an existing empty index of
    /// the tenant, or a type string).
    Wrap {
        /// `IDMap2` (reconstruct and replace by id).
        v2: bool,
        /// The wrapped index id or type string.
        base: String,
    },
}

/// FAISSx's binary index names (`BINARY_FLAT`, `BINARY_IVF<nlist>`, `BINARY_HASH<bits>`) and
/// FAISS's binary factory strings (`BFlat`, `BIVF…`, `BHNSW…`, `BHash…`) as a binary factory
/// string; `None` for every other type.
fn binary_factory(t: &str) -> Result<Option<String>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let upper = t.to_ascii_uppercase();
    if let Some(rest) = upper.strip_prefix("BINARY") {
        let f = match rest {
            "_FLAT" | "" => "BFlat".to_string(),
            r if r.strip_prefix("_IVF").is_some_and(digits) => format!("BIVF{}", &r[4..]),
            r if r.strip_prefix("_HASH").is_some_and(digits) => format!("BHash{}", &r[5..]),
            _ => {
                return Err(Error::invalid(format!(
                    "index type {t:?}: binary types are BINARY_FLAT, BINARY_IVF<nlist> and BINARY_HASH<bits>"
                )))
            }
        };
        return Ok(Some(f));
    }
    let factory = ["BFlat", "BIVF", "BHNSW", "BHash"].iter().any(|p| t.starts_with(p));
    Ok(factory.then(|| t.to_string()))
}

/// Translate FAISSx's index type names into FAISS factory strings; anything else is taken as
/// a factory string.
pub fn parse_index_type(t: &str, metric: Option<Metric>) -> Result<TypeSpec> {
    let t = t.trim();
    if let Some(base) = t.strip_prefix("IDMap2:") {
        return Ok(TypeSpec::Wrap { v2: true, base: base.to_string() });
    }
    if let Some(base) = t.strip_prefix("IDMap:") {
        return Ok(TypeSpec::Wrap { v2: false, base: base.to_string() });
    }
    if let Some(factory) = binary_factory(t)? {
        return Ok(TypeSpec::Binary { factory });
    }
    let (t, ip) = match t.strip_suffix("_IP") {
        Some(s) => (s, true),
        None => (t, false),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // The Python client names scalar quantizers by FAISS's QuantizerType number
    // (QT_8bit = 0, QT_fp16 = 4 is sent as 16): map those to factory names.
    let sq = |q: &str| match q {
        "0" => "8".to_string(),
        "16" => "fp16".to_string(),
        _ => q.to_string(),
    };
    let (factory, flat_ip) = match t {
        "" | "L2" | "Flat" | "FLAT" | "flat" => ("Flat".to_string(), false),
        "IP" => ("Flat".to_string(), true),
        "HNSW" => ("HNSW32".to_string(), false),
        // The Python server's defaults: IndexIVFFlat with 100 lists, IndexPQ(d, 8, 8).
        "IVF" => ("IVF100,Flat".to_string(), false),
        "PQ" => ("PQ8x8np".to_string(), false),
        _ => {
            if let Some((tf, base)) = transform_prefix(t) {
                // FAISSx's "<transform>,<FAISSx type>" (PCA4,L2, NORM,L2, OPQ4_8,L2): the
                // transform as FAISS names it, then the base type translated.
                match parse_index_type(base, None)? {
                    TypeSpec::Factory { factory, metric } => (format!("{tf},{factory}"), metric == Metric::Ip),
                    _ => (t.to_string(), false),
                }
            } else if let Some(rest) = t.strip_prefix("IVF") {
                if digits(rest) {
                    (format!("IVF{rest},Flat"), false)
                } else if let Some((n, q)) = rest.split_once("_SQ") {
                    (format!("IVF{n},SQ{}", sq(q)), false)
                } else if ivf_pq(rest) {
                    // What the client sends for IndexIVFPQ(quantizer, d, nlist, M, nbits),
                    // which FAISS builds without polysemous training (the factory string
                    // turns it on: 30 s instead of 0.03 s for 1,000 x 64 with PQ8x8).
                    (format!("{t}np"), false)
                } else {
                    (t.to_string(), false)
                }
            } else if let Some(q) = t.strip_prefix("SQ") {
                (format!("SQ{}", sq(q)), false)
            } else if t.strip_prefix("PQ").is_some_and(|r| {
                let (m, b) = r.split_once('x').unwrap_or((r, "8"));
                digits(m) && digits(b)
            }) {
                // FAISSx's PQ<M>x<b> is the Python server's IndexPQ(d, M, b), without the
                // polysemous training FAISS's factory string turns on (15 s instead of
                // 0.01 s for PQ4x8 on 1,000 x 8): the factory's "np" form.
                (format!("{t}np"), false)
            } else {
                (t.to_string(), false)
            }
        }
    };
    let metric = metric.unwrap_or(if ip || flat_ip { Metric::Ip } else { Metric::L2 });
    Ok(TypeSpec::Factory { factory, metric })
}

/// `IVF<n>,PQ<M>x<b>` (after `IVF`): FAISSx's name for IndexIVFPQ.
fn ivf_pq(rest: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((n, pq)) = rest.split_once(",PQ") else { return false };
    let Some((m, b)) = pq.split_once('x') else { return false };
    digits(n) && digits(m) && digits(b)
}

/// FAISSx's transform names (as its server's `parse_transform_type` reads them) in front of
/// exactly one base type: `(the transform as FAISS's factory names it, the base)`.
fn transform_prefix(t: &str) -> Option<(String, &str)> {
    let (head, base) = t.split_once(',')?;
    if base.contains(',') || base.is_empty() {
        return None;
    }
    if head == "NORM" || head == "L2NORM" {
        return Some(("L2norm".to_string(), base));
    }
    let name_end = head.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(head.len());
    let (name, params) = head.split_at(name_end);
    let params_ok = params.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let faiss = match name {
        "PCA" | "PCAR" | "OPQ" | "RR" | "ITQ" if params_ok => head.to_string(),
        _ => return None,
    };
    Some((faiss, base))
}

/// The request's `metric` / `metric_type` (a name, or FAISS's number: 0 inner product, 1 L2).
pub fn metric_of(m: &Msg) -> Result<Option<Metric>> {
    for key in ["metric", "metric_type"] {
        if let Ok(Some(s)) = m.str(key) {
            return Metric::parse(s).map(Some);
        }
        // Not a string: FAISS's numeric metric types, 0 inner product, 1 L2 (anything else is
        // INVALID_ARGUMENT, naming the field).
        if let Some(i) = m.int(key)? {
            return Ok(Some(if i == 0 { Metric::Ip } else { Metric::L2 }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::ErrorKind;
    use crate::engine::protocol::Value;

    #[test]
    fn faissx_type_names_map_to_factories() {
        let f = |t: &str| match parse_index_type(t, None).unwrap() {
            TypeSpec::Factory { factory, metric } => (factory, metric),
            other => panic!("{other:?}"),
        };
        assert_eq!(f("L2"), ("Flat".into(), Metric::L2));
        assert_eq!(f("IP"), ("Flat".into(), Metric::Ip));
        assert_eq!(f("HNSW16_IP"), ("HNSW16".into(), Metric::Ip));
        assert_eq!(f("IVF8"), ("IVF8,Flat".into(), Metric::L2));
        assert_eq!(f("IVF8_SQ8"), ("IVF8,SQ8".into(), Metric::L2));
        assert_eq!(f("IVF8,PQ4x8"), ("IVF8,PQ4x8np".into(), Metric::L2));
        assert_eq!(f("IVF8,PQ4"), ("IVF8,PQ4".into(), Metric::L2));
        assert_eq!(f("IVF"), ("IVF100,Flat".into(), Metric::L2));
        assert_eq!(f("IVF_IP"), ("IVF100,Flat".into(), Metric::Ip));
        assert_eq!(f("PQ"), ("PQ8x8np".into(), Metric::L2));
        assert_eq!(f("OPQ4_8,L2"), ("OPQ4_8,Flat".into(), Metric::L2));
        assert_eq!(f("PCA4,L2"), ("PCA4,Flat".into(), Metric::L2));
        assert_eq!(f("NORM,L2"), ("L2norm,Flat".into(), Metric::L2));
        assert_eq!(f("L2NORM,IP"), ("L2norm,Flat".into(), Metric::Ip));
        assert_eq!(f("PCA64,IVF16"), ("PCA64,IVF16,Flat".into(), Metric::L2));
        assert_eq!(f("PCA64,HNSW32_IP"), ("PCA64,HNSW32".into(), Metric::Ip));
        assert_eq!(f("PCA64,IVF16,Flat"), ("PCA64,IVF16,Flat".into(), Metric::L2));
        assert_eq!(f("Foo4,L2"), ("Foo4,L2".into(), Metric::L2));
        assert_eq!(f("SQ16"), ("SQfp16".into(), Metric::L2));
        assert_eq!(f("SQ0"), ("SQ8".into(), Metric::L2));
        assert_eq!(f("IVF4_SQ0_IP"), ("IVF4,SQ8".into(), Metric::Ip));
        assert_eq!(f("OPQ16,IVF1024,PQ16"), ("OPQ16,IVF1024,PQ16".into(), Metric::L2));
        assert_eq!(f("PQ4x8"), ("PQ4x8np".into(), Metric::L2));
        assert_eq!(f("PQ4"), ("PQ4np".into(), Metric::L2));
        assert_eq!(f("PQ4x8_IP"), ("PQ4x8np".into(), Metric::Ip));
        assert_eq!(f("PQ4x8np"), ("PQ4x8np".into(), Metric::L2));
        assert_eq!(parse_index_type("IDMap2:base", None).unwrap(), TypeSpec::Wrap { v2: true, base: "base".into() });
        let b = |t: &str| parse_index_type(t, None).unwrap();
        assert_eq!(b("BINARY_FLAT"), TypeSpec::Binary { factory: "BFlat".into() });
        assert_eq!(b("BINARY_IVF16"), TypeSpec::Binary { factory: "BIVF16".into() });
        assert_eq!(b("BINARY_HASH32"), TypeSpec::Binary { factory: "BHash32".into() });
        assert_eq!(b("BHNSW16"), TypeSpec::Binary { factory: "BHNSW16".into() });
        assert_eq!(parse_index_type("BINARY_IVF", None).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn metrics_by_name_or_faiss_number() {
        let m = |v: Value| metric_of(&Msg::from_pairs(vec![("metric_type", v)]));
        assert_eq!(m(Value::from("IP")).unwrap(), Some(Metric::Ip));
        assert_eq!(m(Value::from("l2")).unwrap(), Some(Metric::L2));
        assert_eq!(m(Value::from(0)).unwrap(), Some(Metric::Ip));
        assert_eq!(m(Value::from(1)).unwrap(), Some(Metric::L2));
        assert_eq!(m(Value::from("manhattan")).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(m(Value::Boolean(true)).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(metric_of(&Msg::default()).unwrap(), None);
    }
}
