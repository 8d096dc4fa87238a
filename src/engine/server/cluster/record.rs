//! Log records: a write as it travels through the replicated log, and the reassembly of
//! writes larger than one NATS message.
//!
//! A record is the authenticated request itself, re-encoded as MessagePack without its API
//! key: `{"t": tenant, "a": action, "m": fields}`. Every replica applies it with the same
//! code the single-node server runs for that request, in log order, so every replica ends
//! in the same state (ids of adds without ids included). A record larger than one message
//! (NATS's `max_payload`, 1 MiB by default) is published as consecutive parts, each with
//! the headers [`WRITE_HEADER`] (the write's id) and [`PART_HEADER`] (`i/n`); a replica
//! applies the write once it holds all `n` parts, so the client sees one atomic write.

use super::super::{Action, Call};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::{Msg, Value};
use std::collections::HashMap;

/// Header naming the write a part belongs to (unique per write, also the base of each
/// part's `Nats-Msg-Id`, so a part published twice is stored once).
pub const WRITE_HEADER: &str = "Faissx-Write";
/// Header `i/n`: this is part `i` (0-based) of `n`.
pub const PART_HEADER: &str = "Faissx-Part";

/// Parts of a write that are still missing this many log records after its first part
/// (its publisher died between parts) are dropped. The rule depends only on the log, so
/// every replica drops the same writes.
pub const MAX_PART_SPAN: u64 = 10_000;

/// The log record of `call` (its API key is never part of it).
pub fn encode(call: &Call) -> Vec<u8> {
    let mut fields = call.msg.clone();
    fields.take("api_key");
    Msg::default().with("t", call.tenant.as_str()).with("a", call.action.name()).with("m", fields.into_value()).encode()
}

/// The call a log record holds.
///
/// Errors: `Format` when the bytes are not a record.
pub fn decode(bytes: &[u8]) -> Result<Call> {
    // Vectors a client sent as nested arrays were packed when its request was decoded, and
    // travel packed: a record holds what the receiving replica held.
    let mut m = Msg::decode_own(bytes).map_err(|e| Error::new(ErrorKind::Format, format!("log record: {e}")))?;
    let tenant = m.req_str("t")?.to_string();
    let action = Action::from_name(m.req_str("a")?)?;
    // Taken, not cloned: an add's vectors are most of the record.
    let msg = match m.take("m") {
        Some(v @ Value::Map(_)) => Msg::from_value(v)?,
        _ => return Err(Error::new(ErrorKind::Format, "log record has no fields (\"m\")")),
    };
    Ok(Call { action, tenant, msg })
}

/// Split `bytes` into parts of at most `max` bytes (at least one part, even when empty).
pub fn split(bytes: &[u8], max: usize) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(max.max(1)).collect()
}

/// The `i/n` of a part header.
pub fn parse_part(h: &str) -> Option<(usize, usize)> {
    let (i, n) = h.split_once('/')?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (n >= 1 && i < n).then_some((i, n))
}

struct Pending {
    first_seq: u64,
    parts: Vec<Option<Vec<u8>>>,
    held: usize,
}

/// Writes whose parts are still arriving, by write id.
#[derive(Default)]
pub struct Assembler {
    pending: HashMap<String, Pending>,
}

/// What one log message completes.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// A whole record: apply it.
    Record(Vec<u8>),
    /// A part of a write still missing others.
    Waiting,
}

impl Assembler {
    /// Take the message at log sequence `seq`, part `part` (`i/n`, or `None` for a record
    /// in one message) of write `write`. Returns the whole record once every part is held,
    /// and the ids of writes dropped because their parts span more than [`MAX_PART_SPAN`]
    /// records.
    ///
    /// Errors: `Format` for a part header that does not parse or disagrees with the
    /// write's earlier parts.
    pub fn push(
        &mut self,
        seq: u64,
        write: Option<&str>,
        part: Option<&str>,
        payload: &[u8],
    ) -> (Result<Assembled>, Vec<String>) {
        let dropped = self.expire(seq);
        let (Some(write), Some(part)) = (write, part) else {
            return (Ok(Assembled::Record(payload.to_vec())), dropped);
        };
        let Some((i, n)) = parse_part(part) else {
            return (Err(Error::new(ErrorKind::Format, format!("log seq {seq}: bad part header {part:?}"))), dropped);
        };
        if n == 1 {
            return (Ok(Assembled::Record(payload.to_vec())), dropped);
        }
        let p = self.pending.entry(write.to_string()).or_insert_with(|| Pending {
            first_seq: seq,
            parts: vec![None; n],
            held: 0,
        });
        if p.parts.len() != n {
            self.pending.remove(write);
            return (
                Err(Error::new(ErrorKind::Format, format!("log seq {seq}: write {write} changes its part count"))),
                dropped,
            );
        }
        if p.parts[i].is_none() {
            p.parts[i] = Some(payload.to_vec());
            p.held += 1;
        }
        if p.held < n {
            return (Ok(Assembled::Waiting), dropped);
        }
        let p = self.pending.remove(write).expect("invariant: present");
        // One allocation and a memcpy per part (collecting the bytes one by one was a third
        // of a replica's CPU time for large adds).
        let mut whole = Vec::with_capacity(p.parts.iter().flatten().map(Vec::len).sum());
        for part in p.parts.iter().flatten() {
            whole.extend_from_slice(part);
        }
        (Ok(Assembled::Record(whole)), dropped)
    }

    fn expire(&mut self, seq: u64) -> Vec<String> {
        let old: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| seq.saturating_sub(p.first_seq) > MAX_PART_SPAN)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.pending.remove(k);
        }
        old
    }

    /// The lowest log sequence a write still being assembled started at (`None`: none).
    /// A snapshot must not be taken past it, or a replica restored from it would miss the
    /// write's first parts.
    pub fn oldest(&self) -> Option<u64> {
        self.pending.values().map(|p| p.first_seq).min()
    }

    /// Forget every write being assembled (the replica restarts from a snapshot).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_without_the_api_key() {
        let msg = Msg::default().with("index_id", "docs").with("api_key", "secret").with("k", 3u64);
        let call = Call { action: Action::AddVectors, tenant: "acme".into(), msg };
        let bytes = encode(&call);
        assert!(!bytes.windows(6).any(|w| w == b"secret"), "the API key must not reach the log");
        let back = decode(&bytes).unwrap();
        assert_eq!(back.action, Action::AddVectors);
        assert_eq!(back.tenant, "acme");
        assert_eq!(back.msg.str("index_id").unwrap(), Some("docs"));
        assert!(back.msg.get("api_key").is_none());
        assert_eq!(decode(b"\x93\x01\x02\x03").err().map(|e| e.kind()), Some(ErrorKind::Format));
    }

    #[test]
    fn nested_vectors_travel_packed_and_apply_as_received() {
        use crate::engine::protocol::{encode_request, vectors_value, Encoding};
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let req = encode_request(
            "add_vectors",
            vec![("index_id", Value::from("a")), ("vectors", vectors_value(&x, 3, Encoding::Nested))],
        );
        let msg = Msg::decode_request(&req).unwrap();
        let call = Call { action: Action::AddVectors, tenant: "t".into(), msg };
        let back = decode(&encode(&call)).unwrap();
        assert_eq!(back.msg.vectors("vectors", 3).unwrap(), x.to_vec());
        assert_eq!(back.msg.vectors("vectors", 2).unwrap_err().kind(), ErrorKind::DimensionMismatch);
        // Another extension type, or a packed field whose length does not fit its width, is
        // still refused.
        for (t, data) in [(7i8, vec![0u8; 8]), (100, vec![3, 0, 0, 0, 0, 0, 0, 0]), (100, vec![1, 0])] {
            let m = Msg::default()
                .with("t", "t")
                .with("a", "add_vectors")
                .with("m", Msg::default().with("index_id", "a").with("vectors", Value::Ext(t, data)).into_value());
            assert_eq!(decode(&m.encode()).err().map(|e| e.kind()), Some(ErrorKind::Format));
        }
    }

    #[test]
    fn parts_reassemble_in_any_order_and_interleaved() {
        let a: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..1500u32).map(|i| (i % 13) as u8).collect();
        let (pa, pb) = (split(&a, 1000), split(&b, 1000));
        assert_eq!((pa.len(), pb.len()), (3, 2));
        let mut asm = Assembler::default();
        let push = |asm: &mut Assembler, seq, w: &str, i: usize, n: usize, p: &[u8]| {
            asm.push(seq, Some(w), Some(&format!("{i}/{n}")), p).0.unwrap()
        };
        assert_eq!(push(&mut asm, 1, "a", 0, 3, pa[0]), Assembled::Waiting);
        assert_eq!(push(&mut asm, 2, "b", 1, 2, pb[1]), Assembled::Waiting);
        assert_eq!(asm.oldest(), Some(1));
        assert_eq!(push(&mut asm, 3, "a", 2, 3, pa[2]), Assembled::Waiting);
        assert_eq!(push(&mut asm, 4, "b", 0, 2, pb[0]), Assembled::Record(b.clone()));
        // A part delivered twice is held once.
        assert_eq!(push(&mut asm, 5, "a", 2, 3, pa[2]), Assembled::Waiting);
        assert_eq!(push(&mut asm, 6, "a", 1, 3, pa[1]), Assembled::Record(a.clone()));
        assert_eq!(asm.oldest(), None);
        // One-message records pass straight through.
        assert_eq!(asm.push(7, None, None, b"xy").0.unwrap(), Assembled::Record(b"xy".to_vec()));
        assert!(asm.push(8, Some("c"), Some("3/2"), b"").0.is_err());
    }

    #[test]
    fn a_write_missing_parts_is_dropped_after_the_span() {
        let mut asm = Assembler::default();
        assert_eq!(asm.push(10, Some("w"), Some("0/2"), b"x").0.unwrap(), Assembled::Waiting);
        let (_, dropped) = asm.push(10 + MAX_PART_SPAN, None, None, b"r");
        assert!(dropped.is_empty());
        let (_, dropped) = asm.push(11 + MAX_PART_SPAN, None, None, b"r");
        assert_eq!(dropped, vec!["w".to_string()]);
        assert_eq!(asm.oldest(), None);
    }
}
