//! SIGINT and SIGTERM for the command line (through `signal-hook`): a long job (build, add,
//! merge, split, search, bench) or the server stops at its next check of the stop flag.
//!
//! The first signal sets the flag. Jobs check it between batches and FAISS checks it inside
//! its long loops ([`index::interrupt_on`]); the job then returns
//! [`ErrorKind::Interrupted`], dropping its outputs, which removes their temp files, and the
//! binary prints `faissx: interrupted` and exits with 130 (128 + SIGINT, as shells report
//! it). A second signal, for a job stuck where nothing checks the flag, exits with 130 at
//! once (temp files may then remain, named `NAME.<random>.tmp` beside the output). Other
//! commands keep the default behaviour (a signal ends them immediately).

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The exit status of an interrupted command: 128 + SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Route SIGINT and SIGTERM to `stop`, whichever thread receives them (FAISS/OpenMP may have
/// started threads already, so masking signals is not enough); with `faiss`, FAISS's long
/// loops watch `stop` too. A second signal while `stop` is set exits with
/// [`EXIT_INTERRUPTED`] at once.
///
/// Errors: `Io` when a handler cannot be installed.
pub fn stop_on_signals(stop: &Arc<AtomicBool>, faiss: bool) -> Result<()> {
    for sig in [SIGINT, SIGTERM] {
        // Registration order matters: the conditional exit looks at the flag before the
        // second handler sets it, so only a repeated signal exits.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_INTERRUPTED as i32, Arc::clone(stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(stop)))
            .map_err(|e| Error::new(ErrorKind::Io, "installing the SIGINT/SIGTERM handler").with_source(e))?;
    }
    if faiss {
        index::interrupt_on(Arc::clone(stop));
    }
    Ok(())
}
