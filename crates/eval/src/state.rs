//! The watcher's state file: which checkpoint steps were dealt with, and how.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Layout version of the state file written by this crate.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Default name of the state file inside the experiment's checkpoint directory.
pub const STATE_FILE_NAME: &str = "eval-state.json";

/// How a checkpoint step was dealt with, as recorded in the state file. Every recorded step is
/// final: it is never looked at again (unless the checkpoint at that step is replaced by a new
/// save, see [`StepRecord::created_ms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordKind {
    /// Evaluated on every dataset and logged (flushed to the local store) before being recorded.
    Evaluated,
    /// A file failed its integrity check or `checkpoint.json` was unreadable; skipped.
    Corrupt,
    /// Retention deleted it before the watcher could take a lease; skipped.
    MissedByRetention,
    /// Loading or an evaluator failed on every allowed attempt; skipped.
    Failed,
}

/// One line of the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepRecord {
    /// What happened.
    pub kind: RecordKind,
    /// Why it was skipped (the warning that was emitted), or a note such as "recovered from the
    /// run log".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `created_ms` of the checkpoint that was dealt with (None when unknown). A committed
    /// checkpoint at the same step with a different `created_ms` is a new save of that step and is
    /// evaluated again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    /// When it was recorded (ms since the Unix epoch).
    pub recorded_ms: i64,
    /// Run id of the tracker the metrics went to (for `Evaluated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// The content of the state file (`eval-state.json`).
///
/// Written atomically (temporary file, fsync, rename, directory fsync) after every recorded
/// step, so a crash leaves either the previous or the next version, never a torn one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvalState {
    /// Layout version ([`STATE_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The experiment whose checkpoints are evaluated.
    pub experiment_id: String,
    /// Every dataset name configured so far (a dataset added later is not run on steps recorded
    /// before it was added).
    pub datasets: BTreeSet<String>,
    /// Run directories the watcher has logged to; scanned on start to recover steps that were
    /// logged but not yet recorded when the watcher died.
    pub runs: Vec<PathBuf>,
    /// Per checkpoint step, what happened.
    pub steps: BTreeMap<u64, StepRecord>,
    /// The highest checkpoint commit number
    /// ([`CheckpointInfo::commit_seq`](exptrack_checkpoint::CheckpointInfo::commit_seq)) any
    /// scan listed (None: none listed yet, or a state file from before the counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_seq: Option<u64>,
    /// Checkpoints committed and removed (by retention, or replaced by a new save of their
    /// step) before any scan listed them: never evaluated, counted from the gaps in the commit
    /// numbers.
    #[serde(default)]
    pub pruned_unseen: u64,
}

impl EvalState {
    pub(crate) fn new(experiment_id: &str) -> Self {
        EvalState {
            format_version: STATE_FORMAT_VERSION,
            experiment_id: experiment_id.to_owned(),
            datasets: BTreeSet::new(),
            runs: Vec::new(),
            steps: BTreeMap::new(),
            last_commit_seq: None,
            pruned_unseen: 0,
        }
    }

    /// Reads a state file; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let state: EvalState = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if state.format_version > STATE_FORMAT_VERSION {
            return Err(Error::State {
                path: path.to_owned(),
                message: format!(
                    "format version {} is newer than this exptrack-eval understands ({STATE_FORMAT_VERSION})",
                    state.format_version
                ),
            });
        }
        Ok(Some(state))
    }

    /// Steps recorded with `kind`.
    pub fn steps_with(&self, kind: RecordKind) -> Vec<u64> {
        self.steps
            .iter()
            .filter(|(_, r)| r.kind == kind)
            .map(|(s, _)| *s)
            .collect()
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: path.to_owned(),
            message: format!("cannot serialize: {e}"),
        })?;
        exptrack_core::fsutil::write_atomic(path, &bytes).map_err(|source| Error::Io {
            op: "replace state file atomically",
            path: path.to_owned(),
            source,
        })
    }
}

/// An exclusive lock on `<state file>.lock`, held for the watcher's lifetime and released by the
/// OS when the process dies (also on SIGKILL).
#[derive(Debug)]
pub(crate) struct StateLock {
    _lock: exptrack_core::fsutil::LockFile,
}

impl StateLock {
    pub(crate) fn acquire(state_path: &Path) -> Result<Self> {
        let mut name = state_path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| STATE_FILE_NAME.into());
        name.push(".lock");
        let path = state_path.with_file_name(name);
        match exptrack_core::fsutil::LockFile::try_acquire(&path) {
            Ok(Some(lock)) => Ok(StateLock { _lock: lock }),
            Ok(None) => Err(Error::Locked { path }),
            Err(source) => Err(Error::Io {
                op: "lock",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_newer_versions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(STATE_FILE_NAME);
        assert_eq!(EvalState::load(&path).expect("absent"), None);
        let mut s = EvalState::new("exp");
        s.datasets.insert("valid".into());
        s.steps.insert(
            7,
            StepRecord {
                kind: RecordKind::Corrupt,
                reason: Some("sha256 mismatch".into()),
                created_ms: Some(1),
                recorded_ms: 2,
                run_id: None,
            },
        );
        s.save(&path).expect("save");
        assert_eq!(EvalState::load(&path).expect("load"), Some(s.clone()));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"corrupt\""), "{text}");
        s.format_version = STATE_FORMAT_VERSION + 1;
        s.save(&path).expect("save");
        assert!(matches!(EvalState::load(&path), Err(Error::State { .. })));
        std::fs::write(&path, b"{ not json").expect("write");
        assert!(matches!(EvalState::load(&path), Err(Error::State { .. })));
    }

    #[test]
    fn state_lock_is_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(STATE_FILE_NAME);
        let first = StateLock::acquire(&path).expect("first");
        assert!(matches!(
            StateLock::acquire(&path),
            Err(Error::Locked { .. })
        ));
        drop(first);
        StateLock::acquire(&path).expect("after drop");
    }
}
