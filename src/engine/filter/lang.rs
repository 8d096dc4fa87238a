//! The filter language: one JSON dialect, the one vector-database users already know from
//! Pinecone, Chroma and MongoDB queries.
//!
//! ```json
//! {"lang": "en", "year": {"$gte": 2020}, "$or": [{"tags": {"$in": ["rust", "faiss"]}}, {"draft": {"$exists": false}}]}
//! ```
//!
//! - A map's entries are AND-ed. A key starting with `$` is a logical operator (`$and`, `$or`:
//!   an array of filters; `$not`: one filter); any other key is a field, with dots for paths into
//!   nested objects (`"author.name"`).
//! - A field's condition is a value (equality: `{"lang": "en"}`, `{"x": null}` matches a missing
//!   or null field) or a map of operators, AND-ed: `$eq $ne $gt $gte $lt $lte` (a number, string
//!   or boolean; `$gt`… take numbers or strings), `$in $nin` (an array of such values),
//!   `$exists` (a boolean), `$not` (a map of operators).
//! - A field holding an array matches when any element matches (`{"tags": "rust"}`); `$ne` and
//!   `$nin` match when no element does, and match a missing field, as in MongoDB.
//!
//! This module only parses; [`super::eval`] checks fields and types against the metadata and
//! evaluates. Errors name the part of the filter at fault: `filter at $or[1].year: …`.

use crate::engine::error::{Error, Result};
use serde_json::Value;

/// A literal a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// JSON `null`: matches a missing or null field under `$eq`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (JSON numbers without a fraction that fit i64).
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
}

impl Lit {
    fn from_json(v: &Value, at: &str) -> Result<Lit> {
        Ok(match v {
            Value::Null => Lit::Null,
            Value::Bool(b) => Lit::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Lit::Int(i),
                None => Lit::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Lit::Str(s.clone()),
            Value::Array(_) => return Err(bad(at, "an array needs $in or $nin (arrays match when any element does)")),
            Value::Object(_) => return Err(bad(at, "expected a number, string, boolean or null, got an object")),
        })
    }

    /// What the literal is, for messages: `number`, `string`, `boolean`, `null`.
    pub fn kind(&self) -> &'static str {
        match self {
            Lit::Null => "null",
            Lit::Bool(_) => "boolean",
            Lit::Int(_) | Lit::Float(_) => "number",
            Lit::Str(_) => "string",
        }
    }
}

/// A comparison operator on one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `$eq` (or a bare value).
    Eq,
    /// `$gt`.
    Gt,
    /// `$gte`.
    Gte,
    /// `$lt`.
    Lt,
    /// `$lte`.
    Lte,
}

impl CmpOp {
    /// The operator as written in filters.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "$eq",
            CmpOp::Gt => "$gt",
            CmpOp::Gte => "$gte",
            CmpOp::Lt => "$lt",
            CmpOp::Lte => "$lte",
        }
    }
}

/// A parsed filter. `$ne` and `$nin` are parsed into `Not` of `$eq` / `$in`, which gives them
/// MongoDB's meaning on arrays and missing fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every sub-filter matches (an empty `And` matches everything).
    And(Vec<Filter>),
    /// Some sub-filter matches (an empty `Or` matches nothing).
    Or(Vec<Filter>),
    /// The sub-filter does not match (rows where its field is missing included).
    Not(Box<Filter>),
    /// `field <op> value`; for an array field, some element.
    Cmp {
        /// Dotted path split at the dots.
        path: Vec<String>,
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: Lit,
        /// Where in the filter this came from, for errors (`$or[1].year`).
        at: String,
    },
    /// `field ∈ values`; for an array field, some element.
    In {
        /// Dotted path split at the dots.
        path: Vec<String>,
        /// Candidate values.
        values: Vec<Lit>,
        /// Where in the filter this came from.
        at: String,
    },
    /// `$exists`: the field is present and not null (or, with `false`, absent or null).
    Exists {
        /// Dotted path split at the dots.
        path: Vec<String>,
        /// Whether the field must exist.
        exists: bool,
        /// Where in the filter this came from.
        at: String,
    },
}

fn bad(at: &str, what: &str) -> Error {
    if at.is_empty() {
        Error::invalid(format!("filter: {what}"))
    } else {
        Error::invalid(format!("filter at {at}: {what}"))
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else if key.starts_with('[') {
        format!("{at}{key}")
    } else {
        format!("{at}.{key}")
    }
}

impl Filter {
    /// Parse a filter from JSON text.
    ///
    /// Errors: `InvalidInput` for text that is not JSON, and as [`Filter::from_json`].
    pub fn parse(text: &str) -> Result<Filter> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
        Filter::from_json(&v)
    }

    /// Parse a filter from a JSON value (a map; see the module docs for the dialect).
    ///
    /// Errors: `InvalidInput` naming the part at fault, for a filter that is not a map, an
    /// unknown `$` operator, an operand of the wrong shape (`$in` without an array, `$and` without
    /// an array of maps, `$exists` without a boolean), or an empty field name.
    pub fn from_json(v: &Value) -> Result<Filter> {
        parse_map(v, "")
    }

    /// Every field path the filter reads, dotted, in order of appearance.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(&mut |f| {
            if let Filter::Cmp { path, .. } | Filter::In { path, .. } | Filter::Exists { path, .. } = f {
                let p = path.join(".");
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        });
        out
    }

    fn walk(&self, f: &mut dyn FnMut(&Filter)) {
        f(self);
        match self {
            Filter::And(v) | Filter::Or(v) => v.iter().for_each(|c| c.walk(f)),
            Filter::Not(c) => c.walk(f),
            _ => {}
        }
    }
}

fn parse_map(v: &Value, at: &str) -> Result<Filter> {
    let map = match v {
        Value::Object(m) => m,
        other => return Err(bad(at, &format!("expected a map of conditions, got {}", json_kind(other)))),
    };
    let mut all = Vec::with_capacity(map.len());
    for (key, val) in map {
        let here = join(at, key);
        match key.as_str() {
            "$and" | "$or" => {
                let items = match val {
                    Value::Array(a) => a,
                    other => return Err(bad(&here, &format!("expected an array of filters, got {}", json_kind(other)))),
                };
                let subs = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| parse_map(x, &join(&here, &format!("[{i}]"))))
                    .collect::<Result<Vec<_>>>()?;
                all.push(if key == "$and" { Filter::And(subs) } else { Filter::Or(subs) });
            }
            "$not" => all.push(Filter::Not(Box::new(parse_map(val, &here)?))),
            k if k.starts_with('$') => {
                return Err(bad(
                    &here,
                    &format!("unknown operator {k} (logical operators: $and, $or, $not; field operators go inside a field's map)"),
                ))
            }
            field => {
                let path = parse_path(field, &here)?;
                all.push(parse_condition(&path, val, &here)?);
            }
        }
    }
    Ok(if all.len() == 1 { all.pop().unwrap_or(Filter::And(Vec::new())) } else { Filter::And(all) })
}

fn parse_path(field: &str, at: &str) -> Result<Vec<String>> {
    let parts: Vec<String> = field.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(bad(
            at,
            &format!("field name {field:?} has an empty part (dotted paths look like \"author.name\")"),
        ));
    }
    Ok(parts)
}

fn parse_condition(path: &[String], val: &Value, at: &str) -> Result<Filter> {
    let ops = match val {
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => m,
        Value::Object(_) => {
            return Err(bad(
                at,
                "a map of values is not a condition: compare nested fields with dotted paths (\"author.name\")",
            ))
        }
        v => {
            return Ok(Filter::Cmp { path: path.to_vec(), op: CmpOp::Eq, value: Lit::from_json(v, at)?, at: at.into() })
        }
    };
    let mut all = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = join(at, op);
        let cmp = |op: CmpOp| -> Result<Filter> {
            let value = Lit::from_json(arg, &here)?;
            if op != CmpOp::Eq && matches!(value, Lit::Null | Lit::Bool(_)) {
                return Err(bad(&here, &format!("{} compares numbers or strings, got {}", op.name(), value.kind())));
            }
            Ok(Filter::Cmp { path: path.to_vec(), op, value, at: here.clone() })
        };
        let list = || -> Result<Vec<Lit>> {
            match arg {
                Value::Array(a) => {
                    a.iter().enumerate().map(|(i, x)| Lit::from_json(x, &join(&here, &format!("[{i}]")))).collect()
                }
                other => Err(bad(&here, &format!("expected an array of values, got {}", json_kind(other)))),
            }
        };
        all.push(match op.as_str() {
            "$eq" => cmp(CmpOp::Eq)?,
            "$gt" => cmp(CmpOp::Gt)?,
            "$gte" => cmp(CmpOp::Gte)?,
            "$lt" => cmp(CmpOp::Lt)?,
            "$lte" => cmp(CmpOp::Lte)?,
            "$ne" => Filter::Not(Box::new(cmp(CmpOp::Eq)?)),
            "$in" => Filter::In { path: path.to_vec(), values: list()?, at: here.clone() },
            "$nin" => Filter::Not(Box::new(Filter::In { path: path.to_vec(), values: list()?, at: here.clone() })),
            "$exists" => match arg {
                Value::Bool(b) => Filter::Exists { path: path.to_vec(), exists: *b, at: here.clone() },
                other => return Err(bad(&here, &format!("expected true or false, got {}", json_kind(other)))),
            },
            "$not" => Filter::Not(Box::new(match arg {
                Value::Object(m) if !m.is_empty() && m.keys().all(|k| k.starts_with('$')) => {
                    parse_condition(path, arg, &here)?
                }
                _ => return Err(bad(&here, "expected a map of operators, as in {\"$not\": {\"$gt\": 5}}")),
            })),
            k if k.starts_with('$') => {
                return Err(bad(
                    &here,
                    &format!("unknown operator {k} (field operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $not)"),
                ))
            }
            k => {
                return Err(bad(
                    &here,
                    &format!("{k:?} mixes a field name with operators: use a dotted path (\"{}.{k}\")", path.join(".")),
                ))
            }
        });
    }
    Ok(if all.len() == 1 { all.pop().unwrap_or(Filter::And(Vec::new())) } else { Filter::And(all) })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Filter::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_operator() {
        let f = Filter::parse(
            r#"{"lang": "en", "year": {"$gte": 2020, "$lt": 2024}, "tags": {"$in": ["a", "b"]},
                "n": {"$ne": 3, "$nin": [1, 2.5]}, "x.y": {"$exists": true}, "z": {"$not": {"$gt": 1}},
                "$or": [{"a": null}, {"b": false}], "$not": {"c": {"$lte": "m"}}}"#,
        )
        .unwrap();
        let Filter::And(all) = &f else { panic!("{f:?}") };
        assert_eq!(all.len(), 8);
        assert_eq!(
            f.fields(),
            ["c", "a", "b", "lang", "n", "tags", "x.y", "year", "z"],
            "map keys in JSON-text order is not kept: sorted"
        );
        assert!(all.contains(&Filter::Cmp {
            path: vec!["lang".into()],
            op: CmpOp::Eq,
            value: Lit::Str("en".into()),
            at: "lang".into()
        }));
        assert!(all.contains(&Filter::Exists {
            path: vec!["x".into(), "y".into()],
            exists: true,
            at: "x.y.$exists".into()
        }));
    }

    #[test]
    fn ne_and_nin_are_negations() {
        let f = Filter::parse(r#"{"n": {"$ne": 3}}"#).unwrap();
        assert!(matches!(f, Filter::Not(b) if matches!(*b, Filter::Cmp { op: CmpOp::Eq, value: Lit::Int(3), .. })));
        let f = Filter::parse(r#"{"n": {"$nin": ["a"]}}"#).unwrap();
        assert!(matches!(f, Filter::Not(b) if matches!(*b, Filter::In { .. })));
    }

    #[test]
    fn errors_name_the_part_at_fault() {
        assert!(err("[1]").contains("expected a map of conditions, got an array"), "{}", err("[1]"));
        assert!(err("{").contains("not valid JSON"));
        assert!(err(r#"{"$or": [{"a": 1}, {"year": {"$gt": [1]}}]}"#).contains("filter at $or[1].year.$gt:"));
        assert!(err(r#"{"year": {"$regex": "x"}}"#).contains("filter at year.$regex: unknown operator $regex"));
        assert!(err(r#"{"$nor": []}"#).contains("unknown operator $nor"));
        assert!(err(r#"{"tags": {"$in": "rust"}}"#).contains("filter at tags.$in: expected an array"));
        assert!(err(r#"{"a": {"$exists": 1}}"#).contains("expected true or false"));
        assert!(err(r#"{"a": {"$gt": true}}"#).contains("$gt compares numbers or strings, got boolean"));
        assert!(err(r#"{"a": {"b": 1}}"#).contains("dotted paths"));
        assert!(err(r#"{"a..b": 1}"#).contains("empty part"));
        assert!(err(r#"{"a": [1, 2]}"#).contains("needs $in or $nin"));
        assert!(err(r#"{"$and": {"a": 1}}"#).contains("filter at $and: expected an array of filters"));
        assert!(err(r#"{"a": {"$not": 3}}"#).contains("filter at a.$not:"));
    }
}
