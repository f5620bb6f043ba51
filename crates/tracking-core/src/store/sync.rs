//! [`sync_run`]: replays a stored run into a tracker later (`exptrack sync`).

use std::fs::File;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::tracker::{Batch, RunContext, Tracker};

use super::cursors::CursorFile;
use super::layout::files;
use super::lock::{LockFor, lock_run_dir};
use super::reader::RunReader;
use super::tail::LogTail;

/// What [`sync_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// The tracker's name.
    pub tracker: String,
    /// Cursor before the sync.
    pub from_seq: u64,
    /// Cursor after the sync (the last seq in the log when complete).
    pub to_seq: u64,
    /// Events delivered by this sync.
    pub delivered: u64,
    /// Whether the run had ended and `close` was called.
    pub closed: bool,
    /// Batches the tracker rejected permanently (skipped, as the live dispatcher does).
    pub errors: Vec<String>,
}

/// Replays a stored run into `tracker` from its cursor in `cursors.json`, in order, in batches,
/// advancing the cursor after each delivered batch; closes the tracker with the run's final status
/// if the run has ended. Running it again after success delivers nothing.
///
/// The replay starts after the larger of the cursor and what the tracker says it already holds
/// ([`Tracker::resume_point`], asked right after `open`), so events a tracker stored before its
/// cursor was saved are not sent twice. Cursors are read and written through the same owner as
/// the live dispatcher's: clamped to the log, and saved only after the log is fsynced.
///
/// Refuses (with [`Error::Config`]) a run that is open in another process or handle: its tracker
/// is still delivering, and two writers of `cursors.json` would send events twice. The run's lock
/// is held for the whole sync, so the run cannot be resumed meanwhile either.
pub fn sync_run(run_dir: &Path, tracker: &mut dyn Tracker) -> Result<SyncReport> {
    let reader = RunReader::open(run_dir)?;
    let _lock = lock_run_dir(run_dir, LockFor::Sync)?;
    let metadata = reader.metadata()?;
    let config = reader.config()?;
    let name = tracker.name().to_owned();
    let log_end = reader.last_seq()?;
    let mut cursors = CursorFile::open(run_dir, log_end)?;
    let saved = cursors.get(&name);
    let ctx = RunContext {
        metadata: metadata.clone(),
        config,
        run_dir: run_dir.to_path_buf(),
        resumed: saved > 0,
    };
    let backend_err = |e: crate::tracker::TrackerError| Error::Tracker {
        tracker: name.clone(),
        message: e.to_string(),
    };
    tracker.open(&ctx).map_err(backend_err)?;
    let held = tracker.resume_point().map_or(0, |p| p.min(log_end));
    let from = saved.max(held);
    let path = run_dir.join(files::EVENTS);
    // The log may not have reached the disk (its writer was killed): fsync it once, before the
    // first cursor is written.
    let mut log_synced = false;
    let mut make_log_durable = || -> Result<()> {
        if !log_synced {
            File::open(&path)
                .and_then(|f| f.sync_data())
                .ctx("syncing event log", &path)?;
            log_synced = true;
        }
        Ok(())
    };
    let mut cursor = from;
    if from > saved {
        // What the tracker holds counts as delivered.
        cursors.save([(name.clone(), from)], &mut make_log_durable)?;
    }
    let mut errors = Vec::new();
    const CHUNK: usize = 1000;
    let mut tail = if path.exists() {
        Some(LogTail::open(&path, 0)?)
    } else {
        None
    };
    while let Some(tail) = tail.as_mut() {
        let events = tail.read(cursor + 1, u64::MAX, CHUNK)?;
        if events.is_empty() {
            break;
        }
        let batch = Batch {
            first_seq: cursor + 1,
            events: &events,
        };
        match tracker.write(&batch) {
            Ok(()) => {}
            // Rejected for good (bad input): record it and go on, as the live dispatcher does.
            Err(e) if !e.is_transient() => errors.push(format!(
                "events {}..={} rejected: {e}",
                batch.first_seq,
                batch.last_seq()
            )),
            Err(e) => return Err(backend_err(e)),
        }
        // The cursor records what the tracker has durably stored: flush before advancing it.
        tracker.flush().map_err(backend_err)?;
        cursor = batch.last_seq();
        cursors.save([(name.clone(), cursor)], &mut make_log_durable)?;
    }
    tracker.flush().map_err(backend_err)?;
    let closed = metadata.status.is_terminal();
    if closed {
        tracker.close(metadata.status).map_err(backend_err)?;
    }
    Ok(SyncReport {
        tracker: name,
        from_seq: from,
        to_seq: cursor,
        delivered: cursor - from,
        closed,
        errors,
    })
}
