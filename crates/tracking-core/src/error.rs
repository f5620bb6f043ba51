//! The crate's error type.

use std::path::PathBuf;

/// Errors of `exptrack-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be parsed.
    #[error("{path}:{line}:{column}: {message}")]
    ConfigParse {
        /// The file (or `<string>` for in-memory documents).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
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
    /// A stored file is not in the expected format.
    #[error("corrupt {what} in {}: {message}", path.display())]
    Corrupt {
        /// Which file kind.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Details (line number, byte offset).
        message: String,
    },
    /// JSON (de)serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The run was already finished, or its dispatcher thread is gone.
    #[error("the tracker is closed (run already finished or its dispatcher stopped)")]
    Closed,
    /// A run was not found in the store.
    #[error("run not found: {0}")]
    RunNotFound(String),
    /// A tracker failed in a way that is reported at `finish`.
    #[error("backend {backend}: {message}")]
    Backend {
        /// The tracker's name.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}
