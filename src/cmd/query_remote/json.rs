//! Replies and metadata as JSON: `query-remote` prints every reply but search results as one
//! JSON line, and reads per-vector metadata from JSON Lines.

use super::println_out;
use crate::engine::protocol::{Msg, Value};
use crate::engine::{Error, Result};
use std::path::Path;

pub use crate::engine::protocol::json::{from_json, to_json};

/// Print a reply as one JSON line, without the envelope fields.
pub fn print_reply(mut m: Msg) -> Result<()> {
    for k in ["success", "timestamp", "version"] {
        m.take(k);
    }
    println_out(&to_json(&m.into_value()).to_string())
}

pub fn read_metadata(p: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|j| from_json(&j))
                .map_err(|e| Error::format(p, format!("line {}: invalid JSON ({e})", i + 1)))
        })
        .collect()
}
