//! Errors of the command line: one line, a hint, and an exit code.

use std::fmt;

/// Process exit codes (documented in `--help` and docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 1: a check failed (corrupt checkpoint, gate below/above threshold).
    CheckFailed,
    /// 2: bad usage, or the run / directory / metric was not found.
    Usage,
    /// 3: a backend or I/O error (server unreachable, permission denied, corrupt run store).
    Backend,
}

impl Exit {
    pub(crate) fn code(self) -> u8 {
        match self {
            Exit::CheckFailed => 1,
            Exit::Usage => 2,
            Exit::Backend => 3,
        }
    }
}

/// A failure to report: `error: <message>` then `hint: <hint>`.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub(crate) fn backend(message: impl Into<String>) -> Self {
        Self::new(Exit::Backend, message)
    }

    pub(crate) fn check(message: impl Into<String>) -> Self {
        Self::new(Exit::CheckFailed, message)
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line: newlines inside messages (e.g. from servers) are flattened.
        let one_line = self.message.replace(['\n', '\r'], " ");
        write!(f, "error: {one_line}")?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

/// Maps a store error to an exit code and a hint.
pub(crate) fn from_core(e: exptrack_core::Error, what: &str) -> CliError {
    use exptrack_core::Error as E;
    match e {
        E::RunNotFound(id) => CliError::usage(format!("run not found: {id}")).hint(
            "list runs with `exptrack runs list --dir <runs root>`; RUN is a run id, a unique prefix, \
             EXPERIMENT_ID/RUN_ID or a run directory",
        ),
        E::Config(m) => CliError::usage(m),
        other => CliError::backend(format!("{what}: {other}")),
    }
}
