//! `serve --cluster`: replicas that share one replicated, durable write-ahead log on NATS
//! JetStream and snapshots in object storage — the Milvus way (a log broker plus object
//! storage), with no consensus of our own: JetStream's replication (its stream's
//! `num_replicas`, `--cluster-replicas`) decides how many NATS nodes hold a write before it
//! is acknowledged.
//!
//! **Writes.** Every action that changes state, received by any replica, is published to
//! the stream `FAISSX` (subject `faissx.log`) as a [`record`] (the authenticated request,
//! without its API key; larger than one NATS message: split into parts). The client gets
//! its reply only once JetStream has stored the record *and* this replica has applied it;
//! the reply carries `seq`, the record's log sequence. If the log cannot be reached the
//! reply is `UNAVAILABLE`: never a silent acknowledgement.
//!
//! **Applying.** One thread per replica applies the log in order with the single-node
//! server's own code ([`Service::write`]), so every replica converges to the same state,
//! ids of adds without ids included. A record that fails (a FAISS error, a dimension
//! mismatch) fails the same way on every replica, since every replica holds the same state:
//! it is logged, counted in `health` (`failed_records`, `last_failure`), and the log goes on.
//!
//! **Reads** never touch the log: they answer from local state and say how fresh it is
//! (`applied_seq`; `stale_s` when the log has been out of reach for a while). A read may
//! pass `min_seq` (a write's `seq`) to wait, up to `min_seq_timeout` seconds (default 5),
//! until this replica has applied it: read-your-writes across replicas.
//!
//! **Snapshots** ([`snapshot`]): every `--snapshot-every` records one replica (the holder of
//! a lease in the NATS KV bucket `faissx_lease`) writes every index, at a log sequence, to
//! `--snapshots`; the pointer to the newest is the key `snapshot` of the KV bucket
//! `faissx_cluster`. Two snapshots are kept and the log is trimmed below the older one. A
//! new or wiped replica restores the newest snapshot, replays the log after it, and only
//! then binds its socket (and `/readyz` turns 200).
//!
//! **Membership**: each replica puts `{endpoint, applied, ready}` into the KV bucket
//! `faissx_members` every second (entries expire after 10 s); `health` lists the members
//! with their lag behind the log's last sequence.

pub mod record;
pub mod snapshot;

use super::{Action, Call, Service};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::IndexMeta;
use crate::engine::protocol::{Msg, Value};
use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use record::{Assembled, Assembler, PART_HEADER, WRITE_HEADER};
use serde::{Deserialize, Serialize};
use snapshot::SnapStore;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The JetStream stream holding the log.
pub const STREAM: &str = "FAISSX";
/// Its subject.
pub const SUBJECT: &str = "faissx.log";
/// KV bucket of member heartbeats.
pub const MEMBERS_BUCKET: &str = "faissx_members";
/// KV bucket of the snapshot pointer (key `snapshot`).
pub const CLUSTER_BUCKET: &str = "faissx_cluster";
/// KV bucket of the snapshot lease (key `snapshot`, expires after [`LEASE_TTL`]).
pub const LEASE_BUCKET: &str = "faissx_lease";
/// How long a snapshot lease lasts if its holder dies before releasing it.
pub const LEASE_TTL: Duration = Duration::from_secs(120);
/// How long a member entry lasts without a heartbeat.
pub const MEMBER_TTL: Duration = Duration::from_secs(10);
/// Publish, acknowledgement and KV timeout: a write that JetStream has not stored within
/// this long is answered `UNAVAILABLE` (the FAISSx client gives up after 5 s).
pub const LOG_TIMEOUT: Duration = Duration::from_secs(4);
/// A write stored in the log but not applied by the receiving replica within this long is
/// answered `TIMEOUT` (it will still be applied, in order).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// A log consumer that delivers nothing this long while the log is known to hold more
/// records is replaced (its NATS node may have died).
pub const STUCK_AFTER: Duration = Duration::from_secs(2);
/// Reads say `stale_s` once the log has been out of reach this long.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// What `serve --cluster` was asked to do.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (`--cluster nats://n1:4222,nats://n2:4222`): any one of them is
    /// enough to connect; the client follows the cluster's topology.
    pub urls: Vec<String>,
    /// NATS credentials file (`--cluster-creds`: a JWT and NKey seed, as `nsc` writes it).
    pub creds: Option<PathBuf>,
    /// CA certificate for NATS TLS (`--cluster-ca`; `tls://` URLs require TLS).
    pub ca: Option<PathBuf>,
    /// Where snapshots live (`--snapshots`: `s3://…`, `gs://…`, `az://…`, `file://…` or a path).
    pub snapshots: String,
    /// This replica's name among the members (`--replica-name`; unique).
    pub name: String,
    /// JetStream replication of the log and KV buckets (`--cluster-replicas`: 1, or 3 on a
    /// 3-node NATS cluster).
    pub log_replicas: usize,
    /// Records between snapshots (`--snapshot-every`).
    pub snapshot_every: u64,
    /// Scratch directory for snapshot files (the replica's `--data-dir`, or a temp dir).
    pub scratch: Option<PathBuf>,
    /// `--advertise URL`: the endpoint other processes (routers) reach this replica at;
    /// `None`: the bound endpoint, with a wildcard address (`0.0.0.0`, `*`, `[::]`) replaced
    /// by the host name.
    pub advertise: Option<String>,
    /// `--shard NAME`: this replica serves shard NAME, whose log is the stream
    /// `FAISSX_<NAME>` (subject `faissx.<NAME>.log`), whose snapshots live under
    /// `<--snapshots>/<NAME>/` and whose snapshot pointer and lease are the keys
    /// `snapshot.<NAME>`; `None`: one unsharded set of replicas (stream `FAISSX`).
    pub shard: Option<String>,
}

impl ClusterConfig {
    /// The stream holding this replica's log.
    pub fn stream(&self) -> String {
        self.shard.as_ref().map_or_else(|| STREAM.to_string(), |s| format!("{STREAM}_{s}"))
    }

    /// Its subject.
    pub fn subject(&self) -> String {
        self.shard.as_ref().map_or_else(|| SUBJECT.to_string(), |s| format!("faissx.{s}.log"))
    }

    /// The key of the snapshot pointer (and of the snapshot lease).
    pub fn snapshot_key(&self) -> String {
        self.shard.as_ref().map_or_else(|| "snapshot".to_string(), |s| format!("snapshot.{s}"))
    }

    /// `--snapshots`, with the shard's folder.
    pub fn snapshots_url(&self) -> String {
        match &self.shard {
            Some(s) => format!("{}/{s}", self.snapshots.trim_end_matches('/')),
            None => self.snapshots.clone(),
        }
    }
}

/// One replica as it last reported itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// Its `--replica-name`.
    pub name: String,
    /// The endpoint it serves.
    pub endpoint: String,
    /// The last log sequence it applied.
    pub applied: u64,
    /// Whether it has restored and caught up.
    pub ready: bool,
    /// The shard it serves (`serve --shard`), if any.
    #[serde(default)]
    pub shard: Option<String>,
    /// When it reported (seconds since the Unix epoch).
    pub time: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Pointer {
    seq: u64,
    prev: Option<u64>,
}

/// The last record that failed to apply: its tenant (if it decoded) and why.
type Failure = (Option<String>, String);

/// What this replica knows of the cluster, shared with the service (`health`, reads).
pub struct Status {
    name: String,
    applied: Mutex<u64>,
    applied_cv: Condvar,
    log_last: AtomicU64,
    contact: Mutex<Instant>,
    reachable: AtomicBool,
    members: Mutex<Vec<Member>>,
    /// Records that failed to apply, and the last failure with its tenant (shown to that
    /// tenant only).
    failed: Mutex<(u64, Option<Failure>)>,
    snapshot: Mutex<Option<(u64, f64)>>,
    ready: AtomicBool,
    endpoint: Mutex<String>,
}

impl Status {
    fn new(name: &str) -> Status {
        Status {
            name: name.to_string(),
            applied: Mutex::new(0),
            applied_cv: Condvar::new(),
            log_last: AtomicU64::new(0),
            contact: Mutex::new(Instant::now()),
            reachable: AtomicBool::new(true),
            members: Mutex::new(Vec::new()),
            failed: Mutex::new((0, None)),
            snapshot: Mutex::new(None),
            ready: AtomicBool::new(false),
            endpoint: Mutex::new(String::new()),
        }
    }

    /// The last log sequence this replica applied.
    pub fn applied(&self) -> u64 {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_applied(&self, seq: u64) {
        let mut a = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        *a = seq;
        self.applied_cv.notify_all();
        drop(a);
        self.log_last.fetch_max(seq, Ordering::Relaxed);
    }

    /// Wait until this replica has applied `seq`, at most `timeout`; whether it has.
    pub fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut a = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        while *a < seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            a = self.applied_cv.wait_timeout(a, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    fn touch(&self) {
        *self.contact.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!(replica = %self.name, "the cluster's log is reachable again: writes are taken");
        }
    }

    fn unreachable(&self, why: &str) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(replica = %self.name, "the cluster's log is unreachable ({why}): writes get UNAVAILABLE, reads answer from local state");
        }
    }

    /// Seconds since the log last answered, when that is longer than [`STALE_AFTER`].
    pub fn stale_s(&self) -> Option<f64> {
        let age = self.contact.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        (age > STALE_AFTER || !self.reachable.load(Ordering::Relaxed)).then_some(age.as_secs_f64())
    }

    fn fail(&self, tenant: Option<&str>, what: String) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        f.0 += 1;
        f.1 = Some((tenant.map(str::to_string), what));
    }

    /// The numbers `/metrics` exports: this replica's name, `(name, applied sequence)` of
    /// every member (this one as of now), the log's last sequence, whether the log answers,
    /// records that failed to apply, and the newest snapshot's age in seconds.
    pub fn view(&self) -> ClusterView {
        let applied = self.applied();
        let mut members: Vec<(String, u64)> = self
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| (m.name.clone(), if m.name == self.name { applied } else { m.applied }))
            .collect();
        if !members.iter().any(|(n, _)| *n == self.name) {
            members.push((self.name.clone(), applied));
        }
        ClusterView {
            replica: self.name.clone(),
            members,
            log_last: self.log_last.load(Ordering::Relaxed).max(applied),
            reachable: self.stale_s().is_none(),
            failed: self.failed.lock().unwrap_or_else(|p| p.into_inner()).0,
            snapshot_age_s: self
                .snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|(_, t)| (crate::engine::protocol::now_f64() - t).max(0.0)),
        }
    }

    /// Stamp a read's reply with how fresh this replica is.
    pub fn stamp(&self, m: Msg) -> Msg {
        let m = m.with("applied_seq", self.applied());
        match self.stale_s() {
            Some(s) => m.with("stale_s", s),
            None => m,
        }
    }

    /// The `cluster` part of `health` for `tenant`: this replica, the log, the members (with
    /// their lag behind the log's last sequence), failed records (the last one's message
    /// only if it was `tenant`'s) and the newest snapshot.
    pub fn health(&self, tenant: &str) -> Msg {
        let last = self.log_last.load(Ordering::Relaxed);
        let applied = self.applied();
        let members: Vec<Value> = self
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| {
                // This replica's own entry is as of now, not of its last heartbeat.
                let applied = if m.name == self.name { applied } else { m.applied };
                Msg::default()
                    .with("name", m.name.as_str())
                    .with("endpoint", m.endpoint.as_str())
                    .with("applied_seq", applied)
                    .with("lag", last.saturating_sub(applied))
                    .with("ready", m.ready)
                    .with("age_s", (crate::engine::protocol::now_f64() - m.time).max(0.0))
                    .into_value()
            })
            .collect();
        let (failed, last_failure) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Msg::default()
            .with("replica", self.name.as_str())
            .with("ready", self.ready.load(Ordering::Relaxed))
            .with("log_reachable", self.stale_s().is_none())
            .with("applied_seq", applied)
            .with("log_last_seq", last)
            .with("lag", last.saturating_sub(applied))
            .with("members", Value::Array(members))
            .with("failed_records", failed);
        if let Some(s) = self.stale_s() {
            out = out.with("stale_s", s);
        }
        if let Some((Some(t), f)) = last_failure {
            if t == tenant {
                out = out.with("last_failure", f);
            }
        }
        if let Some((seq, time)) = *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) {
            out = out
                .with("snapshot_seq", seq)
                .with("snapshot_age_s", (crate::engine::protocol::now_f64() - time).max(0.0));
        }
        out
    }
}

/// What [`Status::view`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// This replica's name.
    pub replica: String,
    /// `(name, applied log sequence)` per member.
    pub members: Vec<(String, u64)>,
    /// The log's last sequence, as last seen.
    pub log_last: u64,
    /// Whether the log answered within the last few seconds.
    pub reachable: bool,
    /// Log records that failed to apply.
    pub failed: u64,
    /// Age of the newest snapshot in seconds (`None`: none yet).
    pub snapshot_age_s: Option<f64>,
}

/// Whether `action` goes through the log (every change of state; an export reads, so it
/// runs locally).
pub fn replicated(action: Action) -> bool {
    action.class() == super::ActionClass::Write && action != Action::ExportBegin
}

/// What answers a write once it is applied (or has failed).
pub type Done = Box<dyn FnOnce(Result<Msg>) + Send>;

/// A write's answer, given exactly once: if it is dropped unanswered (a panic, a shutdown),
/// the client gets `INTERNAL` instead of no reply (which would hold the connection's
/// in-flight slot forever).
struct Responder(Option<Done>);

impl Responder {
    fn answer(mut self, r: Result<Msg>) {
        if let Some(d) = self.0.take() {
            d(r);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d(Err(Error::new(
                ErrorKind::Internal,
                "the write was dropped before it was answered; its outcome is unknown",
            )));
        }
    }
}

/// Writes waiting for their record to be applied, by write id.
#[derive(Clone, Default)]
struct Waiters(Arc<Mutex<HashMap<String, Responder>>>);

impl Waiters {
    fn insert(&self, id: &str, r: Responder) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), r);
    }

    /// Take the waiter of `id` out (the lock is released before it is answered).
    fn take(&self, id: &str) -> Option<Responder> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    fn answer(&self, id: &str, r: Result<Msg>) {
        if let Some(w) = self.take(id) {
            w.answer(r);
        }
    }
}

/// Header: the latest time (Unix seconds) at which JetStream may store the write. A record
/// stored later was answered `UNAVAILABLE` (its acknowledgement did not come in time), so
/// every replica refuses it, alike, instead of applying a write its client was told failed.
pub const DEADLINE_HEADER: &str = "Faissx-Deadline";
/// How long JetStream has to store a write (by its own clock) before [`LOG_TIMEOUT`] tells
/// the client `UNAVAILABLE`; the second between them covers clock skew and the ack's trip.
pub const STORE_DEADLINE: Duration = Duration::from_secs(3);

/// One message of the log, as the consumer hands it to the applier.
struct Delivered {
    seq: u64,
    write: Option<String>,
    part: Option<String>,
    /// [`DEADLINE_HEADER`], if any.
    deadline: Option<f64>,
    /// When JetStream stored it (Unix seconds, its clock: the same on every replica).
    stored: f64,
    payload: bytes::Bytes,
}

/// The applier's own state.
struct Applier {
    asm: Assembler,
    /// Writes with a part stored after their deadline: refused when complete.
    late: HashSet<String>,
    since_snapshot: u64,
    applied: u64,
}

/// A replica's connection to the cluster: the NATS client, the log's consumer and applier,
/// heartbeats, and the writes waiting for their records to be applied.
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    meta: kv::Store,
    lease: kv::Store,
    status: Arc<Status>,
    waiters: Waiters,
    max_part: usize,
    counter: AtomicU64,
    write_prefix: String,
    svc: Arc<Service>,
    store: SnapStore,
    cfg: ClusterConfig,
    stop: Arc<AtomicBool>,
    applier: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Imports applied since start: (log sequence, staged key), deleted from the snapshot
    /// store once the log is trimmed past them and every member has applied them.
    imports: Mutex<Vec<(u64, String)>>,
}

fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("the cluster's log (NATS JetStream) is unavailable: {what}"))
}

async fn bucket(js: &jetstream::Context, name: &str, max_age: Duration, replicas: usize) -> Result<kv::Store> {
    let mut last = String::new();
    for _ in 0..3 {
        if let Ok(s) = js.get_key_value(name).await {
            return settled(name, s).await;
        }
        let cfg = kv::Config {
            bucket: name.to_string(),
            history: 1,
            max_age,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        match js.create_key_value(cfg).await {
            Ok(s) => return settled(name, s).await,
            // Another replica may have created it meanwhile: look again.
            Err(e) => last = e.to_string(),
        }
    }
    Err(unavailable(format!("cannot open or create the KV bucket {name}: {last}")))
}

/// Connect to the NATS servers of `cfg` (credentials, TLS) and wait, at most 10 s, for the
/// connection; the JetStream context with the log's timeouts.
///
/// Errors: `Unavailable` naming the URLs; `InvalidInput` for a bad URL or credentials file.
async fn connect(cfg: &ClusterConfig) -> Result<(async_nats::Client, jetstream::Context)> {
    let urls = cfg.urls.join(",");
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("faissx {}", cfg.name))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .retry_on_initial_connect();
    if let Some(c) = &cfg.creds {
        opts = opts
            .credentials_file(c)
            .await
            .map_err(|e| Error::invalid(format!("{}: cannot read NATS credentials: {e}", c.display())))?;
    }
    if let Some(ca) = &cfg.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = cfg
        .urls
        .iter()
        .map(|u| u.parse().map_err(|e| Error::invalid(format!("--cluster {u:?}: not a NATS URL ({e})"))))
        .collect::<Result<_>>()?;
    let client = opts.connect(addrs).await.map_err(|e| unavailable(format!("{urls}: {e}")))?;
    // retry_on_initial_connect returns at once: wait (bounded) for the connection.
    let t0 = Instant::now();
    while client.connection_state() != async_nats::connection::State::Connected {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(unavailable(format!("cannot connect to {urls} within 10 s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = jetstream::ContextBuilder::new().timeout(LOG_TIMEOUT).ack_timeout(LOG_TIMEOUT).build(client.clone());
    Ok((client, js))
}

/// How long a replica waits at start for a replicated stream or bucket to answer (a
/// JetStream cluster elects its leader after creating it, or after losing a node).
const SETTLE: Duration = Duration::from_secs(20);

/// `store` once it answers a read: a bucket just created on a JetStream cluster answers
/// "no responders" until its replicas have elected a leader.
async fn settled(name: &str, store: kv::Store) -> Result<kv::Store> {
    let t0 = Instant::now();
    loop {
        match store.get("snapshot").await {
            Ok(_) => return Ok(store),
            Err(e) if t0.elapsed() > SETTLE => {
                return Err(unavailable(format!("the KV bucket {name} does not answer: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Cluster {
    /// Connect to NATS, open (or create) the log and the KV buckets, restore the newest
    /// snapshot into `svc`, start applying the log after it, and return once this replica
    /// has applied every record the log held at start (`stop` ends the wait early).
    ///
    /// Errors: `Unavailable` when NATS cannot be reached; `Format`/`Io` naming the snapshot
    /// that cannot be restored; `InvalidInput` for a bad `--snapshots`.
    pub fn start(
        cfg: ClusterConfig,
        svc: Arc<Service>,
        endpoint: &str,
        interrupted: &AtomicBool,
    ) -> Result<Arc<Cluster>> {
        let store = SnapStore::parse(&cfg.snapshots_url())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faissx-cluster")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the cluster client: {e}")))?;
        let status = Arc::new(Status::new(&cfg.name));
        *status.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = endpoint.to_string();
        let (client, js, stream, members, meta, lease) = rt.block_on(async {
            let (client, js) = connect(&cfg).await?;
            let stream = js
                .get_or_create_stream(stream::Config {
                    name: cfg.stream(),
                    subjects: vec![cfg.subject()],
                    storage: stream::StorageType::File,
                    num_replicas: cfg.log_replicas,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(format!("opening the stream {}: {e}", cfg.stream())))?;
            let members = bucket(&js, MEMBERS_BUCKET, MEMBER_TTL, cfg.log_replicas).await?;
            let meta = bucket(&js, CLUSTER_BUCKET, Duration::ZERO, cfg.log_replicas).await?;
            let lease = bucket(&js, LEASE_BUCKET, LEASE_TTL, cfg.log_replicas).await?;
            Ok::<_, Error>((client, js, stream, members, meta, lease))
        })?;
        status.touch();
        let max_part = (client.server_info().max_payload.max(64 << 10)).saturating_sub(32 << 10);
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let c = Arc::new(Cluster {
            rt,
            client,
            js,
            stream,
            meta,
            lease,
            status,
            waiters: Waiters::default(),
            max_part,
            counter: AtomicU64::new(0),
            write_prefix: format!("{}-{}-{nonce:x}", cfg.name, std::process::id()),
            svc,
            store,
            cfg,
            stop: Arc::new(AtomicBool::new(false)),
            applier: Mutex::new(None),
            imports: Mutex::new(Vec::new()),
        });
        c.check_shared_config()?;
        c.register_shard()?;
        let restored = c.restore()?;
        let _ = c.svc.cluster.set(c.status.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Delivered>(4096);
        let next = Arc::new(AtomicU64::new(restored + 1));
        c.rt.spawn(consume(c.stream.clone(), c.cfg.subject(), next, tx, c.status.clone(), c.stop.clone()));
        c.rt.spawn(heartbeat(c.clone(), members));
        let me = c.clone();
        let handle = std::thread::Builder::new()
            .name("faissx-applier".into())
            .spawn(move || me.apply_loop(rx, restored))
            .map_err(|e| Error::new(ErrorKind::Io, format!("spawning thread: {e}")))?;
        *c.applier.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        // Ready only once caught up with what the log held at start.
        let target = c.rt.block_on(async {
            // A stream just created on a JetStream cluster answers once it has a leader.
            let t0 = Instant::now();
            loop {
                match c.stream.get_info().await {
                    Ok(info) => return Ok(info.state.last_sequence),
                    Err(e) if t0.elapsed() > SETTLE => return Err(unavailable(e)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })?;
        c.status.log_last.fetch_max(target, Ordering::Relaxed);
        tracing::info!(replica = %c.cfg.name, from = restored, to = target, "catching up with the log");
        let t0 = Instant::now();
        while !c.status.wait_applied(target, Duration::from_millis(200)) {
            if interrupted.load(Ordering::Relaxed) {
                c.shutdown();
                return Err(Error::new(ErrorKind::Interrupted, "stopped while catching up with the log"));
            }
        }
        c.status.ready.store(true, Ordering::Relaxed);
        tracing::info!(replica = %c.cfg.name, applied = target, took_ms = t0.elapsed().as_millis() as u64, "caught up with the log");
        Ok(c)
    }

    /// Settings that change what a record does (quotas are checked when a record applies)
    /// must be the same on every replica, or replicas would apply the log differently: the
    /// first replica records them in the KV bucket `faissx_cluster` (key `config`), the others
    /// must match.
    ///
    /// Errors: `InvalidInput` naming both values when they differ.
    fn check_shared_config(&self) -> Result<()> {
        let q = &self.svc.quotas;
        let mine = serde_json::json!({"max_indices": q.max_indices, "max_vectors": q.max_vectors});
        let text = serde_json::to_vec(&mine).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        for _ in 0..3 {
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(LOG_TIMEOUT, self.meta.get("config")).await })
                .map_err(|_| unavailable("reading the cluster's settings timed out"))?
                .map_err(unavailable)?;
            match got {
                Some(v) => {
                    let theirs: serde_json::Value = serde_json::from_slice(&v).unwrap_or_default();
                    if theirs != mine {
                        return Err(Error::invalid(format!(
                            "this replica's quotas {mine} differ from the cluster's {theirs} (KV {CLUSTER_BUCKET}/config): start every replica with the same --max-indices and --max-vectors"
                        )));
                    }
                    return Ok(());
                }
                None => {
                    let made = self.rt.block_on(async {
                        tokio::time::timeout(LOG_TIMEOUT, self.meta.create("config", text.clone().into())).await
                    });
                    if let Ok(Ok(_)) = made {
                        return Ok(());
                    }
                }
            }
        }
        Err(unavailable("cannot record the cluster's settings"))
    }

    /// Record this replica's shard in the KV bucket `faissx_cluster` (key `shards.<NAME>`,
    /// never expiring): routers route ids over every shard ever registered, so a shard
    /// whose replicas are all down still owns its ids.
    ///
    /// Errors: `Unavailable` when the bucket cannot be written.
    fn register_shard(&self) -> Result<()> {
        let Some(shard) = &self.cfg.shard else { return Ok(()) };
        let key = format!("shards.{shard}");
        self.rt
            .block_on(async {
                tokio::time::timeout(LOG_TIMEOUT, self.meta.put(key, bytes::Bytes::from_static(b"1"))).await
            })
            .map_err(|_| unavailable("registering the shard timed out"))?
            .map_err(unavailable)?;
        Ok(())
    }

    /// The status shared with the service.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// The endpoint members see for this replica, once bound: `--advertise`, or `endpoint`
    /// with a wildcard address replaced by the host name.
    pub fn set_endpoint(&self, endpoint: &str) {
        let shown = match &self.cfg.advertise {
            Some(a) => a.clone(),
            None => advertised(endpoint),
        };
        *self.status.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = shown;
    }

    fn scratch(&self) -> Result<tempfile::TempDir> {
        match &self.cfg.scratch {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                tempfile::Builder::new().prefix(".cluster-").tempdir_in(d).map_err(|e| Error::io(d, e))
            }
            None => tempfile::tempdir().map_err(|e| Error::new(ErrorKind::Io, format!("temp dir: {e}"))),
        }
    }

    fn pointer(&self) -> Result<Option<Pointer>> {
        let v = self
            .rt
            .block_on(async { tokio::time::timeout(LOG_TIMEOUT, self.meta.get(self.cfg.snapshot_key())).await })
            .map_err(|_| unavailable("reading the snapshot pointer timed out"))?
            .map_err(unavailable)?;
        match v {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::new(ErrorKind::Format, format!("snapshot pointer in KV {CLUSTER_BUCKET}: {e}"))),
        }
    }

    /// Restore the newest snapshot (if any); the last log sequence it holds.
    fn restore(&self) -> Result<u64> {
        let Some(p) = self.pointer()? else {
            return Ok(0);
        };
        let tmp = self.scratch()?;
        let m = self.store.manifest(p.seq, tmp.path())?;
        let t0 = Instant::now();
        self.svc.restore_snapshot(&self.store, &m, tmp.path())?;
        *self.status.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some((m.seq, m.time));
        self.status.set_applied(m.seq);
        tracing::info!(
            seq = m.seq,
            indices = m.indices.len(),
            took_ms = t0.elapsed().as_millis() as u64,
            "restored snapshot"
        );
        Ok(m.seq)
    }

    /// Publish the write `call` to the log and call `done` with its reply once this replica
    /// has applied it (or with `UNAVAILABLE` if the log does not store it in time). Returns
    /// once the record has been handed to the NATS connection, so writes submitted one after
    /// the other (one index's queue) keep their order in the log.
    pub fn submit(&self, call: &Call, done: Done) {
        let responder = Responder(Some(done));
        if self.client.connection_state() != async_nats::connection::State::Connected {
            // Not handed to the client at all: it would send it once reconnected, after the
            // caller was told the write failed.
            self.status.unreachable("not connected");
            return responder.answer(Err(unavailable("not connected to NATS; the write was not sent")));
        }
        let id = format!("{}-{}", self.write_prefix, self.counter.fetch_add(1, Ordering::Relaxed));
        let bytes = if call.action == Action::ImportIndex {
            // An index file travels through the snapshot store, not the log.
            match self.stage_import(call, &id) {
                Ok(c) => record::encode(&c),
                Err(e) => return responder.answer(Err(e)),
            }
        } else {
            record::encode(call)
        };
        // JetStream stores ~50 MB/s here at worst: a large write gets longer.
        let allowance = Duration::from_secs_f64(bytes.len() as f64 / 50e6);
        let deadline = crate::engine::protocol::now_f64() + (STORE_DEADLINE + allowance).as_secs_f64();
        // Parts are views of one buffer, not copies.
        let bytes = bytes::Bytes::from(bytes);
        let parts = record::split(&bytes, self.max_part);
        self.waiters.insert(&id, responder);
        let n = parts.len();
        let mut acks = Vec::with_capacity(n);
        for (i, p) in parts.iter().enumerate() {
            let mut h = async_nats::HeaderMap::new();
            h.insert(WRITE_HEADER, id.as_str());
            h.insert(PART_HEADER, format!("{i}/{n}"));
            h.insert(DEADLINE_HEADER, format!("{deadline:.3}"));
            let publish = jetstream::message::PublishMessage::build()
                .payload(bytes.slice_ref(p))
                .headers(h)
                .message_id(format!("{id}.{i}"));
            let sent = self.rt.block_on(async {
                tokio::time::timeout(LOG_TIMEOUT, self.js.send_publish(self.cfg.subject(), publish)).await
            });
            match sent {
                Ok(Ok(ack)) => acks.push(ack),
                Ok(Err(e)) => return self.waiters.answer(&id, Err(unavailable(e))),
                Err(_) => return self.waiters.answer(&id, Err(unavailable("publishing timed out"))),
            }
        }
        let (waiters, status) = (self.waiters.clone(), self.status.clone());
        self.rt.spawn(async move {
            let stored = tokio::time::timeout(LOG_TIMEOUT + allowance, async {
                let mut seq = 0;
                for a in acks {
                    seq = a.await.map_err(|e| e.to_string())?.sequence;
                }
                Ok::<u64, String>(seq)
            })
            .await;
            let seq = match stored {
                Ok(Ok(seq)) => seq,
                // Stored later than its deadline, the record is refused by every replica.
                Ok(Err(e)) => return waiters.answer(&id, Err(unavailable(format!("the write was not stored: {e}")))),
                Err(_) => {
                    return waiters.answer(
                        &id,
                        Err(unavailable("the log did not acknowledge the write in time; it was not applied")),
                    )
                }
            };
            status.touch();
            status.log_last.fetch_max(seq, Ordering::Relaxed);
            tokio::time::sleep(APPLY_TIMEOUT).await;
            waiters.answer(
                &id,
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the write is stored in the log at seq {seq} but this replica has not applied it within {} s (applied: {}); it will be applied in order",
                        APPLY_TIMEOUT.as_secs(),
                        status.applied()
                    ),
                )),
            );
        });
    }

    /// Put the file of an `import_index` request into the snapshot store under
    /// `imports/<write id>/` and return the request that names it instead of the upload or
    /// server path.
    fn stage_import(&self, call: &Call, id: &str) -> Result<Call> {
        let src = self.svc.import_source(&call.tenant, &call.msg)?;
        let key = format!("imports/{id}");
        self.store.put(&format!("{key}/index"), &src.file)?;
        let sidecar = IndexMeta::path_for(&src.file);
        if sidecar.is_file() {
            self.store.put(&format!("{key}/index.meta.json"), &sidecar)?;
        }
        let md = src.file.with_extension("cluster-meta");
        src.md.write(&md)?;
        let put = self.store.put(&format!("{key}/meta"), &md);
        let _ = std::fs::remove_file(&md);
        put?;
        let mut msg = call.msg.clone();
        msg.take("upload_id");
        msg.take("server_path");
        msg.set("import_object", key);
        Ok(Call { action: call.action, tenant: call.tenant.clone(), msg })
    }

    /// Fetch the staged file an import record names and import it. Fetching is not part of
    /// the replicated state, so a failed fetch (an object store down, a full spool) is retried
    /// until it succeeds: the applier waits rather than apply the log differently from the
    /// other replicas. Only the import itself may fail, alike everywhere.
    fn apply_import(&self, seq: u64, call: &Call) -> Result<Msg> {
        let key = call
            .msg
            .str("import_object")?
            .ok_or_else(|| Error::new(ErrorKind::Format, "import record without a staged object"))?
            .to_string();
        let mut wait = Duration::from_millis(200);
        let (file, sum, md, spool) = loop {
            match self.fetch_import(&key) {
                Ok(f) => break f,
                Err(e) if !self.stop.load(Ordering::Relaxed) => {
                    tracing::error!(
                        seq,
                        "fetching the staged import {} failed (retrying): {}",
                        self.store.show(&key),
                        e.chain()
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        };
        self.imports.lock().unwrap_or_else(|p| p.into_inner()).push((seq, key));
        let src = super::swap::ImportSource::fetched(file, sum, md, spool);
        super::net::guarded(|| self.svc.import_with(&call.tenant, &call.msg, Some(src)))
    }

    #[allow(clippy::type_complexity)]
    fn fetch_import(
        &self,
        key: &str,
    ) -> Result<(
        std::path::PathBuf,
        crate::engine::index::meta::Checksum,
        super::store::Metadata,
        super::swap::ImportSpool,
    )> {
        let (dir, spool) = self.svc.import_dir()?;
        let file = dir.join("index.faiss");
        self.store.get(&format!("{key}/index"), &file)?;
        let sidecar_key = format!("{key}/index.meta.json");
        if self.store.exists(&sidecar_key)? {
            self.store.get(&sidecar_key, &IndexMeta::path_for(&file))?;
        }
        let md_path = dir.join("metadata.msgpack");
        self.store.get(&format!("{key}/meta"), &md_path)?;
        let md = super::store::Metadata::read(&md_path)?;
        let sum = crate::engine::index::meta::Checksum::read_through(&file, |_| Ok(()))?;
        Ok((file, sum, md, spool))
    }

    fn apply_loop(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<Delivered>, restored: u64) {
        // As the single-node server's write queues: no OpenMP team of this thread's own, so
        // that a record applies the same way (one thread, deterministic) on every replica.
        crate::engine::index::set_threads(1);
        let mut a = Applier { asm: Assembler::default(), late: HashSet::new(), since_snapshot: 0, applied: restored };
        while let Some(d) = rx.blocking_recv() {
            // Nothing a record holds may end this thread: a panic is an error of that record.
            let seq = d.seq;
            if let Err(e) = super::net::guarded(|| {
                self.apply_delivered(&mut a, d);
                Ok(())
            }) {
                tracing::error!(seq, "applying the log: {e}");
                self.status.fail(None, format!("seq {seq}: {e}"));
                a.applied = a.applied.max(seq);
                self.status.set_applied(a.applied);
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    /// Wait until a snapshot holds every record below `next` (the log was trimmed past this
    /// replica), restore it, and return its sequence. Never rolls back: a snapshot older than
    /// what this replica applied is not restored. Meanwhile the replica reports not ready.
    fn recover_gap(&self, applied: u64, next: u64) -> u64 {
        self.status.ready.store(false, Ordering::Relaxed);
        let mut warned = false;
        loop {
            match self.pointer() {
                Ok(Some(p)) if p.seq + 1 >= next && p.seq > applied => match self.restore() {
                    Ok(seq) => {
                        self.status.ready.store(true, Ordering::Relaxed);
                        return seq;
                    }
                    Err(e) => tracing::error!("restoring the newest snapshot failed (retrying): {}", e.chain()),
                },
                Ok(p) if !warned => {
                    warned = true;
                    tracing::error!(
                        applied,
                        next,
                        snapshot = p.map_or(0, |p| p.seq),
                        "the log lost records this replica has not applied and no snapshot holds them: waiting for one (the replica is not ready)"
                    );
                }
                _ => {}
            }
            if self.stop.load(Ordering::Relaxed) {
                return applied;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn apply_delivered(&self, a: &mut Applier, d: Delivered) {
        if d.seq <= a.applied {
            return;
        }
        if d.seq > a.applied + 1 {
            // Records below d.seq were trimmed: a snapshot taken since holds them.
            tracing::warn!(
                applied = a.applied,
                next = d.seq,
                "the log was trimmed past this replica: restoring the newest snapshot"
            );
            a.asm.clear();
            a.late.clear();
            a.applied = self.recover_gap(a.applied, d.seq);
            if d.seq <= a.applied {
                return;
            }
        }
        if d.deadline.is_some_and(|dl| d.stored > dl) {
            if let Some(w) = &d.write {
                a.late.insert(w.clone());
            }
        }
        let (r, dropped) = a.asm.push(d.seq, d.write.as_deref(), d.part.as_deref(), &d.payload);
        for w in dropped {
            let what = format!("write {w}: parts missing after {} records, dropped", record::MAX_PART_SPAN);
            tracing::error!("{what}");
            self.status.fail(None, what.clone());
            a.late.remove(&w);
            self.waiters.answer(&w, Err(Error::new(ErrorKind::Internal, what)));
        }
        let result = match r {
            Ok(Assembled::Waiting) => None,
            Ok(Assembled::Record(_)) if d.write.as_ref().is_some_and(|w| a.late.remove(w)) => Some((
                None,
                Err(unavailable(format!(
                    "the log stored the write at seq {} after its deadline; it was refused on every replica",
                    d.seq
                ))),
            )),
            Ok(Assembled::Record(bytes)) => {
                Some(self.apply_record(d.seq, d.write.as_deref(), &bytes, a.asm.oldest().is_some()))
            }
            Err(e) => Some((None, Err(e))),
        };
        a.applied = d.seq;
        self.status.set_applied(d.seq);
        if let Some((tenant, r)) = result {
            if let Err(e) = &r {
                tracing::warn!(seq = d.seq, "log record failed to apply (on every replica alike): {e}");
                self.status.fail(tenant.as_deref(), format!("seq {}: {e}", d.seq));
            }
            if let Some(w) = &d.write {
                self.waiters.answer(w, r.map(|m| m.with("seq", d.seq)));
            }
            a.since_snapshot += 1;
        }
        if a.since_snapshot >= self.cfg.snapshot_every && a.asm.oldest().is_none() {
            a.since_snapshot = 0;
            match self.snapshot(a.applied, false) {
                Err(e) if e.kind() == ErrorKind::Conflict => tracing::debug!("snapshot at seq {}: {e}", a.applied),
                Err(e) => tracing::warn!("snapshot at seq {} not taken: {}", a.applied, e.chain()),
                Ok(_) => {}
            }
        }
    }

    /// Apply one whole record at `seq` (`write`: its id, to know whether this replica
    /// received it; `parts_pending`: another write's parts are still arriving). Returns the
    /// record's tenant (if it decodes) with the result.
    fn apply_record(
        &self,
        seq: u64,
        write: Option<&str>,
        bytes: &[u8],
        parts_pending: bool,
    ) -> (Option<String>, Result<Msg>) {
        let call = match record::decode(bytes) {
            Ok(c) => c,
            Err(e) => return (None, Err(e)),
        };
        let tenant = Some(call.tenant.clone());
        if call.action == Action::Snapshot {
            // Taken by the replica that received the request, at this very sequence.
            if !write.is_some_and(|w| self.waiters.contains(w)) {
                return (tenant, Ok(Msg::default()));
            }
            if parts_pending {
                // A snapshot here would hold neither that write nor its first parts.
                return (
                    tenant,
                    Err(Error::new(
                        ErrorKind::Busy,
                        "a write larger than one log message is still arriving: retry the snapshot",
                    )),
                );
            }
            let r = self.snapshot(seq, true).map(|m| {
                // The caller learns about its own indices only.
                let mine = m.indices.iter().filter(|i| i.tenant == call.tenant).count() as u64;
                Msg::default()
                    .with("message", format!("cluster snapshot at seq {seq}"))
                    .with("checkpointed", mine)
                    .with("snapshot_seq", seq)
            });
            return (tenant, r);
        }
        if call.action == Action::ImportIndex {
            return (tenant, self.apply_import(seq, &call));
        }
        (tenant, super::net::guarded(|| self.svc.write(&call)))
    }

    /// Take a snapshot at `seq` if this replica wins the lease and the newest snapshot is
    /// older (and, unless `forced`, at least `--snapshot-every` records old); record it as
    /// the newest with a compare-and-set on the pointer (so the pointer only ever moves
    /// forward, even if the lease expired meanwhile), trim the log below the one before, and
    /// delete the one before that.
    ///
    /// Errors: `Conflict` when another replica holds the lease or has a snapshot as new;
    /// `Unavailable`/`Io` from NATS or the snapshot store.
    fn snapshot(&self, seq: u64, forced: bool) -> Result<snapshot::Manifest> {
        let name = self.cfg.name.clone();
        let won = self.rt.block_on(async {
            tokio::time::timeout(
                LOG_TIMEOUT,
                self.lease.create(self.cfg.snapshot_key(), bytes::Bytes::from(name.into_bytes())),
            )
            .await
        });
        let lease = match won {
            Ok(Ok(rev)) => rev,
            Ok(Err(_)) => return Err(Error::new(ErrorKind::Conflict, "another replica holds the snapshot lease")),
            Err(_) => return Err(unavailable("taking the snapshot lease timed out")),
        };
        let r = self.snapshot_held(seq, forced);
        // Released only if still ours (it may have expired and been taken by another).
        let _ = self.rt.block_on(async {
            tokio::time::timeout(LOG_TIMEOUT, self.lease.purge_expect_revision(self.cfg.snapshot_key(), Some(lease)))
                .await
        });
        r
    }

    fn snapshot_held(&self, seq: u64, forced: bool) -> Result<snapshot::Manifest> {
        let entry = self
            .rt
            .block_on(async { tokio::time::timeout(LOG_TIMEOUT, self.meta.entry(self.cfg.snapshot_key())).await })
            .map_err(|_| unavailable("reading the snapshot pointer timed out"))?
            .map_err(unavailable)?;
        let (old, revision): (Option<Pointer>, Option<u64>) = match entry {
            Some(e) if !e.value.is_empty() => (serde_json::from_slice(&e.value).ok(), Some(e.revision)),
            Some(e) => (None, Some(e.revision)),
            None => (None, None),
        };
        if let Some(o) = &old {
            if o.seq >= seq || (!forced && o.seq + self.cfg.snapshot_every > seq) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the newest snapshot (seq {}) is recent enough", o.seq),
                ));
            }
        }
        let t0 = Instant::now();
        let tmp = self.scratch()?;
        let m = self.svc.write_snapshot(&self.store, seq, &self.cfg.name, tmp.path())?;
        let p = Pointer { seq, prev: old.as_ref().map(|o| o.seq) };
        let text = serde_json::to_vec(&p).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let set = self.rt.block_on(async {
            tokio::time::timeout(LOG_TIMEOUT, async {
                match revision {
                    Some(rev) => {
                        self.meta.update(self.cfg.snapshot_key(), text.into(), rev).await.map_err(|e| e.to_string())
                    }
                    None => self.meta.create(self.cfg.snapshot_key(), text.into()).await.map_err(|e| e.to_string()),
                }
            })
            .await
        });
        match set {
            Ok(Ok(_)) => {}
            other => {
                // Someone else moved the pointer meanwhile: this snapshot is not the newest.
                let _ = self.store.remove(&m);
                let why = match other {
                    Ok(Err(e)) => e,
                    _ => "timed out".to_string(),
                };
                return Err(Error::new(ErrorKind::Conflict, format!("recording the snapshot at seq {seq}: {why}")));
            }
        }
        *self.status.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some((seq, m.time));
        tracing::info!(seq, indices = m.indices.len(), took_ms = t0.elapsed().as_millis() as u64, "snapshot written");
        if let Some(o) = old {
            // Two snapshots are kept: records up to the older one are in both.
            let r = self.rt.block_on(async {
                tokio::time::timeout(LOG_TIMEOUT, async { self.stream.purge().sequence(o.seq + 1).await }).await
            });
            if matches!(r, Ok(Ok(_))) {
                // Staged imports the trimmed log no longer names, applied by every member.
                let floor = self.status.view().members.iter().map(|(_, a)| *a).min().unwrap_or(0).min(o.seq);
                let mut imports = self.imports.lock().unwrap_or_else(|p| p.into_inner());
                for (_, key) in imports.iter().filter(|(s, _)| *s <= floor) {
                    for f in ["index", "index.meta.json", "meta"] {
                        let _ = self.store.delete(&format!("{key}/{f}"));
                    }
                }
                imports.retain(|(s, _)| *s > floor);
            } else {
                tracing::warn!(below = o.seq + 1, "trimming the log failed; it is trimmed at the next snapshot");
            }
            if let Some(gone) = o.prev.filter(|&g| g < o.seq) {
                match self.store.manifest(gone, tmp.path()) {
                    Ok(gm) => {
                        if let Err(e) = self.store.remove(&gm) {
                            tracing::warn!("deleting the snapshot at seq {gone}: {}", e.chain());
                        }
                    }
                    Err(e) => tracing::debug!("snapshot at seq {gone} already gone: {e}"),
                }
            }
        }
        Ok(m)
    }

    /// Stop the consumer, heartbeats and applier (writes still waiting get no reply).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Forward the log from `next` to the applier, forever: the ordered consumer recreates
/// itself on gaps and reconnects; if it fails, it is made again from the next sequence.
async fn consume(
    stream: stream::Stream,
    subject: String,
    next: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<Delivered>,
    status: Arc<Status>,
    stop: Arc<AtomicBool>,
) {
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let start = next.load(Ordering::Relaxed).max(1);
        let cfg = consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
            ..Default::default()
        };
        let messages = match stream.create_consumer(cfg).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => {
                warned = false;
                m
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot read the log (retrying every second): {e}");
                    warned = true;
                }
                status.unreachable("cannot read it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut behind_since: Option<Instant> = None;
        loop {
            let m = match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    // Nothing for a second. If the log holds records not received yet, the
                    // consumer may sit on a NATS node that died (the ordered consumer itself
                    // notices only after two missed 15 s heartbeats): after STUCK_AFTER,
                    // make a new one from the next sequence.
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if status.log_last.load(Ordering::Relaxed) < next.load(Ordering::Relaxed) {
                        behind_since = None;
                    } else if behind_since.get_or_insert_with(Instant::now).elapsed() >= STUCK_AFTER {
                        tracing::warn!(
                            next = next.load(Ordering::Relaxed),
                            last = status.log_last.load(Ordering::Relaxed),
                            "the log's consumer delivers nothing though the log holds more: making a new one"
                        );
                        break;
                    }
                    continue;
                }
            };
            behind_since = None;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("log consumer: {e}");
                    break;
                }
            };
            let info = match m.info() {
                Ok(i) => i,
                Err(e) => {
                    // Never skipped: the consumer is made again from this sequence.
                    tracing::warn!("log message without stream info: {e}");
                    break;
                }
            };
            let seq = info.stream_sequence;
            let stored = info.published.unix_timestamp_nanos() as f64 / 1e9;
            let header = |k: &str| m.headers.as_ref().and_then(|h| h.get(k)).map(|v| v.as_str().to_string());
            let d = Delivered {
                seq,
                write: header(WRITE_HEADER),
                part: header(PART_HEADER),
                deadline: header(DEADLINE_HEADER).and_then(|v| v.parse().ok()),
                stored,
                payload: m.payload.clone(),
            };
            status.touch();
            if tx.send(d).await.is_err() {
                return;
            }
            next.store(seq + 1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every second: report this replica into the members bucket, read the others and the
/// log's last sequence.
async fn heartbeat(c: Arc<Cluster>, members: kv::Store) {
    let st = c.status.clone();
    while !c.stop.load(Ordering::Relaxed) {
        let me = Member {
            name: st.name.clone(),
            endpoint: st.endpoint.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            applied: st.applied(),
            ready: st.ready.load(Ordering::Relaxed),
            shard: c.cfg.shard.clone(),
            time: crate::engine::protocol::now_f64(),
        };
        let round = async {
            let body = serde_json::to_vec(&me).unwrap_or_default();
            members.put(&me.name, body.into()).await.map_err(|e| e.to_string())?;
            let info = c.stream.get_info().await.map_err(|e| e.to_string())?;
            st.log_last.fetch_max(info.state.last_sequence, Ordering::Relaxed);
            let mut keys = members.keys().await.map_err(|e| e.to_string())?;
            let mut seen = Vec::new();
            while let Some(k) = keys.next().await {
                let Ok(k) = k else { continue };
                if let Ok(Some(v)) = members.get(&k).await {
                    if let Ok(m) = serde_json::from_slice::<Member>(&v) {
                        seen.push(m);
                    }
                }
            }
            // The members of this replica's shard (the others have logs of their own).
            seen.retain(|m| m.shard == c.cfg.shard);
            seen.sort_by(|a, b| a.name.cmp(&b.name));
            if let Ok(Some(p)) = c.meta.get(c.cfg.snapshot_key()).await {
                if let Ok(p) = serde_json::from_slice::<Pointer>(&p) {
                    let mut s = st.snapshot.lock().unwrap_or_else(|p| p.into_inner());
                    if s.is_none_or(|(seq, _)| seq < p.seq) {
                        *s = Some((p.seq, crate::engine::protocol::now_f64()));
                    }
                }
            }
            Ok::<_, String>(seen)
        };
        match tokio::time::timeout(Duration::from_secs(2), round).await {
            Ok(Ok(seen)) => {
                st.touch();
                *st.members.lock().unwrap_or_else(|p| p.into_inner()) = seen;
            }
            Ok(Err(e)) => st.unreachable(&e),
            Err(_) => st.unreachable("no answer within 2 s"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `serve --router --cluster`: keep `topo` up to date with the shards of the cluster, read
/// every second: every shard ever registered (key `shards.<NAME>` of the KV bucket
/// `faissx_cluster`, written by `serve --cluster --shard NAME` replicas) and the live
/// replicas the members bucket lists for each. A shard is never forgotten (its place decides
/// where ids go): while none of its replicas reports itself, its last known replicas (or
/// none) are kept, so requests to it fail with `SHARD_UNAVAILABLE` rather than going to
/// another shard. Returns the watcher's runtime (dropping it stops the watch) once the
/// first read is done.
///
/// Errors: `Unavailable` when NATS cannot be reached at start.
pub fn watch_shards(
    cfg: &ClusterConfig,
    topo: Arc<crate::engine::router::shards::Topology>,
) -> Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("faissx-router-watch")
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the cluster client: {e}")))?;
    let (members, registry) = rt.block_on(async {
        let (_, js) = connect(cfg).await?;
        let m = bucket(&js, MEMBERS_BUCKET, MEMBER_TTL, cfg.log_replicas).await?;
        let r = bucket(&js, CLUSTER_BUCKET, Duration::ZERO, cfg.log_replicas).await?;
        Ok::<_, Error>((m, r))
    })?;
    let mut known: HashMap<String, Vec<String>> = HashMap::new();
    let first = rt
        .block_on(read_shards(&members, &registry))
        .map_err(|e| unavailable(format!("reading the cluster's shards: {e}")))?;
    apply_shards(&topo, first, &mut known);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match tokio::time::timeout(Duration::from_secs(2), read_shards(&members, &registry)).await {
                Ok(Ok(seen)) => apply_shards(&topo, seen, &mut known),
                Ok(Err(e)) => tracing::debug!("reading the cluster's shards: {e}"),
                Err(_) => tracing::debug!("reading the cluster's shards timed out"),
            }
        }
    });
    Ok(rt)
}

/// The registered shard names and the members now.
async fn read_shards(
    members: &kv::Store,
    registry: &kv::Store,
) -> std::result::Result<(Vec<String>, Vec<Member>), String> {
    let mut names = Vec::new();
    let mut keys = registry.keys().await.map_err(|e| e.to_string())?;
    while let Some(k) = keys.next().await {
        if let Some(n) = k.ok().and_then(|k| k.strip_prefix("shards.").map(str::to_string)) {
            names.push(n);
        }
    }
    let mut seen = Vec::new();
    let mut keys = members.keys().await.map_err(|e| e.to_string())?;
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        if let Ok(Some(v)) = members.get(&k).await {
            if let Ok(m) = serde_json::from_slice::<Member>(&v) {
                seen.push(m);
            }
        }
    }
    Ok((names, seen))
}

/// Fold a read of the shards into `known` (shard → replicas) and `topo`.
fn apply_shards(
    topo: &crate::engine::router::shards::Topology,
    (names, seen): (Vec<String>, Vec<Member>),
    known: &mut HashMap<String, Vec<String>>,
) {
    let now = crate::engine::protocol::now_f64();
    for n in names {
        known.entry(n).or_default();
    }
    let mut live: HashMap<String, Vec<String>> = HashMap::new();
    for m in &seen {
        if let Some(s) = &m.shard {
            known.entry(s.clone()).or_default();
            if m.ready && now - m.time < MEMBER_TTL.as_secs_f64() {
                live.entry(s.clone()).or_default().push(m.endpoint.clone());
            }
        }
    }
    for (s, eps) in known.iter_mut() {
        if let Some(l) = live.get_mut(s) {
            l.sort();
            *eps = l.clone();
        }
    }
    let specs: Vec<(String, Vec<String>)> = known.iter().map(|(s, e)| (s.clone(), e.clone())).collect();
    if let Err(e) = topo.set(specs) {
        tracing::warn!("cluster members: {e}");
    }
    for sh in topo.shards() {
        for r in &sh.replicas {
            if let Some(m) = seen.iter().find(|m| m.endpoint == r.endpoint) {
                *r.lag.lock().unwrap_or_else(|p| p.into_inner()) = Some((m.applied, 0));
            }
        }
    }
}

/// `endpoint` as other hosts reach it: a wildcard address (`0.0.0.0`, `*`, `[::]`) becomes
/// this host's name.
pub fn advertised(endpoint: &str) -> String {
    let Some(rest) = endpoint.strip_prefix("tcp://") else { return endpoint.to_string() };
    let Some((host, port)) = rest.rsplit_once(':') else { return endpoint.to_string() };
    if !matches!(host, "0.0.0.0" | "*" | "[::]" | "::") {
        return endpoint.to_string();
    }
    let name = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let name = if name.is_empty() { "localhost".to_string() } else { name };
    format!("tcp://{name}:{port}")
}
