//! The crate's [`Error`].

use std::path::PathBuf;

use exptrack_core::TrackerError;

/// Errors of `exptrack-mlflow`. Never contains a token or password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A REST call failed (after the configured retries, when retryable).
    #[error("mlflow: {context}: {source}")]
    Http {
        /// What was being done, with the run id when there is one.
        context: String,
        /// The HTTP error.
        #[source]
        source: Box<exptrack_http::Error>,
    },
    /// The server refused the credentials (HTTP 401) or their permissions (HTTP 403). Permanent:
    /// retrying with the same credentials cannot succeed.
    #[error(
        "mlflow: {context}: {} (HTTP {status}; {credentials}): {source}",
        if *status == 401 { "authentication failed" } else { "permission denied" }
    )]
    Auth {
        /// What was being done.
        context: String,
        /// 401 or 403.
        status: u16,
        /// Which credentials were sent and where they were read from (environment variable
        /// names, never their values).
        credentials: String,
        /// The HTTP error.
        #[source]
        source: Box<exptrack_http::Error>,
    },
    /// A metric, param or tag key breaks MLflow's rules (strict mode only; the default mode
    /// replaces invalid characters).
    #[error("mlflow: invalid {kind} key {key:?}: {reason}")]
    InvalidKey {
        /// `metric`, `param` or `tag`.
        kind: &'static str,
        /// The key as given.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A param was logged again with a different value; MLflow params are immutable.
    #[error(
        "mlflow: run {run_id}: param {key:?} was already logged as {old:?}; logging it again as {new:?} is not allowed (MLflow params are immutable: use a new key or a new run)"
    )]
    ParamChanged {
        /// The MLflow run id.
        run_id: String,
        /// The param key.
        key: String,
        /// The value already logged (excerpt).
        old: String,
        /// The rejected new value (excerpt).
        new: String,
    },
    /// The configuration is incomplete or invalid (no tracking URI, unsupported scheme).
    #[error("mlflow: configuration: {0}")]
    Config(String),
    /// Something this backend or this server cannot do.
    #[error("mlflow: not supported: {0}")]
    NotSupported(String),
    /// A local file could not be read or written.
    #[error("mlflow: {context} ({}): {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A call needs an open run.
    #[error("mlflow: no run is open (open failed or was never called)")]
    NotOpen,
    /// A server answer lacked an expected field.
    #[error("mlflow: unexpected response to {0}")]
    UnexpectedResponse(String),
    /// An error from exptrack-core (e.g. while replaying a local run).
    #[error(transparent)]
    Core(Box<exptrack_core::Error>),
}

impl Error {
    /// Whether trying again later may succeed (connection errors, 5xx, 429, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { source, .. } => source.status(),
            Error::Auth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// MLflow's `error_code` (e.g. `RESOURCE_DOES_NOT_EXIST`), when the server sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Error::Http { source, .. } | Error::Auth { source, .. } => source.code(),
            _ => None,
        }
    }

    pub(crate) fn http(context: impl Into<String>, source: exptrack_http::Error) -> Self {
        Error::Http {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

impl From<exptrack_core::Error> for Error {
    fn from(e: exptrack_core::Error) -> Self {
        Error::Core(Box::new(e))
    }
}

impl From<Error> for TrackerError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        if e.is_transient() {
            TrackerError::transient(msg)
        } else {
            TrackerError::permanent(msg)
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// At most `n` characters of `s`, with an ellipsis when cut.
pub(crate) fn excerpt(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}… ({} chars)", &s[..i], s.chars().count()),
    }
}
