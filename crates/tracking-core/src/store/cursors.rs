//! `cursors.json`: per tracker, the last sequence number it has durably stored.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::layout::{files, write_atomic};

/// Per-backend acknowledged sequence numbers (`cursors.json`).
pub type Cursors = BTreeMap<String, u64>;

/// Reads `cursors.json` (empty when absent).
pub fn read_cursors(run_dir: &Path) -> Result<Cursors> {
    let p = run_dir.join(files::CURSORS);
    match fs::read(&p) {
        Ok(b) => Ok(serde_json::from_slice(&b)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursors::new()),
        Err(e) => Err(Error::Io {
            context: "reading cursors",
            path: p,
            source: e,
        }),
    }
}

/// Writes `cursors.json` atomically.
pub fn write_cursors(run_dir: &Path, cursors: &Cursors) -> Result<()> {
    write_atomic(
        &run_dir.join(files::CURSORS),
        &serde_json::to_vec_pretty(cursors)?,
    )
}

/// The one owner of a run's `cursors.json`, used by the dispatcher and by
/// [`sync_run`](super::sync_run) alike.
///
/// - **Open**: reads the file and clamps every cursor to the end of the log it belongs to. A
///   cursor past the log (written before the log reached the disk, then a power loss) would make
///   its tracker skip the new events that reuse those sequence numbers; a clamped file is
///   rewritten at once.
/// - **Save**: writes the file only when a cursor changed, and only after the caller made the
///   log durable (the `make_log_durable` step of [`save`](Self::save)), so a cursor on disk never
///   points past the durable log.
#[derive(Debug)]
pub(crate) struct CursorFile {
    dir: PathBuf,
    saved: Cursors,
}

impl CursorFile {
    /// The cursors of a new run: none yet (nothing is read).
    pub(crate) fn new_run(run_dir: &Path) -> Self {
        CursorFile {
            dir: run_dir.to_path_buf(),
            saved: Cursors::new(),
        }
    }

    /// The cursors of an existing run whose log ends at `log_end`, clamped to it.
    pub(crate) fn open(run_dir: &Path, log_end: u64) -> Result<Self> {
        let mut saved = read_cursors(run_dir)?;
        let mut clamped = false;
        for (name, c) in saved.iter_mut() {
            if *c > log_end {
                tracing::warn!(
                    backend = %name,
                    cursor = *c,
                    log_end,
                    "cursor points past the event log; clamped to the log"
                );
                *c = log_end;
                clamped = true;
            }
        }
        if clamped {
            write_cursors(run_dir, &saved)?;
        }
        Ok(CursorFile {
            dir: run_dir.to_path_buf(),
            saved,
        })
    }

    /// The cursor of tracker `name` as last saved (0 when it has none).
    pub(crate) fn get(&self, name: &str) -> u64 {
        self.saved.get(name).copied().unwrap_or(0)
    }

    /// Sets the cursors in `updates` (others keep their value) and, if any changed, makes the log
    /// durable with `make_log_durable` and then writes the file. Nothing is written when
    /// `make_log_durable` fails; the cursors then stay as last saved, and the next call tries
    /// again.
    pub(crate) fn save(
        &mut self,
        updates: impl IntoIterator<Item = (String, u64)>,
        make_log_durable: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut next = self.saved.clone();
        next.extend(updates);
        if next == self.saved {
            return Ok(());
        }
        make_log_durable()?;
        write_cursors(&self.dir, &next)?;
        self.saved = next;
        Ok(())
    }
}
