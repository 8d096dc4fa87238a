//! CSV input: one vector per line, numeric columns, an optional header line and an optional id
//! column. Parsed with the `csv` crate into memory (CSV is for small and medium inputs; use
//! `.npy` or `.fvecs` for large ones).

use crate::engine::error::{Error, Result};
use std::path::Path;

/// How to read a CSV file.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// `Some(true)`: the first line is a header; `Some(false)`: it is data; `None`: detect it
    /// (a first line with any non-numeric field is a header).
    pub header: Option<bool>,
    /// The id column, by header name or 0-based position; its values become the vectors' ids.
    pub id_column: Option<String>,
    /// Columns that are metadata, not vector components (by header name or 0-based
    /// position): kept as raw cells for the index's metadata table.
    pub metadata_columns: Vec<String>,
}

/// The metadata columns of a CSV file: their names (header names, or `column<i>` without a
/// header) and each row's raw cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaCells {
    /// Column names.
    pub names: Vec<String>,
    /// One entry per row: the cells of the metadata columns, in `names` order.
    pub rows: Vec<Vec<String>>,
}

pub(super) struct Parsed {
    pub data: Vec<f32>,
    pub dim: usize,
    pub rows: usize,
    /// The id column's cells as written (integers or strings: see `VectorFile::keys`).
    pub ids: Option<Vec<String>>,
    pub meta: Option<MetaCells>,
}

pub(super) fn parse(path: &Path, bytes: &[u8], opts: &CsvOptions) -> Result<Parsed> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(bytes);
    let mut records = rdr.records();
    let first = match records.next() {
        None => return Ok(Parsed { data: Vec::new(), dim: 0, rows: 0, ids: None, meta: None }),
        Some(r) => r.map_err(|e| Error::format(path, format!("line 1: {e}")))?,
    };
    let is_header = opts.header.unwrap_or_else(|| first.iter().any(|f| f.parse::<f64>().is_err()));
    let names: Option<Vec<String>> = is_header.then(|| first.iter().map(str::to_string).collect());
    let column = |c: &str, what: &str| -> Result<usize> {
        match c.parse::<usize>() {
            Ok(i) if i < first.len() => Ok(i),
            _ => names.as_ref().and_then(|n| n.iter().position(|x| x == c)).ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no {what} column {c:?} (give a header name or a 0-based column number)",
                    path.display()
                ))
            }),
        }
    };
    let id_col = opts.id_column.as_deref().map(|c| column(c, "id")).transpose()?;
    let meta_cols = opts.metadata_columns.iter().map(|c| column(c, "metadata")).collect::<Result<Vec<usize>>>()?;
    if let Some(i) = id_col.filter(|i| meta_cols.contains(i)) {
        return Err(Error::invalid(format!(
            "{}: column {i} is both the id column and a metadata column",
            path.display()
        )));
    }
    let mut meta = (!meta_cols.is_empty()).then(|| MetaCells {
        names: meta_cols
            .iter()
            .map(|&c| names.as_ref().map_or_else(|| format!("column{c}"), |n| n[c].clone()))
            .collect(),
        rows: Vec::new(),
    });
    let width = first.len();
    let dim = width - usize::from(id_col.is_some()) - meta_cols.len();
    let mut data = Vec::new();
    let mut ids = id_col.map(|_| Vec::new());
    let mut rows = 0;
    let mut line = 1usize;
    let mut handle = |rec: &csv::StringRecord, line: usize| -> Result<()> {
        if rec.len() != width {
            return Err(Error::format(
                path,
                format!("line {line}: {} fields, line 1 has {width} (rows of mixed dimension)", rec.len()),
            ));
        }
        if let Some(m) = meta.as_mut() {
            m.rows.push(meta_cols.iter().map(|&c| rec.get(c).unwrap_or("").to_string()).collect());
        }
        for (i, f) in rec.iter().enumerate() {
            if Some(i) == id_col {
                if f.is_empty() {
                    return Err(Error::format(path, format!("line {line}: empty id")));
                }
                if let Some(ids) = ids.as_mut() {
                    ids.push(f.to_string());
                }
            } else if meta_cols.contains(&i) {
                continue;
            } else {
                let x = f.parse::<f32>().map_err(|_| {
                    Error::format(path, format!("line {line}: field {} ({f:?}) is not a number", i + 1))
                })?;
                data.push(x);
            }
        }
        rows += 1;
        Ok(())
    };
    if !is_header {
        handle(&first, 1)?;
    }
    for rec in records {
        line += 1;
        let rec = rec.map_err(|e| Error::format(path, format!("line {line}: {e}")))?;
        if rec.len() == 1 && rec.get(0) == Some("") {
            continue;
        }
        handle(&rec, line)?;
    }
    Ok(Parsed { data, dim, rows, ids, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_id_column() {
        let p = parse(
            Path::new("x.csv"),
            b"id,a,b\n7,1,2\n9,3,4\n",
            &CsvOptions { header: None, id_column: Some("id".into()), ..Default::default() },
        )
        .unwrap();
        assert_eq!((p.rows, p.dim), (2, 2));
        assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(p.ids, Some(vec!["7".to_string(), "9".to_string()]));
    }

    #[test]
    fn metadata_columns_are_not_vector_components() {
        let p = parse(
            Path::new("x.csv"),
            b"doc,a,lang,b,year\nd1,1,en,2,2020\nd2,3,,4,2021\n",
            &CsvOptions {
                id_column: Some("doc".into()),
                metadata_columns: vec!["lang".into(), "4".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((p.rows, p.dim), (2, 2));
        assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(p.ids, Some(vec!["d1".to_string(), "d2".to_string()]));
        let m = p.meta.unwrap();
        assert_eq!(m.names, ["lang", "year"]);
        assert_eq!(m.rows, vec![vec!["en".to_string(), "2020".into()], vec!["".to_string(), "2021".into()]]);
        let e = parse(
            Path::new("x.csv"),
            b"a,b\n1,2\n",
            &CsvOptions { metadata_columns: vec!["c".into()], ..Default::default() },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("no metadata column \"c\""), "{e}");
    }

    #[test]
    fn ragged_rows_are_an_error() {
        let e = parse(Path::new("x.csv"), b"1,2\n3\n", &CsvOptions::default()).err().unwrap();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
