//! Issue 17 through object storage: a local S3 API (moto's server, tests/python/s3_server.py)
//! started and stopped by each test, with credentials and endpoint in the environment as a
//! user of MinIO or Ceph sets them.

use crate::python_compat::python;
use crate::util::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

const D: usize = 16;

/// A running local S3 server; killed on drop (also used by the cluster tests).
pub struct S3 {
    child: Child,
    _stdin: ChildStdin,
    /// Kept open so the server's later writes to stdout never meet a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    pub port: u16,
    /// `TMPDIR` of the commands run against it (staged downloads and uploads).
    tmp: std::path::PathBuf,
}

impl S3 {
    /// Start the server with `args` (`BUCKET...`, `--put BUCKET/KEY=FILE`).
    pub fn start(env: &TestEnv, args: &[String]) -> S3 {
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/python/s3_server.py"))
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the S3 server");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let port = line.strip_prefix("READY ").and_then(|p| p.trim().parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("S3 server did not start: {line:?}");
        };
        let tmp = env.path("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        S3 { child, _stdin: stdin, _stdout: stdout, port, tmp }
    }

    /// The variables that point a process at this server, as a user would set them for
    /// MinIO or Ceph: endpoint, plain http, (dummy) keys, region, and `TMPDIR`.
    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("TMPDIR", self.tmp.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Point `c` at this server ([`S3::vars`]).
    fn env<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.envs(self.vars())
    }

    /// Whether every staged file was removed.
    fn tmp_is_empty(&self) -> bool {
        std::fs::read_dir(&self.tmp).unwrap().next().is_none()
    }

    /// `faissx ARGS` against this server; requires success, returns stdout.
    fn ok(&self, env: &TestEnv, args: &[&str]) -> String {
        let out = self.env(&mut env.cmd()).args(args).output().unwrap();
        assert!(out.status.success(), "faissx {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `faissx ARGS` against this server; requires exit `code` and one stderr line with `needle`.
    fn fails(&self, env: &TestEnv, args: &[&str], code: i32, needle: &str) -> String {
        let out = self.env(&mut env.cmd()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "faissx {args:?}: {err}");
        assert!(err.contains(needle), "faissx {args:?}: stderr lacks {needle:?}:\n{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line expected:\n{err}");
        err
    }

    /// Keys (and sizes) in `bucket`, sorted.
    pub fn ls(&self, bucket: &str) -> Vec<(String, u64)> {
        let out = Command::new(python())
            .arg(repo_root().join("tests/python/s3_server.py"))
            .args(["ls", &self.port.to_string(), bucket])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, n) = l.rsplit_once(' ').unwrap();
                (k.to_string(), n.parse().unwrap())
            })
            .collect()
    }

    /// Download `bucket/key` to `dest`.
    pub fn get(&self, bucket: &str, key: &str, dest: &Path) {
        let out = Command::new(python())
            .arg(repo_root().join("tests/python/s3_server.py"))
            .args(["get", &self.port.to_string(), bucket, key])
            .arg(dest)
            .output()
            .unwrap();
        assert!(out.status.success(), "get {key}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three local input files (1200, 700, 1100 rows × 16), uploaded as `emb/day/part-<i>.npy`
/// (fvecs for the last, so both ranged layouts are read); returns their local names and the
/// server's `--put` arguments.
fn inputs(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut puts = Vec::new();
    for (i, n) in [1200usize, 700, 1100].into_iter().enumerate() {
        let ext = if i == 2 { "fvecs" } else { "npy" };
        let name = format!("part-{i}.{ext}");
        let data = lcg_vectors(n, D, 40 + i as u64);
        if i == 2 {
            write_fvecs(&env.path(&name), D, &data);
        } else {
            write_npy_f32(&env.path(&name), n, D, &data);
        }
        puts.extend(["--put".to_string(), format!("emb/day/{name}={}", env.path(&name).display())]);
        names.push(name);
    }
    write_npy_f32(&env.path("q.npy"), 50, D, &lcg_vectors(50, D, 99));
    (names, puts)
}

#[test]
fn split_build_through_s3_equals_the_local_build() {
    let env = TestEnv::new("object_store_build");
    let (files, mut args) = inputs(&env);
    args.extend(["emb".to_string(), "idx".to_string()]);
    let s3 = S3::start(&env, &args);
    let search = |ix: &str| env.ok(&["search", ix, "q.npy", "-k", "10", "--nprobe", "4", "--format", "jsonl"]);
    for factory in ["IVF16,Flat", "IVF16,PQ4x4"] {
        // Trained from the objects (a quoted glob, expanded by listing) and from the local
        // files: the same sample is read, so the same index comes out.
        s3.ok(
            &env,
            &[
                "train",
                "s3://emb/day/part-*",
                "-o",
                "s3://idx/trained.index",
                "--factory",
                factory,
                "--train-size",
                "2000",
                "-q",
                "-f",
            ],
        );
        let mut local = vec!["train"];
        local.extend(files.iter().map(String::as_str));
        local.extend_from_slice(&["-o", "local.index", "--factory", factory, "--train-size", "2000", "-q", "-f"]);
        env.ok(&local);
        s3.get("idx", "trained.index", &env.path("trained.index"));
        s3.get("idx", "trained.index.meta.json", &env.path("trained.index.meta.json"));
        assert_eq!(
            std::fs::read(env.path("trained.index")).unwrap(),
            std::fs::read(env.path("local.index")).unwrap(),
            "{factory}: trained from objects"
        );
        // One machine: every file added in order to a copy of the trained index.
        std::fs::copy(env.path("trained.index"), env.path("one.index")).unwrap();
        std::fs::copy(env.path("trained.index.meta.json"), env.path("one.index.meta.json")).unwrap();
        for f in &files {
            env.ok(&["add", "one.index", f, "-q"]);
        }
        // Four tasks as parallel processes reading and writing the bucket.
        let children: Vec<_> = (0..4)
            .map(|i| {
                let mut c = env.cmd();
                s3.env(&mut c)
                    .args(["add", "s3://idx/trained.index", "s3://emb/day/part-*", "--task-count", "4"])
                    .args(["-o", "s3://idx/parts/", "-q"])
                    .env("JOB_COMPLETION_INDEX", i.to_string());
                c.spawn().unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "{factory}: a task failed");
        }
        let want = search("one.index");
        s3.ok(&env, &["merge", "s3://idx/parts/*.index", "-o", "merged.index", "-q", "-f"]);
        assert_eq!(search("merged.index"), want, "{factory}: parts merged from the bucket");
        s3.ok(&env, &["merge", "s3://idx/parts/*.index", "-o", "od.index", "--on-disk", "-q", "-f"]);
        assert_eq!(search("od.index"), want, "{factory}: merged on disk");
        // The merged index to the bucket, and back.
        s3.ok(&env, &["merge", "s3://idx/parts/*.index", "-o", "s3://idx/docs.index", "-q", "-f"]);
        s3.get("idx", "docs.index", &env.path("back.index"));
        s3.get("idx", "docs.index.meta.json", &env.path("back.index.meta.json"));
        assert_eq!(search("back.index"), want, "{factory}: merged into the bucket");
    }
    let keys: Vec<String> = s3.ls("idx").into_iter().map(|(k, _)| k).collect();
    let mut expect = vec!["docs.index".to_string(), "docs.index.meta.json".into()];
    for i in 0..4 {
        expect.push(format!("parts/part-{i}-of-4.index"));
        expect.push(format!("parts/part-{i}-of-4.index.meta.json"));
    }
    expect.extend(["trained.index".to_string(), "trained.index.meta.json".into()]);
    assert_eq!(keys, expect, "only whole outputs in the bucket");
    // A task re-run (after a kill) uploads the same part.
    s3.get("idx", "parts/part-2-of-4.index", &env.path("before.index"));
    s3.ok(
        &env,
        &["add", "s3://idx/trained.index", "s3://emb/day/part-*", "--task", "2/4", "-o", "s3://idx/parts", "-q"],
    );
    s3.get("idx", "parts/part-2-of-4.index", &env.path("after.index"));
    assert_eq!(std::fs::read(env.path("after.index")).unwrap(), std::fs::read(env.path("before.index")).unwrap());
    // A missing part is refused by name.
    s3.fails(&env, &["merge", "s3://idx/parts/part-[013]-of-4.index", "-o", "m.index", "-f"], 2, "part-2-of-4 missing");
    assert!(!env.path("m.index").exists());
    assert!(s3.tmp_is_empty(), "staged files left in TMPDIR");
}

#[test]
fn object_store_errors_are_one_line_and_leave_nothing() {
    let env = TestEnv::new("object_store_errors");
    let (_, mut args) = inputs(&env);
    write_npy_f32(&env.path("d8.npy"), 100, 8, &lcg_vectors(100, 8, 1));
    let mut bad = lcg_vectors(700, D, 2);
    bad[300 * D + 5] = f32::NAN;
    write_npy_f32(&env.path("nan.npy"), 700, D, &bad);
    args.extend(["--put".into(), format!("emb/d8.npy={}", env.path("d8.npy").display())]);
    args.extend(["--put".into(), format!("emb/bad/nan.npy={}", env.path("nan.npy").display())]);
    args.extend(["emb".to_string(), "idx".to_string()]);
    let s3 = S3::start(&env, &args);
    let train = |input: &str, out: &str| -> Vec<String> {
        ["train", input, "-o", out, "--factory", "IVF4,Flat", "--train-size", "500"].map(String::from).to_vec()
    };
    let run_fail = |v: Vec<String>, code: i32, needle: &str| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        s3.fails(&env, &a, code, needle)
    };
    run_fail(train("s3://emb/nope.npy", "t.index"), 2, "s3://emb/nope.npy: no such object");
    run_fail(train("s3://emb/day/*.bin", "t.index"), 2, "s3://emb/day/*.bin: no file matches");
    run_fail(train("s3://nobucket/x.npy", "t.index"), 2, "s3://nobucket/x.npy");
    // `?` is a wildcard in the key, not the start of a query: part-0.npy and part-1.npy.
    let out = s3.env(&mut env.cmd()).args(train("s3://emb/day/part-?.npy", "q.index")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("on 500 of 1900 vectors"), "{err}");
    // Inputs of mixed d: the object is named.
    let mut mixed = train("s3://emb/day/part-0.npy", "t.index");
    mixed.insert(2, "s3://emb/d8.npy".into());
    run_fail(mixed, 2, "s3://emb/d8.npy: vectors have d=8");
    // An existing output object is kept without --force.
    s3.ok(&env, &["train", "s3://emb/day/part-0.npy", "-o", "s3://idx/t.index", "--factory", "IVF4,Flat", "-q"]);
    run_fail(train("s3://emb/day/part-0.npy", "s3://idx/t.index"), 2, "s3://idx/t.index: exists");
    // A task that fails on bad data (NaN in its slice) uploads no part.
    let before = s3.ls("idx");
    s3.fails(
        &env,
        &["add", "s3://idx/t.index", "s3://emb/bad/nan.npy", "--task", "0/2", "-o", "s3://idx/parts/"],
        2,
        "s3://emb/bad/nan.npy: record 300 component 5 is NaN",
    );
    assert_eq!(s3.ls("idx"), before, "nothing new in the bucket");
    s3.fails(&env, &["add", "s3://idx/t.index", "part-0.npy"], 2, "needs a local file");
    // Parts of two trained indices (different quantizers) are not merged; the error names the
    // object, not its copy in TMPDIR.
    s3.ok(&env, &["train", "s3://emb/day/part-1.npy", "-o", "s3://idx/t2.index", "--factory", "IVF4,Flat", "-q"]);
    for (i, trained) in ["s3://idx/t.index", "s3://idx/t2.index"].into_iter().enumerate() {
        let task = format!("{i}/2");
        s3.ok(&env, &["add", trained, "s3://emb/day/part-0.npy", "--task", &task, "-o", "s3://idx/mix/", "-q"]);
    }
    s3.fails(
        &env,
        &["merge", "s3://idx/mix/*.index", "-o", "mix.index"],
        2,
        "s3://idx/mix/part-1-of-2.index: built from another trained index",
    );
    assert!(!env.path("mix.index").exists());
    // Any command's vector inputs may be objects: build and search read them by ranges.
    s3.ok(&env, &["build", "s3://emb/day/part-0.npy", "-o", "b.index", "--factory", "Flat", "-q"]);
    env.ok(&["build", "part-0.npy", "-o", "l.index", "--factory", "Flat", "-q"]);
    let found = s3.ok(&env, &["search", "b.index", "s3://emb/day/part-2.fvecs", "-k", "3", "--format", "jsonl"]);
    assert_eq!(found, env.ok(&["search", "l.index", "part-2.fvecs", "-k", "3", "--format", "jsonl"]));
    s3.fails(
        &env,
        &["merge", "s3://idx/t.index", "s3://idx/t.index", "-o", "s3://idx/m.index", "--on-disk"],
        2,
        "--on-disk writes inverted lists beside a local index",
    );
    // An unreachable endpoint and missing credentials: one line each, naming the object.
    let mut c = env.cmd();
    s3.env(&mut c).env("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    let out = c.args(train("s3://emb/day/part-0.npy", "t.index")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("faissx: s3://emb/day/part-0.npy: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let mut c = env.cmd();
    s3.env(&mut c)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1");
    let out = c.args(train("s3://emb/day/part-0.npy", "t.index")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("s3://emb/day/part-0.npy: no usable credentials"), "{err}");
    assert!(err.contains("AWS_*"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!env.path("t.index").exists());
    assert!(s3.tmp_is_empty(), "staged files left in TMPDIR");
}

#[test]
fn large_objects_travel_in_windows_and_parts() {
    // 1,200,000 × 16 f32 (76.8 MB): more than one 64 MiB read window, so batches straddle
    // windows and the next window is read ahead; tasks read only their slice; a part larger
    // than one upload part (16 MiB) goes up as a multipart upload.
    let env = TestEnv::new("object_store_large");
    let n = 1_200_000;
    write_npy_f32(&env.path("big.npy"), n, D, &lcg_vectors(n, D, 7));
    let put = format!("emb/big.npy={}", env.path("big.npy").display());
    let s3 = S3::start(&env, &["--put".into(), put, "emb".into(), "idx".into()]);
    env.ok(&["train", "big.npy", "-o", "trained.index", "--factory", "IVF8,Flat", "--train-size", "5000", "-q"]);
    for (task, batch) in [("0/1", "300000"), ("1/3", "100000")] {
        let local = ["add", "trained.index", "big.npy", "--task", task, "-o", "local", "--batch", batch, "-q"];
        env.ok(&local);
        let remote = ["add", "trained.index", "s3://emb/big.npy", "--task", task, "-o", "s3://idx/p", "--batch", batch];
        s3.ok(&env, &[remote.as_slice(), &["-q"]].concat());
        let name = format!("part-{}-of-{}.index", &task[..1], &task[2..]);
        s3.get("idx", &format!("p/{name}"), &env.path("remote.index"));
        let want = std::fs::read(env.path(&format!("local/{name}"))).unwrap();
        assert_eq!(std::fs::read(env.path("remote.index")).unwrap(), want, "task {task}");
    }
    let keys = s3.ls("idx");
    let whole = keys.iter().find(|(k, _)| k == "p/part-0-of-1.index").unwrap();
    assert!(whole.1 > 16 << 20, "{keys:?}");
    assert!(s3.tmp_is_empty(), "staged files left in TMPDIR");
    // SIGTERM (a deleted Kubernetes pod) at some point of a task reading and uploading: it
    // stops (or has finished), its staged files are gone, and the bucket holds no part or the
    // whole one.
    let want = std::fs::read(env.path("local/part-0-of-1.index")).unwrap();
    for delay_ms in [300, 600, 900] {
        let mut c = env.cmd();
        s3.env(&mut c).args(["add", "trained.index", "s3://emb/big.npy", "--task", "0/1", "-o", "s3://idx/t", "-q"]);
        let mut child = c.stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let code = child.wait().unwrap().code();
        assert!(matches!(code, Some(0) | Some(130)), "{code:?}");
        assert!(s3.tmp_is_empty(), "staged files left in TMPDIR after SIGTERM at {delay_ms} ms");
        if s3.ls("idx").iter().any(|(k, _)| k == "t/part-0-of-1.index") {
            s3.get("idx", "t/part-0-of-1.index", &env.path("t.index"));
            assert_eq!(std::fs::read(env.path("t.index")).unwrap(), want, "a part under its name is whole");
        }
    }
}
