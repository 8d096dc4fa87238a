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

mod decode;
pub mod params;
use decode::PACKED_F32;
pub use decode::{peek_head, Head, MAX_DEPTH};

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

/// The `error_code` of a failed reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Missing or unknown API key.
    Auth,
    /// No such index (in the caller's tenant) or id.
    NotFound,
    /// The index exists already.
    AlreadyExists,
    /// The request is malformed or a field is out of range.
    InvalidArgument,
    /// Vector width differs from the index dimension.
    DimensionMismatch,
    /// The index needs training first.
    NotTrained,
    /// Unknown action or an operation the index cannot do.
    Unsupported,
    /// The request exceeds `--max-request-bytes`.
    TooLarge,
    /// The operation timed out.
    Timeout,
    /// Too many requests in flight on this connection or in the server: retry later.
    Busy,
    /// Anything else (FAISS exceptions, I/O failures on the server).
    Internal,
    /// A conditional change lost a race (`import_index` with a stale `if_generation`).
    Conflict,
    /// A quota of the caller's tenant (`serve --max-indices`, `--max-vectors`, `--max-k`,
    /// `--max-nq`) would be exceeded; nothing was changed.
    QuotaExceeded,
}

impl ErrorCode {
    /// The wire spelling (`AUTH_ERROR`, `NOT_FOUND`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Auth => "AUTH_ERROR",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::DimensionMismatch => "DIMENSION_MISMATCH",
            ErrorCode::NotTrained => "NOT_TRAINED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
        }
    }

    /// Parse the wire spelling.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Some(match s {
            "AUTH_ERROR" => ErrorCode::Auth,
            "NOT_FOUND" => ErrorCode::NotFound,
            "ALREADY_EXISTS" => ErrorCode::AlreadyExists,
            "INVALID_ARGUMENT" => ErrorCode::InvalidArgument,
            "DIMENSION_MISMATCH" => ErrorCode::DimensionMismatch,
            "NOT_TRAINED" => ErrorCode::NotTrained,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOO_LARGE" => ErrorCode::TooLarge,
            "TIMEOUT" => ErrorCode::Timeout,
            "BUSY" => ErrorCode::Busy,
            "INTERNAL" => ErrorCode::Internal,
            "CONFLICT" => ErrorCode::Conflict,
            "QUOTA_EXCEEDED" => ErrorCode::QuotaExceeded,
            _ => return None,
        })
    }

    /// The one mapping from engine errors to wire codes.
    pub fn of(e: &Error) -> ErrorCode {
        match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::Protocol | ErrorKind::Format => ErrorCode::InvalidArgument,
            ErrorKind::DimensionMismatch => ErrorCode::DimensionMismatch,
            ErrorKind::NotTrained => ErrorCode::NotTrained,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
            ErrorKind::Unsupported => ErrorCode::Unsupported,
            ErrorKind::TooLarge => ErrorCode::TooLarge,
            ErrorKind::Auth => ErrorCode::Auth,
            ErrorKind::Timeout => ErrorCode::Timeout,
            ErrorKind::Busy => ErrorCode::Busy,
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::QuotaExceeded => ErrorCode::QuotaExceeded,
            ErrorKind::Io | ErrorKind::Faiss | ErrorKind::Remote | ErrorKind::Interrupted | ErrorKind::Internal => {
                ErrorCode::Internal
            }
        }
    }

    /// The engine error kind a client reports for a remote error with this code.
    pub fn kind(self) -> ErrorKind {
        match self {
            ErrorCode::Auth => ErrorKind::Auth,
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::AlreadyExists => ErrorKind::AlreadyExists,
            ErrorCode::InvalidArgument => ErrorKind::InvalidInput,
            ErrorCode::DimensionMismatch => ErrorKind::DimensionMismatch,
            ErrorCode::NotTrained => ErrorKind::NotTrained,
            ErrorCode::Unsupported => ErrorKind::Unsupported,
            ErrorCode::TooLarge => ErrorKind::TooLarge,
            ErrorCode::Timeout => ErrorKind::Timeout,
            ErrorCode::Busy => ErrorKind::Busy,
            ErrorCode::Internal => ErrorKind::Remote,
            ErrorCode::Conflict => ErrorKind::Conflict,
            ErrorCode::QuotaExceeded => ErrorKind::QuotaExceeded,
        }
    }
}

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

    /// A map from key/value pairs.
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

fn decode_vectors(key: &str, v: &Value, d: usize) -> Result<Vec<f32>> {
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
