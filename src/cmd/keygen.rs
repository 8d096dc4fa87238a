//! `faissx keygen -o PATH`: write a CurveZMQ key pair for `serve --curve-secret-key-file`
//! (PATH, the secret key, mode 0600) and the clients' `--server-public-key` (PATH.pub).

use super::render::{note, println_out};
use super::Ctx;
use crate::engine::{curve, Result};
use clap::Args;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  faissx keygen -o server.key        # server.key (secret, 0600) and server.key.pub
  faissx serve --curve-secret-key-file server.key
  faissx query-remote --server tcp://host:45678 --server-public-key server.key.pub list";

/// Write a CurveZMQ key pair (encryption and server authentication for `faissx serve`).
///
/// The secret key goes to PATH (mode 0600; give it to `serve --curve-secret-key-file`),
/// the public key to PATH.pub (give it to clients: `query-remote` and `bench --server`
/// `--server-public-key`). Each file holds one key as 40 Z85 characters, as libzmq's
/// zmq_curve_keypair makes them. The public key is also printed on stdout.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct KeygenArgs {
    /// Secret key file to write (the public key goes to PATH.pub).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// Overwrite existing key files.
    #[arg(short, long)]
    pub force: bool,
}

/// Run `faissx keygen`.
pub fn run(ctx: &Ctx, a: KeygenArgs) -> Result<()> {
    let (secret, public) = curve::keygen(&a.output, a.force)?;
    note(
        ctx.quiet,
        &format!("wrote {} (secret key, mode 0600) and {} (public key)", secret.display(), public.display()),
    );
    let key = curve::read_key(&public, "public key")?;
    println_out(&curve::encode(&key))
}
