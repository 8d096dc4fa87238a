//! Vectors and ids on the wire (docs/protocol.md §4): nested arrays of numbers (FAISSx's
//! form), packed little-endian `bin` payloads (ours), and binary codes as bits or bytes.

use super::*;

fn number(key: &str, row: usize, col: usize, v: &Value) -> Result<f32> {
    match v {
        Value::F64(f) => Ok(*f as f32),
        Value::F32(f) => Ok(*f),
        Value::Integer(i) => Ok(i.as_f64().unwrap_or(f64::NAN) as f32),
        other => {
            Err(Error::invalid(format!("{key}: row {row} component {col} is {}, expected a number", type_name(other))))
        }
    }
}

fn width_error(key: &str, d: usize, got: usize, row: usize) -> Error {
    Error::new(ErrorKind::DimensionMismatch, format!("{key}: row {row}: expected d={d}, got {got}"))
}

pub(super) fn decode_vectors(key: &str, v: &Value, d: usize) -> Result<Vec<f32>> {
    match v {
        Value::Ext(PACKED_F32, b) => {
            let (w, x) = decode::unpack_f32(b);
            if x.is_empty() {
                return Ok(x);
            }
            if w != d {
                return Err(width_error(key, d, w, 0));
            }
            Ok(x)
        }
        Value::Binary(b) => {
            if d == 0 || b.len() % (4 * d) != 0 {
                return Err(Error::new(
                    ErrorKind::DimensionMismatch,
                    format!("{key}: {} bytes is not a whole number of d={d} float32 vectors (expected d={d})", b.len()),
                ));
            }
            Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        Value::Array(rows) => {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            if !matches!(rows[0], Value::Array(_)) {
                // A flat array of numbers is one row.
                if rows.len() != d {
                    return Err(width_error(key, d, rows.len(), 0));
                }
                return rows.iter().enumerate().map(|(j, x)| number(key, 0, j, x)).collect();
            }
            let mut out = Vec::with_capacity(rows.len() * d);
            for (i, r) in rows.iter().enumerate() {
                match r {
                    Value::Array(cols) => {
                        if cols.len() != d {
                            return Err(width_error(key, d, cols.len(), i));
                        }
                        for (j, x) in cols.iter().enumerate() {
                            out.push(number(key, i, j, x)?);
                        }
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "{key}: row {i} is {}, expected an array",
                            type_name(other)
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => Err(wrong(key, "an array of vectors or a bin of float32", other)),
    }
}

/// Vectors (`n × d`) as msgpack: nested arrays of floats or one `bin` of f32 LE.
pub fn vectors_value(x: &[f32], d: usize, enc: Encoding) -> Value {
    match enc {
        Encoding::Binary => Value::Binary(f32_bytes(x)),
        Encoding::Nested => Value::Array(
            x.chunks(d.max(1)).map(|r| Value::Array(r.iter().map(|&f| Value::F64(f as f64)).collect())).collect(),
        ),
    }
}

/// Vectors (`n × d`, `d` bits for binary codes) as msgpack: float rows as
/// [`vectors_value`]; binary codes as one `bin` of packed codes, or nested arrays of one 0/1
/// per bit (the form FAISSx sends).
pub fn rows_value(x: &Rows, d: usize, enc: Encoding) -> Value {
    match (x, enc) {
        (Rows::Float(v), _) => vectors_value(v, d, enc),
        (Rows::Codes(c), Encoding::Binary) => Value::Binary(c.clone()),
        (Rows::Codes(c), Encoding::Nested) => Value::Array(c.chunks((d / 8).max(1)).map(bits_value).collect()),
    }
}

/// One vector as a flat array: floats, or one 0/1 per bit of a binary code.
pub fn row_value(x: &Rows) -> Value {
    match x {
        Rows::Float(v) => vector_value(v),
        Rows::Codes(c) => bits_value(c),
    }
}

fn bits_value(code: &[u8]) -> Value {
    Value::Array((0..code.len() * 8).map(|j| Value::from((code[j / 8] >> (j % 8)) & 1)).collect())
}

/// One vector as a flat array of floats.
pub fn vector_value(x: &[f32]) -> Value {
    Value::Array(x.iter().map(|&f| Value::F64(f as f64)).collect())
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(x: &[f32]) -> Vec<u8> {
    // Fixed-size chunks compile to a plain copy on little-endian machines.
    let mut b = vec![0u8; x.len() * 4];
    for (c, v) in b.chunks_exact_mut(4).zip(x) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// i64 values as little-endian bytes.
pub fn i64_bytes(x: &[i64]) -> Vec<u8> {
    let mut b = vec![0u8; x.len() * 8];
    for (c, v) in b.chunks_exact_mut(8).zip(x) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Decode a `bin` of f32 LE (reply side).
pub fn f32_from_bytes(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(bad("float32 payload length is not a multiple of 4"));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Decode a `bin` of i64 LE (reply side).
pub fn i64_from_bytes(b: &[u8]) -> Result<Vec<i64>> {
    if !b.len().is_multiple_of(8) {
        return Err(bad("int64 payload length is not a multiple of 8"));
    }
    Ok(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("invariant: 8 bytes"))).collect())
}

/// An array of i64 as msgpack.
pub fn ints_value(x: &[i64]) -> Value {
    Value::Array(x.iter().map(|&i| Value::from(i)).collect())
}

/// An array of f32 as msgpack floats.
pub fn floats_value(x: &[f32]) -> Value {
    Value::Array(x.iter().map(|&f| Value::F64(f as f64)).collect())
}
