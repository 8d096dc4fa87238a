//! Vector input throughput: how fast `VectorFile` decodes `.fvecs`, `.npy` (f32) and `.bvecs`
//! into the row-major f32 batches handed to FAISS, from the page cache.
//!
//! ```sh
//! cargo bench --bench io_throughput                   # ~1 GB per format, 5 passes each
//! IO_BENCH_MB=256 IO_BENCH_REPS=3 cargo bench --bench io_throughput
//! ```
//!
//! Files are generated once (deterministic values) under `$IO_BENCH_DIR` (default
//! `~/.cache/faissx/bench/io`) and read once untimed to put them in the page cache. Each timed
//! pass opens the file afresh (a new memory map, as every `faissx` command does) and reads all
//! rows in batches of 65,536 with `read_rows_into` and a reused buffer (what `build`/`add`/
//! `search` do), then with the `batches` iterator (a new Vec per batch). Throughput is input
//! bytes per second (GB = 1e9 bytes); for `.bvecs` the f32 output is 4× the input.

use faissx::engine::io::{CsvOptions, VectorFile};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const D: usize = 128;
const BATCH: usize = 65_536;

/// Deterministic finite values (xorshift64*), so every machine reads the same bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn write_file(path: &Path, size: u64, body: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>) {
    if std::fs::metadata(path).map(|m| m.len() == size).unwrap_or(false) {
        return;
    }
    eprintln!("generating {} ({:.2} GB)", path.display(), size as f64 / 1e9);
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).expect("create bench file"));
    body(&mut w).expect("write bench file");
    w.flush().expect("flush bench file");
    drop(w);
    std::fs::rename(&tmp, path).expect("rename bench file");
    assert_eq!(std::fs::metadata(path).expect("stat bench file").len(), size);
}

fn gen_fvecs(path: &Path, rows: usize) {
    write_file(path, (rows * (4 + 4 * D)) as u64, |w| {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut rec = Vec::with_capacity(4 + 4 * D);
        for _ in 0..rows {
            rec.clear();
            rec.extend_from_slice(&(D as i32).to_le_bytes());
            for _ in 0..D {
                rec.extend_from_slice(&rng.f32().to_le_bytes());
            }
            w.write_all(&rec)?;
        }
        Ok(())
    });
}

fn gen_bvecs(path: &Path, rows: usize) {
    write_file(path, (rows * (4 + D)) as u64, |w| {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut rec = Vec::with_capacity(4 + D);
        for _ in 0..rows {
            rec.clear();
            rec.extend_from_slice(&(D as i32).to_le_bytes());
            for _ in 0..D / 8 {
                rec.extend_from_slice(&rng.next().to_le_bytes());
            }
            w.write_all(&rec)?;
        }
        Ok(())
    });
}

fn npy_header(rows: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {D}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let len = (10 + dict.len() + 1).div_ceil(64) * 64 - 10;
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(10 + len - 1, b' ');
    h.push(b'\n');
    h
}

fn gen_npy(path: &Path, rows: usize) {
    let header = npy_header(rows);
    write_file(path, (header.len() + rows * 4 * D) as u64, |w| {
        w.write_all(&header)?;
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut row = Vec::with_capacity(4 * D);
        for _ in 0..rows {
            row.clear();
            for _ in 0..D {
                row.extend_from_slice(&rng.f32().to_le_bytes());
            }
            w.write_all(&row)?;
        }
        Ok(())
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One pass: open, read every row; returns seconds.
fn pass(path: &Path, iter: bool) -> f64 {
    let csv = CsvOptions { header: None, id_column: None, metadata_columns: Vec::new() };
    let t = Instant::now();
    let f = VectorFile::open(path, None, &csv).expect("open bench file");
    let mut check = 0.0f32;
    if iter {
        for b in f.batches(BATCH) {
            let b = b.expect("read batch");
            check += b.data[0] + b.data[b.data.len() - 1];
            black_box(&b.data);
        }
    } else {
        let mut buf = Vec::new();
        let mut start = 0;
        while start < f.len() {
            let rows = f.read_rows_into(start, BATCH, &mut buf).expect("read rows");
            check += buf[0] + buf[buf.len() - 1];
            black_box(&buf);
            start += rows;
        }
    }
    black_box(check);
    t.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mb: usize =
        std::env::var("IO_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick { 8 } else { 1024 });
    let reps: usize =
        std::env::var("IO_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick { 1 } else { 5 });
    let dir = std::env::var_os("IO_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        home.join(".cache/faissx/bench/io")
    });
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let bytes = mb << 20;
    let f32_rows = bytes / (4 * D);
    let u8_rows = bytes / D;
    let files = [
        ("fvecs", dir.join(format!("io-{mb}m.fvecs")), 4 * D),
        ("npy f32", dir.join(format!("io-{mb}m.npy")), 4 * D),
        ("bvecs", dir.join(format!("io-{mb}m.bvecs")), D),
    ];
    gen_fvecs(&files[0].1, f32_rows);
    gen_npy(&files[1].1, f32_rows);
    gen_bvecs(&files[2].1, u8_rows);

    println!("| format | file GB | rows | read_rows_into GB/s (median of {reps}) | batches GB/s | f32 out GB/s |");
    println!("|---|---|---|---|---|---|");
    for (name, path, row_bytes) in &files {
        let size = std::fs::metadata(path).expect("stat").len() as f64;
        let rows = if *row_bytes == D { u8_rows } else { f32_rows };
        pass(path, false); // page cache warm-up
        let mut into = Vec::new();
        let mut iter = Vec::new();
        for _ in 0..reps {
            into.push(pass(path, false));
            iter.push(pass(path, true));
        }
        let (ti, tb) = (median(into), median(iter));
        let out = (rows * D * 4) as f64;
        println!(
            "| {name} | {:.3} | {rows} | {:.2} | {:.2} | {:.2} |",
            size / 1e9,
            size / ti / 1e9,
            size / tb / 1e9,
            out / ti / 1e9
        );
    }
}
