//! [`RunReader`]: read access to one stored run.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::event::{CheckpointSet, Event};
use crate::metadata::ExperimentMetadata;
use crate::tracker::RunContext;

use super::cursors::{Cursors, read_cursors};
use super::layout::files;
use super::summary::{RunResults, Summary};
use super::tail::scan_log;

/// Read access to one stored run.
#[derive(Debug, Clone)]
pub struct RunReader {
    dir: PathBuf,
}

impl RunReader {
    /// Opens a run directory (it must contain `metadata.json`).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.join(files::METADATA).is_file() {
            return Err(Error::RunNotFound(dir.display().to_string()));
        }
        Ok(RunReader { dir })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `metadata.json`.
    pub fn metadata(&self) -> Result<ExperimentMetadata> {
        let p = self.dir.join(files::METADATA);
        let b = fs::read(&p).ctx("reading run metadata", &p)?;
        Ok(serde_json::from_slice(&b)?)
    }

    /// `config.toml` as a table (empty when absent).
    pub fn config(&self) -> Result<toml::Table> {
        let p = self.dir.join(files::CONFIG);
        match fs::read_to_string(&p) {
            Ok(s) => toml::from_str(&s).map_err(|e| Error::Corrupt {
                what: "config",
                path: p,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
            Err(e) => Err(Error::Io {
                context: "reading run config",
                path: p,
                source: e,
            }),
        }
    }

    /// `summary.json` (empty when absent).
    pub fn summary(&self) -> Result<Summary> {
        let p = self.dir.join(files::SUMMARY);
        match fs::read(&p) {
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Summary::new()),
            Err(e) => Err(Error::Io {
                context: "reading summary",
                path: p,
                source: e,
            }),
        }
    }

    /// `results.json`, if the run completed.
    pub fn results(&self) -> Result<Option<RunResults>> {
        let p = self.dir.join(files::RESULTS);
        match fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                context: "reading results",
                path: p,
                source: e,
            }),
        }
    }

    /// Per-backend cursors.
    pub fn cursors(&self) -> Result<Cursors> {
        read_cursors(&self.dir)
    }

    /// Every event with its sequence number, in order (a torn final line is ignored).
    pub fn events(&self) -> Result<Vec<(u64, Event)>> {
        let mut out = Vec::new();
        let mut seq = 0;
        scan_log(&self.dir.join(files::EVENTS), |e| {
            seq += 1;
            out.push((seq, e));
        })?;
        Ok(out)
    }

    /// The checkpoints the run reported ([`Event::Checkpoint`]): those that exist and those
    /// retention deleted, read from the event log in one pass (without keeping other events).
    /// Empty when the run has no log yet.
    pub fn checkpoints(&self) -> Result<CheckpointSet> {
        let mut set = CheckpointSet::new();
        let p = self.dir.join(files::EVENTS);
        if !p.exists() {
            return Ok(set);
        }
        scan_log(&p, |e| {
            if let Event::Checkpoint(c) = e {
                set.apply(&c);
            }
        })?;
        Ok(set)
    }

    /// The last sequence number in the log (0 when empty).
    pub fn last_seq(&self) -> Result<u64> {
        let p = self.dir.join(files::EVENTS);
        if !p.exists() {
            return Ok(0);
        }
        Ok(scan_log(&p, |_| {})?.0)
    }
}

/// The highest step logged for each metric key in a run directory's event log (empty when the run
/// has no log yet).
pub(crate) fn max_metric_steps(dir: &Path) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    let path = dir.join(files::EVENTS);
    if !path.exists() {
        return Ok(out);
    }
    scan_log(&path, |e| {
        if let Event::Metrics { step, values, .. } = e {
            for m in values {
                let max = out.entry(m.key).or_insert(step);
                *max = (*max).max(step);
            }
        }
    })?;
    Ok(out)
}

/// The checkpoints a resumed run reported in earlier processes, read from its local log
/// (`ctx.run_dir`); empty for a new run, and empty with a warning when the log cannot be read. A
/// backend that shows the current set of checkpoints starts from it, so a resumed run (or
/// `exptrack sync` from a cursor) keeps listing the checkpoints of before; the reports replayed
/// after it apply again, to the same result.
pub fn resumed_checkpoints(ctx: &RunContext) -> CheckpointSet {
    if !ctx.resumed {
        return CheckpointSet::new();
    }
    RunReader::open(&ctx.run_dir)
        .and_then(|r| r.checkpoints())
        .unwrap_or_else(|e| {
            tracing::warn!(
                run_dir = %ctx.run_dir.display(),
                "the checkpoints reported before the resume are not shown by the backends ({e})"
            );
            CheckpointSet::new()
        })
}
