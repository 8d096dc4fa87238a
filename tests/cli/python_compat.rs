//! Python faiss (faiss-cpu 1.12.0 from PyPI) and faissx read each other's index files.
//! The interpreter comes from `FAISSX_PYTHON` or scripts/python-env.sh (which CI runs).

use crate::util::*;
use std::process::Command;

pub fn python() -> String {
    if let Ok(p) = std::env::var("FAISSX_TEST_PYTHON") {
        return p;
    }
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/python-env.sh"))
        .output()
        .expect("running scripts/python-env.sh");
    assert!(out.status.success(), "scripts/python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn py(env: &TestEnv, script: &str) -> String {
    let out = Command::new(python()).arg("-c").arg(script).current_dir(&env.dir).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), script);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_reads_faissx_indices() {
    let env = TestEnv::new("py-read");
    let base = testdata("fashion-mnist/base5k.bvecs").display().to_string();
    let query = testdata("fashion-mnist/query200.bvecs").display().to_string();
    for (name, factory) in [("flat", "Flat"), ("ivf", "IVF32,Flat"), ("hnsw", "HNSW16"), ("pq", "IVF16,PQ16")] {
        let idx = format!("{name}.index");
        env.ok(&["build", &base, "-o", &idx, "--factory", factory, "-q"]);
        let ours = parse_jsonl(
            &env.ok(&["search", &idx, &query, "-k", "5", "--nprobe", "4", "--ef-search", "32"]
                .iter()
                .copied()
                .filter(|a| {
                    // only pass the knob the index has
                    !((name != "ivf" && name != "pq" && (*a == "--nprobe" || *a == "4"))
                        || (name != "hnsw" && (*a == "--ef-search" || *a == "32")))
                })
                .collect::<Vec<_>>()),
        );
        let script = format!(
            r#"
import faiss, numpy as np, json
idx = faiss.read_index("{idx}")
raw = np.fromfile("{query}", dtype=np.uint8).reshape(-1, 4 + 784)[:, 4:].astype("float32")
if "{name}" in ("ivf", "pq"): faiss.extract_index_ivf(idx).nprobe = 4
if "{name}" == "hnsw": idx.hnsw.efSearch = 32
D, I = idx.search(raw, 5)
print(json.dumps({{"ntotal": idx.ntotal, "d": idx.d, "ids": I.tolist()}}))
"#
        );
        let v: serde_json::Value = serde_json::from_str(py(&env, &script).trim()).unwrap();
        assert_eq!(v["ntotal"], 5000, "{name}");
        assert_eq!(v["d"], 784);
        let theirs: Vec<Vec<i64>> = serde_json::from_value(v["ids"].clone()).unwrap();
        let ours: Vec<Vec<i64>> = ours.into_iter().map(|r| r.1).collect();
        let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
        assert!(same as f64 >= 0.98 * 200.0, "{name}: only {same}/200 queries agree between faissx and Python faiss");
    }
}

#[test]
fn faissx_reads_python_indices() {
    let env = TestEnv::new("py-write");
    let base = testdata("fashion-mnist/base5k.bvecs").display().to_string();
    let query = testdata("fashion-mnist/query200.bvecs").display().to_string();
    let script = format!(
        r#"
import faiss, numpy as np, json
xb = np.fromfile("{base}", dtype=np.uint8).reshape(-1, 4 + 784)[:, 4:].astype("float32")
xq = np.fromfile("{query}", dtype=np.uint8).reshape(-1, 4 + 784)[:, 4:].astype("float32")
out = {{}}
for name, fac, metric in [("flat", "Flat", faiss.METRIC_L2), ("ivf", "IVF32,Flat", faiss.METRIC_L2),
                          ("ip", "Flat", faiss.METRIC_INNER_PRODUCT), ("idmap", "IDMap2,Flat", faiss.METRIC_L2)]:
    idx = faiss.index_factory(784, fac, metric)
    idx.train(xb)
    if name == "idmap":
        idx.add_with_ids(xb, np.arange(len(xb), dtype="int64") * 3 + 7)
    else:
        idx.add(xb)
    if name == "ivf": idx.nprobe = 8
    faiss.write_index(idx, name + ".index")
    D, I = idx.search(xq, 5)
    out[name] = I.tolist()
print(json.dumps(out))
"#
    );
    let theirs: serde_json::Value = serde_json::from_str(py(&env, &script).trim()).unwrap();
    for name in ["flat", "ivf", "ip", "idmap"] {
        let idx = format!("{name}.index");
        let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", &idx, "--format", "json"])).unwrap();
        assert_eq!(info["ntotal"], 5000);
        assert_eq!(info["metric"], if name == "ip" { "ip" } else { "l2" });
        assert!(info.get("meta").is_none(), "no sidecar for a Python-written index");
        let ours: Vec<Vec<i64>> =
            parse_jsonl(&env.ok(&["search", &idx, &query, "-k", "5"])).into_iter().map(|r| r.1).collect();
        let theirs: Vec<Vec<i64>> = serde_json::from_value(theirs[name].clone()).unwrap();
        assert_eq!(ours, theirs, "{name}: faissx and Python faiss disagree");
    }
    // faissx can extend a Python-written IDMap2 index with ids
    write_npy_i64(&env.path("ids.npy"), &[1_000_000]);
    let one = testdata("fashion-mnist/query200.bvecs");
    let b = std::fs::read(one).unwrap();
    std::fs::write(env.path("one.bvecs"), &b[..788]).unwrap();
    env.ok(&["add", "idmap.index", "one.bvecs", "--ids", "ids.npy", "-q"]);
    let rows = parse_jsonl(&env.ok(&["search", "idmap.index", "one.bvecs", "-k", "1"]));
    assert_eq!(rows[0].1[0], 1_000_000);
}
