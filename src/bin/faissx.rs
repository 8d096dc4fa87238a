//! The `faissx` binary: parse, dispatch, map errors to exit codes. Everything else lives in
//! the library (`faissx::cmd`, `faissx::engine`).

use clap::FromArgMatches;
use faissx::cmd::{self, Cli};
use faissx::engine::{Error, ErrorKind};
use std::process::ExitCode;

/// The one place errors become exit codes: 2 for bad input or usage, 130 for a command
/// stopped by SIGINT/SIGTERM, 1 for other failures.
fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::Interrupted => cmd::signals::EXIT_INTERRUPTED,
        ErrorKind::InvalidInput
        | ErrorKind::DimensionMismatch
        | ErrorKind::NotTrained
        | ErrorKind::NotFound
        | ErrorKind::AlreadyExists
        | ErrorKind::Format
        | ErrorKind::TooLarge => 2,
        _ => 1,
    }
}

fn main() -> ExitCode {
    if let Err(msg) = faissx::cpu_check() {
        eprintln!("faissx: {msg}");
        return ExitCode::from(1);
    }
    // This executable can run the hidden subcommand that opens unchecked index files in a
    // child process (engine::index::probe); library users and tests of the library cannot.
    faissx::engine::index::probe::enable();
    // `cmd::command()`, not `Cli::parse()`: the same definitions with examples kept verbatim.
    let mut matches = cmd::command().get_matches();
    let cli = Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd::command()).exit());
    match cmd::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`faissx search … | head`) is not an error.
            if e.kind() == ErrorKind::Io && e.chain().contains("Broken pipe") {
                return ExitCode::SUCCESS;
            }
            eprintln!("faissx: {}", e.chain());
            ExitCode::from(exit_code(&e))
        }
    }
}
