//! The wire format of `faissx serve` (docs/protocol.md): one MessagePack map per frame,
//! FAISSx-compatible, with binary vector payloads as our extension.
//!
//! This is the only file that knows bytes: it decodes requests and replies into [`Msg`] maps
//! with typed, field-naming accessors, encodes replies, and maps [`Error`] to a wire
//! [`ErrorCode`] (and back, for the client) in exactly one place. It must not know about
//! sockets, indices or tenants.

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{pack_bits, Index, Rows};
pub use rmpv::Value;

mod codes;
mod decode;
pub mod json;
pub mod params;
mod vectors;

pub use codes::ErrorCode;
use decode::PACKED_F32;
pub use decode::{peek_head, Head, MAX_DEPTH};
pub use vectors::*;

/// Memory a request's decoded values may take: 64 MiB plus 4 bytes per byte of the request.
/// Vectors and ids decode to less than their msgpack size (they are packed), so this refuses
/// only frames of many tiny values (a 16 MiB array of one-byte integers would otherwise take
/// half a gigabyte as msgpack values).
pub fn request_budget(len: usize) -> usize {
    (64usize << 20).saturating_add(len.saturating_mul(4))
}

/// Version of this protocol (sent in `health` replies).
pub const PROTOCOL_VERSION: u32 = 1;

/// The server's version string, sent in every reply's `version` field.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest accepted dimension.
pub const MAX_DIMENSION: usize = 65_536;

/// Largest accepted `k`.
pub const MAX_K: usize = 10_000;

/// A protocol error (malformed request or reply).
fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Protocol, msg)
}

/// Server time: seconds since the Unix epoch.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A decoded MessagePack map with string keys: a request or a reply.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    map: Vec<(Value, Value)>,
}

/// How vectors travel: nested arrays (FAISSx) or one `bin` of little-endian f32 (ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Arrays of rows of numbers.
    Nested,
    /// A `bin` of f32 LE, row-major.
    Binary,
}

impl Msg {
    /// Decode one frame (a reply, on the client); it must be a single msgpack map, nested at
    /// most [`MAX_DEPTH`] levels.
    pub fn decode(bytes: &[u8]) -> Result<Msg> {
        Ok(Msg { map: decode::decode_map(bytes, usize::MAX, false)? })
    }

    /// Decode a frame this program encoded from a request it decoded (a `serve --cluster` log
    /// record): as [`Msg::decode`], but packed vector fields ([`Msg::decode_request`]'s) are
    /// accepted back as they were, so the record applies exactly as the request would have.
    pub fn decode_own(bytes: &[u8]) -> Result<Msg> {
        Ok(Msg { map: decode::decode_own(bytes)? })
    }

    /// Decode a request frame from a peer: one msgpack map, nested at most [`MAX_DEPTH`]
    /// levels, whose decoded values take at most [`request_budget`] bytes (`TooLarge`
    /// otherwise). Vector fields and `ids` are packed (4 or 8 bytes per number); the accessors
    /// ([`Msg::vectors`], [`Msg::codes`], [`Msg::ids`]) read them as if they were nested arrays.
    pub fn decode_request(bytes: &[u8]) -> Result<Msg> {
        Ok(Msg { map: decode::decode_map(bytes, request_budget(bytes.len()), true)? })
    }

    /// How many rows vector field `key` holds, when that is known without the index's `d`
    /// (nested or packed rows; `None` for a `bin`). For log lines.
    pub fn rows_hint(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::Array(a) => Some(a.len() as u64),
            Value::Ext(PACKED_F32, b) => Some(decode::packed_rows_count(b) as u64),
            _ => None,
        }
    }

    /// The row width of vector field `key` when the field carries it itself: nested or
    /// packed rows (the first row's length; a flat array of numbers is one row). `None` for a
    /// `bin` (its width is the caller's `d`), an empty array or a missing field.
    pub fn width_hint(&self, key: &str) -> Option<usize> {
        match self.get(key)? {
            Value::Ext(PACKED_F32, b) if b.len() >= 4 => {
                Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).filter(|&w| w > 0)
            }
            Value::Array(a) => match a.first()? {
                Value::Array(row) => Some(row.len()),
                _ => Some(a.len()),
            },
            _ => None,
        }
    }

    /// The fields with string keys, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.map.iter().filter_map(|(k, v)| k.as_str().map(|k| (k, v)))
    }

    /// A message of these fields, in this order.
    pub fn from_pairs(pairs: Vec<(&str, Value)>) -> Msg {
        Msg { map: pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect() }
    }

    /// Encode as one msgpack map.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(&Value::Map(self.map.clone()))
    }

    /// Encode, consuming the map (no copy).
    pub fn into_bytes(self) -> Vec<u8> {
        encode_value(&Value::Map(self.map))
    }

    /// This map as a msgpack value.
    pub fn into_value(self) -> Value {
        Value::Map(self.map)
    }

    /// Set `key` (replacing an existing value).
    pub fn set(&mut self, key: &str, v: impl Into<Value>) {
        let v = v.into();
        match self.map.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some(e) => e.1 = v,
            None => self.map.push((Value::from(key), v)),
        }
    }

    /// Builder form of [`Msg::set`].
    pub fn with(mut self, key: &str, v: impl Into<Value>) -> Msg {
        self.set(key, v);
        self
    }

    /// The raw value of `key` (nil counts as absent).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v).filter(|v| !v.is_nil())
    }

    /// Remove and return `key`.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        let i = self.map.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(self.map.swap_remove(i).1).filter(|v| !v.is_nil())
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// An optional string field.
    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| wrong(key, "a string", v)),
        }
    }

    /// A required string field.
    pub fn req_str(&self, key: &str) -> Result<&str> {
        self.str(key)?.ok_or_else(|| missing(key))
    }

    /// An optional non-negative integer field (integral floats accepted).
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                if let Some(u) = v.as_u64() {
                    return Ok(Some(u));
                }
                match v.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as u64)),
                    _ => Err(wrong(key, "a non-negative integer", v)),
                }
            }
        }
    }

    /// An optional integer field.
    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                if let Some(i) = v.as_i64() {
                    return Ok(Some(i));
                }
                match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(wrong(key, "an integer", v)),
                }
            }
        }
    }

    /// A required integer field.
    pub fn req_int(&self, key: &str) -> Result<i64> {
        self.int(key)?.ok_or_else(|| missing(key))
    }

    /// An optional number field.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().or_else(|| v.as_i64().map(|i| i as f64)).map(Some).ok_or_else(|| wrong(key, "a number", v))
            }
        }
    }

    /// An optional boolean field (default false).
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => v.as_u64().map(|u| u != 0).ok_or_else(|| wrong(key, "a boolean", v)),
        }
    }

    /// A map value as a message (e.g. one row of a reply's array); anything else is a
    /// protocol error.
    pub fn from_value(v: Value) -> Result<Msg> {
        match v {
            Value::Map(map) => Ok(Msg { map }),
            other => Err(bad(format!("expected a map, got {}", type_name(&other)))),
        }
    }

    /// An optional nested map field.
    pub fn map(&self, key: &str) -> Result<Option<Msg>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Map(m)) => Ok(Some(Msg { map: m.clone() })),
            Some(v) => Err(wrong(key, "a map", v)),
        }
    }

    /// An optional array-of-strings field.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| wrong(key, "an array of strings", v)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(wrong(key, "an array of strings", v)),
        }
    }

    /// Vectors of width `d` in field `key`, in either encoding, as `n × d` row-major f32.
    /// Checks the width (`DIMENSION_MISMATCH`) and finiteness (`INVALID_ARGUMENT`).
    pub fn vectors(&self, key: &str, d: usize) -> Result<Vec<f32>> {
        let v = self.get(key).ok_or_else(|| missing(key))?;
        let out = decode_vectors(key, v, d)?;
        if let Some(pos) = crate::engine::io::first_out_of_range(&out) {
            return Err(Error::invalid(format!(
                "{key}: vector {} component {} is {} ({})",
                pos / d.max(1),
                pos % d.max(1),
                out[pos],
                crate::engine::io::out_of_range_reason(out[pos])
            )));
        }
        Ok(out)
    }

    /// Binary vectors of `d` bits (`d` a multiple of 8) from field `key`, packed as codes
    /// (`n × d/8` bytes): nested arrays with one number per bit (`> 0.5` is 1; FAISSx's form)
    /// or a `bin` of packed codes (our extension). Bit j goes to byte j/8 at bit position j%8,
    /// least significant first (numpy `packbits(..., bitorder="little")`).
    ///
    /// Errors: `DimensionMismatch` for a width other than `d` bits (`d/8` bytes per `bin`
    /// row); `InvalidInput` for non-numbers and NaN/∞.
    pub fn codes(&self, key: &str, d: usize) -> Result<Vec<u8>> {
        let v = self.get(key).ok_or_else(|| missing(key))?;
        let cs = d / 8;
        if let Value::Binary(b) = v {
            if cs == 0 || !b.len().is_multiple_of(cs) {
                return Err(Error::new(
                    ErrorKind::DimensionMismatch,
                    format!("{key}: {} bytes is not a whole number of d={d}-bit codes ({cs} bytes each)", b.len()),
                ));
            }
            return Ok(b.clone());
        }
        Ok(pack_bits(&self.vectors(key, d)?))
    }

    /// Vectors from field `key` in the form `ix` takes: binary codes of `ix.d()` bits for a
    /// binary index ([`Msg::codes`]), else float rows ([`Msg::vectors`]).
    pub fn rows(&self, key: &str, ix: &Index) -> Result<Rows> {
        if ix.is_binary() {
            self.codes(key, ix.d()).map(Rows::Codes)
        } else {
            self.vectors(key, ix.d()).map(Rows::Float)
        }
    }

    /// Which encoding field `key` uses (nested when absent).
    pub fn encoding(&self, key: &str) -> Encoding {
        match self.get(key) {
            Some(Value::Binary(_)) => Encoding::Binary,
            _ => Encoding::Nested,
        }
    }

    /// An optional id list: an array of integers or a `bin` of i64 LE.
    pub fn ids(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        match v {
            Value::Binary(b) => {
                if !b.len().is_multiple_of(8) {
                    return Err(Error::invalid(format!("{key}: {} bytes is not a whole number of int64 ids", b.len())));
                }
                Ok(Some(
                    b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("invariant: 8 bytes"))).collect(),
                ))
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| match x.as_i64() {
                    Some(v) => Ok(v),
                    None => match x.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                        _ => Err(Error::invalid(format!("{key}[{i}]: expected an integer id, got {}", type_name(x)))),
                    },
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Value::Integer(_) => Ok(Some(vec![v.as_i64().ok_or_else(|| wrong(key, "an integer id", v))?])),
            v => Err(wrong(key, "an array of ids or a bin of int64", v)),
        }
    }

    /// If this is an error reply, the error it carries.
    pub fn error(&self) -> Option<Error> {
        if matches!(self.get("success"), Some(Value::Boolean(true))) {
            return None;
        }
        let msg = self.str("error").ok().flatten().unwrap_or("server reported failure without a message");
        let code = self.str("error_code").ok().flatten().and_then(ErrorCode::parse).unwrap_or(ErrorCode::Internal);
        Some(Error::new(code.kind(), format!("server: {msg}")))
    }
}

fn missing(key: &str) -> Error {
    Error::invalid(format!("missing field {key:?}"))
}

fn wrong(key: &str, want: &str, got: &Value) -> Error {
    Error::invalid(format!("field {key:?} must be {want}, got {}", type_name(got)))
}

/// A short name of a msgpack value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary data",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(PACKED_F32, _) => "an array of numbers",
        Value::Ext(..) => "an extension value",
    }
}

/// A successful reply: `success`, `timestamp`, `version`, then the payload fields flat.
pub fn ok_reply(payload: Msg) -> Vec<u8> {
    let mut m = Msg::from_pairs(vec![
        ("success", Value::Boolean(true)),
        ("timestamp", Value::F64(now_f64())),
        ("version", Value::from(SERVER_VERSION)),
    ]);
    m.map.extend(payload.map);
    m.into_bytes()
}

/// A failed reply for `e`: `success: false`, one-line `error`, `error_code`.
pub fn error_reply(e: &Error) -> Vec<u8> {
    Msg::from_pairs(vec![
        ("success", Value::Boolean(false)),
        ("error", Value::from(e.chain())),
        ("error_code", Value::from(ErrorCode::of(e).as_str())),
        ("timestamp", Value::F64(now_f64())),
        ("version", Value::from(SERVER_VERSION)),
    ])
    .into_bytes()
}

/// Decode a reply frame on the client; an error reply becomes an [`Error`] of the kind its
/// `error_code` names.
pub fn decode_reply(bytes: &[u8]) -> Result<Msg> {
    let m = Msg::decode(bytes).map_err(|e| bad(format!("invalid reply from server: {}", e.message())))?;
    match m.error() {
        Some(e) => Err(e),
        None => Ok(m),
    }
}

/// Encode a request: `action` plus fields.
pub fn encode_request(action: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut m = Msg::from_pairs(vec![("action", Value::from(action))]);
    m.map.extend(fields.into_iter().map(|(k, v)| (Value::from(k), v)));
    m.into_bytes()
}

/// Encode an arbitrary msgpack value, into a buffer allocated once at its final size (a
/// request can carry megabytes of vectors).
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(v));
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// An upper bound of `v`'s MessagePack size in bytes (headers counted at their largest).
fn encoded_len(v: &Value) -> usize {
    match v {
        Value::String(s) => 5 + s.as_bytes().len(),
        Value::Binary(b) => 5 + b.len(),
        Value::Ext(_, b) => 6 + b.len(),
        Value::Array(a) => 5 + a.iter().map(encoded_len).sum::<usize>(),
        Value::Map(m) => 5 + m.iter().map(|(k, v)| encoded_len(k) + encoded_len(v)).sum::<usize>(),
        _ => 9,
    }
}

/// Decode one msgpack value from the front of `rd`, advancing it (at most [`MAX_DEPTH`]
/// levels deep).
pub fn decode_value(rd: &mut &[u8]) -> Result<Value> {
    decode::decode_one(rd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_both_encodings() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        for enc in [Encoding::Nested, Encoding::Binary] {
            let b = encode_request(
                "add_vectors",
                vec![("index_id", Value::from("a")), ("vectors", vectors_value(&x, 3, enc))],
            );
            let m = Msg::decode(&b).unwrap();
            assert_eq!(m.req_str("action").unwrap(), "add_vectors");
            assert_eq!(m.encoding("vectors"), enc);
            assert_eq!(m.vectors("vectors", 3).unwrap(), x.to_vec());
            let e = m.vectors("vectors", 4).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DimensionMismatch, "{e}");
        }
    }

    #[test]
    fn flat_row_ints_and_nan() {
        let m = Msg::from_pairs(vec![("v", Value::Array(vec![Value::from(1), Value::F32(2.0)]))]);
        assert_eq!(m.vectors("v", 2).unwrap(), vec![1.0, 2.0]);
        let m = Msg::from_pairs(vec![("v", Value::Array(vec![Value::F64(f64::NAN), Value::F32(2.0)]))]);
        assert_eq!(m.vectors("v", 2).unwrap_err().kind(), ErrorKind::InvalidInput);
        let m = Msg::from_pairs(vec![("v", Value::from("x"))]);
        assert_eq!(m.vectors("v", 2).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        assert_eq!(Msg::decode(&[0xc1]).unwrap_err().kind(), ErrorKind::Protocol);
        assert_eq!(Msg::decode(&encode_value(&Value::from(3))).unwrap_err().kind(), ErrorKind::Protocol);
    }

    #[test]
    fn error_reply_round_trip() {
        let e = Error::new(ErrorKind::DimensionMismatch, "expected d=4, got 3");
        let r = decode_reply(&error_reply(&e)).unwrap_err();
        assert_eq!(r.kind(), ErrorKind::DimensionMismatch);
        assert!(r.to_string().contains("expected d=4"));
        let ok = decode_reply(&ok_reply(Msg::default().with("message", "pong"))).unwrap();
        assert_eq!(ok.str("message").unwrap(), Some("pong"));
        for c in ["AUTH_ERROR", "NOT_FOUND", "TOO_LARGE", "INTERNAL", "QUOTA_EXCEEDED"] {
            assert_eq!(ErrorCode::parse(c).unwrap().as_str(), c);
        }
        let q = decode_reply(&error_reply(&Error::new(ErrorKind::QuotaExceeded, "too many"))).unwrap_err();
        assert_eq!(q.kind(), ErrorKind::QuotaExceeded);
    }

    #[test]
    fn ids_both_encodings() {
        let m = Msg::from_pairs(vec![("ids", Value::Binary(i64_bytes(&[5, -1])))]);
        assert_eq!(m.ids("ids").unwrap(), Some(vec![5, -1]));
        let m = Msg::from_pairs(vec![("ids", ints_value(&[7, 8]))]);
        assert_eq!(m.ids("ids").unwrap(), Some(vec![7, 8]));
        let m = Msg::from_pairs(vec![("ids", Value::from("x"))]);
        assert!(m.ids("ids").is_err());
    }
}
