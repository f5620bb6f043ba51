//! Listing and finding the runs under a runs root.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metadata::{ExperimentMetadata, RunStatus};

use super::layout::files;
use super::reader::RunReader;

/// A run found by [`list_runs`].
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub metadata: ExperimentMetadata,
}

/// Lists every run under a runs root (`<root>/<experiment_id>/<run_id>/metadata.json`), oldest
/// first. Directories without metadata are ignored.
pub fn list_runs(runs_root: &Path) -> Result<Vec<RunEntry>> {
    let mut out = Vec::new();
    let exps = match fs::read_dir(runs_root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(Error::Io {
                context: "listing runs",
                path: runs_root.to_path_buf(),
                source: e,
            });
        }
    };
    // Names read from disk are checked with the one rule (`check_component`): a directory that
    // could not have been written by exptrack is not a run.
    let valid = |e: &fs::DirEntry| {
        e.file_name()
            .to_str()
            .is_some_and(|n| crate::metadata::check_component(n).is_ok())
    };
    for exp in exps.flatten().filter(valid) {
        let Ok(runs) = fs::read_dir(exp.path()) else {
            continue;
        };
        for run in runs.flatten().filter(valid) {
            let dir = run.path();
            if let Ok(reader) = RunReader::open(&dir)
                && let Ok(metadata) = reader.metadata()
            {
                out.push(RunEntry { dir, metadata });
            }
        }
    }
    out.sort_by(|a, b| {
        a.metadata
            .start_time
            .cmp(&b.metadata.start_time)
            .then_with(|| a.metadata.run_id.cmp(&b.metadata.run_id))
    });
    Ok(out)
}

/// Finds a run by id (or unique prefix of `experiment_id/run_id` or run id) under a runs root.
pub fn find_run(runs_root: &Path, id: &str) -> Result<RunEntry> {
    let p = Path::new(id);
    if p.join(files::METADATA).is_file() {
        let reader = RunReader::open(p)?;
        return Ok(RunEntry {
            dir: p.to_path_buf(),
            metadata: reader.metadata()?,
        });
    }
    let runs = list_runs(runs_root)?;
    let matches: Vec<_> = runs
        .into_iter()
        .filter(|r| {
            r.metadata.run_id == id
                || format!("{}/{}", r.metadata.experiment_id, r.metadata.run_id) == id
                || r.metadata.run_id.starts_with(id)
        })
        .collect();
    match matches.len() {
        1 => Ok(matches
            .into_iter()
            .next()
            .ok_or_else(|| Error::RunNotFound(id.to_owned()))?),
        0 => Err(Error::RunNotFound(id.to_owned())),
        n => Err(Error::Config(format!(
            "run id {id:?} is ambiguous ({n} runs match); give more characters"
        ))),
    }
}

/// Whether a run's status (as stored) is terminal.
pub fn run_status(run_dir: &Path) -> Result<RunStatus> {
    Ok(RunReader::open(run_dir)?.metadata()?.status)
}
