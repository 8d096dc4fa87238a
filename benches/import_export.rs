//! Import, export and hot swap benchmark (issue 12): `faissx serve` over tcp://127.0.0.1.
//!
//! ```sh
//! cargo build --release && cargo bench --bench import_export      # ~1 GB index: needs ~6 GB of disk
//! IMPORT_BENCH_N=200000 cargo bench --bench import_export         # ~100 MB index
//! IMPORT_BENCH_PARTS=swap cargo bench --bench import_export       # one part only (transfer, swap)
//! ```
//!
//! 1. `transfer`: a Flat index of IMPORT_BENCH_N (default 2,000,000) × 128 f32 vectors
//!    (~1 GB), written as `.npy` by this program and built with `faissx build --factory Flat`,
//!    imported into a `serve --data-dir` server with `Client::import_index` (what
//!    `query-remote import` runs) and exported back with `Client::export_index`, by a fresh
//!    server each time: IMPORT_BENCH_MODES (default `loaded,mmap`: loaded, then with
//!    `serve --mmap`; any order or subset). Reported:
//!    MB/s (file bytes / client wall time, 1 MB = 10^6 bytes) of the import, split into the
//!    upload (chunks) and the `import_index` call (check, persist, load, swap), and of the
//!    export; the server's VmRSS and RssAnon (/proc/PID/status, sampled every 20 ms by a
//!    thread) before, at the peak of the upload, at the peak of the whole import and after
//!    it; the growth during the upload (peak − before: the spool should hold one chunk, not
//!    the file) and the whole import's peak beyond its final RSS (the index itself); the
//!    export's peak growth. The probe child that opens an uploaded file before the server
//!    does (`index::probe`) is a separate process: its peak VmRSS is reported on its own.
//! 2. `swap`: a served 10k×128 Flat index (`serve --data-dir`) under a steady single-query
//!    search load (one typed `Client::search` per request, k=10, IMPORT_BENCH_QPS per second,
//!    default 500; 0 = back to back) for IMPORT_BENCH_SWAP_SECS (default 5) without imports,
//!    then as long again while this thread imports another 10k×128 file over the same name
//!    5 times (b, a, b, a, b: each import changes the index served), one after the other,
//!    spread over the phase. Reported: searches, failed searches, p50/p99/max of both phases
//!    (from send to reply) and the p99 ratio; for a paced load also from each search's
//!    scheduled send time (a search held up before it could be sent counts its wait); the
//!    searches that overlapped an import; per import its duration and its slowest search.
//! 3. `profile` (not run by default: IMPORT_BENCH_PARTS=profile): where an import's and an
//!    export's time goes, each stage timed alone over the same file in 4 MiB chunks: the
//!    client's read, CRC-32 and request encoding (`data.to_vec()` + `encode_request`), the
//!    server's `decode_request` and write to a spool file and its fsync, a round trip of
//!    each chunk through a server over tcp://127.0.0.1 (an `upload_chunk` of no open upload:
//!    transport, decode and CRC, then `NOT_FOUND`, nothing written), every `export_chunk` of
//!    the file fetched and checked but not written, the write of a new file of that size (an
//!    export's output), the probe child (`faissx __probe-index [--mmap] -- FILE`) and FAISS's
//!    read in this process (loaded, mapped).
//!
//! Files go to IMPORT_BENCH_DIR (default: the system temp folder), removed at the end. The
//! server binary is FAISSX_BIN or `$CARGO_TARGET_DIR/release/faissx` (default `target`).

#[path = "common/mod.rs"]
mod common;

use common::{client, env_or, exe, pct, start_server, Server, KNN10};

use faissx::engine::index::{Index, OpenOptions};
use faissx::engine::protocol::{self, Msg, Value};
use faissx::engine::transfer::ImportFrom;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const D: usize = 128;
const MB: f64 = 1e6;
const MIB: f64 = (1u64 << 20) as f64;

/// The bench's folder, removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A deterministic pseudo-random generator of components in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }
}

/// Write `n × D` f32 vectors of seed `seed` to `path` as `.npy` (v1.0, little-endian, C
/// order), in slabs.
fn write_npy(path: &Path, n: usize, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create npy"));
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {D}), }}");
    let mut header = dict.into_bytes();
    // Magic (6) + version (2) + length (2) + header + '\n' padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    f.write_all(b"\x93NUMPY\x01\x00").expect("write");
    f.write_all(&(header.len() as u16).to_le_bytes()).expect("write");
    f.write_all(&header).expect("write");
    let mut g = Lcg::new(seed);
    let mut slab = Vec::with_capacity(8192 * D * 4);
    let mut row = 0;
    while row < n {
        let rows = (n - row).min(8192);
        slab.clear();
        for _ in 0..rows * D {
            slab.extend_from_slice(&g.next().to_le_bytes());
        }
        f.write_all(&slab).expect("write");
        row += rows;
    }
    f.flush().expect("flush");
}

/// `faissx build NPY -o INDEX --factory Flat -q`.
fn build(npy: &Path, index: &Path) {
    let st = Command::new(exe())
        .arg("build")
        .arg(npy)
        .arg("-o")
        .arg(index)
        .args(["--factory", "Flat", "-q"])
        .status()
        .unwrap_or_else(|e| panic!("starting {}: {e} (build first: cargo build --release)", exe()));
    assert!(st.success(), "faissx build {} failed: {st}", npy.display());
}

/// `faissx serve --data-dir DATA --port 0 --bind-address 127.0.0.1 -q [extra]`.
fn start(data: &Path, extra: &[&str]) -> Server {
    let mut args = vec![std::ffi::OsStr::new("--data-dir"), data.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    // One log line per import: not a figure.
    start_server(&args, Stdio::null())
}

/// (VmRSS, RssAnon) of `pid` in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Minor page faults of `pid` so far (all its threads): each is a 4 KiB page of memory
/// touched for the first time (or again after it was given back).
fn minflt(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace().nth(7).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Page faults as MiB of memory.
fn faults(n: u64) -> String {
    format!("{n} ({:.0} MiB)", n as f64 * 4096.0 / MIB)
}

/// VmRSS (bytes) of the child processes of `pid` together (the probe child of an import).
fn children_rss(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).collect::<Vec<_>>())
        .map(|child| rss(child).0)
        .sum()
}

/// A thread sampling a process's RSS every 20 ms: (time, VmRSS, RssAnon), and the peak VmRSS
/// of its children.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, u64, u64)>>>,
    children_peak: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let children_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, samples, kids) = (stop.clone(), samples.clone(), children_peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (v, a) = rss(pid);
                    samples.lock().expect("samples").push((Instant::now(), v, a));
                    kids.fetch_max(children_rss(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Sampler { stop, samples, children_peak, thread: Some(thread) }
    }

    /// The children's peak VmRSS since the last call (bytes).
    fn take_children_peak(&self) -> u64 {
        self.children_peak.swap(0, Ordering::Relaxed)
    }

    /// Peak (VmRSS, RssAnon) of the samples taken between `a` and `b`, and the number of
    /// samples.
    fn peak(&self, a: Instant, b: Instant) -> (u64, u64, usize) {
        let s = self.samples.lock().expect("samples");
        let within = s.iter().filter(|(t, _, _)| *t >= a && *t <= b);
        within.fold((0, 0, 0), |(v, an, n), (_, sv, sa)| (v.max(*sv), an.max(*sa), n + 1))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB)
}

fn signed_mib(a: u64, b: u64) -> String {
    format!("{:+.0} MiB", (a as f64 - b as f64) / MIB)
}

/// CRC-32 of a file (to check an export against the file imported).
fn crc_of(path: &Path) -> u32 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
}

fn main() {
    let parts = std::env::var("IMPORT_BENCH_PARTS").unwrap_or_else(|_| "transfer,swap".into());
    let root = std::env::var("IMPORT_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let work = WorkDir(root.join(format!("faissx-bench-import-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).expect("work dir");
    if parts.contains("transfer") {
        bench_transfer(&work.0);
    }
    if parts.contains("swap") {
        bench_swap(&work.0);
    }
    if parts.contains("profile") {
        bench_profile(&work.0);
    }
}

fn bench_transfer(work: &Path) {
    let n: usize = env_or("IMPORT_BENCH_N", 2_000_000);
    let npy = work.join("big.npy");
    let file = work.join("big.index");
    let t = Instant::now();
    write_npy(&npy, n, 1);
    build(&npy, &file);
    let _ = std::fs::remove_file(&npy);
    let bytes = std::fs::metadata(&file).expect("index file").len();
    let crc = crc_of(&file);
    println!(
        "## import and export of a Flat index of {n} x {D} f32 ({:.0} MB, {:.2} GiB; written and built in {:.1} s)",
        bytes as f64 / MB,
        bytes as f64 / MIB / 1024.0,
        t.elapsed().as_secs_f64()
    );
    let modes = std::env::var("IMPORT_BENCH_MODES").unwrap_or_else(|_| "loaded,mmap".into());
    for mode in modes.split(',') {
        let (mode, extra) = match mode.trim() {
            "loaded" => ("loaded", vec![]),
            "mmap" => ("serve --mmap", vec!["--mmap"]),
            other => panic!("IMPORT_BENCH_MODES: {other:?} is not loaded or mmap"),
        };
        let data = work.join(format!("data-{}", extra.len()));
        let srv = start(&data, &extra);
        let pid = srv.0.id();
        let mut c = client(&srv.1);
        c.ping().expect("ping");
        let sampler = Sampler::start(pid);
        std::thread::sleep(Duration::from_millis(300));
        let before = rss(pid);
        sampler.take_children_peak();
        let me = std::process::id();
        let (sf0, cf0) = (minflt(pid), minflt(me));
        let mut at_upload = (0, 0);
        let t0 = Instant::now();
        let mut uploaded = None;
        let r = c
            .import_index("big", &ImportFrom::Upload(&file), None, &mut |sent, total| {
                if sent == total {
                    uploaded = Some(Instant::now());
                    at_upload = (minflt(pid), minflt(me));
                }
            })
            .expect("import");
        let t1 = Instant::now();
        let sf1 = minflt(pid);
        let tu = uploaded.unwrap_or(t1);
        std::thread::sleep(Duration::from_millis(300));
        let after = rss(pid);
        let kids = sampler.take_children_peak();
        let (pu, pua, nu) = sampler.peak(t0, tu);
        let (pw, pwa, nw) = sampler.peak(t0, t1);
        let (pw, pwa) = (pw.max(after.0), pwa.max(after.1));
        let secs = (t1 - t0).as_secs_f64();
        let up = (tu - t0).as_secs_f64();
        let sent = r.bytes_sent as f64;
        println!("### {mode} (serve --data-dir{})", if extra.is_empty() { "" } else { " --mmap" });
        println!(
            "import: {:.0} MB/s ({:.0} MB sent incl. sidecar in {secs:.2} s; {} vectors, generation {})",
            sent / MB / secs,
            sent / MB,
            r.ntotal,
            r.generation
        );
        println!("import, upload phase (chunks): {:.0} MB/s ({up:.2} s)", sent / MB / up);
        println!("import, import_index call (check, persist, load, swap): {:.2} s", secs - up);
        println!(
            "page faults during upload: server {}, client {}; during the import_index call: server {}",
            faults(at_upload.0 - sf0),
            faults(at_upload.1 - cf0),
            faults(sf1 - at_upload.0)
        );
        println!("server VmRSS before import: {} (RssAnon {})", mib(before.0), mib(before.1));
        println!("server VmRSS peak during upload: {} (RssAnon {}; {nu} samples)", mib(pu), mib(pua));
        println!("server VmRSS peak during whole import: {} (RssAnon {}; {nw} samples)", mib(pw), mib(pwa));
        println!("server VmRSS after import: {} (RssAnon {})", mib(after.0), mib(after.1));
        let kids = if kids > 0 { mib(kids) } else { "not caught by the 20 ms sampling".to_string() };
        println!("probe child (a separate process) peak VmRSS during the import: {kids}");
        println!(
            "RSS growth during upload beyond the index (peak - before): VmRSS {}, RssAnon {}",
            signed_mib(pu, before.0),
            signed_mib(pua, before.1)
        );
        println!(
            "RSS growth during whole import beyond the index (peak - after): VmRSS {}, RssAnon {}",
            signed_mib(pw, after.0),
            signed_mib(pwa, after.1)
        );
        // Export.
        let out = work.join("copy.index");
        let before_e = rss(pid);
        let (sf0, cf0) = (minflt(pid), minflt(me));
        let t0 = Instant::now();
        let mut received = None;
        let e = c
            .export_index("big", &out, &mut |got, total| {
                if got == total {
                    received = Some(Instant::now());
                }
            })
            .expect("export");
        let t1 = Instant::now();
        let tr = received.unwrap_or(t1);
        let (sf1, cf1) = (minflt(pid), minflt(me));
        let (pe, pea, ne) = sampler.peak(t0, t1);
        let secs = (t1 - t0).as_secs_f64();
        let same = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == bytes && crc_of(&out) == crc;
        println!(
            "export: {:.0} MB/s ({:.0} MB received incl. sidecar in {secs:.2} s; index file identical to the imported one: {})",
            e.bytes as f64 / MB / secs,
            e.bytes as f64 / MB,
            if same { "yes" } else { "NO" }
        );
        println!(
            "export, download phase (chunks): {:.0} MB/s ({:.2} s); the file's commit (fsync, rename): {:.2} s",
            e.bytes as f64 / MB / (tr - t0).as_secs_f64(),
            (tr - t0).as_secs_f64(),
            (t1 - tr).as_secs_f64()
        );
        println!("page faults during export: server {}, client {}", faults(sf1 - sf0), faults(cf1 - cf0));
        println!(
            "RSS growth during export (peak - before): VmRSS {}, RssAnon {} ({ne} samples)",
            signed_mib(pe.max(before_e.0), before_e.0),
            signed_mib(pea.max(before_e.1), before_e.1)
        );
        for f in &e.files {
            let _ = std::fs::remove_file(f);
        }
        drop(sampler);
        drop(c);
        drop(srv);
        let _ = std::fs::remove_dir_all(&data);
    }
    let _ = std::fs::remove_file(&file);
}

/// One search: when it was sent, when it was due (the schedule of a paced load: a search
/// delayed by a stall before it is sent counts from here), when its reply came.
#[derive(Clone, Copy)]
struct Sample {
    sent: Instant,
    due: Instant,
    done: Instant,
}

impl Sample {
    /// Milliseconds from send to reply.
    fn ms(&self) -> f64 {
        (self.done - self.sent).as_secs_f64() * 1e3
    }
    /// Milliseconds from the scheduled send to reply.
    fn due_ms(&self) -> f64 {
        (self.done - self.due).as_secs_f64() * 1e3
    }
}

/// What the search thread saw.
struct Load {
    ok: Vec<Sample>,
    failed: usize,
    secs: f64,
}

impl Load {
    fn searches(&self) -> usize {
        self.ok.len() + self.failed
    }
}

/// Single-query searches of `queries` (cycled) for `dur`, at `qps` per second (0: back to
/// back).
fn search_load(ep: String, queries: Arc<Vec<f32>>, dur: Duration, qps: f64) -> std::thread::JoinHandle<Load> {
    std::thread::spawn(move || {
        let mut c = client(&ep);
        let mut ok = Vec::new();
        let mut failed = 0;
        let nq = queries.len() / D;
        let t0 = Instant::now();
        let mut i = 0usize;
        while t0.elapsed() < dur {
            let mut due = Instant::now();
            if qps > 0.0 {
                due = t0 + Duration::from_secs_f64(i as f64 / qps);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let q = &queries[(i % nq) * D..(i % nq + 1) * D];
            let sent = Instant::now();
            match c.search("docs", q, D, &KNN10, false) {
                Ok((n, _)) if n.nq == 1 && n.ids.len() == 10 => {
                    ok.push(Sample { sent, due: due.min(sent), done: Instant::now() })
                }
                _ => failed += 1,
            }
            i += 1;
        }
        Load { ok, failed, secs: t0.elapsed().as_secs_f64() }
    })
}

/// "p50 X ms, p99 Y ms, max Z ms" of `v`.
fn summary(mut v: Vec<f64>) -> String {
    let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
    format!("p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms", v.last().copied().unwrap_or(f64::NAN))
}

fn bench_swap(work: &Path) {
    let secs: f64 = env_or("IMPORT_BENCH_SWAP_SECS", 5.0);
    let qps: f64 = env_or("IMPORT_BENCH_QPS", 500.0);
    let dur = Duration::from_secs_f64(secs);
    let (a, b) = (work.join("a.index"), work.join("b.index"));
    for (seed, f) in [(11, &a), (12, &b)] {
        let npy = work.join("small.npy");
        write_npy(&npy, 10_000, seed);
        build(&npy, f);
        let _ = std::fs::remove_file(&npy);
    }
    let mut queries = Vec::new();
    let mut g = Lcg::new(13);
    queries.extend((0..1000 * D).map(|_| g.next()));
    let queries = Arc::new(queries);
    let data = work.join("data-swap");
    let srv = start(&data, &[]);
    let mut c = client(&srv.1);
    c.import_index("docs", &ImportFrom::Upload(&a), None, &mut |_, _| {}).expect("first import");
    for q in queries.chunks(D).take(200) {
        c.search("docs", q, D, &KNN10, false).expect("warm-up");
    }
    let quiet = search_load(srv.1.clone(), queries.clone(), dur, qps).join().expect("load thread");
    let load = search_load(srv.1.clone(), queries.clone(), dur, qps);
    let t0 = Instant::now();
    let mut windows = Vec::new();
    let mut generation = 0;
    for i in 0..5 {
        let due = t0 + dur.mul_f64((i as f64 + 0.5) / 5.5);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // b, a, b, a, b: every import changes what is served.
        let f = if i % 2 == 0 { &b } else { &a };
        let s = Instant::now();
        let r = c.import_index("docs", &ImportFrom::Upload(f), None, &mut |_, _| {}).expect("swap import");
        windows.push((s, Instant::now()));
        generation = r.generation;
    }
    let busy = load.join().expect("load thread");
    // The new version is served: a vector of b.index is its own nearest neighbour.
    let mut bq = Lcg::new(12);
    let first: Vec<f32> = (0..D).map(|_| bq.next()).collect();
    let (n, _) = c.search("docs", &first, D, &KNN10, false).expect("search");
    let new_served = n.ids.first() == Some(&0) && n.dists.first().is_some_and(|d| *d == 0.0);
    let overlaps = |x: &Sample, (ws, we): &(Instant, Instant)| x.sent <= *we && x.done >= *ws;
    let mut ql: Vec<f64> = quiet.ok.iter().map(Sample::ms).collect();
    let mut bl: Vec<f64> = busy.ok.iter().map(Sample::ms).collect();
    let overlap: Vec<&Sample> = busy.ok.iter().filter(|x| windows.iter().any(|w| overlaps(x, w))).collect();
    let rate = if qps > 0.0 { format!("{qps:.0}/s") } else { "back to back".to_string() };
    println!("## hot swap under load: 10k x {D} Flat, single-query searches (k=10, {rate}), {secs:.1} s per phase");
    for (what, l, v) in [("without imports", &quiet, &mut ql), ("during 5 imports", &busy, &mut bl)] {
        println!(
            "{what}: {} searches ({:.0}/s), {} failed, {}",
            l.searches(),
            l.searches() as f64 / l.secs,
            l.failed,
            summary(v.clone())
        );
    }
    println!("p99 ratio (during imports / without): {:.2}x", pct(&mut bl, 0.99) / pct(&mut ql, 0.99));
    if qps > 0.0 {
        let due = |l: &Load| summary(l.ok.iter().map(Sample::due_ms).collect());
        println!("from the scheduled send time, without imports: {}", due(&quiet));
        println!("from the scheduled send time, during 5 imports: {}", due(&busy));
    }
    println!(
        "searches overlapping an import: {}, {}",
        overlap.len(),
        summary(overlap.iter().map(|x| x.ms()).collect())
    );
    let outside =
        busy.ok.iter().filter(|x| !windows.iter().any(|w| overlaps(x, w))).max_by(|x, y| x.ms().total_cmp(&y.ms()));
    if let Some(x) = outside {
        let after =
            windows.iter().filter(|w| w.1 <= x.sent).map(|w| (x.sent - w.1).as_secs_f64() * 1e3).reduce(f64::min);
        println!(
            "slowest search outside the imports: {:.1} ms, sent {}",
            x.ms(),
            after.map_or("before the first import".to_string(), |a| format!("{a:.0} ms after an import's reply"))
        );
    }
    for (i, w) in windows.iter().enumerate() {
        let slow = busy.ok.iter().filter(|x| overlaps(x, w)).max_by(|x, y| x.ms().total_cmp(&y.ms()));
        let tail = slow.map_or(String::new(), |x| {
            format!(
                "; slowest search during it {:.1} ms, sent {:.0} ms after the import began, answered {:.0} ms before its reply",
                x.ms(),
                (x.sent - w.0).as_secs_f64() * 1e3,
                (w.1.saturating_duration_since(x.done)).as_secs_f64() * 1e3
            )
        });
        println!("import {}: {:.0} ms{tail}", i + 1, (w.1 - w.0).as_secs_f64() * 1e3);
    }
    println!(
        "imports of {:.1} MB each; generation after: {generation}; new version served: {}",
        std::fs::metadata(&b).map(|m| m.len()).unwrap_or(0) as f64 / MB,
        if new_served { "yes" } else { "NO" }
    );
}

/// Seconds taken by `f`.
fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The chunks of `path` (`chunk` bytes each), read into memory.
fn chunks_of(path: &Path, chunk: usize) -> Vec<Vec<u8>> {
    let mut f = std::fs::File::open(path).expect("open");
    let mut out = Vec::new();
    loop {
        let mut buf = vec![0u8; chunk];
        let mut n = 0;
        while n < chunk {
            match f.read(&mut buf[n..]).expect("read") {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        out.push(buf);
    }
    out
}

fn upload_chunk(data: &[u8], crc: u32) -> Vec<u8> {
    protocol::encode_request(
        "upload_chunk",
        vec![
            ("upload_id", Value::from("bench")),
            ("part", Value::from("index")),
            ("offset", Value::from(0u64)),
            ("crc32", Value::from(u64::from(crc))),
            ("data", Value::Binary(data.to_vec())),
        ],
    )
}

fn bench_profile(work: &Path) {
    let n: usize = env_or("IMPORT_BENCH_N", 2_000_000);
    let npy = work.join("prof.npy");
    let file = work.join("prof.index");
    write_npy(&npy, n, 1);
    build(&npy, &file);
    let _ = std::fs::remove_file(&npy);
    let bytes = std::fs::metadata(&file).expect("index file").len() as f64;
    let chunk = 4 << 20;
    crc_of(&file); // into the page cache
    let rate = |secs: f64| format!("{secs:.2} s = {:.0} MB/s", bytes / MB / secs);
    println!("## where the time goes: {:.0} MB Flat index, 4 MiB chunks, each stage alone", bytes / MB);
    // Client: read (reusing one buffer, as the client does), CRC, encode.
    let mut buf = vec![0u8; chunk];
    let read = timed(|| {
        let mut f = std::fs::File::open(&file).expect("open");
        while f.read(&mut buf).expect("read") > 0 {}
    });
    println!("client read from the page cache: {}", rate(read));
    let chunks = chunks_of(&file, chunk);
    let mut crcs = Vec::new();
    let crc = timed(|| crcs = chunks.iter().map(|c| crc32fast::hash(c)).collect());
    println!("CRC-32 (client, and again on the server): {}", rate(crc));
    // Encoded and dropped chunk by chunk, as the client does (the allocator reuses memory).
    let enc = timed(|| {
        for (c, h) in chunks.iter().zip(&crcs) {
            std::hint::black_box(upload_chunk(c, *h));
        }
    });
    println!("client encode (data.to_vec() + encode_request): {}", rate(enc));
    let one = upload_chunk(&chunks[0], crcs[0]);
    let dec = timed(|| {
        for _ in &chunks {
            std::hint::black_box(Msg::decode_request(&one).expect("decode"));
        }
    });
    println!("server decode_request: {}", rate(dec));
    let spool = work.join("spool.bin");
    let mut w = std::fs::File::create(&spool).expect("spool");
    let write = timed(|| {
        for c in &chunks {
            w.write_all(c).expect("write");
        }
    });
    let sync = timed(|| w.sync_all().expect("fsync"));
    println!("server write to the spool file: {}; its fsync: {sync:.2} s", rate(write));
    drop(w);
    let _ = std::fs::remove_file(&spool);
    // Round trips: the server decodes the chunk and checks its CRC, then refuses it (no
    // upload "bench" is open: NOT_FOUND), writing nothing.
    let data = work.join("data-prof");
    let srv = start(&data, &["--import-dir", work.to_str().expect("utf-8 path")]);
    let mut c = client(&srv.1);
    let mut refused = 0;
    let rt = timed(|| {
        for (ch, h) in chunks.iter().zip(&crcs) {
            if c.call_raw(upload_chunk(ch, *h)).is_err() {
                refused += 1;
            }
        }
    });
    println!(
        "encode + round trip of each chunk through the server (zmq + decode + CRC, refused: {refused} of {}): {}",
        crcs.len(),
        rate(rt)
    );
    // Export without the client's write: the index imported from the server's disk, then
    // every `export_chunk` of it fetched, decoded and checked, and dropped.
    let path = file.to_str().expect("utf-8 path");
    c.import_index("prof", &ImportFrom::ServerPath(path), None, &mut |_, _| {}).expect("server-path import");
    let r = c.call("export_begin", vec![("index_id", Value::from("prof"))]).expect("export_begin");
    let eid = r.req_str("export_id").expect("export_id").to_string();
    let fetch = timed(|| {
        let mut offset = 0u64;
        while offset < bytes as u64 {
            let fields = vec![
                ("export_id", Value::from(eid.as_str())),
                ("part", Value::from("index")),
                ("offset", Value::from(offset)),
                ("length", Value::from(chunk as u64)),
            ];
            let m = c.call("export_chunk", fields).expect("export_chunk");
            let Some(Value::Binary(b)) = m.get("data") else { panic!("no data") };
            assert_eq!(m.uint("crc32").expect("crc32"), Some(u64::from(crc32fast::hash(b))));
            offset += b.len() as u64;
        }
    });
    println!(
        "export round trips without the client's write (server read + CRC + encode, zmq, client decode + CRC): {}",
        rate(fetch)
    );
    let w = work.join("export.bin");
    let mut wf = std::fs::File::create(&w).expect("create");
    let cw = timed(|| {
        for c in &chunks {
            wf.write_all(c).expect("write");
        }
    });
    let sync = timed(|| wf.sync_all().expect("fsync"));
    println!("client write of a new file of that size (the export's output): {}; its fsync: {sync:.2} s", rate(cw));
    drop(wf);
    let _ = std::fs::remove_file(&w);
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&data);
    drop(chunks);
    for mmap in [false, true] {
        let how = if mmap { "mapped" } else { "loaded" };
        let mut cmd = Command::new(exe());
        cmd.arg("__probe-index");
        if mmap {
            cmd.arg("--mmap");
        }
        cmd.arg("--").arg(&file).stdout(Stdio::null());
        let probe = timed(|| assert!(cmd.status().expect("probe").success(), "probe failed"));
        let load = timed(|| {
            std::hint::black_box(
                Index::open_with(&file, &OpenOptions { mmap, warm: false, no_search: false }).expect("open"),
            );
        });
        println!("probe child ({how}): {probe:.2} s; FAISS read in-process ({how}): {load:.2} s");
    }
    let _ = std::fs::remove_file(&file);
}
