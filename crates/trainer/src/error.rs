//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring or running training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `[training]` configuration is invalid (unknown key, bad value, impossible combination).
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The requested device is not compiled in or not usable.
    #[error("device `{device}` is not available: {reason}")]
    Device {
        /// The device as written in the configuration.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The device cannot compute in the requested precision.
    #[error(
        "mixed precision `{precision}` is not supported on device {device}: \
         `device.supports_dtype` reports no arithmetic support for it; use `mixed_precision = \"off\"`{hint}"
    )]
    UnsupportedPrecision {
        /// `f16` or `bf16`.
        precision: String,
        /// The device (Debug form).
        device: String,
        /// An alternative that would work, if any (starts with `, or`).
        hint: String,
    },
    /// A burn record (model, optimizer, scheduler) could not be serialized or loaded.
    #[error("{what}: {message}")]
    Record {
        /// Which record.
        what: &'static str,
        /// burn's message.
        message: String,
    },
    /// The data source failed to produce a batch.
    #[error("data: {0}")]
    Data(String),
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint could not be written or read back.
    #[error("checkpoint: {message}")]
    Checkpoint {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The experiment tracker refused an event.
    #[error("tracking: {message}")]
    Tracking {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// (De)serializing JSON state failed.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Training diverged (a non-finite loss with `check_finite`).
    #[error("training diverged: {0}")]
    Diverged(String),
    /// burn-train's loop stopped with an error (feature `burn-train`).
    #[error("burn-train: {0}")]
    BurnTrain(String),
    /// A tensor could not be read back from the device.
    #[error("reading a tensor back from the device failed: {0}")]
    Readback(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
