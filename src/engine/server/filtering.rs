//! Filters and string ids on the server (docs/protocol.md §4).
//!
//! **Filters**: `search`, `search_and_reconstruct`, `range_search` and `hybrid_search` take a
//! `filter` map (and `hybrid_search` FAISSx's `metadata_filter`), in the JSON dialect of
//! [`crate::engine::filter::lang`]. The filter is evaluated over the index's per-vector
//! metadata as an Arrow table ([`MetaTable`]), built from the stored msgpack values by the
//! first filtered search after a change and kept until the next change ([`TableCache`]), and
//! the search runs restricted to the matching ids inside FAISS
//! ([`Index::search_in`](crate::engine::index::Index::search_in)).
//!
//! **String ids**: `add_vectors` takes `ids` as strings; each maps to an int64 FAISS id
//! ([`StringIds`], kept in the index's [`Metadata`]): positions for indices that number
//! vectors themselves (Flat, HNSW, PQ…), fresh ids from 0 up for indices that store ids
//! (IDMap, IVF). An index's ids are all strings or all integers. Replies show the strings.

use super::store::{Metadata, StringIds};
use super::Slot;
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::filter::table::json_to_batch;
use crate::engine::filter::{matching_ids, Filter, MetaTable};
use crate::engine::index::IdSet;
use crate::engine::protocol::json::to_json;
use crate::engine::protocol::{self, type_name, Msg, Value};
use std::sync::{Arc, OnceLock};

/// An index's per-vector metadata as a filterable table, built at most once per version of
/// the metadata (the slot's owner replaces the cache with an empty one on every change). A
/// table that cannot be built (fields whose values cannot share a column type) keeps its
/// error, so each filtered search reports it without rebuilding.
#[derive(Default)]
pub struct TableCache(OnceLock<std::result::Result<Arc<MetaTable>, String>>);

impl TableCache {
    /// The table of `s`'s metadata, building it on first use.
    fn get(&self, s: &Slot) -> Result<Arc<MetaTable>> {
        self.0.get_or_init(|| build_table(s).map(Arc::new).map_err(|e| e.chain())).clone().map_err(Error::invalid)
    }

    /// Whether the table is built (for tests).
    #[cfg(test)]
    pub fn is_built(&self) -> bool {
        self.0.get().is_some()
    }
}

/// One row per stored vector: its metadata map as JSON fields (a value that is not a map, or
/// no value, gives a row with no fields, which matches only negations such as `$ne`,
/// `$nin`, `$exists: false`). Vectors are listed from the index when it can list its ids,
/// else from the metadata (vectors without metadata then have no row and match nothing).
fn build_table(s: &Slot) -> Result<MetaTable> {
    let n = s.index.ntotal();
    let mut ids: Vec<i64> = match s.index.stored_ids(0, n) {
        Ok(ids) if ids.len() == n => ids,
        _ => s.md.vectors.keys().copied().collect(),
    };
    ids.sort_unstable();
    ids.dedup();
    let empty = || serde_json::Value::Object(serde_json::Map::new());
    let rows: Vec<serde_json::Value> = ids
        .iter()
        .map(|i| match s.md.vectors.get(i) {
            Some(v @ Value::Map(_)) => to_json(v),
            _ => empty(),
        })
        .collect();
    let fields = json_to_batch(&rows, "per-vector metadata")?;
    MetaTable::new(fields, ids, None)
}

/// The filter of a search request: `filter`, and for `hybrid_search` also `metadata_filter`
/// (both must match when both are given); absent or nil fields mean none.
///
/// Errors: `InvalidInput` naming the field and the part of the filter at fault.
pub(super) fn filter_of(m: &Msg, hybrid: bool) -> Result<Option<Filter>> {
    let fields: &[&str] = if hybrid { &["filter", "metadata_filter"] } else { &["filter"] };
    let mut parts = Vec::new();
    for &f in fields {
        match m.get(f) {
            None | Some(Value::Nil) => {}
            Some(v @ Value::Map(_)) => {
                // The filter language's messages start "filter…"; name the other field.
                let parsed = Filter::from_json(&to_json(v));
                parts.push(if f == "filter" { parsed? } else { parsed.map_err(|e| e.context(f))? });
            }
            Some(v) => {
                return Err(Error::invalid(format!("field {f:?} must be a map of conditions, got {}", type_name(v))))
            }
        }
    }
    Ok(match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Filter::And(parts)),
    })
}

/// The ids of `s` that `f` matches.
///
/// Errors: `InvalidInput` when the index holds no per-vector metadata, or naming the part of
/// the filter at fault (unknown field, a comparison of the wrong type).
pub(super) fn restriction(s: &Slot, f: &Filter, index_id: &str) -> Result<IdSet> {
    if s.md.vectors.is_empty() {
        return Err(Error::invalid(format!(
            "index {index_id:?} has no per-vector metadata to filter on: add vectors with \"metadata\" (one map per vector)"
        )));
    }
    let t = s.filter_table.get(s)?;
    Ok(IdSet::new(matching_ids(f, &t)?))
}

/// Ids as a reply shows them: integers, or for an index with string ids the strings (nil
/// for -1, FAISS's "no result").
pub(super) fn ids_value(keys: &StringIds, ids: &[i64]) -> Value {
    if keys.is_empty() {
        return protocol::ints_value(ids);
    }
    Value::Array(ids.iter().map(|&i| keys.key_of(i).map_or(Value::Nil, Value::from)).collect())
}

/// Ids as a request gives them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum GivenIds {
    /// Integers (FAISS ids).
    Ints(Vec<i64>),
    /// String ids.
    Keys(Vec<String>),
}

/// The ids in field `key`: an array of strings, or integers as [`Msg::ids`] reads them.
///
/// Errors: `InvalidInput` for an array mixing strings with other values, an empty string, or
/// anything [`Msg::ids`] refuses.
pub(super) fn given_ids(m: &Msg, key: &str) -> Result<Option<GivenIds>> {
    match m.get(key) {
        Some(Value::Array(a)) if a.first().is_some_and(Value::is_str) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                match v.as_str() {
                    Some("") => return Err(Error::invalid(format!("{key}[{i}] is an empty string id"))),
                    Some(s) => out.push(s.to_string()),
                    None => {
                        return Err(Error::invalid(format!(
                            "{key}[{i}] is {}: ids are all strings or all integers",
                            type_name(v)
                        )))
                    }
                }
            }
            Ok(Some(GivenIds::Keys(out)))
        }
        Some(Value::String(s)) => match s.as_str() {
            Some("") | None => Err(Error::invalid(format!("{key} is an empty or invalid string id"))),
            Some(s) => Ok(Some(GivenIds::Keys(vec![s.to_string()]))),
        },
        _ => Ok(m.ids(key)?.map(GivenIds::Ints)),
    }
}

fn wrong_kind(index_id: &str, strings: bool, key: &str) -> Error {
    if strings {
        Error::invalid(format!("index {index_id:?} has string ids: give {key:?} as strings"))
    } else {
        Error::invalid(format!("index {index_id:?} has integer ids: give {key:?} as integers"))
    }
}

/// Ids of existing vectors named in field `key` (`get_metadata`, `remove_ids`): integers as
/// they are for an index with integer ids; strings mapped through the index's string ids
/// (`None` for a string the index does not hold).
///
/// Errors: `InvalidInput` for strings given to an index with integer ids (one holding
/// vectors) or integers given to one with string ids.
pub(super) fn existing_ids(
    md: &Metadata,
    ntotal: usize,
    m: &Msg,
    key: &str,
    index_id: &str,
) -> Result<Option<Vec<Option<i64>>>> {
    Ok(match given_ids(m, key)? {
        None => None,
        Some(GivenIds::Ints(v)) if md.keys.is_empty() => Some(v.into_iter().map(Some).collect()),
        Some(GivenIds::Ints(_)) => return Err(wrong_kind(index_id, true, key)),
        Some(GivenIds::Keys(_)) if md.keys.is_empty() && ntotal > 0 => return Err(wrong_kind(index_id, false, key)),
        Some(GivenIds::Keys(v)) => Some(v.iter().map(|k| md.keys.id_of(k)).collect()),
    })
}

/// The FAISS id of the one vector named in field `key` (`reconstruct`, `replace_vector`): an
/// integer for an index with integer ids, a string id for one with string ids.
///
/// Errors: `InvalidInput` for the wrong kind of id (or none); `NotFound` for a string id the
/// index does not hold.
pub(super) fn one_id(md: &Metadata, m: &Msg, key: &str, index_id: &str) -> Result<Option<i64>> {
    match (m.get(key), md.keys.is_empty()) {
        (None, _) => Ok(None),
        (Some(Value::String(s)), false) => {
            let k = s.as_str().unwrap_or("");
            md.keys
                .id_of(k)
                .map(Some)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("id {k:?} is not in index {index_id:?}")))
        }
        (Some(Value::String(_)), true) => Err(wrong_kind(index_id, false, key)),
        (Some(_), false) => Err(wrong_kind(index_id, true, key)),
        (Some(_), true) => m.int(key),
    }
}

/// What [`ids_to_add`] gives: the ids to hand FAISS (none: positions) and the string ids to
/// record for them.
pub(super) type NewIds = (Option<Vec<i64>>, Option<Vec<String>>);

/// The ids of vectors being added: `(ids for FAISS, string ids to record)`. Integers pass
/// through (refused on an index with string ids); string ids are checked (unique, new) and
/// given FAISS ids: none (positions) when the index numbers its vectors, else fresh ids from
/// [`StringIds::next_id`] up.
///
/// Errors: `InvalidInput` for mixing kinds of ids in one index, duplicate or existing
/// string ids, or no ids for an index with string ids.
pub(super) fn ids_to_add(s: &Slot, given: Option<GivenIds>, index_id: &str) -> Result<NewIds> {
    let keys = &s.md.keys;
    match given {
        None if !keys.is_empty() => {
            Err(Error::invalid(format!("index {index_id:?} has string ids: give \"ids\" (one string per vector)")))
        }
        None => Ok((None, None)),
        Some(GivenIds::Ints(_)) if !keys.is_empty() => Err(wrong_kind(index_id, true, "ids")),
        Some(GivenIds::Ints(v)) => Ok((Some(v), None)),
        Some(GivenIds::Keys(_)) if keys.is_empty() && s.index.ntotal() > 0 => Err(Error::invalid(format!(
            "index {index_id:?} holds vectors with integer ids: the ids of one index are all strings or all integers"
        ))),
        Some(GivenIds::Keys(v)) => {
            let mut seen = std::collections::HashSet::with_capacity(v.len());
            for k in &v {
                if !seen.insert(k.as_str()) {
                    return Err(Error::invalid(format!("id {k:?} is given twice (ids are unique)")));
                }
                if keys.id_of(k).is_some() {
                    return Err(Error::invalid(format!("id {k:?} is already in index {index_id:?}")));
                }
            }
            let faiss_ids = if s.index.takes_ids()? {
                let next = keys.next_id();
                Some((0..v.len() as i64).map(|i| next + i).collect())
            } else {
                None
            };
            Ok((faiss_ids, Some(v)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::{Index, IndexSpec, Metric};

    fn slot(md: Vec<Value>) -> Slot {
        let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 2 }, false).unwrap();
        let x: Vec<f32> = (0..md.len() * 2).map(|i| i as f32).collect();
        ix.add(&crate::engine::index::Rows::Float(x), None).unwrap();
        let mut m = Metadata::default();
        for (i, v) in md.into_iter().enumerate() {
            m.vectors.insert(i as i64, v);
        }
        Slot::new(ix, m, None)
    }

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
    }

    #[test]
    fn filters_match_and_the_table_is_cached() {
        let s = slot(vec![
            map(&[("cat", Value::from("A")), ("year", Value::from(2020))]),
            map(&[("cat", Value::from("B")), ("year", Value::from(2021))]),
            Value::from(7), // not a map: no fields
            map(&[("cat", Value::from("A")), ("year", Value::from(2022))]),
        ]);
        let m = Msg::default().with("metadata_filter", map(&[("cat", Value::from("A"))]));
        assert_eq!(filter_of(&m, false).unwrap(), None, "metadata_filter is hybrid_search's only");
        let f = filter_of(&m, true).unwrap().unwrap();
        assert!(!s.filter_table.is_built());
        assert_eq!(restriction(&s, &f, "x").unwrap().as_slice(), &[0, 3]);
        assert!(s.filter_table.is_built());
        let ne = Filter::parse(r#"{"cat": {"$ne": "A"}}"#).unwrap();
        assert_eq!(restriction(&s, &ne, "x").unwrap().as_slice(), &[1, 2]);
        let unknown = Filter::parse(r#"{"colour": "red"}"#).unwrap();
        assert_eq!(restriction(&s, &unknown, "x").unwrap_err().kind(), ErrorKind::InvalidInput);
        let bad = Msg::default().with("filter", map(&[("year", map(&[("$bogus", Value::from(1))]))]));
        let e = filter_of(&bad, false).unwrap_err();
        assert!(e.message().starts_with("filter at year.$bogus: unknown operator"), "{}", e.message());
        let bad = Msg::default().with("metadata_filter", map(&[("year", map(&[("$bogus", Value::from(1))]))]));
        assert!(filter_of(&bad, true).unwrap_err().message().starts_with("metadata_filter: filter at year.$bogus"));
        let none = slot(vec![]);
        assert!(restriction(&none, &f, "x").unwrap_err().message().contains("no per-vector metadata"));
    }

    #[test]
    fn string_ids_are_checked_and_numbered() {
        let mut s = slot(vec![]);
        let keys = |v: &[&str]| Some(GivenIds::Keys(v.iter().map(|s| s.to_string()).collect()));
        // Flat numbers its vectors: no FAISS ids, positions.
        assert_eq!(ids_to_add(&s, keys(&["a", "b"]), "x").unwrap(), (None, Some(vec!["a".into(), "b".into()])));
        assert!(ids_to_add(&s, keys(&["a", "a"]), "x").unwrap_err().message().contains("twice"));
        s.md.keys.insert(0, "a".into());
        assert!(ids_to_add(&s, keys(&["a"]), "x").unwrap_err().message().contains("already"));
        assert!(ids_to_add(&s, Some(GivenIds::Ints(vec![1])), "x").unwrap_err().message().contains("string ids"));
        assert!(ids_to_add(&s, None, "x").is_err());
        let m = Msg::default().with("ids", Value::Array(vec![Value::from("a"), Value::from(1)]));
        assert!(given_ids(&m, "ids").unwrap_err().message().contains("ids[1]"));
        let m = Msg::default().with("ids", Value::Array(vec![Value::from("a"), Value::from("zz")]));
        assert_eq!(existing_ids(&s.md, 1, &m, "ids", "x").unwrap(), Some(vec![Some(0), None]));
        assert_eq!(ids_value(&s.md.keys, &[0, -1]), Value::Array(vec![Value::from("a"), Value::Nil]));
    }
}
