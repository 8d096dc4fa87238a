//! The engine's one error type. Every error that reaches a user comes through here, and every
//! I/O error carries the path it concerns. Mapping errors to exit codes lives in
//! `bin/faissx.rs`, mapping them to wire error codes in `engine/protocol.rs`; nowhere else.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse groups of errors, used to pick an exit code or a wire `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or input is wrong (bad factory string, dimension mismatch, NaN, `k` ≤ 0, …).
    InvalidInput,
    /// Input vectors have a different width than the index (`d`).
    DimensionMismatch,
    /// The index must be trained before this operation.
    NotTrained,
    /// A named thing (index, file, id) does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// Reading or writing a file failed.
    Io,
    /// A file's contents are corrupt or not in the format its name claims.
    Format,
    /// FAISS itself raised an exception.
    Faiss,
    /// The operation is not supported by this index or build.
    Unsupported,
    /// A request was larger than allowed.
    TooLarge,
    /// Authentication failed (server).
    Auth,
    /// A wire message could not be decoded.
    Protocol,
    /// The remote server answered with an error.
    Remote,
    /// A remote call timed out.
    Timeout,
    /// The operation was interrupted (stop flag set).
    Interrupted,
    /// The server has too many requests in flight (per connection or in all); retry later.
    Busy,
    /// A bug: a request handler panicked. The server answers with this error and goes on.
    Internal,
    /// A conditional change found the state changed by someone else first (e.g. `import
    /// --if-generation N` when the index is no longer at generation N).
    Conflict,
    /// A tenant's quota (`serve --max-indices`, `--max-vectors`, `--max-k`, `--max-nq`) would
    /// be exceeded; nothing was changed.
    QuotaExceeded,
    /// A part the request needs is out of reach (`serve --cluster`: the replicated log):
    /// nothing was acknowledged; retry later or on another replica.
    Unavailable,
    /// `serve --router`: no replica of a shard answered (the message names the shard).
    ShardUnavailable,
}

/// An engine error: a kind plus a one-line message that names the file, field or request at
/// fault, and optionally the underlying cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    msg: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with message `msg`.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Error {
        Error { kind, msg: msg.into(), source: None }
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, msg)
    }

    /// A [`ErrorKind::Format`] error about the file at `path`.
    pub fn format(path: &Path, detail: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Format, format!("{}: {}", path.display(), detail))
    }

    /// An [`ErrorKind::Io`] error about `path`, with the OS error as its cause. A missing file
    /// becomes [`ErrorKind::NotFound`].
    pub fn io(path: &Path, err: std::io::Error) -> Error {
        let kind = if err.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Io };
        Error { kind, msg: path.display().to_string(), source: Some(Box::new(err)) }
    }

    /// A [`ErrorKind::Faiss`] error: `what` failed, with FAISS's exception text as cause.
    pub fn faiss(what: impl Into<String>, detail: String) -> Error {
        Error { kind: ErrorKind::Faiss, msg: what.into(), source: Some(detail.into()) }
    }

    /// Attach a cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Prefix the message with more context, e.g. the file being processed.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The same error with every `from` in its message replaced by `to` (a staged copy's path
    /// by the URL it was downloaded from).
    pub fn renaming(mut self, from: &str, to: &str) -> Self {
        self.msg = self.msg.replace(from, to);
        self
    }

    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without causes.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The message and every cause, joined by `: ` on one line (as ripgrep prints `{:#}`).
    pub fn chain(&self) -> String {
        let mut out = self.msg.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            let s = s.trim();
            if !s.is_empty() && !out.ends_with(s) {
                out.push_str(": ");
                out.push_str(s);
            }
            cur = e.source();
        }
        out.replace('\n', " ")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Extension for `std::io::Result` to attach a path.
pub trait IoContext<T> {
    /// Turn an I/O error into an [`Error`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// A path for messages: `-` means standard input.
pub fn display_path(p: &Path) -> PathBuf {
    if p.as_os_str() == "-" {
        PathBuf::from("<stdin>")
    } else {
        p.to_path_buf()
    }
}

/// `Err(Interrupted)` once the stop flag (Ctrl-C, SIGTERM) is set: the one check every long
/// loop makes between steps.
pub(crate) fn stopped(stop: &std::sync::atomic::AtomicBool) -> Result<()> {
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        Err(Error::new(ErrorKind::Interrupted, "interrupted"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_causes_on_one_line() {
        let e = Error::io(Path::new("a.fvecs"), std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.chain(), "a.fvecs: No such file");
    }
}
