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
}

pub(super) struct Parsed {
    pub data: Vec<f32>,
    pub dim: usize,
    pub rows: usize,
    pub ids: Option<Vec<i64>>,
}

pub(super) fn parse(path: &Path, bytes: &[u8], opts: &CsvOptions) -> Result<Parsed> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(bytes);
    let mut records = rdr.records();
    let first = match records.next() {
        None => return Ok(Parsed { data: Vec::new(), dim: 0, rows: 0, ids: None }),
        Some(r) => r.map_err(|e| Error::format(path, format!("line 1: {e}")))?,
    };
    let is_header = opts.header.unwrap_or_else(|| first.iter().any(|f| f.parse::<f64>().is_err()));
    let names: Option<Vec<String>> = is_header.then(|| first.iter().map(str::to_string).collect());
    let id_col = match &opts.id_column {
        None => None,
        Some(c) => Some(match c.parse::<usize>() {
            Ok(i) if i < first.len() => i,
            _ => names.as_ref().and_then(|n| n.iter().position(|x| x == c)).ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no id column {c:?} (give a header name or a 0-based column number)",
                    path.display()
                ))
            })?,
        }),
    };
    let width = first.len();
    let dim = width - usize::from(id_col.is_some());
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
        for (i, f) in rec.iter().enumerate() {
            if Some(i) == id_col {
                let id = f
                    .parse::<i64>()
                    .map_err(|_| Error::format(path, format!("line {line}: id {f:?} is not an integer")))?;
                if let Some(ids) = ids.as_mut() {
                    ids.push(id);
                }
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
    Ok(Parsed { data, dim, rows, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_id_column() {
        let p = parse(
            Path::new("x.csv"),
            b"id,a,b\n7,1,2\n9,3,4\n",
            &CsvOptions { header: None, id_column: Some("id".into()) },
        )
        .unwrap();
        assert_eq!((p.rows, p.dim), (2, 2));
        assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(p.ids, Some(vec![7, 9]));
    }

    #[test]
    fn ragged_rows_are_an_error() {
        let e = parse(Path::new("x.csv"), b"1,2\n3\n", &CsvOptions::default()).err().unwrap();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
