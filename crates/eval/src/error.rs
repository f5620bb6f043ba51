//! The crate's error type.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error an [`Evaluator`](crate::Evaluator) returns: anything that converts into a boxed
/// error (`?` works on any `std::error::Error + Send + Sync`, and on `String`/`&str`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can stop an [`EvalWatcher`](crate::EvalWatcher).
///
/// Problems with one checkpoint (corrupt, pruned, an evaluator that fails) are *not* errors: they
/// are reported as an [`Outcome`](crate::Outcome), recorded in the state file, and the watcher
/// keeps going. Errors are what the watcher cannot work around: a bad configuration, a state file
/// it cannot read or write, a tracker that is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given an invalid combination of settings.
    #[error("invalid eval watcher configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// File-system I/O on the watcher's own files (state file, lock file) failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but cannot be parsed or belongs to another experiment.
    #[error("eval state file {} is invalid: {message}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another watcher holds the lock on this state file.
    #[error(
        "eval state {} is locked by another running watcher (one watcher per state file; \
         give the second one its own state_file)",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The checkpoint directory could not be opened or scanned.
    #[error("checkpoints of experiment {experiment_id}: {source}")]
    Checkpoint {
        /// The experiment whose checkpoints were being read.
        experiment_id: String,
        /// The checkpointer's error.
        #[source]
        source: exptrack_checkpoint::Error,
    },
    /// The experiment tracker refused an event or its run log could not be read.
    #[error("tracker (run {run_id}): {source}")]
    Tracking {
        /// The run the watcher logs to.
        run_id: String,
        /// The core's error.
        #[source]
        source: exptrack_core::Error,
    },
    /// A model directory is incomplete or unreadable (see [`model_dir`](crate::model_dir)).
    #[error("model {}: {message}", path.display())]
    Model {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong or missing.
        message: String,
    },
    /// A test set could not be read.
    #[error("test set {}: {message}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number).
        message: String,
    },
    /// Evaluating a model failed (shapes, the model's code, the metrics).
    #[error("evaluation: {message}")]
    Evaluation {
        /// What failed.
        message: String,
        /// The cause, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// An MLflow call failed (feature `mlflow`).
    #[cfg(feature = "mlflow")]
    #[error("MLflow: {context}: {source}")]
    Mlflow {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: exptrack_mlflow::Error,
    },
}

impl Error {
    /// An [`Error::Evaluation`] with a cause.
    #[cfg_attr(not(feature = "burn"), allow(dead_code))]
    pub(crate) fn eval(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Evaluation {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}
