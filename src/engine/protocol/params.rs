//! Search parameters on the wire: the one mapping between [`SearchParams`] and a request's
//! fields. The client encodes with [`search_fields`], the server decodes with
//! [`search_params`]; no other code names these fields.
//!
//! A search request carries `k` at the top level and the per-search knobs in a `params` map
//! (FAISSx's form): `nprobe` for IVF indices and `efSearch` for HNSW ones, which the server
//! also accepts as `ef_search` or `ef`.

use super::{Msg, Value};
use crate::engine::error::Result;
use crate::engine::index::SearchParams;

/// Field of a search request holding `k`, the neighbours per query.
pub const K: &str = "k";

/// Field of a search request holding the map of search knobs.
pub const PARAMS: &str = "params";

/// Knob (inside [`PARAMS`]) for IVF: inverted lists probed per query.
pub const NPROBE: &str = "nprobe";

/// Knob (inside [`PARAMS`]) for HNSW: the candidate list size. The spelling clients send.
pub const EF_SEARCH: &str = "efSearch";

/// Every spelling of [`EF_SEARCH`] the server accepts, in the order it reads them (when a
/// request gives several, the last one present wins).
pub const EF_SEARCH_ALIASES: [&str; 3] = [EF_SEARCH, "ef_search", "ef"];

/// The request fields for `p`: `k`, plus a `params` map with `nprobe` / `efSearch` when
/// either is set (an absent knob keeps the index's own setting).
pub fn search_fields(p: &SearchParams) -> Vec<(&'static str, Value)> {
    let mut f = vec![(K, Value::from(p.k as u64))];
    let mut knobs = Vec::new();
    if let Some(n) = p.nprobe {
        knobs.push((NPROBE, Value::from(n as u64)));
    }
    if let Some(e) = p.ef_search {
        knobs.push((EF_SEARCH, Value::from(e as u64)));
    }
    if !knobs.is_empty() {
        f.push((PARAMS, Msg::from_pairs(knobs).into_value()));
    }
    f
}

/// The search parameters of request `m` for `k` neighbours (already read and checked by the
/// caller): `nprobe` and `efSearch` (or `ef_search`, `ef`) from its `params` map. `check`
/// turns each knob's value into the one used, under the knob's canonical name
/// ([`NPROBE`] or [`EF_SEARCH`]), refusing values out of the server's range.
///
/// Errors: `InvalidInput` when `params` is not a map, a knob is not a non-negative integer,
/// or `check` refuses it.
pub fn search_params(m: &Msg, k: usize, check: impl Fn(&str, u64) -> Result<usize>) -> Result<SearchParams> {
    let mut p = SearchParams { k, nprobe: None, ef_search: None };
    if let Some(params) = m.map(PARAMS)? {
        if let Some(v) = params.uint(NPROBE)? {
            p.nprobe = Some(check(NPROBE, v)?);
        }
        for key in EF_SEARCH_ALIASES {
            if let Some(v) = params.uint(key)? {
                p.ef_search = Some(check(EF_SEARCH, v)?);
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::{Error, ErrorKind};

    fn any(_: &str, v: u64) -> Result<usize> {
        Ok(v as usize)
    }

    fn request(p: &SearchParams) -> Msg {
        Msg::decode(&super::super::encode_request("search", search_fields(p))).unwrap()
    }

    #[test]
    fn round_trip() {
        for p in [
            SearchParams { k: 7, nprobe: None, ef_search: None },
            SearchParams { k: 1, nprobe: Some(16), ef_search: None },
            SearchParams { k: 3, nprobe: None, ef_search: Some(64) },
            SearchParams { k: 10, nprobe: Some(2), ef_search: Some(32) },
        ] {
            let m = request(&p);
            assert_eq!(m.uint(K).unwrap(), Some(p.k as u64));
            assert_eq!(m.has(PARAMS), p.nprobe.is_some() || p.ef_search.is_some());
            assert_eq!(search_params(&m, p.k, any).unwrap(), p);
        }
    }

    #[test]
    fn aliases_and_limits() {
        let with = |pairs: Vec<(&str, Value)>| Msg::from_pairs(vec![(PARAMS, Msg::from_pairs(pairs).into_value())]);
        for key in ["efSearch", "ef_search", "ef"] {
            let p = search_params(&with(vec![(key, Value::from(40))]), 5, any).unwrap();
            assert_eq!(p, SearchParams { k: 5, nprobe: None, ef_search: Some(40) }, "{key}");
        }
        // Several spellings: the last of EF_SEARCH_ALIASES present wins.
        let m = with(vec![("ef", Value::from(9)), ("efSearch", Value::from(8))]);
        assert_eq!(search_params(&m, 1, any).unwrap().ef_search, Some(9));
        // The check sees canonical names and its refusals are the caller's errors.
        let limit = |name: &str, v: u64| -> Result<usize> {
            assert!(name == NPROBE || name == EF_SEARCH, "{name}");
            if v > 100 {
                return Err(Error::invalid(format!("{name}={v} is out of range")));
            }
            Ok(v as usize)
        };
        let e = search_params(&with(vec![("ef_search", Value::from(101))]), 1, limit).unwrap_err();
        assert!(e.to_string().contains("efSearch=101"), "{e}");
        let e = search_params(&with(vec![("nprobe", Value::from("x"))]), 1, limit).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = search_params(&Msg::from_pairs(vec![(PARAMS, Value::from(3))]), 1, limit).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // No params map: the index's own settings.
        assert_eq!(search_params(&Msg::default(), 4, limit).unwrap(), SearchParams { k: 4, ..Default::default() });
    }
}
