//! The write-ahead log's file format: `[u32 len][u32 crc32][msgpack record]…` (little-endian),
//! appended and fsynced before a mutation is applied, and read back, with a torn final record
//! told apart from damage, at start-up.

use crate::engine::error::{Error, IoContext, Result};
use crate::engine::protocol::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

/// The `seq` of a WAL record.
pub fn record_seq(v: &Value) -> Option<u64> {
    match v {
        Value::Map(m) => m.iter().find(|(k, _)| k.as_str() == Some("seq")).and_then(|(_, v)| v.as_u64()),
        _ => None,
    }
}

/// What [`read_wal`] found.
#[derive(Debug)]
pub(super) struct WalScan {
    /// Records with `seq` above the checkpoint's, in order.
    pub(super) records: Vec<Value>,
    /// Length of the sound prefix: the file's length unless a torn tail follows.
    pub(super) good_len: u64,
    /// What the torn final record looked like, if there is one.
    pub(super) torn: Option<String>,
}

/// How a byte string reads as the start of one MessagePack value.
pub(super) enum Prefix {
    /// A whole value of this many bytes.
    Complete(usize),
    /// The start of a value that goes on past the end.
    Unfinished,
    /// Not MessagePack.
    Invalid(String),
}

pub(super) fn msgpack_prefix(b: &[u8]) -> Prefix {
    let mut rd = b;
    match rmpv::decode::read_value(&mut rd) {
        Ok(_) => Prefix::Complete(b.len() - rd.len()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Prefix::Unfinished,
        Err(e) => Prefix::Invalid(e.to_string()),
    }
}

/// Read the WAL: records with seq > `after`, and where its sound part ends.
///
/// A torn final record (what a crash in the middle of an append leaves) is reported in
/// [`WalScan::torn`] for the caller to cut. Anything else that is wrong — a bad record with
/// more bytes after it, a record that does not decode — is an error naming the file, the
/// record number (from 1) and its byte offset; the file is not touched.
pub(super) fn read_wal(path: &Path, after: u64) -> Result<WalScan> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).at(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(WalScan { records: Vec::new(), good_len: 0, torn: None })
        }
        Err(e) => return Err(Error::io(path, e)),
    }
    let total = bytes.len();
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut n = 0u64;
    let torn = |pos: usize, out: Vec<Value>, what: String| {
        Ok(WalScan { records: out, good_len: pos as u64, torn: Some(what) })
    };
    while pos < total {
        n += 1;
        let rest = &bytes[pos..];
        let corrupt = |what: String| {
            Error::format(
                path,
                format!(
                    "corrupt record {n} at byte offset {pos} of {total}: {what}; the index is quarantined and the file left as it is"
                ),
            )
        };
        if rest.iter().all(|&b| b == 0) {
            // Never a record (the payload is a non-empty map): space a crash left unwritten.
            return torn(pos, out, format!("{} zero bytes", rest.len()));
        }
        if rest.len() < 8 {
            return torn(pos, out, format!("{} of 8 header bytes", rest.len()));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("invariant: 4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("invariant: 4 bytes"));
        let avail = rest.len() - 8;
        if len > avail {
            // An unfinished append leaves the front of one record: a MessagePack value that
            // breaks off at the end of the file. A whole value, or bytes that are not
            // MessagePack, mean the length itself is damaged.
            return match msgpack_prefix(&rest[8..]) {
                Prefix::Unfinished => torn(pos, out, format!("{avail} of {len} payload bytes")),
                Prefix::Complete(k) => Err(corrupt(format!(
                    "its header declares {len} payload bytes, past the end of the file, but a complete record of {k} bytes follows it"
                ))),
                Prefix::Invalid(e) => Err(corrupt(format!(
                    "its header declares {len} payload bytes, past the end of the file, and what follows is not a record ({e})"
                ))),
            };
        }
        let end = pos + 8 + len;
        let payload = &rest[8..8 + len];
        let actual = crc32(payload);
        if actual != crc {
            let wrong_length = matches!(msgpack_prefix(payload), Prefix::Complete(k) if k < len);
            if end == total && !wrong_length {
                return torn(
                    pos,
                    out,
                    format!("checksum mismatch in the final record (stored {crc:08x}, computed {actual:08x})"),
                );
            }
            return Err(corrupt(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x} over the {len} bytes its header declares), {} bytes follow it",
                total - end
            )));
        }
        let mut rd = payload;
        let v = rmpv::decode::read_value(&mut rd).map_err(|e| corrupt(format!("does not decode ({e})")))?;
        if !rd.is_empty() {
            return Err(corrupt(format!("{} stray bytes after the record", rd.len())));
        }
        let Some(seq) = record_seq(&v) else {
            return Err(corrupt("not a map with a \"seq\"".to_string()));
        };
        if seq > after {
            out.push(v);
        }
        pos = end;
    }
    Ok(WalScan { records: out, good_len: pos as u64, torn: None })
}

/// Where WAL records go: the file, or in tests a wrapper that fails on demand.
pub(super) trait WalFile: Send + Sync {
    /// Write all of `rec` at the end.
    fn append(&mut self, rec: &[u8]) -> std::io::Result<()>;
    /// Make the appended bytes durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cut the file to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl WalFile for File {
    fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
        self.write_all(rec)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        // The file is opened O_APPEND: later writes go to the new end.
        self.set_len(len)?;
        self.sync_all()
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib): the WAL record checksum.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}
