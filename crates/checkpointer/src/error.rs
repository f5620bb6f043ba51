//! The crate's error type.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while saving, loading or managing checkpoints.
///
/// Every variant that touches the file system names the path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("write", "rename", "fsync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file system ran out of space (ENOSPC / EDQUOT). The checkpoint being written was discarded;
    /// earlier checkpoints are intact.
    #[error(
        "disk full while writing {path} (checkpoint discarded, earlier checkpoints intact): {source}"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored file does not match the digest recorded when it was written.
    #[error("checkpoint file {path} is corrupt: {algo} {actual}, expected {expected}")]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// The recorded algorithm (`[checkpointing] hash` when the checkpoint was saved).
        algo: crate::HashAlgo,
        /// Hex digest recorded at save time.
        expected: String,
        /// Hex digest of what is on disk now.
        actual: String,
    },
    /// A `checkpoint.json` or `registry.json` says something that cannot be true or safe: an
    /// unknown format version, a name that is not a plain file name (absolute, `..`, separators),
    /// a name twice, sizes that contradict each other. The checkpoint is treated as unreadable.
    #[error("invalid checkpoint metadata {path}: {message}")]
    InvalidMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong, naming the field or file.
        message: String,
    },
    /// A buffer for a checkpoint file could not be allocated.
    #[error("cannot allocate {bytes} bytes to load {path}")]
    OutOfMemory {
        /// The file being loaded.
        path: PathBuf,
        /// Its recorded size.
        bytes: u64,
    },
    /// A stored file has the wrong length (truncated or extended).
    #[error("checkpoint file {path} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size recorded at save time (uncompressed).
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A compressed file could not be decoded.
    #[error("checkpoint file {path} could not be decompressed: {source}")]
    Decompress {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// `checkpoint.json`, `registry.json` or `results.json` could not be parsed or written.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The `[checkpointing]` table is invalid (unknown key, wrong type, out-of-range value).
    #[error("invalid [checkpointing] config: {message}")]
    Config {
        /// What is wrong, naming the key.
        message: String,
    },
    /// A file name in a [`Checkpoint`](crate::Checkpoint) is not allowed.
    #[error("invalid checkpoint file name {name:?}: {reason}")]
    InvalidFileName {
        /// The name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The experiment id cannot be used as a directory name.
    #[error("invalid experiment id {id:?}: {reason}")]
    InvalidExperimentId {
        /// The id.
        id: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// No checkpoint with this step exists.
    #[error("no checkpoint for step {step} in {dir}")]
    NotFound {
        /// The step asked for.
        step: u64,
        /// The experiment directory.
        dir: PathBuf,
    },
    /// A checkpoint does not contain the named file.
    #[error("checkpoint step {step} has no file named {name:?}")]
    NoSuchFile {
        /// The checkpoint's step.
        step: u64,
        /// The missing name.
        name: String,
    },
    /// Another process holds the writer lock on this experiment directory.
    #[error(
        "experiment directory {path} is locked by another checkpointer (one writer per experiment)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The checkpointer was opened read-only.
    #[error("checkpointer for {dir} is read-only")]
    ReadOnly {
        /// The experiment directory.
        dir: PathBuf,
    },
    /// The step is held by a lease and cannot be replaced.
    #[error("checkpoint step {step} is leased by a reader and cannot be replaced")]
    Leased {
        /// The step.
        step: u64,
    },
    /// A background save failed. Returned by the next call after the failure, or by `wait()`.
    #[error("background save of step {step} failed: {source}")]
    AsyncSave {
        /// The step that was being saved.
        step: u64,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// The background save thread died unexpectedly.
    #[error("background save thread failed: {message}")]
    Worker {
        /// Details.
        message: String,
    },
    /// An object-store request failed (after the store's retries with backoff on 5xx, 429 and
    /// connection errors). The message never holds credentials.
    #[error("{op} {path}: {source}")]
    Remote {
        /// What was being done ("put", "get", "list", ...).
        op: &'static str,
        /// The object (`s3://bucket/prefix/...`).
        path: String,
        /// The store's error, with secrets redacted.
        #[source]
        source: RemoteError,
    },
    /// `[checkpointing] dir` names an object store whose cargo feature is not enabled.
    #[error("{url}: needs exptrack-checkpoint's cargo feature `{feature}`")]
    Unsupported {
        /// The location.
        url: String,
        /// The feature(s) that would enable it.
        feature: &'static str,
    },
    /// Another writer changed the same object at the same time (a conditional put failed).
    #[error("{path} was changed by another writer at the same time")]
    Conflict {
        /// The object.
        path: String,
    },
    /// A burn record could not be encoded or decoded.
    #[error("burn record {name:?}: {message}")]
    Record {
        /// The checkpoint file name of the record.
        name: String,
        /// The recorder's message.
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with its operation and path; ENOSPC/EDQUOT become [`Error::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => {
                Error::DiskFull { path, source }
            }
            _ => Error::Io { op, path, source },
        }
    }

    /// True when this error (or the background save it wraps) is a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::AsyncSave { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }

    /// True when this error (or the background save it wraps) reports a corrupt or truncated file,
    /// or metadata that cannot be trusted.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupt { .. }
            | Error::SizeMismatch { .. }
            | Error::Decompress { .. }
            | Error::InvalidMetadata { .. } => true,
            Error::AsyncSave { source, .. } => source.is_corruption(),
            _ => false,
        }
    }
}

/// An object store's error message, with credentials taken from the environment redacted.
#[derive(Debug)]
pub struct RemoteError(pub(crate) String);

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

/// Adds path context to `std::io::Result`.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Error::io`].
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
