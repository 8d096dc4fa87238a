//! The command-line traps of issue 13, each reproduced: two writers of one output, Ctrl-C
//! during a build, FAISS's warnings under `-q`, stale shards and overlapping ids in
//! scatter-gather, `remove` renumbering a Flat index, help examples re-wrapped by clap,
//! shell completions, `.npy` on stdin, and one meaning of `--format json`.

use crate::serve::Server;
use crate::util::*;
use std::io::Write;
use std::process::Stdio;

const D: usize = 16;

fn info(env: &TestEnv, index: &str) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["info", index, "--format", "json"])).unwrap()
}

#[test]
fn an_output_another_faissx_is_writing_is_refused_by_name() {
    let env = TestEnv::new("traps-lock");
    write_fvecs(&env.path("a.fvecs"), D, &lcg_vectors(300, D, 1));
    // Another faissx (this test, through the library) holds the output's lock.
    let held = faissx::engine::io::atomic::OutputLock::acquire(&env.path("same.index")).unwrap();
    let err = env.fails(&["build", "a.fvecs", "-o", "same.index"], 1, "same.index: another faissx is writing");
    assert!(err.contains("same.index.lock"), "{err}");
    env.fails(&["add", "same.index", "a.fvecs"], 1, "same.index: another faissx is writing");
    assert!(!env.path("same.index").exists());
    drop(held);
    env.ok(&["build", "a.fvecs", "-o", "same.index", "-q"]);
    assert_eq!(info(&env, "same.index")["ntotal"], 300);
    assert_eq!(leftovers(&env.dir), Vec::<String>::new());
}

#[test]
fn concurrent_builds_of_one_output_leave_a_consistent_index_and_sidecar() {
    let env = TestEnv::new("traps-concurrent");
    // Two inputs of different sizes, so the winner is known from ntotal.
    write_fvecs(&env.path("a.fvecs"), D, &lcg_vectors(30_000, D, 1));
    write_fvecs(&env.path("b.fvecs"), D, &lcg_vectors(20_000, D, 2));
    for round in 0..3 {
        let spawn = |input: &str| {
            env.cmd()
                .args(["build", input, "-o", "same.index", "--factory", "Flat", "--batch", "1000", "-f", "-q"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("a.fvecs"), spawn("b.fvecs"));
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let mut ok = 0;
        for o in &outs {
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.success() {
                ok += 1;
                assert!(err.is_empty(), "{err}");
            } else {
                // The loser says why, on one line, naming the output.
                assert_eq!(o.status.code(), Some(1), "{err}");
                assert_eq!(err.trim_end().lines().count(), 1, "{err}");
                assert!(err.contains("same.index: another faissx is writing"), "{err}");
            }
        }
        assert!(ok >= 1, "round {round}: at least one build succeeds");
        // The sidecar describes the index next to it: `info` checks the size and CRC-32 the
        // sidecar records against the file, and the recorded input matches ntotal.
        let i = info(&env, "same.index");
        let input = i["meta"]["inputs"][0]["path"].as_str().unwrap().to_string();
        let want = if input.ends_with("a.fvecs") { 30_000 } else { 20_000 };
        assert_eq!(i["ntotal"], want, "round {round}: sidecar from another run: {i}");
        assert_eq!(i["meta"]["inputs"].as_array().unwrap().len(), 1);
        env.ok(&["search", "same.index", "a.fvecs", "-k", "1", "--format", "jsonl"]);
        assert_eq!(leftovers(&env.dir), Vec::<String>::new(), "round {round}");
    }
}

/// Run `faissx ARGS` reading `input` from stdin, send `sig` once the process is reading it
/// (its handlers are installed before it reads), then let it finish.
fn interrupt_while_reading(env: &TestEnv, args: &[&str], input: &[u8], sig: i32) -> std::process::Output {
    let mut child =
        env.cmd().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // More than a pipe holds: this write returns only once faissx has started reading.
    let (first, rest) = input.split_at(1 << 20);
    stdin.write_all(first).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    stdin.write_all(rest).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_and_sigterm_stop_a_build_remove_its_temp_files_and_exit_130() {
    let env = TestEnv::new("traps-sigint");
    let n = 40_000;
    write_npy_f32(&env.path("big.npy"), n, D, &lcg_vectors(n, D, 7));
    let bytes = std::fs::read(env.path("big.npy")).unwrap();
    for (sig, on_disk) in [(libc::SIGINT, true), (libc::SIGTERM, false)] {
        let mut args = vec!["build", "-", "-o", "big.index", "--factory", "IVF64,Flat", "--batch", "1000"];
        if on_disk {
            // Its lists are built in a temp file from the start.
            args.push("--on-disk");
        }
        let out = interrupt_while_reading(&env, &args, &bytes, sig);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "signal {sig}: {err}");
        assert_eq!(err.trim_end().lines().last(), Some("faissx: interrupted"), "{err}");
        assert!(!env.path("big.index").exists() && !env.path("big.index.ivfdata").exists());
        assert_eq!(leftovers(&env.dir), Vec::<String>::new(), "signal {sig}");
    }
    // Not interrupted, the same command succeeds.
    let mut child = env
        .cmd()
        .args(["build", "-", "-o", "big.index", "--factory", "IVF64,Flat", "-q"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(info(&env, "big.index")["ntotal"], n);
}

#[test]
fn quiet_builds_print_nothing_and_faiss_advice_shows_at_verbose() {
    let env = TestEnv::new("traps-quiet");
    write_fvecs(&env.path("few.fvecs"), D, &lcg_vectors(500, D, 3));
    // 500 training vectors for 64 lists: FAISS's k-means would print a WARNING (< 39 × 64).
    for (flags, factory) in [(&["-q"][..], "IVF64,Flat"), (&[][..], "IVF64,Flat"), (&["-q"][..], "IVF16,PQ4")] {
        let mut args = vec!["build", "few.fvecs", "-o", "x.index", "--factory", factory, "-f"];
        args.extend_from_slice(flags);
        let out = env.run(&args);
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("WARNING"), "{args:?}: {err}");
        if flags == ["-q"] {
            assert!(err.is_empty(), "{args:?} must print nothing: {err}");
        }
    }
    let out = env.run(&["build", "few.fvecs", "-o", "x.index", "--factory", "IVF64,Flat", "-f", "-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("training IVF64,Flat on 500 vectors: FAISS's k-means advises at least 2496"), "{err}");
    assert!(!err.contains("WARNING clustering"), "{err}");
    let out = env.run(&["build", "few.fvecs", "-o", "x.index", "--factory", "IVF16,PQ4", "-f", "-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("advises at least 9984"), "PQ codebooks of 256 centroids: {err}");
}

#[test]
fn a_smaller_split_replaces_the_whole_earlier_split_and_searches_refuse_shared_ids() {
    let env = TestEnv::new("traps-split");
    write_fvecs(&env.path("all.fvecs"), D, &lcg_vectors(400, D, 5));
    write_fvecs(&env.path("q.fvecs"), D, &lcg_vectors(5, D, 6));
    env.ok(&["build", "all.fvecs", "-o", "all.index", "-q"]);
    env.ok(&["split", "all.index", "--shards", "4", "-o", "shards/", "-q"]);
    // Without --force: the first shard exists.
    env.fails(&["split", "all.index", "--shards", "2", "-o", "shards/"], 2, "shards/all.0.index: already exists");
    let out = env.run(&["split", "all.index", "--shards", "2", "-o", "shards/", "-f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed shards/all.2.index, left by an earlier split"), "{err}");
    let mut names: Vec<String> =
        std::fs::read_dir(env.path("shards")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["all.0.index", "all.0.index.meta.json", "all.1.index", "all.1.index.meta.json"]);
    // The README's glob now finds the two shards, and they equal the whole.
    let want = parse_jsonl(&env.ok(&["search", "all.index", "q.fvecs", "-k", "5", "--format", "jsonl"]));
    let got = parse_jsonl(&env.ok(&[
        "search",
        "shards/all.0.index",
        "shards/all.1.index",
        "q.fvecs",
        "-k",
        "5",
        "--format",
        "jsonl",
    ]));
    assert_eq!(got, want);
    // A stale shard alone (no shard of the new split exists yet) is refused without --force.
    env.ok(&["split", "all.index", "--shards", "3", "-o", "three/", "-q"]);
    for f in ["all.0.index", "all.0.index.meta.json", "all.1.index", "all.1.index.meta.json"] {
        std::fs::remove_file(env.path("three").join(f)).unwrap();
    }
    env.fails(
        &["split", "all.index", "--shards", "2", "-o", "three/"],
        2,
        "three/all.2.index: a shard left by an earlier split",
    );
    // Scatter-gather refuses shards sharing ids, by name: a shard of another split…
    env.ok(&["split", "all.index", "--shards", "4", "-o", "four/", "-q"]);
    env.fails(
        &["search", "shards/all.0.index", "four/all.0.index", "q.fvecs", "-k", "5"],
        2,
        "shards/all.0.index and four/all.0.index both hold id 0",
    );
    // …and two indices each numbering its vectors from 0.
    env.ok(&["build", "all.fvecs", "-o", "copy.index", "-q"]);
    env.fails(
        &["search", "all.index", "copy.index", "q.fvecs", "-k", "5"],
        2,
        "all.index and copy.index both hold id 0",
    );
}

#[test]
fn remote_remove_on_a_position_numbered_index_says_it_renumbered() {
    let env = TestEnv::new("traps-renumber");
    let srv = Server::start(&env, &[]);
    write_fvecs(&env.path("v.fvecs"), D, &lcg_vectors(10, D, 8));
    let qr = |args: &[&str]| -> std::process::Output {
        let mut all = vec!["query-remote", "--server", &srv.endpoint];
        all.extend_from_slice(args);
        env.run(&all)
    };
    let d = D.to_string();
    assert!(qr(&["create", "flat", "-d", &d, "--index-type", "Flat"]).status.success());
    assert!(qr(&["add", "flat", "v.fvecs", "-q"]).status.success());
    assert!(qr(&["create", "mapped", "-d", &d, "--index-type", "IDMap2:L2"]).status.success());
    std::fs::write(env.path("ids.txt"), (0..10).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    let out = qr(&["add", "mapped", "v.fvecs", "--ids", "ids.txt", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = qr(&["remove", "flat", "3"]);
    assert!(out.status.success());
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["renumbered"], true, "{reply}");
    assert_eq!(reply["removed"], 1);
    assert!(reply["message"].as_str().unwrap().contains("moved down"), "{reply}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: flat: ids changed"), "{err}");
    // An index that stores ids keeps them: no warning.
    let out = qr(&["remove", "mapped", "3"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["renumbered"], false, "{reply}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // -q keeps the reply, drops the warning.
    let out = qr(&["remove", "flat", "0", "-q"]);
    assert!(out.stderr.is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"renumbered\":true"));
}

#[test]
fn help_examples_are_printed_verbatim_at_any_width() {
    let env = TestEnv::new("traps-help");
    let line = "  faissx build huge.fvecs -o huge.index --factory IVF65536,PQ32 --on-disk --train-size 1000000";
    for cols in ["30", "40", "80", "200"] {
        let out = env.cmd().args(["build", "--help"]).env("COLUMNS", cols).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.lines().any(|l| l == line), "COLUMNS={cols}: the example is broken:\n{help}");
        // The prose around it is still wrapped to the terminal.
        if cols == "40" {
            let mut prose = help.lines().take_while(|l| *l != "Examples:").filter(|l| !l.starts_with("Usage:"));
            assert!(prose.all(|l| l.chars().count() <= 40), "{help}");
        }
    }
}

#[test]
fn completions_load_in_bash_and_generate_for_zsh_and_fish() {
    let env = TestEnv::new("traps-complete");
    let bin = env!("CARGO_BIN_EXE_faissx");
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("source <('{bin}' completions bash) && complete -p faissx")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("-F _faissx faissx"), "{said}");
    assert!(env.ok(&["completions", "zsh"]).starts_with("#compdef faissx"));
    assert!(env.ok(&["completions", "fish"]).contains("complete -c faissx"));
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn npy_on_stdin_needs_no_input_format() {
    let env = TestEnv::new("traps-stdin");
    write_npy_f32(&env.path("v.npy"), 50, D, &lcg_vectors(50, D, 9));
    write_fvecs(&env.path("v.fvecs"), D, &lcg_vectors(50, D, 9));
    let pipe = |file: &str, args: &[&str]| {
        let mut child =
            env.cmd().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(&std::fs::read(env.path(file)).unwrap()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = pipe("v.npy", &["build", "-", "-o", "v.index", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(info(&env, "v.index")["ntotal"], 50);
    let out = pipe("v.npy", &["search", "v.index", "-", "-k", "1", "--format", "jsonl"]);
    let hits = parse_jsonl(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(hits[7].1, vec![7]);
    // Formats without a magic still need the flag, and the error says so.
    let out = pipe("v.fvecs", &["build", "-", "-o", "w.index"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --input-format"));
    let out = pipe("v.fvecs", &["build", "-", "-o", "w.index", "--input-format", "fvecs", "-q"]);
    assert!(out.status.success());
}

#[test]
fn format_json_is_one_document_and_jsonl_one_object_per_line() {
    let env = TestEnv::new("traps-format");
    write_fvecs(&env.path("v.fvecs"), D, &lcg_vectors(200, D, 4));
    write_fvecs(&env.path("q.fvecs"), D, &lcg_vectors(3, D, 5));
    env.ok(&["build", "v.fvecs", "-o", "v.index", "--factory", "IVF4,Flat", "-q"]);
    // info: one JSON document.
    let out = env.ok(&["info", "v.index", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ntotal"], 200);
    // bench: JSON Lines, one record per setting; `json`, its old name, still works.
    let mut lines = Vec::new();
    for fmt in ["jsonl", "json"] {
        let out = env.ok(&[
            "bench",
            "v.index",
            "--queries",
            "q.fvecs",
            "--base",
            "v.fvecs",
            "-k",
            "2",
            "--nprobe",
            "1,2",
            "--format",
            fmt,
            "-q",
        ]);
        let recs: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(recs.len(), 2, "{fmt}: {out}");
        lines.push(recs.iter().map(|r| r["setting"].clone()).collect::<Vec<_>>());
    }
    assert_eq!(lines[0], lines[1]);
    // search: JSON Lines only; `json` is not a search format.
    let err =
        String::from_utf8_lossy(&env.run(&["search", "v.index", "q.fvecs", "--format", "json"]).stderr).into_owned();
    assert!(err.contains("invalid value 'json'") && err.contains("jsonl"), "{err}");
}
