//! The server behind `faissx serve`: tenants, indices, per-vector metadata, persistence, and
//! every action of docs/protocol.md §7. Bytes are `protocol.rs`'s business, sockets and
//! threads `net.rs`'s; this module turns a decoded request into a reply payload or an
//! [`Error`].
//!
//! Concurrency: the registry maps `(tenant, index_id)` to an [`Entry`] whose index sits
//! behind an `RwLock`. Reads (search, reconstruct, status) take the read lock, so concurrent
//! searches share an index; mutations take the write lock and run on a per-index queue of that index, so a big add on one index never holds up searches or pings elsewhere. Cheap facts
//! (`ntotal`, `d`, type) are mirrored in atomics so `list_indices`, `health` and `ping` never
//! wait for an index lock.
//!
//! Persistence (`--data-dir`, see [`store`]): a WAL-logged mutation is logged before it is
//! applied (and taken back if it fails to apply); train, reset and merge are checkpointed on
//! copies that replace the served index only once on disk. An index whose files are damaged,
//! or whose log does not replay, is quarantined at start-up: listed with its reason, refused
//! by name, its files kept; the other indices are served.

mod net;
pub mod store;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{factory, Index, IndexSpec, Metric, OpenOptions, Rows, SearchParams, Storage};
use crate::engine::protocol::{self, Encoding, Msg, Value, MAX_DIMENSION, MAX_K};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use store::{IndexStore, Metadata, Store};

pub use net::serve;

/// What `faissx serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// ZeroMQ endpoint to bind, e.g. `tcp://0.0.0.0:45678` (port 0: any free port).
    pub endpoint: String,
    /// Persist under this directory; `None`: in memory only.
    pub data_dir: Option<PathBuf>,
    /// API key → tenant; `Some` turns authentication on.
    pub auth_keys: Option<HashMap<String, String>>,
    /// Largest accepted request in bytes.
    pub max_request_bytes: usize,
    /// Threads that decode requests and run searches.
    pub workers: usize,
    /// Log one line per request on stderr.
    pub verbose: bool,
    /// Memory-map persisted indices at start-up instead of loading them (read-only).
    pub mmap: bool,
}

/// A stored index and everything kept with it.
pub struct Slot {
    /// The FAISS index.
    pub index: Index,
    /// Per-vector and index-level metadata.
    pub md: Metadata,
    /// Its files, with `--data-dir`.
    pub store: Option<IndexStore>,
}

/// One index of one tenant.
pub struct Entry {
    kind: String,
    d: usize,
    ntotal: AtomicUsize,
    trained: AtomicBool,
    slot: RwLock<Slot>,
}

impl Entry {
    fn new(kind: String, slot: Slot) -> Arc<Entry> {
        Arc::new(Entry {
            kind,
            d: slot.index.d(),
            ntotal: AtomicUsize::new(slot.index.ntotal()),
            trained: AtomicBool::new(slot.index.is_trained()),
            slot: RwLock::new(slot),
        })
    }

    fn refresh(&self, s: &Slot) {
        self.ntotal.store(s.index.ntotal(), Ordering::Relaxed);
        self.trained.store(s.index.is_trained(), Ordering::Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        self.slot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        self.slot.write().unwrap_or_else(|p| p.into_inner())
    }
}

type Key = (String, String);

/// How an action is scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Cheap and lock-free: answered by the I/O thread.
    Inline,
    /// Takes an index's read lock (or none).
    Read,
    /// Changes state: runs on the lane of this key.
    Write(String),
}

/// A decoded, authenticated request.
pub struct Call {
    /// The action.
    pub action: String,
    /// The caller's tenant.
    pub tenant: String,
    /// The request.
    pub msg: Msg,
}

#[derive(Default)]
struct ActionStats {
    count: u64,
    errors: u64,
    samples: Vec<f32>,
    next: usize,
}

const SAMPLES: usize = 2048;

/// The state shared by all server threads.
pub struct Service {
    indices: RwLock<HashMap<Key, Arc<Entry>>>,
    store: Option<Store>,
    auth: Option<HashMap<String, String>>,
    started: Instant,
    /// Per (tenant, action).
    stats: Mutex<HashMap<(String, String), ActionStats>>,
    cores: usize,
    /// Indices found damaged at start-up, with the reason: listed to their tenant, refused
    /// to every request, their files kept.
    quarantined: RwLock<HashMap<Key, String>>,
}

/// Check an index or tenant id: 1–128 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_id(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(Error::invalid(format!(
            "invalid {what} {shown:?}: use 1-128 characters from [A-Za-z0-9._-], not \".\" or \"..\""
        )))
    }
}

/// Refuse a change to a memory-mapped or on-disk index before FAISS sees it (FAISS aborts
/// the process when asked to change read-only mapped data).
fn writable(id: &str, ix: &Index) -> Result<()> {
    match ix.storage() {
        Storage::Loaded => Ok(()),
        Storage::Mapped => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "index {id:?} is memory-mapped (serve --mmap) and read-only: searches work (nprobe/efSearch per request), changes need a restart without --mmap"
            ),
        )),
        Storage::OnDisk => Err(Error::new(
            ErrorKind::Unsupported,
            format!("index {id:?} has on-disk inverted lists and is read-only"),
        )),
    }
}

/// The name of a storage mode in replies.
fn storage_name(s: Storage) -> &'static str {
    match s {
        Storage::Loaded => "loaded",
        Storage::Mapped => "mapped",
        Storage::OnDisk => "on_disk",
    }
}

fn not_found(id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("index {id:?} not found"))
}

fn quarantined_error(id: &str, reason: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "index {id:?} is quarantined: {reason}; its files are kept as they were found: an operator must repair or remove them and restart the server"
        ),
    )
}

/// What an `index_type` asks for.
#[derive(Debug, Clone, PartialEq)]
enum TypeSpec {
    Factory {
        factory: String,
        metric: Metric,
    },
    /// A binary (Hamming) index from FAISS's binary factory.
    Binary {
        factory: String,
    },
    Wrap {
        v2: bool,
        base: String,
    },
}

/// FAISSx's binary index names (`BINARY_FLAT`, `BINARY_IVF<nlist>`, `BINARY_HASH<bits>`) and
/// FAISS's binary factory strings (`BFlat`, `BIVF…`, `BHNSW…`, `BHash…`) as a binary factory
/// string; `None` for every other type.
fn binary_factory(t: &str) -> Result<Option<String>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let upper = t.to_ascii_uppercase();
    if let Some(rest) = upper.strip_prefix("BINARY") {
        let f = match rest {
            "_FLAT" | "" => "BFlat".to_string(),
            r if r.strip_prefix("_IVF").is_some_and(digits) => format!("BIVF{}", &r[4..]),
            r if r.strip_prefix("_HASH").is_some_and(digits) => format!("BHash{}", &r[5..]),
            _ => {
                return Err(Error::invalid(format!(
                    "index type {t:?}: binary types are BINARY_FLAT, BINARY_IVF<nlist> and BINARY_HASH<bits>"
                )))
            }
        };
        return Ok(Some(f));
    }
    let factory = ["BFlat", "BIVF", "BHNSW", "BHash"].iter().any(|p| t.starts_with(p));
    Ok(factory.then(|| t.to_string()))
}

/// Translate FAISSx's index type names into FAISS factory strings; anything else is taken as
/// a factory string.
fn parse_index_type(t: &str, metric: Option<Metric>) -> Result<TypeSpec> {
    let t = t.trim();
    if let Some(base) = t.strip_prefix("IDMap2:") {
        return Ok(TypeSpec::Wrap { v2: true, base: base.to_string() });
    }
    if let Some(base) = t.strip_prefix("IDMap:") {
        return Ok(TypeSpec::Wrap { v2: false, base: base.to_string() });
    }
    if let Some(factory) = binary_factory(t)? {
        return Ok(TypeSpec::Binary { factory });
    }
    let (t, ip) = match t.strip_suffix("_IP") {
        Some(s) => (s, true),
        None => (t, false),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // The Python client names scalar quantizers by FAISS's QuantizerType number
    // (QT_8bit = 0, QT_fp16 = 4 is sent as 16): map those to factory names.
    let sq = |q: &str| match q {
        "0" => "8".to_string(),
        "16" => "fp16".to_string(),
        _ => q.to_string(),
    };
    let (factory, flat_ip) = match t {
        "" | "L2" | "Flat" | "FLAT" | "flat" => ("Flat".to_string(), false),
        "IP" => ("Flat".to_string(), true),
        "HNSW" => ("HNSW32".to_string(), false),
        _ => {
            if let Some(rest) = t.strip_prefix("IVF") {
                if digits(rest) {
                    (format!("IVF{rest},Flat"), false)
                } else if let Some((n, q)) = rest.split_once("_SQ") {
                    (format!("IVF{n},SQ{}", sq(q)), false)
                } else {
                    (t.to_string(), false)
                }
            } else if let Some(q) = t.strip_prefix("SQ") {
                (format!("SQ{}", sq(q)), false)
            } else if t.strip_prefix("PQ").is_some_and(|r| {
                let (m, b) = r.split_once('x').unwrap_or((r, "8"));
                digits(m) && digits(b)
            }) {
                // FAISSx's PQ<M>x<b> is the Python server's IndexPQ(d, M, b), without the
                // polysemous training FAISS's factory string turns on (15 s instead of
                // 0.01 s for PQ4x8 on 1,000 x 8): the factory's "np" form.
                (format!("{t}np"), false)
            } else {
                (t.to_string(), false)
            }
        }
    };
    let metric = metric.unwrap_or(if ip || flat_ip { Metric::Ip } else { Metric::L2 });
    Ok(TypeSpec::Factory { factory, metric })
}

/// Largest `nq × k` of one search (results the server allocates and encodes: 12 bytes each,
/// plus the reply's msgpack).
pub const MAX_RESULTS: usize = 1 << 20;

/// Largest `efSearch` / `efConstruction` (HNSW allocates search heaps of this size per query;
/// `efSearch = 5e7` took 400 MB for one query).
pub const MAX_EF: u64 = 1 << 16;

/// Largest `nq × ntotal` of one range search (every stored vector may be a hit: FAISS
/// allocates 12 bytes per hit before the server can count them).
pub const MAX_RANGE_CANDIDATES: usize = 1 << 25;

/// Check a search knob against the server's limits (`nprobe` ≤ [`factory::MAX_NLIST`], which
/// FAISS clamps to nlist anyway; `efSearch`/`efConstruction` ≤ [`MAX_EF`]).
fn knob(name: &str, v: u64) -> Result<usize> {
    let max = if name == "nprobe" { crate::engine::index::factory::MAX_NLIST } else { MAX_EF };
    if v == 0 || v > max {
        return Err(Error::invalid(format!("{name}={v} is out of range 1..={max}")));
    }
    Ok(v as usize)
}

/// Search parameters from a request's `params` map.
fn search_params(m: &Msg, k: usize) -> Result<SearchParams> {
    protocol::params::search_params(m, k, knob)
}

/// Refuse a search of `nq` queries whose `nq × k` results exceed [`MAX_RESULTS`].
fn check_results(nq: usize, k: usize) -> Result<()> {
    if nq.saturating_mul(k) > MAX_RESULTS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "nq={nq} × k={k} results exceed the server's limit of {MAX_RESULTS} per request: split the queries"
            ),
        ));
    }
    Ok(())
}

fn k_of(m: &Msg) -> Result<usize> {
    let k = m.int("k")?.unwrap_or(10);
    if !(1..=MAX_K as i64).contains(&k) {
        return Err(Error::invalid(format!("k={k} is out of range 1..={MAX_K}")));
    }
    Ok(k as usize)
}

fn metric_of(m: &Msg) -> Result<Option<Metric>> {
    for key in ["metric", "metric_type"] {
        if let Some(s) = m.str(key)? {
            return Metric::parse(s).map(Some);
        }
        if let Some(i) = m.int(key).ok().flatten() {
            // FAISS's numeric metric types: 0 inner product, 1 L2.
            return Ok(Some(if i == 0 { Metric::Ip } else { Metric::L2 }));
        }
    }
    Ok(None)
}

impl Service {
    /// Open the data directory (if any) and restore every index. An index that cannot be
    /// restored (damaged files, a WAL record that fails on replay) is quarantined, with one
    /// line on stderr, and the others are served.
    pub fn open(cfg: &ServerConfig) -> Result<Service> {
        let store = cfg.data_dir.as_deref().map(Store::open).transpose()?;
        let svc = Service {
            indices: RwLock::new(HashMap::new()),
            store,
            auth: cfg.auth_keys.clone(),
            started: Instant::now(),
            stats: Mutex::new(HashMap::new()),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            quarantined: RwLock::new(HashMap::new()),
        };
        if let Some(st) = &svc.store {
            let report = st.load_all(cfg.mmap)?;
            for w in &report.warnings {
                log_line(format_args!("{w}"));
            }
            let mut map = HashMap::new();
            let mut quarantined: HashMap<Key, String> =
                report.quarantined.into_iter().map(|q| ((q.tenant, q.id), q.reason)).collect();
            for l in report.loaded {
                let key = (l.tenant.clone(), l.id.clone());
                let kind = l.kind.clone();
                match restore(l, cfg.mmap) {
                    Ok(slot) => {
                        map.insert(key, Entry::new(kind, slot));
                    }
                    Err(reason) => {
                        quarantined.insert(key, reason);
                    }
                }
            }
            let mut shown: Vec<(&Key, &String)> = quarantined.iter().collect();
            shown.sort();
            for ((t, id), reason) in shown {
                log_line(format_args!(
                    "index {id:?} of tenant {t:?} is quarantined (files kept, requests refused): {reason}"
                ));
            }
            // Clients see paths relative to the data directory, not the server's layout.
            if let Some(dir) = &cfg.data_dir {
                let prefix = format!("{}/", dir.display());
                for reason in quarantined.values_mut() {
                    *reason = reason.replace(&prefix, "");
                }
            }
            *svc.indices.write().unwrap_or_else(|p| p.into_inner()) = map;
            *svc.quarantined.write().unwrap_or_else(|p| p.into_inner()) = quarantined;
        }
        Ok(svc)
    }

    /// Number of indices across tenants.
    pub fn index_count(&self) -> usize {
        self.indices.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn entry(&self, tenant: &str, id: &str) -> Result<Arc<Entry>> {
        valid_id("index_id", id)?;
        let key = (tenant.to_string(), id.to_string());
        if let Some(e) = self.indices.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(e.clone());
        }
        Err(match self.quarantined.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            Some(reason) => quarantined_error(id, reason),
            None => not_found(id),
        })
    }

    /// This tenant's quarantined indices, by id.
    fn quarantined_of(&self, tenant: &str) -> Vec<(String, String)> {
        let q = self.quarantined.read().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<(String, String)> =
            q.iter().filter(|((t, _), _)| t == tenant).map(|((_, id), r)| (id.clone(), r.clone())).collect();
        rows.sort();
        rows
    }

    /// Authenticate a request frame, then decode it: `action`, `api_key` and `tenant_id`
    /// are read first with a scan that allocates nothing ([`protocol::peek_head`]), so a
    /// request with a missing or wrong key is refused before any of its payload is
    /// materialised; only then is the frame decoded ([`Msg::decode_request`], memory-bounded).
    pub fn prepare(&self, bytes: &[u8]) -> Result<Call> {
        let head = protocol::peek_head(bytes)?;
        let action =
            head.action.ok_or_else(|| Error::new(ErrorKind::Protocol, "request has no \"action\" field"))?.to_string();
        let tenant = match &self.auth {
            Some(keys) if action != "ping" => {
                let key = head.api_key.ok_or_else(|| Error::new(ErrorKind::Auth, "API key required"))?;
                keys.get(key).cloned().ok_or_else(|| Error::new(ErrorKind::Auth, "Invalid API key"))?
            }
            _ => head.tenant_id.filter(|s| !s.is_empty()).unwrap_or("default").to_string(),
        };
        valid_id("tenant_id", &tenant)?;
        let msg = Msg::decode_request(bytes)?;
        Ok(Call { action, tenant, msg })
    }

    /// How `call` is scheduled.
    pub fn class(call: &Call) -> Class {
        let id = |k: &str| call.msg.str(k).ok().flatten().unwrap_or("").to_string();
        match call.action.as_str() {
            "ping" | "health" | "metrics" | "list_indices" | "list_indexes" => Class::Inline,
            "create_index" | "add_vectors" | "add_with_ids" | "train_index" | "remove_ids" | "replace_vector"
            | "delete_index" | "set_parameter" | "reset" | "clear" | "snapshot" => Class::Write(id("index_id")),
            "merge_indices" => Class::Write(id("target_index_id")),
            _ => Class::Read,
        }
    }

    /// Whether `call` is a search small enough (≤ ~2M multiply-adds of flat distance work,
    /// ≤ 4,096 results) to answer on the I/O thread without delaying other requests noticeably.
    pub fn is_cheap_search(&self, call: &Call) -> bool {
        if call.action != "search" {
            return false;
        }
        let Some(Ok(e)) = call.msg.str("index_id").ok().flatten().map(|id| self.entry(&call.tenant, id)) else {
            return false;
        };
        let nq = call.msg.rows_hint("query_vectors").unwrap_or(1) as usize;
        let k = call.msg.uint("k").ok().flatten().unwrap_or(10) as usize;
        e.ntotal.load(Ordering::Relaxed).saturating_mul(e.d).saturating_mul(nq) <= 2_000_000
            && nq.saturating_mul(k) <= 4096
    }

    /// Record a finished request of `tenant` for `metrics` (requests that failed before
    /// authentication have tenant `""`, which no caller can see).
    pub fn record(&self, tenant: &str, action: &str, took: Duration, ok: bool) {
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let known = matches!(
            action,
            "ping"
                | "health"
                | "metrics"
                | "list_indices"
                | "list_indexes"
                | "create_index"
                | "add_vectors"
                | "add_with_ids"
                | "search"
                | "range_search"
                | "train_index"
                | "reconstruct"
                | "reconstruct_n"
                | "remove_ids"
                | "replace_vector"
                | "delete_index"
                | "get_index_status"
                | "get_index_stats"
                | "get_index_info"
                | "set_parameter"
                | "get_parameter"
                | "reset"
                | "clear"
                | "merge_indices"
                | "get_vectors"
                | "search_and_reconstruct"
                | "get_metadata"
                | "snapshot"
        );
        let action = if known { action } else { "other" };
        let a = st.entry((tenant.to_string(), action.to_string())).or_default();
        a.count += 1;
        if !ok {
            a.errors += 1;
        }
        let ms = took.as_secs_f32() * 1000.0;
        if a.samples.len() < SAMPLES {
            a.samples.push(ms);
        } else {
            a.samples[a.next] = ms;
            a.next = (a.next + 1) % SAMPLES;
        }
    }

    /// Run `call` (any class), blocking on index locks as needed.
    pub fn execute(&self, call: &Call) -> Result<Msg> {
        match Service::class(call) {
            Class::Inline => self.inline(call),
            Class::Write(_) => self.write(call),
            Class::Read => self.read(call, true).map(|r| r.expect("invariant: blocking read always answers")),
        }
    }

    /// Inline actions: no index locks.
    pub fn inline(&self, call: &Call) -> Result<Msg> {
        let m = &call.msg;
        match call.action.as_str() {
            "ping" => Ok(Msg::default().with("message", "pong").with("time", protocol::now_f64())),
            "health" => {
                let (mut n, mut v) = (0u64, 0u64);
                for ((t, _), e) in self.indices.read().unwrap_or_else(|p| p.into_inner()).iter() {
                    if *t == call.tenant {
                        n += 1;
                        v += e.ntotal.load(Ordering::Relaxed) as u64;
                    }
                }
                let quarantined: Vec<Value> = self
                    .quarantined_of(&call.tenant)
                    .into_iter()
                    .map(|(id, reason)| Msg::default().with("index_id", id).with("reason", reason).into_value())
                    .collect();
                Ok(Msg::default()
                    .with("status", if quarantined.is_empty() { "ok" } else { "degraded" })
                    .with("uptime_s", self.started.elapsed().as_secs_f64())
                    .with("indexes", n)
                    .with("vectors", v)
                    .with("protocol_version", protocol::PROTOCOL_VERSION)
                    .with("persistent", self.store.is_some())
                    .with("quarantined", Value::Array(quarantined)))
            }
            "metrics" => {
                // Only the caller's tenant: another tenant's traffic is its own business.
                let st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                let mut names: Vec<&(String, String)> = st.keys().filter(|(t, _)| *t == call.tenant).collect();
                names.sort();
                let (mut requests, mut errors) = (0u64, 0u64);
                let actions = names
                    .into_iter()
                    .map(|n| {
                        let a = &st[n];
                        requests += a.count;
                        errors += a.errors;
                        let mut s = a.samples.clone();
                        s.sort_by(f32::total_cmp);
                        let pct = |p: f64| {
                            if s.is_empty() {
                                0.0
                            } else {
                                s[((s.len() - 1) as f64 * p).round() as usize] as f64
                            }
                        };
                        (
                            Value::from(n.1.as_str()),
                            Msg::default()
                                .with("count", a.count)
                                .with("errors", a.errors)
                                .with("p50_ms", pct(0.5))
                                .with("p99_ms", pct(0.99))
                                .into_value(),
                        )
                    })
                    .collect();
                Ok(Msg::default()
                    .with("tenant", call.tenant.as_str())
                    .with("requests", requests)
                    .with("errors", errors)
                    .with("uptime_s", self.started.elapsed().as_secs_f64())
                    .with("actions", Value::Map(actions)))
            }
            "list_indices" | "list_indexes" => {
                let map = self.indices.read().unwrap_or_else(|p| p.into_inner());
                let rows: Vec<(&String, &Arc<Entry>)> =
                    map.iter().filter(|((t, _), _)| *t == call.tenant).map(|((_, id), e)| (id, e)).collect();
                let mut list: Vec<(String, Value)> = rows
                    .into_iter()
                    .map(|(id, e)| {
                        let row = Msg::default()
                            .with("index_id", id.as_str())
                            .with("dimension", e.d as u64)
                            .with("vector_count", e.ntotal.load(Ordering::Relaxed) as u64)
                            .with("type", e.kind.as_str())
                            .with("is_trained", e.trained.load(Ordering::Relaxed))
                            .with("status", "ok");
                        (id.clone(), row.into_value())
                    })
                    .collect();
                drop(map);
                // Quarantined indices are listed too, with why they are not served.
                for (id, reason) in self.quarantined_of(&call.tenant) {
                    let row = Msg::default()
                        .with("index_id", id.as_str())
                        .with("status", "quarantined")
                        .with("reason", reason);
                    list.push((id, row.into_value()));
                }
                list.sort_by(|a, b| a.0.cmp(&b.0));
                let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
                let _ = m;
                Ok(Msg::default().with("indexes", Value::Array(list)))
            }
            _ => Err(Error::new(ErrorKind::Unsupported, format!("unknown action {:?}", call.action))),
        }
    }

    /// Read actions. With `blocking == false`, returns `Ok(None)` instead of waiting for an
    /// index that a mutation holds.
    pub fn read(&self, call: &Call, blocking: bool) -> Result<Option<Msg>> {
        let m = &call.msg;
        let known = matches!(
            call.action.as_str(),
            "search"
                | "range_search"
                | "reconstruct"
                | "reconstruct_n"
                | "get_vectors"
                | "search_and_reconstruct"
                | "get_index_status"
                | "get_index_stats"
                | "get_index_info"
                | "get_parameter"
                | "get_metadata"
        );
        if !known {
            return Err(Error::new(ErrorKind::Unsupported, format!("unknown action {:?}", call.action)));
        }
        let id = m.req_str("index_id")?;
        let e = self.entry(&call.tenant, id)?;
        let guard = if blocking {
            e.read()
        } else {
            match e.slot.try_read() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            }
        };
        let s = &*guard;
        let ix = &s.index;
        let binary = m.flag("binary")?;
        let out = match call.action.as_str() {
            "search" | "search_and_reconstruct" => {
                let k = k_of(m)?;
                let q = m.rows("query_vectors", ix)?;
                let params = search_params(m, k)?;
                let nq = ix.rows_in(&q)?;
                check_results(nq, k)?;
                // Small searches are cheaper on one thread than through OpenMP's pool.
                crate::engine::index::set_threads(if nq >= 16 { self.cores } else { 1 });
                let n = ix.search_rows(&q, &params)?;
                let with_md = m.flag("include_metadata")?;
                let md_row = |ids: &[i64]| {
                    Value::Array(ids.iter().map(|i| s.md.vectors.get(i).cloned().unwrap_or(Value::Nil)).collect())
                };
                let mut out = Msg::default().with("num_queries", n.nq as u64).with("k", k as u64);
                if binary && call.action == "search" {
                    out.set("distances", Value::Binary(protocol::f32_bytes(&n.dists)));
                    out.set("labels", Value::Binary(protocol::i64_bytes(&n.ids)));
                    if with_md {
                        out.set("metadata", Value::Array((0..n.nq).map(|q| md_row(n.row(q).0)).collect()));
                    }
                } else {
                    let mut results = Vec::with_capacity(n.nq);
                    for qi in 0..n.nq {
                        let (ids, d) = n.row(qi);
                        let mut r = Msg::default()
                            .with("distances", protocol::floats_value(d))
                            .with("indices", protocol::ints_value(ids));
                        if with_md {
                            r.set("metadata", md_row(ids));
                        }
                        if call.action == "search_and_reconstruct" {
                            let vecs = ids
                                .iter()
                                .map(|&i| {
                                    if i < 0 {
                                        Ok(Value::Nil)
                                    } else {
                                        ix.reconstruct_rows(i).map(|v| protocol::row_value(&v))
                                    }
                                })
                                .collect::<Result<Vec<_>>>()?;
                            r.set("vectors", Value::Array(vecs));
                        }
                        results.push(r.into_value());
                    }
                    out.set("results", Value::Array(results));
                    if call.action == "search" {
                        // The Python client's IndexIVFPQ reads nq × k `distances`/`indices`
                        // at the top level.
                        let k1 = n.k.max(1);
                        out.set("distances", Value::Array(n.dists.chunks(k1).map(protocol::floats_value).collect()));
                        out.set("indices", Value::Array(n.ids.chunks(k1).map(protocol::ints_value).collect()));
                    }
                }
                out
            }
            "range_search" => {
                let radius = m.float("radius")?.ok_or_else(|| Error::invalid("missing field \"radius\""))?;
                let q = m.rows("query_vectors", ix)?;
                let nq = ix.rows_in(&q)?;
                if nq.saturating_mul(ix.ntotal()) > MAX_RANGE_CANDIDATES {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!(
                            "range search of nq={nq} over ntotal={} may return more than the server's limit of {MAX_RANGE_CANDIDATES} hits: split the queries",
                            ix.ntotal()
                        ),
                    ));
                }
                let h = ix.range_search_rows(&q, radius as f32)?;
                if h.ids.len() > MAX_RESULTS {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("range search found {} hits, more than the server's limit of {MAX_RESULTS} per reply: use a smaller radius or fewer queries", h.ids.len()),
                    ));
                }
                let mut results = Vec::with_capacity(h.nq());
                for qi in 0..h.nq() {
                    let (ids, d) = h.row(qi);
                    results.push(
                        Msg::default()
                            .with("query_index", qi as u64)
                            .with("num_results", ids.len() as u64)
                            .with("indices", protocol::ints_value(ids))
                            .with("distances", protocol::floats_value(d))
                            .into_value(),
                    );
                }
                Msg::default()
                    .with("results", Value::Array(results))
                    .with("num_queries", h.nq() as u64)
                    .with("radius", radius)
                    .with("lims", Value::Array(h.lims.iter().map(|&l| Value::from(l as u64)).collect()))
                    .with("indices", protocol::ints_value(&h.ids))
                    .with("distances", protocol::floats_value(&h.dists))
            }
            "reconstruct" => {
                let key = match m.int("id")? {
                    Some(k) => k,
                    None => m.int("idx")?.ok_or_else(|| Error::invalid("missing field \"id\" (or \"idx\")"))?,
                };
                let v = ix.reconstruct_rows(key)?;
                Msg::default().with(
                    "vector",
                    if binary { protocol::rows_value(&v, ix.d(), Encoding::Binary) } else { protocol::row_value(&v) },
                )
            }
            "reconstruct_n" | "get_vectors" => {
                let start = m.uint("start_idx")?.unwrap_or(0) as usize;
                let nt = ix.ntotal();
                if start > nt {
                    return Err(Error::invalid(format!("start_idx={start} is past ntotal={nt}")));
                }
                let n = if call.action == "reconstruct_n" {
                    let n =
                        m.uint("num_vectors")?.ok_or_else(|| Error::invalid("missing field \"num_vectors\""))? as usize;
                    if start.checked_add(n).is_none_or(|end| end > nt) {
                        return Err(Error::invalid(format!("start_idx={start} + num_vectors={n} is past ntotal={nt}")));
                    }
                    n
                } else {
                    (m.uint("limit")?.map_or(nt, |l| l as usize)).min(nt - start)
                };
                if n.saturating_mul(ix.d()) > MAX_RESULTS.saturating_mul(64) {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("{n} vectors of d={} exceed the server's limit per reply: read them in ranges (start_idx, num_vectors)", ix.d()),
                    ));
                }
                let v = match (n, ix.is_binary()) {
                    (0, false) => Rows::Float(Vec::new()),
                    (0, true) => Rows::Codes(Vec::new()),
                    _ => ix.reconstruct_n_rows(start, n)?,
                };
                let enc = if binary { Encoding::Binary } else { Encoding::Nested };
                Msg::default()
                    .with("vectors", protocol::rows_value(&v, ix.d(), enc))
                    .with("start_idx", start as u64)
                    .with("num_vectors", n as u64)
                    .with("ntotal", nt as u64)
            }
            "get_index_status" | "get_index_stats" | "get_index_info" => {
                let status = self.status(id, &e, s)?;
                let mut out = Msg::default()
                    .with("index_id", id)
                    .with("dimension", ix.d() as u64)
                    .with("ntotal", ix.ntotal() as u64)
                    .with("is_trained", ix.is_trained())
                    .with("status", status.into_value());
                if call.action == "get_index_info" {
                    let mut storage = Msg::default()
                        .with("mode", storage_name(ix.storage()))
                        .with("estimated_memory_bytes", estimate_bytes(ix))
                        .with("persistent", s.store.is_some());
                    if let Some(st) = &s.store {
                        storage.set("wal_bytes", st.wal_bytes());
                    }
                    out.set("storage", storage.into_value());
                    if let Some(md) = &s.md.index {
                        out.set("metadata", md.clone());
                    }
                }
                out
            }
            "get_parameter" => {
                let p = m.req_str("parameter")?;
                let info = ix.describe()?;
                let v: Value = match p {
                    "nprobe" => info.nprobe.map(|v| Value::from(v as u64)),
                    "efSearch" | "ef_search" => info.ef_search.map(|v| Value::from(v as u64)),
                    "efConstruction" | "ef_construction" => info.ef_construction.map(|v| Value::from(v as u64)),
                    "nlist" => info.nlist.map(|v| Value::from(v as u64)),
                    "M" => info.hnsw_m.map(|v| Value::from(v as u64)),
                    "dimension" | "d" => Some(Value::from(ix.d() as u64)),
                    "ntotal" => Some(Value::from(ix.ntotal() as u64)),
                    "is_trained" => Some(Value::Boolean(ix.is_trained())),
                    "metric" | "metric_type" => Some(Value::from(ix.metric().to_string())),
                    _ => return Err(Error::invalid(format!("unknown parameter {p:?}"))),
                }
                .ok_or_else(|| {
                    Error::new(ErrorKind::Unsupported, format!("parameter {p:?} does not apply to {}", info.type_name))
                })?;
                Msg::default().with("param_name", p).with("param_value", v)
            }
            "get_metadata" => {
                let ids = m.ids("ids")?.ok_or_else(|| Error::invalid("missing field \"ids\""))?;
                Msg::default().with("index_id", id).with(
                    "metadata",
                    Value::Array(ids.iter().map(|i| s.md.vectors.get(i).cloned().unwrap_or(Value::Nil)).collect()),
                )
            }
            _ => unreachable!("checked above"),
        };
        Ok(Some(out))
    }

    fn status(&self, id: &str, e: &Entry, s: &Slot) -> Result<Msg> {
        let info = s.index.info(None)?;
        let mut st = Msg::default()
            .with("index_id", id)
            .with("dimension", info.d as u64)
            .with("ntotal", info.ntotal as u64)
            .with("index_type", e.kind.as_str())
            .with("faiss_type", info.index_type.as_str())
            .with("is_trained", info.is_trained)
            .with("metric", info.metric.to_string());
        for (k, v) in [
            ("nlist", info.nlist),
            ("nprobe", info.nprobe),
            ("M", info.hnsw_m),
            ("efSearch", info.ef_search),
            ("efConstruction", info.ef_construction),
        ] {
            if let Some(v) = v {
                st.set(k, v as u64);
            }
        }
        st.set("explicit_ids", info.explicit_ids);
        st.set("storage", storage_name(info.storage));
        st.set("vectors_with_metadata", s.md.vectors.len() as u64);
        Ok(st)
    }

    /// Mutations. Runs on the index's lane; takes the index's write lock.
    pub fn write(&self, call: &Call) -> Result<Msg> {
        let m = &call.msg;
        let t = &call.tenant;
        match call.action.as_str() {
            "create_index" => self.create(t, m),
            "delete_index" => {
                let id = m.req_str("index_id")?;
                let e = self.entry(t, id)?;
                let mut map = self.indices.write().unwrap_or_else(|p| p.into_inner());
                if let Some(st) = &self.store {
                    st.delete(t, id)?;
                }
                map.remove(&(t.clone(), id.to_string()));
                drop(map);
                // Stop further WAL writes through in-flight holders.
                e.write().store = None;
                Ok(Msg::default().with("message", format!("index {id} deleted")).with("index_id", id))
            }
            "merge_indices" => self.merge(t, m),
            "snapshot" => {
                let targets: Vec<(String, Arc<Entry>)> = match m.str("index_id")? {
                    Some(id) => vec![(id.to_string(), self.entry(t, id)?)],
                    None => {
                        let map = self.indices.read().unwrap_or_else(|p| p.into_inner());
                        map.iter().filter(|((tt, _), _)| tt == t).map(|((_, id), e)| (id.clone(), e.clone())).collect()
                    }
                };
                let mut done = 0u64;
                for (_, e) in &targets {
                    let mut g = e.write();
                    let s = &mut *g;
                    // A mapped index never changes, so its checkpoint is current already.
                    if s.index.storage() != Storage::Loaded {
                        continue;
                    }
                    if let Some(st) = s.store.as_mut() {
                        st.checkpoint(&mut s.index, &s.md)?;
                        done += 1;
                    }
                }
                let msg = if self.store.is_some() {
                    format!("checkpointed {done} index(es)")
                } else {
                    "server is in-memory (no --data-dir): nothing to checkpoint".to_string()
                };
                Ok(Msg::default().with("message", msg).with("checkpointed", done))
            }
            _ => {
                let id = m.req_str("index_id")?;
                let e = self.entry(t, id)?;
                let mut g = e.write();
                writable(id, &g.index)?;
                let out = self.mutate(call, &mut g);
                e.refresh(&g);
                out
            }
        }
    }

    fn mutate(&self, call: &Call, s: &mut Slot) -> Result<Msg> {
        let m = &call.msg;
        let mutation = match call.action.as_str() {
            "add_vectors" | "add_with_ids" => {
                let x = m.rows("vectors", &s.index)?;
                let n = s.index.rows_in(&x)?;
                let ids = m.ids("ids")?;
                if call.action == "add_with_ids" && ids.is_none() {
                    return Err(Error::invalid("add_with_ids needs \"ids\""));
                }
                if let Some(ids) = &ids {
                    if ids.len() != n {
                        return Err(Error::invalid(format!(
                            "{} ids for {n} vectors: give exactly one id per vector",
                            ids.len()
                        )));
                    }
                }
                let md = match m.get("metadata") {
                    None => None,
                    Some(Value::Array(a)) if a.len() == n => Some(a.clone()),
                    Some(Value::Array(a)) => {
                        return Err(Error::invalid(format!(
                            "{} metadata values for {n} vectors: give one per vector",
                            a.len()
                        )))
                    }
                    Some(v) => {
                        return Err(Error::invalid(format!(
                            "field \"metadata\" must be an array (one value per vector), got {}",
                            protocol::type_name(v)
                        )))
                    }
                };
                // Check everything the engine would refuse before anything changes or is
                // logged.
                match &ids {
                    Some(_) if !s.index.takes_ids()? => {
                        return Err(Error::invalid(
                            "this index does not store ids: create it as IDMap:<type> or IDMap2:<type>",
                        ))
                    }
                    Some(ids) => crate::engine::index::check_ids(ids)?,
                    None if s.index.requires_ids()? => {
                        return Err(Error::invalid("this index stores explicit ids (IDMap): use add_with_ids"))
                    }
                    None => {}
                }
                // The Python client's IndexScalarQuantizer has no train(): it relies on
                // implicit training, which for a scalar quantizer (value ranges) is cheap and
                // deterministic, so the first add trains on its own vectors.
                if !s.index.is_trained() && s.index.describe()?.inner_name == "IndexScalarQuantizer" && !x.is_empty() {
                    change_durably(s, |ix, _| ix.train_rows(&x))?;
                }
                if !s.index.is_trained() {
                    return Err(Error::new(ErrorKind::NotTrained, "index is not trained: call train_index first"));
                }
                Mutation::Add { x, ids, md }
            }
            "train_index" => {
                let x = m.rows("training_vectors", &s.index)?;
                if x.is_empty() {
                    return Err(Error::invalid("training needs at least one vector"));
                }
                let n = s.index.rows_in(&x)?;
                change_durably(s, |ix, _| ix.train_rows(&x))?;
                return Ok(Msg::default().with("is_trained", s.index.is_trained()).with("trained_with", n as u64));
            }
            "remove_ids" => {
                let ids = m.ids("ids")?.ok_or_else(|| Error::invalid("missing field \"ids\""))?;
                Mutation::Remove { ids }
            }
            "replace_vector" => {
                let id = m.req_int("id")?;
                let x = m.rows("vector", &s.index)?;
                if s.index.rows_in(&x)? != 1 {
                    return Err(Error::invalid("replace_vector takes exactly one vector"));
                }
                if s.index.describe()?.idmap != 2 {
                    return Err(Error::new(ErrorKind::Unsupported, "replace_vector needs an IDMap2 index"));
                }
                Mutation::Replace { id, x }
            }
            "set_parameter" => {
                let name = m.req_str("parameter")?.to_string();
                let value = m.uint("value")?.ok_or_else(|| Error::invalid("missing field \"value\" (an integer)"))?;
                Mutation::SetParam { name, value }
            }
            "reset" | "clear" => {
                // The emptied copy is checkpointed before the vectors go (a copy costs the
                // index's memory once more, for a moment; resets are rare).
                change_durably(s, |ix, md| {
                    ix.reset()?;
                    md.vectors.clear();
                    Ok(())
                })?;
                return Ok(Msg::default()
                    .with("message", "index reset")
                    .with("ntotal", 0u64)
                    .with("is_trained", s.index.is_trained()));
            }
            _ => return Err(Error::new(ErrorKind::Unsupported, format!("unknown action {:?}", call.action))),
        };
        mutation.check(s)?;
        if let Some(st) = s.store.as_mut() {
            st.log(mutation.record())?;
        }
        let before = s.index.ntotal();
        let out = match mutation.apply(s) {
            Ok(out) => out,
            Err(e) => {
                unlog_failed(s, before);
                return Err(e);
            }
        };
        // The mutation is logged and applied: a checkpoint that fails now only leaves the
        // WAL longer, so it must not turn the reply into an error.
        if s.store.as_ref().is_some_and(|st| st.wants_checkpoint()) {
            if let Err(e) = checkpoint(s) {
                log_line(format_args!("checkpoint of {} failed: {}", dir_of(s), e.chain()));
            }
        }
        Ok(out)
    }

    fn create(&self, t: &str, m: &Msg) -> Result<Msg> {
        let id = m.req_str("index_id")?;
        valid_id("index_id", id)?;
        let key = (t.to_string(), id.to_string());
        if self.indices.read().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("index {id:?} already exists")));
        }
        if let Some(reason) = self.quarantined.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            // Its files are still there: never write over them.
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("index {id:?} already exists and is quarantined ({reason}); choose another name"),
            ));
        }
        let dim = m.int("dimension")?.ok_or_else(|| Error::invalid("missing field \"dimension\""))?;
        if !(1..=MAX_DIMENSION as i64).contains(&dim) {
            return Err(Error::invalid(format!("dimension={dim} is out of range 1..={MAX_DIMENSION}")));
        }
        let dim = dim as usize;
        let kind = m.str("index_type")?.unwrap_or("L2").to_string();
        let metric = metric_of(m)?;
        // Within the server's per-index memory limits (factory::check_cost) before FAISS
        // allocates anything.
        let make = |spec: TypeSpec| -> Result<Index> {
            match spec {
                TypeSpec::Factory { factory, metric } => {
                    factory::check_cost(&factory, dim)?;
                    Index::create(&IndexSpec { factory, metric, dim }, false)
                }
                TypeSpec::Binary { factory } => {
                    factory::check_cost(&factory, dim)?;
                    Index::create_binary(dim, &factory)
                }
                TypeSpec::Wrap { .. } => Err(Error::invalid(format!("index type {kind:?}: nested IDMap"))),
            }
        };
        let mut index = match parse_index_type(&kind, metric)? {
            TypeSpec::Wrap { v2, base } => {
                let existing = valid_id("index_id", &base).ok().and_then(|_| self.entry(t, &base).ok());
                let inner = match existing {
                    Some(e) => {
                        let g = e.read();
                        if g.index.d() != dim {
                            return Err(Error::new(
                                ErrorKind::DimensionMismatch,
                                format!("base index {base:?} has d={}, expected d={dim}", g.index.d()),
                            ));
                        }
                        if g.index.ntotal() > 0 {
                            return Err(Error::invalid(format!(
                                "base index {base:?} holds vectors; only an empty index can be wrapped in an IDMap"
                            )));
                        }
                        g.index.try_clone()?
                    }
                    None => make(parse_index_type(if base.is_empty() { "L2" } else { &base }, metric)?)?,
                };
                if inner.describe()?.idmap > 0 {
                    return Err(Error::invalid(format!("index type {kind:?}: the base already has an IDMap")));
                }
                inner.wrap_idmap(v2)?
            }
            spec => make(spec)?,
        };
        let md = Metadata { index: m.get("metadata").cloned(), vectors: HashMap::new() };
        let store = match &self.store {
            Some(st) => Some(st.create(t, id, &kind, &mut index, &md)?),
            None => None,
        };
        let trained = index.is_trained();
        let entry = Entry::new(kind.clone(), Slot { index, md, store });
        self.indices.write().unwrap_or_else(|p| p.into_inner()).insert(key, entry);
        Ok(Msg::default()
            .with("index_id", id)
            .with("dimension", dim as u64)
            .with("type", kind.as_str())
            .with("is_trained", trained)
            .with("message", format!("index {id} created")))
    }

    fn merge(&self, t: &str, m: &Msg) -> Result<Msg> {
        let target = m.req_str("target_index_id")?;
        let sources =
            m.strings("source_index_ids")?.ok_or_else(|| Error::invalid("missing field \"source_index_ids\""))?;
        let te = self.entry(t, target)?;
        writable(target, &te.read().index)?;
        // Copy the sources first (read locks only), so no lock is held while waiting for another.
        let target_binary = te.read().index.is_binary();
        let mut copies = Vec::new();
        for sid in &sources {
            if sid == target {
                return Err(Error::invalid("an index cannot be merged into itself"));
            }
            let e = self.entry(t, sid)?;
            let g = e.read();
            if g.index.d() != te.d {
                return Err(Error::new(
                    ErrorKind::DimensionMismatch,
                    format!("source {sid:?} has d={}, target has d={}", g.index.d(), te.d),
                ));
            }
            if g.index.is_binary() != target_binary {
                return Err(Error::invalid(format!(
                    "source {sid:?} and target {target:?} hold different kinds of vectors (binary codes and floats)"
                )));
            }
            if g.index.storage() != Storage::Loaded {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("source {sid:?} is memory-mapped (serve --mmap): merging copies it, which needs it loaded"),
                ));
            }
            // Binary indices have no IVF merge: read their vectors now, so that a source that
            // cannot give them back fails before the target changes.
            let rows = match (g.index.is_binary(), g.index.ntotal()) {
                (true, n) if n > 0 => Some(g.index.reconstruct_n_rows(0, n)?),
                _ => None,
            };
            copies.push((sid.clone(), g.index.try_clone()?, g.md.vectors.clone(), rows));
        }
        let mut g = te.write();
        let s = &mut *g;
        writable(target, &s.index)?;
        if !s.index.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, "target index is not trained"));
        }
        // Merged into a copy, checkpointed, and only then swapped in (in memory: in place).
        change_durably(s, |ix, md_all| {
            for (sid, mut src, md, rows) in copies {
                let base = ix.ntotal() as i64;
                let renumbered = !src.takes_ids()?;
                if ix.ivf_merge_from(&mut src, 0)? {
                    // IVF merge keeps ids.
                    md_all.vectors.extend(md);
                    continue;
                }
                if ix.requires_ids()? || src.requires_ids()? {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "merging {sid:?}: only IVF indices with the same quantizer, or id-less indices, can be merged"
                        ),
                    ));
                }
                let n = src.ntotal();
                if n > 0 {
                    let x = match rows {
                        Some(x) => x,
                        None => src.reconstruct_n_rows(0, n)?,
                    };
                    ix.add_rows(&x, None)?;
                }
                for (k, v) in md {
                    md_all.vectors.insert(if renumbered { base + k } else { k }, v);
                }
            }
            Ok(())
        })?;
        te.refresh(s);
        Ok(Msg::default().with("ntotal", s.index.ntotal() as u64).with("message", format!("merged into {target}")))
    }

    /// Checkpoint every index (clean shutdown).
    pub fn checkpoint_all(&self) {
        let entries: Vec<Arc<Entry>> =
            self.indices.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for e in entries {
            let mut g = e.write();
            if g.index.storage() == Storage::Loaded && g.store.as_ref().is_some_and(|st| st.wal_bytes() > 0) {
                if let Err(e) = checkpoint(&mut g) {
                    // The WAL still holds everything: the next start replays it.
                    log_line(format_args!("checkpoint of {} failed: {}", dir_of(&g), e.chain()));
                }
            }
        }
    }
}

/// Checkpoint the slot's index and metadata as they are (with a store; else nothing).
fn checkpoint(s: &mut Slot) -> Result<()> {
    if let Some(st) = s.store.as_mut() {
        st.checkpoint(&mut s.index, &s.md)?;
    }
    Ok(())
}

/// Make a change that the WAL does not record (train, reset, merge) durable before it is
/// visible: with a store, `change` runs on copies of the index and metadata, the copies are
/// checkpointed, and only then replace the slot's, so a failure anywhere leaves memory and
/// disk as they were. Without a store `change` runs in place, as before.
fn change_durably(s: &mut Slot, change: impl FnOnce(&mut Index, &mut Metadata) -> Result<()>) -> Result<()> {
    let Some(st) = s.store.as_mut() else {
        return change(&mut s.index, &mut s.md);
    };
    let mut index = s.index.try_clone()?;
    let mut md = s.md.clone();
    change(&mut index, &mut md)?;
    st.checkpoint(&mut index, &md)?;
    s.index = index;
    s.md = md;
    Ok(())
}

/// A logged mutation failed to apply: keep the WAL in step with memory. If nothing changed
/// (`ntotal` as `before`), the record is taken back; if the failure left part of the change
/// behind, the current state is checkpointed (which puts the record behind the checkpoint).
/// If that fails too, the store refuses writes until restart, where replaying the record
/// fails again and quarantines the index rather than serve a state nobody saw.
fn unlog_failed(s: &mut Slot, before: usize) {
    let changed = s.index.ntotal() != before;
    let Some(st) = s.store.as_mut() else { return };
    let dir = st.dir().display().to_string();
    let undone = if changed { st.checkpoint(&mut s.index, &s.md) } else { st.retract_last() };
    if let Err(e) = undone {
        st.refuse_writes(format!("a failed mutation could not be taken out of the log ({})", e.chain()));
        log_line(format_args!("{dir}: a failed mutation could not be taken out of the log: {}", e.chain()));
    }
}

/// Replay a loaded index's WAL records (and, under `--mmap`, checkpoint and map it). A
/// record that fails to apply quarantines the index: `Err` holds the reason.
fn restore(l: store::Loaded, mmap: bool) -> std::result::Result<Slot, String> {
    let replayed = !l.replay.is_empty();
    let mut slot = Slot { index: l.index, md: l.metadata, store: None };
    for rec in &l.replay {
        if let Err(e) = Mutation::from_record(rec).and_then(|m| m.apply(&mut slot)) {
            let seq = store::record_seq(rec).unwrap_or(0);
            return Err(format!(
                "{}: record seq {seq} fails to apply on replay: {}",
                l.store.dir().join("wal.log").display(),
                e.chain()
            ));
        }
    }
    slot.store = Some(l.store);
    if mmap && replayed && slot.index.ntotal() > 0 {
        // WAL records newer than the checkpoint were replayed into a loaded copy (a mapped
        // index cannot change): checkpoint it, then map the new file. If either fails, the
        // loaded copy is served.
        let mapped = checkpoint(&mut slot).and_then(|_| match slot.store.as_ref() {
            Some(st) => Index::open_with(&st.checkpoint_index_path(), &OpenOptions { mmap: true, warm: false }),
            None => Err(Error::new(ErrorKind::Io, "no store")),
        });
        match mapped {
            Ok(ix) => slot.index = ix,
            Err(e) => log_line(format_args!("{}: serving the index loaded, not mapped: {}", dir_of(&slot), e.chain())),
        }
    }
    Ok(slot)
}

/// One `faissx: …` line on stderr. Unlike `eprintln!`, never panics: stderr may be a file
/// on the very disk that is full.
fn log_line(msg: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "faissx: {msg}");
}

/// The index folder of a slot, for messages.
fn dir_of(s: &Slot) -> String {
    s.store.as_ref().map(|st| st.dir().display().to_string()).unwrap_or_default()
}

fn estimate_bytes(ix: &Index) -> u64 {
    // Flat storage as an upper bound; compressed indices use less. Binary codes: d/8 bytes.
    let per_vector = if ix.is_binary() { ix.d() / 8 } else { ix.d() * 4 };
    (ix.ntotal() * per_vector) as u64
}

/// A WAL field for vectors: `x` (f32 LE) for float rows, `codes` for binary codes.
fn rows_record(x: &Rows) -> (Value, Value) {
    match x {
        Rows::Float(v) => (Value::from("x"), Value::Binary(protocol::f32_bytes(v))),
        Rows::Codes(c) => (Value::from("codes"), Value::Binary(c.clone())),
    }
}

/// A logged mutation: validated, written to the WAL, then applied (also on replay).
enum Mutation {
    Add { x: Rows, ids: Option<Vec<i64>>, md: Option<Vec<Value>> },
    Remove { ids: Vec<i64> },
    Replace { id: i64, x: Rows },
    SetParam { name: String, value: u64 },
}

impl Mutation {
    fn check(&self, s: &Slot) -> Result<()> {
        if let Mutation::Remove { .. } = self {
            s.index.check_removable()?;
        }
        if let Mutation::SetParam { name, value } = self {
            knob(name, *value)?;
            let info = s.index.describe()?;
            let ok = match name.as_str() {
                "nprobe" => info.nprobe.is_some(),
                "efSearch" | "ef_search" | "efConstruction" | "ef_construction" => info.ef_search.is_some(),
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown parameter {name:?} (nprobe, efSearch, efConstruction)"
                    )))
                }
            };
            if !ok {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("parameter {name:?} does not apply to {}", info.type_name),
                ));
            }
        }
        Ok(())
    }

    fn record(&self) -> Vec<(Value, Value)> {
        let kv = |k: &str, v: Value| (Value::from(k), v);
        match self {
            Mutation::Add { x, ids, md } => vec![
                kv("op", Value::from("add")),
                rows_record(x),
                kv("ids", ids.as_ref().map_or(Value::Nil, |i| Value::Binary(protocol::i64_bytes(i)))),
                kv("md", md.as_ref().map_or(Value::Nil, |m| Value::Array(m.clone()))),
            ],
            Mutation::Remove { ids } => {
                vec![kv("op", Value::from("remove")), kv("ids", Value::Binary(protocol::i64_bytes(ids)))]
            }
            Mutation::Replace { id, x } => {
                vec![kv("op", Value::from("replace")), kv("id", Value::from(*id)), rows_record(x)]
            }
            Mutation::SetParam { name, value } => {
                vec![
                    kv("op", Value::from("set")),
                    kv("name", Value::from(name.as_str())),
                    kv("value", Value::from(*value)),
                ]
            }
        }
    }

    fn from_record(v: &Value) -> Result<Mutation> {
        let m = match v {
            Value::Map(m) => {
                Msg::from_pairs(m.iter().filter_map(|(k, v)| k.as_str().map(|k| (k, v.clone()))).collect())
            }
            _ => return Err(Error::new(ErrorKind::Format, "WAL record is not a map")),
        };
        let bin = |k: &str| match m.get(k) {
            Some(Value::Binary(b)) => Some(b.clone()),
            _ => None,
        };
        // Float vectors are logged as "x" (f32 LE), binary codes as "codes".
        let rows_of_record = || -> Result<Rows> {
            match bin("codes") {
                Some(c) => Ok(Rows::Codes(c)),
                None => Ok(Rows::Float(protocol::f32_from_bytes(&bin("x").unwrap_or_default())?)),
            }
        };
        Ok(match m.req_str("op")? {
            "add" => Mutation::Add {
                x: rows_of_record()?,
                ids: bin("ids").map(|b| protocol::i64_from_bytes(&b)).transpose()?,
                md: match m.get("md") {
                    Some(Value::Array(a)) => Some(a.clone()),
                    _ => None,
                },
            },
            "remove" => Mutation::Remove { ids: protocol::i64_from_bytes(&bin("ids").unwrap_or_default())? },
            "replace" => Mutation::Replace { id: m.req_int("id")?, x: rows_of_record()? },
            "set" => Mutation::SetParam { name: m.req_str("name")?.to_string(), value: m.uint("value")?.unwrap_or(1) },
            other => return Err(Error::new(ErrorKind::Format, format!("unknown WAL op {other:?}"))),
        })
    }

    fn apply(&self, s: &mut Slot) -> Result<Msg> {
        match self {
            Mutation::Add { x, ids, md } => {
                let before = s.index.ntotal() as i64;
                let n = s.index.rows_in(x)?;
                s.index.add_rows(x, ids.as_deref())?;
                if let Some(md) = md {
                    for (i, v) in md.iter().enumerate() {
                        let key = ids.as_ref().map_or(before + i as i64, |ids| ids[i]);
                        s.md.vectors.insert(key, v.clone());
                    }
                }
                let nt = s.index.ntotal() as u64;
                Ok(Msg::default().with("count", n as u64).with("ntotal", nt).with("total", nt))
            }
            Mutation::Remove { ids } => {
                let renumbers = !s.index.takes_ids()?;
                let removed = s.index.remove_ids(ids)?;
                if renumbers && removed > 0 {
                    // Positions shift down past every removed id.
                    let mut gone: Vec<i64> = ids.clone();
                    gone.sort_unstable();
                    gone.dedup();
                    let old = std::mem::take(&mut s.md.vectors);
                    for (k, v) in old {
                        if gone.binary_search(&k).is_err() {
                            let shift = gone.partition_point(|&g| g < k) as i64;
                            s.md.vectors.insert(k - shift, v);
                        }
                    }
                } else {
                    for i in ids {
                        s.md.vectors.remove(i);
                    }
                }
                let nt = s.index.ntotal() as u64;
                Ok(Msg::default().with("removed", removed as u64).with("count", removed as u64).with("ntotal", nt))
            }
            Mutation::Replace { id, x } => {
                s.index.remove_ids(&[*id])?;
                s.index.add_rows(x, Some(&[*id]))?;
                Ok(Msg::default().with("ntotal", s.index.ntotal() as u64).with("id", *id))
            }
            Mutation::SetParam { name, value } => {
                let v = *value as usize;
                match name.as_str() {
                    "nprobe" => s.index.set_nprobe(v)?,
                    "efSearch" | "ef_search" => s.index.set_ef_search(v)?,
                    _ => s.index.set_ef_construction(v)?,
                }
                Ok(Msg::default().with("param_name", name.as_str()).with("param_value", *value))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faissx_type_names_map_to_factories() {
        let f = |t: &str| match parse_index_type(t, None).unwrap() {
            TypeSpec::Factory { factory, metric } => (factory, metric),
            other => panic!("{other:?}"),
        };
        assert_eq!(f("L2"), ("Flat".into(), Metric::L2));
        assert_eq!(f("IP"), ("Flat".into(), Metric::Ip));
        assert_eq!(f("HNSW16_IP"), ("HNSW16".into(), Metric::Ip));
        assert_eq!(f("IVF8"), ("IVF8,Flat".into(), Metric::L2));
        assert_eq!(f("IVF8_SQ8"), ("IVF8,SQ8".into(), Metric::L2));
        assert_eq!(f("IVF8,PQ4x8"), ("IVF8,PQ4x8".into(), Metric::L2));
        assert_eq!(f("SQ16"), ("SQfp16".into(), Metric::L2));
        assert_eq!(f("SQ0"), ("SQ8".into(), Metric::L2));
        assert_eq!(f("IVF4_SQ0_IP"), ("IVF4,SQ8".into(), Metric::Ip));
        assert_eq!(f("OPQ16,IVF1024,PQ16"), ("OPQ16,IVF1024,PQ16".into(), Metric::L2));
        assert_eq!(f("PQ4x8"), ("PQ4x8np".into(), Metric::L2));
        assert_eq!(f("PQ4"), ("PQ4np".into(), Metric::L2));
        assert_eq!(f("PQ4x8_IP"), ("PQ4x8np".into(), Metric::Ip));
        assert_eq!(f("PQ4x8np"), ("PQ4x8np".into(), Metric::L2));
        assert_eq!(parse_index_type("IDMap2:base", None).unwrap(), TypeSpec::Wrap { v2: true, base: "base".into() });
        let b = |t: &str| parse_index_type(t, None).unwrap();
        assert_eq!(b("BINARY_FLAT"), TypeSpec::Binary { factory: "BFlat".into() });
        assert_eq!(b("BINARY_IVF16"), TypeSpec::Binary { factory: "BIVF16".into() });
        assert_eq!(b("BINARY_HASH32"), TypeSpec::Binary { factory: "BHash32".into() });
        assert_eq!(b("BHNSW16"), TypeSpec::Binary { factory: "BHNSW16".into() });
        assert_eq!(parse_index_type("BINARY_IVF", None).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn ids_are_checked() {
        for bad in ["", ".", "..", "../x", "a/b", &"x".repeat(129), "a b"] {
            assert!(valid_id("index_id", bad).is_err(), "{bad:?}");
        }
        for good in ["docs", "a.b-c_d", ".hidden", &"x".repeat(128)] {
            assert!(valid_id("index_id", good).is_ok(), "{good:?}");
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
