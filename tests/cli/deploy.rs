//! The scheduler examples of a split build (issue 17): `deploy/kubernetes/build-job.yaml`
//! validates against the Kubernetes API schemas (kubernetes-validate, offline) and its task
//! count agrees across its three Jobs; `deploy/slurm/build.sbatch` is run as local processes,
//! one per array task number, and its parts merge into what one `add` gives.

use crate::python_compat::python;
use crate::util::*;
use std::path::PathBuf;

fn kubernetes_validate(file: &std::path::Path) -> std::process::Output {
    // kubernetes-validate sits beside the venv's python (scripts/python-env.sh installs it).
    let bin = PathBuf::from(python()).parent().unwrap().join("kubernetes-validate");
    std::process::Command::new(&bin)
        .args(["--strict", "--kubernetes-version", "1.33"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

#[test]
fn build_job_manifests_validate_and_agree_on_the_task_count() {
    let path = repo_root().join("deploy/kubernetes/build-job.yaml");
    let out = kubernetes_validate(&path);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(&path).unwrap();
    for kind in ["completionMode: Indexed", "kind: PersistentVolumeClaim", "name: faissx-train", "name: faissx-merge"] {
        assert!(yaml.contains(kind), "{kind}");
    }
    // One task count everywhere: the Indexed Job's completions, the tasks' --task-count and
    // the parts the merge waits for and merges.
    let n: usize = yaml.split("completions: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(yaml.contains(&format!("parallelism: {n}")));
    assert!(yaml.contains(&format!("{{name: TASKS, value: \"{n}\"}}")), "TASKS = completions");
    assert_eq!(yaml.matches(&format!("part-*-of-{n}.index")).count(), 2, "the merge waits for and merges N parts");
    // The validator does reject a broken manifest.
    let env = TestEnv::new("deploy_k8s");
    std::fs::write(env.path("bad.yaml"), yaml.replace(&format!("completions: {n}"), "completions: four")).unwrap();
    assert!(!kubernetes_validate(&env.path("bad.yaml")).status.success(), "a wrong type must fail validation");
}

#[test]
fn bucket_build_manifests_validate_and_agree_on_the_task_count() {
    let path = repo_root().join("deploy/kubernetes/build-job-s3.yaml");
    let out = kubernetes_validate(&path);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(&path).unwrap();
    for want in ["completionMode: Indexed", "secretRef: {name: faissx-s3}", "s3://idx/trained.index", "s3://idx/parts/"]
    {
        assert!(yaml.contains(want), "{want}");
    }
    // Each step carries the label the documented `kubectl apply -l step=…` selects.
    for (job, step) in [("faissx-s3-train", "train"), ("faissx-s3-add", "add"), ("faissx-s3-merge", "merge")] {
        assert!(yaml.contains(&format!("name: {job}\n  labels: {{step: {step}}}")), "{job}");
    }
    let n: usize = yaml.split("completions: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(yaml.contains(&format!("parallelism: {n}")));
    assert!(yaml.contains(&format!("{{name: TASKS, value: \"{n}\"}}")), "TASKS = completions");
    assert!(yaml.contains(&format!("s3://idx/parts/part-*-of-{n}.index")), "the merge takes N parts");
}

#[test]
fn slurm_array_script_runs_as_local_tasks() {
    let script = repo_root().join("deploy/slurm/build.sbatch");
    let syntax = std::process::Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(syntax.success());
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-63") && text.contains("TASKS=\"${TASKS:-64}\""), "array size = TASKS");
    let env = TestEnv::new("deploy_slurm");
    let d = 8;
    std::fs::create_dir_all(env.path("emb")).unwrap();
    for (i, n) in [400usize, 300].into_iter().enumerate() {
        write_npy_f32(&env.path(&format!("emb/e{i}.npy")), n, d, &lcg_vectors(n, d, 70 + i as u64));
    }
    write_npy_f32(&env.path("q.npy"), 20, d, &lcg_vectors(20, d, 77));
    env.ok(&["train", "emb/e0.npy", "emb/e1.npy", "-o", "trained.index", "--factory", "IVF8,Flat", "-q"]);
    // What Slurm would run: the script once per array task number, here 3 tasks.
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new("bash")
                .arg(&script)
                .env("FAISSX_DATA", &env.dir)
                .env("FAISSX_BIN", env!("CARGO_BIN_EXE_faissx"))
                .env("TASKS", "3")
                .env("SLURM_ARRAY_TASK_ID", i.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "an array task failed");
    }
    env.ok(&[
        "merge",
        "parts/part-0-of-3.index",
        "parts/part-1-of-3.index",
        "parts/part-2-of-3.index",
        "-o",
        "m.index",
        "-q",
    ]);
    std::fs::copy(env.path("trained.index"), env.path("one.index")).unwrap();
    std::fs::copy(env.path("trained.index.meta.json"), env.path("one.index.meta.json")).unwrap();
    env.ok(&["add", "one.index", "emb/e0.npy", "-q"]);
    env.ok(&["add", "one.index", "emb/e1.npy", "-q"]);
    let search = |ix: &str| env.ok(&["search", ix, "q.npy", "-k", "5", "--nprobe", "8", "--format", "jsonl"]);
    assert_eq!(search("m.index"), search("one.index"));
}
