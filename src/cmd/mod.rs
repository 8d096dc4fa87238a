//! The command line: clap definitions and one thin `run` per subcommand. Each `run` turns its
//! flags into engine values, calls the engine, and renders the result through `render.rs`.
//! No FAISS call appears here.

pub mod add;
pub mod bench;
pub mod build;
pub mod common;
pub mod completions;
pub mod info;
pub mod keygen;
pub mod merge;
pub mod probe_index;
pub mod query_remote;
pub mod render;
pub mod search;
pub mod serve;
pub mod signals;
pub mod split;
pub mod train;

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
    /// Append vectors (and ids) to an existing index, or add one task's slice to a copy.
    Add(add::AddArgs),
    /// Train an index on a sample of several files, without adding vectors (split builds).
    Train(train::TrainArgs),
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
    /// Write a CurveZMQ key pair for encrypted serving (PATH and PATH.pub).
    Keygen(keygen::KeygenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
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
                | Command::Train(_)
                | Command::Search(_)
                | Command::Merge(_)
                | Command::Split(_)
                | Command::Bench(_)
                | Command::Serve(_)
        )
    }
}

/// clap's default help layout, which [`command`] extends with verbatim examples.
const HELP_TEMPLATE: &str = "{before-help}{about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}";

/// The command line as the binary parses it: [`Cli::command`] with every `Examples:` block
/// moved out of `after_long_help` into the help template, for every subcommand.
///
/// clap re-wraps `after_long_help` at the terminal width (and at most 100 columns), which
/// breaks a long example line in two without a `\`, so a copied example fails. clap prints
/// the literal text of a help template as written, so examples live there and are never
/// wrapped; the prose around them still is. The examples then show in `-h` as well as in
/// `--help`. `man/` is generated from [`Cli::command`], whose `after_long_help` keeps them.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    verbatim_examples(Cli::command())
}

fn verbatim_examples(mut cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for n in names {
        cmd = cmd.mut_subcommand(n, verbatim_examples);
    }
    let Some(after) = cmd.get_after_long_help().map(|s| s.to_string()) else { return cmd };
    let Some(at) = after.find("Examples:") else { return cmd };
    let (prose, examples) = after.split_at(at);
    let prose = prose.trim_end().to_string();
    // A `{` in the template starts a tag; examples must not open one clap would drop.
    debug_assert!(examples.split('{').skip(1).all(|p| p.contains('}')), "invariant: balanced braces in examples");
    cmd = if prose.is_empty() {
        cmd.after_long_help(clap::builder::Resettable::<clap::builder::StyledStr>::Reset)
    } else {
        cmd.after_long_help(prose)
    };
    cmd.help_template(format!("{HELP_TEMPLATE}\n\n{}", examples.trim_end()))
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
        Command::Train(a) => train::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Info(a) => info::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::QueryRemote(a) => query_remote::run(&ctx, a),
        Command::Keygen(a) => keygen::run(&ctx, a),
        Command::Merge(a) => merge::run(&ctx, a),
        Command::Split(a) => split::run(&ctx, a),
        Command::Bench(a) => bench::run(&ctx, a),
        Command::Completions(a) => completions::run(&ctx, a),
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
        command().debug_assert();
    }

    /// Every example line of every (sub)command comes out of `--help` exactly as written,
    /// even 30 columns wide.
    #[test]
    fn every_example_line_renders_unwrapped() {
        fn walk(orig: &clap::Command, built: &clap::Command, path: &str, seen: &mut usize) {
            if let Some(at) = orig.get_after_long_help().map(|s| s.to_string()) {
                if let Some(i) = at.find("Examples:") {
                    let help = built.clone().term_width(30).render_long_help().to_string();
                    for l in at[i..].lines() {
                        assert!(help.lines().any(|h| h == l), "{path}: {l:?} is not in its help:\n{help}");
                        *seen += 1;
                    }
                    let short = built.clone().term_width(30).render_help().to_string();
                    assert!(short.contains("Examples:"), "{path}");
                }
            }
            for sub in orig.get_subcommands() {
                let b = built.find_subcommand(sub.get_name()).expect("invariant: same tree");
                walk(sub, b, &format!("{path} {}", sub.get_name()), seen);
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), &command(), "faissx", &mut seen);
        assert!(seen > 50, "{seen} example lines");
        // The prose before them is kept (and wrapped).
        let top = command().term_width(60).render_long_help().to_string();
        assert!(top.contains("Exit status: 0 on success"), "{top}");
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
