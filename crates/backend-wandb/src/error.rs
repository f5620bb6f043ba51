//! The crate's error type.

use std::path::PathBuf;

/// Errors of `exptrack-wandb`. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// File-system I/O failed.
    #[error("{context} ({}): {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.wandb` transaction log is malformed.
    #[error("corrupt transaction log {file} at byte {offset}: {message}")]
    Corrupt {
        /// The file (or stream name).
        file: String,
        /// Byte offset of the bad chunk.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The configuration (builder, environment or config file) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The W&B server answered with an error or an unexpected response.
    #[error("{operation} for run {run_id} failed: {message}")]
    Api {
        /// The request (`UpsertBucket`, `file_stream`, ...).
        operation: &'static str,
        /// The run id.
        run_id: String,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// Details (server message, without credentials).
        message: String,
        /// Whether retrying later may help.
        transient: bool,
    },
    /// The run was used before `open` or after `close`.
    #[error("run is not open")]
    NotOpen,
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Whether retrying the operation later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::Api { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for exptrack_core::TrackerError {
    fn from(e: Error) -> Self {
        if e.is_transient() {
            exptrack_core::TrackerError::transient("W&B").with_source(e)
        } else {
            exptrack_core::TrackerError::permanent("W&B").with_source(e)
        }
    }
}
