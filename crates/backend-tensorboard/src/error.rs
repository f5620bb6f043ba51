//! The crate's error type.

use std::path::PathBuf;

use exptrack_core::TrackerError;

/// What is wrong with a corrupt record (see [`Error::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The masked CRC-32C of the 8-byte length does not match.
    LengthCrc,
    /// The masked CRC-32C of the record data does not match.
    DataCrc,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Corruption::LengthCrc => "length CRC mismatch",
            Corruption::DataCrc => "data CRC mismatch",
        })
    }
}

/// Errors of `exptrack-tensorboard`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// File-system I/O failed (disk full, permission denied, directory gone, ...).
    #[error("{context} ({}): {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The event file was deleted (or replaced) while it was being written; the next write creates
    /// a new file, the events already flushed to the lost file are gone.
    #[error("event file {} was deleted or replaced while being written", path.display())]
    FileLost {
        /// The lost file.
        path: PathBuf,
    },
    /// A record failed its CRC check.
    #[error("corrupt record in {} at byte offset {offset}: {corruption}", path.display())]
    Corrupt {
        /// The file (empty for readers without a path).
        path: PathBuf,
        /// Byte offset of the start of the corrupt record.
        offset: u64,
        /// What failed.
        corruption: Corruption,
    },
    /// A record passed its CRC checks but is not a valid `Event` protobuf.
    #[error("record in {} at byte offset {offset} is not a valid Event: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Byte offset of the start of the record.
        offset: u64,
        /// The protobuf error.
        source: prost::DecodeError,
    },
    /// The tracker was used before `open` succeeded or after `close`.
    #[error("tensorboard tracker is not open")]
    NotOpen,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    /// Whether retrying the operation may succeed (I/O problems and a lost file are transient).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::FileLost { .. })
    }

    /// Converts into a [`TrackerError`] that names the backend and the run.
    pub(crate) fn into_tracker_error(self, run_id: &str) -> TrackerError {
        let message = format!("tensorboard (run {run_id})");
        if self.is_transient() {
            TrackerError::transient(message).with_source(self)
        } else {
            TrackerError::permanent(message).with_source(self)
        }
    }
}

impl From<Error> for TrackerError {
    fn from(e: Error) -> Self {
        if e.is_transient() {
            TrackerError::transient("tensorboard").with_source(e)
        } else {
            TrackerError::permanent("tensorboard").with_source(e)
        }
    }
}
