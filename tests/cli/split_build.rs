//! Issue 17 on local files: `train` once, `add --task` in parallel processes (the task number
//! from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID, as schedulers set it), `merge` the parts:
//! the result searches exactly like one `add` of every input to the same trained index.

use crate::util::*;
use std::path::Path;

const D: usize = 16;

fn inputs(env: &TestEnv) -> Vec<String> {
    let mut names = Vec::new();
    for (i, n) in [1200usize, 700, 1100].into_iter().enumerate() {
        let name = format!("emb-{i}.npy");
        write_npy_f32(&env.path(&name), n, D, &lcg_vectors(n, D, 40 + i as u64));
        names.push(name);
    }
    write_npy_f32(&env.path("q.npy"), 50, D, &lcg_vectors(50, D, 99));
    names
}

fn parts(dir: &Path, n: usize) -> Vec<String> {
    (0..n).map(|i| dir.join(format!("part-{i}-of-{n}.index")).display().to_string()).collect()
}

#[test]
fn tasks_then_merge_equal_one_add_to_the_trained_index() {
    let env = TestEnv::new("split_build");
    let files = inputs(&env);
    for factory in ["IVF16,Flat", "IVF16,PQ4x4"] {
        let mut train = vec!["train"];
        train.extend(files.iter().map(String::as_str));
        train.extend_from_slice(&["-o", "trained.index", "--factory", factory, "--train-size", "2000", "-q", "-f"]);
        env.ok(&train);
        // One machine: every file added to a copy of the trained index, in order.
        std::fs::copy(env.path("trained.index"), env.path("one.index")).unwrap();
        std::fs::copy(env.path("trained.index.meta.json"), env.path("one.index.meta.json")).unwrap();
        for f in &files {
            env.ok(&["add", "one.index", f, "-q"]);
        }
        // Four tasks as parallel processes, numbered by the scheduler's variable.
        let _ = std::fs::remove_dir_all(env.path("parts"));
        let children: Vec<_> = (0..4)
            .map(|i| {
                let mut c = env.cmd();
                c.args(["add", "trained.index"]).args(&files).args(["--task-count", "4", "-o", "parts", "-q"]);
                c.env(if i % 2 == 0 { "JOB_COMPLETION_INDEX" } else { "SLURM_ARRAY_TASK_ID" }, i.to_string());
                c.spawn().unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "{factory}: a task failed");
        }
        let p = parts(&env.path("parts"), 4);
        let mut merge = vec!["merge"];
        merge.extend(p.iter().map(String::as_str));
        merge.extend_from_slice(&["-o", "merged.index", "-q", "-f"]);
        env.ok(&merge);
        let search = |ix: &str| env.ok(&["search", ix, "q.npy", "-k", "10", "--nprobe", "4", "--format", "jsonl"]);
        let want = search("one.index");
        assert_eq!(search("merged.index"), want, "{factory}: merged parts");
        // On disk, and as a tree of merges (0+1, 2+3, then both).
        let mut od = merge.clone();
        od.retain(|a| *a != "merged.index");
        let od_args: Vec<&str> =
            p.iter().map(String::as_str).chain(["-o", "od.index", "--on-disk", "-q", "-f"]).collect();
        env.ok(&[&["merge"], od_args.as_slice()].concat());
        assert_eq!(search("od.index"), want, "{factory}: merged on disk");
        env.ok(&["merge", &p[0], &p[1], "-o", "left.index", "--partial", "-q", "-f"]);
        env.ok(&["merge", &p[2], &p[3], "-o", "right.index", "--partial", "-q", "-f"]);
        env.ok(&["merge", "left.index", "right.index", "-o", "tree.index", "-q", "-f"]);
        assert_eq!(search("tree.index"), want, "{factory}: a tree of merges");
    }
    // A task re-run (after a kill) writes the same part.
    let before = std::fs::read(env.path("parts/part-2-of-4.index")).unwrap();
    let mut again = vec!["add", "trained.index"];
    again.extend(files.iter().map(String::as_str));
    again.extend_from_slice(&["--task", "2/4", "-o", "parts", "-q"]);
    env.ok(&again);
    assert_eq!(std::fs::read(env.path("parts/part-2-of-4.index")).unwrap(), before);
    assert_eq!(leftovers(&env.path("parts")), Vec::<String>::new());
}

#[test]
fn split_builds_refuse_bad_tasks_and_missing_parts_by_name() {
    let env = TestEnv::new("split_build_errors");
    let files = inputs(&env);
    let mut train = vec!["train"];
    train.extend(files.iter().map(String::as_str));
    train.extend_from_slice(&["-o", "trained.index", "--factory", "IVF8,Flat", "-q"]);
    env.ok(&train);
    let task = |t: &str| {
        let mut v = vec!["add", "trained.index"];
        v.extend(files.iter().map(String::as_str));
        v.extend_from_slice(&["--task", t, "-o", "parts", "-q"]);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        env.ok(&a);
    };
    for t in ["0/3", "1/3", "3/3"].iter().take(2) {
        run(task(t));
    }
    let fails = |args: Vec<String>, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        env.fails(&a, 2, needle);
    };
    fails(task("3/3"), "the task number must be below the task count");
    fails(task("x"), "expected i/N");
    let p = parts(&env.path("parts"), 3);
    env.fails(&["merge", &p[0], &p[1], "-o", "m.index"], 2, "part-2-of-3 missing");
    env.fails(&["merge", &p[0], &p[0], &p[1], "-o", "m.index", "--partial"], 2, "part-0-of-3 given twice");
    assert!(!env.path("m.index").exists());
    // No task number anywhere; several inputs without a task; inputs of mixed d.
    let no_task = ["add", "trained.index", files[0].as_str(), "--task-count", "3", "-o", "parts"];
    env.fails(&no_task, 2, "no task number in JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID");
    env.fails(&["add", "trained.index", &files[0], &files[1]], 2, "several INPUT files are added by tasks");
    // A tree's level with --partial records the parts it holds: a part merged again is named.
    env.ok(&["merge", &p[0], &p[1], "-o", "left.index", "--partial", "-q"]);
    env.fails(&["merge", "left.index", &p[1], "-o", "m.index"], 2, "part-1-of-3 given twice");
    write_npy_f32(&env.path("wide.npy"), 10, D + 1, &lcg_vectors(10, D + 1, 5));
    env.fails(&["train", files[0].as_str(), "wide.npy", "-o", "t2.index", "--factory", "IVF8,Flat"], 2, "wide.npy");
    env.fails(&["train", files[0].as_str(), "-o", "t3.index", "--factory", "HNSW8"], 2, "needs no training");
}

#[test]
fn a_task_killed_mid_way_leaves_no_part_and_its_rerun_writes_the_same_part() {
    let env = TestEnv::new("split_build_kill");
    let n = 300_000;
    write_npy_f32(&env.path("big.npy"), n, D, &lcg_vectors(n, D, 3));
    env.ok(&["train", "big.npy", "-o", "trained.index", "--factory", "IVF16,Flat", "--train-size", "5000", "-q"]);
    let task = ["add", "trained.index", "big.npy", "--task", "1/2", "-o", "parts", "--batch", "1000", "-q"];
    env.ok(&task);
    let part = env.path("parts/part-1-of-2.index");
    let want = std::fs::read(&part).unwrap();
    std::fs::remove_file(&part).unwrap();
    std::fs::remove_file(env.path("parts/part-1-of-2.index.meta.json")).unwrap();
    // kill -9 while it adds (or, on a fast machine, later): never a partial part.
    let mut child = env.cmd().args(task).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    if part.exists() {
        assert_eq!(std::fs::read(&part).unwrap(), want, "a part under its final name is whole ({status:?})");
    }
    // The scheduler runs the task again: the same part.
    env.ok(&task);
    assert_eq!(std::fs::read(&part).unwrap(), want);
}

#[test]
fn tasks_take_the_users_ids_from_one_ids_file_per_input() {
    let env = TestEnv::new("split_build_ids");
    let files = inputs(&env);
    let id_of = |row: i64| 1_000_000 + 3 * row;
    let mut first = 0i64;
    for (i, n) in [1200i64, 700, 1100].into_iter().enumerate() {
        let ids: Vec<i64> = (first..first + n).map(id_of).collect();
        write_npy_i64(&env.path(&format!("ids-{i}.npy")), &ids);
        first += n;
    }
    let mut train = vec!["train"];
    train.extend(files.iter().map(String::as_str));
    train.extend_from_slice(&["-o", "trained.index", "--factory", "IVF16,Flat", "--train-size", "2000", "-q"]);
    env.ok(&train);
    let build = |dir: &str, ids: Option<&str>| {
        for t in 0..3 {
            let task = format!("{t}/3");
            let mut a = vec!["add", "trained.index"];
            a.extend(files.iter().map(String::as_str));
            a.extend_from_slice(&["--task", &task, "-o", dir, "-q"]);
            if let Some(p) = ids {
                a.extend_from_slice(&["--ids", p]);
            }
            env.ok(&a);
        }
        let p = parts(&env.path(dir), 3);
        let out = format!("{dir}.index");
        env.ok(&["merge", &p[0], &p[1], &p[2], "-o", &out, "-q"]);
        env.ok(&["search", &out, "q.npy", "-k", "10", "--nprobe", "4", "--format", "jsonl"])
    };
    let rows = parse_jsonl(&build("rows", None));
    let users = parse_jsonl(&build("users", Some("ids-*.npy")));
    assert_eq!(rows.len(), 50);
    for ((q, r_ids, r_d), (q2, u_ids, u_d)) in rows.iter().zip(&users) {
        assert_eq!(q, q2);
        assert_eq!(u_ids, &r_ids.iter().map(|&r| id_of(r)).collect::<Vec<_>>(), "query {q}");
        assert_eq!(u_d, r_d, "query {q}");
    }
    // One ids file per input, each as long as its input.
    let task = |ids: &str| {
        let mut a = vec!["add", "trained.index"];
        a.extend(files.iter().map(String::as_str));
        a.extend_from_slice(&["--task", "0/3", "-o", "bad", "--ids", ids]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let fails = |args: Vec<String>, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        env.fails(&a, 2, needle);
    };
    fails(task("ids-[01].npy"), "2 ids files for 3 inputs");
    write_npy_i64(&env.path("short.npy"), &[1, 2, 3]);
    fails(task("ids-[0].npy"), "1 ids files for 3 inputs");
    std::fs::copy(env.path("short.npy"), env.path("ids-0.npy")).unwrap();
    fails(task("ids-*.npy"), "ids-0.npy: 3 ids for the 1200 vectors of emb-0.npy");
    assert!(!env.path("bad/part-0-of-3.index").exists());
}
