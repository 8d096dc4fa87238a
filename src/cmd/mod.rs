//! The command line: clap definitions and one thin `run` per subcommand. Each `run` turns its
//! flags into engine values, calls the engine, and renders the result through `render.rs`.
//! No FAISS call appears here.

pub mod add;
pub mod bench;
pub mod build;
pub mod common;
pub mod info;
pub mod merge;
pub mod probe_index;
pub mod query_remote;
pub mod render;
pub mod search;
pub mod serve;
pub mod signals;
pub mod split;

use crate::engine::{Error, ErrorKind, Result};
use clap::{Parser, Subcommand};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const AFTER_HELP: &str = "\
Exit status: 0 on success, 2 for bad input or usage (missing or malformed file, dimension \
mismatch, bad factory string, k < 1, NaN, untrained index), 130 when SIGINT or SIGTERM \
(Ctrl-C) stopped a long command (build, add, merge, split, search, bench; its temp files \
are removed first), 1 for any other failure.

Environment: FAISSX_THREADS sets --threads.

Examples:
  faissx build base.fvecs -o base.index --factory IVF1024,Flat
  faissx search base.index query.fvecs -k 10 --nprobe 16 --format jsonl > hits.jsonl
  faissx info base.index";

/// Build, query and inspect FAISS vector indices from the shell.
///
/// faissx reads vectors from .npy, .fvecs, .bvecs, .ivecs and .csv files (or stdin), builds
/// any FAISS index from a factory string, and writes FAISS's own index format, so Python's
/// faiss.read_index opens what faissx writes and the other way round. faissx's own facts
/// about an index (metric, normalization, ids, inputs) live in a sidecar INDEX.meta.json.
#[derive(Debug, Parser)]
#[command(name = "faissx", version, propagate_version = true, after_long_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// Print more diagnostics on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print nothing on stderr but errors (no progress bars).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// OpenMP threads FAISS may use (default: all cores).
    #[arg(long, global = true, value_name = "NUM", env = "FAISSX_THREADS")]
    pub threads: Option<usize>,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// faissx's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a FAISS index from a vector file.
    Build(build::BuildArgs),
    /// Append vectors (and ids) to an existing index.
    Add(add::AddArgs),
    /// k-NN or range search of query vectors in an index.
    Search(search::SearchArgs),
    /// Describe an index: type, d, ntotal, metric, parameters, size.
    Info(info::InfoArgs),
    /// Merge indices of the same type, d and metric into one.
    Merge(merge::MergeArgs),
    /// Split an index into N shards that keep the original ids.
    Split(split::SplitArgs),
    /// Measure recall, QPS, latency, build cost and memory of indices (sweeps, plots).
    Bench(bench::BenchArgs),
    /// Serve indices over ZeroMQ to many clients (FAISSx-compatible protocol).
    Serve(serve::ServeArgs),
    /// Talk to a running `faissx serve`: create, add, search, inspect remote indices.
    QueryRemote(query_remote::QueryRemoteArgs),
    /// Open an index file in a child process before faissx reads it (internal).
    #[command(name = "__probe-index", hide = true)]
    ProbeIndex(probe_index::ProbeIndexArgs),
}

/// What every command gets besides its own arguments.
pub struct Ctx {
    /// Suppress progress and notes.
    pub quiet: bool,
    /// Verbosity from `-v`.
    pub verbose: u8,
    /// Set when the user asks the job to stop (SIGINT/SIGTERM, see [`signals`]).
    pub stop: Arc<AtomicBool>,
}

impl Command {
    /// Whether SIGINT/SIGTERM stop this command through [`Ctx::stop`] (long jobs and the
    /// server) rather than ending the process at once.
    fn stops_on_signal(&self) -> bool {
        matches!(
            self,
            Command::Build(_)
                | Command::Add(_)
                | Command::Search(_)
                | Command::Merge(_)
                | Command::Split(_)
                | Command::Bench(_)
                | Command::Serve(_)
        )
    }
}

/// Run the parsed command line.
pub fn dispatch(cli: Cli) -> Result<()> {
    if let Some(t) = cli.threads {
        if t == 0 {
            return Err(crate::engine::Error::invalid("--threads must be at least 1"));
        }
        crate::engine::index::set_threads(t);
    }
    crate::engine::index::tune_blas();
    let ctx = Ctx { quiet: cli.quiet, verbose: cli.verbose, stop: Arc::new(AtomicBool::new(false)) };
    let serve = matches!(cli.command, Command::Serve(_));
    if cli.command.stops_on_signal() {
        // The server stops between requests; FAISS is not interrupted under a request.
        signals::stop_on_signals(&ctx.stop, !serve)?;
    }
    let res = match cli.command {
        Command::Build(a) => build::run(&ctx, a),
        Command::Add(a) => add::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Info(a) => info::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::QueryRemote(a) => query_remote::run(&ctx, a),
        Command::Merge(a) => merge::run(&ctx, a),
        Command::Split(a) => split::run(&ctx, a),
        Command::Bench(a) => bench::run(&ctx, a),
        Command::ProbeIndex(a) => probe_index::run(&ctx, a),
    };
    // Whatever error a stopped job ended with (faissx's own check or FAISS's "computation
    // interrupted"), it was interrupted; a job that finished anyway has committed its output.
    match res {
        Err(e) if !serve && ctx.stop.load(Ordering::Relaxed) && e.kind() != ErrorKind::Interrupted => {
            Err(Error::new(ErrorKind::Interrupted, "interrupted"))
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_main_job() {
        let c = Cli::try_parse_from([
            "faissx",
            "build",
            "b.bvecs",
            "-o",
            "fm.index",
            "--factory",
            "IVF1024,Flat",
            "--metric",
            "l2",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Build(_)));
        let c = Cli::try_parse_from([
            "faissx", "search", "fm.index", "q.bvecs", "-k", "10", "--nprobe", "16", "--format", "jsonl",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Search(_)));
        assert!(Cli::try_parse_from(["faissx", "search", "fm.index", "q.bvecs", "-k", "0"]).is_err());
        assert!(Cli::try_parse_from(["faissx", "build", "b.bvecs", "-o", "x", "--metric", "hamming"]).is_err());
        let c = Cli::try_parse_from(["faissx", crate::engine::index::probe::SUBCOMMAND, "--mmap", "--", "-x.index"])
            .unwrap();
        assert!(matches!(&c.command, Command::ProbeIndex(a) if a.mmap && a.index.to_str() == Some("-x.index")));
    }
}
