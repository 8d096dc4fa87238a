//! `faissx serve --data-dir` when the disk or the files go wrong (issue 10, findings 5, 6, 9,
//! 11): a damaged WAL or checkpoint quarantines that index only, with a reason naming the
//! file and offset, and leaves its files as they were; stray entries do not stop start-up; a
//! full disk (a small tmpfs as the data dir, or RLIMIT_FSIZE on the server) and `kill -9` in
//! the middle of writes lose no acknowledged vector, and train/reset never change memory
//! unless their checkpoint succeeded.

use crate::serve::Server;
use crate::util::*;
use faissx::engine::client::{Client, ClientConfig};
use faissx::engine::protocol::{self, Msg, Value};
use faissx::engine::{Error, ErrorKind};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `faissx serve --data-dir DATA`, stderr to `log` (or nowhere), SIGXFSZ ignored so that a
/// file size limit makes writes fail with EFBIG instead of killing the server.
pub fn start(env: &TestEnv, data: &Path, log: Option<&Path>) -> Server {
    let mut cmd = env.cmd();
    cmd.args(["serve", "--bind-address", "127.0.0.1", "--port", "0", "-q", "--data-dir"]).arg(data);
    cmd.stdout(Stdio::piped());
    match log {
        Some(p) => cmd.stderr(std::fs::File::create(p).unwrap()),
        None => cmd.stderr(Stdio::null()),
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let endpoint = line.trim().to_string();
    let log_text = log.map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default();
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "serve did not start: {line:?}\n{log_text}");
    Server { child, endpoint }
}

fn client(srv: &Server, timeout: Duration) -> Client {
    Client::connect(ClientConfig {
        server: srv.endpoint.clone(),
        api_key: None,
        tenant: None,
        timeout,
        server_public_key: None,
    })
    .unwrap()
}

fn id(v: &str) -> (&'static str, Value) {
    ("index_id", Value::from(v))
}

/// A field of a msgpack map value.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
        _ => None,
    }
}

/// `list_indices` rows by id.
fn listed(c: &mut Client) -> Vec<(String, Value)> {
    let r = c.call("list_indices", vec![]).unwrap();
    let Some(Value::Array(rows)) = r.get("indexes") else { panic!("no indexes in {r:?}") };
    rows.iter().map(|v| (field(v, "index_id").unwrap().as_str().unwrap().to_string(), v.clone())).collect()
}

fn ntotal(c: &mut Client, name: &str) -> u64 {
    c.call("get_index_status", vec![id(name)]).unwrap().uint("ntotal").unwrap().unwrap()
}

fn is_trained(c: &mut Client, name: &str) -> bool {
    c.call("get_index_status", vec![id(name)]).unwrap().flag("is_trained").unwrap()
}

fn reconstruct(c: &mut Client, name: &str, key: i64) -> Vec<f32> {
    let r = c.call("reconstruct", vec![id(name), ("id", Value::from(key))]).unwrap();
    let Some(Value::Array(v)) = r.get("vector") else { panic!("no vector in {r:?}") };
    v.iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Byte offsets where the records of a WAL start (`[u32 len][u32 crc][payload]`).
fn record_starts(wal: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= wal.len() {
        out.push(pos);
        pos += 8 + u32::from_le_bytes(wal[pos..pos + 4].try_into().unwrap()) as usize;
    }
    assert_eq!(pos, wal.len(), "the WAL must be whole before the test damages it");
    out
}

/// Every file of a folder with its bytes, sorted by name.
fn snapshot_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn serve_flipped_wal_byte_quarantines_only_that_index() {
    let env = TestEnv::new("dur-flip");
    let data = env.path("data");
    let d = 8;
    let srv = start(&env, &data, Some(&env.path("first.log")));
    let mut c = client(&srv, Duration::from_secs(30));
    c.create_index("a", d, "Flat", None).unwrap();
    for i in 0..100 {
        c.add_vectors("a", &lcg_vectors(10, d, i), d, None, None).unwrap();
    }
    c.create_index("b", d, "Flat", None).unwrap();
    let b = lcg_vectors(300, d, 999);
    c.add_vectors("b", &b, d, None, None).unwrap();
    srv.kill9(); // no clean shutdown: the WALs stay as they are

    let a_dir = data.join("tenants/default/a");
    let wal = a_dir.join("wal.log");
    let mut bytes = std::fs::read(&wal).unwrap();
    let starts = record_starts(&bytes);
    assert_eq!(starts.len(), 100);
    let at = starts[49]; // record 50
    bytes[at + 8 + 40] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();
    let before = snapshot_files(&a_dir);

    let log = env.path("second.log");
    let srv = start(&env, &data, Some(&log));
    let mut c = client(&srv, Duration::from_secs(30));
    c.ping().unwrap();
    let rows = listed(&mut c);
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    let a = &rows[0].1;
    assert_eq!(field(a, "status").unwrap().as_str(), Some("quarantined"));
    let reason = field(a, "reason").unwrap().as_str().unwrap().to_string();
    for needle in ["wal.log", &format!("record 50 at byte offset {at}"), "checksum mismatch"] {
        assert!(reason.contains(needle), "reason lacks {needle:?}: {reason}");
    }
    // Paths are relative to the data directory: the server's layout is not the tenant's business.
    assert!(reason.contains("tenants/default/a/wal.log") && !reason.contains(data.to_str().unwrap()), "{reason}");
    assert_eq!(field(&rows[1].1, "status").unwrap().as_str(), Some("ok"));
    assert_eq!(field(&rows[1].1, "vector_count").unwrap().as_u64(), Some(300));
    let h = c.call("health", vec![]).unwrap();
    assert_eq!(h.str("status").unwrap(), Some("degraded"));
    let Some(Value::Array(q)) = h.get("quarantined") else { panic!("no quarantined list in health") };
    assert_eq!(q.len(), 1);
    assert_eq!(field(&q[0], "index_id").unwrap().as_str(), Some("a"));

    // "b" serves all its vectors, and takes more.
    let (n, _) = c.search("b", &b[5 * d..6 * d], d, &knn(1), false).unwrap();
    assert_eq!(n.ids, vec![5]);
    c.add_vectors("b", &lcg_vectors(10, d, 1000), d, None, None).unwrap();
    assert_eq!(ntotal(&mut c, "b"), 310);
    // "a" is refused by name, its name cannot be taken, and its files are untouched.
    for e in [
        c.call(
            "search",
            vec![id("a"), ("query_vectors", protocol::vectors_value(&b[..d], d, protocol::Encoding::Binary))],
        )
        .unwrap_err(),
        c.add_vectors("a", &b[..d], d, None, None).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("quarantined") && e.to_string().contains("wal.log"), "{e}");
    }
    let e = c.create_index("a", d, "Flat", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    srv.stop();
    assert_eq!(snapshot_files(&a_dir), before, "the quarantined index's files must stay as they were");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("index \"a\" of tenant \"default\" is quarantined"), "{log}");
}

#[test]
fn serve_corrupt_checkpoint_and_strays_do_not_stop_start_up() {
    let env = TestEnv::new("dur-cp");
    let data = env.path("data");
    let d = 8;
    let srv = start(&env, &data, None);
    let mut c = client(&srv, Duration::from_secs(30));
    c.create_index("c", d, "Flat", None).unwrap();
    c.add_vectors("c", &lcg_vectors(200, d, 1), d, None, None).unwrap();
    c.create_index("d", d, "Flat", None).unwrap();
    let dv = lcg_vectors(50, d, 2);
    c.add_vectors("d", &dv, d, None, None).unwrap();
    srv.stop(); // clean: both are checkpointed

    let tenant = data.join("tenants/default");
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(tenant.join("c/CHECKPOINT")).unwrap()).unwrap();
    let iname = cp["index"].as_str().unwrap().to_string();
    assert!(cp["index_crc32"].is_u64(), "{cp}");
    let ipath = tenant.join("c").join(&iname);
    let mut bytes = std::fs::read(&ipath).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x08;
    std::fs::write(&ipath, &bytes).unwrap();
    std::fs::write(tenant.join("stray.txt"), b"not an index").unwrap();
    std::fs::write(data.join("tenants/notes.txt"), b"not a tenant").unwrap();
    std::fs::write(tenant.join("d/index-7.faiss.tmp"), b"half a checkpoint").unwrap();

    let log = env.path("second.log");
    let srv = start(&env, &data, Some(&log));
    let mut c = client(&srv, Duration::from_secs(30));
    let rows = listed(&mut c);
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["c", "d"]);
    let reason = field(&rows[0].1, "reason").unwrap().as_str().unwrap().to_string();
    assert!(reason.contains(&iname) && reason.contains("checksum"), "{reason}");
    assert_eq!(ntotal(&mut c, "d"), 50);
    assert_eq!(reconstruct(&mut c, "d", 49), dv[49 * d..].to_vec());
    assert!(!tenant.join("d/index-7.faiss.tmp").exists(), "leftover temp files are removed");
    assert!(tenant.join("stray.txt").exists(), "stray files are ignored, not removed");
    assert_eq!(std::fs::read(&ipath).unwrap(), bytes, "the damaged file is kept");
    let e = c.call("get_index_status", vec![id("c")]).unwrap_err();
    assert!(e.to_string().contains("quarantined") && e.to_string().contains("checksum"), "{e}");
    srv.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    for needle in ["stray.txt", "notes.txt", "index-7.faiss.tmp", "index \"c\" of tenant \"default\" is quarantined"] {
        assert!(log.contains(needle), "stderr lacks {needle:?}:\n{log}");
    }
}

/// A tmpfs mounted over a folder, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        matches!(st, Ok(s) if s.success()).then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// How the test runs out of disk.
enum Disk {
    /// The data dir is a small tmpfs: writes fail with ENOSPC.
    Tmpfs,
    /// RLIMIT_FSIZE on the server: writes past the limit fail with EFBIG.
    FileSizeLimit,
}

pub fn set_file_size_limit(srv: &Server, bytes: u64) {
    let lim = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall on our own child.
    let rc = unsafe { libc::prlimit(srv.child.id() as libc::pid_t, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Fill what is left of the tmpfs at `data` with a file (until ENOSPC).
fn fill(data: &Path) {
    let mut f = std::fs::File::create(data.join("filler")).unwrap();
    let block = vec![0xAAu8; 4096];
    for _ in 0..100_000 {
        if f.write_all(&block).and_then(|_| f.sync_data()).is_err() {
            return;
        }
    }
    panic!("the tmpfs never filled up");
}

/// Adds of `batch` vectors to "full" until one fails; acknowledged rows are appended to `acked`.
fn add_until_failure(c: &mut Client, acked: &mut Vec<f32>, batch: usize, d: usize, seed: &mut u64) -> usize {
    let mut ok = 0;
    for _ in 0..100_000 {
        *seed += 1;
        let x = lcg_vectors(batch, d, *seed);
        match c.add_vectors("full", &x, d, None, None) {
            Ok(r) => {
                acked.extend_from_slice(&x);
                assert_eq!(r.ntotal, (acked.len() / d) as u64);
                ok += 1;
            }
            Err(e) => {
                assert_ne!(e.kind(), ErrorKind::Timeout, "the server must answer a failed write: {e}");
                assert!(e.to_string().contains("wal.log"), "{e}");
                return ok;
            }
        }
    }
    panic!("the disk never filled up");
}

fn full_disk(disk: Disk, name: &str) {
    let env = TestEnv::new(name);
    let data = env.path("data");
    let _mount = match disk {
        Disk::Tmpfs => match Tmpfs::mount(&data, "4m") {
            Some(m) => Some(m),
            None => {
                eprintln!("{name}: cannot mount a tmpfs here; emulating the full disk with RLIMIT_FSIZE");
                return full_disk(Disk::FileSizeLimit, &format!("{name}-rlimit"));
            }
        },
        Disk::FileSizeLimit => None,
    };
    let d = 32;
    // With a size limit the server's stderr must not be a regular file (it would hit the limit).
    let srv = start(&env, &data, None);
    let mut c = client(&srv, Duration::from_secs(30));
    c.create_index("full", d, "Flat", None).unwrap();
    c.create_index("ivf", d, "IVF4,Flat", None).unwrap();
    let ballast = data.join("ballast");
    let reserve = data.join("reserve");
    match disk {
        Disk::Tmpfs => {
            std::fs::write(&ballast, vec![1u8; 64 << 10]).unwrap();
            std::fs::write(&reserve, vec![1u8; 256 << 10]).unwrap();
        }
        Disk::FileSizeLimit => set_file_size_limit(&srv, 512 << 10),
    }
    let mut acked: Vec<f32> = Vec::new();
    let mut seed = 0u64;
    assert!(add_until_failure(&mut c, &mut acked, 64, d, &mut seed) > 0);
    // Room again (ballast gone, limit raised): later adds go in after the failed one, and
    // must all be there after restart.
    match disk {
        Disk::Tmpfs => std::fs::remove_file(&ballast).unwrap(),
        Disk::FileSizeLimit => set_file_size_limit(&srv, 576 << 10),
    }
    assert!(add_until_failure(&mut c, &mut acked, 8, d, &mut seed) > 0, "adds after a failed one must work");
    // Now nothing at all can be written.
    match disk {
        Disk::Tmpfs => fill(&data),
        Disk::FileSizeLimit => set_file_size_limit(&srv, 0),
    }
    // (What is left in the last page of the WAL may still take a few small records.)
    add_until_failure(&mut c, &mut acked, 1, d, &mut seed);
    let n = (acked.len() / d) as u64;

    // A train whose checkpoint fails leaves the index untrained.
    let e = c.train("ivf", &lcg_vectors(256, d, 7), d).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(!is_trained(&mut c, "ivf"));
    let e = c.add_vectors("ivf", &lcg_vectors(4, d, 8), d, None, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotTrained, "{e}");
    // A reset whose checkpoint fails keeps the vectors.
    let e = c.call("reset", vec![id("full")]).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(ntotal(&mut c, "full"), n);
    srv.kill9();

    // Restart on the full disk: every acknowledged vector is there, nothing else.
    let log = env.path("restart.log");
    let srv = start(&env, &data, Some(&log));
    let mut c = client(&srv, Duration::from_secs(30));
    assert_eq!(ntotal(&mut c, "full"), n, "acknowledged vectors after restart");
    for key in [0, n / 2, n - 1] {
        let k = key as usize;
        assert_eq!(reconstruct(&mut c, "full", key as i64), acked[k * d..(k + 1) * d].to_vec(), "vector {key}");
    }
    assert!(!is_trained(&mut c, "ivf"));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.contains("quarantined"), "{log_text}");
    // With room again, train and reset work and last.
    if matches!(disk, Disk::Tmpfs) {
        std::fs::remove_file(&reserve).unwrap();
    }
    c.train("ivf", &lcg_vectors(256, d, 7), d).unwrap();
    c.call("reset", vec![id("full")]).unwrap();
    c.add_vectors("full", &lcg_vectors(3, d, 9), d, None, None).unwrap();
    srv.kill9();
    let srv = start(&env, &data, None);
    let mut c = client(&srv, Duration::from_secs(30));
    assert!(is_trained(&mut c, "ivf"));
    assert_eq!(ntotal(&mut c, "full"), 3);
    srv.stop();
}

#[test]
fn serve_full_disk_loses_no_acknowledged_write() {
    full_disk(Disk::Tmpfs, "dur-tmpfs");
}

#[test]
fn serve_file_size_limit_loses_no_acknowledged_write() {
    full_disk(Disk::FileSizeLimit, "dur-fsize");
}

#[test]
fn serve_kill9_during_writes_20_trials() {
    let env = TestEnv::new("dur-kill9");
    let data = env.path("data");
    let d = 8;
    let batch = 4usize;
    let vectors = |trial: i64, b: i64| lcg_vectors(batch, d, (trial * 1000 + b) as u64);
    let mut srv = start(&env, &data, None);
    client(&srv, Duration::from_secs(30)).create_index("k", d, "IDMap2:Flat", None).unwrap();
    // (trial, batch) of every acknowledged add so far.
    let mut acked: Vec<(i64, i64)> = Vec::new();
    for trial in 0..20i64 {
        let mut c = client(&srv, Duration::from_secs(30));
        let pid = srv.child.id() as libc::pid_t;
        // Adds, with a checkpoint (snapshot) now and then, so kills land in both.
        let reqs: Vec<Vec<u8>> = (0..200i64)
            .map(|b| {
                if b % 5 == 4 {
                    return c.config().request("snapshot", vec![id("k")]);
                }
                let ids: Vec<i64> = (0..batch as i64).map(|i| trial * 1_000_000 + b * 16 + i).collect();
                c.config().request(
                    "add_vectors",
                    vec![
                        id("k"),
                        ("vectors", protocol::vectors_value(&vectors(trial, b), d, protocol::Encoding::Binary)),
                        ("ids", Value::Binary(protocol::i64_bytes(&ids))),
                    ],
                )
            })
            .collect();
        let kill_after = 1 + (trial as usize * 7) % 13;
        let spin = Duration::from_micros((trial as u64 * 137) % 900);
        let mut replies = 0usize;
        let r = c.pipeline(reqs, 4, |i, reply: faissx::engine::Result<Msg>, _| {
            reply?;
            if i % 5 != 4 {
                acked.push((trial, i as i64));
            }
            replies += 1;
            if replies == kill_after {
                let t = std::time::Instant::now();
                while t.elapsed() < spin {
                    std::hint::spin_loop();
                }
                // SAFETY: plain syscall on our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err(Error::new(ErrorKind::Interrupted, "killed"));
            }
            Ok(())
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Interrupted, "trial {trial}");
        let _ = srv.child.wait();
        srv = start(&env, &data, None);
        let mut c = client(&srv, Duration::from_secs(30));
        let n = ntotal(&mut c, "k");
        assert!(n >= (acked.len() * batch) as u64, "trial {trial}: {n} vectors, {} acknowledged", acked.len() * batch);
        // Every vector acknowledged in this trial, and the first and last of earlier ones.
        let mut check: Vec<(i64, i64)> = acked.iter().filter(|(t, _)| *t == trial).copied().collect();
        check.extend(acked.first().copied());
        for (t, b) in check {
            let want = vectors(t, b);
            let got = reconstruct(&mut c, "k", t * 1_000_000 + b * 16 + batch as i64 - 1);
            assert_eq!(got, want[(batch - 1) * d..].to_vec(), "trial {trial}: batch {b} of trial {t}");
        }
    }
    srv.stop();
}

/// FAISS's own file writer ignores the error of its final flush (`fclose`), so an index
/// file cut short by a full disk would pass for a good checkpoint, the WAL would be
/// emptied, and the vectors gone at the next start. A file size limit a few bytes short of
/// the index file makes exactly that final flush fail.
#[test]
fn serve_checkpoint_cut_short_by_the_disk_is_an_error() {
    let env = TestEnv::new("dur-short");
    let data = env.path("data");
    let d = 32;
    let srv = start(&env, &data, None);
    let mut c = client(&srv, Duration::from_secs(30));
    c.create_index("t", d, "Flat", None).unwrap();
    let x = lcg_vectors(100, d, 3);
    c.add_vectors("t", &x, d, None, None).unwrap();
    c.call("snapshot", vec![id("t")]).unwrap();
    let cp_path = data.join("tenants/default/t/CHECKPOINT");
    let cp_bytes = std::fs::read(&cp_path).unwrap();
    let cp: serde_json::Value = serde_json::from_slice(&cp_bytes).unwrap();
    let size = cp["index_bytes"].as_u64().unwrap();
    c.add_vectors("t", &lcg_vectors(1, d, 4), d, None, None).unwrap();
    set_file_size_limit(&srv, size + 4 * d as u64 - 8);
    let e = c.call("snapshot", vec![id("t")]).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(std::fs::read(&cp_path).unwrap(), cp_bytes, "CHECKPOINT must not move");
    srv.kill9();
    let log = env.path("restart.log");
    let srv = start(&env, &data, Some(&log));
    let mut c = client(&srv, Duration::from_secs(30));
    assert_eq!(ntotal(&mut c, "t"), 101, "{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(reconstruct(&mut c, "t", 99), x[99 * d..].to_vec());
    srv.stop();
}

/// A mutation that is logged but then fails to apply is taken out of the log (so the next
/// start does not meet it); a log record that fails to apply on replay quarantines its
/// index, naming the record.
#[test]
fn serve_failed_mutation_is_not_replayed_and_a_bad_record_quarantines() {
    let env = TestEnv::new("dur-replay");
    let data = env.path("data");
    let d = 8;
    let srv = start(&env, &data, None);
    let mut c = client(&srv, Duration::from_secs(30));
    c.create_index("h", d, "HNSW16", None).unwrap();
    c.add_vectors("h", &lcg_vectors(20, d, 1), d, None, None).unwrap();
    // FAISS cannot remove from HNSW: an UNSUPPORTED error reply, and nothing left in the log.
    let wal_h = data.join("tenants/default/h/wal.log");
    let before = std::fs::read(&wal_h).unwrap();
    let e = c.call("remove_ids", vec![id("h"), ("ids", Value::Binary(protocol::i64_bytes(&[0])))]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(std::fs::read(&wal_h).unwrap(), before);
    c.add_vectors("h", &lcg_vectors(5, d, 2), d, None, None).unwrap();
    c.create_index("e", d, "Flat", None).unwrap();
    c.add_vectors("e", &lcg_vectors(5, d, 3), d, None, None).unwrap();
    srv.kill9();
    // A record with a good checksum that no server wrote: an unknown operation, seq 2.
    let payload = protocol::encode_value(&Value::Map(vec![
        (Value::from("op"), Value::from("bogus")),
        (Value::from("seq"), Value::from(2u64)),
    ]));
    let mut rec = (payload.len() as u32).to_le_bytes().to_vec();
    rec.extend_from_slice(&faissx::engine::server::store::crc32(&payload).to_le_bytes());
    rec.extend_from_slice(&payload);
    let wal_e = data.join("tenants/default/e/wal.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal_e).unwrap();
    f.write_all(&rec).unwrap();
    drop(f);

    let srv = start(&env, &data, None);
    let mut c = client(&srv, Duration::from_secs(30));
    assert_eq!(ntotal(&mut c, "h"), 25);
    let rows = listed(&mut c);
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["e", "h"]);
    assert_eq!(field(&rows[0].1, "status").unwrap().as_str(), Some("quarantined"));
    let reason = field(&rows[0].1, "reason").unwrap().as_str().unwrap();
    assert!(reason.contains("record seq 2") && reason.contains("bogus"), "{reason}");
    assert_eq!(field(&rows[1].1, "status").unwrap().as_str(), Some("ok"));
    srv.stop();
}
