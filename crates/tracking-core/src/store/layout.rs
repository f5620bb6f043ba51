//! Where a run lives and how its small files are replaced: the directory layout, atomic writes
//! and directory fsyncs (the crate's errors around [`crate::fsutil`]).

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// File names inside a run directory.
pub mod files {
    /// Run metadata.
    pub const METADATA: &str = "metadata.json";
    /// Configuration document.
    pub const CONFIG: &str = "config.toml";
    /// Event log.
    pub const EVENTS: &str = "events.jsonl";
    /// Per-metric summary.
    pub const SUMMARY: &str = "summary.json";
    /// Per-backend delivered offsets.
    pub const CURSORS: &str = "cursors.json";
    /// Results of a completed run.
    pub const RESULTS: &str = "results.json";
}

/// Writes a file atomically: temp file in the same directory, fsync, rename, fsync the directory
/// ([`crate::fsutil::write_atomic`] with this crate's error).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes).ctx("replacing file atomically", path)
}

/// fsyncs a directory (no-op where directories cannot be opened, e.g. on Windows).
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::fsutil::sync_dir(dir).ctx("syncing directory", dir)
}

/// The run directory for an experiment and run under a runs root.
pub fn run_dir(runs_root: &Path, experiment_id: &str, run_id: &str) -> PathBuf {
    runs_root.join(experiment_id).join(run_id)
}
