//! The official FAISSx Python client (PyPI `faissx==0.20260422.2`, installed by
//! scripts/python-env.sh) works against `faissx serve` unchanged and finds the same
//! neighbours as local faiss for the same data (exact indices: identical ids; HNSW:
//! the same recall within a small margin, since graph construction is not deterministic).

use crate::python_compat::python;
use crate::serve::Server;
use crate::util::*;
use std::process::Command;

#[test]
fn official_python_client_matches_local_faiss() {
    let env = TestEnv::new("serve-python");
    let srv = Server::start(&env, &[]);
    let script = repo_root().join("tests/python/faissx_client_compat.py");
    let out = Command::new(python()).arg(&script).arg(&srv.endpoint).env("OMP_NUM_THREADS", "1").output().unwrap();
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
        let r = &v[c];
        assert_eq!(r["ntotal"], 2000, "{c}: {r}");
        if c == "IndexHNSWFlat" {
            let (rr, rl) = (r["recall_remote"].as_f64().unwrap(), r["recall_local"].as_f64().unwrap());
            assert!(rr >= rl - 0.05, "{c}: remote recall {rr} vs local {rl}");
        } else {
            assert_eq!(r["same"], 1.0, "{c}: remote and local faiss disagree: {r}");
        }
    }
    assert_eq!(v["IndexFlatL2"]["recall_remote"], 1.0);
}
