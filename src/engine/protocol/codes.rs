//! The wire's `error_code`s and the one mapping between them and [`ErrorKind`]s
//! (docs/protocol.md §3).

use crate::engine::error::{Error, ErrorKind};

/// The `error_code` of a failed reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Missing or unknown API key.
    Auth,
    /// No such index (in the caller's tenant) or id.
    NotFound,
    /// The index exists already.
    AlreadyExists,
    /// The request is malformed or a field is out of range.
    InvalidArgument,
    /// Vector width differs from the index dimension.
    DimensionMismatch,
    /// The index needs training first.
    NotTrained,
    /// Unknown action or an operation the index cannot do.
    Unsupported,
    /// The request exceeds `--max-request-bytes`.
    TooLarge,
    /// The operation timed out.
    Timeout,
    /// Too many requests in flight on this connection or in the server: retry later.
    Busy,
    /// Anything else (FAISS exceptions, I/O failures on the server).
    Internal,
    /// A conditional change lost a race (`import_index` with a stale `if_generation`).
    Conflict,
    /// A quota of the caller's tenant (`serve --max-indices`, `--max-vectors`, `--max-k`,
    /// `--max-nq`) would be exceeded; nothing was changed.
    QuotaExceeded,
    /// `serve --cluster`: the replicated log (NATS JetStream) is out of reach, so a write
    /// could not be stored; nothing was acknowledged. Reads keep answering.
    Unavailable,
    /// `serve --router`: no replica of a shard answered in time; the message names the shard.
    /// A search may ask for the other shards' results instead (`allow_partial`).
    ShardUnavailable,
}

impl ErrorCode {
    /// The wire spelling (`AUTH_ERROR`, `NOT_FOUND`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Auth => "AUTH_ERROR",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::DimensionMismatch => "DIMENSION_MISMATCH",
            ErrorCode::NotTrained => "NOT_TRAINED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::ShardUnavailable => "SHARD_UNAVAILABLE",
        }
    }

    /// Parse the wire spelling.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Some(match s {
            "AUTH_ERROR" => ErrorCode::Auth,
            "NOT_FOUND" => ErrorCode::NotFound,
            "ALREADY_EXISTS" => ErrorCode::AlreadyExists,
            "INVALID_ARGUMENT" => ErrorCode::InvalidArgument,
            "DIMENSION_MISMATCH" => ErrorCode::DimensionMismatch,
            "NOT_TRAINED" => ErrorCode::NotTrained,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOO_LARGE" => ErrorCode::TooLarge,
            "TIMEOUT" => ErrorCode::Timeout,
            "BUSY" => ErrorCode::Busy,
            "INTERNAL" => ErrorCode::Internal,
            "CONFLICT" => ErrorCode::Conflict,
            "QUOTA_EXCEEDED" => ErrorCode::QuotaExceeded,
            "UNAVAILABLE" => ErrorCode::Unavailable,
            "SHARD_UNAVAILABLE" => ErrorCode::ShardUnavailable,
            _ => return None,
        })
    }

    /// The one mapping from engine errors to wire codes.
    pub fn of(e: &Error) -> ErrorCode {
        match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::Protocol | ErrorKind::Format => ErrorCode::InvalidArgument,
            ErrorKind::DimensionMismatch => ErrorCode::DimensionMismatch,
            ErrorKind::NotTrained => ErrorCode::NotTrained,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
            ErrorKind::Unsupported => ErrorCode::Unsupported,
            ErrorKind::TooLarge => ErrorCode::TooLarge,
            ErrorKind::Auth => ErrorCode::Auth,
            ErrorKind::Timeout => ErrorCode::Timeout,
            ErrorKind::Busy => ErrorCode::Busy,
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::QuotaExceeded => ErrorCode::QuotaExceeded,
            ErrorKind::Unavailable => ErrorCode::Unavailable,
            ErrorKind::ShardUnavailable => ErrorCode::ShardUnavailable,
            ErrorKind::Io | ErrorKind::Faiss | ErrorKind::Remote | ErrorKind::Interrupted | ErrorKind::Internal => {
                ErrorCode::Internal
            }
        }
    }

    /// The engine error kind a client reports for a remote error with this code.
    pub fn kind(self) -> ErrorKind {
        match self {
            ErrorCode::Auth => ErrorKind::Auth,
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::AlreadyExists => ErrorKind::AlreadyExists,
            ErrorCode::InvalidArgument => ErrorKind::InvalidInput,
            ErrorCode::DimensionMismatch => ErrorKind::DimensionMismatch,
            ErrorCode::NotTrained => ErrorKind::NotTrained,
            ErrorCode::Unsupported => ErrorKind::Unsupported,
            ErrorCode::TooLarge => ErrorKind::TooLarge,
            ErrorCode::Timeout => ErrorKind::Timeout,
            ErrorCode::Busy => ErrorKind::Busy,
            ErrorCode::Internal => ErrorKind::Remote,
            ErrorCode::Conflict => ErrorKind::Conflict,
            ErrorCode::QuotaExceeded => ErrorKind::QuotaExceeded,
            ErrorCode::Unavailable => ErrorKind::Unavailable,
            ErrorCode::ShardUnavailable => ErrorKind::ShardUnavailable,
        }
    }
}
