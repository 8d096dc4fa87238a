//! `faissx __probe-index`: hidden; the child process that opens an index file without a
//! checksum before the parent does (see `engine::index::probe`). A thin wrapper: the engine
//! spawns it and reads its exit status.

use super::render;
use super::Ctx;
use crate::engine::index::probe;
use crate::engine::Result;
use clap::Args;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  faissx __probe-index -- from-python.index
  faissx __probe-index --mmap -- from-python.index";

/// Open an index file and search and reconstruct once (run by faissx itself, in a child
/// process, before it reads a file that has no checksum).
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct ProbeIndexArgs {
    /// Index file.
    #[arg(value_name = "INDEX")]
    pub index: PathBuf,

    /// Open it memory-mapped, as the parent will.
    #[arg(long)]
    pub mmap: bool,
}

/// Run the sanity pass; prints a one-line summary.
pub fn run(_ctx: &Ctx, a: ProbeIndexArgs) -> Result<()> {
    let summary = probe::sanity_pass(&a.index, a.mmap)?;
    render::println_out(&summary)
}
