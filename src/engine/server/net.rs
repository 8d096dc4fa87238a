//! Sockets and threads: one I/O thread owns the ROUTER socket; worker threads decode requests
//! and run searches; mutations run on a per-index queue drained by a thread of its own (so an
//! index's mutations apply in arrival order and never wait for another index's). Replies come back to the I/O thread over an inproc
//! PUSH/PULL pair, since a ZeroMQ socket belongs to one thread.
//!
//! The I/O thread answers small cheap requests (`ping`, `health`, `metrics`, `list_indices`)
//! itself, so they never queue behind a busy index. A search whose index is being mutated is
//! handed to a short-lived thread instead of occupying a worker.

use super::{Call, Class, ServerConfig, Service};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::{self, Msg};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Requests up to this size are decoded on the I/O thread.
const INLINE_DECODE_BYTES: usize = 4096;

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
}

/// Sends replies to the I/O thread.
struct Replier {
    sock: Mutex<zmq::Socket>,
    svc: Arc<Service>,
    verbose: bool,
}

impl Replier {
    fn send(
        &self,
        job_env: Vec<Vec<u8>>,
        action: &str,
        started: Instant,
        peer: &str,
        nq_k: (u64, u64),
        r: Result<Msg>,
    ) {
        let bytes = finish(&self.svc, self.verbose, action, started, peer, nq_k, r);
        let mut frames = job_env;
        frames.push(bytes);
        let s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        // The I/O thread is alive as long as replies are expected; a failure here means shutdown.
        let _ = s.send_multipart(frames, 0);
    }
}

/// Record the request for `metrics`, log it (with `verbose`) and encode its reply.
fn finish(
    svc: &Service,
    verbose: bool,
    action: &str,
    started: Instant,
    peer: &str,
    nq_k: (u64, u64),
    r: Result<Msg>,
) -> Vec<u8> {
    let ok = r.is_ok();
    let took = started.elapsed();
    svc.record(action, took, ok);
    if verbose {
        // Rows as the reply counts them (a binary payload's row count needs the index's d).
        let rows = |m: &Msg| m.uint("num_queries").ok().flatten().or_else(|| m.uint("count").ok().flatten());
        let nq = r.as_ref().ok().and_then(rows).unwrap_or(nq_k.0);
        eprintln!(
            "faissx: op={action} nq={nq} k={} took_ms={:.3} peer={peer} ok={ok}",
            nq_k.1,
            took.as_secs_f64() * 1000.0
        );
    }
    match r {
        Ok(m) => protocol::ok_reply(m),
        Err(e) => protocol::error_reply(&e),
    }
}

/// Rows and `k` of a request, for the log line (binary payloads: 0, counted from the reply).
fn nq_k(call: &Call) -> (u64, u64) {
    let nq = match call.msg.get("query_vectors").or_else(|| call.msg.get("vectors")) {
        Some(protocol::Value::Array(a)) => a.len() as u64,
        _ => 0,
    };
    (nq, call.msg.uint("k").ok().flatten().unwrap_or(0))
}

/// Per-index mutation queues: the first job for an idle index starts a thread that drains
/// that index's queue and exits when it is empty. Mutations of one index apply in arrival
/// order; different indices never wait for each other.
struct Lanes {
    queues: Mutex<HashMap<(String, String), VecDeque<Job>>>,
    svc: Arc<Service>,
    replier: Arc<Replier>,
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
            eprintln!("faissx: cannot start a thread: {e}");
        }
    }

    fn drain(&self, key: (String, String)) {
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
                let r = self.svc.write(&call);
                self.replier.send(job.env, &call.action, job.started, &job.peer, nq_k(&call), r);
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
        let Job { env, payload, started, peer } = job;
        let call = match payload {
            Payload::Call(c) => Ok(c),
            Payload::Raw(b) => Msg::decode(&b).and_then(|m| self.svc.prepare(m)),
        };
        let call = match call {
            Ok(c) => c,
            Err(e) => return self.replier.send(env, "invalid", started, &peer, (0, 0), Err(e)),
        };
        match Service::class(&call) {
            Class::Inline => {
                let r = self.svc.inline(&call);
                self.replier.send(env, &call.action, started, &peer, nq_k(&call), r)
            }
            Class::Write(key) => {
                let key = (call.tenant.clone(), key);
                self.lanes.submit(key, Job { env, payload: Payload::Call(call), started, peer });
            }
            Class::Read => match self.svc.read(&call, false) {
                Ok(Some(m)) => self.replier.send(env, &call.action, started, &peer, nq_k(&call), Ok(m)),
                Ok(None) => {
                    // The index is being mutated: wait for it on a thread of its own.
                    let (svc, replier) = (self.svc.clone(), self.replier.clone());
                    std::thread::spawn(move || {
                        crate::engine::index::set_threads(1);
                        let r = svc.read(&call, true).map(|m| m.unwrap_or_default());
                        replier.send(env, &call.action, started, &peer, nq_k(&call), r);
                    });
                }
                Err(e) => self.replier.send(env, &call.action, started, &peer, nq_k(&call), Err(e)),
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

/// Run the server until `stop` is set: bind, call `on_ready` with the bound endpoint, serve,
/// then finish in-flight requests, checkpoint (with `--data-dir`) and return.
pub fn serve(cfg: &ServerConfig, on_ready: &mut dyn FnMut(&str) -> Result<()>, stop: &AtomicBool) -> Result<()> {
    let svc = Arc::new(Service::open(cfg)?);
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).map_err(|e| zerr("creating socket", e))?;
    router.set_linger(0).map_err(|e| zerr("socket option", e))?;
    // Hard guard against memory exhaustion; requests between the limit and this guard get a
    // TOO_LARGE reply, larger ones are dropped by ZeroMQ with the connection.
    let guard = cfg.max_request_bytes.saturating_mul(2).saturating_add(1 << 20).min(i64::MAX as usize) as i64;
    router.set_maxmsgsize(guard).map_err(|e| zerr("socket option", e))?;
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
    let replier = Arc::new(Replier { sock: Mutex::new(push), svc: svc.clone(), verbose: cfg.verbose });

    let mut threads = Vec::new();
    let lanes = Arc::new(Lanes { queues: Mutex::new(HashMap::new()), svc: svc.clone(), replier: replier.clone() });
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
    on_ready(&endpoint)?;
    // Inline searches on this thread must not start OpenMP teams.
    crate::engine::index::set_threads(1);

    let mut inflight = 0usize;
    let mut stopping = false;
    loop {
        let mut items = [router.as_poll_item(zmq::POLLIN), pull.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, 100) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(zerr("poll", e)),
        }
        let (req_ready, rep_ready) = (items[0].is_readable(), items[1].is_readable());
        if rep_ready {
            while let Ok(frames) = pull.recv_multipart(zmq::DONTWAIT) {
                inflight = inflight.saturating_sub(1);
                let _ = router.send_multipart(frames, zmq::DONTWAIT);
            }
        }
        if stop.load(Ordering::Relaxed) {
            stopping = true;
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
            let (env, payload, peer) = match recv_request(&router, cfg.verbose) {
                Some(r) => r,
                None => break,
            };
            let started = Instant::now();
            let reply = |r: Result<Msg>, action: &str, call: Option<&Call>| {
                let bytes = finish(&svc, cfg.verbose, action, started, &peer, call.map(nq_k).unwrap_or((0, 0)), r);
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
            let job_payload = if payload.len() <= INLINE_DECODE_BYTES {
                match Msg::decode(&payload).and_then(|m| svc.prepare(m)) {
                    Err(e) => {
                        reply(Err(e), "invalid", None);
                        continue;
                    }
                    Ok(call) if Service::class(&call) == Class::Inline => {
                        reply(svc.inline(&call), &call.action, Some(&call));
                        continue;
                    }
                    Ok(call) if svc.is_cheap_search(&call) => match svc.read(&call, false) {
                        // Two thread hops cost more than a small search.
                        Ok(Some(m)) => {
                            reply(Ok(m), &call.action, Some(&call));
                            continue;
                        }
                        Ok(None) => Payload::Call(call),
                        Err(e) => {
                            reply(Err(e), &call.action, Some(&call));
                            continue;
                        }
                    },
                    Ok(call) => Payload::Call(call),
                }
            } else {
                Payload::Raw(payload)
            };
            inflight += 1;
            let _ = job_tx.send(Job { env, payload: job_payload, started, peer });
        }
    }
    drop(job_tx);
    drop(pools);
    for t in threads {
        let _ = t.join();
    }
    svc.checkpoint_all();
    Ok(())
}

/// One request from the ROUTER: (envelope frames, payload, peer address).
fn recv_request(router: &zmq::Socket, want_peer: bool) -> Option<(Vec<Vec<u8>>, zmq::Message, String)> {
    let mut env = Vec::new();
    let mut peer = String::new();
    loop {
        let flags = if env.is_empty() { zmq::DONTWAIT } else { 0 };
        let mut msg = router.recv_msg(flags).ok()?;
        if msg.get_more() {
            env.push(msg.to_vec());
            continue;
        }
        if want_peer {
            peer = msg.gets("Peer-Address").unwrap_or("?").to_string();
        }
        // A ROUTER always prepends the sender's identity; a lone frame is not a request.
        return if env.is_empty() { None } else { Some((env, msg, peer)) };
    }
}
