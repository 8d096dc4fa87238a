//! [`MetaTable`]: the metadata of an index's vectors, one row per vector, as Arrow columns —
//! the FAISS id of each row (`faissx:id`), the user's string id when ids are strings
//! (`faissx:key`), and the user's fields with the types Arrow's JSON inference gives them
//! (nested objects become struct columns, arrays list columns). Stored beside the index as
//! Parquet (`<index>.meta.parquet`, zstd), read back whole into memory, where filters are
//! evaluated column by column with Arrow's compute kernels ([`super::eval`]).
//!
//! This module owns reading metadata inputs (JSON Lines, CSV columns, Parquet columns), the
//! Parquet file, and the row operations `add`, `merge` and `split` need (append, take by id,
//! renumber). It never touches FAISS.

use crate::engine::error::{Error, Result};
use crate::engine::index::meta::Checksum;
use crate::engine::index::{FieldInfo, IndexMeta, MetadataInfo};
use crate::engine::io::atomic::AtomicFile;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, RecordBatchReader, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Column holding each row's FAISS id (int64, never null).
pub const ID_COLUMN: &str = "faissx:id";
/// Column holding each row's string id, when the index's ids are strings.
pub const KEY_COLUMN: &str = "faissx:key";

/// `<index>.meta.parquet`, the metadata file of the index at `index`.
pub fn table_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".meta.parquet");
    PathBuf::from(s)
}

/// The ids a user gave: integers (kept as FAISS ids, as faissx always did) or strings (each
/// mapped to an int64 FAISS id inside; every output shows the string).
#[derive(Debug, Clone, PartialEq)]
pub enum UserIds {
    /// Integer ids (the index stores them).
    Ints(Vec<i64>),
    /// String ids, one per vector.
    Keys(Vec<String>),
}

impl UserIds {
    /// Integers when every id is written as a plain integer (`12`, not `012` or `1e3`),
    /// strings otherwise.
    pub fn from_strings(raw: Vec<String>) -> UserIds {
        let ints: Option<Vec<i64>> =
            raw.iter().map(|s| s.parse::<i64>().ok().filter(|v| v.to_string() == *s)).collect();
        match ints {
            Some(v) => UserIds::Ints(v),
            None => UserIds::Keys(raw),
        }
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        match self {
            UserIds::Ints(v) => v.len(),
            UserIds::Keys(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Read ids, one per line, from a text file (blank lines are errors: one id per vector).
///
/// Errors: `Io` naming the file; `InvalidInput` naming the file and line of an empty id or a
/// duplicate string id.
pub fn read_id_lines(path: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let id = line.trim_end_matches('\r');
        if id.trim().is_empty() {
            return Err(Error::invalid(format!("{}: line {}: empty id (give one id per line)", path.display(), i + 1)));
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// Read ids, one per vector: `.npy` / `.ivecs` hold integers; a text file holds one id per
/// line, integers or strings ([`UserIds::from_strings`]).
///
/// Errors: `Io`; `InvalidInput` naming the file for a negative integer id or an empty line.
pub fn read_user_ids(path: &Path) -> Result<UserIds> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "npy" | "ivecs") {
        return crate::engine::io::read_ids(path).map(UserIds::Ints);
    }
    let ids = UserIds::from_strings(read_id_lines(path)?);
    if let UserIds::Ints(v) = &ids {
        if let Some(neg) = v.iter().position(|&i| i < 0) {
            return Err(Error::invalid(format!("{}: id at line {} is negative ({})", path.display(), neg + 1, v[neg])));
        }
    }
    Ok(ids)
}

/// Refuse duplicate string ids within `keys` and against `existing`.
///
/// Errors: `InvalidInput` naming the id and `what` (e.g. the file the ids came from).
pub fn check_new_keys(keys: &[String], existing: Option<&MetaTable>, what: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for k in keys {
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid(format!("{what}: id {k:?} is given twice (ids are unique)")));
        }
        if let Some(t) = existing {
            if t.id_of_key(k).is_some() {
                return Err(Error::invalid(format!("{what}: id {k:?} is already in the index")));
            }
        }
    }
    Ok(())
}

/// Metadata rows, one per vector (see the module docs).
#[derive(Debug, Clone)]
pub struct MetaTable {
    batch: RecordBatch,
    by_id: OnceLock<HashMap<i64, u32>>,
    by_key: OnceLock<HashMap<String, i64>>,
}

/// The JSON objects of a JSON Lines file, one per line (blank lines skipped).
///
/// Errors: `Format` naming the file and line for text that is not JSON or a line that is not
/// an object; `Io`.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::with_capacity(1 << 20, f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))?;
        if !v.is_object() {
            return Err(Error::format(path, format!("line {}: expected a JSON object (one per vector)", i + 1)));
        }
        rows.push(v);
    }
    Ok(rows)
}

/// The rows of a Parquet file as one batch, keeping `columns` only (all when `None`).
///
/// Errors: `Format` naming the file for a file that is not Parquet; `InvalidInput` naming a
/// column the file does not have.
pub fn read_parquet(path: &Path, columns: Option<&[String]>) -> Result<RecordBatch> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| Error::format(path, e.to_string()))?;
    let schema = b.schema().clone();
    let b = match columns {
        None => b,
        Some(cols) => {
            let mut roots = Vec::new();
            for c in cols {
                let i = schema.index_of(c).map_err(|_| {
                    Error::invalid(format!("{}: no column {c:?} (columns: {})", path.display(), names(&schema)))
                })?;
                roots.push(i);
            }
            let mask = ProjectionMask::roots(b.parquet_schema(), roots);
            b.with_projection(mask)
        }
    };
    let reader = b.with_batch_size(65_536).build().map_err(|e| Error::format(path, e.to_string()))?;
    let out_schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| Error::format(path, e.to_string()))?;
    arrow_select::concat::concat_batches(&out_schema, &batches).map_err(|e| Error::format(path, e.to_string()))
}

fn names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

/// Turn JSON objects into Arrow columns, with the types Arrow's JSON inference gives them.
///
/// Errors: `InvalidInput` naming `what` when a field's values cannot share one column type.
pub fn json_to_batch(rows: &[Value], what: &str) -> Result<RecordBatch> {
    let schema = arrow_json::reader::infer_json_schema_from_iterator(rows.iter().map(Ok))
        .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    let schema = Arc::new(schema);
    if schema.fields().is_empty() {
        return RecordBatch::try_new_with_options(
            schema,
            vec![],
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .map_err(|e| Error::invalid(format!("{what}: {e}")));
    }
    let mut dec = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    dec.serialize(rows).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    match dec.flush().map_err(|e| Error::invalid(format!("{what}: {e}")))? {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

impl MetaTable {
    /// A table of `fields` (one row per vector, in order) for vectors with FAISS ids `ids`
    /// and, when ids are strings, `keys`.
    ///
    /// Errors: `InvalidInput` when the row counts differ or a user field uses a reserved
    /// `faissx:` name.
    pub fn new(fields: RecordBatch, ids: Vec<i64>, keys: Option<Vec<String>>) -> Result<MetaTable> {
        if fields.num_rows() != ids.len() || keys.as_ref().is_some_and(|k| k.len() != ids.len()) {
            return Err(Error::invalid(format!(
                "{} metadata rows for {} vectors: give one per vector",
                fields.num_rows(),
                ids.len()
            )));
        }
        if let Some(f) = fields.schema().fields().iter().find(|f| f.name().starts_with("faissx:")) {
            return Err(Error::invalid(format!(
                "metadata field {:?}: names starting with faissx: are reserved",
                f.name()
            )));
        }
        let mut cols: Vec<(Field, ArrayRef)> =
            vec![(Field::new(ID_COLUMN, DataType::Int64, false), Arc::new(Int64Array::from(ids)))];
        if let Some(k) = keys {
            cols.push((Field::new(KEY_COLUMN, DataType::Utf8, false), Arc::new(StringArray::from(k))));
        }
        for (f, c) in fields.schema().fields().iter().zip(fields.columns()) {
            let c = dictionary_encoded(c);
            cols.push((f.as_ref().clone().with_data_type(c.data_type().clone()), c));
        }
        MetaTable::from_columns(cols)
    }

    fn from_columns(cols: Vec<(Field, ArrayRef)>) -> Result<MetaTable> {
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = cols.into_iter().unzip();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| Error::invalid(format!("metadata: {e}")))?;
        Ok(MetaTable::from_batch(batch))
    }

    fn from_batch(batch: RecordBatch) -> MetaTable {
        MetaTable { batch, by_id: OnceLock::new(), by_key: OnceLock::new() }
    }

    /// The whole table as an Arrow batch (id and key columns first).
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Rows (vectors).
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The FAISS id of every row.
    pub fn ids(&self) -> &Int64Array {
        self.batch.column(0).as_any().downcast_ref::<Int64Array>().expect("invariant: column 0 is the int64 id column")
    }

    /// The string id of every row, when ids are strings.
    pub fn keys(&self) -> Option<&StringArray> {
        self.batch.column_by_name(KEY_COLUMN).and_then(|c| c.as_any().downcast_ref::<StringArray>())
    }

    /// Whether the index's ids are strings.
    pub fn has_keys(&self) -> bool {
        self.keys().is_some()
    }

    /// The user's fields: `(name, Arrow type)` in column order, without the id columns.
    pub fn fields(&self) -> Vec<(String, DataType)> {
        self.user_schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect()
    }

    fn user_schema(&self) -> Schema {
        Schema::new(
            self.batch
                .schema()
                .fields()
                .iter()
                .filter(|f| !f.name().starts_with("faissx:"))
                .cloned()
                .collect::<Vec<_>>(),
        )
    }

    /// For each user field, the rows where it is present (not null).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.batch
            .schema()
            .fields()
            .iter()
            .zip(self.batch.columns())
            .filter(|(f, _)| !f.name().starts_with("faissx:"))
            .map(|(f, c)| (f.name().clone(), c.len() - c.null_count()))
            .collect()
    }

    /// The row of FAISS id `id`.
    pub fn row_of(&self, id: i64) -> Option<usize> {
        self.by_id
            .get_or_init(|| self.ids().values().iter().enumerate().map(|(r, &i)| (i, r as u32)).collect())
            .get(&id)
            .map(|&r| r as usize)
    }

    /// The FAISS id of string id `key`.
    pub fn id_of_key(&self, key: &str) -> Option<i64> {
        let keys = self.keys()?;
        self.by_key
            .get_or_init(|| {
                keys.iter().zip(self.ids().values().iter()).filter_map(|(k, &i)| Some((k?.to_string(), i))).collect()
            })
            .get(key)
            .copied()
    }

    /// The string id of FAISS id `id` (for an index with string ids).
    pub fn key_of(&self, id: i64) -> Option<&str> {
        let keys = self.keys()?;
        self.row_of(id).map(|r| keys.value(r))
    }

    /// The next FAISS id for new string ids: one past the largest id (0 for an empty table).
    pub fn next_id(&self) -> i64 {
        self.ids().values().iter().copied().max().map_or(0, |m| m + 1)
    }

    /// The user fields of the rows of `ids`, as JSON objects (`null` for an id with no row,
    /// such as -1 for a missing result).
    pub fn rows_json(&self, ids: &[i64]) -> Result<Vec<Value>> {
        let rows: Vec<Option<u32>> = ids.iter().map(|&i| self.row_of(i).map(|r| r as u32)).collect();
        let take = arrow_array::UInt32Array::from(rows.iter().map(|r| r.unwrap_or(0)).collect::<Vec<_>>());
        let user = self.user_batch()?;
        let taken = arrow_select::take::take_record_batch(&user, &take).map_err(|e| Error::invalid(e.to_string()))?;
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
            w.write(&taken).map_err(|e| Error::invalid(e.to_string()))?;
            w.finish().map_err(|e| Error::invalid(e.to_string()))?;
        }
        let mut lines = buf.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let mut out = Vec::with_capacity(ids.len());
        for r in rows {
            // Rows with no field present are written as `{}`, so there is one line per row.
            let v = match lines.next() {
                Some(l) => serde_json::from_slice(l).unwrap_or(Value::Null),
                None => Value::Object(Map::new()),
            };
            out.push(if r.is_some() { v } else { Value::Null });
        }
        Ok(out)
    }

    fn user_batch(&self) -> Result<RecordBatch> {
        let keep: Vec<usize> = self
            .batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.name().starts_with("faissx:"))
            .map(|(i, _)| i)
            .collect();
        self.batch.project(&keep).map_err(|e| Error::invalid(e.to_string()))
    }

    /// This table followed by `more`'s rows. Fields only one side has are null on the other;
    /// a field both have must have one type.
    ///
    /// Errors: `InvalidInput` naming the field and both types, or when one side has string ids
    /// and the other not.
    pub fn append(&self, more: &MetaTable) -> Result<MetaTable> {
        if self.has_keys() != more.has_keys() && !self.is_empty() && !more.is_empty() {
            return Err(Error::invalid(
                "string ids and integer ids cannot be mixed in one index (the index has one kind, the new vectors the other)",
            ));
        }
        let (a, b) = (self.batch.schema(), more.batch.schema());
        let mut fields: Vec<Field> = Vec::new();
        for f in a.fields().iter().chain(b.fields().iter()) {
            match fields.iter().find(|g| g.name() == f.name()) {
                None => fields.push(f.as_ref().clone().with_nullable(true)),
                Some(g) if g.data_type() == f.data_type() => {}
                // A string column, dictionary-encoded on one side only: cast to the index's.
                Some(g) if is_text(g.data_type()) && is_text(f.data_type()) => {}
                Some(g) => {
                    return Err(Error::invalid(format!(
                        "metadata field {:?} is {} in the index but {} in the new rows",
                        f.name(),
                        type_name(g.data_type()),
                        type_name(f.data_type())
                    )))
                }
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let widen = |t: &RecordBatch| -> Result<RecordBatch> {
            let cols = schema
                .fields()
                .iter()
                .map(|f| match t.column_by_name(f.name()) {
                    Some(c) if c.data_type() != f.data_type() => {
                        arrow_cast::cast(c, f.data_type()).map_err(|e| Error::invalid(e.to_string()))
                    }
                    Some(c) => Ok(c.clone()),
                    None => Ok(arrow_array::new_null_array(f.data_type(), t.num_rows())),
                })
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::invalid(e.to_string()))
        };
        let batch = arrow_select::concat::concat_batches(&schema, &[widen(&self.batch)?, widen(&more.batch)?])
            .map_err(|e| Error::invalid(e.to_string()))?;
        let id_field = Field::new(ID_COLUMN, DataType::Int64, false);
        let mut cols: Vec<(Field, ArrayRef)> = Vec::new();
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            let f = if f.name() == ID_COLUMN || f.name() == KEY_COLUMN {
                f.as_ref().clone().with_nullable(false)
            } else {
                f.as_ref().clone()
            };
            cols.push((if f.name() == ID_COLUMN { id_field.clone() } else { f }, c.clone()));
        }
        MetaTable::from_columns(cols)
    }

    /// The rows whose FAISS ids are in `ids` (in table order).
    pub fn take_ids(&self, ids: &std::collections::HashSet<i64>) -> Result<MetaTable> {
        let mask: arrow_array::BooleanArray = self.ids().values().iter().map(|i| Some(ids.contains(i))).collect();
        let b =
            arrow_select::filter::filter_record_batch(&self.batch, &mask).map_err(|e| Error::invalid(e.to_string()))?;
        Ok(MetaTable::from_batch(b))
    }

    /// The same rows with FAISS ids changed by `map` (old id → new id).
    ///
    /// Errors: `InvalidInput` for an id `map` leaves out.
    pub fn renumber(&self, map: &dyn Fn(i64) -> Option<i64>) -> Result<MetaTable> {
        let ids = self
            .ids()
            .values()
            .iter()
            .map(|&i| {
                map(i).ok_or_else(|| Error::invalid(format!("metadata row of id {i}: the id is not in the index")))
            })
            .collect::<Result<Vec<i64>>>()?;
        let mut cols: Vec<ArrayRef> = self.batch.columns().to_vec();
        cols[0] = Arc::new(Int64Array::from(ids));
        let b = RecordBatch::try_new(self.batch.schema(), cols).map_err(|e| Error::invalid(e.to_string()))?;
        Ok(MetaTable::from_batch(b))
    }

    /// Write the table to `path` as Parquet (zstd), through a temp file renamed into place.
    ///
    /// Errors: `Io` naming the path.
    pub fn save(&self, path: &Path) -> Result<()> {
        use parquet::basic::{Compression, ZstdLevel};
        use parquet::file::properties::WriterProperties;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| Error::invalid(e.to_string()))?))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        let mut f = AtomicFile::create(path)?;
        {
            let mut w = parquet::arrow::ArrowWriter::try_new(f.writer(), self.batch.schema(), Some(props))
                .map_err(|e| Error::format(path, e.to_string()))?;
            w.write(&self.batch).map_err(|e| Error::format(path, e.to_string()))?;
            w.close().map_err(|e| Error::format(path, e.to_string()))?;
        }
        f.commit()
    }

    /// Save the table as the metadata of the index at `index` (`<index>.meta.parquet`) and
    /// return what its sidecar records of it.
    ///
    /// Errors: `Io` naming the path.
    pub fn save_for(&self, index: &Path) -> Result<MetadataInfo> {
        let path = table_path(index);
        self.save(&path)?;
        let sum = Checksum::of_file(&path)?;
        Ok(MetadataInfo {
            rows: self.len(),
            string_ids: self.has_keys(),
            fields: self
                .fields()
                .into_iter()
                .zip(self.counts())
                .map(|((name, t), (_, count))| FieldInfo { name, ty: type_name(&t), count })
                .collect(),
            bytes: sum.bytes,
            crc32: sum.crc32,
        })
    }

    /// The metadata table of the index at `index` whose sidecar is `meta`: `None` when the
    /// sidecar records none.
    ///
    /// Errors: `Format` naming the table file when it is missing, does not match the size and
    /// CRC-32 the sidecar records, or is not a metadata table.
    pub fn open_for(index: &Path, meta: &IndexMeta) -> Result<Option<MetaTable>> {
        let Some(info) = &meta.metadata else {
            return Ok(None);
        };
        let path = table_path(index);
        let sum = Checksum::of_file(&path).map_err(|_| {
            Error::format(
                &path,
                "missing: the index's sidecar records a metadata table (restore the file or rebuild the index)",
            )
        })?;
        if sum.bytes != info.bytes || sum.crc32 != info.crc32 {
            return Err(Error::format(
                &path,
                format!(
                    "does not match the sidecar ({} bytes, crc32 {:08x} recorded; the file has {sum}): it is damaged or from another version of the index",
                    info.bytes, info.crc32
                ),
            ));
        }
        MetaTable::load(&path).map(Some)
    }

    /// Read a table written by [`MetaTable::save`].
    ///
    /// Errors: `Io`; `Format` naming the path for a file that is not such a table.
    pub fn load(path: &Path) -> Result<MetaTable> {
        let b = read_parquet(path, None)?;
        let ok =
            b.schema().fields().first().is_some_and(|f| f.name() == ID_COLUMN && f.data_type() == &DataType::Int64);
        if !ok || b.column(0).null_count() > 0 {
            return Err(Error::format(path, format!("not a faissx metadata table (no {ID_COLUMN} column first)")));
        }
        Ok(MetaTable::from_batch(b))
    }
}

/// Whether a column holds strings (plain or dictionary-encoded).
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 => true,
        DataType::Dictionary(k, v) => **k == DataType::Int32 && **v == DataType::Utf8,
        _ => false,
    }
}

/// A top-level string column with few distinct values (at most one per 8 rows), as an Arrow
/// dictionary array: a filter then compares each distinct value once and maps the rows
/// through their keys (`lang`, `category`: ≈ 1 ms at 1M rows instead of ≈ 3 ms per
/// comparison), and Parquet keeps it dictionary-encoded. Other columns are returned as they
/// are.
fn dictionary_encoded(c: &ArrayRef) -> ArrayRef {
    if *c.data_type() != DataType::Utf8 || c.len() < 64 {
        return c.clone();
    }
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    match arrow_cast::cast(c, &dict) {
        Ok(d) => {
            let distinct = d.as_any_dictionary_opt().map_or(usize::MAX, |a| a.values().len());
            if distinct.saturating_mul(8) <= c.len() {
                d
            } else {
                c.clone()
            }
        }
        Err(_) => c.clone(),
    }
}

/// A column type as users read it in `info` and errors: `int64`, `float64`, `string`,
/// `bool`, `list<string>`, `struct{a, b}`.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "bool".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Struct(fs) => {
            format!("struct{{{}}}", fs.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "))
        }
        DataType::Dictionary(_, v) => type_name(v),
        DataType::Null => "null".into(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(rows: Vec<Value>) -> MetaTable {
        let n = rows.len() as i64;
        MetaTable::new(json_to_batch(&rows, "test").unwrap(), (0..n).collect(), None).unwrap()
    }

    #[test]
    fn json_rows_round_trip_through_parquet() {
        let t = table(vec![
            json!({"lang": "en", "year": 2021, "tags": ["a", "b"], "author": {"name": "x"}}),
            json!({"lang": "fr", "score": 0.5}),
            json!({}),
        ]);
        assert_eq!(t.len(), 3);
        let names: Vec<String> = t.fields().into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["author", "lang", "tags", "year", "score"]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index.meta.parquet");
        t.save(&p).unwrap();
        let back = MetaTable::load(&p).unwrap();
        let rows = back.rows_json(&[1, 0, -1, 2]).unwrap();
        assert_eq!(rows[0], json!({"lang": "fr", "score": 0.5}));
        assert_eq!(rows[1], json!({"lang": "en", "year": 2021, "tags": ["a", "b"], "author": {"name": "x"}}));
        assert_eq!(rows[2], Value::Null);
        assert_eq!(rows[3], json!({}));
        assert_eq!(back.counts().iter().find(|c| c.0 == "lang").unwrap().1, 2);
    }

    #[test]
    fn append_widens_and_refuses_type_clashes() {
        let a = table(vec![json!({"lang": "en"})]);
        let b = MetaTable::new(json_to_batch(&[json!({"year": 2020})], "b").unwrap(), vec![1], None).unwrap();
        let c = a.append(&b).unwrap();
        assert_eq!(c.rows_json(&[0, 1]).unwrap(), vec![json!({"lang": "en"}), json!({"year": 2020})]);
        let bad = MetaTable::new(json_to_batch(&[json!({"lang": 3})], "b").unwrap(), vec![2], None).unwrap();
        let e = c.append(&bad).unwrap_err().to_string();
        assert!(e.contains("metadata field \"lang\" is string in the index but int64 in the new rows"), "{e}");
    }

    #[test]
    fn string_ids_map_both_ways() {
        let t = MetaTable::new(
            json_to_batch(&[json!({}), json!({})], "k").unwrap(),
            vec![0, 1],
            Some(vec!["a".into(), "b".into()]),
        )
        .unwrap();
        assert_eq!(t.id_of_key("b"), Some(1));
        assert_eq!(t.key_of(0), Some("a"));
        assert_eq!(t.next_id(), 2);
        assert!(check_new_keys(&["c".into(), "c".into()], None, "f").unwrap_err().to_string().contains("given twice"));
        assert!(check_new_keys(&["a".into()], Some(&t), "f").unwrap_err().to_string().contains("already in the index"));
        assert_eq!(UserIds::from_strings(vec!["1".into(), "2".into()]), UserIds::Ints(vec![1, 2]));
        assert!(matches!(UserIds::from_strings(vec!["1".into(), "01".into()]), UserIds::Keys(_)));
    }
}
