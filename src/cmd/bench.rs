//! `faissx bench`: recall, QPS, latency, build cost, size and memory over a sweep of factory
//! strings and search parameters, for built, on-disk (possibly sharded) or remote indices.

use super::common::{BatchArgs, MetricArg, OpenArgs};
use super::render::{note, println_out, StderrProgress};
use super::Ctx;
use crate::engine::bench::filter::{self as bfilter, FilterBase, FilterCase};
use crate::engine::bench::{self, plot, remote, BenchOptions, BuildCost, GroundTruth, Record};
use crate::engine::client::ClientConfig;
use crate::engine::error::IoContext;
use crate::engine::filter::rows::read_metadata;
use crate::engine::filter::{matching_ids, MetaTable};
use crate::engine::index::MemStats;
use crate::engine::io::{atomic, check_dim};
use crate::engine::jobs::BuildOptions;
use crate::engine::shards::ShardSet;
use crate::engine::{CsvOptions, Error, ErrorKind, Index, Metric, Result, VectorFile};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const EXAMPLES: &str = "\
Examples:
  # build two index types from the base vectors and sweep their search parameters
  faissx bench --base base.bvecs --queries query.bvecs --gt groundtruth.ivecs \\
      --factory IVF1024,Flat --factory HNSW32 -k 10 --nprobe 1,4,16,64 --ef-search 16,64,256

  # the fastest nprobe of an existing index that reaches 95% recall, plus a plot
  faissx bench fm.index --queries query.bvecs --gt groundtruth.ivecs --target-recall 0.95 --plot fm.svg

  # shards searched as one index; exact ground truth computed from the base and cached
  faissx bench shards/fm.0.index shards/fm.1.index --base base.bvecs --queries query.bvecs

  # an index file memory-mapped: rss_anon_bytes in the records shows the heap it costs
  faissx bench big.index --queries query.bvecs --gt gt.ivecs --mmap --format jsonl

  # a running `faissx serve` with 4 concurrent clients
  faissx bench --server tcp://127.0.0.1:45678 --index docs --queries query.bvecs --gt gt.ivecs --clients 4
  # one client with 4 requests in flight
  faissx bench --server tcp://127.0.0.1:45678 --index docs --queries query.bvecs --gt gt.ivecs --pipeline 4

  # filtered search against exact filtered ground truth, next to post-filtering (10·k fetched)
  # (each @file holds one JSON filter, as for `search --filter`)
  faissx bench docs.index --base docs.npy --queries q.npy --filter @recent.json \\
      --filter @one-category.json --ef-search 16,64

  # the same for indices bench builds itself, with metadata from a JSON Lines file
  faissx bench --base docs.npy --metadata docs.jsonl --factory HNSW32 --queries q.npy --filter @en.json";

/// Output formats of `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    /// A table (default when stdout is a terminal).
    Table,
    /// JSON Lines, one record per setting (default otherwise). `json` is accepted as an
    /// alias (the old name); across faissx, `json` is one JSON document (`info`) and
    /// `jsonl` one JSON object per line (`search`, `bench`).
    #[value(alias = "json")]
    Jsonl,
}

/// Measure recall and speed of indices the way ann-benchmarks and FAISS do.
///
/// Targets: index files given as INDEX (several files are shards searched as one index),
/// indices built from --base with each --factory, or an index on a running server (--server,
/// --index). For every setting of the sweep (--nprobe for IVF, --ef-search for HNSW) it
/// reports recall_at_1, recall_at_10 and recall_at_k (fraction of queries whose true nearest
/// neighbour is in the first 1/10/k results, FAISS's R@n), k_recall_at_k (ann-benchmarks'
/// recall: |found top-k ∩ true top-k| / k), QPS with all queries in batches and one query
/// per call, single-query latency p50/p95/p99, train/add/build time, index size and peak
/// memory (VmHWM). Ground truth is --gt (.ivecs/.npy), or an exact search over --base,
/// cached next to the queries. --target-recall R sweeps nprobe/efSearch upwards (doubling,
/// unless lists are given), stops each sweep at the first setting reaching k_recall_at_k ≥ R
/// and marks the fastest such setting (FAISS's operating points). --plot draws recall vs QPS
/// as SVG like ann-benchmarks.
///
/// --filter JSON (repeatable) measures filtered search instead: the ground truth is the exact
/// top-k among the base vectors matching the filter (brute force over just those), and each
/// record adds the filter's selectivity, its evaluation time (filter_eval_ms), the path the
/// search took (filter_path: selector or exact) and the post-filtering baseline measured at
/// the same setting (an unfiltered search for 10·k whose non-matching hits are dropped:
/// baseline_k_recall_at_k, baseline_qps_batch). The index ids must be --base row numbers.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct BenchArgs {
    /// Index files to benchmark; several files are shards searched as one index.
    #[arg(value_name = "INDEX")]
    pub indexes: Vec<PathBuf>,

    /// Base vectors: built into each --factory, and the source of exact ground truth.
    #[arg(long, value_name = "PATH")]
    pub base: Option<PathBuf>,

    /// Query vectors.
    #[arg(long, value_name = "PATH")]
    pub queries: PathBuf,

    /// Ground truth (.ivecs or .npy, one row of neighbour ids per query, at least k columns).
    #[arg(long, value_name = "PATH", conflicts_with = "filter")]
    pub gt: Option<PathBuf>,

    /// Measure search restricted to the vectors whose metadata match this filter (JSON, as
    /// `search --filter`; repeatable: one set of records per filter). Needs --base (the exact
    /// filtered ground truth is computed from it) and indices with metadata. @PATH reads the
    /// filter from a file.
    #[arg(long, value_name = "JSON")]
    pub filter: Vec<String>,

    /// Metadata of the --base vectors (JSON Lines, Parquet, CSV/TSV; one row per vector) for
    /// the indices built with --factory, to filter on.
    #[arg(long, value_name = "PATH", requires = "base")]
    pub metadata: Option<PathBuf>,

    /// FAISS factory string to build from --base and benchmark (repeatable).
    #[arg(long, value_name = "STR")]
    pub factory: Vec<String>,

    /// Metric of the indices built from --factory (and of their exact ground truth).
    #[arg(long, value_enum, default_value_t = MetricArg::L2)]
    pub metric: MetricArg,

    /// Neighbours per query.
    #[arg(short, value_name = "NUM", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub k: u64,

    /// IVF: nprobe values to sweep, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub nprobe: Vec<u64>,

    /// HNSW: efSearch values to sweep, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub ef_search: Vec<u64>,

    /// Pick the fastest setting whose k_recall_at_k reaches R (0 < R ≤ 1).
    #[arg(long, value_name = "R")]
    pub target_recall: Option<f64>,

    /// Batch-mode repetitions; the fastest is reported.
    #[arg(long, value_name = "NUM", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub runs: u64,

    /// Queries timed one per call for latency and single-query QPS (0: skip).
    #[arg(long, value_name = "NUM", default_value_t = 1000)]
    pub single_queries: u64,

    /// Output format (default: table on a terminal, jsonl otherwise).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<BenchFormat>,

    /// Draw recall vs QPS to this SVG file.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,

    /// Training sample size for --factory builds (default as in `faissx build`).
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub train_size: Option<u64>,

    /// Seed of the training sample.
    #[arg(long, value_name = "NUM", default_value_t = 42)]
    pub seed: u64,

    /// Benchmark an index on this running `faissx serve` (with --index).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// Name of the index on the server.
    #[arg(long, value_name = "NAME", requires = "server")]
    pub index: Option<String>,

    /// Concurrent clients in single-query mode (--server).
    #[arg(long, value_name = "NUM", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub clients: u64,

    /// Single-query requests each client keeps in flight on its connection (--server); 1
    /// waits for each reply before sending the next request.
    #[arg(long, value_name = "NUM", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pipeline: u64,

    /// API key for --server.
    #[arg(long, value_name = "KEY", env = "FAISSX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Tenant for --server.
    #[arg(long, value_name = "ID", env = "FAISSX_TENANT_ID")]
    pub tenant: Option<String>,

    /// CurveZMQ public key file of --server (servers started with --curve-secret-key-file).
    #[arg(long, value_name = "PATH", env = "FAISSX_SERVER_PUBLIC_KEY", requires = "server")]
    pub server_public_key: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub open: OpenArgs,
}

fn open_vectors(p: &Path) -> Result<VectorFile> {
    VectorFile::open(p, None, &CsvOptions::default())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"))
}

/// The table of filtered records: the filter's facts and the post-filtering baseline beside
/// the filtered search's recall and speed.
fn filter_table(records: &[Record]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "target",
        "filter",
        "setting",
        "sel %",
        "eval ms",
        "path",
        "k-R@k",
        "QPS batch",
        "p50 ms",
        "post k-R@k",
        "post QPS",
        "post filled",
    ]);
    for r in records {
        let Some(f) = &r.filter else { continue };
        t.add_row(vec![
            r.target.clone(),
            f.filter.clone(),
            format!("{}{}", r.setting, if r.chosen { " *" } else { "" }),
            format!("{:.3}", f.selectivity * 100.0),
            format!("{:.2}", f.filter_eval_ms),
            f.filter_path_detail.clone(),
            format!("{:.4}", r.k_recall_at_k),
            format!("{:.0}", r.qps_batch),
            fmt_opt(r.latency_p50_ms, 3),
            format!("{:.4}", f.baseline_k_recall_at_k),
            format!("{:.0}", f.baseline_qps_batch),
            format!("{:.3}", f.baseline_filled),
        ]);
    }
    for i in [3, 4, 6, 7, 8, 9, 10, 11] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

fn table(records: &[Record]) -> String {
    if records.iter().any(|r| r.filter.is_some()) {
        return filter_table(records);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "target",
        "setting",
        "R@1",
        "R@10",
        "k-R@k",
        "QPS batch",
        "QPS single",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "build s",
        "size MB",
        "mem MB",
    ]);
    for r in records {
        t.add_row(vec![
            r.target.clone(),
            format!("{}{}", r.setting, if r.chosen { " *" } else { "" }),
            format!("{:.4}", r.recall_at_1),
            fmt_opt(r.recall_at_10, 4),
            format!("{:.4}", r.k_recall_at_k),
            format!("{:.0}", r.qps_batch),
            fmt_opt(r.qps_single, 0),
            fmt_opt(r.latency_p50_ms, 3),
            fmt_opt(r.latency_p95_ms, 3),
            fmt_opt(r.latency_p99_ms, 3),
            format!("{:.2}", r.cost.build_s),
            if r.cost.index_bytes > 0 { format!("{:.1}", r.cost.index_bytes as f64 / 1e6) } else { "-".into() },
            if r.cost.mem_peak_bytes > 0 { format!("{:.0}", r.cost.mem_peak_bytes as f64 / 1e6) } else { "-".into() },
        ]);
    }
    for i in 2..13 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

/// Run `faissx bench`.
pub fn run(ctx: &Ctx, a: BenchArgs) -> Result<()> {
    // 1. Flags → engine values, and every check that needs no heavy work.
    if a.indexes.is_empty() && a.factory.is_empty() && a.server.is_none() {
        return Err(Error::invalid(
            "nothing to benchmark: give INDEX files, --factory with --base, or --server with --index",
        ));
    }
    if !a.factory.is_empty() && a.base.is_none() {
        return Err(Error::invalid("--factory builds from the base vectors: give --base PATH"));
    }
    if a.server.is_some() && a.index.is_none() {
        return Err(Error::invalid("--server needs --index NAME (the index on the server)"));
    }
    if !a.filter.is_empty() && a.base.is_none() {
        return Err(Error::invalid(
            "--filter computes the exact filtered ground truth from the base vectors: give --base PATH",
        ));
    }
    if !a.filter.is_empty() && a.server.is_some() {
        return Err(Error::invalid("--filter measures local indices: give INDEX files or --factory, not --server"));
    }
    if a.metadata.is_some() && a.factory.is_empty() {
        return Err(Error::invalid("--metadata is for the indices built with --factory (index files carry their own)"));
    }
    let cases =
        a.filter.iter().map(|f| FilterCase::parse(&super::common::filter_text(f)?)).collect::<Result<Vec<_>>>()?;
    if let Some(r) = a.target_recall {
        if !(r > 0.0 && r <= 1.0) {
            return Err(Error::invalid(format!("--target-recall {r}: must be in (0, 1]")));
        }
    }
    let k = a.k as usize;
    let opts = BenchOptions {
        k,
        nprobe: a.nprobe.iter().map(|&v| v as usize).collect(),
        ef_search: a.ef_search.iter().map(|&v| v as usize).collect(),
        target_recall: a.target_recall,
        runs: a.runs as usize,
        single_queries: a.single_queries as usize,
        batch: a.batch.batch as usize,
    };
    let metric: Metric = a.metric.into();
    let fmt = a.format.unwrap_or(if super::render::stdout_is_tty() { BenchFormat::Table } else { BenchFormat::Jsonl });
    let progress = StderrProgress::for_ctx(ctx);

    let qfile = open_vectors(&a.queries)?;
    if qfile.is_empty() {
        return Err(Error::invalid(format!("{}: no query vectors", a.queries.display())));
    }
    let d = qfile.dim();
    let queries = qfile.read_all()?;
    let nq = qfile.len();
    let base = a.base.as_deref().map(open_vectors).transpose()?;
    if let Some(b) = &base {
        check_dim(&a.queries, d, b.dim()).map_err(|_| {
            Error::new(
                ErrorKind::DimensionMismatch,
                format!(
                    "{}: queries have d={d}, but the base {} has d={}",
                    a.queries.display(),
                    b.path().display(),
                    b.dim()
                ),
            )
        })?;
    }
    let t_open = Instant::now();
    bench::reset_peak_memory();
    let set = if a.indexes.is_empty() {
        None
    } else {
        let open_opts = a.open.options();
        let set = ShardSet::open_with(&a.indexes, |p| Index::open_float(p, &open_opts))?;
        if set.d() != d {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!("{}: queries have d={d}, but the index {} has d={}", a.queries.display(), set.name(), set.d()),
            ));
        }
        Some(set)
    };
    // With --filter, each shard's metadata table (and the --factory builds' one).
    let tables = match (&set, cases.is_empty()) {
        (Some(set), false) => set
            .shards()
            .iter()
            .map(|(p, ix)| {
                MetaTable::open_for(p, ix.meta())?.ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: the index has no metadata to filter on (build or add with --metadata)",
                        p.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let built_table = match (&a.metadata, &base) {
        (Some(m), Some(b)) if !a.factory.is_empty() => {
            let fields = read_metadata(m, None)?;
            if fields.num_rows() != b.len() {
                return Err(Error::invalid(format!(
                    "{}: {} metadata rows for the {} vectors of {}: give one per vector, in the same order",
                    m.display(),
                    fields.num_rows(),
                    b.len(),
                    b.path().display()
                )));
            }
            Some(MetaTable::new(fields, (0..b.len() as i64).collect(), None).map_err(|e| e.context(m.display()))?)
        }
        _ => None,
    };
    if !cases.is_empty() && !a.factory.is_empty() && built_table.is_none() {
        return Err(Error::invalid("--filter with --factory: give the base vectors' metadata with --metadata PATH"));
    }
    // A filter that does not fit the metadata fails before anything is built or searched.
    for t in tables.iter().chain(&built_table) {
        for c in &cases {
            matching_ids(&c.filter, t).map_err(|e| e.context(format!("--filter {}", c.text)))?;
        }
    }
    let open_s = t_open.elapsed().as_secs_f64();
    let server_public_key =
        a.server_public_key.as_deref().map(|p| crate::engine::curve::read_key(p, "--server-public-key")).transpose()?;
    let remote_cfg = a.server.as_ref().map(|s| ClientConfig {
        server: s.clone(),
        api_key: a.api_key.clone(),
        tenant: a.tenant.clone(),
        timeout: Duration::from_secs(60),
        server_public_key,
    });
    if let (Some(cfg), Some(name)) = (&remote_cfg, &a.index) {
        let rd = remote::remote_dimension(cfg, name)?;
        if rd != d {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!("{}: queries have d={d}, but index {name} on {} has d={rd}", a.queries.display(), cfg.server),
            ));
        }
    }

    let gt_file = match &a.gt {
        Some(p) => {
            let gt = bench::load_ground_truth(p)?;
            gt.check(p, nq, k)?;
            Some(gt)
        }
        None => {
            if base.is_none() && cases.is_empty() {
                return Err(Error::invalid(
                    "no ground truth: give --gt FILE (.ivecs/.npy), or --base FILE to compute it by exact search",
                ));
            }
            None
        }
    };

    // 2. Ground truth (from the file, or exact search over the base, cached).
    let gt_for = |m: Metric| -> Result<GroundTruth> {
        if let Some(gt) = &gt_file {
            return Ok(gt.clone());
        }
        let b = base.as_ref().expect("invariant: checked above");
        let (gt, cached) = bench::exact_ground_truth(b, &a.queries, &queries, m, k, opts.batch, &progress, &ctx.stop)?;
        if cached {
            note(
                ctx.quiet,
                &format!(
                    "ground truth from cache {}",
                    bench::ground_truth_cache_path(&a.queries, b.path(), m, k).display()
                ),
            );
        }
        Ok(gt)
    };

    // 3. Measure every target.
    let mut records: Vec<Record> = Vec::new();
    if let Some(set) = &set {
        let index_bytes = a.indexes.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
        let mut cost = BuildCost {
            train_s: None,
            add_s: None,
            build_s: open_s,
            index_bytes,
            mem_peak_bytes: 0,
            rss_anon_bytes: 0,
        };
        let mut recs = if cases.is_empty() {
            let gt = gt_for(set.metric())?;
            bench::sweep_local(&set.name(), set, &queries, &gt, &opts, &cost, &progress, &ctx.stop)?
        } else {
            let b = base.as_ref().expect("invariant: --filter requires --base");
            let from = FilterBase { base: b, metric: set.metric() };
            bfilter::sweep_filtered(
                &set.name(),
                set,
                &tables,
                &cases,
                &from,
                &queries,
                &opts,
                &cost,
                &progress,
                &ctx.stop,
            )?
        };
        cost.mem_peak_bytes = bench::peak_memory();
        cost.rss_anon_bytes = MemStats::current().rss_anon;
        recs.iter_mut().for_each(|r| {
            r.cost.mem_peak_bytes = cost.mem_peak_bytes;
            r.cost.rss_anon_bytes = cost.rss_anon_bytes;
        });
        records.extend(recs);
    }
    drop(set);
    if !a.factory.is_empty() {
        let gt = if cases.is_empty() { Some(gt_for(metric)?) } else { None };
        let b = base.as_ref().expect("invariant: checked above");
        let build = BuildOptions {
            train_size: a.train_size.map(|v| v as usize),
            seed: a.seed,
            batch: opts.batch,
            ..BuildOptions::default()
        };
        for f in &a.factory {
            bench::reset_peak_memory();
            note(ctx.quiet, &format!("building {f} from {}", b.path().display()));
            let (index, cost) = bench::build_target(b, f, metric, &build, &progress, &ctx.stop)?;
            let set = ShardSet::new(vec![(PathBuf::from(f), index)])?;
            let mut recs = match (&gt, &built_table) {
                (Some(gt), _) => bench::sweep_local(f, &set, &queries, gt, &opts, &cost, &progress, &ctx.stop)?,
                (None, Some(table)) => {
                    let from = FilterBase { base: b, metric };
                    let tables = std::slice::from_ref(table);
                    bfilter::sweep_filtered(
                        f, &set, tables, &cases, &from, &queries, &opts, &cost, &progress, &ctx.stop,
                    )?
                }
                (None, None) => {
                    return Err(Error::invalid(
                        "--filter with --factory: give the base vectors' metadata with --metadata PATH",
                    ))
                }
            };
            let peak = bench::peak_memory();
            let anon = MemStats::current().rss_anon;
            recs.iter_mut().for_each(|r| {
                r.cost.mem_peak_bytes = peak;
                r.cost.rss_anon_bytes = anon;
            });
            records.extend(recs);
        }
    }
    if let (Some(cfg), Some(name)) = (&remote_cfg, &a.index) {
        let gt = gt_for(Metric::L2)?;
        records.extend(remote::sweep_remote(
            cfg,
            name,
            a.clients as usize,
            a.pipeline as usize,
            d,
            &queries,
            &gt,
            &opts,
            &progress,
            &ctx.stop,
        )?);
    }

    // 4. Operating points, output, plot.
    if let Some(r) = opts.target_recall {
        match bench::mark(&mut records, Some(r)) {
            Some(i) => note(
                ctx.quiet,
                &format!(
                    "fastest setting reaching {k}-recall@{k} ≥ {r}: {} {} (recall {:.4}, {:.0} QPS)",
                    records[i].target, records[i].setting, records[i].k_recall_at_k, records[i].qps_batch
                ),
            ),
            None => note(ctx.quiet, &format!("no setting reached {k}-recall@{k} ≥ {r}")),
        }
    } else {
        bench::mark(&mut records, None);
    }
    match fmt {
        BenchFormat::Table => println_out(&table(&records))?,
        BenchFormat::Jsonl => {
            let mut s = String::new();
            for r in &records {
                s.push_str(&serde_json::to_string(r).map_err(|e| Error::invalid(format!("serializing record: {e}")))?);
                s.push('\n');
            }
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(s.as_bytes()).at(Path::new("<stdout>"))?;
            out.flush().at(Path::new("<stdout>"))?;
        }
    }
    if let Some(p) = &a.plot {
        let title = format!("Recall-QPS tradeoff, k={k}, {nq} queries — up and to the right is better");
        // One series per target and filter.
        let labelled: Vec<Record> = records
            .iter()
            .cloned()
            .map(|mut r| {
                if let Some(f) = r.filter_text() {
                    r.target = format!("{} {f}", r.target);
                }
                r
            })
            .collect();
        atomic::write_all(p, plot::recall_qps_svg(&labelled, false, &title).as_bytes())?;
        note(ctx.quiet, &format!("plot written to {}", p.display()));
    }
    Ok(())
}
