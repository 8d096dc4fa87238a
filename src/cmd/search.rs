//! `faissx search`: k-NN or range search of a query file.

use super::common::{filter_text, BatchArgs, InputArgs, OpenArgs, OutputFormat, SearchParamArgs};
use super::render::{self, HitWriter, StderrProgress};
use super::Ctx;
use crate::engine::filter::{matching_ids, Filter, MetaTable};
use crate::engine::index::IdSet;
use crate::engine::shards::{self, ShardSet};
use crate::engine::{Error, Index, Neighbors, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  # top-10 neighbours of every query as JSON Lines
  faissx search fm.index query.bvecs -k 10 --nprobe 16 --format jsonl > hits.jsonl

  # ids to hits.npy (int64) and distances to hits.distances.npy (float32)
  faissx search fm.index query.bvecs -k 100 --format npy -o hits.npy

  # search a large index in place, memory-mapped, with a sequential warm-up read
  faissx search big.index queries.fvecs -k 10 --mmap --warm

  # only hits whose metadata matches the filter in en-2020.json (e.g. English since 2020),
  # with each hit's metadata; string ids are shown as given
  faissx search docs.index q.npy -k 10 --filter @en-2020.json --with-metadata

  # every base vector within squared L2 distance 50000 of each query
  faissx search fm.index query.bvecs --radius 50000 --format csv

  # scatter-gather over shards written by `faissx split` (the last path is the queries)
  faissx search shards/fm.0.index shards/fm.1.index query.bvecs -k 10";

/// Search an index for the nearest neighbours of query vectors.
///
/// Prints one record per query: a table when stdout is a terminal, JSON Lines
/// ({\"query\":i,\"ids\":[…],\"distances\":[…]}) otherwise, or the format chosen with --format.
/// Distances are squared L2 for l2 indices and inner products for ip and cosine. Missing
/// neighbours (k > ntotal) have id -1 (distance null in JSON, inf in CSV). --format npy and
/// ivecs write files given by -o: ids to OUTPUT, distances beside it.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct SearchArgs {
    /// Index file to search; several files (shards, e.g. from `faissx split`) are searched
    /// as one index, their top-k merged by distance. The last path is the queries.
    #[arg(value_name = "INDEX", required = true, num_args = 1..)]
    pub index: Vec<PathBuf>,

    /// Query vectors (- for stdin).
    #[arg(value_name = "QUERIES")]
    pub queries: PathBuf,

    /// Neighbours per query.
    #[arg(short, value_name = "NUM", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub k: u64,

    /// Range search: return every vector within RADIUS (squared L2; for ip/cosine, similarity
    /// above RADIUS) instead of the k nearest.
    #[arg(long, value_name = "RADIUS", allow_negative_numbers = true, conflicts_with = "k")]
    pub radius: Option<f32>,

    /// Output format (default: table on a terminal, jsonl otherwise).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,

    /// Search only vectors whose metadata matches this filter (JSON, MongoDB style):
    /// {"lang": "en", "year": {"$gte": 2020}, "tags": {"$in": ["rust"]}}; operators $eq $ne
    /// $gt $gte $lt $lte $in $nin $exists $and $or $not, dotted paths into nested objects, a
    /// list field matching when any element does. The filter runs inside FAISS's search (an
    /// IDSelector), or as an exact scan of the matches when few match (-v says which).
    /// @PATH reads the filter from a file.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,

    /// Show each hit's metadata (JSON Lines: a "metadata" array beside "ids"; CSV and
    /// table: a metadata column).
    #[arg(long)]
    pub with_metadata: bool,

    /// Output file (required for npy and ivecs; otherwise results go to stdout).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub params: SearchParamArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub open: OpenArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub batch: BatchArgs,
}

fn verbose(ctx: &Ctx, msg: &str) {
    if ctx.verbose > 0 && !ctx.quiet {
        render::note(false, msg);
    }
}

/// With `-v`, report search time and this process's memory while the index is still open
/// (RssAnon is what a loaded index costs; a mapped one shows up in RssFile instead).
fn report_search(ctx: &Ctx, nq: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    verbose(ctx, &format!("searched {nq} queries in {secs:.3} s ({:.0} QPS)", nq as f64 / secs.max(1e-9)));
    if ctx.verbose > 0 && !ctx.quiet {
        let m = crate::engine::index::MemStats::current();
        render::note(
            false,
            &format!("memory: RssAnon {} bytes, RssFile {} bytes, peak RSS {} bytes", m.rss_anon, m.rss_file, m.vm_hwm),
        );
    }
}

/// Run `faissx search`.
pub fn run(ctx: &Ctx, a: SearchArgs) -> Result<()> {
    let fmt = OutputFormat::resolve(a.format, a.output.as_deref());
    let binary = fmt.is_binary();
    if binary && a.output.is_none() {
        return Err(Error::invalid("--format npy/ivecs writes files: give -o PATH"));
    }
    if binary && a.radius.is_some() {
        return Err(Error::invalid("range search results are ragged: use --format jsonl, csv or table"));
    }
    if let Some(out) = &a.output {
        crate::engine::io::atomic::check_dest(out)?;
    }
    let open_opts = a.open.options();
    let t_open = Instant::now();
    let filter = a.filter.as_deref().map(|f| Filter::parse(&filter_text(f)?)).transpose()?;
    let mut index = ShardSet::open_with(&a.index, |p| Index::open_float(p, &open_opts))?;
    let tables = index
        .shards()
        .iter()
        .map(|(p, ix)| MetaTable::open_for(p, ix.meta()).map(|t| t.map(Arc::new)))
        .collect::<Result<Vec<_>>>()?;
    verbose(ctx, &format!("opened {} index file(s) in {:.3} s", a.index.len(), t_open.elapsed().as_secs_f64()));
    if let Some(f) = &filter {
        let t = Instant::now();
        let mut sets = Vec::with_capacity(tables.len());
        let (mut matched, mut rows) = (0, 0);
        for ((p, ix), table) in index.shards().iter().zip(&tables) {
            let Some(table) = table else {
                return Err(Error::invalid(format!(
                    "{}: the index has no metadata to filter on (build or add with --metadata)",
                    p.display()
                )));
            };
            let ids = matching_ids(f, table)?;
            (matched, rows) = (matched + ids.len(), rows + ix.ntotal());
            sets.push(IdSet::new(ids));
        }
        index.restrict(sets)?;
        verbose(
            ctx,
            &format!("filter matched {matched} of {rows} vectors in {:.1} ms", t.elapsed().as_secs_f64() * 1e3),
        );
    }
    let tables: Vec<Arc<MetaTable>> = tables.into_iter().flatten().collect();
    if a.with_metadata && tables.is_empty() {
        return Err(Error::invalid(format!(
            "{}: the index has no metadata to show (build or add with --metadata)",
            index.name()
        )));
    }
    let t_search = Instant::now();
    let queries = a.input_args.open(&a.queries)?;
    let params = a.params.to_params(a.k);
    let progress = StderrProgress::new(ctx.quiet || !binary);
    let batch = a.batch.batch as usize;

    if binary {
        let mut all = Neighbors {
            nq: 0,
            k: params.k,
            ids: Vec::with_capacity(queries.len() * params.k),
            dists: Vec::with_capacity(queries.len() * params.k),
        };
        shards::search_file(&index, &queries, &params, batch, &progress, &ctx.stop, &mut |_, n| {
            all.nq += n.nq;
            all.ids.extend_from_slice(&n.ids);
            all.dists.extend_from_slice(&n.dists);
            Ok(())
        })?;
        let out = a.output.as_deref().expect("invariant: checked above");
        report_search(ctx, queries.len(), t_search);
        return render::write_binary(out, fmt == OutputFormat::Npy, &all);
    }

    let mut w = HitWriter::open(fmt.text(), a.output.as_deref())?.labelled(tables, a.with_metadata);
    match a.radius {
        Some(r) => {
            // Range search has no per-call parameters in FAISS: set them on the index.
            if let Some(np) = params.nprobe {
                index.set_nprobe(np)?;
            }
            if let Some(ef) = params.ef_search {
                index.set_ef_search(ef)?;
            }
            shards::range_search_file(&index, &queries, r, batch, &progress, &ctx.stop, &mut |s, h| w.range(s, h))?
        }
        None => {
            shards::search_file(&index, &queries, &params, batch, &progress, &ctx.stop, &mut |s, n| w.neighbors(s, n))?
        }
    }
    if let Some(p) = index.last_path() {
        verbose(ctx, &format!("filtered search: {p}"));
    }
    report_search(ctx, queries.len(), t_search);
    w.finish()
}
