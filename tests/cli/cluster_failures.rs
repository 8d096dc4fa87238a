//! Issue 15, failures of `faissx serve --cluster`: `kill -9` of replicas during bursts of
//! adds, losing a node of a 3-node NATS cluster, a frozen (SIGSTOPped) NATS server. What is
//! checked every time: no acknowledged write is lost, and every replica ends in the same
//! state (writes that were not acknowledged may or may not be applied, but alike everywhere).

use crate::cluster::*;
use crate::serve::s;
use crate::util::*;
use faissx::engine::client::Client;
use faissx::engine::protocol::{self, Msg, Value};
use faissx::engine::ErrorKind;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The stored vector of id `i` (ids start at 1): row `i - 1` of `lcg_vectors(_, D, seed)`.
fn row(base: &[f32], i: i64) -> &[f32] {
    let r = (i - 1) as usize;
    &base[r * D..(r + 1) * D]
}

/// `add_vectors` of the rows of `ids` (explicit ids) to `index`.
fn add_ids(c: &mut Client, index: &str, base: &[f32], ids: &[i64]) -> faissx::engine::Result<Msg> {
    let x: Vec<f32> = ids.iter().flat_map(|&i| row(base, i).iter().copied()).collect();
    c.call(
        "add_vectors",
        vec![("index_id", s(index)), ("vectors", bin(&x)), ("ids", Value::Binary(protocol::i64_bytes(ids)))],
    )
}

/// `create_index` of an `IDMap2:Flat` index of dimension [`D`]; its `seq`.
fn create_idmap(c: &mut Client, index: &str) -> u64 {
    let r = c
        .call(
            "create_index",
            vec![("index_id", s(index)), ("dimension", Value::from(D as u64)), ("index_type", s("IDMap2:Flat"))],
        )
        .unwrap_or_else(|e| panic!("create_index {index}: {e}"));
    seq_of(&r)
}

/// Which of `ids` the replica behind `c` holds, each with its stored vector (reconstruct
/// by id, pipelined); a missing id is `None`.
fn stored(c: &mut Client, index: &str, ids: &[i64]) -> BTreeMap<i64, Option<Value>> {
    let cfg = c.config().clone();
    let reqs: Vec<Vec<u8>> =
        ids.iter().map(|&i| cfg.request("reconstruct", vec![("index_id", s(index)), ("id", Value::from(i))])).collect();
    let mut out = BTreeMap::new();
    c.pipeline(reqs, 64, |k, r, _| {
        let v = match r {
            Ok(mut m) => Some(m.take("vector").unwrap_or(Value::Nil)),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => panic!("reconstruct {} of {index}: {e}", ids[k]),
        };
        out.insert(ids[k], v);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("reconstruct on {}: {e}", c.server()));
    out
}

/// Check every replica of `clients` after the log's last sequence `last`: each holds every
/// id of `acked` with its vector, all hold the same ids of `attempted` (no duplicates:
/// `ntotal` is their count), and their searches and metadata agree. Returns the common
/// `ntotal` and each replica's `failed_records`.
fn check_replicas(
    clients: &mut [&mut Client],
    index: &str,
    base: &[f32],
    acked: &[i64],
    attempted: &[i64],
    last: u64,
) -> (u64, Vec<u64>) {
    let q = lcg_vectors(6, D, 99);
    let mut first: Option<(BTreeMap<i64, Option<Value>>, String)> = None;
    let mut ntotal = 0;
    let mut failed = Vec::new();
    for c in clients.iter_mut() {
        wait_applied(c, last);
        let held = stored(c, index, attempted);
        for &i in acked {
            match &held[&i] {
                Some(v) => assert_eq!(
                    *v,
                    protocol::vector_value(row(base, i)),
                    "{}: acknowledged id {i} holds another vector",
                    c.server()
                ),
                None => panic!(
                    "{}: acknowledged id {i} is lost ({} of {} acknowledged ids held)",
                    c.server(),
                    acked.iter().filter(|i| held[i].is_some()).count(),
                    acked.len()
                ),
            }
        }
        let st = c.get_index_status(index).unwrap();
        let present = held.values().filter(|v| v.is_some()).count() as u64;
        assert_eq!(st.ntotal, present, "{}: ntotal counts vectors beyond the ids written once", c.server());
        let h = cluster_health(c);
        failed.push(h.uint("failed_records").unwrap().unwrap_or_else(|| panic!("no failed_records: {h:?}")));
        let state = state_of(c, index, &q, last);
        match &first {
            None => {
                ntotal = st.ntotal;
                first = Some((held, state));
            }
            Some((h0, s0)) => {
                let differ: Vec<i64> =
                    attempted.iter().copied().filter(|i| h0[i].is_some() != held[i].is_some()).collect();
                assert!(differ.is_empty(), "{}: replicas hold different ids: {differ:?}", c.server());
                assert_eq!(&state, s0, "{}: replicas diverged", c.server());
            }
        }
    }
    (ntotal, failed)
}

const BURSTS: usize = 20;
/// Slots per burst, alternating between the replicas; each slot is [`REQS`] adds of
/// [`PER_REQ`] vectors, pipelined (all in flight at once).
const SLOTS: usize = 5;
const REQS: usize = 16;
const PER_REQ: usize = 5;
/// (burst in which a replica is killed, replica 0 = a / 1 = b).
const KILLS: [(usize, usize); 3] = [(4, 1), (10, 0), (15, 1)];

/// What the writer of the kill test and the test's main thread share.
struct Shared {
    /// The replicas' current endpoints (a restarted replica serves on a new port) and pids.
    replicas: Mutex<[(String, u32); 2]>,
    /// Kills done (by the writer).
    killed: AtomicUsize,
    /// Restarts finished (by the main thread).
    restarted: AtomicUsize,
    /// The writer is done (or panicked).
    done: AtomicBool,
}

/// What the writer saw.
#[derive(Default)]
struct Written {
    acked: Vec<i64>,
    attempted: Vec<i64>,
    acks_per_burst: Vec<usize>,
    /// (burst, replica, requests of the slot without a reply, the error).
    failures: Vec<(usize, usize, usize, ErrorKind)>,
    /// For each kill: how many of the victim's slot's requests got no reply.
    in_flight: Vec<usize>,
    max_seq: u64,
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(90), "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 20 bursts of 5 slots of 16 pipelined adds of 5 vectors with unique ids, the slots
/// alternating between the replicas. In a burst of [`KILLS`], the first slot sent to the
/// victim `kill -9`s it as soon as the slot's first reply arrives, so that the slot's other
/// adds are (usually) in flight in the victim: received, published, stored or applied, but
/// not answered. A slot that fails (no reply within 3 s) drops its client, and the next slot
/// to that replica goes to its current endpoint. Two bursts after each kill, the writer
/// waits for that restart.
fn writer(sh: &Shared, base: &[f32]) -> Written {
    let mut w = Written::default();
    let mut clients: [Option<Client>; 2] = [None, None];
    for burst in 0..BURSTS {
        if let Some(k) = KILLS.iter().position(|&(b, _)| b + 2 == burst) {
            wait_until("the restart after a kill", || sh.restarted.load(Ordering::SeqCst) > k);
        }
        let mut victim = KILLS.iter().find(|&&(b, _)| b == burst).map(|&(_, side)| side);
        // The endpoints as of the burst's start: after a kill, the victim's next slot in the
        // burst goes to its dead endpoint (and fails) unless a failure made the writer look
        // again.
        let mut eps = sh.replicas.lock().unwrap().clone();
        let mut acks = 0;
        for slot in 0..SLOTS {
            let side = (burst + slot) % 2;
            let (ep, pid) = eps[side].clone();
            if clients[side].as_ref().is_some_and(|c| c.server() != ep) {
                clients[side] = None;
            }
            let c = clients[side].get_or_insert_with(|| client_of(&ep, Duration::from_secs(3)));
            let cfg = c.config().clone();
            let batches: Vec<Vec<i64>> = (0..REQS)
                .map(|r| {
                    let first = (((burst * SLOTS + slot) * REQS + r) * PER_REQ) as i64 + 1;
                    (first..first + PER_REQ as i64).collect()
                })
                .collect();
            let reqs: Vec<Vec<u8>> = batches
                .iter()
                .map(|ids| {
                    w.attempted.extend(ids);
                    let x: Vec<f32> = ids.iter().flat_map(|&i| row(base, i).iter().copied()).collect();
                    cfg.request(
                        "add_vectors",
                        vec![
                            ("index_id", s("x")),
                            ("vectors", bin(&x)),
                            ("ids", Value::Binary(protocol::i64_bytes(ids))),
                        ],
                    )
                })
                .collect();
            let kill = victim == Some(side);
            let mut replied = 0;
            let r = c.pipeline(reqs, REQS, |i, reply, _| {
                let reply = reply.unwrap_or_else(|e| panic!("burst {burst}: add to replica {side}: {e}"));
                assert_eq!(reply.uint("count").unwrap(), Some(PER_REQ as u64), "{reply:?}");
                w.max_seq = w.max_seq.max(seq_of(&reply));
                w.acked.extend(&batches[i]);
                acks += 1;
                replied += 1;
                if kill && replied == 1 {
                    // SAFETY: kill(2) of the replica's own process.
                    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill -9 {pid}");
                    sh.killed.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            });
            if kill {
                victim = None;
                w.in_flight.push(REQS - replied);
            }
            if let Err(e) = r {
                // A dead replica: no reply (Timeout) or a socket error. Anything else
                // (UNAVAILABLE, NOT_FOUND …) is a replica misbehaving: the callback panics.
                assert!(
                    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Io),
                    "burst {burst}: adds to replica {side} failed unexpectedly: {e}"
                );
                w.failures.push((burst, side, REQS - replied, e.kind()));
                clients[side] = None;
                eps[side] = sh.replicas.lock().unwrap()[side].clone();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        w.acks_per_burst.push(acks);
    }
    w
}

#[test]
fn kill9_of_a_replica_during_20_bursts_loses_no_acknowledged_vector() {
    let env = TestEnv::new("cluster-kill9");
    let n = nats(&env);
    let snap = format!("file://{}", env.path("snap").display());
    // Snapshots every 30 records: restarted replicas restore one and replay the rest.
    let opts = ["--snapshot-every", "30"];
    let mut reps = [
        Some(Replica::start(&env, &n.url(), &snap, "a", &opts, &[])),
        Some(Replica::start(&env, &n.url(), &snap, "b", &opts, &[])),
    ];
    let base = lcg_vectors(BURSTS * SLOTS * REQS * PER_REQ, D, 7);
    {
        let mut ca = reps[0].as_ref().unwrap().client();
        let seq = create_idmap(&mut ca, "x");
        wait_applied(&mut reps[1].as_ref().unwrap().client(), seq);
    }
    let now = |r: &Replica| (r.endpoint.clone(), r.pid());
    let sh = Arc::new(Shared {
        replicas: Mutex::new([now(reps[0].as_ref().unwrap()), now(reps[1].as_ref().unwrap())]),
        killed: AtomicUsize::new(0),
        restarted: AtomicUsize::new(0),
        done: AtomicBool::new(false),
    });
    let handle = {
        let (sh, base) = (sh.clone(), base.clone());
        std::thread::spawn(move || {
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _done = Done(&sh.done);
            writer(&sh, &base)
        })
    };
    // The writer kills; this thread restarts (same name and flags, new port) at once.
    for (k, (_, side)) in KILLS.into_iter().enumerate() {
        wait_until("the writer to kill a replica", || {
            sh.killed.load(Ordering::SeqCst) > k || sh.done.load(Ordering::SeqCst)
        });
        if sh.killed.load(Ordering::SeqCst) <= k {
            break; // The writer stopped: joined below.
        }
        let r = reps[side].take().unwrap().kill9_restart(&env);
        sh.replicas.lock().unwrap()[side] = now(&r);
        reps[side] = Some(r);
        sh.restarted.fetch_add(1, Ordering::SeqCst);
    }
    let w = match handle.join() {
        Ok(w) => w,
        Err(p) => std::panic::resume_unwind(p),
    };
    assert_eq!(sh.restarted.load(Ordering::SeqCst), KILLS.len(), "the writer finished before every kill");

    for (burst, acks) in w.acks_per_burst.iter().enumerate() {
        assert!(*acks > 0, "burst {burst}: no write acknowledged (failures: {:?})", w.failures);
    }
    // Each kill failed requests of its burst: the victim's in flight, or its next slot's.
    for (burst, side) in KILLS {
        assert!(
            w.failures.iter().any(|f| f.0 == burst && f.1 == side),
            "burst {burst}: the kill of replica {side} failed no request ({:?}; unanswered in the killed slots: {:?})",
            w.failures,
            w.in_flight
        );
    }
    let (_, last) = n.stream_seqs();
    assert!(last >= w.max_seq, "the log ends at {last}, before an acknowledged write's seq {}", w.max_seq);
    let (mut ca, mut cb) = (reps[0].as_ref().unwrap().client(), reps[1].as_ref().unwrap().client());
    let (ntotal, failed) = check_replicas(&mut [&mut ca, &mut cb], "x", &base, &w.acked, &w.attempted, last);
    assert!(ntotal >= w.acked.len() as u64, "ntotal {ntotal} < {} acknowledged", w.acked.len());
    // Every record stored applied (writes in flight in a killed replica included).
    assert_eq!(failed, [0, 0], "failed records");
}

/// Add `ids` through `c`, retrying (with new ids each time, from `next`) while the log is
/// briefly unavailable: a NATS node died and JetStream elects new leaders. Records what was
/// attempted and acknowledged; the acknowledged write's `seq`.
fn add_retrying(c: &mut Client, base: &[f32], next: &mut i64, acked: &mut Vec<i64>, attempted: &mut Vec<i64>) -> u64 {
    let t0 = Instant::now();
    let mut errors = Vec::new();
    loop {
        let ids: Vec<i64> = (*next..*next + 25).collect();
        *next += 25;
        attempted.extend(&ids);
        match add_ids(c, "x", base, &ids) {
            Ok(r) => {
                acked.extend(&ids);
                return seq_of(&r);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) => errors.push(e.to_string()),
            Err(e) => panic!("add to {}: {e}", c.server()),
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "writes did not resume within 60 s: {errors:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_node_nats_cluster_loses_a_node_and_loses_nothing() {
    let env = TestEnv::new("cluster-3nats");
    let mut nodes = nats_cluster(&env);
    let urls = nodes.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
    let snap = format!("file://{}", env.path("snap").display());
    let opts = ["--cluster-replicas", "3", "--snapshot-every", "8"];
    let a = Replica::start(&env, &urls, &snap, "a", &opts, &[]);
    let b = Replica::start(&env, &urls, &snap, "b", &opts, &[]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let base = lcg_vectors(4000, D, 11);
    let seq = create_idmap(&mut ca, "x");
    wait_applied(&mut cb, seq);
    let (mut next, mut acked, mut attempted) = (1i64, Vec::new(), Vec::new());
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        add_retrying(c, &base, &mut next, &mut acked, &mut attempted);
    }
    // The log is replicated on all three nodes.
    for n in &nodes {
        let v = n.jsz().expect("monitoring endpoint");
        let streams = v["account_details"][0]["stream_detail"].as_array().cloned().unwrap_or_default();
        let st = streams.iter().find(|s| s["name"] == "FAISSX").unwrap_or_else(|| panic!("{}: no FAISSX", n.name()));
        assert_eq!(st["config"]["num_replicas"].as_u64(), Some(3), "{}: {st}", n.name());
    }

    // Kill the node leading the log's stream: JetStream elects another leader.
    let leader = nodes[0].stream_leader().expect("the log's stream has a leader");
    let dead = nodes.iter().position(|n| n.name() == leader).unwrap_or_else(|| panic!("no node named {leader}"));
    nodes[dead].kill();
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut cb } else { &mut ca };
        add_retrying(c, &base, &mut next, &mut acked, &mut attempted);
    }
    let alive = (dead + 1) % 3;
    let new_leader = nodes[alive].stream_leader().expect("a new leader");
    assert_ne!(new_leader, leader, "the dead node still leads");

    let (_, last) = nodes[alive].stream_seqs();
    let (ntotal, failed) = check_replicas(&mut [&mut ca, &mut cb], "x", &base, &acked, &attempted, last);
    assert!(ntotal >= acked.len() as u64);
    assert_eq!(failed[0], failed[1], "the replicas failed different records");

    // A replica started from nothing while the node is still down restores the newest
    // snapshot and replays the log from the two nodes left.
    let c3 = Replica::start(&env, &urls, &snap, "c", &opts, &[]);
    let mut cc = c3.client();
    let h = cluster_health(&mut cc);
    assert!(h.uint("snapshot_seq").unwrap().is_some_and(|s| s >= 8), "no snapshot restored: {h:?}");
    let seq = add_retrying(&mut cc, &base, &mut next, &mut acked, &mut attempted);
    let (_, last) = nodes[alive].stream_seqs();
    assert!(last >= seq);
    check_replicas(&mut [&mut ca, &mut cb, &mut cc], "x", &base, &acked, &attempted, last);
}

#[test]
fn frozen_nats_writes_get_unavailable_reads_answer_and_writes_resume() {
    let env = TestEnv::new("cluster-frozen");
    let (n, a, b) = nats_and_two(&env, &[]);
    // Clients that wait longer than the replicas' log timeout: an answer, not a hang.
    let (mut ca, mut cb) =
        (client_of(&a.endpoint, Duration::from_secs(15)), client_of(&b.endpoint, Duration::from_secs(15)));
    let base = lcg_vectors(4000, D, 5);
    let seq = create_idmap(&mut ca, "x");
    wait_applied(&mut cb, seq);
    let (mut acked, mut attempted): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    let ids: Vec<i64> = (1..=100).collect();
    let r = add_ids(&mut ca, "x", &base, &ids).unwrap();
    acked.extend(&ids);
    attempted.extend(&ids);
    let q = &base[..4 * D];
    let before = state_of(&mut cb, "x", q, seq_of(&r));

    n.freeze();
    // The frozen server keeps its TCP connections: the publish is sent, its acknowledgement
    // never comes, and the write is refused once the replica's log timeout passes.
    for (c, first) in [(&mut ca, 101i64), (&mut cb, 121)] {
        let ids: Vec<i64> = (first..first + 20).collect();
        attempted.extend(&ids);
        let e = add_ids(c, "x", &base, &ids).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{}: {e}", c.server());
        // Reads answer from local state meanwhile.
        assert_eq!(state_of(c, "x", q, 0), before, "{}", c.server());
    }
    let h = cluster_health(&mut ca);
    assert_eq!(h.get("log_reachable"), Some(&Value::Boolean(false)), "{h:?}");
    n.thaw();

    let mut next = 1000;
    let t0 = Instant::now();
    let seq = loop {
        let ids: Vec<i64> = (next..next + 10).collect();
        next += 10;
        attempted.extend(&ids);
        match add_ids(&mut cb, "x", &base, &ids) {
            Ok(r) => {
                acked.extend(&ids);
                break seq_of(&r);
            }
            Err(e) if e.kind() == ErrorKind::Unavailable && t0.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("writes did not resume after SIGCONT: {e}"),
        }
    };
    let (_, last) = n.stream_seqs();
    assert!(last >= seq);
    let (ntotal, failed) = check_replicas(&mut [&mut ca, &mut cb], "x", &base, &acked, &attempted, last);
    // Refused writes were not applied, even though the thawed server may have stored them
    // (late records are refused by every replica alike).
    assert_eq!(ntotal, acked.len() as u64, "a write answered UNAVAILABLE was applied");
    assert_eq!(failed[0], failed[1], "the replicas failed different records");
}
