//! Operating `faissx serve` (issue 13): `/metrics` read by PyPI `prometheus-client`'s
//! Prometheus text parser (and its OpenMetrics parser) with the counters moving as requests
//! are made; `/livez` and `/readyz` around a restore held up on a real read (the index's
//! `CHECKPOINT` is a FIFO that the test writes when it chooses, so "still restoring" is a
//! state, not a race); logs at INFO, WARNING, ERROR and DEBUG, as text and as JSON, never
//! with a key; quotas that refuse with `QUOTA_EXCEEDED` and change nothing.

use crate::python_compat::python;
use crate::util::*;
use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::protocol::Value;
use faissx::engine::ErrorKind;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const D: usize = 8;

/// A `faissx serve` on free loopback ports whose stdout and stderr are read by threads;
/// killed on drop.
struct Ops {
    child: Child,
    endpoint: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl Ops {
    fn start(env: &TestEnv, args: &[&str]) -> Ops {
        let mut cmd = env.cmd();
        cmd.args(["serve", "--bind-address", "127.0.0.1", "--port", "0"]).args(args);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, endpoint) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line.trim().to_string());
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, err) = (log.clone(), child.stderr.take().unwrap());
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                l.lock().unwrap().push(line);
            }
        });
        Ops { child, endpoint, log, stderr: Some(stderr) }
    }

    /// The ZeroMQ endpoint (the first stdout line), once the server serves.
    fn endpoint(&self) -> String {
        let ep = self.endpoint.recv_timeout(Duration::from_secs(120)).expect("the server printed no endpoint");
        assert!(ep.starts_with("tcp://127.0.0.1:"), "first stdout line must be the endpoint, got {ep:?}");
        ep
    }

    /// The first log line containing `needle` (waiting up to 60 s for it).
    fn wait_log(&self, needle: &str) -> String {
        for _ in 0..3000 {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}: {:?}", self.log.lock().unwrap());
    }

    /// `HOST:PORT` of the HTTP listener (logged at INFO).
    fn http(&self) -> String {
        let line = self.wait_log("metrics and probes listening");
        let url = line.split_whitespace().find_map(|w| w.strip_prefix("url=http://")).expect("url in the line");
        url.trim_matches('"').to_string()
    }

    /// SIGTERM, wait for the exit, and return every log line.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "serve exited with {st:?} on SIGTERM");
        if let Some(t) = self.stderr.take() {
            t.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        log
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(endpoint: &str, key: Option<&str>, tenant: Option<&str>) -> Client {
    Client::connect(ClientConfig {
        server: endpoint.to_string(),
        api_key: key.map(str::to_string),
        tenant: tenant.map(str::to_string),
        timeout: Duration::from_secs(60),
        server_public_key: None,
    })
    .unwrap()
}

/// `GET path` (with `Accept: accept`): status and body.
fn http_get(addr: &str, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {raw:?}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, body.to_string())
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// `text` parsed by prometheus-client's Prometheus text parser (or, with `openmetrics`, its
/// OpenMetrics parser, which also insists on `# EOF` and the counter naming rules).
fn parse_metrics(text: &str, openmetrics: bool) -> Vec<Sample> {
    let module = if openmetrics { "prometheus_client.openmetrics.parser" } else { "prometheus_client.parser" };
    let script = format!(
        "import json, sys\nfrom {module} import text_string_to_metric_families as parse\n\
         for fam in parse(sys.stdin.read()):\n    for s in fam.samples:\n        print(json.dumps([s.name, s.labels, s.value]))\n"
    );
    let mut child = std::process::Command::new(python())
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused /metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<(String, BTreeMap<String, String>, f64)>(l).unwrap())
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
}

fn scrape(http: &str) -> Vec<Sample> {
    let (status, body) = http_get(http, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body, false)
}

#[test]
fn metrics_count_requests_and_describe_indices() {
    let env = TestEnv::new("ops-metrics");
    let srv = Ops::start(
        &env,
        &[
            "--data-dir",
            "data",
            "--enable-auth",
            "--auth-keys",
            "ops-key-1:acme",
            "--http-port",
            "0",
            "--log-level",
            "INFO",
        ],
    );
    let http = srv.http();
    let ep = srv.endpoint();
    assert_eq!(http_get(&http, "/livez", None).0, 200);
    assert_eq!(http_get(&http, "/readyz", None).0, 200);
    assert_eq!(http_get(&http, "/nope", None).0, 404);
    let m0 = scrape(&http);
    assert_eq!(value(&m0, "faissx_ready", &[]), Some(1.0));
    let search = [("action", "search"), ("tenant", "acme")];
    assert_eq!(value(&m0, "faissx_requests_total", &search), None);

    let mut c = client(&ep, Some("ops-key-1"), None);
    c.create_index("docs", D, "Flat", None).unwrap();
    c.add_vectors("docs", &lcg_vectors(100, D, 1)[..], D, None, None).unwrap();
    let q = lcg_vectors(2, D, 2);
    for _ in 0..3 {
        c.search("docs", &q[..], D, &knn(5), false).unwrap();
    }
    assert_eq!(c.search("nope", &q[..], D, &knn(5), false).unwrap_err().kind(), ErrorKind::NotFound);
    let mut bad = client(&ep, Some("not-a-key"), None);
    assert_eq!(bad.list_indices().unwrap_err().kind(), ErrorKind::Auth);

    let m1 = scrape(&http);
    assert_eq!(value(&m1, "faissx_requests_total", &search), Some(4.0));
    let not_found = [("action", "search"), ("tenant", "acme"), ("code", "NOT_FOUND")];
    assert_eq!(value(&m1, "faissx_request_errors_total", &not_found), Some(1.0));
    for action in ["create_index", "add_vectors"] {
        assert_eq!(value(&m1, "faissx_requests_total", &[("action", action), ("tenant", "acme")]), Some(1.0));
    }
    assert_eq!(value(&m1, "faissx_auth_failures_total", &[]), Some(1.0));
    let refused = [("action", "list_indices"), ("tenant", "_none"), ("code", "AUTH_ERROR")];
    assert_eq!(value(&m1, "faissx_request_errors_total", &refused), Some(1.0));
    assert_eq!(value(&m1, "faissx_request_duration_seconds_count", &[("action", "search")]), Some(4.0));
    let inf = [("action", "search"), ("le", "+Inf")];
    assert_eq!(value(&m1, "faissx_request_duration_seconds_bucket", &inf), Some(4.0));
    let acme = [("tenant", "acme")];
    assert_eq!(value(&m1, "faissx_indices", &acme), Some(1.0));
    assert_eq!(value(&m1, "faissx_vectors", &acme), Some(100.0));
    assert_eq!(value(&m1, "faissx_vector_bytes", &acme), Some((100 * D * 4) as f64));
    assert!(value(&m1, "faissx_wal_bytes", &acme).unwrap() > 0.0, "the add is in the WAL");
    assert!(value(&m1, "faissx_checkpoint_age_seconds", &acme).unwrap() >= 0.0);
    assert!(value(&m1, "process_resident_memory_bytes", &[]).unwrap() > 1e6);

    // The same numbers in OpenMetrics, for clients that ask (Prometheus does).
    let (status, om) = http_get(&http, "/metrics", Some("application/openmetrics-text; version=1.0.0"));
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"));
    let m2 = parse_metrics(&om, true);
    assert_eq!(value(&m2, "faissx_requests_total", &search), Some(4.0));
    assert_eq!(value(&m2, "faissx_auth_failures_total", &[]), Some(1.0));

    // A checkpoint empties the WAL.
    c.call("snapshot", vec![]).unwrap();
    let m3 = scrape(&http);
    assert_eq!(value(&m3, "faissx_wal_bytes", &acme), Some(0.0));
    assert_eq!(value(&m3, "faissx_checkpoint_age_seconds", &acme), Some(0.0));
    assert_eq!(value(&m3, "faissx_requests_total", &[("action", "snapshot"), ("tenant", "acme")]), Some(1.0));
    srv.stop();
}

#[test]
fn readyz_is_503_until_the_restore_is_done() {
    let env = TestEnv::new("ops-readyz");
    let srv = Ops::start(&env, &["--data-dir", "data", "-q"]);
    let mut c = client(&srv.endpoint(), None, None);
    c.create_index("docs", D, "Flat", None).unwrap();
    c.add_vectors("docs", &lcg_vectors(50, D, 3)[..], D, None, None).unwrap();
    srv.stop();

    // The restore reads CHECKPOINT first; as a FIFO it holds the restore up until written.
    let cp = env.path("data/tenants/default/docs/CHECKPOINT");
    let bytes = std::fs::read(&cp).unwrap();
    std::fs::remove_file(&cp).unwrap();
    let st = std::process::Command::new("mkfifo").arg(&cp).status().unwrap();
    assert!(st.success(), "mkfifo failed");

    let srv = Ops::start(&env, &["--data-dir", "data", "--http-port", "0", "--log-level", "INFO"]);
    let http = srv.http();
    let (status, body) = http_get(&http, "/readyz", None);
    assert_eq!(status, 503, "not ready while restoring: {body}");
    assert_eq!(http_get(&http, "/livez", None).0, 200, "alive while restoring");
    assert_eq!(value(&scrape(&http), "faissx_ready", &[]), Some(0.0));

    // Let the restore read the checkpoint record: it finishes and the server serves.
    std::fs::OpenOptions::new().write(true).open(&cp).unwrap().write_all(&bytes).unwrap();
    let ep = srv.endpoint();
    assert_eq!(http_get(&http, "/readyz", None).0, 200);
    let m = scrape(&http);
    assert_eq!(value(&m, "faissx_ready", &[]), Some(1.0));
    assert_eq!(value(&m, "faissx_vectors", &[("tenant", "default")]), Some(50.0));
    let rows = client(&ep, None, None).list_indices().unwrap();
    assert!(format!("{rows:?}").contains("docs"), "{rows:?}");
    assert!(srv.wait_log("serving").contains("indices=1"));
    srv.stop();
}

/// Start a server with authentication and `args`; create an index, add vectors,
/// checkpoint, send a request with a wrong key; stop; return the log lines.
fn logged_session(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--data-dir", "data", "--enable-auth", "--auth-keys", "ops-secret-key-1:acme"];
    all.extend_from_slice(args);
    let srv = Ops::start(env, &all);
    let ep = srv.endpoint();
    let mut c = client(&ep, Some("ops-secret-key-1"), None);
    c.create_index("docs", D, "Flat", None).unwrap();
    c.add_vectors("docs", &lcg_vectors(10, D, 4)[..], D, None, None).unwrap();
    c.call("snapshot", vec![("index_id", Value::from("docs"))]).unwrap();
    let e = client(&ep, Some("wrong-key-2"), None).list_indices().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    let log = srv.stop();
    std::fs::remove_dir_all(env.path("data")).unwrap();
    for l in &log {
        assert!(!l.contains("ops-secret-key-1") && !l.contains("wrong-key-2"), "a key was logged: {l}");
    }
    log
}

fn has(log: &[String], needles: &[&str]) -> bool {
    log.iter().any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn logs_say_what_their_level_says() {
    let env = TestEnv::new("ops-logs");
    let info = logged_session(&env, &["--log-level", "INFO"]);
    for want in [
        &[" INFO ", "serving", "endpoint=tcp://127.0.0.1:", "data_dir=data", "indices=0"][..],
        &[" INFO ", "index created", "tenant=acme", "index=docs"],
        &[" INFO ", "checkpoint written", "index=acme/docs", "vectors=10"],
        &[" WARN ", "authentication failed", "op=list_indices"],
        &[" INFO ", "stopped"],
    ] {
        assert!(has(&info, want), "no line with {want:?}:\n{}", info.join("\n"));
    }
    for l in &info {
        // 2026-01-01T00:00:00.000000Z
        let ts = l.split_whitespace().next().unwrap_or("");
        assert!(ts.len() >= 20 && &ts[4..5] == "-" && &ts[10..11] == "T" && ts.ends_with('Z'), "no timestamp: {l}");
        assert!(!l.contains(" DEBUG "), "DEBUG line at INFO: {l}");
    }

    let warning = logged_session(&env, &["--log-level", "WARNING"]);
    assert!(has(&warning, &[" WARN ", "authentication failed"]), "{warning:?}");
    assert!(!has(&warning, &["index created"]) && !has(&warning, &["serving"]), "INFO at WARNING: {warning:?}");
    assert!(!has(&warning, &["checkpoint written"]), "{warning:?}");

    for level in ["ERROR", "CRITICAL"] {
        let quiet = logged_session(&env, &["--log-level", level]);
        assert!(quiet.is_empty(), "{level} logs nothing in a session without errors: {quiet:?}");
    }

    // DEBUG: one line per request; JSON: one object per line.
    let json = logged_session(&env, &["--log-level", "DEBUG", "--log-format", "json"]);
    let events: Vec<serde_json::Value> =
        json.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    for e in &events {
        assert!(e["timestamp"].is_string() && e["level"].is_string() && e["fields"]["message"].is_string(), "{e}");
    }
    let find = |msg: &str, level: &str| events.iter().any(|e| e["fields"]["message"] == msg && e["level"] == level);
    assert!(find("index created", "INFO") && find("authentication failed", "WARN"), "{json:?}");
    let requests: Vec<&serde_json::Value> = events.iter().filter(|e| e["fields"]["message"] == "request").collect();
    assert!(requests.iter().all(|e| e["level"] == "DEBUG"));
    let ops: Vec<&str> = requests.iter().filter_map(|e| e["fields"]["op"].as_str()).collect();
    for op in ["create_index", "add_vectors", "snapshot", "list_indices"] {
        assert!(ops.contains(&op), "no request line for {op}: {ops:?}");
    }
}

/// The message of a `QUOTA_EXCEEDED` error (anything else fails the test).
fn quota<T>(r: faissx::engine::Result<T>, what: &str) -> String {
    match r {
        Err(e) if e.kind() == ErrorKind::QuotaExceeded => e.to_string(),
        Err(e) => panic!("{what}: expected QUOTA_EXCEEDED, got {e}"),
        Ok(_) => panic!("{what}: expected QUOTA_EXCEEDED, got success"),
    }
}

#[test]
fn quotas_refuse_and_change_nothing() {
    let env = TestEnv::new("ops-quotas");
    let args = ["--data-dir", "data", "--max-indices", "2", "--max-vectors", "100", "--max-k", "5", "--max-nq", "3"];
    let srv = Ops::start(&env, &[&args[..], &["--http-port", "0", "--log-level", "INFO"]].concat());
    let http = srv.http();
    let ep = srv.endpoint();
    let mut c = client(&ep, None, Some("acme"));
    let ntotal = |c: &mut Client, id: &str| {
        c.call("get_index_status", vec![("index_id", Value::from(id))]).unwrap().uint("ntotal").unwrap().unwrap()
    };
    let listed = |c: &mut Client| {
        let r = c.list_indices().unwrap();
        let Some(Value::Array(rows)) = r.get("indexes") else { panic!("{r:?}") };
        rows.len()
    };

    // --max-indices
    c.create_index("a", D, "Flat", None).unwrap();
    c.create_index("b", D, "Flat", None).unwrap();
    let msg = quota(c.create_index("c", D, "Flat", None), "third index");
    assert!(msg.contains("--max-indices"), "{msg}");
    assert_eq!(listed(&mut c), 2);
    assert!(!env.path("data/tenants/acme/c").exists());

    // --max-vectors, over all of the tenant's indices
    c.add_vectors("a", &lcg_vectors(80, D, 5)[..], D, None, None).unwrap();
    let msg = quota(c.add_vectors("b", &lcg_vectors(30, D, 6)[..], D, None, None), "add past the quota");
    assert!(msg.contains("--max-vectors"), "{msg}");
    assert_eq!((ntotal(&mut c, "a"), ntotal(&mut c, "b")), (80, 0));
    c.add_vectors("b", &lcg_vectors(20, D, 7)[..], D, None, None).unwrap();
    quota(c.add_vectors("b", &lcg_vectors(1, D, 8)[..], D, None, None), "one more");
    quota(
        c.call(
            "merge_indices",
            vec![("target_index_id", Value::from("a")), ("source_index_ids", Value::Array(vec![Value::from("b")]))],
        ),
        "merge past the quota",
    );
    assert_eq!((ntotal(&mut c, "a"), ntotal(&mut c, "b")), (80, 20));
    // Another tenant has quotas of its own.
    let mut g = client(&ep, None, Some("globex"));
    g.create_index("a", D, "Flat", None).unwrap();
    g.add_vectors("a", &lcg_vectors(100, D, 9)[..], D, None, None).unwrap();

    // --max-k, --max-nq
    let q = lcg_vectors(4, D, 10);
    quota(c.search("a", &q[..D], D, &knn(6), false), "k=6");
    c.search("a", &q[..D], D, &knn(5), false).unwrap();
    quota(c.search("a", &q[..], D, &knn(1), false), "nq=4");
    c.search("a", &q[..3 * D], D, &knn(1), false).unwrap();
    quota(c.range_search("a", &q[..], D, 1.0), "range search nq=4");

    // Imports count too, and a refused upload leaves nothing behind.
    write_npy_f32(&env.path("f.npy"), 50, D, &lcg_vectors(50, D, 11));
    env.ok(&["build", "f.npy", "-o", "f.index", "-q"]);
    let import = |id: &str| env.run(&["query-remote", "--server", &ep, "--tenant", "acme", "import", id, "f.index"]);
    let out = import("c");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--max-indices"), "{err}");
    c.call("delete_index", vec![("index_id", Value::from("b"))]).unwrap();
    let out = import("b");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--max-vectors"), "80 + 50 > 100: {err}");
    assert_eq!(listed(&mut c), 1);
    fn files(p: &std::path::Path) -> usize {
        let rd = std::fs::read_dir(p).unwrap();
        rd.flatten().map(|e| if e.path().is_dir() { files(&e.path()) } else { 1 }).sum()
    }
    assert_eq!(files(&env.path("data/.tmp")), 0, "refused uploads are removed");
    // Replacing the 80 vectors of "a" with 50 fits.
    let out = import("a");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ntotal(&mut c, "a"), 50);

    let m = scrape(&http);
    let refusals: f64 = m
        .iter()
        .filter(|(n, l, _)| {
            n == "faissx_request_errors_total"
                && l.get("code").map(String::as_str) == Some("QUOTA_EXCEEDED")
                && l.get("tenant").map(String::as_str) == Some("acme")
        })
        .map(|s| s.2)
        .sum();
    assert_eq!(refusals, 9.0, "every refusal is counted");
    assert_eq!(value(&m, "faissx_vectors", &[("tenant", "globex")]), Some(100.0));
    let log = srv.stop();
    assert!(has(&log, &[" WARN ", "request refused", "QUOTA_EXCEEDED"]), "{log:?}");
}
