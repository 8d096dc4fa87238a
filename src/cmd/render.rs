//! Everything that draws for people or writes result streams: progress bars (indicatif),
//! tables (comfy-table), JSON Lines and CSV. stdout carries results only; progress and notes
//! go to stderr.

use crate::engine::error::{Error, IoContext, Result};
use crate::engine::filter::MetaTable;
use crate::engine::io::write as vwrite;
use crate::engine::{Neighbors, Progress, RangeHits};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// [`Progress`] on stderr: an indicatif bar on a terminal, a plain line every ~5 s otherwise,
/// nothing with `-q`.
pub struct StderrProgress {
    quiet: bool,
    verbose: bool,
    tty: bool,
    state: Mutex<State>,
}

struct State {
    bar: Option<ProgressBar>,
    stage: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    /// Plain lines printed for this stage.
    lines: u32,
}

/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// A progress line for logs (stderr not a terminal): `stage: done/total (pct), rate/s, ETA`.
/// Batch systems (Kubernetes Jobs, Slurm) keep stderr as a log, where a bar would be noise.
fn plain_line(stage: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / secs;
    if total == 0 || done > total {
        return format!("{stage}: {done} ({rate:.0}/s, {secs:.0} s)");
    }
    let pct = 100.0 * done as f64 / total as f64;
    let eta = if rate > 0.0 { format_eta((total - done) as f64 / rate) } else { "?".into() };
    format!("{stage}: {done}/{total} ({pct:.1} %), {rate:.0}/s, ETA {eta}")
}

/// Seconds as `42 s`, `3 min 05 s` or `2 h 07 min`.
fn format_eta(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

impl StderrProgress {
    /// A progress reporter; `quiet` silences it.
    pub fn new(quiet: bool) -> StderrProgress {
        StderrProgress {
            quiet,
            verbose: false,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                bar: None,
                stage: String::new(),
                total: 0,
                done: 0,
                started: Instant::now(),
                last_line: Instant::now(),
                lines: 0,
            }),
        }
    }

    /// The reporter for a command run with these global flags: quiet with `-q`, details
    /// ([`Progress::detail`]) with `-v`.
    pub fn for_ctx(ctx: &super::Ctx) -> StderrProgress {
        StderrProgress { verbose: ctx.verbose > 0 && !ctx.quiet, ..StderrProgress::new(ctx.quiet) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for StderrProgress {
    fn start(&self, stage: &str, total: u64) {
        if self.quiet {
            return;
        }
        let mut s = self.lock();
        s.stage = stage.to_string();
        s.total = total;
        s.done = 0;
        s.started = Instant::now();
        s.last_line = Instant::now();
        s.lines = 0;
        if self.tty {
            let bar = if total > 0 {
                let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>8} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
                    )
                    .expect("invariant: valid template")
                    .progress_chars("=> "),
                );
                b
            } else {
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template("{prefix:>8} {spinner} {elapsed}").expect("invariant: valid template"),
                );
                b.enable_steady_tick(Duration::from_millis(120));
                b
            };
            bar.set_prefix(stage.to_string());
            s.bar = Some(bar);
        }
    }

    fn inc(&self, n: u64) {
        if self.quiet {
            return;
        }
        let mut s = self.lock();
        s.done += n;
        if let Some(b) = &s.bar {
            b.inc(n);
        } else if s.last_line.elapsed() >= LINE_EVERY {
            s.last_line = Instant::now();
            s.lines += 1;
            eprintln!("faissx: {}", plain_line(&s.stage, s.done, s.total, s.started.elapsed()));
        }
    }

    fn finish(&self) {
        let mut s = self.lock();
        if let Some(b) = s.bar.take() {
            b.finish_and_clear();
        } else if !self.quiet && s.lines > 0 {
            // A stage that printed progress lines ends with one, so a batch log shows the end.
            s.lines = 0;
            let took = s.started.elapsed().as_secs_f64();
            let rate = s.done as f64 / took.max(1e-9);
            eprintln!("faissx: {}: {} done in {took:.1} s ({rate:.0}/s)", s.stage, s.done);
        }
    }

    fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let s = self.lock();
        match &s.bar {
            Some(b) => b.suspend(|| eprintln!("faissx: {msg}")),
            None => eprintln!("faissx: {msg}"),
        }
    }

    fn detail(&self, msg: &str) {
        if self.verbose {
            self.note(msg);
        }
    }
}

/// Print a diagnostic line on stderr unless quiet.
pub fn note(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("faissx: {msg}");
    }
}

/// Whether stdout is a terminal (picks table vs JSON Lines).
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::io(Path::new("<stdout>"), e)
}

/// Format a distance for text outputs: FAISS's padding values print as `inf`/`-inf`.
fn fmt_dist(d: f32) -> String {
    if d == f32::MAX {
        "inf".into()
    } else if d == -f32::MAX {
        "-inf".into()
    } else {
        format!("{d}")
    }
}

#[derive(serde::Serialize)]
struct JsonHit<'a> {
    query: usize,
    ids: &'a [i64],
    distances: Vec<Option<f32>>,
}

/// [`JsonHit`] with string ids and, optionally, each hit's metadata.
#[derive(serde::Serialize)]
struct LabelledHit<'a> {
    query: usize,
    ids: &'a [serde_json::Value],
    distances: Vec<Option<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a [serde_json::Value]>,
}

/// Write one query's hits as a JSON Lines record: `{"query":i,"ids":[…],"distances":[…]}`.
/// FAISS's padding distances (k > ntotal) become `null`.
pub fn jsonl_row(w: &mut dyn Write, query: usize, ids: &[i64], dists: &[f32]) -> Result<()> {
    let rec = JsonHit {
        query,
        ids,
        distances: dists.iter().map(|&d| (d.is_finite() && d.abs() != f32::MAX).then_some(d)).collect(),
    };
    serde_json::to_writer(&mut *w, &rec).map_err(|e| Error::io(Path::new("<stdout>"), e.into()))?;
    w.write_all(b"\n").map_err(stdout_err)
}

/// Streaming writer of search results in a text format, to stdout or (atomically) to a file.
pub struct HitWriter {
    fmt: TextFormat,
    out: Sink,
    table: Option<Table>,
    wrote_header: bool,
    labels: Option<Labels>,
}

/// What results are shown with besides FAISS ids: the metadata tables of the index (one per
/// shard), for string ids and, with `metadata`, each hit's metadata.
struct Labels {
    tables: Vec<std::sync::Arc<MetaTable>>,
    metadata: bool,
}

impl Labels {
    fn table_of(&self, id: i64) -> Option<&MetaTable> {
        self.tables.iter().map(|t| t.as_ref()).find(|t| t.row_of(id).is_some())
    }

    /// Each hit's id as shown (its string id when it has one; null for -1) and metadata.
    fn hits(&self, ids: &[i64]) -> Result<(Vec<serde_json::Value>, Option<Vec<serde_json::Value>>)> {
        let shown = ids
            .iter()
            .map(|&id| match self.table_of(id).and_then(|t| t.key_of(id)) {
                Some(k) => serde_json::Value::from(k),
                None if id < 0 => serde_json::Value::Null,
                None => serde_json::Value::from(id),
            })
            .collect();
        let md = if self.metadata {
            // One `rows_json` per table for all the hits it holds (not one per hit).
            let mut out = vec![serde_json::Value::Null; ids.len()];
            for t in &self.tables {
                let mine: Vec<usize> =
                    (0..ids.len()).filter(|&r| out[r].is_null() && t.row_of(ids[r]).is_some()).collect();
                if mine.is_empty() {
                    continue;
                }
                let rows = t.rows_json(&mine.iter().map(|&r| ids[r]).collect::<Vec<_>>())?;
                for (r, v) in mine.into_iter().zip(rows) {
                    out[r] = v;
                }
            }
            Some(out)
        } else {
            None
        };
        Ok((shown, md))
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where text results go.
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(vwrite::AtomicFile),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// Text result formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// comfy-table.
    Table,
    /// JSON Lines.
    Jsonl,
    /// CSV.
    Csv,
}

impl HitWriter {
    /// A writer to stdout.
    pub fn new(fmt: TextFormat) -> HitWriter {
        HitWriter::with_sink(fmt, Sink::Stdout(std::io::BufWriter::new(std::io::stdout())))
    }

    /// A writer to `path`, written to a temp file and renamed into place by [`HitWriter::finish`].
    pub fn to_file(fmt: TextFormat, path: &Path) -> Result<HitWriter> {
        Ok(HitWriter::with_sink(fmt, Sink::File(vwrite::AtomicFile::create(path)?)))
    }

    fn with_sink(fmt: TextFormat, out: Sink) -> HitWriter {
        let table = (fmt == TextFormat::Table).then(|| {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["query", "rank", "id", "distance"]);
            t
        });
        HitWriter { fmt, out, table, wrote_header: false, labels: None }
    }

    /// Show hits with the string ids of `tables` (one per shard; the first holding an id
    /// answers) and, with `metadata`, each hit's metadata (JSON Lines: a `metadata` array; CSV
    /// and table: a `metadata` column of compact JSON).
    pub fn labelled(mut self, tables: Vec<std::sync::Arc<MetaTable>>, metadata: bool) -> HitWriter {
        if let Some(t) = self.table.as_mut() {
            if metadata {
                t.set_header(vec!["query", "rank", "id", "distance", "metadata"]);
            }
        }
        if !tables.is_empty() {
            self.labels = Some(Labels { tables, metadata });
        }
        self
    }

    /// A writer to `path` when given (atomically), else to stdout.
    pub fn open(fmt: TextFormat, path: Option<&Path>) -> Result<HitWriter> {
        match path {
            Some(p) => HitWriter::to_file(fmt, p),
            None => Ok(HitWriter::new(fmt)),
        }
    }

    /// Write one ready-made line (e.g. a JSON record with extra fields).
    pub fn line(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}").map_err(stdout_err)
    }

    /// Write the hits of query number `query`.
    pub fn row(&mut self, query: usize, ids: &[i64], dists: &[f32]) -> Result<()> {
        if let Some(l) = &self.labels {
            let (shown, md) = l.hits(ids)?;
            return self.labelled_row(query, &shown, md.as_deref(), dists);
        }
        match self.fmt {
            TextFormat::Jsonl => jsonl_row(&mut self.out, query, ids, dists),
            TextFormat::Csv => {
                if !self.wrote_header {
                    self.out.write_all(b"query,rank,id,distance\n").map_err(stdout_err)?;
                    self.wrote_header = true;
                }
                for (r, (id, d)) in ids.iter().zip(dists).enumerate() {
                    writeln!(self.out, "{query},{r},{id},{}", fmt_dist(*d)).map_err(stdout_err)?;
                }
                Ok(())
            }
            TextFormat::Table => {
                let t = self.table.as_mut().expect("invariant: table format has a table");
                for (r, (id, d)) in ids.iter().zip(dists).enumerate() {
                    t.add_row(vec![query.to_string(), r.to_string(), id.to_string(), fmt_dist(*d)]);
                }
                Ok(())
            }
        }
    }

    fn labelled_row(
        &mut self,
        query: usize,
        ids: &[serde_json::Value],
        md: Option<&[serde_json::Value]>,
        dists: &[f32],
    ) -> Result<()> {
        let dist_json = |d: f32| (d.is_finite() && d.abs() != f32::MAX).then_some(d);
        match self.fmt {
            TextFormat::Jsonl => {
                let rec =
                    LabelledHit { query, ids, distances: dists.iter().map(|&d| dist_json(d)).collect(), metadata: md };
                serde_json::to_writer(&mut self.out, &rec).map_err(|e| Error::io(Path::new("<stdout>"), e.into()))?;
                self.out.write_all(b"\n").map_err(stdout_err)
            }
            TextFormat::Csv => {
                if !self.wrote_header {
                    let h: &[u8] =
                        if md.is_some() { b"query,rank,id,distance,metadata\n" } else { b"query,rank,id,distance\n" };
                    self.out.write_all(h).map_err(stdout_err)?;
                    self.wrote_header = true;
                }
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
                for (r, (id, d)) in ids.iter().zip(dists).enumerate() {
                    let mut rec = vec![query.to_string(), r.to_string(), cell(id), fmt_dist(*d)];
                    if let Some(md) = md {
                        rec.push(md[r].to_string());
                    }
                    w.write_record(&rec).map_err(|e| Error::invalid(e.to_string()))?;
                }
                let bytes = w.into_inner().map_err(|e| Error::invalid(e.to_string()))?;
                self.out.write_all(&bytes).map_err(stdout_err)
            }
            TextFormat::Table => {
                let t = self.table.as_mut().expect("invariant: table format has a table");
                for (r, (id, d)) in ids.iter().zip(dists).enumerate() {
                    let mut row = vec![query.to_string(), r.to_string(), cell(id), fmt_dist(*d)];
                    if let Some(md) = md {
                        row.push(md[r].to_string());
                    }
                    t.add_row(row);
                }
                Ok(())
            }
        }
    }

    /// Write every query of a k-NN batch whose first query is number `start`.
    pub fn neighbors(&mut self, start: usize, n: &Neighbors) -> Result<()> {
        for q in 0..n.nq {
            let (ids, d) = n.row(q);
            self.row(start + q, ids, d)?;
        }
        Ok(())
    }

    /// Write every query of a range-search batch whose first query is number `start`.
    pub fn range(&mut self, start: usize, h: &RangeHits) -> Result<()> {
        for q in 0..h.nq() {
            let (ids, d) = h.row(q);
            self.row(start + q, ids, d)?;
        }
        Ok(())
    }

    /// Flush (and print the table); a file output is renamed into place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(t) = self.table.take() {
            writeln!(self.out, "{t}").map_err(stdout_err)?;
        }
        match self.out {
            Sink::Stdout(mut w) => w.flush().map_err(stdout_err),
            Sink::File(f) => f.commit(),
        }
    }
}

/// The sibling path for distances: `hits.npy` → `hits.distances.npy`; `hits.ivecs` → `hits.fvecs`.
pub fn distances_path(ids_path: &Path, npy: bool) -> PathBuf {
    if npy {
        ids_path.with_extension("distances.npy")
    } else {
        ids_path.with_extension("fvecs")
    }
}

/// Write k-NN results as binary files: ids to `path`, distances to [`distances_path`].
pub fn write_binary(path: &Path, npy: bool, n: &Neighbors) -> Result<()> {
    let dpath = distances_path(path, npy);
    if npy {
        vwrite::npy_i64(path, n.nq, n.k, &n.ids)?;
        vwrite::npy_f32(&dpath, n.nq, n.k, &n.dists)
    } else {
        vwrite::ivecs(path, n.k, &n.ids)?;
        vwrite::fvecs(&dpath, n.k, &n.dists)
    }
}

/// A two-column key/value table.
pub fn kv_table(rows: &[(String, String)]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    for (k, v) in rows {
        t.add_row(vec![k.clone(), v.clone()]);
    }
    t.to_string()
}

/// Print a line to stdout.
pub fn println_out(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{s}").map_err(stdout_err)?;
    o.flush().at(Path::new("<stdout>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_give_rows_rate_and_eta() {
        let l = plain_line("add", 250, 1000, Duration::from_secs(10));
        assert_eq!(l, "add: 250/1000 (25.0 %), 25/s, ETA 30 s");
        let l = plain_line("add", 1, 10_000, Duration::from_secs(2));
        assert!(l.ends_with("ETA 5 h 33 min"), "{l}");
        assert_eq!(plain_line("merge", 7, 0, Duration::from_secs(7)), "merge: 7 (1/s, 7 s)");
        assert_eq!(format_eta(125.0), "2 min 05 s");
    }
}
