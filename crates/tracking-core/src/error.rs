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
    /// A tracker failed (or, for `flush`, did not confirm in time). The message says "backend",
    /// the word users know from the config; in code the thing is a [`Tracker`](crate::Tracker).
    #[error("backend {tracker}: {message}")]
    Tracker {
        /// The tracker's name (`"flush"` for a flush that not every tracker confirmed).
        tracker: String,
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

/// Renders an error for people: its `Display`, then each [`source`](std::error::Error::source) in
/// its chain as `: cause`, skipping a cause whose text the message already contains (many errors
/// repeat their source in their own message). Never uses `Debug`, so no struct dump reaches the
/// user.
///
/// ```
/// let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
/// let e = exptrack_core::Error::Io { context: "creating run directory", path: "runs/x".into(), source: io };
/// assert_eq!(
///     exptrack_core::error::report(&e),
///     "creating run directory (runs/x): permission denied"
/// );
/// ```
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    // A cycle in a hand-written `source()` must not hang the caller.
    let mut depth = 0;
    while let Some(cause) = next {
        depth += 1;
        if depth > 32 {
            break;
        }
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Wraps any error so that `Display` and `Debug` both print [`report`]: return
/// `Result<(), Reported>` from `main` and a failure prints `Error: <message>: <cause>` instead of a
/// `Debug` dump of the error's fields.
///
/// ```
/// use exptrack_core::error::Reported;
///
/// fn main() -> Result<(), Reported> {
///     let n: u32 = "42".parse()?; // any error type converts
///     assert_eq!(n, 42);
/// #   let r = Reported::from(std::io::Error::other("disk full"));
/// #   assert_eq!(format!("{r:?}"), "disk full");
///     Ok(())
/// }
/// ```
pub struct Reported(Box<dyn std::error::Error + 'static>);

impl Reported {
    /// Wraps a thread-safe boxed error (`Box<dyn Error + Send + Sync>`, which `?` cannot convert
    /// by itself): `run().map_err(Reported::boxed)`.
    pub fn boxed(e: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        Reported(e)
    }

    /// The wrapped error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + 'static> {
        self.0
    }
}

impl<E: Into<Box<dyn std::error::Error + 'static>>> From<E> for Reported {
    fn from(e: E) -> Self {
        Reported(e.into())
    }
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&report(self.0.as_ref()))
    }
}

impl std::fmt::Debug for Reported {
    /// The same text as `Display`: `main` prints a returned error with `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&report(self.0.as_ref()))
    }
}
