//! The server behind `faissx serve`: tenants, indices, per-vector metadata, persistence, and
//! every action of docs/protocol.md §5. Bytes are the `protocol` module's business, sockets
//! and threads `net.rs`'s; this module holds the service, its registry of indices and the
//! dispatch of a decoded request ([`Call`]) to its handler, which turns it into a reply
//! payload or an [`Error`]. One file per concern:
//!
//! | file | concern |
//! |---|---|
//! | `action.rs` | the [`Action`] enum: every action name, alias and class |
//! | `auth.rs` | API keys → tenants, id checks |
//! | `types.rs` | FAISSx index-type strings → FAISS factory strings |
//! | `limits.rs` | per-request limits (results, `efSearch`, range candidates, `k`, k-means work) |
//! | `admin.rs` | `ping`, `health`, `list_indices` |
//! | `read.rs` | searches, reconstruction, status, parameters, metadata |
//! | `write.rs` | create, delete, merge, snapshot, and the mutations of one index |
//! | `mutation.rs` | a logged mutation: its WAL record and how it applies (also on replay) |
//! | `clustering.rs` | `compute_clustering` and `recluster_index` (FAISS's k-means) |
//! | `filtering.rs` | `filter` / `metadata_filter` over per-vector metadata; string ids in requests and replies |
//! | `stats.rs` | per-(tenant, action) counts and latencies for `metrics` |
//! | `quota.rs` | per-tenant quotas (`--max-indices`, `--max-vectors`, `--max-k`, `--max-nq`) |
//! | `telemetry.rs` | Prometheus metrics and readiness, for `/metrics` and `/readyz` |
//! | `http.rs` | the `--http-port` listener: `/metrics`, `/livez`, `/readyz` |
//! | `store/` | files under `--data-dir`: checkpoints, WAL, quarantine |
//! | `cluster/` | `--cluster`: the replicated log on NATS JetStream, snapshots, members |
//! | `net.rs` | sockets, threads, queues |
//!
//! Logging goes through `tracing` events (the subscriber is the binary's business): INFO
//! for start, stop, index creation, deletion, import and checkpoints; WARNING for refused
//! requests (authentication, quarantine, quotas, BUSY, size) and slow ones; ERROR for
//! failures the operator must look at; DEBUG for one line per request.
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

mod action;
mod admin;
mod auth;
pub mod cluster;
mod clustering;
mod filtering;
mod http;
mod limits;
mod mutation;
mod net;
mod quota;
mod read;
mod stats;
pub mod store;
mod swap;
pub mod telemetry;
mod transfer;
mod types;
mod write;

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{Index, OpenOptions, Storage};
use crate::engine::protocol::{self, Msg};
use mutation::Mutation;
use stats::Stats;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use store::{DiskStats, IndexStore, Metadata, Origin, Store};
use telemetry::Telemetry;

pub use action::{Action, ActionClass};
pub use auth::valid_id;
pub use http::HttpServer;
pub use limits::{MAX_EF, MAX_KMEANS_WORK, MAX_NITER, MAX_RANGE_CANDIDATES, MAX_RESULTS};
pub use net::serve;
pub use quota::{Quotas, DEFAULT_MAX_INDICES, DEFAULT_MAX_NQ};
pub use stats::action_label as stats_label;

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
    /// `HOST:PORT` of the HTTP listener for `/metrics`, `/livez` and `/readyz` (port 0: any
    /// free port); `None`: no listener.
    pub http: Option<String>,
    /// Per-tenant quotas.
    pub quotas: Quotas,
    /// Memory-map persisted indices at start-up instead of loading them (read-only).
    pub mmap: bool,
    /// Index files served as they are on disk (`serve --index [TENANT/]NAME=PATH`): read-only,
    /// re-read when the file is replaced.
    pub indexes: Vec<ServedFile>,
    /// Folders whose files `import_index` with `server_path` and `--index` may read
    /// (`serve --import-dir`); empty: none.
    pub import_dirs: Vec<PathBuf>,
    /// An upload or export idle this long is dropped with its files.
    pub transfer_timeout: std::time::Duration,
    /// CurveZMQ secret key (`serve --curve-secret-key-file`): `Some` makes the ROUTER a CURVE
    /// server (encrypted; only clients that know the matching public key get through);
    /// `None`: plain TCP.
    pub curve_secret_key: Option<crate::engine::curve::CurveKey>,
    /// `serve --cluster`: a replica on a replicated log (see [`cluster`]); `None`: a single
    /// node.
    pub cluster: Option<cluster::ClusterConfig>,
}

impl ServerConfig {
    /// A configuration with the defaults of `faissx serve` for everything but the endpoint.
    pub fn new(endpoint: &str) -> ServerConfig {
        ServerConfig {
            endpoint: endpoint.to_string(),
            data_dir: None,
            auth_keys: None,
            max_request_bytes: 256 << 20,
            workers: 2,
            http: None,
            quotas: Quotas::default(),
            mmap: false,
            indexes: Vec::new(),
            import_dirs: Vec::new(),
            transfer_timeout: std::time::Duration::from_secs(60),
            curve_secret_key: None,
            cluster: None,
        }
    }
}

/// One `serve --index [TENANT/]NAME=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    /// Tenant (`default` unless given).
    pub tenant: String,
    /// Index id.
    pub id: String,
    /// The index file.
    pub path: PathBuf,
}

/// A stored index and everything kept with it.
pub struct Slot {
    /// The FAISS index.
    pub index: Index,
    /// Per-vector and index-level metadata.
    pub md: Metadata,
    /// Its files, with `--data-dir`.
    pub store: Option<IndexStore>,
    /// The per-vector metadata as a filterable table, built by the first filtered search
    /// after a change and dropped whenever the index's write lock is taken.
    pub filter_table: filtering::TableCache,
}

impl Slot {
    /// A slot of `index` with its metadata and files (no filter table yet).
    pub fn new(index: Index, md: Metadata, store: Option<IndexStore>) -> Slot {
        Slot { index, md, store, filter_table: filtering::TableCache::default() }
    }
}

/// One index of one tenant. An import replaces the whole entry in the registry, so what a
/// request holds (an `Arc<Entry>`) stays one version of the index to the end of the request.
pub struct Entry {
    kind: String,
    d: usize,
    /// Estimated bytes per stored vector (4·d for floats, d/8 for binary codes).
    bytes_per_vector: usize,
    /// WAL size and checkpoint time of its store (with `--data-dir`), read by `/metrics`.
    disk: Option<Arc<DiskStats>>,
    ntotal: AtomicUsize,
    trained: AtomicBool,
    /// Generation and import checksum of this version.
    origin: Origin,
    /// `serve --index`: the file this index is served from (read-only, re-read when replaced).
    source: Option<swap::Source>,
    slot: RwLock<Slot>,
}

impl Entry {
    fn new(kind: String, slot: Slot) -> Arc<Entry> {
        let origin = slot.store.as_ref().map(IndexStore::origin).unwrap_or_default();
        Entry::with(kind, slot, origin, None)
    }

    fn with(kind: String, slot: Slot, origin: Origin, source: Option<swap::Source>) -> Arc<Entry> {
        let d = slot.index.d();
        Arc::new(Entry {
            kind,
            d,
            bytes_per_vector: if slot.index.is_binary() { d / 8 } else { d * 4 },
            disk: slot.store.as_ref().map(IndexStore::disk_stats),
            ntotal: AtomicUsize::new(slot.index.ntotal()),
            trained: AtomicBool::new(slot.index.is_trained()),
            origin,
            source,
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

    /// The slot for a change. Whoever takes it may change the metadata or ids, so the cached
    /// filter table is dropped here (rebuilt by the next filtered search).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        let mut g = self.slot.write().unwrap_or_else(|p| p.into_inner());
        g.filter_table = filtering::TableCache::default();
        g
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
    pub action: Action,
    /// The caller's tenant.
    pub tenant: String,
    /// The request.
    pub msg: Msg,
}

/// The state shared by all server threads.
pub struct Service {
    indices: RwLock<HashMap<Key, Arc<Entry>>>,
    store: Option<Store>,
    auth: Option<HashMap<String, String>>,
    started: Instant,
    /// Per (tenant, action).
    stats: Stats,
    cores: usize,
    /// Indices found damaged at start-up, with the reason: listed to their tenant, refused
    /// to every request, their files kept.
    quarantined: RwLock<HashMap<Key, String>>,
    /// Uploads and exports in progress.
    transfers: transfer::Transfers,
    /// `serve --import-dir`, resolved (symlinks followed).
    import_dirs: Vec<PathBuf>,
    /// `serve --mmap`: imported and `--index` files are mapped, not loaded.
    mmap: bool,
    /// `serve --index` files that failed to re-read, with the version that failed.
    failed_reloads: std::sync::Mutex<HashMap<Key, swap::Stamp>>,
    /// Prometheus metrics (`/metrics`) and readiness.
    telemetry: Arc<Telemetry>,
    /// Per-tenant quotas.
    quotas: Quotas,
    /// `serve --cluster`: what this replica knows of the log and its members.
    cluster: std::sync::OnceLock<Arc<cluster::Status>>,
}

/// the process when asked to change read-only mapped data).
fn writable(id: &str, e: &Entry, ix: &Index) -> Result<()> {
    if let Some(src) = &e.source {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "index {id:?} is served from {} (serve --index) and read-only: replace the file (it is re-read) or import another",
                src.path.display()
            ),
        ));
    }
    // The engine's check, worded for the server's flags.
    let Err(e) = ix.check_writable("change it") else { return Ok(()) };
    match ix.storage() {
        Storage::Loaded => Err(e),
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

/// An action reached a handler of another class: a bug in dispatch, never a client's doing.
fn misrouted(a: Action) -> Error {
    Error::new(ErrorKind::Internal, format!("action {:?} dispatched to the wrong handler", a.name()))
}

fn not_found(id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("index {id:?} not found"))
}

pub(super) fn quarantined_error(id: &str, reason: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "index {id:?} is quarantined: {reason}; its files are kept as they were found: an operator must repair or remove them and restart the server"
        ),
    )
}

impl Service {
    /// Open the data directory (if any) and restore every index. An index that cannot be
    /// restored (damaged files, a WAL record that fails on replay) is quarantined, with one
    /// ERROR event, and the others are served.
    pub fn open(cfg: &ServerConfig) -> Result<Service> {
        Service::open_with(cfg, Arc::new(Telemetry::new()))
    }

    /// [`Service::open`], counting requests into `telemetry` (whose `/metrics` and
    /// `/readyz` may already be served while the indices are restored).
    pub fn open_with(cfg: &ServerConfig, telemetry: Arc<Telemetry>) -> Result<Service> {
        let store = cfg.data_dir.as_deref().map(Store::open).transpose()?;
        let transfers = transfer::Transfers::new(store.as_ref().map(Store::spool_dir), cfg.transfer_timeout)?;
        let import_dirs = swap::resolve_import_dirs(&cfg.import_dirs)?;
        let svc = Service {
            indices: RwLock::new(HashMap::new()),
            store,
            auth: cfg.auth_keys.clone(),
            started: Instant::now(),
            stats: Stats::default(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            quarantined: RwLock::new(HashMap::new()),
            transfers,
            import_dirs,
            mmap: cfg.mmap,
            failed_reloads: std::sync::Mutex::new(HashMap::new()),
            telemetry,
            quotas: cfg.quotas,
            cluster: std::sync::OnceLock::new(),
        };
        if let Some(st) = &svc.store {
            let report = st.load_all(cfg.mmap)?;
            for w in &report.warnings {
                tracing::warn!("{w}");
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
                tracing::error!("index {id:?} of tenant {t:?} is quarantined (files kept, requests refused): {reason}");
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
        for f in &cfg.indexes {
            svc.serve_file(f)?;
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
            Some(reason) => {
                tracing::warn!(tenant = %tenant, index = %id, "request refused: the index is quarantined");
                quarantined_error(id, reason)
            }
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
    ///
    /// An unknown action is refused here (after authentication), before its payload is
    /// decoded.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Call> {
        let head = protocol::peek_head(bytes)?;
        let name = head.action.ok_or_else(|| Error::new(ErrorKind::Protocol, "request has no \"action\" field"))?;
        let action = Action::parse(name);
        let tenant = auth::tenant_of(self.auth.as_ref(), action == Some(Action::Ping), &head)?;
        let action = match action {
            Some(a) => a,
            None => Action::from_name(name)?,
        };
        let msg = Msg::decode_request(bytes)?;
        Ok(Call { action, tenant, msg })
    }

    /// How `call` is scheduled: writes on the queue of the index they name.
    pub fn class(call: &Call) -> Class {
        match call.action.class() {
            ActionClass::Admin => Class::Inline,
            ActionClass::Read | ActionClass::Transfer => Class::Read,
            ActionClass::Write => {
                Class::Write(call.msg.str(call.action.index_field()).ok().flatten().unwrap_or("").to_string())
            }
        }
    }

    /// Whether `call` is a search small enough (≤ ~2M multiply-adds of flat distance work,
    /// ≤ 4,096 results) to answer on the I/O thread without delaying other requests noticeably.
    pub fn is_cheap_search(&self, call: &Call) -> bool {
        if call.action != Action::Search {
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

    /// Record a finished request of `tenant` for the `metrics` action and `/metrics`
    /// (requests that failed before authentication have tenant `""`, which no caller can
    /// see; `action` is an [`Action::name`], or a name of net.rs's for requests refused
    /// before they had one; `error`: why it failed, if it did).
    pub fn record(&self, tenant: &str, action: &str, took: std::time::Duration, error: Option<&Error>) {
        self.stats.record(tenant, action, took, error.is_none());
        self.telemetry.record(tenant, action, took, error.map(protocol::ErrorCode::of));
    }

    /// Indices quarantined at start-up (all tenants).
    pub fn quarantined_count(&self) -> usize {
        self.quarantined.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Run `call` (any class), blocking on index locks as needed.
    pub fn execute(&self, call: &Call) -> Result<Msg> {
        match Service::class(call) {
            Class::Inline => self.admin(call),
            Class::Write(_) => self.write(call),
            Class::Read => self.read(call, true).map(|r| r.expect("invariant: blocking read always answers")),
        }
    }
}

/// Replay a loaded index's WAL records (and, under `--mmap`, checkpoint and map it). A
/// record that fails to apply quarantines the index: `Err` holds the reason.
fn restore(l: store::Loaded, mmap: bool) -> std::result::Result<Slot, String> {
    let replayed = !l.replay.is_empty();
    let mut slot = Slot::new(l.index, l.metadata, None);
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
        let mapped = write::checkpoint(&mut slot).and_then(|_| match slot.store.as_ref() {
            Some(st) => Index::open_with(
                &st.checkpoint_index_path(),
                &OpenOptions { mmap: true, warm: false, ..Default::default() },
            ),
            None => Err(Error::new(ErrorKind::Io, "no store")),
        });
        match mapped {
            Ok(ix) => slot.index = ix,
            Err(e) => tracing::warn!("{}: serving the index loaded, not mapped: {}", dir_of(&slot), e.chain()),
        }
    }
    Ok(slot)
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

#[cfg(test)]
mod fuzz_tests;
