//! The router's view of the shards: their replicas (a static `--shard NAME=URL,URL` list, or
//! the members `serve --cluster --shard NAME` replicas publish), which replica a request goes
//! to, and what a shard's replies cost (for `health` and `metrics`).
//!
//! A read goes to one live replica of each shard, spread round-robin; a replica that does
//! not answer within `--shard-timeout` is marked down for [`DOWN_FOR`] and the read is
//! retried on the next one, so a frozen replica costs at most one timeout. A write goes to
//! one replica and is never retried (it may have been applied): a timeout is the client's
//! error.

use crate::engine::client::{Client, ClientConfig};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::Msg;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a replica that timed out is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// One replica of a shard.
#[derive(Debug)]
pub struct Replica {
    /// Its endpoint (`tcp://host:port`).
    pub endpoint: String,
    /// Skipped until then, after a timeout.
    down_until: Mutex<Option<Instant>>,
    /// Replies and failures, for `health`.
    pub ok: AtomicU64,
    /// Timeouts and transport errors.
    pub errors: AtomicU64,
    /// Sum of reply times in microseconds (with `ok`: the mean).
    pub micros: AtomicU64,
    /// Applied log sequence and lag it last reported (cluster members), for `health`.
    pub lag: Mutex<Option<(u64, u64)>>,
}

impl Replica {
    fn new(endpoint: &str) -> Replica {
        Replica {
            endpoint: endpoint.to_string(),
            down_until: Mutex::new(None),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            lag: Mutex::new(None),
        }
    }

    fn is_down(&self) -> bool {
        self.down_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| Instant::now() < t)
    }

    fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + DOWN_FOR);
    }
}

/// One shard: a name and its replicas.
#[derive(Debug)]
pub struct Shard {
    /// Its name (`s0`, …).
    pub name: String,
    /// Its replicas.
    pub replicas: Vec<Arc<Replica>>,
    next: AtomicUsize,
    /// The highest log sequence (`serve --cluster`) of a write this router sent to the
    /// shard: reads carry it as `min_seq`, so whichever replica answers has applied every
    /// write made through this router (read-your-writes across replicas).
    seq: Arc<AtomicU64>,
}

/// The shards in name order (a shard's position is its number in id routing).
#[derive(Default)]
pub struct Topology {
    shards: RwLock<Vec<Arc<Shard>>>,
}

thread_local! {
    /// Each worker thread's connections, by endpoint.
    static CLIENTS: RefCell<HashMap<String, Client>> = RefCell::new(HashMap::new());
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Retried on another replica after a timeout.
    Read,
    /// Sent once.
    Write,
}

impl Topology {
    /// Shards from `--shard NAME=URL,URL` lists.
    ///
    /// Errors: `InvalidInput` for a malformed item or a repeated name.
    pub fn from_static(specs: &[(String, Vec<String>)]) -> Result<Topology> {
        let t = Topology::default();
        t.set(specs.to_vec())?;
        Ok(t)
    }

    /// Replace the shards with `specs` (keeping the state of replicas that stay).
    ///
    /// Errors: `InvalidInput` for a repeated shard name.
    pub fn set(&self, mut specs: Vec<(String, Vec<String>)>) -> Result<()> {
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        for w in specs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::invalid(format!("shard {:?} is given twice", w[0].0)));
            }
        }
        let old: HashMap<String, Arc<Replica>> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|s| s.replicas.iter().map(|r| (r.endpoint.clone(), r.clone())))
            .collect();
        let old_seq: HashMap<String, Arc<AtomicU64>> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| (s.name.clone(), s.seq.clone()))
            .collect();
        let shards = specs
            .into_iter()
            .map(|(name, urls)| {
                // A shard without replicas (all down, from the cluster's registry) keeps its
                // place: requests to it fail with SHARD_UNAVAILABLE.
                let replicas =
                    urls.iter().map(|u| old.get(u).cloned().unwrap_or_else(|| Arc::new(Replica::new(u)))).collect();
                let seq = old_seq.get(&name).cloned().unwrap_or_default();
                Ok(Arc::new(Shard { name, replicas, next: AtomicUsize::new(0), seq }))
            })
            .collect::<Result<Vec<_>>>()?;
        *self.shards.write().unwrap_or_else(|p| p.into_inner()) = shards;
        Ok(())
    }

    /// The shards now.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A transport failure (no reply, a broken connection), as opposed to an error reply.
fn is_transport(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Io)
}

/// The `SHARD_UNAVAILABLE` error for `shard`.
pub fn unavailable(shard: &str, why: &str) -> Error {
    Error::new(ErrorKind::ShardUnavailable, format!("shard {shard:?} is unavailable: {why}"))
}

impl Shard {
    /// Send `req` (an encoded request) to a replica of this shard and return its reply:
    /// reads try each live replica in turn after a transport failure, writes one replica
    /// only. Error replies are returned as they are.
    ///
    /// Errors: `ShardUnavailable` naming the shard when no replica answered.
    pub fn call(&self, req: &[u8], kind: Kind, timeout: Duration) -> Result<Msg> {
        let seen = self.seq.load(Ordering::Relaxed);
        let with_seq;
        let req = if kind == Kind::Read && seen > 0 {
            with_seq = with_field(req, "min_seq", seen);
            &with_seq[..]
        } else {
            req
        };
        let r = self.call_replicas(req, kind, timeout);
        if let Ok(m) = &r {
            if let Ok(Some(s)) = m.uint("seq") {
                self.seq.fetch_max(s, Ordering::Relaxed);
            }
        }
        r
    }

    fn call_replicas(&self, req: &[u8], kind: Kind, timeout: Duration) -> Result<Msg> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Live replicas first, in round-robin order; those marked down last (they may be
        // back).
        let mut order: Vec<&Arc<Replica>> = (0..n).map(|i| &self.replicas[(start + i) % n]).collect();
        order.sort_by_key(|r| r.is_down());
        let mut last = String::from("no replica");
        for r in order {
            let t0 = Instant::now();
            match call_one(&r.endpoint, req, timeout) {
                Ok(m) => {
                    r.ok.fetch_add(1, Ordering::Relaxed);
                    r.micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    return Ok(m);
                }
                Err(e) if is_transport(&e) => {
                    r.errors.fetch_add(1, Ordering::Relaxed);
                    r.mark_down();
                    tracing::warn!(shard = %self.name, replica = %r.endpoint, "replica failed, marked down for {} s: {e}", DOWN_FOR.as_secs());
                    last = e.to_string();
                    if kind == Kind::Write {
                        // It may have been applied: the caller must not get it twice.
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("shard {:?}: {last}; the write's outcome is unknown", self.name),
                        ));
                    }
                }
                Err(e) => {
                    r.ok.fetch_add(1, Ordering::Relaxed);
                    r.micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Err(unavailable(&self.name, &last))
    }
}

/// One request over this thread's connection to `endpoint` (made on first use; a failed
/// one is dropped and made again next time).
fn call_one(endpoint: &str, req: &[u8], timeout: Duration) -> Result<Msg> {
    CLIENTS.with(|c| {
        let mut clients = c.borrow_mut();
        if !clients.contains_key(endpoint) {
            let cfg = ClientConfig {
                server: endpoint.to_string(),
                api_key: None,
                tenant: None,
                timeout,
                server_public_key: None,
            };
            clients.insert(endpoint.to_string(), Client::connect(cfg)?);
        }
        let client = clients.get_mut(endpoint).expect("invariant: inserted above");
        let r = client.call_raw(req);
        if r.as_ref().is_err_and(is_transport) {
            clients.remove(endpoint);
        }
        // A shard's error reply goes back to the caller as the shard worded it (the client
        // would prefix "server: " a second time).
        r.map_err(|e| match e.to_string().strip_prefix("server: ") {
            Some(msg) if !is_transport(&e) => Error::new(e.kind(), msg),
            _ => e,
        })
    })
}

/// `frame` (a MessagePack map) with the field `key: value` added at its end: the map's
/// length is raised in place (a fixmap of 15 becomes a map 16), nothing else is re-encoded.
/// A frame that is not a map is returned as it is.
pub fn with_field(frame: &[u8], key: &str, value: u64) -> Vec<u8> {
    let Some(&first) = frame.first() else { return frame.to_vec() };
    let (len, header) = match first {
        0x80..=0x8f => ((first & 0x0f) as u32, 1),
        0xde if frame.len() >= 3 => (u16::from_be_bytes([frame[1], frame[2]]) as u32, 3),
        0xdf if frame.len() >= 5 => (u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]), 5),
        _ => return frame.to_vec(),
    };
    let n = len + 1;
    let mut out = Vec::with_capacity(frame.len() + key.len() + 16);
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as u32 {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&frame[header..]);
    out.extend_from_slice(&crate::engine::protocol::encode_value(&crate::engine::protocol::Value::from(key)));
    out.extend_from_slice(&crate::engine::protocol::encode_value(&crate::engine::protocol::Value::from(value)));
    out
}

/// Parse `--shard NAME=URL,URL` (router).
///
/// Errors: `InvalidInput` naming the item.
pub fn parse_static(s: &str) -> Result<(String, Vec<String>)> {
    let (name, urls) =
        s.split_once('=').ok_or_else(|| Error::invalid(format!("--shard {s:?}: expected NAME=URL[,URL…]")))?;
    crate::engine::server::valid_id("shard", name)?;
    let urls: Vec<String> = urls.split([',', ' ']).filter(|u| !u.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        return Err(Error::invalid(format!("--shard {s:?}: no replica URL")));
    }
    for u in &urls {
        if !u.starts_with("tcp://") && !u.starts_with("ipc://") {
            return Err(Error::invalid(format!("--shard {s:?}: {u:?} is not an endpoint like tcp://host:45678")));
        }
    }
    Ok((name.to_string(), urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_added_to_maps_of_every_size() {
        for n in [0usize, 3, 14, 15, 16, 70_000] {
            let pairs: Vec<(String, crate::engine::protocol::Value)> =
                (0..n).map(|i| (format!("k{i}"), crate::engine::protocol::Value::from(i as u64))).collect();
            let m = Msg::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
            let back = Msg::decode(&with_field(&m.encode(), "min_seq", 42)).unwrap();
            assert_eq!(back.uint("min_seq").unwrap(), Some(42), "n={n}");
            if n > 0 {
                assert_eq!(back.uint(&format!("k{}", n - 1)).unwrap(), Some(n as u64 - 1));
            }
        }
        assert_eq!(with_field(b"\x93\x01\x02\x03", "x", 1), b"\x93\x01\x02\x03".to_vec());
    }
}
