//! The crate's error type.

use std::path::PathBuf;

/// Errors of `exptrack-plot`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the run from the local store failed (missing run, corrupt event log, I/O).
    #[error("reading run {}: {source}", run_dir.display())]
    Run {
        /// The run directory.
        run_dir: PathBuf,
        /// The underlying store error.
        #[source]
        source: exptrack_core::Error,
    },
    /// Creating the output directory or writing an image failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying store/I-O error.
        #[source]
        source: exptrack_core::Error,
    },
    /// plotters failed to draw a chart.
    #[error("drawing chart {chart:?}: {message}")]
    Draw {
        /// The chart's name (`loss`, `accuracy`, `lr`, `confusion_matrix`, ...).
        chart: String,
        /// What plotters reported.
        message: String,
    },
    /// Encoding a PNG failed.
    #[error("encoding PNG {}: {source}", path.display())]
    Png {
        /// The file being written.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: png::EncodingError,
    },
    /// The embedded font could not be loaded (should never happen: it is compiled in).
    #[error("the embedded font could not be loaded")]
    Font,
    /// The options are invalid (e.g. a zero-sized image, no output format).
    #[error("invalid plot options: {0}")]
    Options(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
