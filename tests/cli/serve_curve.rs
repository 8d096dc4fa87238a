//! CurveZMQ: `faissx keygen`, `serve --curve-secret-key-file`, and the clients'
//! `--server-public-key` (engine `ClientConfig::server_public_key`, `query-remote`, env
//! `FAISSX_SERVER_PUBLIC_KEY`). A client with the right server key is served; one with another
//! key or none gets no reply (a Timeout) and the server goes on serving.

use crate::serve::Server;
use crate::util::*;
use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::{curve, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A client of `srv` with `server_key` and a short reply timeout.
fn client(srv: &Server, server_key: Option<curve::CurveKey>, timeout: Duration) -> Client {
    Client::connect(ClientConfig {
        server: srv.endpoint.clone(),
        api_key: None,
        tenant: None,
        timeout,
        server_public_key: server_key,
    })
    .unwrap()
}

/// create, add, search on `name` through `c`: the nearest neighbour of each added row is itself.
fn create_add_search(c: &mut Client, name: &str) {
    let d = 8;
    let base = lcg_vectors(100, d, 7);
    c.create_index(name, d, "L2", None).unwrap();
    let added = c.add_vectors(name, &base[..], d, None, None).unwrap();
    assert_eq!(added.ntotal, 100);
    let (hits, _) = c.search(name, &base[..3 * d], d, &knn(1), false).unwrap();
    assert_eq!(hits.ids, vec![0, 1, 2]);
}

#[test]
fn keygen_writes_a_key_pair_with_modes_and_refuses_to_overwrite() {
    let env = TestEnv::new("curve-keygen");
    let out = env.ok(&["keygen", "-o", "server.key", "-q"]);
    let secret = std::fs::read_to_string(env.path("server.key")).unwrap();
    let public = std::fs::read_to_string(env.path("server.key.pub")).unwrap();
    assert_eq!(out.trim(), public.trim(), "stdout is the public key");
    let (s, p) = (curve::decode(&secret).expect("secret is Z85"), curve::decode(&public).expect("public is Z85"));
    assert_ne!(s, p);
    let mode = |f: &str| std::fs::metadata(env.path(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("server.key"), 0o600);
    assert_eq!(mode("server.key.pub"), 0o644);

    env.fails(&["keygen", "-o", "server.key"], 2, "server.key exists");
    assert_eq!(std::fs::read_to_string(env.path("server.key")).unwrap(), secret, "refused keygen changed nothing");
    std::fs::remove_file(env.path("server.key")).unwrap();
    env.fails(&["keygen", "-o", "server.key"], 2, "server.key.pub exists");

    env.ok(&["keygen", "-o", "server.key", "-f", "-q"]);
    assert_ne!(std::fs::read_to_string(env.path("server.key.pub")).unwrap(), public, "-f writes a new pair");
}

#[test]
fn curve_server_serves_the_right_key_only_and_keeps_serving() {
    let env = TestEnv::new("curve-serve");
    env.ok(&["keygen", "-o", "server.key", "-q"]);
    env.ok(&["keygen", "-o", "other.key", "-q"]);
    let right = curve::read_key(&env.path("server.key.pub"), "test").unwrap();
    let wrong = curve::read_key(&env.path("other.key.pub"), "test").unwrap();
    let srv = Server::start(&env, &["--curve-secret-key-file", "server.key"]);

    create_add_search(&mut client(&srv, Some(right), Duration::from_secs(60)), "first");

    for key in [Some(wrong), None] {
        let mut c = client(&srv, key, Duration::from_secs(2));
        let e = c.list_indices().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "server key {key:?}: {}", e.chain());
    }

    // Still serving: a right-key client sees the first index and can make another.
    let mut c = client(&srv, Some(right), Duration::from_secs(60));
    let list = c.list_indices().unwrap();
    assert!(format!("{list:?}").contains("first"), "{list:?}");
    create_add_search(&mut c, "second");
    srv.stop();
}

#[test]
fn query_remote_takes_the_server_key_from_a_flag_or_the_environment() {
    let env = TestEnv::new("curve-query-remote");
    env.ok(&["keygen", "-o", "server.key", "-q"]);
    let srv = Server::start(&env, &["--curve-secret-key-file", "server.key"]);
    let ep = srv.endpoint.clone();
    env.ok(&[
        "query-remote",
        "--server",
        &ep,
        "--server-public-key",
        "server.key.pub",
        "create",
        "docs",
        "--dimension",
        "4",
    ]);
    let out = env
        .cmd()
        .args(["query-remote", "--server", &ep, "list"])
        .env("FAISSX_SERVER_PUBLIC_KEY", "server.key.pub")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("docs"));
    // Without the key: no reply within --timeout, exit 1.
    env.fails(&["query-remote", "--server", &ep, "--timeout", "2", "list"], 1, "no reply");
}

#[test]
fn malformed_key_files_are_one_line_errors_naming_the_file() {
    let env = TestEnv::new("curve-bad-keys");
    std::fs::write(env.path("bad.pub"), "not a key\n").unwrap();
    env.fails(
        &["query-remote", "--server-public-key", "bad.pub", "list"],
        2,
        "--server-public-key bad.pub: not a CurveZMQ key",
    );
    env.fails(&["query-remote", "--server-public-key", "missing.pub", "list"], 2, "missing.pub");
    env.fails(
        &["serve", "--bind-address", "127.0.0.1", "--port", "0", "--curve-secret-key-file", "bad.pub"],
        2,
        "--curve-secret-key-file bad.pub: not a CurveZMQ key",
    );
}

#[test]
fn bench_server_takes_the_server_public_key() {
    let env = TestEnv::new("curve-bench");
    env.ok(&["keygen", "-o", "server.key", "-q"]);
    let srv = Server::start(&env, &["--curve-secret-key-file", "server.key"]);
    let d = 8;
    let base = lcg_vectors(100, d, 3);
    let key = curve::read_key(&env.path("server.key.pub"), "test").unwrap();
    let mut c = client(&srv, Some(key), Duration::from_secs(60));
    c.create_index("docs", d, "L2", None).unwrap();
    assert_eq!(c.add_vectors("docs", &base[..], d, None, None).unwrap().ntotal, 100);
    // Queries: the first 10 stored rows; ground truth: each is its own nearest neighbour.
    write_fvecs(&env.path("q.fvecs"), d, &base[..10 * d]);
    let mut gt = Vec::new();
    for i in 0..10i32 {
        gt.extend_from_slice(&1i32.to_le_bytes());
        gt.extend_from_slice(&i.to_le_bytes());
    }
    std::fs::write(env.path("gt.ivecs"), gt).unwrap();
    let ep = srv.endpoint.clone();
    let args = ["bench", "--server", &ep, "--index", "docs", "--queries", "q.fvecs", "--gt", "gt.ivecs", "-k", "1"];
    let mut with_key = args.to_vec();
    with_key.extend_from_slice(&["--server-public-key", "server.key.pub", "--format", "json", "-q"]);
    let out = env.ok(&with_key);
    let rec: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(rec["k_recall_at_k"], 1.0, "{out}");
}
