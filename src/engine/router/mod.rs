//! `faissx serve --router`: a stateless router that speaks the same protocol as a server and
//! spreads each index over every shard (FAISS's `IndexShards` and the gateway of Vald, over
//! the wire). Any number of routers can stand behind one Service: they keep no state but
//! caches, and restarting one loses nothing.
//!
//! What goes where:
//! - **Writes** to every shard: `create_index`, `delete_index`, `train_index` (each shard
//!   trains on the same sample, on one thread: identical quantizers, so the shards' IVF
//!   indices stay mergeable), `set_parameter`, `optimize_index`, `reset`, `snapshot`.
//! - **Adds** to the owning shard: with ids, by a stable hash of each id (strings included,
//!   [`merge::shard_of_int`], [`merge::shard_of_key`]); without ids, split evenly across the
//!   shards, each vector getting the global id `position · n + shard`
//!   ([`merge::global_id`]), returned in the reply's `ids`.
//! - **By id** (`reconstruct`, `get_metadata`, `remove_ids`, `replace_vector`) to the shard
//!   that owns the id.
//! - **Searches** (`search`, `search_and_reconstruct`, `hybrid_search`, `range_search`) to one
//!   live replica of every shard, merged by distance in the metric's order
//!   ([`merge::merge_search`]). A shard with no live replica fails the search with
//!   `SHARD_UNAVAILABLE` naming it, or, with `allow_partial: true` in the request, the others
//!   answer and the reply says `partial: true` and `missing_shards`.
//! - **Status** (`get_index_status`, `list_indices`, …) from every shard, counts summed.
//!
//! Authentication and tenancy are the shards' (the router forwards the API key): every
//! replica of every shard must run with the same keys.

pub mod merge;
pub mod shards;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::{self, Encoding, Msg, Value};
use crate::engine::server::Action;
use shards::{Kind, Shard, Topology};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What `faissx serve --router` was asked to do.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// ZeroMQ endpoint to bind (`tcp://0.0.0.0:45600`).
    pub endpoint: String,
    /// `--shard NAME=URL,URL` lists (empty: learn the shards from `cluster`).
    pub shards: Vec<(String, Vec<String>)>,
    /// `--cluster`: NATS URLs whose `faissx_members` bucket lists the shards' replicas.
    pub cluster: Option<crate::engine::server::cluster::ClusterConfig>,
    /// `--shard-timeout`: how long one replica may take to answer.
    pub shard_timeout: Duration,
    /// `--shard-count`: the number of shards the router must know before it routes (ids go
    /// to `hash mod n`: routing over fewer would send them to the wrong shard).
    pub shard_count: Option<usize>,
    /// Threads that route requests.
    pub workers: usize,
    /// Largest accepted request in bytes.
    pub max_request_bytes: usize,
    /// `HOST:PORT` of the HTTP listener for `/livez`, `/readyz` (200 once bound) and
    /// `/metrics` (requests by action); `None`: no listener.
    pub http: Option<String>,
}

/// What the router knows of one index (from its first shard), cached until a write
/// through this router changes it.
#[derive(Debug, Clone)]
struct IndexFacts {
    d: usize,
    /// Ordered by descending distance (inner product).
    desc: bool,
    /// Stores the user's ids (IDMap, or string ids): ids route by hash and stay as they are;
    /// otherwise ids are positions, made global per shard.
    explicit_ids: bool,
    binary: bool,
}

/// How long the router trusts what it cached about an index.
pub const FACTS_TTL: Duration = Duration::from_secs(2);

/// The router: shards and caches.
pub struct Router {
    topo: Arc<Topology>,
    expect: Option<usize>,
    timeout: Duration,
    facts: RwLock<HashMap<(String, String), (IndexFacts, Instant)>>,
    started: Instant,
}

fn field_names(m: &Msg, skip: &[&str]) -> Vec<(String, Value)> {
    m.pairs().filter(|(k, _)| !skip.contains(k)).map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn request_of(pairs: Vec<(String, Value)>) -> Vec<u8> {
    Msg::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()).encode()
}

impl Router {
    /// A router over `topo`.
    pub fn new(topo: Arc<Topology>, timeout: Duration, expect: Option<usize>) -> Router {
        Router { topo, expect, timeout, facts: RwLock::new(HashMap::new()), started: Instant::now() }
    }

    /// The shards, once the router knows them all (`--shard-count`, or at least one).
    ///
    /// Errors: `ShardUnavailable` saying how many it knows.
    fn shards(&self) -> Result<Vec<Arc<Shard>>> {
        let s = self.topo.shards();
        if s.is_empty() {
            return Err(Error::new(ErrorKind::ShardUnavailable, "the router knows no shard yet"));
        }
        if let Some(n) = self.expect.filter(|&n| n != s.len()) {
            return Err(Error::new(
                ErrorKind::ShardUnavailable,
                format!("the router knows {} shard(s), not the {n} of --shard-count: it routes nothing until it knows them all", s.len()),
            ));
        }
        Ok(s)
    }

    /// Send `req` to every shard at once; the replies in shard order.
    fn all(&self, shards: &[Arc<Shard>], req: &[u8], kind: Kind) -> Vec<Result<Msg>> {
        let calls: Vec<(&Shard, &[u8])> = shards.iter().map(|s| (&**s, req)).collect();
        shards::scatter(&calls, kind, self.timeout)
    }

    /// Every shard's reply, or the first error.
    fn all_ok(&self, shards: &[Arc<Shard>], req: &[u8], kind: Kind) -> Result<Vec<Msg>> {
        self.all(shards, req, kind).into_iter().collect()
    }

    /// What the router needs to know of index `id`: from the cache when younger than
    /// [`FACTS_TTL`] (another router may have replaced the index), else from the first shard
    /// that answers. `fresh` skips the cache (writes by id, which must not act on stale
    /// facts).
    fn facts_of(&self, shards: &[Arc<Shard>], head: &Msg, tenant: &str, id: &str, fresh: bool) -> Result<IndexFacts> {
        let key = (tenant.to_string(), id.to_string());
        if !fresh {
            if let Some((f, at)) = self.facts.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
                if at.elapsed() < FACTS_TTL {
                    return Ok(f.clone());
                }
            }
        }
        let mut pairs: Vec<(String, Value)> =
            vec![("action".into(), Value::from("get_index_status")), ("index_id".into(), Value::from(id))];
        for k in ["api_key", "tenant_id"] {
            if let Some(v) = head.get(k) {
                pairs.push((k.into(), v.clone()));
            }
        }
        let req = request_of(pairs);
        let mut reply = Err(shards::unavailable("?", "no shard"));
        for sh in shards {
            reply = sh.call(&req, Kind::Read, self.timeout);
            if !matches!(&reply, Err(e) if e.kind() == ErrorKind::ShardUnavailable) {
                break;
            }
        }
        let reply = reply?;
        // The details are under "status" (FAISSx's layout keeps the top level short).
        let st = reply.map("status")?.unwrap_or(reply);
        let metric = st.str("metric")?.unwrap_or("L2").to_string();
        let f = IndexFacts {
            d: st.uint("dimension")?.unwrap_or(0) as usize,
            desc: merge::descending(&metric),
            explicit_ids: st.flag("explicit_ids").unwrap_or(false),
            binary: metric.eq_ignore_ascii_case("hamming"),
        };
        let mut cache = self.facts.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 100_000 {
            cache.clear();
        }
        cache.insert(key, (f.clone(), Instant::now()));
        Ok(f)
    }

    fn facts(&self, shards: &[Arc<Shard>], head: &Msg, tenant: &str, id: &str) -> Result<IndexFacts> {
        self.facts_of(shards, head, tenant, id, false)
    }

    fn forget(&self, tenant: &str, id: &str) {
        self.facts.write().unwrap_or_else(|p| p.into_inner()).remove(&(tenant.to_string(), id.to_string()));
    }

    /// Answer one request frame. Fields that describe one replica's log (`seq`,
    /// `applied_seq`, `stale_s`) are dropped from replies: each shard counts its own.
    pub fn handle(&self, frame: &[u8]) -> Result<Msg> {
        let mut m = self.answer(frame)?;
        for k in ["seq", "applied_seq", "stale_s"] {
            m.take(k);
        }
        Ok(m)
    }

    fn answer(&self, frame: &[u8]) -> Result<Msg> {
        let head = protocol::peek_head(frame)?;
        let name = head.action.ok_or_else(|| Error::new(ErrorKind::Protocol, "request has no \"action\" field"))?;
        let action = Action::from_name(name)?;
        // Who asks only keys the router's caches (the shards authenticate): the key and the
        // tenant id together, as a shard without auth would tell tenants apart by the id.
        let tenant = format!("{}\u{0}{}", head.api_key.unwrap_or(""), head.tenant_id.unwrap_or(""));
        if action == Action::Ping {
            return Ok(Msg::default().with("message", "pong").with("time", protocol::now_f64()).with("router", true));
        }
        if action == Action::Health {
            return Ok(self.health());
        }
        let shards = self.shards()?;
        let n = shards.len();
        let m = Msg::decode_request(frame)?;
        match action {
            Action::Metrics => Ok(self.health()),
            Action::ListIndices => {
                let replies = self.all_ok(&shards, frame, Kind::Read)?;
                // Rows matched by index id (an index missing on a shard is still listed).
                let mut rows: std::collections::BTreeMap<String, Msg> = std::collections::BTreeMap::new();
                for r in &replies {
                    let Some(Value::Array(a)) = r.get("indexes") else { continue };
                    for v in a {
                        let row = Msg::from_value(v.clone())?;
                        let Some(id) = row.str("index_id")?.map(str::to_string) else { continue };
                        match rows.get_mut(&id) {
                            Some(have) => {
                                let sum =
                                    have.uint("vector_count")?.unwrap_or(0) + row.uint("vector_count")?.unwrap_or(0);
                                have.set("vector_count", sum);
                            }
                            None => {
                                rows.insert(id, row);
                            }
                        }
                    }
                }
                Ok(Msg::default().with("indexes", Value::Array(rows.into_values().map(Msg::into_value).collect())))
            }
            Action::CreateIndex => {
                if let Some(want) = m.uint("shards")? {
                    if want as usize != n {
                        return Err(Error::invalid(format!(
                            "shards={want}: this router spreads every index over its {n} shard(s)"
                        )));
                    }
                }
                let id = m.req_str("index_id")?;
                self.forget(&tenant, id);
                let req = request_of(field_names(&m, &["shards"]));
                let replies = self.all(&shards, &req, Kind::Write);
                let failed = replies.iter().position(Result::is_err);
                if let Some(i) = failed {
                    // Undo the shards that created it, so a retry can succeed.
                    let undo: Vec<Arc<Shard>> =
                        replies.iter().zip(&shards).filter(|(r, _)| r.is_ok()).map(|(_, s)| s.clone()).collect();
                    let mut del = field_names(&m, &["shards", "dimension", "index_type", "metric", "metadata"]);
                    del.retain(|(k, _)| k != "action");
                    del.push(("action".into(), Value::from("delete_index")));
                    let _ = self.all(&undo, &request_of(del), Kind::Write);
                    let mut replies = replies;
                    return replies.swap_remove(i).map(|_| Msg::default());
                }
                let mut out = replies.into_iter().next().expect("invariant: one reply per shard")?;
                out.set("shards", n as u64);
                Ok(out)
            }
            Action::DeleteIndex
            | Action::TrainIndex
            | Action::SetParameter
            | Action::OptimizeIndex
            | Action::ReclusterIndex
            | Action::Reset
            | Action::MergeIndices
            | Action::Snapshot => {
                // A merge merges each shard's part of the sources into its part of the target.
                if let Some(t) = m.str("target_index_id")? {
                    self.forget(&tenant, t);
                }
                if let Some(id) = m.str("index_id")? {
                    self.forget(&tenant, id);
                }
                let replies = self.all_ok(&shards, frame, Kind::Write)?;
                Ok(sum_counts(replies))
            }
            Action::GetIndexStatus | Action::GetIndexStats | Action::GetIndexInfo => {
                let replies = self.all_ok(&shards, frame, Kind::Read)?;
                Ok(sum_counts(replies).with("shards", n as u64))
            }
            Action::GetParameter | Action::ComputeClustering => shards[0].call(frame, Kind::Read, self.timeout),
            Action::ReconstructN | Action::GetVectors => self.reconstruct_range(&shards, action, &m, &tenant),
            Action::AddVectors | Action::AddWithIds | Action::BatchAddWithIds => self.add(&shards, &m, &tenant),
            Action::Search | Action::SearchAndReconstruct | Action::HybridSearch | Action::RangeSearch => {
                self.search(&shards, action, frame, &m, &tenant)
            }
            Action::Reconstruct | Action::GetMetadata | Action::RemoveIds | Action::ReplaceVector => {
                self.by_id(&shards, action, &m, &tenant)
            }
            other => Err(Error::new(
                ErrorKind::Unsupported,
                format!("{} is not supported through a router: send it to a shard's replica", other.name()),
            )),
        }
    }

    fn health(&self) -> Msg {
        let shards: Vec<Value> = self
            .topo
            .shards()
            .iter()
            .map(|s| {
                let replicas: Vec<Value> = s
                    .replicas
                    .iter()
                    .map(|r| {
                        let ok = r.ok.load(Ordering::Relaxed);
                        let mean_ms =
                            if ok == 0 { 0.0 } else { r.micros.load(Ordering::Relaxed) as f64 / ok as f64 / 1000.0 };
                        let mut m = Msg::default()
                            .with("endpoint", r.endpoint.as_str())
                            .with("replies", ok)
                            .with("errors", r.errors.load(Ordering::Relaxed))
                            .with("mean_ms", mean_ms);
                        if let Some((applied, lag)) = *r.lag.lock().unwrap_or_else(|p| p.into_inner()) {
                            m = m.with("applied_seq", applied).with("lag", lag);
                        }
                        m.into_value()
                    })
                    .collect();
                Msg::default().with("name", s.name.as_str()).with("replicas", Value::Array(replicas)).into_value()
            })
            .collect();
        Msg::default()
            .with("status", "ok")
            .with("router", true)
            .with("uptime_s", self.started.elapsed().as_secs_f64())
            .with("protocol_version", protocol::PROTOCOL_VERSION)
            .with("shards", Value::Array(shards))
    }

    fn add(&self, shards: &[Arc<Shard>], m: &Msg, tenant: &str) -> Result<Msg> {
        let n = shards.len();
        let id = m.req_str("index_id")?;
        let f = self.facts(shards, m, tenant, id)?;
        let rows: Vec<Vec<u8>> = if f.binary {
            let c = m.codes("vectors", f.d)?;
            c.chunks(f.d.div_ceil(8).max(1)).map(<[u8]>::to_vec).collect()
        } else {
            let x = m.vectors("vectors", f.d)?;
            x.chunks(f.d.max(1)).map(|r| r.iter().flat_map(|v| v.to_le_bytes()).collect()).collect()
        };
        let count = rows.len();
        let keys = match m.get("ids") {
            Some(Value::Array(a)) if a.first().is_some_and(Value::is_str) => m.strings("ids")?,
            _ => None,
        };
        let ids = if keys.is_some() { None } else { m.ids("ids")? };
        let md = match m.get("metadata") {
            Some(Value::Array(a)) => Some(a.clone()),
            _ => None,
        };
        let st = self.all_ok(shards, &request_of(status_pairs(m, id)), Kind::Read)?;
        let g: u64 = st.iter().map(|r| r.uint("ntotal").ok().flatten().unwrap_or(0)).sum();
        let details = st[0].map("status")?.unwrap_or_default();
        if !details.flag("is_trained").unwrap_or(true)
            && details.str("faiss_type")?.is_some_and(|t| t.contains("ScalarQuantizer"))
        {
            // A scalar quantizer trains on its first add (FAISSx's client relies on it): on
            // every shard with the whole batch, so all shards quantize alike.
            let mut pairs = field_names(m, &["vectors", "ids", "metadata", "action", "batch_size"]);
            pairs.push(("action".into(), Value::from("train_index")));
            let x: Vec<f32> = rows.iter().flat_map(|r| protocol::f32_from_bytes(r).unwrap_or_default()).collect();
            pairs.push(("training_vectors".into(), protocol::vectors_value(&x, f.d, Encoding::Binary)));
            self.all_ok(shards, &request_of(pairs), Kind::Write)?;
        }
        // Which shard each row goes to.
        let owner: Vec<usize> = match (&keys, &ids) {
            (Some(k), _) => k.iter().map(|k| merge::shard_of_key(k, n)).collect(),
            (None, Some(ids)) => ids.iter().map(|&i| merge::shard_of_int(i, n)).collect(),
            // Without ids: round-robin, continuing from the index's size G, so that row j
            // lands at position (G + j) / n of shard (G + j) % n and gets the global id
            // G + j: the position a single server would give it (while adds through
            // routers do not overlap).
            (None, None) => (0..count).map(|j| ((g as usize) + j) % n).collect(),
        };
        if owner.len() != count {
            return Err(Error::invalid(format!("{} ids for {count} vectors", owner.len())));
        }
        let base = field_names(m, &["vectors", "ids", "metadata"]);
        let mut reqs: Vec<(usize, Vec<usize>, Vec<u8>)> = Vec::new();
        for s in 0..n {
            let mine: Vec<usize> = (0..count).filter(|&i| owner[i] == s).collect();
            if mine.is_empty() {
                continue;
            }
            let mut pairs = base.clone();
            let bytes: Vec<u8> = mine.iter().flat_map(|&i| rows[i].iter().copied()).collect();
            let v = if f.binary {
                Value::Binary(bytes)
            } else {
                let x: Vec<f32> = protocol::f32_from_bytes(&bytes)?;
                protocol::vectors_value(&x, f.d, Encoding::Binary)
            };
            pairs.push(("vectors".into(), v));
            if let Some(k) = &keys {
                pairs.push(("ids".into(), Value::Array(mine.iter().map(|&i| Value::from(k[i].as_str())).collect())));
            } else if let Some(ids) = &ids {
                let sub: Vec<i64> = mine.iter().map(|&i| ids[i]).collect();
                pairs.push(("ids".into(), Value::Binary(protocol::i64_bytes(&sub))));
            }
            if let Some(md) = &md {
                if md.len() != count {
                    return Err(Error::invalid(format!("{} metadata values for {count} vectors", md.len())));
                }
                pairs.push(("metadata".into(), Value::Array(mine.iter().map(|&i| md[i].clone()).collect())));
            }
            reqs.push((s, mine, request_of(pairs)));
        }
        let calls: Vec<(&Shard, &[u8])> = reqs.iter().map(|(s, _, req)| (&*shards[*s], req.as_slice())).collect();
        let results = shards::scatter(&calls, Kind::Write, self.timeout);
        let mut added = 0u64;
        let mut assigned = vec![-1i64; count];
        for ((s, mine, _), r) in reqs.iter().zip(results) {
            // A shard that failed fails the add (the other shards' parts stay added: their
            // ids are in the error's message).
            let r = r.map_err(|e| e.context(format!("shard {:?}", shards[*s].name)))?;
            let c = r.uint("count")?.unwrap_or(mine.len() as u64);
            added += c;
            if ids.is_none() && keys.is_none() && !f.explicit_ids {
                let after = r.uint("ntotal")?.unwrap_or(0) as i64;
                let first = after - mine.len() as i64;
                for (j, &row) in mine.iter().enumerate() {
                    assigned[row] = merge::global_id(first + j as i64, *s, n);
                }
            }
        }
        let mut out = Msg::default().with("count", added).with("index_id", id);
        if m.str("action")? == Some("batch_add_with_ids") {
            out.set("message", format!("added {added} vectors with ids to index {id}"));
        }
        if ids.is_none() && keys.is_none() && !f.explicit_ids {
            out.set("ids", protocol::ints_value(&assigned));
        }
        // The index's size over every shard: before the add, plus what it added.
        let ntotal = g + added;
        Ok(out.with("ntotal", ntotal).with("total", ntotal))
    }

    fn search(&self, shards: &[Arc<Shard>], action: Action, frame: &[u8], m: &Msg, tenant: &str) -> Result<Msg> {
        let n = shards.len();
        let id = m.req_str("index_id")?;
        let f = self.facts(shards, m, tenant, id)?;
        let allow_partial = m.flag("allow_partial").unwrap_or(false);
        let replies = self.all(shards, frame, Kind::Read);
        let mut ok: Vec<(usize, Msg)> = Vec::new();
        let mut missing = Vec::new();
        for (s, r) in replies.into_iter().enumerate() {
            match r {
                Ok(m) => ok.push((s, m)),
                Err(e) if e.kind() == ErrorKind::ShardUnavailable && allow_partial => {
                    missing.push(shards[s].name.clone())
                }
                Err(e) => return Err(e),
            }
        }
        if ok.is_empty() {
            return Err(shards::unavailable(&missing.join(","), "no shard answered"));
        }
        let explicit = f.explicit_ids;
        let map = move |s: usize, i: i64| if explicit { i } else { merge::global_id(i, s, n) };
        let mut out = if action == Action::RangeSearch {
            merge::merge_range(&ok, f.desc, &map)?
        } else {
            let k = m.uint("k")?.unwrap_or(10) as usize;
            merge::merge_search(&ok, k, f.desc, &map)?
        };
        if !missing.is_empty() {
            out.set("partial", true);
            out.set("missing_shards", Value::Array(missing.into_iter().map(Value::from).collect()));
        }
        Ok(out)
    }

    /// `reconstruct_n` / `get_vectors` of global positions `start..`: each shard holds every
    /// n-th position, a contiguous range of its own; the rows are interleaved back.
    fn reconstruct_range(&self, shards: &[Arc<Shard>], action: Action, m: &Msg, tenant: &str) -> Result<Msg> {
        let n = shards.len();
        let id = m.req_str("index_id")?;
        let f = self.facts(shards, m, tenant, id)?;
        if f.explicit_ids {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{} reads by position; index {id:?} stores its own ids: use reconstruct by id", action.name()),
            ));
        }
        let st = self.all_ok(shards, &request_of(status_pairs(m, id)), Kind::Read)?;
        let total: usize = st.iter().map(|r| r.uint("ntotal").ok().flatten().unwrap_or(0) as usize).sum();
        let start = m.uint("start_idx")?.unwrap_or(0) as usize;
        if start > total {
            return Err(Error::invalid(format!("start_idx={start} is past ntotal={total}")));
        }
        let count = if action == Action::ReconstructN {
            let c = m.uint("num_vectors")?.ok_or_else(|| Error::invalid("missing field \"num_vectors\""))? as usize;
            if start.checked_add(c).is_none_or(|end| end > total) {
                return Err(Error::invalid(format!("start_idx={start} + num_vectors={c} is past ntotal={total}")));
            }
            c
        } else {
            m.uint("limit")?.map_or(total - start, |l| (l as usize).min(total - start))
        };
        let end = start + count;
        let row_bytes = if f.binary { f.d.div_ceil(8) } else { f.d * 4 };
        let mut rows: Vec<Option<Value>> = vec![None; count];
        let mut binary_reply = false;
        for (s, shard) in shards.iter().enumerate() {
            let g0 = start + (s + n - start % n) % n;
            if g0 >= end {
                continue;
            }
            let cnt = (end - 1 - g0) / n + 1;
            let mut pairs = field_names(m, &["action", "start_idx", "num_vectors", "limit"]);
            pairs.push(("action".into(), Value::from("reconstruct_n")));
            pairs.push(("start_idx".into(), Value::from((g0 / n) as u64)));
            pairs.push(("num_vectors".into(), Value::from(cnt as u64)));
            let r = shard.call(&request_of(pairs), Kind::Read, self.timeout)?;
            let got: Vec<Value> = match r.get("vectors") {
                Some(Value::Binary(b)) => {
                    binary_reply = true;
                    b.chunks(row_bytes.max(1)).map(|c| Value::Binary(c.to_vec())).collect()
                }
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            for (j, v) in got.into_iter().enumerate() {
                let g = g0 + j * n;
                if g < end {
                    rows[g - start] = Some(v);
                }
            }
        }
        let rows: Vec<Value> = rows.into_iter().map(|r| r.unwrap_or(Value::Nil)).collect();
        let vectors = if binary_reply {
            Value::Binary(
                rows.iter().flat_map(|v| if let Value::Binary(b) = v { b.clone() } else { Vec::new() }).collect(),
            )
        } else {
            Value::Array(rows)
        };
        Ok(Msg::default()
            .with("vectors", vectors)
            .with("start_idx", start as u64)
            .with("num_vectors", count as u64)
            .with("ntotal", total as u64))
    }

    fn by_id(&self, shards: &[Arc<Shard>], action: Action, m: &Msg, tenant: &str) -> Result<Msg> {
        let n = shards.len();
        let id = m.req_str("index_id")?;
        let kind = if matches!(action, Action::RemoveIds | Action::ReplaceVector) { Kind::Write } else { Kind::Read };
        let f = self.facts_of(shards, m, tenant, id, kind == Kind::Write)?;
        // Where each given id goes, and what the shard calls it.
        let route = |v: &Value| -> Result<(usize, Value)> {
            if let Some(k) = v.as_str() {
                return Ok((merge::shard_of_key(k, n), v.clone()));
            }
            let g = v.as_i64().ok_or_else(|| Error::invalid("ids must be integers or strings"))?;
            if f.explicit_ids {
                Ok((merge::shard_of_int(g, n), v.clone()))
            } else {
                let (s, local) = merge::local_id(g, n)?;
                Ok((s, Value::from(local)))
            }
        };
        if matches!(action, Action::Reconstruct | Action::ReplaceVector) {
            let key = if m.has("id") { "id" } else { "idx" };
            let v = m.get(key).cloned().ok_or_else(|| Error::invalid("missing field \"id\""))?;
            let (s, local) = route(&v)?;
            let mut pairs = field_names(m, &[key]);
            pairs.push((key.into(), local));
            if action == Action::ReplaceVector {
                let x = m.vectors("vector", f.d)?;
                pairs.retain(|(k, _)| k != "vector");
                pairs.push(("vector".into(), protocol::vectors_value(&x, f.d, Encoding::Binary)));
            }
            let mut r = shards[s].call(&request_of(pairs), kind, self.timeout)?;
            if action == Action::ReplaceVector {
                r.set("id", v);
            }
            return Ok(r);
        }
        // get_metadata / remove_ids: ids grouped by shard, answers put back in order.
        let given: Vec<Value> = match m.get("ids") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Binary(b)) => protocol::i64_from_bytes(b)?.into_iter().map(Value::from).collect(),
            _ => return Err(Error::invalid("missing field \"ids\"")),
        };
        let mut groups: Vec<Vec<(usize, Value)>> = vec![Vec::new(); n];
        for (pos, v) in given.iter().enumerate() {
            let (s, local) = route(v)?;
            groups[s].push((pos, local));
        }
        let base = field_names(m, &["ids"]);
        let mut values = vec![Value::Nil; given.len()];
        let (mut removed, mut renumbered) = (0u64, false);
        let mut failure: Option<Error> = None;
        for (s, g) in groups.iter().enumerate() {
            if g.is_empty() {
                continue;
            }
            let mut pairs = base.clone();
            pairs.push(("ids".into(), Value::Array(g.iter().map(|(_, v)| v.clone()).collect())));
            let r = match shards[s].call(&request_of(pairs), kind, self.timeout) {
                Ok(r) => r,
                // Every shard is asked (a retry must not remove twice what went): the first
                // failure is reported with what the others removed.
                Err(e) if action == Action::RemoveIds => {
                    failure.get_or_insert(e.context(format!("shard {:?}", shards[s].name)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if action == Action::RemoveIds {
                removed += r.uint("removed")?.unwrap_or(0);
                renumbered |= r.flag("renumbered").unwrap_or(false);
            } else if let Some(Value::Array(md)) = r.get("metadata") {
                for ((pos, _), v) in g.iter().zip(md) {
                    values[*pos] = v.clone();
                }
            }
        }
        if let Some(e) = failure {
            return Err(e.context(format!("{removed} vector(s) removed on the other shards")));
        }
        if action == Action::RemoveIds {
            let mut out = Msg::default().with("removed", removed).with("count", removed).with("renumbered", renumbered);
            if renumbered {
                out.set("message", "vectors after a removed one moved down: their ids (positions) changed");
            }
            return Ok(out);
        }
        Ok(Msg::default().with("index_id", id).with("metadata", Value::Array(values)))
    }
}

fn status_pairs(m: &Msg, id: &str) -> Vec<(String, Value)> {
    let mut pairs: Vec<(String, Value)> =
        vec![("action".into(), Value::from("get_index_status")), ("index_id".into(), Value::from(id))];
    for k in ["api_key", "tenant_id"] {
        if let Some(v) = m.get(k) {
            pairs.push((k.into(), v.clone()));
        }
    }
    pairs
}

/// The first reply, with the counts of every shard summed (`ntotal`, `count`, …).
fn sum_counts(replies: Vec<Msg>) -> Msg {
    let mut it = replies.into_iter();
    let Some(mut out) = it.next() else { return Msg::default() };
    let keys = ["ntotal", "total", "count", "removed", "vectors_with_metadata", "checkpointed"];
    for r in it {
        for k in keys {
            if let (Ok(Some(a)), Ok(Some(b))) = (out.uint(k), r.uint(k)) {
                out.set(k, a + b);
            }
        }
        // get_index_info nests the status.
        if let (Ok(Some(mut a)), Ok(Some(b))) = (out.map("status"), r.map("status")) {
            for k in keys {
                if let (Ok(Some(x)), Ok(Some(y))) = (a.uint(k), b.uint(k)) {
                    a.set(k, x + y);
                }
            }
            out.set("status", a.into_value());
        }
    }
    out
}

/// Run the router until `stop` is set: bind, call `on_ready` with the bound endpoint, then
/// answer requests on `cfg.workers` threads. Learns the shards from `cfg.shards`, or from
/// the cluster's members every second.
pub fn serve(cfg: &RouterConfig, on_ready: &mut dyn FnMut(&str) -> Result<()>, stop: &AtomicBool) -> Result<()> {
    let topo = Arc::new(if cfg.shards.is_empty() { Topology::default() } else { Topology::from_static(&cfg.shards)? });
    let _watch = match (&cfg.cluster, cfg.shards.is_empty()) {
        (Some(cc), true) => Some(crate::engine::server::cluster::watch_shards(cc, topo.clone())?),
        _ => None,
    };
    let router = Arc::new(Router::new(topo, cfg.shard_timeout, cfg.shard_count));
    let telemetry = Arc::new(crate::engine::server::telemetry::Telemetry::with_recording(cfg.http.is_some()));
    let _http =
        cfg.http.as_deref().map(|a| crate::engine::server::HttpServer::start(a, telemetry.clone())).transpose()?;
    let zerr = |what: &str, e: zmq::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::ROUTER).map_err(|e| zerr("creating socket", e))?;
    sock.set_linger(0).map_err(|e| zerr("socket option", e))?;
    sock.set_maxmsgsize(cfg.max_request_bytes as i64 + (1 << 20)).map_err(|e| zerr("socket option", e))?;
    sock.bind(&cfg.endpoint).map_err(|e| zerr(&format!("binding {}", cfg.endpoint), e))?;
    let endpoint = match sock.get_last_endpoint() {
        Ok(Ok(s)) => s,
        _ => cfg.endpoint.clone(),
    };
    let inproc = format!("inproc://faissx-router-{}", std::process::id());
    let pull = ctx.socket(zmq::PULL).map_err(|e| zerr("creating socket", e))?;
    pull.bind(&inproc).map_err(|e| zerr("binding inproc", e))?;
    let push = ctx.socket(zmq::PUSH).map_err(|e| zerr("creating socket", e))?;
    push.connect(&inproc).map_err(|e| zerr("connecting inproc", e))?;
    let push = Arc::new(Mutex::new(push));
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<Vec<u8>>, zmq::Message)>();
    let rx = Arc::new(Mutex::new(rx));
    let mut threads = Vec::new();
    for i in 0..cfg.workers.max(1) {
        let (rx, push, router, telemetry) = (rx.clone(), push.clone(), router.clone(), telemetry.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("faissx-route-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((mut env, frame)) = job else { return };
                    let t0 = Instant::now();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| router.handle(&frame)))
                        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "internal error in the router")));
                    let action = protocol::peek_head(&frame)
                        .ok()
                        .and_then(|h| h.action)
                        .map_or("invalid", crate::engine::server::stats_label);
                    telemetry.record("", action, t0.elapsed(), r.as_ref().err().map(protocol::ErrorCode::of));
                    if let Err(e) = &r {
                        tracing::debug!("request failed: {e}");
                    }
                    env.push(match r {
                        Ok(m) => protocol::ok_reply(m),
                        Err(e) => protocol::error_reply(&e),
                    });
                    let _ = push.lock().unwrap_or_else(|p| p.into_inner()).send_multipart(env, 0);
                })
                .map_err(|e| Error::new(ErrorKind::Io, format!("spawning thread: {e}")))?,
        );
    }
    tracing::info!(endpoint = %endpoint, shards = router.topo.shards().len(), "routing");
    on_ready(&endpoint)?;
    let mut inflight = 0usize;
    while !stop.load(Ordering::Relaxed) || inflight > 0 {
        // Ready (`/readyz`) once it knows a shard, and not while stopping.
        telemetry.set_ready(!stop.load(Ordering::Relaxed) && router.shards().is_ok());
        let mut items = [sock.as_poll_item(zmq::POLLIN), pull.as_poll_item(zmq::POLLIN)];
        if zmq::poll(&mut items, 100).is_err() {
            continue;
        }
        if items[1].is_readable() {
            while let Ok(frames) = pull.recv_multipart(zmq::DONTWAIT) {
                inflight = inflight.saturating_sub(1);
                let _ = sock.send_multipart(frames, zmq::DONTWAIT);
            }
        }
        if !items[0].is_readable() || stop.load(Ordering::Relaxed) {
            continue;
        }
        while let Ok(mut frames) = sock.recv_multipart(zmq::DONTWAIT) {
            let Some(payload) = frames.pop() else { continue };
            if frames.is_empty() {
                continue;
            }
            if inflight >= 4096 {
                frames.push(protocol::error_reply(&Error::new(ErrorKind::Busy, "router busy: retry later")));
                let _ = sock.send_multipart(frames, zmq::DONTWAIT);
                continue;
            }
            if payload.len() > cfg.max_request_bytes {
                let e =
                    Error::new(ErrorKind::TooLarge, format!("request of {} bytes is over the limit", payload.len()));
                frames.push(protocol::error_reply(&e));
                let _ = sock.send_multipart(frames, zmq::DONTWAIT);
                continue;
            }
            inflight += 1;
            let _ = tx.send((frames, zmq::Message::from(payload)));
        }
    }
    drop(tx);
    for t in threads {
        let _ = t.join();
    }
    tracing::info!(endpoint = %endpoint, "stopped");
    Ok(())
}
