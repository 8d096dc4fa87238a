//! Evaluating a [`Filter`] over a [`MetaTable`]: each condition is one Arrow compute kernel
//! over a whole column (`arrow_ord::cmp` against a scalar; dictionary columns compare their
//! dictionary once), combined with Arrow's boolean kernels, giving one mask over the rows;
//! the FAISS ids of the rows set in it are what the search is restricted to.
//!
//! Semantics (MongoDB's): a missing or null field fails every comparison, so it matches the
//! negations (`$ne`, `$nin`, `$not`); a list field matches when any element does; a dotted path
//! descends into struct columns (and through lists of structs, any element). Fields and types
//! are checked against the table's columns before anything runs: an unknown field, or a number
//! compared with a string column, is an error naming the part of the filter at fault.

use super::lang::{CmpOp, Filter, Lit};
use super::table::{type_name, MetaTable};
use crate::engine::error::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, Datum, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_buffer::{BooleanBuffer, OffsetBuffer};
use arrow_schema::DataType;

/// The FAISS ids of the rows `filter` matches, ascending by row.
///
/// Errors: `InvalidInput` naming the part of the filter at fault (unknown field, a comparison
/// of the wrong type for the column, a path into a field that is not an object).
pub fn matching_ids(filter: &Filter, table: &MetaTable) -> Result<Vec<i64>> {
    let mask = mask(filter, table)?;
    let ids = table.ids().values();
    Ok(mask.values().set_indices().map(|r| ids[r]).collect())
}

/// The rows `filter` matches, as a mask with no nulls (one entry per row).
///
/// Errors: as [`matching_ids`].
pub fn mask(filter: &Filter, table: &MetaTable) -> Result<BooleanArray> {
    eval(filter, table.batch())
}

fn all(n: usize, v: bool) -> BooleanArray {
    BooleanArray::new(if v { BooleanBuffer::new_set(n) } else { BooleanBuffer::new_unset(n) }, None)
}

/// Nulls become false.
fn definite(b: BooleanArray) -> BooleanArray {
    match b.nulls() {
        None => b,
        Some(n) => BooleanArray::new(b.values() & n.inner(), None),
    }
}

fn kernel_err(at: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("filter at {at}: {e}"))
}

fn eval(f: &Filter, b: &RecordBatch) -> Result<BooleanArray> {
    let n = b.num_rows();
    Ok(match f {
        Filter::And(v) => {
            let mut acc = all(n, true);
            for c in v {
                acc = BooleanArray::new(acc.values() & eval(c, b)?.values(), None);
            }
            acc
        }
        Filter::Or(v) => {
            let mut acc = all(n, false);
            for c in v {
                acc = BooleanArray::new(acc.values() | eval(c, b)?.values(), None);
            }
            acc
        }
        Filter::Not(c) => BooleanArray::new(!eval(c, b)?.values(), None),
        Filter::Cmp { path, value: Lit::Null, at, .. } => {
            // `{"f": null}`: f is missing or null (a missing parent object included).
            leaf(b, path, at, Some(true), &|arr: &ArrayRef, _: &str| {
                Ok(BooleanArray::new(
                    arr.logical_nulls().map_or_else(|| BooleanBuffer::new_unset(arr.len()), |n| !n.inner()),
                    None,
                ))
            })?
        }
        Filter::Cmp { path, op, value, at } => {
            leaf(b, path, at, None, &|arr: &ArrayRef, field: &str| compare(arr, *op, value, at, field))?
        }
        Filter::In { path, values, at } => leaf(b, path, at, None, &|arr: &ArrayRef, field: &str| {
            if let Some(d) = arr.as_any_dictionary_opt() {
                // Each distinct value is tested once; the rows follow their keys.
                let hit = {
                    let vals = d.values();
                    let mut acc = all(vals.len(), false);
                    for v in values {
                        acc = BooleanArray::new(acc.values() | compare(vals, CmpOp::Eq, v, at, field)?.values(), None);
                    }
                    acc
                };
                let keys = d.normalized_keys();
                let nulls = arr.logical_nulls();
                let out: BooleanBuffer = keys
                    .iter()
                    .enumerate()
                    .map(|(r, &k)| nulls.as_ref().is_none_or(|n| n.is_valid(r)) && hit.value(k))
                    .collect();
                return Ok(BooleanArray::new(out, None));
            }
            let mut acc = all(arr.len(), false);
            for v in values {
                acc = BooleanArray::new(acc.values() | compare(arr, CmpOp::Eq, v, at, field)?.values(), None);
            }
            Ok(acc)
        })?,
        Filter::Exists { path, exists, at } => {
            let m = leaf(b, path, at, Some(false), &|arr: &ArrayRef, _: &str| {
                Ok(BooleanArray::new(
                    arr.logical_nulls().map_or_else(|| BooleanBuffer::new_set(arr.len()), |nb| nb.inner().clone()),
                    None,
                ))
            })?;
            if *exists {
                m
            } else {
                BooleanArray::new(!m.values(), None)
            }
        }
    })
}

type Pred<'a> = dyn Fn(&ArrayRef, &str) -> Result<BooleanArray> + 'a;

/// Apply `pred` to the column at `path`, one result per row of the batch. With `whole`
/// (`Some(v)`), `pred` sees the field itself whatever its type (lists are not searched
/// element by element) and a row whose parent object is missing gets `v`.
fn leaf(b: &RecordBatch, path: &[String], at: &str, whole: Option<bool>, pred: &Pred) -> Result<BooleanArray> {
    let col = b.column_by_name(&path[0]).ok_or_else(|| {
        let names: Vec<&str> =
            b.schema_ref().fields().iter().map(|f| f.name().as_str()).filter(|n| !n.starts_with("faissx:")).collect();
        Error::invalid(format!(
            "filter at {at}: no field {:?} in the metadata (fields: {})",
            path[0],
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
    })?;
    resolve(col, &path[1..], &path[0], at, whole, pred)
}

fn resolve(
    arr: &ArrayRef,
    rest: &[String],
    name: &str,
    at: &str,
    whole: Option<bool>,
    pred: &Pred,
) -> Result<BooleanArray> {
    if rest.is_empty() && whole.is_some() {
        return Ok(definite(pred(arr, name)?));
    }
    match arr.data_type() {
        DataType::List(_) => {
            let l = arr.as_list::<i32>();
            let inner = resolve(l.values(), rest, name, at, whole, pred)?;
            Ok(any_by(l.offsets(), l.nulls(), &inner))
        }
        DataType::LargeList(_) => {
            let l = arr.as_list::<i64>();
            let inner = resolve(l.values(), rest, name, at, whole, pred)?;
            let offsets: Vec<i32> = l.offsets().iter().map(|&o| o as i32).collect();
            Ok(any_by(&OffsetBuffer::new(offsets.into()), l.nulls(), &inner))
        }
        DataType::Struct(_) if !rest.is_empty() => {
            let s = arr.as_struct();
            let child = s.column_by_name(&rest[0]).ok_or_else(|| {
                Error::invalid(format!(
                    "filter at {at}: no field {:?} in {name} (fields: {})",
                    rest[0],
                    s.column_names().join(", ")
                ))
            })?;
            let m = resolve(child, &rest[1..], &format!("{name}.{}", rest[0]), at, whole, pred)?;
            Ok(match s.nulls() {
                None => m,
                // Rows whose object is missing: false, or `whole`'s value for them.
                Some(n) if whole == Some(true) => BooleanArray::new(m.values() | &!n.inner(), None),
                Some(n) => BooleanArray::new(m.values() & n.inner(), None),
            })
        }
        t if !rest.is_empty() => Err(Error::invalid(format!(
            "filter at {at}: field {name:?} is {}, not an object, so it has no field {:?}",
            type_name(t),
            rest[0]
        ))),
        _ => Ok(definite(pred(arr, name)?)),
    }
}

/// Per list row: whether any of its elements is set in `inner` (null and empty lists: false).
fn any_by(offsets: &OffsetBuffer<i32>, nulls: Option<&arrow_buffer::NullBuffer>, inner: &BooleanArray) -> BooleanArray {
    let vals = inner.values();
    let out: BooleanBuffer = offsets
        .windows(2)
        .enumerate()
        .map(|(r, w)| nulls.is_none_or(|n| n.is_valid(r)) && (w[0] as usize..w[1] as usize).any(|i| vals.value(i)))
        .collect();
    BooleanArray::new(out, None)
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

/// `arr <op> lit` for one column of scalars.
fn compare(arr: &ArrayRef, op: CmpOp, lit: &Lit, at: &str, field: &str) -> Result<BooleanArray> {
    let t = arr.data_type();
    if let Lit::Null = lit {
        // `{"x": null}`: the field is missing or null.
        return Ok(BooleanArray::new(
            arr.logical_nulls().map_or_else(|| BooleanBuffer::new_unset(arr.len()), |n| !n.inner()),
            None,
        ));
    }
    if *t == DataType::Null {
        return Ok(all(arr.len(), false));
    }
    let mismatch = || {
        Error::invalid(format!("filter at {at}: field {field:?} holds {} values, not {}s", type_name(t), lit.kind()))
    };
    let cast = |to: &DataType| arrow_cast::cast(arr, to).map_err(|e| kernel_err(at, e));
    let (left, right): (ArrayRef, Box<dyn Datum>) = match lit {
        Lit::Int(v) if t.is_integer() => (cast(&DataType::Int64)?, Box::new(Int64Array::new_scalar(*v))),
        Lit::Int(v) if is_numeric(t) => (cast(&DataType::Float64)?, Box::new(Float64Array::new_scalar(*v as f64))),
        Lit::Float(v) if is_numeric(t) => (cast(&DataType::Float64)?, Box::new(Float64Array::new_scalar(*v))),
        Lit::Str(s) if is_string(t) => {
            let left = match t {
                DataType::Utf8 | DataType::Dictionary(_, _) => arr.clone(),
                _ => cast(&DataType::Utf8)?,
            };
            (left, Box::new(StringArray::new_scalar(s.as_str())))
        }
        Lit::Bool(v) if *t == DataType::Boolean => (arr.clone(), Box::new(BooleanArray::new_scalar(*v))),
        _ => return Err(mismatch()),
    };
    let l: &dyn Datum = &left;
    let r = right.as_ref();
    let res = match op {
        CmpOp::Eq => arrow_ord::cmp::eq(l, r),
        CmpOp::Gt => arrow_ord::cmp::gt(l, r),
        CmpOp::Gte => arrow_ord::cmp::gt_eq(l, r),
        CmpOp::Lt => arrow_ord::cmp::lt(l, r),
        CmpOp::Lte => arrow_ord::cmp::lt_eq(l, r),
    };
    res.map_err(|e| kernel_err(at, e))
}

#[cfg(test)]
mod tests {
    use super::super::table::json_to_batch;
    use super::*;
    use serde_json::{json, Value};

    fn rows() -> Vec<Value> {
        vec![
            json!({"lang": "en", "year": 2019, "tags": ["rust", "faiss"], "author": {"name": "ann", "age": 30}, "score": 0.5}),
            json!({"lang": "fr", "year": 2021, "tags": ["python"], "author": {"name": "bob"}}),
            json!({"lang": "en", "year": 2023, "tags": [], "draft": true}),
            json!({"year": 2020.5, "author": null, "score": 2}),
            json!({"lang": "de", "tags": ["faiss"], "draft": false}),
        ]
    }

    fn ids(filter: &str) -> Vec<i64> {
        let r = rows();
        let t = MetaTable::new(json_to_batch(&r, "t").unwrap(), (0..r.len() as i64).map(|i| i * 10).collect(), None)
            .unwrap();
        matching_ids(&Filter::parse(filter).unwrap(), &t).unwrap()
    }

    fn err(filter: &str) -> String {
        let r = rows();
        let t = MetaTable::new(json_to_batch(&r, "t").unwrap(), (0..r.len() as i64).collect(), None).unwrap();
        matching_ids(&Filter::parse(filter).unwrap(), &t).unwrap_err().to_string()
    }

    #[test]
    fn operators_follow_mongodb() {
        assert_eq!(ids(r#"{"lang": "en"}"#), [0, 20]);
        assert_eq!(ids(r#"{"lang": {"$ne": "en"}}"#), [10, 30, 40], "$ne matches a missing field");
        assert_eq!(ids(r#"{"year": {"$gte": 2020}}"#), [10, 20, 30]);
        assert_eq!(ids(r#"{"year": {"$gt": 2020, "$lt": 2023}}"#), [10, 30]);
        assert_eq!(ids(r#"{"year": {"$lte": 2020.5}}"#), [0, 30]);
        assert_eq!(ids(r#"{"tags": "faiss"}"#), [0, 40], "a list matches when any element does");
        assert_eq!(ids(r#"{"tags": {"$in": ["python", "rust"]}}"#), [0, 10]);
        assert_eq!(ids(r#"{"tags": {"$nin": ["faiss"]}}"#), [10, 20, 30]);
        assert_eq!(ids(r#"{"tags": {"$exists": true}}"#), [0, 10, 20, 40], "an empty list exists");
        assert_eq!(ids(r#"{"draft": {"$exists": false}}"#), [0, 10, 30]);
        assert_eq!(ids(r#"{"draft": true}"#), [20]);
        assert_eq!(ids(r#"{"author.name": "bob"}"#), [10]);
        assert_eq!(ids(r#"{"author.age": {"$exists": true}}"#), [0]);
        assert_eq!(ids(r#"{"author": null}"#), [20, 30, 40]);
        assert_eq!(ids(r#"{"author.name": null}"#), [20, 30, 40], "a missing parent: the field is missing");
        assert_eq!(ids(r#"{"tags": null}"#), [30], "an empty list is not null");
        assert_eq!(ids(r#"{"$or": [{"lang": "de"}, {"score": {"$gt": 1}}]}"#), [30, 40]);
        assert_eq!(ids(r#"{"$not": {"lang": "en"}}"#), [10, 30, 40]);
        assert_eq!(ids(r#"{"year": {"$not": {"$gte": 2021}}}"#), [0, 30, 40]);
        assert_eq!(ids(r#"{"$and": [{"lang": "en"}, {"year": {"$lt": 2020}}]}"#), [0]);
        assert_eq!(ids(r#"{"$or": []}"#), Vec::<i64>::new());
        assert_eq!(ids(r#"{}"#), [0, 10, 20, 30, 40]);
        assert_eq!(ids(r#"{"lang": {"$lt": "en"}}"#), [40], "strings compare by bytes");
    }

    #[test]
    fn dictionary_encoded_strings_filter_like_plain_ones() {
        // 300 rows, 3 languages and some missing: `lang` is dictionary-encoded.
        let langs = ["en", "fr", "de"];
        let rows: Vec<Value> = (0..300)
            .map(|i| if i % 7 == 0 { json!({"n": i}) } else { json!({"lang": langs[i % 3], "n": i}) })
            .collect();
        let t = MetaTable::new(json_to_batch(&rows, "t").unwrap(), (0..300).collect(), None).unwrap();
        let lang = t.batch().column_by_name("lang").unwrap();
        assert!(matches!(lang.data_type(), DataType::Dictionary(_, _)), "{:?}", lang.data_type());
        let want = |p: &dyn Fn(&Value) -> bool| -> Vec<i64> {
            rows.iter().enumerate().filter(|(_, r)| p(r)).map(|(i, _)| i as i64).collect()
        };
        let got = |f: &str| matching_ids(&Filter::parse(f).unwrap(), &t).unwrap();
        assert_eq!(got(r#"{"lang": "fr"}"#), want(&|r| r["lang"] == "fr"));
        assert_eq!(got(r#"{"lang": {"$in": ["fr", "de", "xx"]}}"#), want(&|r| r["lang"] == "fr" || r["lang"] == "de"));
        assert_eq!(got(r#"{"lang": {"$nin": ["fr"]}}"#), want(&|r| r["lang"] != "fr"));
        assert_eq!(got(r#"{"lang": {"$gt": "en"}}"#), want(&|r| r["lang"] == "fr"));
        assert_eq!(got(r#"{"lang": {"$exists": false}}"#), want(&|r| r.get("lang").is_none()));
        // New rows with plain strings append to the dictionary column, and survive Parquet.
        let more = MetaTable::new(json_to_batch(&[json!({"lang": "it"})], "m").unwrap(), vec![300], None).unwrap();
        let t2 = t.append(&more).unwrap();
        let dir = tempfile::tempdir().unwrap();
        t2.save(&dir.path().join("m.parquet")).unwrap();
        let t3 = MetaTable::load(&dir.path().join("m.parquet")).unwrap();
        let f = Filter::parse(r#"{"lang": {"$in": ["it", "en"]}}"#).unwrap();
        let mut w = want(&|r| r["lang"] == "en");
        w.push(300);
        assert_eq!(matching_ids(&f, &t3).unwrap(), w);
        assert_eq!(t3.rows_json(&[300, 1]).unwrap(), vec![json!({"lang": "it"}), json!({"lang": "fr", "n": 1})]);
    }

    #[test]
    fn fields_and_types_are_checked() {
        let e = err(r#"{"colour": "red"}"#);
        assert!(e.contains("filter at colour: no field \"colour\" in the metadata (fields: author, lang, score, tags, year, draft)"), "{e}");
        let e = err(r#"{"year": {"$gt": "x"}}"#);
        assert!(e.contains("filter at year.$gt: field \"year\" holds float64 values, not strings"), "{e}");
        let e = err(r#"{"$or": [{"lang": 3}]}"#);
        assert!(e.contains("filter at $or[0].lang: field \"lang\" holds string values, not numbers"), "{e}");
        let e = err(r#"{"author.height": 3}"#);
        assert!(e.contains("no field \"height\" in author"), "{e}");
        let e = err(r#"{"lang.x": 3}"#);
        assert!(e.contains("field \"lang\" is string, not an object"), "{e}");
        let e = err(r#"{"draft": "yes"}"#);
        assert!(e.contains("holds bool values, not strings"), "{e}");
    }
}
