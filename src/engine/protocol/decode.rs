//! Decoding MessagePack frames from untrusted peers, with bounds: nesting depth, and the memory
//! the decoded values may take. [`peek_head`] reads only the top-level strings needed to
//! authenticate (`action`, `api_key`, `tenant_id`) without allocating, so a request with a
//! wrong key costs nothing but a scan. [`decode_map`] decodes a whole frame; on requests, the
//! vector fields (`vectors`, `query_vectors`, `training_vectors`, `vector`) and `ids` are
//! decoded straight into packed arrays — 4 bytes per number instead of a 32-byte msgpack
//! value each — and every other value is charged against a byte budget, so a 16 MiB array of
//! one-byte integers is refused instead of growing to half a gigabyte.
//!
//! The format is MessagePack's (msgpack.org spec); lengths are big-endian. Header lengths are
//! never trusted for allocation: capacities are capped by the bytes left in the frame.

use super::{bad, Value};
use crate::engine::error::{Error, ErrorKind, Result};

/// How deeply arrays and maps may nest (metadata values included).
pub const MAX_DEPTH: usize = 64;

/// Private extension type of a packed vector field: `[u32 LE width][f32 LE …]`, `n × width`
/// row-major. Made only by this decoder (peers' extension values are refused), read only by
/// `Msg`'s vector accessors.
pub(crate) const PACKED_F32: i8 = 100;

/// Fields decoded as packed f32 rows when they are arrays of numbers or of rows of numbers.
const VECTOR_FIELDS: [&str; 4] = ["vectors", "query_vectors", "training_vectors", "vector"];

/// Bytes charged for one decoded msgpack value.
const VALUE_BYTES: usize = std::mem::size_of::<Value>();

/// The fields of a request read before it is authenticated.
#[derive(Debug, Default, Clone, Copy)]
pub struct Head<'a> {
    /// `action`.
    pub action: Option<&'a str>,
    /// `api_key`.
    pub api_key: Option<&'a str>,
    /// `tenant_id`.
    pub tenant_id: Option<&'a str>,
}

/// One msgpack item header.
enum Tok<'a> {
    Nil,
    Bool(bool),
    Int(rmpv::Integer),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
    /// An extension value: its type and data (refused, but for [`PACKED_F32`] in frames
    /// this program encoded itself).
    Ext(i8, &'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Bytes the decoded values may still take.
    budget: usize,
    /// Whether [`PACKED_F32`] values are accepted (frames this program encoded itself).
    own: bool,
}

fn truncated() -> Error {
    bad("not valid MessagePack (truncated)")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn charge(&mut self, n: usize) -> Result<()> {
        if n > self.budget {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "request decodes to more memory than the server allows for its size: send vectors as arrays of numbers or a bin of float32, and fewer or smaller other values",
            ));
        }
        self.budget -= n;
        Ok(())
    }

    fn tok(&mut self) -> Result<Tok<'a>> {
        let m = self.take(1)?[0];
        let n = |r: &mut Self, w: usize| r.be(w).map(|v| v as usize);
        Ok(match m {
            0x00..=0x7f => Tok::Int(rmpv::Integer::from(m)),
            0xe0..=0xff => Tok::Int(rmpv::Integer::from(m as i8)),
            0x80..=0x8f => Tok::Map((m & 0x0f) as usize),
            0x90..=0x9f => Tok::Array((m & 0x0f) as usize),
            0xa0..=0xbf => Tok::Str(self.take((m & 0x1f) as usize)?),
            0xc0 => Tok::Nil,
            0xc2 => Tok::Bool(false),
            0xc3 => Tok::Bool(true),
            0xc4..=0xc6 => {
                let len = n(self, 1 << (m - 0xc4))?;
                Tok::Bin(self.take(len)?)
            }
            0xc7..=0xc9 => {
                let len = n(self, 1 << (m - 0xc7))?;
                let t = self.take(1)?[0] as i8;
                Tok::Ext(t, self.take(len)?)
            }
            0xca => Tok::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Tok::F64(f64::from_bits(self.be(8)?)),
            0xcc => Tok::Int(rmpv::Integer::from(self.be(1)?)),
            0xcd => Tok::Int(rmpv::Integer::from(self.be(2)?)),
            0xce => Tok::Int(rmpv::Integer::from(self.be(4)?)),
            0xcf => Tok::Int(rmpv::Integer::from(self.be(8)?)),
            0xd0 => Tok::Int(rmpv::Integer::from(self.be(1)? as u8 as i8)),
            0xd1 => Tok::Int(rmpv::Integer::from(self.be(2)? as u16 as i16)),
            0xd2 => Tok::Int(rmpv::Integer::from(self.be(4)? as u32 as i32)),
            0xd3 => Tok::Int(rmpv::Integer::from(self.be(8)? as i64)),
            0xd4..=0xd8 => {
                let t = self.take(1)?[0] as i8;
                Tok::Ext(t, self.take(1 << (m - 0xd4))?)
            }
            0xd9..=0xdb => {
                let len = n(self, 1 << (m - 0xd9))?;
                Tok::Str(self.take(len)?)
            }
            0xdc | 0xdd => Tok::Array(n(self, 2 << (m - 0xdc))?),
            0xde | 0xdf => Tok::Map(n(self, 2 << (m - 0xde))?),
            _ => return Err(bad(format!("not valid MessagePack (reserved byte 0x{m:02x})"))),
        })
    }

    /// Skip one value (and everything inside it) without allocating.
    fn skip(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        match self.tok()? {
            Tok::Array(n) => (0..n).try_for_each(|_| self.skip(depth + 1)),
            Tok::Map(n) => (0..n).try_for_each(|_| self.skip(depth + 1).and_then(|_| self.skip(depth + 1))),
            _ => Ok(()),
        }
    }

    /// Decode one value, charging its memory to the budget.
    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        self.charge(VALUE_BYTES)?;
        Ok(match self.tok()? {
            Tok::Nil => Value::Nil,
            Tok::Bool(b) => Value::Boolean(b),
            Tok::Int(i) => Value::Integer(i),
            Tok::F32(f) => Value::F32(f),
            Tok::F64(f) => Value::F64(f),
            Tok::Str(s) => {
                self.charge(s.len())?;
                match std::str::from_utf8(s) {
                    Ok(s) => Value::from(s),
                    Err(_) => return Err(bad("request holds a string that is not UTF-8")),
                }
            }
            Tok::Bin(b) => {
                self.charge(b.len())?;
                Value::Binary(b.to_vec())
            }
            Tok::Array(n) => {
                // Every element takes at least one byte of the frame.
                let mut a = Vec::with_capacity(n.min(self.left()));
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            Tok::Map(n) => {
                let mut m = Vec::with_capacity(n.min(self.left() / 2));
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    let v = self.value(depth + 1)?;
                    m.push((k, v));
                }
                Value::Map(m)
            }
            Tok::Ext(PACKED_F32, b) if self.own => {
                if !packed_ok(b) {
                    return Err(bad("a packed vector field is malformed"));
                }
                self.charge(b.len())?;
                Value::Ext(PACKED_F32, b.to_vec())
            }
            Tok::Ext(..) => return Err(bad("MessagePack extension types are not accepted")),
        })
    }

    /// An array of numbers, or of equally long arrays of numbers, of `n` items as a packed
    /// value; `None` (position and budget unchanged) for any other shape, which then decodes
    /// as usual so that the field's accessor can say what is wrong with it.
    fn packed_rows(&mut self, n: usize) -> Result<Option<Value>> {
        let (start, budget) = (self.pos, self.budget);
        let mut out: Vec<u8> = Vec::with_capacity(4 + 4 * n.min(self.left()));
        out.extend_from_slice(&[0; 4]);
        let mut width: Option<usize> = None;
        let mut flat = false;
        for _ in 0..n {
            let ok = match self.tok()? {
                Tok::Array(w) if !flat && width.is_none_or(|x| x == w) => {
                    width = Some(w);
                    self.charge(4 * w)?;
                    let mut ok = true;
                    for _ in 0..w {
                        match number(&self.tok()?) {
                            Some(f) => out.extend_from_slice(&f.to_le_bytes()),
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    ok
                }
                t if width.is_none() => match number(&t) {
                    Some(f) => {
                        flat = true;
                        self.charge(4)?;
                        out.extend_from_slice(&f.to_le_bytes());
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            if !ok {
                (self.pos, self.budget) = (start, budget);
                return Ok(None);
            }
        }
        let w = if flat { n } else { width.unwrap_or(0) };
        out[..4].copy_from_slice(&(u32::try_from(w).map_err(|_| bad("vector row is too long"))?).to_le_bytes());
        Ok(Some(Value::Ext(PACKED_F32, out)))
    }

    /// An array of `n` integers as a `bin` of i64 LE (the ids encoding); `None` (position
    /// unchanged) when an item is not an integer.
    fn packed_ids(&mut self, n: usize) -> Result<Option<Value>> {
        let (start, budget) = (self.pos, self.budget);
        let mut out = Vec::with_capacity(8 * n.min(self.left()));
        for _ in 0..n {
            match self.tok()? {
                Tok::Int(i) if i.as_i64().is_some() => {
                    self.charge(8)?;
                    out.extend_from_slice(&i.as_i64().unwrap_or_default().to_le_bytes());
                }
                _ => {
                    (self.pos, self.budget) = (start, budget);
                    return Ok(None);
                }
            }
        }
        Ok(Some(Value::Binary(out)))
    }
}

/// A number item as f32 (`None` for anything else).
fn number(t: &Tok<'_>) -> Option<f32> {
    match t {
        Tok::Int(i) => Some(i.as_f64().unwrap_or(f64::NAN) as f32),
        Tok::F32(f) => Some(*f),
        Tok::F64(f) => Some(*f as f32),
        _ => None,
    }
}

fn too_deep() -> Error {
    bad(format!("request nests arrays or maps deeper than {MAX_DEPTH} levels"))
}

/// The length of the frame's top-level map.
fn top_map<'a>(r: &mut Reader<'a>) -> Result<usize> {
    match r.tok()? {
        Tok::Map(n) => Ok(n),
        _ => Err(bad("request must be a MessagePack map")),
    }
}

/// Read `action`, `api_key` and `tenant_id` of a request frame without decoding (or
/// allocating for) anything else. The first occurrence of a key counts, as when the whole
/// frame is decoded ([`super::Msg::decode_request`]).
///
/// Errors: `Protocol` for a frame that is not one msgpack map, or a field of these three that
/// is not a string.
pub fn peek_head(bytes: &[u8]) -> Result<Head<'_>> {
    let mut r = Reader { buf: bytes, pos: 0, budget: 0, own: false };
    let n = top_map(&mut r)?;
    let mut head = Head::default();
    for _ in 0..n {
        let key = match r.tok()? {
            Tok::Str(s) => Some(s),
            _ => None,
        };
        let slot = match key {
            Some(b"action") => Some(&mut head.action),
            Some(b"api_key") => Some(&mut head.api_key),
            Some(b"tenant_id") => Some(&mut head.tenant_id),
            _ => None,
        };
        match slot {
            Some(slot) if slot.is_none() => match r.tok()? {
                Tok::Str(s) => *slot = Some(std::str::from_utf8(s).map_err(|_| bad("a request string is not UTF-8"))?),
                Tok::Nil => {}
                _ => {
                    let name = std::str::from_utf8(key.unwrap_or_default()).unwrap_or("?");
                    return Err(Error::invalid(format!("field {name:?} must be a string")));
                }
            },
            _ => r.skip(1)?,
        }
    }
    Ok(head)
}

/// Decode a frame that must be one msgpack map (`Protocol` error otherwise) whose values may
/// take at most `budget` bytes of memory once decoded (`TooLarge` otherwise). With `pack`
/// (requests), vector fields and `ids` are packed as described in the module docs.
pub fn decode_map(bytes: &[u8], budget: usize, pack: bool) -> Result<Vec<(Value, Value)>> {
    map_of(Reader { buf: bytes, pos: 0, budget, own: false }, pack)
}

/// Decode a frame this program encoded itself from a decoded request (a `serve --cluster`
/// log record): one msgpack map, like [`decode_map`] without a budget, in which the packed
/// vector fields of the request (the private [`PACKED_F32`] extension type) are accepted
/// back as they were.
///
/// Errors: `Protocol` for a frame that is not one map, another extension type, or a packed
/// field whose length does not fit its row width.
pub fn decode_own(bytes: &[u8]) -> Result<Vec<(Value, Value)>> {
    map_of(Reader { buf: bytes, pos: 0, budget: usize::MAX, own: true }, false)
}

/// Whether `b` is a packed vector field: the u32 width, then a whole number of rows of f32.
fn packed_ok(b: &[u8]) -> bool {
    if b.len() < 4 || !(b.len() - 4).is_multiple_of(4) {
        return false;
    }
    let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let n = (b.len() - 4) / 4;
    if w == 0 {
        n == 0
    } else {
        n.is_multiple_of(w)
    }
}

fn map_of(mut r: Reader<'_>, pack: bool) -> Result<Vec<(Value, Value)>> {
    let n = top_map(&mut r)?;
    let mut map = Vec::with_capacity(n.min(r.left() / 2));
    for _ in 0..n {
        let k = r.value(1)?;
        let packed = match (pack, k.as_str()) {
            (true, Some(name)) if VECTOR_FIELDS.contains(&name) || name == "ids" => {
                let here = r.pos;
                let packed = match r.tok()? {
                    Tok::Array(len) if name == "ids" => r.packed_ids(len)?,
                    Tok::Array(len) => r.packed_rows(len)?,
                    _ => None,
                };
                if packed.is_none() {
                    r.pos = here;
                }
                packed
            }
            _ => None,
        };
        let v = match packed {
            Some(v) => v,
            None => r.value(1)?,
        };
        map.push((k, v));
    }
    if r.left() != 0 {
        return Err(bad(format!("request has {} bytes after its MessagePack map", r.left())));
    }
    Ok(map)
}

/// Decode one msgpack value from the front of `rd` (advancing it), with the depth limit and
/// no memory budget beyond the input's own bounds (files the server wrote itself).
pub fn decode_one(rd: &mut &[u8]) -> Result<Value> {
    let mut r = Reader { buf: rd, pos: 0, budget: usize::MAX, own: false };
    let v = r.value(0)?;
    *rd = &rd[r.pos..];
    Ok(v)
}

/// How many rows a packed vector field holds (without unpacking it).
pub(crate) fn packed_rows_count(b: &[u8]) -> usize {
    let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    ((b.len() - 4) / 4).checked_div(w).unwrap_or(0)
}

/// The packed rows of a vector field: `(width, values)`.
pub(crate) fn unpack_f32(b: &[u8]) -> (usize, Vec<f32>) {
    let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    (w, b[4..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::protocol::encode_value;

    fn map(pairs: Vec<(&str, Value)>) -> Vec<u8> {
        encode_value(&Value::Map(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect()))
    }

    #[test]
    fn head_is_read_without_the_rest() {
        let big = Value::Array((0..10_000).map(|i| Value::from(i % 100)).collect());
        let b = map(vec![("junk", big), ("api_key", Value::from("k1")), ("action", Value::from("search"))]);
        let h = peek_head(&b).unwrap();
        assert_eq!((h.action, h.api_key, h.tenant_id), (Some("search"), Some("k1"), None));
        assert!(peek_head(&map(vec![("action", Value::from(3))])).is_err());
        assert!(peek_head(&encode_value(&Value::from(3))).is_err());
    }

    #[test]
    fn vectors_and_ids_are_packed() {
        let rows = Value::Array(vec![
            Value::Array(vec![Value::F64(1.0), Value::from(2)]),
            Value::Array(vec![Value::F32(3.0), Value::F64(4.5)]),
        ]);
        let b = map(vec![
            ("vectors", rows),
            ("ids", Value::Array(vec![Value::from(7), Value::from(-2)])),
            ("vector", Value::Array(vec![Value::F64(1.0), Value::F64(2.0), Value::F64(3.0)])),
        ]);
        let m = decode_map(&b, 1 << 20, true).unwrap();
        let Value::Ext(PACKED_F32, p) = &m[0].1 else { panic!("{:?}", m[0].1) };
        assert_eq!(unpack_f32(p), (2, vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(packed_rows_count(p), 2);
        assert_eq!(m[1].1, Value::Binary([7i64.to_le_bytes(), (-2i64).to_le_bytes()].concat()));
        let Value::Ext(PACKED_F32, p) = &m[2].1 else { panic!() };
        assert_eq!(unpack_f32(p), (3, vec![1.0, 2.0, 3.0]));
        // Ragged rows and non-numbers stay ordinary values (their accessors explain them).
        let ragged =
            Value::Array(vec![Value::Array(vec![Value::from(1)]), Value::Array(vec![Value::from(1), Value::from(2)])]);
        let m = decode_map(&map(vec![("vectors", ragged.clone())]), 1 << 20, true).unwrap();
        assert_eq!(m[0].1, ragged);
        let mixed = Value::Array(vec![Value::from(1), Value::from("x")]);
        let m = decode_map(&map(vec![("vectors", mixed.clone())]), 1 << 20, true).unwrap();
        assert_eq!(m[0].1, mixed);
    }

    #[test]
    fn budget_depth_and_lengths_are_bounded() {
        let small_ints = Value::Array((0..100_000).map(|_| Value::from(1)).collect());
        let b = map(vec![("junk", small_ints)]);
        assert_eq!(decode_map(&b, 1 << 20, true).unwrap_err().kind(), ErrorKind::TooLarge);
        // 10,000 levels of nesting.
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 10_000));
        deep.push(0xc0);
        assert_eq!(decode_map(&deep, usize::MAX, true).unwrap_err().kind(), ErrorKind::Protocol);
        assert_eq!(peek_head(&deep).unwrap_err().kind(), ErrorKind::Protocol);
        // An array header claiming 2^32-1 items in a 10-byte frame.
        let lie = [0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(decode_map(&lie, usize::MAX, true).unwrap_err().kind(), ErrorKind::Protocol);
        // Peers' extension values and trailing bytes are refused.
        let ext = [0x81, 0xa1, b'x', 0xd4, PACKED_F32 as u8, 0];
        assert!(decode_map(&ext, usize::MAX, true).is_err());
        let mut trailing = map(vec![("a", Value::from(1))]);
        trailing.push(0xc0);
        assert!(decode_map(&trailing, usize::MAX, true).is_err());
    }

    #[test]
    fn every_marker_round_trips() {
        let v = Value::Map(vec![
            (Value::from("i"), Value::Array(vec![Value::from(-100), Value::from(u64::MAX), Value::from(i64::MIN)])),
            (Value::from("f"), Value::Array(vec![Value::F32(1.5), Value::F64(-2.25)])),
            (Value::from("s"), Value::from("x".repeat(300))),
            (Value::from("b"), Value::Binary(vec![1; 70_000])),
            (Value::from("n"), Value::Array(vec![Value::Nil, Value::Boolean(true), Value::Boolean(false)])),
            (Value::from("m"), Value::Map((0..20).map(|i| (Value::from(i), Value::from(i))).collect())),
        ]);
        let b = encode_value(&v);
        assert_eq!(Value::Map(decode_map(&b, usize::MAX, false).unwrap()), v);
        let mut rd = &b[..];
        assert_eq!(decode_one(&mut rd).unwrap(), v);
        assert!(rd.is_empty());
    }
}

/// Bounded fuzzing of the decoder (proptest on stable): arbitrary and mutated frames never
/// panic, and what decodes stays within its budget.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::engine::protocol::encode_value;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f32>().prop_map(Value::F32),
            any::<f64>().prop_map(Value::F64),
            "[a-z_]{0,12}".prop_map(|s| Value::from(s.as_str())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
            ]
        })
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let key = prop_oneof![
            Just("action"),
            Just("api_key"),
            Just("vectors"),
            Just("query_vectors"),
            Just("ids"),
            Just("k"),
            Just("x")
        ];
        proptest::collection::vec((key, value()), 0..6).prop_map(|fields| {
            encode_value(&Value::Map(fields.into_iter().map(|(k, v)| (Value::from(k), v)).collect()))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = peek_head(&b);
            let _ = decode_map(&b, 1 << 16, true);
            let mut rd = &b[..];
            let _ = decode_one(&mut rd);
        }

        #[test]
        fn mutated_requests_never_panic(
            req in request(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            // The unmutated request decodes, packed or not, and its head agrees with it.
            let full = decode_map(&req, usize::MAX, true).expect("a valid request decodes");
            let head = peek_head(&req).ok();
            let first = |k: &str| full.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v.clone());
            if let (Some(h), Some(Value::String(a))) = (head, first("action")) {
                prop_assert_eq!(h.action, a.as_str());
            }
            let mut m = req.clone();
            for (at, byte) in flips {
                let n = m.len();
                m[at % n] ^= byte | 1;
            }
            m.truncate(cut % (m.len() + 1));
            let _ = peek_head(&m);
            let _ = decode_map(&m, 1 << 16, true);
        }
    }
}
