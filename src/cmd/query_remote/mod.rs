//! `faissx query-remote`: the shell client of `faissx serve`. Each subcommand turns its flags
//! into a [`Client`] call (vectors travel as binary payloads) and renders the reply: search
//! results through `render.rs` like `faissx search`, everything else as one JSON line.

use super::common::{InputArgs, OutputFormat, SearchParamArgs};
use super::render::{self, println_out, HitWriter, StderrProgress, TextFormat};
use super::Ctx;
use crate::engine::client::{Client, ClientConfig, IndexStatus};
use crate::engine::filter::table::{json_to_batch, read_user_ids, UserIds};
use crate::engine::filter::{Filter, MetaTable};
use crate::engine::index::{check_id_count, pack_bits, Rows};
use crate::engine::io::{self, check_dim};
use crate::engine::jobs;
use crate::engine::protocol::Value;
use crate::engine::{Error, Neighbors, Progress, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod json;
mod transfer;
pub use json::{from_json, to_json};
use json::{print_reply, read_metadata};
pub use transfer::{ExportArgs, ImportArgs};

const EXAMPLES: &str = "\
Examples:
  faissx query-remote --server tcp://127.0.0.1:45678 --api-key k1 create docs --dimension 784 --index-type \"IVF256,Flat\"
  faissx query-remote --server tcp://127.0.0.1:45678 --api-key k1 add docs base.bvecs
  faissx query-remote --server tcp://127.0.0.1:45678 --api-key k1 search docs query.bvecs -k 10 --format jsonl

Environment: FAISSX_SERVER, FAISSX_API_KEY, FAISSX_TENANT_ID and FAISSX_TIMEOUT set the flags of the same name.";

/// Talk to a running `faissx serve`.
///
/// Creates, fills, trains, searches and inspects indices held by a server. Vectors are read
/// from the same files as `faissx build` (.npy, .fvecs, .bvecs, .ivecs, .csv or stdin) and
/// sent in batches as binary payloads; search results are printed in the same formats as
/// `faissx search`. Other replies are printed as one JSON object. A server that does not
/// answer within --timeout is an error, never a hang.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct QueryRemoteArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: RemoteArgs,

    /// What to do.
    #[command(subcommand)]
    pub op: RemoteOp,
}

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Server endpoint.
    #[arg(long, value_name = "URL", default_value = "tcp://127.0.0.1:45678", env = "FAISSX_SERVER", global = true)]
    pub server: String,

    /// API key (servers started with --enable-auth).
    #[arg(long, value_name = "KEY", env = "FAISSX_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,

    /// Tenant whose indices to use (servers without auth; with auth the key decides).
    #[arg(long, value_name = "ID", env = "FAISSX_TENANT_ID", global = true)]
    pub tenant: Option<String>,

    /// Seconds to wait for each reply.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, env = "FAISSX_TIMEOUT", global = true)]
    pub timeout: f64,

    /// Encrypt with CurveZMQ and authenticate the server by its public key file (the `.pub`
    /// of `faissx keygen`; servers started with --curve-secret-key-file). A server with
    /// another key never answers: the call times out.
    #[arg(long, value_name = "PATH", env = "FAISSX_SERVER_PUBLIC_KEY", global = true)]
    pub server_public_key: Option<PathBuf>,

    /// `serve --cluster`: before reading an index, wait (up to 80 % of --timeout, at most 60 s) until
    /// the replica has applied this log sequence, the `seq` a write printed: read your writes
    /// from any replica.
    #[arg(long, value_name = "SEQ", env = "FAISSX_MIN_SEQ", global = true)]
    pub min_seq: Option<u64>,
}

/// `query-remote` subcommands.
#[derive(Debug, Subcommand)]
pub enum RemoteOp {
    /// Check that the server answers.
    #[command(
        after_long_help = "Examples:\n  faissx query-remote ping\n  faissx query-remote --server tcp://10.0.0.5:45678 ping"
    )]
    Ping,
    /// Server status: uptime, indices and vectors of this tenant.
    #[command(after_long_help = "Examples:\n  faissx query-remote health")]
    Health,
    /// Request counters and latency percentiles per action.
    #[command(after_long_help = "Examples:\n  faissx query-remote metrics")]
    Metrics,
    /// List this tenant's indices.
    #[command(after_long_help = "Examples:\n  faissx query-remote --api-key k1 list")]
    List,
    /// Create an index.
    #[command(
        after_long_help = "Examples:\n  faissx query-remote create docs --dimension 784 --index-type \"IVF256,Flat\"\n  faissx query-remote create small --dimension 128 --index-type HNSW32 --metric ip\n  faissx query-remote --server tcp://router:45600 create docs --dimension 384 --index-type IVF4096,PQ48 --shards 2"
    )]
    Create(CreateArgs),
    /// Add vectors (and ids, metadata) from a file, in batches; an untrained index is first
    /// trained on a sample of the file.
    #[command(
        after_long_help = "Examples:\n  faissx query-remote add docs base.bvecs\n  faissx query-remote add docs more.npy --ids more_ids.npy --metadata more.jsonl\n  faissx query-remote add docs more.npy --ids more_ids.txt --metadata more.jsonl   # string ids, one per line"
    )]
    Add(AddArgs),
    /// Train an index on vectors from a file.
    #[command(after_long_help = "Examples:\n  faissx query-remote train docs base.bvecs --train-size 50000")]
    Train(TrainArgs),
    /// k-NN search of a query file.
    #[command(
        after_long_help = "Examples:\n  faissx query-remote search docs query.bvecs -k 10 --format jsonl\n  faissx query-remote search docs query.bvecs -k 100 --format npy -o hits.npy\n  faissx query-remote search docs q.npy -k 10 --filter @tags.json --include-metadata"
    )]
    Search(SearchArgs),
    /// Range search: every vector within a radius of each query.
    #[command(after_long_help = "Examples:\n  faissx query-remote range-search docs query.bvecs --radius 50000")]
    RangeSearch(RangeArgs),
    /// Describe an index: type, d, ntotal, metric, parameters, storage.
    #[command(after_long_help = "Examples:\n  faissx query-remote info docs")]
    Info(IndexArg),
    /// Remove vectors by id.
    ///
    /// On an index that numbers vectors by position (Flat, PQ, … without IDMap), FAISS
    /// renumbers every later vector: the reply says "renumbered": true, with a warning.
    #[command(
        after_long_help = "Examples:\n  faissx query-remote remove docs 3 17 42\n  faissx query-remote remove docs --ids gone.npy"
    )]
    Remove(IdsArgs),
    /// Print the stored vectors of the given ids.
    #[command(after_long_help = "Examples:\n  faissx query-remote reconstruct docs 0 1 2")]
    Reconstruct(IdsArgs),
    /// Print the metadata stored with the given ids.
    #[command(after_long_help = "Examples:\n  faissx query-remote metadata docs 0 1 2")]
    Metadata(IdsArgs),
    /// Delete an index.
    #[command(after_long_help = "Examples:\n  faissx query-remote delete docs")]
    Delete(IndexArg),
    /// Checkpoint one index (or all of this tenant's) to disk now; on a `serve --cluster`
    /// replica, write a snapshot of every index to the cluster's snapshot store.
    #[command(after_long_help = "Examples:\n  faissx query-remote snapshot docs\n  faissx query-remote snapshot")]
    Snapshot(OptIndexArg),
    /// Make an index file the index INDEX: new, or an atomic swap of the served one.
    ///
    /// Searches running during the swap finish on the old version, later ones see the new
    /// one. The reply carries the new generation and the file's checksum; --if-generation
    /// makes the swap conditional. With --all, restores a folder written by `export --all`.
    #[command(
        after_long_help = "Examples:\n  faissx build docs.npy -o docs.index --factory IVF1024,PQ32 --ids doc_ids.npy\n  faissx query-remote import docs docs.index\n  faissx query-remote import docs docs.index --if-generation 3\n  faissx query-remote import docs --server-path /srv/indices/docs.index\n  faissx query-remote import --all backup-2026-12-01/"
    )]
    Import(ImportArgs),
    /// Download a consistent point-in-time copy of an index (or, with --all, of every index
    /// of this tenant, with a manifest.json): the files `faissx search`/`info` and Python's
    /// faiss.read_index open.
    #[command(
        after_long_help = "Examples:\n  faissx query-remote export docs -o docs-copy.index\n  faissx query-remote export --all -o backup-2026-12-01/"
    )]
    Export(ExportArgs),
}

impl RemoteOp {
    /// The index a reading subcommand reads (what `--min-seq` waits for); `None` for the
    /// others.
    pub fn read_index(&self) -> Option<&str> {
        match self {
            RemoteOp::Info(x) => Some(&x.index),
            RemoteOp::Search(x) => Some(&x.index),
            RemoteOp::RangeSearch(x) => Some(&x.index),
            RemoteOp::Reconstruct(x) | RemoteOp::Metadata(x) => Some(&x.index),
            RemoteOp::Export(x) => x.index.as_deref(),
            _ => None,
        }
    }
}

/// Just an index id.
#[derive(Debug, Args)]
pub struct IndexArg {
    /// Index id on the server.
    #[arg(value_name = "INDEX")]
    pub index: String,
}

/// An optional index id.
#[derive(Debug, Args)]
pub struct OptIndexArg {
    /// Index id on the server (default: all of this tenant's).
    #[arg(value_name = "INDEX")]
    pub index: Option<String>,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Index id to create.
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Vector dimension (bits for binary indices, a multiple of 8).
    #[arg(long, short = 'd', value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub dimension: u64,
    /// FAISS factory string or FAISSx type name (L2, IP, HNSW32, IVF256, IDMap2:Flat,
    /// BINARY_FLAT, `BINARY_IVF<nlist>`, `BINARY_HASH<bits>`, …).
    #[arg(long, value_name = "STR", default_value = "Flat", alias = "factory")]
    pub index_type: String,
    /// Metric (default: l2, or ip for FAISSx *_IP types).
    #[arg(long, value_name = "METRIC", value_parser = ["l2", "ip", "cosine"])]
    pub metric: Option<String>,
    /// Through a router (`serve --router`): the number of shards you expect the index to
    /// span; the router refuses the create if it has another number.
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub shards: Option<u64>,
}

/// `add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Index id on the server.
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Vector file to add (- for stdin).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Ids file, one per vector (.npy int32/int64, .ivecs, or text: one id per line,
    /// integers or strings; string ids are mapped to FAISS ids by the server and shown in
    /// its replies).
    #[arg(long, value_name = "PATH")]
    pub ids: Option<PathBuf>,
    /// JSON Lines file: one JSON value per vector, stored with it as metadata.
    #[arg(long, value_name = "PATH")]
    pub metadata: Option<PathBuf>,
    /// Vectors per request.
    #[arg(long, value_name = "NUM", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// If the index is not trained yet, train it first on a deterministic sample of this many
    /// rows of INPUT (default: all rows up to max(100000, 256 × nlist), as `faissx build`).
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub train_size: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,
}

/// `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Index id on the server.
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Vector file to train on (- for stdin).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Train on a deterministic sample of this many rows (default: all, up to 100,000).
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub train_size: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,
}

/// `search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index id on the server.
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Query vectors (- for stdin).
    #[arg(value_name = "QUERIES")]
    pub queries: PathBuf,
    /// Neighbours per query.
    #[arg(short, value_name = "NUM", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub k: u64,
    /// Output format (default: table on a terminal, jsonl otherwise).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    /// Output file (required for npy and ivecs).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Add each hit's metadata to JSON Lines output ("metadata":[…]).
    #[arg(long)]
    pub include_metadata: bool,
    /// Search only vectors whose metadata matches this filter (JSON, MongoDB style, as
    /// `faissx search --filter`): field equality, $eq $ne $gt $gte $lt $lte $in $nin
    /// $exists, $and $or $not, dotted paths, a list field matching when any element does. The
    /// server runs it inside FAISS's search (-v prints the path it took). @PATH reads the
    /// filter from a file.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Queries per request.
    #[arg(long, value_name = "NUM", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub params: SearchParamArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,
}

/// `range-search`.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// Index id on the server.
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Query vectors (- for stdin).
    #[arg(value_name = "QUERIES")]
    pub queries: PathBuf,
    /// Radius (squared L2; for ip/cosine, similarity above RADIUS).
    #[arg(long, value_name = "RADIUS", allow_negative_numbers = true)]
    pub radius: f32,
    /// Output format: table, jsonl or csv (default: table on a terminal, jsonl otherwise).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input_args: InputArgs,
}

/// An index and ids.
#[derive(Debug, Args)]
pub struct IdsArgs {
    /// Index id on the server.
    #[arg(value_name = "INDEX")]
    pub index: String,
    /// Vector ids.
    #[arg(value_name = "ID", allow_negative_numbers = true)]
    pub id_list: Vec<i64>,
    /// Read the ids from a file instead (.npy, .ivecs or one per line).
    #[arg(long, value_name = "PATH")]
    pub ids: Option<PathBuf>,
}

impl IdsArgs {
    fn resolve(&self) -> Result<Vec<i64>> {
        let mut v = self.id_list.clone();
        if let Some(p) = &self.ids {
            v.extend(io::read_ids(p)?);
        }
        if v.is_empty() {
            return Err(Error::invalid("give ids as arguments or with --ids PATH"));
        }
        Ok(v)
    }
}

/// Run `faissx query-remote`.
pub fn run(ctx: &Ctx, a: QueryRemoteArgs) -> Result<()> {
    if !(a.conn.timeout > 0.0 && a.conn.timeout.is_finite()) {
        return Err(Error::invalid("--timeout must be a positive number of seconds"));
    }
    let mut c = Client::connect(ClientConfig {
        server: a.conn.server.clone(),
        api_key: a.conn.api_key.clone().filter(|s| !s.is_empty()),
        tenant: a.conn.tenant.clone().filter(|s| !s.is_empty()),
        timeout: Duration::from_secs_f64(a.conn.timeout),
        server_public_key: a
            .conn
            .server_public_key
            .as_deref()
            .map(|p| crate::engine::curve::read_key(p, "--server-public-key"))
            .transpose()?,
    })?;
    if let (Some(seq), Some(index)) = (a.conn.min_seq, a.op.read_index()) {
        c.call(
            "get_index_status",
            vec![
                ("index_id", Value::from(index)),
                ("min_seq", Value::from(seq)),
                // The server gives up first, so the error says how far the replica got.
                ("min_seq_timeout", Value::F64((a.conn.timeout * 0.8).min(60.0))),
            ],
        )?;
    }
    match a.op {
        RemoteOp::Ping => print_reply(c.ping()?),
        RemoteOp::Health => print_reply(c.health()?),
        RemoteOp::Metrics => print_reply(c.metrics()?),
        RemoteOp::List => print_reply(c.list_indices()?),
        RemoteOp::Create(x) => {
            let mut f = vec![
                ("index_id", Value::from(x.index.as_str())),
                ("dimension", Value::from(x.dimension)),
                ("index_type", Value::from(x.index_type.as_str())),
            ];
            if let Some(m) = &x.metric {
                f.push(("metric", Value::from(m.as_str())));
            }
            if let Some(n) = x.shards {
                f.push(("shards", Value::from(n)));
            }
            print_reply(c.call("create_index", f)?)
        }
        RemoteOp::Info(x) => print_reply(c.get_index_info(&x.index)?),
        RemoteOp::Delete(x) => print_reply(c.delete_index(&x.index)?),
        RemoteOp::Snapshot(x) => print_reply(c.snapshot(x.index.as_deref())?),
        RemoteOp::Remove(x) => {
            let reply = c.remove_ids(&x.index, &x.resolve()?)?;
            // FAISS renumbers a position-numbered index (plain Flat, PQ, …): say so on stderr too.
            if reply.flag("renumbered").unwrap_or(false) {
                let msg = "ids changed: every vector after a removed one moved down (the index numbers vectors by position; create it as IDMap2:… to keep ids)";
                render::note(ctx.quiet, &format!("warning: {}: {msg}", x.index));
            }
            print_reply(reply)
        }
        RemoteOp::Metadata(x) => print_reply(c.get_metadata(&x.index, &x.resolve()?)?),
        RemoteOp::Reconstruct(x) => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            for id in x.resolve()? {
                let v = to_json(&c.reconstruct(&x.index, id)?);
                writeln!(out, "{}", serde_json::json!({"id": id, "vector": v}))
                    .map_err(|e| Error::io(Path::new("<stdout>"), e))?;
            }
            out.flush().map_err(|e| Error::io(Path::new("<stdout>"), e))
        }
        RemoteOp::Add(x) => add(ctx, &mut c, x),
        RemoteOp::Import(x) => transfer::import(ctx, &mut c, x),
        RemoteOp::Export(x) => transfer::export(ctx, &mut c, x),
        RemoteOp::Train(x) => {
            let form = Form::of(&c.get_index_status(&x.index)?);
            let f = x.input_args.open(&x.input)?;
            form.check(f.path(), f.dim())?;
            let n = x.train_size.map_or(f.len().min(100_000), |n| n as usize);
            let sample = form.rows(f.path(), f.sample(n, 42)?, f.dim())?;
            print_reply(c.train(&x.index, &sample, form.d)?)
        }
        RemoteOp::Search(x) => search(ctx, &mut c, x),
        RemoteOp::RangeSearch(x) => {
            let form = Form::of(&c.get_index_status(&x.index)?);
            let f = x.input_args.open(&x.queries)?;
            form.check(f.path(), f.dim())?;
            let mut w = HitWriter::new(text_format(x.format)?);
            for b in f.batches(1024) {
                let b = b?;
                let q = form.rows(f.path(), b.data, f.dim())?;
                let h = c.range_search(&x.index, &q, form.d, x.radius)?;
                w.range(b.start, &h)?;
            }
            w.finish()
        }
    }
}

/// What vectors an index takes: its `d`, and whether it is a binary (Hamming) index of `d`
/// bits.
struct Form {
    d: usize,
    binary: bool,
}

impl Form {
    /// The form of the index with this status.
    fn of(status: &IndexStatus) -> Form {
        Form { d: status.dimension, binary: status.is_binary() }
    }

    /// Check that rows of `file_d` values from `path` fit: `d` for a float index; for a
    /// binary one `d` (one value per bit) or `d/8` (packed bytes, as in `.bvecs`).
    fn check(&self, path: &Path, file_d: usize) -> Result<()> {
        if !self.binary {
            return check_dim(path, file_d, self.d);
        }
        if file_d == self.d || file_d * 8 == self.d {
            return Ok(());
        }
        Err(Error::new(
            crate::engine::ErrorKind::DimensionMismatch,
            format!(
                "{}: rows of {file_d} values do not fit a binary index of d={} bits: give {} values per row (one per bit) or {} bytes (packed codes, e.g. .bvecs)",
                path.display(),
                self.d,
                self.d,
                self.d / 8
            ),
        ))
    }

    /// Rows read from `path` (`file_d` values each) in the index's form: float rows as they
    /// are; for a binary index, rows of `d` values become codes bit by bit (`> 0.5` is 1, as
    /// FAISSx reads bits) and rows of `d/8` byte values (0–255) are the packed codes.
    fn rows(&self, path: &Path, data: Vec<f32>, file_d: usize) -> Result<Rows> {
        if !self.binary {
            return Ok(Rows::Float(data));
        }
        if file_d == self.d {
            return Ok(Rows::Codes(pack_bits(&data)));
        }
        data.iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
                    Ok(v as u8)
                } else {
                    Err(Error::invalid(format!(
                        "{}: row {} byte {} is {v}: packed binary codes are bytes 0-255",
                        path.display(),
                        i / file_d,
                        i % file_d
                    )))
                }
            })
            .collect::<Result<Vec<u8>>>()
            .map(Rows::Codes)
    }
}

fn text_format(f: Option<OutputFormat>) -> Result<TextFormat> {
    Ok(match f {
        Some(OutputFormat::Table) => TextFormat::Table,
        Some(OutputFormat::Csv) => TextFormat::Csv,
        Some(OutputFormat::Jsonl) => TextFormat::Jsonl,
        Some(_) => return Err(Error::invalid("range search results are ragged: use --format jsonl, csv or table")),
        None if render::stdout_is_tty() => TextFormat::Table,
        None => TextFormat::Jsonl,
    })
}

fn add(ctx: &Ctx, c: &mut Client, x: AddArgs) -> Result<()> {
    let status = c.get_index_status(&x.index)?;
    let form = Form::of(&status);
    let d = form.d;
    let f = x.input_args.open(&x.input)?;
    form.check(f.path(), f.dim())?;
    if !status.is_trained {
        // As `faissx build` does: an untrained index is trained on a sample of its input.
        let nlist = status.nlist.unwrap_or(0);
        let n = x.train_size.map_or(jobs::default_train_size(f.len(), nlist), |n| n as usize).min(f.len());
        render::note(
            ctx.quiet,
            &format!(
                "index {} is not trained: training it on {n} vectors sampled from {}",
                x.index,
                f.path().display()
            ),
        );
        c.train(&x.index, &form.rows(f.path(), f.sample(n, 42)?, f.dim())?, d)?;
    }
    let ids = match &x.ids {
        Some(p) => Some(read_user_ids(p)?),
        None => f.ids().map(|v| UserIds::Ints(v.to_vec())),
    };
    if let Some(ids) = &ids {
        check_id_count(ids.len(), f.len())?;
    }
    let md = x.metadata.as_deref().map(read_metadata).transpose()?;
    if let Some(md) = &md {
        if md.len() != f.len() {
            return Err(Error::invalid(format!(
                "{} metadata lines for {} vectors: give exactly one per vector",
                md.len(),
                f.len()
            )));
        }
    }
    let progress = StderrProgress::for_ctx(ctx);
    progress.start("add", f.len() as u64);
    let mut last = None;
    for b in f.batches(x.batch as usize) {
        let b = b?;
        let r = b.start..b.start + b.rows;
        let bmd = md.as_ref().map(|m| m[r.clone()].to_vec());
        let rows = form.rows(f.path(), b.data, f.dim())?;
        last = Some(match &ids {
            Some(UserIds::Keys(k)) => c.add_vectors_keyed(&x.index, &rows, d, &k[r], bmd)?,
            Some(UserIds::Ints(v)) => c.add_vectors(&x.index, &rows, d, Some(&v[r]), bmd)?,
            None => c.add_vectors(&x.index, &rows, d, None, bmd)?,
        });
        progress.inc(b.rows as u64);
    }
    progress.finish();
    let ntotal = last.as_ref().map(|a| a.ntotal);
    let mut out = serde_json::json!({"index_id": x.index, "added": f.len(), "ntotal": ntotal});
    if let Some(seq) = last.and_then(|a| a.seq) {
        // `serve --cluster`: the last batch's log sequence, for `--min-seq` on any replica.
        out["seq"] = seq.into();
    }
    println_out(&out.to_string())
}

/// A table of the string ids of `ids` (FAISS ids; -1 and unlabelled hits left out), with no
/// metadata fields, for [`HitWriter::labelled`].
fn label_table(ids: &[i64], labels: &[Option<String>]) -> Result<MetaTable> {
    let pairs: std::collections::BTreeMap<i64, &str> =
        ids.iter().zip(labels).filter_map(|(&i, l)| Some((i, l.as_deref()?))).filter(|(i, _)| *i >= 0).collect();
    let n = pairs.len();
    let fields = json_to_batch(&vec![serde_json::json!({}); n], "string ids")?;
    let (ids, keys): (Vec<i64>, Vec<String>) = pairs.into_iter().map(|(i, k)| (i, k.to_string())).unzip();
    MetaTable::new(fields, ids, Some(keys))
}

fn search(ctx: &Ctx, c: &mut Client, x: SearchArgs) -> Result<()> {
    let fmt = OutputFormat::resolve(x.format, x.output.as_deref());
    let binary = fmt.is_binary();
    if binary && x.output.is_none() {
        return Err(Error::invalid("--format npy/ivecs writes files: give -o PATH"));
    }
    if x.include_metadata && fmt != OutputFormat::Jsonl {
        return Err(Error::invalid("--include-metadata needs --format jsonl"));
    }
    // Checked here first: a bad filter is a usage error before anything is sent.
    let filter = match &x.filter {
        Some(arg) => {
            let text = &super::common::filter_text(arg)?;
            Filter::parse(text)?;
            let j: serde_json::Value =
                serde_json::from_str(text).map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
            Some(from_json(&j))
        }
        None => None,
    };
    let form = Form::of(&c.get_index_status(&x.index)?);
    let f = x.input_args.open(&x.queries)?;
    form.check(f.path(), f.dim())?;
    let params = x.params.to_params(x.k);
    let k = params.k;
    let progress = StderrProgress::new(ctx.quiet || !binary);
    progress.start("search", f.len() as u64);
    let mut all = Neighbors { nq: 0, k, ids: Vec::new(), dists: Vec::new() };
    let mut w = if binary { None } else { Some(HitWriter::open(fmt.text(), x.output.as_deref())?) };
    for b in f.batches(x.batch as usize) {
        let b = b?;
        let q = form.rows(f.path(), b.data, f.dim())?;
        let reply = c.search_filtered(&x.index, &q, form.d, &params, x.include_metadata, filter.as_ref())?;
        if let Some((path, matches)) = &reply.filter {
            if ctx.verbose > 0 && !ctx.quiet && b.start == 0 {
                render::note(false, &format!("filter matched {matches} vectors; filtered search: {path}"));
            }
        }
        let (n, md, labels) = (reply.neighbors, reply.metadata, reply.string_labels);
        if binary && labels.is_some() {
            return Err(Error::invalid(
                "the index has string ids, which npy/ivecs cannot hold: use --format jsonl, csv or table",
            ));
        }
        // How each hit's id is shown: its string id, or the FAISS id (null for -1).
        let shown = |q: usize| -> Vec<serde_json::Value> {
            let (ids, _) = n.row(q);
            ids.iter()
                .enumerate()
                .map(|(r, &id)| match &labels {
                    Some(l) => l[q * n.k + r].clone().map_or(serde_json::Value::Null, serde_json::Value::from),
                    None if id < 0 => serde_json::Value::Null,
                    None => serde_json::Value::from(id),
                })
                .collect()
        };
        if binary {
            all.nq += n.nq;
            all.ids.extend_from_slice(&n.ids);
            all.dists.extend_from_slice(&n.dists);
        } else if x.include_metadata {
            let md = md.unwrap_or_default();
            for q in 0..n.nq {
                let (_, ds) = n.row(q);
                let rec = serde_json::json!({
                    "query": b.start + q,
                    "ids": shown(q),
                    "distances": ds.iter().map(|&v| (v.is_finite() && v.abs() != f32::MAX).then_some(v)).collect::<Vec<_>>(),
                    "metadata": md.get(q).map(to_json).unwrap_or(serde_json::Value::Null),
                });
                if let Some(w) = w.as_mut() {
                    w.line(&rec.to_string())?;
                }
            }
        } else if let Some(l) = &labels {
            // The writer shows string ids through a table of this batch's (id, string id).
            let t = Arc::new(label_table(&n.ids, l)?);
            w = w.map(|w| w.labelled(vec![t], false));
            if let Some(w) = w.as_mut() {
                w.neighbors(b.start, &n)?;
            }
        } else if let Some(w) = w.as_mut() {
            w.neighbors(b.start, &n)?;
        }
        progress.inc(b.rows as u64);
    }
    progress.finish();
    if binary {
        let path = x.output.as_deref().expect("invariant: checked above");
        return render::write_binary(path, fmt == OutputFormat::Npy, &all);
    }
    match w {
        Some(w) => w.finish(),
        None => Ok(()),
    }
}
