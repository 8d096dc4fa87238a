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
use crate::engine::protocol::{Msg, Value};
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
    /// When a shard whose replicas are all marked down may be probed again (meanwhile its
    /// requests fail at once instead of waiting a timeout per replica).
    probe_at: Mutex<Option<Instant>>,
}

/// The shards in name order (a shard's position is its number in id routing).
#[derive(Default)]
pub struct Topology {
    shards: RwLock<Vec<Arc<Shard>>>,
}

/// The ZeroMQ context of every connection to the shards: one I/O thread for all of them.
static CONTEXT: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();

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
                // A shard without replicas (all gone, known from the cluster's registry) keeps
                // its place: requests to it fail with SHARD_UNAVAILABLE.
                let replicas =
                    urls.iter().map(|u| old.get(u).cloned().unwrap_or_else(|| Arc::new(Replica::new(u)))).collect();
                let seq = old_seq.get(&name).cloned().unwrap_or_default();
                Ok(Arc::new(Shard { name, replicas, next: AtomicUsize::new(0), seq, probe_at: Mutex::new(None) }))
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

/// Marks an error that a replica sent as its reply.
#[derive(Debug)]
struct Reply;

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a replica's error reply")
    }
}

impl std::error::Error for Reply {}

/// A transport failure (no reply, a broken connection), as opposed to an error reply.
fn is_transport(e: &Error) -> bool {
    let replied = std::error::Error::source(e).is_some_and(|s| s.is::<Reply>());
    !replied && matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Io)
}

/// The `SHARD_UNAVAILABLE` error for `shard`.
pub fn unavailable(shard: &str, why: &str) -> Error {
    Error::new(ErrorKind::ShardUnavailable, format!("shard {shard:?} is unavailable: {why}"))
}

impl Shard {
    /// The replicas in the order a request tries them: round-robin from the next one, those
    /// marked down last (they may be back).
    fn order(&self) -> Vec<Arc<Replica>> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<Arc<Replica>> = (0..n).map(|i| self.replicas[(start + i) % n].clone()).collect();
        order.sort_by_key(|r| r.is_down());
        order
    }

    /// Book the outcome `res` of one attempt on `r` (started at `t0`): the final result (a
    /// reply, an error reply, or a write's transport failure), or `None` when a read should
    /// try the next replica (`last` then says why this one failed).
    fn settle(&self, r: &Replica, res: Result<Msg>, t0: Instant, kind: Kind, last: &mut String) -> Option<Result<Msg>> {
        match res {
            Err(e) if is_transport(&e) => {
                r.errors.fetch_add(1, Ordering::Relaxed);
                r.mark_down();
                tracing::warn!(shard = %self.name, replica = %r.endpoint, "replica failed, marked down for {} s: {e}", DOWN_FOR.as_secs());
                *last = e.to_string();
                // A write may have been applied: the caller must not get it twice.
                (kind == Kind::Write).then(|| {
                    Err(Error::new(
                        ErrorKind::Timeout,
                        format!("shard {:?}: {last}; the write's outcome is unknown", self.name),
                    ))
                })
            }
            res => {
                r.ok.fetch_add(1, Ordering::Relaxed);
                r.micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                Some(res)
            }
        }
    }

    /// Try `order` in turn (reads; a write stops at the first transport failure).
    fn call_in(
        &self,
        order: &[Arc<Replica>],
        req: &[u8],
        kind: Kind,
        timeout: Duration,
        mut last: String,
    ) -> Result<Msg> {
        for r in order {
            let t0 = Instant::now();
            let res = call_one(&r.endpoint, req, timeout);
            if let Some(out) = self.settle(r, res, t0, kind, &mut last) {
                return out;
            }
        }
        Err(unavailable(&self.name, &last))
    }

    /// Send `req` (an encoded request) to a replica of this shard and return its reply:
    /// reads try each live replica in turn after a transport failure, writes one replica
    /// only. Error replies are returned as they are.
    ///
    /// Errors: `ShardUnavailable` naming the shard when no replica answered.
    pub fn call(&self, req: &[u8], kind: Kind, timeout: Duration) -> Result<Msg> {
        if let Some(e) = self.all_down() {
            return Err(e);
        }
        let req = self.prepare(req, kind, timeout);
        let r = self.call_in(&self.order(), &req, kind, timeout, String::from("no replica"));
        self.note(&r);
        r
    }

    /// Every replica marked down and no probe due: the error to give at once. One request
    /// per [`DOWN_FOR`] goes through as a probe.
    fn all_down(&self) -> Option<Error> {
        if self.replicas.is_empty() {
            return Some(unavailable(&self.name, "no replica is known"));
        }
        if !self.replicas.iter().all(|r| r.is_down()) {
            return None;
        }
        let mut at = self.probe_at.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if at.is_none_or(|t| now >= t) {
            *at = Some(now + DOWN_FOR);
            return None;
        }
        Some(unavailable(&self.name, "every replica failed within the last 10 s"))
    }

    /// `req` as sent to this shard: a read carries `min_seq` (see [`Shard::seq`]) with a
    /// `min_seq_timeout` of 80 % of the shard timeout.
    fn prepare<'a>(&self, req: &'a [u8], kind: Kind, timeout: Duration) -> std::borrow::Cow<'a, [u8]> {
        let seen = self.seq.load(Ordering::Relaxed);
        if kind != Kind::Read || seen == 0 {
            return std::borrow::Cow::Borrowed(req);
        }
        let with = with_field(req, "min_seq", Value::from(seen));
        std::borrow::Cow::Owned(with_field(&with, "min_seq_timeout", Value::F64(timeout.as_secs_f64() * 0.8)))
    }

    /// Remember the log sequence of a write's reply.
    fn note(&self, r: &Result<Msg>) {
        if let Ok(m) = r {
            if let Ok(Some(s)) = m.uint("seq") {
                self.seq.fetch_max(s, Ordering::Relaxed);
            }
        }
    }
}

/// One shard's request in a scatter: the replicas in the order to try, the first one's
/// sequence number if it was sent, and when.
type Sent = (Vec<Arc<Replica>>, Option<Result<u64>>, Instant);

/// Send `calls[i].1` to shard `calls[i].0` for every `i` at once, and return the replies in
/// the same order, each as [`Shard::call`] would: every request goes out first, from this
/// thread over its own connections, then the replies are read (no thread per shard: on a
/// small VM, waking threads costs as much as a small search). A replica that fails is
/// marked down and, for reads, the request is retried on the shard's other replicas.
pub fn scatter(calls: &[(&Shard, &[u8])], kind: Kind, timeout: Duration) -> Vec<Result<Msg>> {
    if let [(shard, req)] = calls {
        return vec![shard.call(req, kind, timeout)];
    }
    // Shards with every replica down answer at once; the others are asked.
    let down: Vec<Option<Error>> = calls.iter().map(|(shard, _)| shard.all_down()).collect();
    let prepared: Vec<std::borrow::Cow<[u8]>> =
        calls.iter().map(|(shard, req)| shard.prepare(req, kind, timeout)).collect();
    let calls: Vec<(&Shard, &[u8])> = calls.iter().zip(&prepared).map(|((shard, _), req)| (*shard, &req[..])).collect();
    // (the replicas in order, the first one's sequence number if sent, when it was sent)
    let mut sent: Vec<Sent> = Vec::with_capacity(calls.len());
    for ((shard, req), down) in calls.iter().zip(&down) {
        let order = if down.is_some() { Vec::new() } else { shard.order() };
        let t0 = Instant::now();
        // One request in flight per connection: a replica listed under two shards is
        // asked the second time in turn, below.
        let busy = |r: &Replica| sent.iter().any(|(o, seq, _)| seq.is_some() && o[0].endpoint == r.endpoint);
        let seq = order.first().filter(|r| !busy(r)).map(|r| send_one(&r.endpoint, req, timeout));
        sent.push((order, seq, t0));
    }
    let out: Vec<Result<Msg>> = calls
        .iter()
        .zip(sent)
        .zip(down)
        .map(|(((shard, req), (order, seq, t0)), down)| {
            if let Some(e) = down {
                return Err(e);
            }
            let mut last = String::from("no replica");
            let rest = match seq {
                None => &order[..],
                Some(seq) => {
                    let r = &order[0];
                    let res = seq.and_then(|seq| receive_one(&r.endpoint, seq, t0 + timeout));
                    if let Some(out) = shard.settle(r, res, t0, kind, &mut last) {
                        return out;
                    }
                    &order[1..]
                }
            };
            shard.call_in(rest, req, kind, timeout, last)
        })
        .collect();
    for ((shard, _), r) in calls.iter().zip(&out) {
        shard.note(r);
    }
    out
}

/// This thread's connection to `endpoint` (made on first use), given to `f`; dropped when
/// `f` fails with a transport error, so it is made again next time.
fn with_client<T>(endpoint: &str, timeout: Duration, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
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
            clients.insert(endpoint.to_string(), Client::connect_in(CONTEXT.get_or_init(zmq::Context::new), cfg)?);
        }
        let client = clients.get_mut(endpoint).expect("invariant: inserted above");
        // A shard's error reply ("server: …") is an answer, not a failure of the replica:
        // it goes back to the caller as the shard worded it.
        let r = f(client).map_err(|e| match e.message().strip_prefix("server: ") {
            Some(msg) => Error::new(e.kind(), msg).with_source(Reply),
            None => e,
        });
        if r.as_ref().is_err_and(is_transport) {
            clients.remove(endpoint);
        }
        r
    })
}

/// Send `req` over this thread's connection to `endpoint`: the sequence number to receive.
fn send_one(endpoint: &str, req: &[u8], timeout: Duration) -> Result<u64> {
    with_client(endpoint, timeout, |c| c.send_raw(req))
}

/// The reply to `seq` on this thread's connection to `endpoint`, waiting until `deadline`.
fn receive_one(endpoint: &str, seq: u64, deadline: Instant) -> Result<Msg> {
    // The connection exists: `send_one` made it (or failed, and this is not called).
    with_client(endpoint, deadline.saturating_duration_since(Instant::now()), |c| c.receive(seq, deadline))
}

/// One request over this thread's connection to `endpoint` (made on first use; a failed
/// one is dropped and made again next time).
fn call_one(endpoint: &str, req: &[u8], timeout: Duration) -> Result<Msg> {
    with_client(endpoint, timeout, |c| c.call_raw(req))
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

/// `frame` (a MessagePack map) with the field `key: value` added at its end: the map's
/// length is raised in place (a fixmap of 15 becomes a map 16), nothing else is re-encoded.
/// A frame that is not a map is returned as it is.
pub fn with_field(frame: &[u8], key: &str, value: Value) -> Vec<u8> {
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
    out.extend_from_slice(&crate::engine::protocol::encode_value(&Value::from(key)));
    out.extend_from_slice(&crate::engine::protocol::encode_value(&value));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_added_to_maps_of_every_size() {
        for n in [0usize, 3, 14, 15, 16, 70_000] {
            let pairs: Vec<(String, Value)> = (0..n).map(|i| (format!("k{i}"), Value::from(i as u64))).collect();
            let m = Msg::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
            let back = Msg::decode(&with_field(&m.encode(), "min_seq", Value::from(42u64))).unwrap();
            assert_eq!(back.uint("min_seq").unwrap(), Some(42), "n={n}");
            if n > 0 {
                assert_eq!(back.uint(&format!("k{}", n - 1)).unwrap(), Some(n as u64 - 1));
            }
        }
        assert_eq!(with_field(b"\x93\x01\x02\x03", "x", Value::from(1u64)), b"\x93\x01\x02\x03".to_vec());
    }

    #[test]
    fn error_replies_are_not_transport_failures() {
        let reply = Error::new(ErrorKind::Timeout, "min_seq").with_source(Reply);
        assert!(!is_transport(&reply));
        assert!(is_transport(&Error::new(ErrorKind::Timeout, "no reply")));
        assert!(!is_transport(&Error::new(ErrorKind::NotFound, "x")));
    }
}
