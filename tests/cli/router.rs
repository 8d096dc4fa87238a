//! Issue 16: `faissx serve --router` over shards, each a set of `serve --cluster --shard`
//! replicas on its own log (real NATS on loopback): results equal one server holding every
//! vector; replicas killed or frozen cost no failed search; a shard down is
//! `SHARD_UNAVAILABLE` or a partial answer; ids from the router work for reconstruct, remove
//! and metadata; the official Python client works through a router.

use crate::cluster::{client_of, nats, NatsNode, Replica, D};
use crate::serve::{s, Server};
use crate::util::*;
use faissx::engine::client::Client;
use faissx::engine::protocol::{self, Encoding, Msg, Value};
use faissx::engine::ErrorKind;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running router, killed on drop.
pub struct RouterProc {
    child: Child,
    pub endpoint: String,
}

impl RouterProc {
    pub fn start(env: &TestEnv, extra: &[&str]) -> RouterProc {
        let mut cmd = env.cmd();
        cmd.args(["serve", "--router", "--bind-address", "127.0.0.1", "--port", "0", "-q"]).args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let endpoint = line.trim().to_string();
        assert!(endpoint.starts_with("tcp://127.0.0.1:"), "router did not start: {line:?}");
        RouterProc { child, endpoint }
    }

    pub fn client(&self) -> Client {
        client_of(&self.endpoint, Duration::from_secs(20))
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// NATS, shards s0 (replicas a, b) and s1 (c, d), and `routers` routers that learn them from
/// the cluster; returns once every router sees 2 shards × 2 replicas.
pub struct Topology {
    pub nats: NatsNode,
    pub replicas: Vec<Option<Replica>>,
    pub routers: Vec<RouterProc>,
}

pub fn topology(env: &TestEnv, routers: usize, timeout: &str) -> Topology {
    let n = nats(env);
    let snap = format!("file://{}", env.path("snap").display());
    let replicas: Vec<Option<Replica>> = [("a", "s0"), ("b", "s0"), ("c", "s1"), ("d", "s1")]
        .iter()
        .map(|(name, shard)| Some(Replica::start(env, &n.url(), &snap, name, &["--shard", shard], &[])))
        .collect();
    let url = n.url();
    let routers: Vec<RouterProc> =
        (0..routers).map(|_| RouterProc::start(env, &["--cluster", &url, "--shard-timeout", timeout])).collect();
    for r in &routers {
        let mut c = r.client();
        let t0 = Instant::now();
        loop {
            let h = c.health().unwrap();
            let shards = match h.get("shards") {
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            let counts: Vec<usize> = shards
                .iter()
                .map(|v| match Msg::from_value(v.clone()).unwrap().get("replicas") {
                    Some(Value::Array(a)) => a.len(),
                    _ => 0,
                })
                .collect();
            if counts == vec![2, 2] {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "router never saw 2 shards of 2 replicas: {h:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Topology { nats: n, replicas, routers }
}

fn bin(x: &[f32]) -> Value {
    protocol::vectors_value(x, D, Encoding::Binary)
}

/// Top-k of `q` (ids, distance bits) in both encodings (binary payload, and the FAISSx
/// client's nested arrays).
fn top(c: &mut Client, id: &str, q: &[f32], k: u64) -> (String, String) {
    let (nb, _) = c.search(id, q, D, &knn(k as usize), false).unwrap();
    let bits: Vec<u32> = nb.dists.iter().map(|d| d.to_bits()).collect();
    // A string-id index's binary labels are FAISS's internal ids (the strings ride in
    // string_labels, compared through the nested reply below).
    let ids = if id == "keys" { Vec::new() } else { nb.ids.clone() };
    let nested = c
        .call(
            "search",
            vec![
                ("index_id", s(id)),
                ("query_vectors", protocol::vectors_value(q, D, Encoding::Nested)),
                ("k", Value::from(k)),
            ],
        )
        .unwrap();
    let results = match nested.get("results") {
        Some(Value::Array(a)) => a.clone(),
        _ => panic!("no results: {nested:?}"),
    };
    let rows: Vec<String> = results
        .iter()
        .map(|r| {
            let m = Msg::from_value(r.clone()).unwrap();
            format!("{:?}", m.get("indices").unwrap())
        })
        .collect();
    (format!("{ids:?} {bits:?}"), rows.join(";"))
}

#[test]
fn two_shards_behind_two_routers_answer_like_one_server() {
    let env = TestEnv::new("router-equal");
    let t = topology(&env, 2, "2");
    let single = Server::start(&env, &[]);
    let mut one = single.client(None, None);
    let mut ra = t.routers[0].client();
    let mut rb = t.routers[1].client();
    let base = lcg_vectors(600, D, 1);
    let q = lcg_vectors(7, D, 2);
    // Explicit integer ids (IDMap2), string ids with metadata, and position ids (plain L2).
    for c in [&mut ra, &mut one] {
        c.create_index("ids", D, "IDMap2:Flat", None).unwrap();
        c.create_index("keys", D, "L2", None).unwrap();
        c.create_index("pos", D, "L2", None).unwrap();
    }
    let ids: Vec<i64> = (0..600).map(|i| 10_000 + 13 * i).collect();
    let keys: Vec<String> = (0..600).map(|i| format!("doc-{i}")).collect();
    let md: Vec<Value> = (0..600).map(|i| Value::from(format!("m{i}"))).collect();
    for c in [&mut ra, &mut one] {
        for chunk in 0..3 {
            let r = chunk * 200..(chunk + 1) * 200;
            c.add_vectors("ids", &base[r.start * D..r.end * D], D, Some(&ids[r.clone()]), None).unwrap();
            c.add_vectors_keyed(
                "keys",
                &base[r.start * D..r.end * D],
                D,
                &keys[r.clone()],
                Some(md[r.clone()].to_vec()),
            )
            .unwrap();
            c.add_vectors("pos", &base[r.start * D..r.end * D], D, None, None).unwrap();
        }
    }
    for id in ["ids", "keys", "pos"] {
        let want = top(&mut one, id, &q, 10);
        assert_eq!(top(&mut ra, id, &q, 10), want, "{id} through router A");
        assert_eq!(top(&mut rb, id, &q, 10), want, "{id} through router B");
        assert_eq!(rb.get_index_status(id).unwrap().ntotal, 600);
    }
    // The shards hold disjoint halves.
    let mut halves = Vec::new();
    for r in t.replicas.iter().flatten().step_by(2) {
        halves.push(client_of(&r.endpoint, Duration::from_secs(10)).get_index_status("ids").unwrap().ntotal);
    }
    assert_eq!(halves.iter().sum::<u64>(), 600, "{halves:?}");
    assert!(halves.iter().all(|&h| h > 200), "{halves:?}");

    // Ids from the router work by id: reconstruct, metadata, remove.
    for &i in &[ids[5], ids[321]] {
        assert_eq!(
            format!("{:?}", rb.reconstruct("ids", i).unwrap()),
            format!("{:?}", one.reconstruct("ids", i).unwrap())
        );
    }
    let (nb, _) = rb.search("pos", &q[..D], D, &knn(3), false).unwrap();
    for &g in &nb.ids {
        assert_eq!(
            format!("{:?}", rb.reconstruct("pos", g).unwrap()),
            format!("{:?}", one.reconstruct("pos", g).unwrap())
        );
    }
    let want = one.get_metadata_keyed("keys", &keys[..4]).unwrap();
    assert_eq!(ra.get_metadata_keyed("keys", &keys[..4]).unwrap().get("metadata"), want.get("metadata"));
    let gone: Vec<i64> = nb.ids.iter().map(|&g| ids[g as usize]).collect();
    for c in [&mut rb, &mut one] {
        let r = c.remove_ids("ids", &gone).unwrap();
        assert_eq!(r.uint("removed").unwrap(), Some(3));
    }
    assert_eq!(top(&mut ra, "ids", &q, 10), top(&mut one, "ids", &q, 10), "after remove");
    // A range search finds the same hits (as sets: shards answer in their own order).
    let range = |c: &mut Client| {
        let h = c.range_search("ids", &q[..2 * D], D, 2.0).unwrap();
        let mut v: Vec<i64> = h.ids.clone();
        v.sort();
        v
    };
    assert_eq!(range(&mut ra), range(&mut one));
    // Deleting through one router deletes on every shard.
    ra.delete_index("keys").unwrap();
    assert_eq!(rb.get_index_status("keys").unwrap_err().kind(), ErrorKind::NotFound);
}

/// Searches through `router` on a thread until told to stop; returns (done, failed).
fn search_loop(
    endpoint: String,
    q: Vec<f32>,
    want: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut c = client_of(&endpoint, Duration::from_secs(20));
        let (mut done, mut failed) = (0, Vec::new());
        while done < want && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match c.search("x", &q, D, &knn(5), false) {
                Ok((nb, _)) if nb.ids.iter().all(|&i| i >= 0) => {}
                Ok((nb, _)) => failed.push(format!("short result {:?}", nb.ids)),
                Err(e) => {
                    failed.push(e.to_string());
                    c = client_of(&endpoint, Duration::from_secs(20));
                }
            }
            done += 1;
        }
        (done, failed)
    })
}

#[test]
fn kill9_of_one_replica_per_shard_during_2000_searches_fails_none_and_a_frozen_one_costs_one_timeout() {
    let env = TestEnv::new("router-kill");
    let mut t = topology(&env, 1, "1");
    let mut c = t.routers[0].client();
    let base = lcg_vectors(2000, D, 3);
    c.create_index("x", D, "L2", None).unwrap();
    c.add_vectors("x", &base, D, None, None).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = search_loop(t.routers[0].endpoint.clone(), base[..D].to_vec(), 2000, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // One replica of each shard dies mid-stream.
    for i in [1, 3] {
        let r = t.replicas[i].take().unwrap();
        drop(r);
    }
    let (done, failed) = h.join().unwrap();
    assert_eq!(done, 2000);
    assert!(failed.is_empty(), "{} failed searches: {:?}", failed.len(), &failed[..failed.len().min(3)]);

    // A frozen replica (SIGSTOP): the first search that reaches it waits one --shard-timeout,
    // then its shard's other replica answers; the frozen one is skipped from then on.
    let a_pid = t.replicas[0].as_ref().unwrap().pid().to_string();
    // Bring shard s0 back to two replicas first (b was killed): a fresh b.
    let snap = format!("file://{}", env.path("snap").display());
    t.replicas[1] = Some(Replica::start(&env, &t.nats.url(), &snap, "b2", &["--shard", "s0"], &[]));
    let t0 = Instant::now();
    loop {
        let h = c.health().unwrap();
        if format!("{h:?}").contains(&t.replicas[1].as_ref().unwrap().endpoint) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "router never saw the new replica");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::process::Command::new("kill").args(["-STOP", &a_pid]).status().unwrap();
    let errors_of = |c: &mut Client, endpoint: &str| -> u64 {
        let h = c.health().unwrap();
        let Some(Value::Array(shards)) = h.get("shards") else { panic!("{h:?}") };
        for sh in shards {
            let m = Msg::from_value(sh.clone()).unwrap();
            let Some(Value::Array(reps)) = m.get("replicas") else { continue };
            for r in reps {
                let r = Msg::from_value(r.clone()).unwrap();
                if r.str("endpoint").unwrap() == Some(endpoint) {
                    return r.uint("errors").unwrap().unwrap();
                }
            }
        }
        panic!("{endpoint} not in {h:?}")
    };
    let a_ep = t.replicas[0].as_ref().unwrap().endpoint.clone();
    let before = errors_of(&mut c, &a_ep);
    for _ in 0..40 {
        let (nb, _) = c.search("x", &base[..D], D, &knn(5), false).unwrap();
        assert_eq!(nb.ids[0], 0);
    }
    let after = errors_of(&mut c, &a_ep);
    std::process::Command::new("kill").args(["-CONT", &a_pid]).status().unwrap();
    assert_eq!(after - before, 1, "a frozen replica must cost exactly one timeout over 40 searches");
}

#[test]
fn a_whole_shard_down_is_shard_unavailable_or_a_partial_answer() {
    let env = TestEnv::new("router-shard-down");
    let mut t = topology(&env, 1, "1");
    let mut c = t.routers[0].client();
    let base = lcg_vectors(400, D, 4);
    c.create_index("x", D, "IDMap2:Flat", None).unwrap();
    let ids: Vec<i64> = (0..400).collect();
    c.add_vectors("x", &base, D, Some(&ids), None).unwrap();
    let (full, _) = c.search("x", &base[..D], D, &knn(400), false).unwrap();
    // Both replicas of s1 go.
    t.replicas[2] = None;
    t.replicas[3] = None;
    let e = c.search("x", &base[..D], D, &knn(5), false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShardUnavailable, "{e}");
    assert!(e.to_string().contains("\"s1\""), "{e}");
    let r = c
        .call(
            "search",
            vec![
                ("index_id", s("x")),
                ("query_vectors", protocol::vectors_value(&base[..D], D, Encoding::Binary)),
                ("k", Value::from(400u64)),
                ("binary", Value::Boolean(true)),
                ("allow_partial", Value::Boolean(true)),
            ],
        )
        .unwrap();
    assert_eq!(r.get("partial"), Some(&Value::Boolean(true)), "{r:?}");
    assert_eq!(r.get("missing_shards"), Some(&Value::Array(vec![Value::from("s1")])), "{r:?}");
    let (nb, _) = faissx::engine::client::search_reply(r, 400).unwrap();
    let got: Vec<i64> = nb.ids.iter().copied().filter(|&i| i >= 0).collect();
    // Exactly s0's vectors, in the order the full answer had them.
    let s0: Vec<i64> =
        full.ids.iter().copied().filter(|&i| faissx::engine::router::merge::shard_of_int(i, 2) == 0).collect();
    assert_eq!(got, s0);
    assert!(!got.is_empty() && got.len() < 400);
    // Writes to the missing shard fail and name it; writes to s0 alone go through.
    let to_s1 = (1000..2000).find(|&i| faissx::engine::router::merge::shard_of_int(i, 2) == 1).unwrap();
    let e = c.add_vectors("x", &base[..D], D, Some(&[to_s1]), None).unwrap_err();
    assert!(e.to_string().contains("s1"), "{e}");
}

#[test]
fn official_python_client_works_through_a_router() {
    let env = TestEnv::new("router-python");
    let t = topology(&env, 1, "5");
    crate::serve_python::check_official_client(&t.routers[0].endpoint);
}

#[test]
fn router_flags_are_checked() {
    let env = TestEnv::new("router-flags");
    env.fails(&["serve", "--router", "--port", "0"], 2, "--router needs its shards");
    env.fails(&["serve", "--router", "--port", "0", "--shard", "s0"], 2, "NAME=URL");
    env.fails(&["serve", "--router", "--port", "0", "--shard", "s0=http://x:1"], 2, "not an endpoint");
    env.fails(&["serve", "--port", "0", "--shard", "s0"], 2, "--shard NAME needs --cluster");
    // A static router: shards given by hand.
    let a = Server::start(&env, &[]);
    let b = Server::start(&env, &[]);
    let r =
        RouterProc::start(&env, &["--shard", &format!("s0={}", a.endpoint), "--shard", &format!("s1={}", b.endpoint)]);
    let mut c = r.client();
    c.create_index("x", D, "L2", Some("ip")).unwrap();
    let e = c
        .call(
            "create_index",
            vec![("index_id", s("y")), ("dimension", Value::from(8u64)), ("shards", Value::from(3u64))],
        )
        .unwrap_err();
    assert!(e.to_string().contains("2 shard"), "{e}");
    let x = lcg_vectors(100, D, 9);
    let r = c.call("add_vectors", vec![("index_id", s("x")), ("vectors", bin(&x))]).unwrap();
    let Some(Value::Array(assigned)) = r.get("ids") else { panic!("{r:?}") };
    assert_eq!(assigned.len(), 100);
    assert_eq!(assigned[0].as_i64(), Some(0));
    assert_eq!(assigned[99].as_i64(), Some(99));
    // Inner product and cosine: the largest score first, and the same top-k as one server.
    let one = Server::start(&env, &[]);
    let mut oc = one.client(None, None);
    oc.create_index("x", D, "L2", Some("ip")).unwrap();
    oc.add_vectors("x", &x, D, None, None).unwrap();
    for (cl, metric) in [(&mut c, "cosine"), (&mut oc, "cosine")] {
        cl.create_index("cos", D, "L2", Some(metric)).unwrap();
        cl.add_vectors("cos", &x, D, None, None).unwrap();
    }
    for id in ["x", "cos"] {
        let (nb, _) = c.search(id, &x[D..2 * D], D, &knn(5), false).unwrap();
        assert!(nb.dists.windows(2).all(|w| w[0] >= w[1]), "{id}: {:?}", nb.dists);
        let (want, _) = oc.search(id, &x[D..2 * D], D, &knn(5), false).unwrap();
        assert_eq!(nb.ids, want.ids, "{id}");
    }
    // The router refuses what it would ignore, and routes nothing short of --shard-count.
    env.fails(
        &["serve", "--router", "--port", "0", "--shard", "s0=tcp://127.0.0.1:1", "--enable-auth", "--auth-keys", "k:t"],
        2,
        "forwards API keys",
    );
    let short = RouterProc::start(&env, &["--shard", &format!("s0={}", a.endpoint), "--shard-count", "2"]);
    let e = short.client().search("x", &x[..D], D, &knn(5), false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShardUnavailable, "{e}");
    assert!(e.to_string().contains("knows 1 shard"), "{e}");
}
