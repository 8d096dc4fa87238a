//! Sockets and threads: one I/O thread owns the ROUTER socket; worker threads decode requests
//! and run searches; mutations run on a per-index queue drained by a thread of its own (so an
//! index's mutations apply in arrival order and never wait for another index's). Replies come back to the I/O thread over an inproc
//! PUSH/PULL pair, since a ZeroMQ socket belongs to one thread.
//!
//! The I/O thread answers small cheap requests (`ping`, `health`, `metrics`, `list_indices`)
//! itself, so they never queue behind a busy index. A search whose index is being mutated is
//! handed to a short-lived thread instead of occupying a worker.
//!
//! Nothing a client sends may end or wedge the process: every handler runs under
//! `catch_unwind` (a panic becomes an `INTERNAL` reply and the thread lives on), and what is
//! queued is bounded — at most [`MAX_INFLIGHT_PER_PEER`] requests per connection and
//! [`MAX_INFLIGHT_BYTES`] bytes of requests in all; past that the I/O thread answers `BUSY`
//! at once instead of queueing.

use super::cluster::{self, Cluster};
use super::telemetry::Telemetry;
use super::{Call, Class, HttpServer, ServerConfig, Service};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::{self, Msg};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests slower than this are logged at WARNING.
pub const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// Requests up to this size are decoded on the I/O thread.
const INLINE_DECODE_BYTES: usize = 4096;

/// Requests of one connection (ZeroMQ peer) being worked on or queued at once.
pub const MAX_INFLIGHT_PER_PEER: usize = 64;

/// Bytes of requests being worked on or queued at once, over all connections (at least one
/// request of `--max-request-bytes` is always let through).
pub const MAX_INFLIGHT_BYTES: usize = 512 << 20;

/// Run `f`, turning a panic into an `Internal` error so that the thread serving the request
/// lives on and the client gets a reply.
pub(super) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::new(ErrorKind::Internal, format!("internal error while handling the request: {what}")))
        }
    }
}

enum Payload {
    /// The request frame as ZeroMQ received it (decoded on a worker, without a copy).
    Raw(zmq::Message),
    Call(Call),
}

struct Job {
    env: Vec<Vec<u8>>,
    payload: Payload,
    started: Instant,
    peer: String,
    /// Size of the request frame (accounted in flight until the reply).
    bytes: usize,
}

/// Sends replies to the I/O thread.
struct Replier {
    sock: Mutex<zmq::Socket>,
    svc: Arc<Service>,
}

impl Replier {
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        job_env: Vec<Vec<u8>>,
        bytes: usize,
        tenant: &str,
        action: &str,
        started: Instant,
        peer: &str,
        nq_k: (u64, u64),
        r: Result<Msg>,
    ) {
        let reply = finish(&self.svc, tenant, action, started, peer, nq_k, r);
        // First frame: the request's size, for the I/O thread's in-flight accounting.
        let mut frames = vec![(bytes as u64).to_le_bytes().to_vec()];
        frames.extend(job_env);
        frames.push(reply);
        let s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        // The I/O thread is alive as long as replies are expected; a failure here means shutdown.
        let _ = s.send_multipart(frames, 0);
    }
}

/// Record the request for `metrics` and `/metrics` (under its tenant), log it (DEBUG: every
/// request; WARNING: refused or slow; ERROR: failed on the server) and encode its reply.
fn finish(
    svc: &Service,
    tenant: &str,
    action: &str,
    started: Instant,
    peer: &str,
    nq_k: (u64, u64),
    r: Result<Msg>,
) -> Vec<u8> {
    let ok = r.is_ok();
    let took = started.elapsed();
    svc.record(tenant, action, took, r.as_ref().err());
    let took_ms = took.as_secs_f64() * 1000.0;
    if let Err(e) = &r {
        log_failure(e, tenant, action, peer);
    }
    if took > SLOW_REQUEST {
        tracing::warn!(op = %action, tenant = %tenant, took_ms, peer = %peer, ok, "slow request");
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        // Rows as the reply counts them (a binary payload's row count needs the index's d).
        let rows = |m: &Msg| m.uint("num_queries").ok().flatten().or_else(|| m.uint("count").ok().flatten());
        let nq = r.as_ref().ok().and_then(rows).unwrap_or(nq_k.0);
        tracing::debug!(op = %action, nq, k = nq_k.1, took_ms, peer = %peer, ok, tenant = %tenant, "request");
    }
    match r {
        Ok(m) => protocol::ok_reply(m),
        Err(e) => protocol::error_reply(&e),
    }
}

/// Log a failed request by what it means to an operator: refusals (authentication, BUSY,
/// size, quotas) at WARNING, failures on the server's side at ERROR, a client's mistakes
/// (bad input, unknown index) at DEBUG only. The API key is never logged.
fn log_failure(e: &Error, tenant: &str, action: &str, peer: &str) {
    let code = protocol::ErrorCode::of(e).as_str();
    match e.kind() {
        ErrorKind::Auth => tracing::warn!(op = %action, peer = %peer, reason = %e, "authentication failed"),
        ErrorKind::Busy
        | ErrorKind::TooLarge
        | ErrorKind::QuotaExceeded
        | ErrorKind::Unavailable
        | ErrorKind::ShardUnavailable => {
            tracing::warn!(op = %action, tenant = %tenant, peer = %peer, code = %code, "request refused: {e}")
        }
        ErrorKind::Internal | ErrorKind::Io => {
            tracing::error!(op = %action, tenant = %tenant, peer = %peer, code = %code, "request failed on the server: {}", e.chain())
        }
        _ => tracing::debug!(op = %action, tenant = %tenant, peer = %peer, code = %code, "request failed: {e}"),
    }
}

/// The name a request that failed authentication or decoding is counted under: its action
/// if the frame names one (see [`action_label`](super::stats::action_label)), else `invalid`.
fn refused_action(frame: &[u8]) -> &'static str {
    protocol::peek_head(frame).ok().and_then(|h| h.action).map_or("invalid", super::stats::action_label)
}

/// Rows and `k` of a request, for the log line (binary payloads: 0, counted from the reply).
fn nq_k(call: &Call) -> (u64, u64) {
    let nq = call.msg.rows_hint("query_vectors").or_else(|| call.msg.rows_hint("vectors")).unwrap_or(0);
    (nq, call.msg.uint("k").ok().flatten().unwrap_or(0))
}

/// Per-index mutation queues: the first job for an idle index starts a thread that drains
/// that index's queue and exits when it is empty. Mutations of one index apply in arrival
/// order; different indices never wait for each other.
struct Lanes {
    queues: Mutex<HashMap<(String, String), VecDeque<Job>>>,
    svc: Arc<Service>,
    replier: Arc<Replier>,
    /// `serve --cluster`: writes go through the replicated log instead.
    cluster: Option<Arc<Cluster>>,
}

impl Lanes {
    fn submit(self: &Arc<Self>, key: (String, String), job: Job) {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dq) = q.get_mut(&key) {
            dq.push_back(job);
            return;
        }
        q.insert(key.clone(), VecDeque::from([job]));
        drop(q);
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("faissx-mutate".into()).spawn(move || me.drain(key.clone()));
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread for the writes of an index: {e}");
        }
    }

    fn drain(&self, key: (String, String)) {
        // Lane threads are short-lived: they do not start OpenMP teams of their own (libgomp
        // keeps a pool per thread that started a team). Mutations run on one core each; the
        // server's parallelism is across requests and indices. (The rare fuzzer SIGSEGV first
        // blamed on such pools was FAISS's unsynchronized LSQ timer table: see
        // `Index::lsq_guard`.)
        crate::engine::index::set_threads(1);
        loop {
            let job = {
                let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                match q.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(j) => j,
                    None => {
                        q.remove(&key);
                        return;
                    }
                }
            };
            if let Payload::Call(call) = job.payload {
                if let Some(c) = self.cluster.as_ref().filter(|_| cluster::replicated(call.action)) {
                    // Answered once the log has stored it and this replica has applied it.
                    let replier = self.replier.clone();
                    let (env, bytes, started, peer) = (job.env, job.bytes, job.started, job.peer);
                    let (tenant, action, nq) = (call.tenant.clone(), call.action.name(), nq_k(&call));
                    let done: cluster::Done =
                        Box::new(move |r| replier.send(env, bytes, &tenant, action, started, &peer, nq, r));
                    // A panic answers the client (the write's responder does, when dropped)
                    // and leaves this queue's thread alive.
                    let _ = guarded(|| {
                        c.submit(&call, done);
                        Ok(())
                    });
                    continue;
                }
                let r = guarded(|| self.svc.write(&call));
                self.replier.send(
                    job.env,
                    job.bytes,
                    &call.tenant,
                    call.action.name(),
                    job.started,
                    &job.peer,
                    nq_k(&call),
                    r,
                );
            }
        }
    }
}

struct Pools {
    svc: Arc<Service>,
    replier: Arc<Replier>,
    lanes: Arc<Lanes>,
}

impl Pools {
    /// Decode (if needed), authenticate and run or route one job (on a worker thread).
    fn handle(&self, job: Job) {
        let Job { env, payload, started, peer, bytes } = job;
        let call = match payload {
            Payload::Call(c) => Ok(c),
            Payload::Raw(b) => guarded(|| self.svc.prepare(&b)).map_err(|e| (e, refused_action(&b))),
        };
        let call = match call {
            Ok(c) => c,
            Err((e, action)) => return self.replier.send(env, bytes, "", action, started, &peer, (0, 0), Err(e)),
        };
        let send =
            |env, r| self.replier.send(env, bytes, &call.tenant, call.action.name(), started, &peer, nq_k(&call), r);
        match Service::class(&call) {
            Class::Inline => send(env, guarded(|| self.svc.admin(&call))),
            Class::Write(key) => {
                let key = (call.tenant.clone(), key);
                self.lanes.submit(key, Job { env, payload: Payload::Call(call), started, peer, bytes });
            }
            Class::Read => match guarded(|| self.svc.read(&call, false)) {
                Ok(Some(m)) => send(env, Ok(m)),
                Ok(None) => {
                    // The index is being mutated: wait for it on a thread of its own.
                    let (svc, replier) = (self.svc.clone(), self.replier.clone());
                    std::thread::spawn(move || {
                        crate::engine::index::set_threads(1);
                        let r = guarded(|| svc.read(&call, true).map(|m| m.unwrap_or_default()));
                        replier.send(env, bytes, &call.tenant, call.action.name(), started, &peer, nq_k(&call), r);
                    });
                }
                Err(e) => send(env, Err(e)),
            },
        }
    }
}

fn worker(pools: Arc<Pools>, rx: Arc<Mutex<Receiver<Job>>>) {
    crate::engine::index::set_threads(1);
    loop {
        let job = {
            let r = rx.lock().unwrap_or_else(|p| p.into_inner());
            r.recv()
        };
        match job {
            Ok(j) => pools.handle(j),
            Err(_) => return,
        }
    }
}

fn zerr(what: &str, e: zmq::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what}: {e}"))
}

/// Whether a ZeroMQ endpoint is reachable from this host only (loopback TCP, `ipc://`,
/// `inproc://`).
pub fn is_local_endpoint(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("tcp://") else { return true };
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

/// Run the server until `stop` is set: start the HTTP listener (with `cfg.http`; `/readyz`
/// answers 503 from then on), restore the indices, bind, call `on_ready` with the bound
/// endpoint (`/readyz` answers 200 from then on), serve, then finish in-flight requests,
/// checkpoint (with `--data-dir`) and return.
pub fn serve(cfg: &ServerConfig, on_ready: &mut dyn FnMut(&str) -> Result<()>, stop: &AtomicBool) -> Result<()> {
    let telemetry = Arc::new(Telemetry::with_recording(cfg.http.is_some()));
    // Up before the restore, which may take long: probes see the process alive, not ready.
    let http = match &cfg.http {
        Some(addr) => {
            let h = HttpServer::start(addr, telemetry.clone())?;
            tracing::info!(url = %format!("http://{}", h.local_addr()), "metrics and probes listening (/metrics, /livez, /readyz)");
            Some(h)
        }
        None => None,
    };
    let restoring = Instant::now();
    // A replica's state comes from the cluster's snapshots and log, not from local files:
    // its --data-dir only holds scratch files.
    let svc_cfg = ServerConfig { data_dir: cfg.data_dir.clone().filter(|_| cfg.cluster.is_none()), ..cfg.clone() };
    let svc = Arc::new(Service::open_with(&svc_cfg, telemetry.clone())?);
    telemetry.attach(&svc);
    let cluster = match &cfg.cluster {
        Some(cc) => Some(Cluster::start(cc.clone(), svc.clone(), &cfg.endpoint, stop)?),
        None => None,
    };
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).map_err(|e| zerr("creating socket", e))?;
    router.set_linger(0).map_err(|e| zerr("socket option", e))?;
    // Hard guard against memory exhaustion; requests between the limit and this guard get a
    // TOO_LARGE reply, larger ones are dropped by ZeroMQ with the connection.
    let guard = cfg.max_request_bytes.saturating_mul(2).saturating_add(1 << 20).min(i64::MAX as usize) as i64;
    router.set_maxmsgsize(guard).map_err(|e| zerr("socket option", e))?;
    if let Some(secret) = &cfg.curve_secret_key {
        router.set_curve_server(true).map_err(|e| zerr("CurveZMQ server", e))?;
        router.set_curve_secretkey(secret).map_err(|e| zerr("CurveZMQ secret key", e))?;
    }
    router.bind(&cfg.endpoint).map_err(|e| zerr(&format!("binding {}", cfg.endpoint), e))?;
    let endpoint = match router.get_last_endpoint() {
        Ok(Ok(s)) => s,
        _ => cfg.endpoint.clone(),
    };
    let inproc = format!("inproc://faissx-replies-{}", std::process::id());
    let pull = ctx.socket(zmq::PULL).map_err(|e| zerr("creating socket", e))?;
    pull.set_linger(0).map_err(|e| zerr("socket option", e))?;
    pull.bind(&inproc).map_err(|e| zerr("binding inproc", e))?;
    let push = ctx.socket(zmq::PUSH).map_err(|e| zerr("creating socket", e))?;
    push.set_linger(0).map_err(|e| zerr("socket option", e))?;
    push.set_sndhwm(0).map_err(|e| zerr("socket option", e))?;
    pull.set_rcvhwm(0).map_err(|e| zerr("socket option", e))?;
    push.connect(&inproc).map_err(|e| zerr("connecting inproc", e))?;
    let replier = Arc::new(Replier { sock: Mutex::new(push), svc: svc.clone() });

    let mut threads = Vec::new();
    if let Some(c) = &cluster {
        c.set_endpoint(&endpoint);
    }
    let lanes = Arc::new(Lanes {
        queues: Mutex::new(HashMap::new()),
        svc: svc.clone(),
        replier: replier.clone(),
        cluster: cluster.clone(),
    });
    let pools = Arc::new(Pools { svc: svc.clone(), replier: replier.clone(), lanes });
    let (job_tx, job_rx) = channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    for i in 0..cfg.workers.max(1) {
        let (p, r) = (pools.clone(), job_rx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("faissx-worker-{i}"))
                .spawn(move || worker(p, r))
                .map_err(|e| Error::new(ErrorKind::Io, format!("spawning thread: {e}")))?,
        );
    }
    let maintenance = {
        let (svc, done) = (svc.clone(), Arc::new(AtomicBool::new(false)));
        let d = done.clone();
        let t = std::thread::Builder::new()
            .name("faissx-maintenance".into())
            .spawn(move || {
                crate::engine::index::set_threads(1);
                let mut tick = 0u64;
                while !d.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    tick += 1;
                    if tick.is_multiple_of(10) {
                        // Idle uploads and exports go with their files; `--index` files
                        // replaced on disk are re-read.
                        svc.sweep_transfers();
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.reload_sources()));
                    }
                }
            })
            .map_err(|e| Error::new(ErrorKind::Io, format!("spawning thread: {e}")))?;
        (t, done)
    };
    let data = cfg.data_dir.as_ref().map_or_else(|| "in memory".to_string(), |d| d.display().to_string());
    tracing::info!(
        endpoint = %endpoint,
        data_dir = %data,
        indices = svc.index_count(),
        quarantined = svc.quarantined_count(),
        restore_ms = restoring.elapsed().as_millis() as u64,
        auth = %if cfg.auth_keys.is_some() { "on" } else { "off" },
        curve = %if cfg.curve_secret_key.is_some() { "on" } else { "off" },
        mmap = cfg.mmap,
        "serving"
    );
    if cfg.auth_keys.is_none() && !is_local_endpoint(&endpoint) {
        tracing::warn!(
            endpoint = %endpoint,
            "serving a non-loopback address without --enable-auth: any host that reaches it can read, change and delete every index"
        );
    }
    telemetry.set_ready(true);
    on_ready(&endpoint)?;
    // Inline searches on this thread must not start OpenMP teams.
    crate::engine::index::set_threads(1);

    let mut inflight = 0usize;
    let mut inflight_bytes = 0usize;
    let mut per_peer: HashMap<Vec<u8>, usize> = HashMap::new();
    let byte_limit = MAX_INFLIGHT_BYTES.max(cfg.max_request_bytes);
    let mut stopping = false;
    loop {
        let mut items = [router.as_poll_item(zmq::POLLIN), pull.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, 100) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(zerr("poll", e)),
        }
        let (req_ready, rep_ready) = (items[0].is_readable(), items[1].is_readable());
        if rep_ready {
            while let Ok(mut frames) = pull.recv_multipart(zmq::DONTWAIT) {
                if frames.len() < 2 {
                    continue;
                }
                let size = frames.remove(0);
                let size = u64::from_le_bytes(size.try_into().unwrap_or([0; 8])) as usize;
                inflight = inflight.saturating_sub(1);
                inflight_bytes = inflight_bytes.saturating_sub(size);
                if let Some(n) = per_peer.get_mut(&frames[0]) {
                    *n -= 1;
                    if *n == 0 {
                        per_peer.remove(&frames[0]);
                    }
                }
                let _ = router.send_multipart(frames, zmq::DONTWAIT);
            }
        }
        if stop.load(Ordering::Relaxed) && !stopping {
            stopping = true;
            telemetry.set_ready(false);
            tracing::info!(in_flight = inflight, "stopping: finishing requests in flight");
        }
        if stopping {
            if inflight == 0 {
                break;
            }
            continue;
        }
        if !req_ready {
            continue;
        }
        for _ in 0..256 {
            let (env, payload, peer) = match recv_request(&router) {
                Some(r) => r,
                None => break,
            };
            let started = Instant::now();
            let reply = |r: Result<Msg>, action: &str, call: Option<&Call>| {
                let tenant = call.map_or("", |c| c.tenant.as_str());
                let bytes = finish(&svc, tenant, action, started, &peer, call.map(nq_k).unwrap_or((0, 0)), r);
                let mut frames = env.clone();
                frames.push(bytes);
                let _ = router.send_multipart(frames, zmq::DONTWAIT);
            };
            if payload.len() > cfg.max_request_bytes {
                let e = Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "request of {} bytes exceeds the limit of {} bytes (--max-request-bytes)",
                        payload.len(),
                        cfg.max_request_bytes
                    ),
                );
                reply(Err(e), "invalid", None);
                continue;
            }
            let peer_count = per_peer.get(&env[0]).copied().unwrap_or(0);
            if peer_count >= MAX_INFLIGHT_PER_PEER || inflight_bytes + payload.len() > byte_limit {
                let e = Error::new(
                    ErrorKind::Busy,
                    format!(
                        "server busy: {peer_count} requests of this connection and {inflight_bytes} bytes in all are in flight (limits {MAX_INFLIGHT_PER_PEER} and {byte_limit}); retry later"
                    ),
                );
                reply(Err(e), "busy", None);
                continue;
            }
            let job_payload = if payload.len() <= INLINE_DECODE_BYTES {
                match guarded(|| svc.prepare(&payload)) {
                    Err(e) => {
                        reply(Err(e), refused_action(&payload), None);
                        continue;
                    }
                    Ok(call) if Service::class(&call) == Class::Inline => {
                        reply(guarded(|| svc.admin(&call)), call.action.name(), Some(&call));
                        continue;
                    }
                    Ok(call) if svc.is_cheap_search(&call) => match guarded(|| svc.read(&call, false)) {
                        // Two thread hops cost more than a small search.
                        Ok(Some(m)) => {
                            reply(Ok(m), call.action.name(), Some(&call));
                            continue;
                        }
                        Ok(None) => Payload::Call(call),
                        Err(e) => {
                            reply(Err(e), call.action.name(), Some(&call));
                            continue;
                        }
                    },
                    Ok(call) => Payload::Call(call),
                }
            } else {
                Payload::Raw(payload)
            };
            let bytes = match &job_payload {
                Payload::Raw(b) => b.len(),
                Payload::Call(_) => INLINE_DECODE_BYTES,
            };
            inflight += 1;
            inflight_bytes += bytes;
            *per_peer.entry(env[0].clone()).or_default() += 1;
            let _ = job_tx.send(Job { env, payload: job_payload, started, peer, bytes });
        }
    }
    drop(job_tx);
    drop(pools);
    for t in threads {
        let _ = t.join();
    }
    maintenance.1.store(true, Ordering::Relaxed);
    let _ = maintenance.0.join();
    if let Some(c) = &cluster {
        c.shutdown();
    }
    svc.checkpoint_all();
    drop(http);
    tracing::info!(endpoint = %endpoint, "stopped");
    Ok(())
}

/// One request from the ROUTER: (envelope frames, payload, peer address).
fn recv_request(router: &zmq::Socket) -> Option<(Vec<Vec<u8>>, zmq::Message, String)> {
    let mut env = Vec::new();
    loop {
        let flags = if env.is_empty() { zmq::DONTWAIT } else { 0 };
        let mut msg = router.recv_msg(flags).ok()?;
        if msg.get_more() {
            env.push(msg.to_vec());
            continue;
        }
        let peer = msg.gets("Peer-Address").unwrap_or("?").to_string();
        // A ROUTER always prepends the sender's identity; a lone frame is not a request.
        return if env.is_empty() { None } else { Some((env, msg, peer)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_local() {
        for local in ["tcp://127.0.0.1:1", "tcp://127.0.0.2:0", "tcp://localhost:5", "tcp://[::1]:5", "ipc:///tmp/x"] {
            assert!(is_local_endpoint(local), "{local}");
        }
        for remote in ["tcp://0.0.0.0:45678", "tcp://10.0.0.1:1", "tcp://*:5", "tcp://[::]:5", "tcp://eth0:5"] {
            assert!(!is_local_endpoint(remote), "{remote}");
        }
    }

    #[test]
    fn a_panicking_handler_becomes_an_internal_error() {
        let e = guarded::<()>(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.to_string().contains("boom 7"), "{e}");
        assert_eq!(protocol::ErrorCode::of(&e).as_str(), "INTERNAL");
        assert_eq!(guarded(|| Ok(3)).unwrap(), 3);
    }
}
