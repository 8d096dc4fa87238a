//! New rows: reading metadata inputs (JSON Lines, Parquet, CSV/TSV) and resolving the ids and
//! metadata of vectors being added against the index they go into ([`plan_add`]): which ids
//! FAISS gets, and the index's metadata table afterwards. `build` and `add` both go through
//! here, so the rules (one metadata row per vector, string ids never mixed with integer ids,
//! no duplicate string ids) hold the same way for both.

use super::table::{check_new_keys, json_to_batch, read_jsonl, read_parquet, MetaTable, UserIds};
use crate::engine::error::{Error, Result};
use crate::engine::index::{IdMode, Index};
use arrow_array::RecordBatch;
use serde_json::{Map, Value};
use std::path::Path;

/// Metadata file formats, by extension.
const FORMATS: &str = ".jsonl/.ndjson/.json (JSON Lines), .parquet/.pq, .csv/.tsv (with a header line)";

/// Read the metadata rows in `path`, one per vector in file order, keeping `columns` only
/// (all when `None`). JSON Lines rows keep nested objects and arrays; CSV/TSV cells become
/// numbers, booleans or strings ([`csv_cell`]), empty cells missing.
///
/// Errors: `InvalidInput` for an unknown extension or a missing column; `Format` naming the
/// file and line for malformed input.
pub fn read_metadata(path: &Path, columns: Option<&[String]>) -> Result<RecordBatch> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let what = path.display().to_string();
    match ext.as_str() {
        "jsonl" | "ndjson" | "json" => {
            let rows = read_jsonl(path)?;
            let rows = match columns {
                None => rows,
                Some(cols) => rows.into_iter().map(|r| Value::Object(keep(r, cols))).collect(),
            };
            json_to_batch(&rows, &what)
        }
        "parquet" | "pq" => read_parquet(path, columns),
        "csv" | "tsv" => {
            let delim = if ext == "tsv" { b'\t' } else { b',' };
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(delim)
                .from_path(path)
                .map_err(|e| Error::format(path, e.to_string()))?;
            let names: Vec<String> = rdr
                .headers()
                .map_err(|e| Error::format(path, format!("line 1: {e}")))?
                .iter()
                .map(str::to_string)
                .collect();
            let pick: Vec<usize> = match columns {
                None => (0..names.len()).collect(),
                Some(cols) => cols
                    .iter()
                    .map(|c| {
                        names.iter().position(|n| n == c).ok_or_else(|| {
                            Error::invalid(format!(
                                "{}: no column {c:?} (columns: {})",
                                path.display(),
                                names.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            let mut rows = Vec::new();
            for (i, rec) in rdr.records().enumerate() {
                let rec = rec.map_err(|e| Error::format(path, format!("line {}: {e}", i + 2)))?;
                rows.push(cells_to_row(pick.iter().map(|&c| (names[c].as_str(), rec.get(c).unwrap_or("")))));
            }
            json_to_batch(&rows, &what)
        }
        _ => Err(Error::invalid(format!("{}: unknown metadata format (use {FORMATS})", path.display()))),
    }
}

fn keep(row: Value, cols: &[String]) -> Map<String, Value> {
    match row {
        Value::Object(m) => m.into_iter().filter(|(k, _)| cols.iter().any(|c| c == k)).collect(),
        _ => Map::new(),
    }
}

/// A CSV cell as a JSON value: an integer, a number, `true`/`false`, or a string; `None` for
/// an empty cell (the field is missing in that row).
pub fn csv_cell(s: &str) -> Option<Value> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            return Some(Value::from(f));
        }
    }
    Some(match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(s.to_string()),
    })
}

/// One row of named CSV cells as a JSON object (empty cells left out).
pub fn cells_to_row<'a>(cells: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Object(cells.filter_map(|(k, v)| csv_cell(v).map(|v| (k.to_string(), v))).collect())
}

/// What an add gives FAISS, and the index's metadata table after it.
#[derive(Debug)]
pub struct Additions {
    /// Ids to hand FAISS with the vectors (`None`: FAISS numbers them by position).
    pub faiss_ids: Option<Vec<i64>>,
    /// The index's whole metadata table after the add (`None`: the index has none).
    pub table: Option<MetaTable>,
}

/// Resolve `n` new vectors' `ids` and metadata `fields` (one row per vector) against `index`
/// and its current metadata table `existing`. String ids get the FAISS ids `ntotal..ntotal+n`
/// (positions, so the index needs no id map); integer ids are FAISS ids as before. `what`
/// names the input in errors: `what.ids` where the ids came from, `what.rows` the metadata.
///
/// Errors: `InvalidInput` when the counts differ from `n`, string ids are duplicated or already
/// in the index, string and integer ids would be mixed in one index, an index with string ids
/// is given vectors without ids, or a metadata field changes type.
pub fn plan_add(
    index: &Index,
    existing: Option<&MetaTable>,
    n: usize,
    ids: Option<UserIds>,
    fields: Option<RecordBatch>,
    what: &Sources,
) -> Result<Additions> {
    // Metadata given for the first time to an index that already holds vectors: those get
    // empty rows, so that they match the negations (`$ne`, `$exists: false`) as a vector
    // with the fields missing should.
    let earlier;
    let existing = match existing {
        None if index.ntotal() > 0 && fields.is_some() => {
            let ids = index.stored_ids(0, index.ntotal())?;
            let empty = json_to_batch(&vec![Value::Object(Map::new()); ids.len()], &what.rows)?;
            earlier = MetaTable::new(empty, ids, None)?;
            Some(&earlier)
        }
        other => other,
    };
    let target = Target {
        ntotal: index.ntotal() as i64,
        requires_ids: index.requires_ids()?,
        takes_ids: index.takes_ids()?,
        integer_ids: index.meta().ids == IdMode::Explicit,
    };
    plan(target, existing, n, ids, fields, what)
}

/// [`plan_add`] for a new index built from the factory string `factory` (an `IDMap` factory
/// is given ids even when they are strings' positions).
///
/// Errors: as [`plan_add`].
pub fn plan_build(
    factory: &str,
    n: usize,
    ids: Option<UserIds>,
    fields: Option<RecordBatch>,
    what: &Sources,
) -> Result<Additions> {
    let idmap = factory.trim_start().starts_with("IDMap");
    let target = Target { ntotal: 0, requires_ids: idmap, takes_ids: idmap, integer_ids: false };
    plan(target, None, n, ids, fields, what)
}

/// What [`plan`] needs to know of the index vectors go into.
struct Target {
    ntotal: i64,
    requires_ids: bool,
    /// IDMap or IVF: FAISS keeps the ids it is given.
    takes_ids: bool,
    integer_ids: bool,
}

/// Where new vectors' ids and metadata came from, for errors.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The ids file (or the vector file of a CSV id column).
    pub ids: String,
    /// The metadata file (or the vector file of CSV metadata columns).
    pub rows: String,
}

impl Sources {
    /// Both from one place.
    pub fn one(what: &str) -> Sources {
        Sources { ids: what.to_string(), rows: what.to_string() }
    }
}

fn plan(
    target: Target,
    existing: Option<&MetaTable>,
    n: usize,
    ids: Option<UserIds>,
    fields: Option<RecordBatch>,
    sources: &Sources,
) -> Result<Additions> {
    let what = sources.ids.as_str();
    if let Some(ids) = &ids {
        if ids.len() != n {
            return Err(Error::invalid(format!(
                "{what}: {} ids for {n} vectors: give exactly one id per vector",
                ids.len()
            )));
        }
    }
    if let Some(f) = &fields {
        if f.num_rows() != n {
            return Err(Error::invalid(format!(
                "{}: {} metadata rows for {n} vectors: give one per vector, in the same order",
                sources.rows,
                f.num_rows()
            )));
        }
    }
    let has_keys = existing.is_some_and(MetaTable::has_keys);
    let ntotal = target.ntotal;
    let (faiss_ids, row_ids, keys) = match ids {
        Some(UserIds::Keys(keys)) => {
            if !has_keys && (target.integer_ids || ntotal > 0) {
                return Err(Error::invalid(format!(
                    "{what}: string ids for an index whose ids are integers (one index has one kind of id)"
                )));
            }
            check_new_keys(&keys, existing, what)?;
            let base = existing.map_or(ntotal, |t| t.next_id().max(ntotal));
            if base != ntotal && !target.takes_ids {
                return Err(Error::invalid(format!(
                    "{what}: the index holds {ntotal} vectors but its string ids reach {base}: it was changed outside faissx"
                )));
            }
            let ids: Vec<i64> = (base..base + n as i64).collect();
            // Positions are the ids unless the index keeps ids of its own (a shard of a split
            // keeps the whole index's ids, so its next id is past its ntotal).
            let faiss = if target.requires_ids || base != ntotal { Some(ids.clone()) } else { None };
            (faiss, ids, Some(keys))
        }
        Some(UserIds::Ints(v)) => {
            if has_keys {
                return Err(Error::invalid(format!(
                    "{what}: integer ids for an index whose ids are strings (one index has one kind of id)"
                )));
            }
            (Some(v.clone()), v, None)
        }
        None => {
            if has_keys {
                return Err(Error::invalid(format!(
                    "{what}: the index's ids are strings: give the new vectors' ids (--ids)"
                )));
            }
            (None, (ntotal..ntotal + n as i64).collect(), None)
        }
    };
    if fields.is_none() && keys.is_none() && existing.is_none() {
        return Ok(Additions { faiss_ids, table: None });
    }
    let what = sources.rows.as_str();
    let fields = match fields {
        Some(f) => f,
        None => json_to_batch(&vec![Value::Object(Map::new()); n], what)?,
    };
    let new = MetaTable::new(fields, row_ids, keys).map_err(|e| e.context(what))?;
    let table = match existing {
        Some(t) => t.append(&new).map_err(|e| e.context(what))?,
        None => new,
    };
    Ok(Additions { faiss_ids, table: Some(table) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::{IndexSpec, Metric};
    use serde_json::json;

    fn flat() -> Index {
        Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 2 }, false).unwrap()
    }

    #[test]
    fn csv_cells_get_json_types() {
        assert_eq!(csv_cell("12"), Some(json!(12)));
        assert_eq!(csv_cell("1.5"), Some(json!(1.5)));
        assert_eq!(csv_cell("true"), Some(json!(true)));
        assert_eq!(csv_cell("en"), Some(json!("en")));
        assert_eq!(csv_cell(" "), None);
        assert_eq!(csv_cell("nan"), Some(json!("nan")));
    }

    #[test]
    fn string_ids_are_positions_and_never_mix_with_integers() {
        let ix = flat();
        let a = plan_add(&ix, None, 2, Some(UserIds::Keys(vec!["a".into(), "b".into()])), None, &Sources::one("x"))
            .unwrap();
        assert_eq!(a.faiss_ids, None, "a Flat index numbers by position");
        let t = a.table.unwrap();
        assert_eq!((t.id_of_key("a"), t.id_of_key("b")), (Some(0), Some(1)));
        let e = plan_add(&ix, Some(&t), 1, Some(UserIds::Ints(vec![5])), None, &Sources::one("more.txt")).unwrap_err();
        assert!(e.to_string().contains("more.txt: integer ids for an index whose ids are strings"), "{e}");
        let e = plan_add(&ix, Some(&t), 1, None, None, &Sources::one("more.npy")).unwrap_err();
        assert!(e.to_string().contains("give the new vectors' ids"), "{e}");
        let e =
            plan_add(&ix, Some(&t), 1, Some(UserIds::Keys(vec!["a".into()])), None, &Sources::one("m")).unwrap_err();
        assert!(e.to_string().contains("already in the index"), "{e}");
        let e = plan_add(&ix, None, 3, Some(UserIds::Keys(vec!["a".into()])), None, &Sources::one("m")).unwrap_err();
        assert!(e.to_string().contains("1 ids for 3 vectors"), "{e}");
    }

    #[test]
    fn earlier_vectors_get_empty_rows_when_metadata_arrives_later() {
        let mut ix = flat();
        ix.add(&[0.0f32, 0.0, 1.0, 1.0], None).unwrap();
        let rows = json_to_batch(&[json!({"a": 1})], "m").unwrap();
        let t = plan_add(&ix, None, 1, None, Some(rows), &Sources::one("m")).unwrap().table.unwrap();
        assert_eq!(t.len(), 3);
        let ne = crate::engine::filter::Filter::parse(r#"{"a": {"$ne": 1}}"#).unwrap();
        assert_eq!(crate::engine::filter::matching_ids(&ne, &t).unwrap(), vec![0, 1]);
        let e =
            plan_add(&ix, None, 1, Some(UserIds::Keys(vec!["k".into()])), None, &Sources::one("ids.txt")).unwrap_err();
        assert!(e.to_string().contains("string ids for an index whose ids are integers"), "{e}");
    }

    #[test]
    fn metadata_rows_must_match_vectors() {
        let ix = flat();
        let rows = json_to_batch(&[json!({"a": 1})], "m").unwrap();
        let e = plan_add(&ix, None, 2, None, Some(rows.clone()), &Sources::one("docs.jsonl")).unwrap_err();
        assert!(e.to_string().contains("docs.jsonl: 1 metadata rows for 2 vectors"), "{e}");
        let a = plan_add(&ix, None, 1, None, Some(rows), &Sources::one("docs.jsonl")).unwrap();
        assert_eq!(a.table.unwrap().rows_json(&[0]).unwrap(), vec![json!({"a": 1})]);
        assert!(plan_add(&ix, None, 1, None, None, &Sources::one("x")).unwrap().table.is_none());
    }
}
