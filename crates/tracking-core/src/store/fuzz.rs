//! The private log readers, for the fuzz targets (`crate::__fuzz`).

use std::path::Path;

use crate::error::Result;
use crate::event::Event;
use crate::metadata::ExperimentMetadata;
use crate::tracker::RunContext;

use super::tail::LogTail;
use super::writer::RunWriter;

/// Opens the run directory `dir` for resuming, as the dispatcher does (scans `events.jsonl`,
/// cuts a torn tail off), appends `append` and closes it. Returns the last sequence number
/// after the append.
pub fn open_resumed(dir: &Path, append: &[Event]) -> Result<u64> {
    let ctx = RunContext {
        metadata: ExperimentMetadata::new("fuzz", "0"),
        config: toml::Table::new(),
        run_dir: dir.to_path_buf(),
        resumed: true,
    };
    let mut w = RunWriter::open(&ctx, "")?;
    let mut events = append.to_vec();
    // A failed write stays in the writer's backlog; `sync` retries it and reports the error.
    let _ = w.append(&mut events);
    w.sync()?;
    Ok(w.last_seq())
}

/// Reads `events.jsonl` from its start with the tail reader the workers replay with, `max`
/// events per call, until a call returns none: the events with `from <= seq <= until`. Each
/// call asks for the next event not yet read, as a worker does.
pub fn tail_read(path: &Path, from: u64, until: u64, max: usize) -> Result<Vec<Event>> {
    let mut tail = LogTail::open(path, 0)?;
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let got = tail.read(next, until, max)?;
        if got.is_empty() {
            return Ok(out);
        }
        next += got.len() as u64;
        out.extend(got);
    }
}
