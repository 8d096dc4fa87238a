//! The official FAISSx Python client (PyPI `faissx==0.20260422.2`, installed by
//! scripts/python-env.sh) works against `faissx serve` unchanged:
//! * it finds the same neighbours as local faiss for the same data (exact indices: identical
//!   ids; HNSW: the same recall within a small margin, since graph construction is not
//!   deterministic);
//! * FAISSx's own test suite (github.com/muxi-ai/faissx, tests/), replayed scenario by
//!   scenario by tests/python/faissx_client_compat.py with the index classes, type strings
//!   and raw actions it uses, passes what it asserts.

use crate::python_compat::python;
use crate::serve::Server;
use crate::util::*;
use std::process::Command;

#[test]
fn official_python_client_matches_local_faiss() {
    let env = TestEnv::new("serve-python");
    let srv = Server::start(&env, &[]);
    check_official_client(&srv.endpoint);
}

/// Run tests/python/faissx_client_compat.py against the server at `endpoint` and assert
/// what it reports: remote and local faiss agree per index class, and every scenario of
/// FAISSx's suite passes.
pub fn check_official_client(endpoint: &str) {
    let script = repo_root().join("tests/python/faissx_client_compat.py");
    let out = Command::new(python()).arg(&script).arg(endpoint).env("OMP_NUM_THREADS", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python client failed:\n{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let classes = [
        "IndexFlatL2",
        "IndexIVFFlat",
        "IndexHNSWFlat",
        "IndexIDMap",
        "IndexIDMap2",
        "IndexPQ",
        "IndexScalarQuantizer",
        "IndexIVFPQ",
    ];
    for c in classes {
        let r = &v["classes"][c];
        assert_eq!(r["ntotal"], 2000, "{c}: {r}");
        if c == "IndexHNSWFlat" {
            let (rr, rl) = (r["recall_remote"].as_f64().unwrap(), r["recall_local"].as_f64().unwrap());
            assert!(rr >= rl - 0.05, "{c}: remote recall {rr} vs local {rl}");
        } else {
            assert_eq!(r["same"], 1.0, "{c}: remote and local faiss disagree: {r}");
        }
    }
    assert_eq!(v["classes"]["IndexFlatL2"]["recall_remote"], 1.0);

    let suite = v["suite"].as_object().expect("a \"suite\" map");
    let failed: Vec<String> = suite
        .iter()
        .filter(|(_, r)| *r != "ok")
        .map(|(name, r)| format!("{name}: {}", r.as_str().unwrap_or("?")))
        .collect();
    assert!(failed.is_empty(), "FAISSx suite scenarios failed against faissx serve:\n{}", failed.join("\n"));
    // Every test file of FAISSx's suite that talks to a server is replayed (see the script's
    // docstring for the ones that cannot be), each with at least one scenario.
    for file in [
        "test_all_index_types",
        "test_fixed_indices",
        "test_ntotal",
        "test_reconstruction",
        "test_advanced_features",
        "test_specialized_ops",
        "test_client_optimizations",
        "test_client_io",
        "client_indices.test_flat_index",
        "client_indices.test_hnsw_modes",
        "client_indices.test_ivf_pq_optimized",
        "client_indices.test_ivf_sq_optimized",
        "client_indices.test_pq_optimized",
        "client_indices.test_scalar_quantizer",
        "client_indices.test_scalar_quantizer_optimized",
    ] {
        assert!(suite.keys().any(|k| k.starts_with(&format!("{file}."))), "no scenario of {file}");
    }
    for action in ["test_optimize_index", "test_clustering", "test_batch_add_with_ids", "test_hybrid_search"] {
        assert_eq!(suite[&format!("test_specialized_ops.{action}")], "ok");
    }
}
