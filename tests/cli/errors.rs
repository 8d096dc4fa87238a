//! Bad input: one line on stderr naming the file/flag/record, exit 2, no partial output.

use crate::util::*;

fn env_with_index(name: &str) -> TestEnv {
    let env = TestEnv::new(name);
    write_fvecs(&env.path("b.fvecs"), 4, &lcg_vectors(100, 4, 5));
    env.ok(&["build", "b.fvecs", "-o", "x.index", "-q"]);
    env
}

#[test]
fn missing_input_file() {
    let env = TestEnv::new("err-missing");
    env.fails(&["build", "nope.fvecs", "-o", "x.index"], 2, "nope.fvecs");
    assert!(!env.path("x.index").exists());
    env.fails(&["search", "nope.index", "q.fvecs"], 2, "nope.index");
}

#[test]
fn truncated_fvecs_names_file_and_record() {
    let env = TestEnv::new("err-trunc");
    write_fvecs(&env.path("t.fvecs"), 4, &lcg_vectors(10, 4, 1));
    let mut b = std::fs::read(env.path("t.fvecs")).unwrap();
    b.truncate(b.len() - 3);
    std::fs::write(env.path("t.fvecs"), b).unwrap();
    let err = env.fails(&["build", "t.fvecs", "-o", "x.index"], 2, "t.fvecs");
    assert!(err.contains("truncated") && err.contains("record 9"), "{err}");
    assert!(!env.path("x.index").exists());
    assert_eq!(leftovers(&env.dir), Vec::<String>::new());
}

#[test]
fn mixed_dimension_records() {
    let env = TestEnv::new("err-mixed");
    let mut b = Vec::new();
    for (i, d) in [4usize, 4, 6, 2].iter().enumerate() {
        b.extend_from_slice(&(*d as i32).to_le_bytes());
        for _ in 0..*d {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
    }
    std::fs::write(env.path("m.fvecs"), b).unwrap();
    let err = env.fails(&["build", "m.fvecs", "-o", "x.index"], 2, "m.fvecs");
    assert!(err.contains("record 2 has dimension 6"), "{err}");
}

#[test]
fn query_width_mismatch() {
    let env = env_with_index("err-width");
    write_fvecs(&env.path("q.fvecs"), 3, &lcg_vectors(2, 3, 1));
    let err = env.fails(&["search", "x.index", "q.fvecs"], 2, "q.fvecs");
    assert!(err.contains("d=3") && err.contains("d=4"), "{err}");
    // add of the wrong width leaves the index as it was
    let before = std::fs::read(env.path("x.index")).unwrap();
    env.fails(&["add", "x.index", "q.fvecs"], 2, "d=3");
    assert_eq!(before, std::fs::read(env.path("x.index")).unwrap());
}

#[test]
fn bad_factory_string() {
    let env = TestEnv::new("err-factory");
    write_fvecs(&env.path("b.fvecs"), 4, &lcg_vectors(10, 4, 1));
    let err = env.fails(&["build", "b.fvecs", "-o", "x.index", "--factory", "IVFbanana"], 2, "IVFbanana");
    assert!(err.contains("--factory"), "{err}");
    assert!(!env.path("x.index").exists());
}

#[test]
fn too_few_training_vectors() {
    let env = TestEnv::new("err-train");
    write_fvecs(&env.path("b.fvecs"), 4, &lcg_vectors(10, 4, 1));
    let err = env.fails(&["build", "b.fvecs", "-o", "x.index", "--factory", "IVF64,Flat"], 2, "IVF64");
    assert!(err.contains("64") && err.contains("10"), "{err}");
    assert!(!env.path("x.index").exists());
}

#[test]
fn untrained_index_is_refused() {
    let env = TestEnv::new("err-untrained");
    let spec = faissx::engine::IndexSpec { factory: "IVF8,Flat".into(), metric: faissx::engine::Metric::L2, dim: 4 };
    let mut idx = faissx::engine::Index::create(&spec, false).unwrap();
    idx.save(&env.path("u.index")).unwrap();
    write_fvecs(&env.path("q.fvecs"), 4, &lcg_vectors(3, 4, 1));
    env.fails(&["search", "u.index", "q.fvecs"], 2, "not trained");
    env.fails(&["add", "u.index", "q.fvecs"], 2, "not trained");
}

#[test]
fn k_must_be_positive() {
    let env = env_with_index("err-k");
    let out = env.run(&["search", "x.index", "b.fvecs", "-k", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-k"));
    let out = env.run(&["search", "x.index", "b.fvecs", "-k", "-3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn nan_components_name_the_record() {
    let env = env_with_index("err-nan");
    let mut q = lcg_vectors(5, 4, 1);
    q[3 * 4 + 2] = f32::NAN;
    write_npy_f32(&env.path("q.npy"), 5, 4, &q);
    let err = env.fails(&["search", "x.index", "q.npy"], 2, "q.npy");
    assert!(err.contains("record 3") && err.contains("NaN"), "{err}");
    let err = env.fails(&["build", "q.npy", "-o", "y.index"], 2, "record 3");
    assert!(err.contains("q.npy"), "{err}");
    assert!(!env.path("y.index").exists());
}

#[test]
fn existing_output_needs_force() {
    let env = env_with_index("err-force");
    env.fails(&["build", "b.fvecs", "-o", "x.index"], 2, "--force");
    env.ok(&["build", "b.fvecs", "-o", "x.index", "--force", "-q"]);
}

#[test]
fn newer_sidecar_is_refused() {
    let env = env_with_index("err-sidecar");
    let p = env.path("x.index.meta.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["format_version"] = serde_json::json!(99);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = env.run(&["info", "x.index"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer"));
}

#[test]
fn not_an_index_file() {
    let env = TestEnv::new("err-notindex");
    std::fs::write(env.path("junk.index"), b"hello world, not faiss").unwrap();
    env.fails(&["info", "junk.index"], 2, "junk.index");
}

#[test]
fn output_in_a_missing_directory_fails_before_any_work() {
    let env = env_with_index("err-outdir");
    env.fails(&["build", "b.fvecs", "-o", "nodir/x.index"], 2, "nodir");
    env.fails(&["search", "x.index", "b.fvecs", "--format", "npy", "-o", "nodir/hits.npy"], 2, "does not exist");
}
