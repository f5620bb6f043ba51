//! [`RunWriter`]: the writing side of a run directory (the append-only log, its sequence
//! numbers, the backlog kept while the disk is full, and the files written at open and finish).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::event::Event;
use crate::fsutil::LockFile;
use crate::metadata::ExperimentMetadata;
use crate::tracker::RunContext;

use super::layout::{files, write_atomic};
use super::lock::{LockFor, lock_run_dir};
use super::seq_index::SeqIndex;
use super::summary::{StatsMap, update_stats};
use super::tail::scan_log;

/// The writing side of a run directory, owned by the dispatcher thread.
pub(crate) struct RunWriter {
    /// Exclusive lock on `<run_dir>/.lock` for as long as the run is open, so two processes
    /// never append to one log (released by the OS when the process dies).
    _lock: LockFile,
    dir: PathBuf,
    events_path: PathBuf,
    events: File,
    /// Byte length of the written part of `events.jsonl` (offset of the next line).
    len: u64,
    /// Sequence number of the next event (logged or not: live delivery uses the same numbers).
    next_seq: u64,
    index: Arc<Mutex<SeqIndex>>,
    stats: StatsMap,
    /// Latest value of every [`Event::Result`] key, for `results.json`.
    results: BTreeMap<String, serde_json::Value>,
    summary_dirty: bool,
    /// Encoded lines not yet in the file: the batch being appended, plus every earlier batch whose
    /// write failed (kept, in order, to be retried before the next one; see [`LOG_BACKLOG_MAX`]).
    backlog: Vec<u8>,
    /// Sequence number of the first event in `backlog`.
    backlog_first: u64,
    /// Set once the log stopped for good; it then holds exactly the events before this seq.
    broken_at: Option<u64>,
}

/// Most bytes of events kept in memory while `events.jsonl` cannot be written (disk full): the
/// writer retries them, in order, before each later batch, so a short outage loses nothing. Past
/// this bound (or when the run finishes with them still unwritten) the log stops for good at the
/// first unwritten event; later events still reach the live backends under their own sequence
/// numbers, and any a backend misses are reported as not delivered in the `FinishReport`.
pub const LOG_BACKLOG_MAX: usize = 64 << 20;

/// What [`RunWriter::append`] did with one batch.
#[derive(Debug)]
pub(crate) struct Appended {
    /// Sequence number given to the first event left in the batch.
    pub(crate) first_seq: u64,
    /// Events taken out of the batch because they cannot be encoded (they got no number).
    pub(crate) dropped: Vec<String>,
    /// Why the batch is not (yet) in the log, if it is not.
    pub(crate) error: Option<String>,
}

impl RunWriter {
    /// Creates (or, when `resume`, continues) a run directory.
    pub(crate) fn open(ctx: &RunContext, config_toml: &str) -> Result<Self> {
        let dir = ctx.run_dir.clone();
        fs::create_dir_all(&dir).ctx("creating run directory", &dir)?;
        let lock = lock_run_dir(&dir, LockFor::Writing)?;
        let events_path = dir.join(files::EVENTS);
        let mut next_seq = 1;
        let mut len = 0;
        let mut stats = StatsMap::default();
        let mut results = BTreeMap::new();
        if ctx.resumed && events_path.exists() {
            // Scan the existing log: last seq, valid length (a torn last line is cut off), summary.
            let (last, valid_len) = scan_log(&events_path, |seq_event| match seq_event {
                Event::Metrics { step, values, .. } => {
                    for m in values {
                        update_stats(&mut stats, &m.key, step, m.value);
                    }
                }
                Event::Result { key, value, .. } => {
                    results.insert(key, value);
                }
                _ => {}
            })?;
            next_seq = last + 1;
            len = valid_len;
            let f = OpenOptions::new()
                .write(true)
                .open(&events_path)
                .ctx("opening event log", &events_path)?;
            f.set_len(valid_len)
                .ctx("truncating torn tail of event log", &events_path)?;
        } else if events_path.exists() && !ctx.resumed {
            return Err(Error::Config(format!(
                "run directory {} already holds events; resume it or use a new run id",
                dir.display()
            )));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&events_path)
            .ctx("opening event log", &events_path)?;
        write_atomic(
            &dir.join(files::METADATA),
            &serde_json::to_vec_pretty(&ctx.metadata)?,
        )?;
        write_atomic(&dir.join(files::CONFIG), config_toml.as_bytes())?;
        let mut index = SeqIndex::default();
        if len > 0 {
            index.push(1, 0);
        }
        Ok(RunWriter {
            _lock: lock,
            dir,
            events_path,
            events: file,
            len,
            next_seq,
            index: Arc::new(Mutex::new(index)),
            stats,
            results,
            summary_dirty: true,
            backlog: Vec::with_capacity(1 << 16),
            backlog_first: next_seq,
            broken_at: None,
        })
    }

    pub(crate) fn index(&self) -> Arc<Mutex<SeqIndex>> {
        Arc::clone(&self.index)
    }

    pub(crate) fn events_path(&self) -> &Path {
        &self.events_path
    }

    /// Sequence number of the last event written (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Numbers a batch and appends it to the log, handing it to the OS in one write.
    ///
    /// Every event left in `events` gets the next sequence number whether or not the write
    /// succeeds, so the numbers the dispatcher fans out always match the log. Events that cannot be
    /// encoded are taken out of `events` (and reported in [`Appended::dropped`]). A failed write is
    /// undone (the file is cut back to its last whole batch) and kept in memory to be retried
    /// before the next batch, up to [`LOG_BACKLOG_MAX`] bytes; past that the log stops for good.
    pub(crate) fn append(&mut self, events: &mut Vec<Event>) -> Appended {
        let first = self.next_seq;
        if self.backlog.is_empty() {
            self.backlog_first = first;
        }
        let mut dropped = Vec::new();
        let mut seq = first;
        events.retain(|ev| match encode_line(&mut self.backlog, seq, ev) {
            Ok(()) => {
                seq += 1;
                true
            }
            Err(e) => {
                dropped.push(format!(
                    "a {} event cannot be stored or sent and was dropped: {e}",
                    ev.kind()
                ));
                false
            }
        });
        self.next_seq = seq;
        for ev in events.iter() {
            if let Event::Metrics { step, values, .. } = ev {
                for m in values {
                    update_stats(&mut self.stats, &m.key, *step, m.value);
                }
                self.summary_dirty = true;
            }
            if let Event::Result { key, value, .. } = ev {
                self.results.insert(key.clone(), value.clone());
            }
        }
        let error = self.write_backlog().err().map(|e| e.to_string());
        Appended {
            first_seq: first,
            dropped,
            error,
        }
    }

    /// Writes the lines waiting in memory (see [`Self::append`]).
    fn write_backlog(&mut self) -> Result<()> {
        if self.broken_at.is_some() {
            // Stopped for good (reported when it stopped): these events reach live backends only.
            self.backlog.clear();
            return Ok(());
        }
        if self.backlog.is_empty() {
            return Ok(());
        }
        match self.events.write_all(&self.backlog) {
            Ok(()) => {
                if let Ok(mut idx) = self.index.lock() {
                    idx.push(self.backlog_first, self.len);
                }
                self.len += self.backlog.len() as u64;
                self.backlog.clear();
                self.backlog_first = self.next_seq;
                Ok(())
            }
            Err(source) => {
                // Undo a partial write so the log ends at its last whole batch (the retry writes
                // the same bytes again).
                let undone = self.events.set_len(self.len).is_ok();
                if !undone || self.backlog.len() > LOG_BACKLOG_MAX {
                    let at = self.stop_log();
                    return Err(Error::Corrupt {
                        what: "event log",
                        path: self.events_path.clone(),
                        message: format!(
                            "cannot append ({source}); the log stops before event {at}: later \
                             events reach live backends only"
                        ),
                    });
                }
                Err(Error::Io {
                    context: if undone {
                        "appending to event log (kept in memory, retried with the next batch)"
                    } else {
                        "appending to event log (and cutting back a partial write)"
                    },
                    path: self.events_path.clone(),
                    source,
                })
            }
        }
    }

    /// Stops the log for good at the first unwritten event.
    fn stop_log(&mut self) -> u64 {
        let at = self.backlog_first;
        self.broken_at = Some(at);
        self.backlog = Vec::new();
        if let Ok(mut idx) = self.index.lock() {
            idx.broken_at = Some(at);
        }
        tracing::error!(
            "local store: events.jsonl stops before event {at}; later events reach live backends only"
        );
        at
    }

    /// Retries unwritten events and fsyncs the event log. With `last_chance` (the run is
    /// finishing), events that still cannot be written stop the log for good, so backends waiting
    /// for them learn that they will never come.
    pub(crate) fn sync_final(&mut self, last_chance: bool) -> Result<()> {
        let written = self.write_backlog();
        if last_chance && written.is_err() && self.broken_at.is_none() {
            let at = self.stop_log();
            return Err(Error::Corrupt {
                what: "event log",
                path: self.events_path.clone(),
                message: format!(
                    "events from {at} on could not be written before the run finished; they \
                     reached live backends only"
                ),
            });
        }
        written?;
        self.events
            .sync_data()
            .ctx("syncing event log", &self.events_path)
    }

    /// fsyncs the event log (after retrying unwritten events).
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.sync_final(false)
    }

    /// Rewrites `summary.json` if metrics changed since the last call.
    pub(crate) fn write_summary(&mut self) -> Result<()> {
        if !self.summary_dirty {
            return Ok(());
        }
        write_atomic(
            &self.dir.join(files::SUMMARY),
            &serde_json::to_vec_pretty(&self.stats.summary())?,
        )?;
        self.summary_dirty = false;
        Ok(())
    }

    pub(crate) fn write_metadata(&self, meta: &ExperimentMetadata) -> Result<()> {
        write_atomic(
            &self.dir.join(files::METADATA),
            &serde_json::to_vec_pretty(meta)?,
        )
    }

    pub(crate) fn write_results(
        &self,
        meta: &ExperimentMetadata,
        config: &toml::Table,
    ) -> Result<()> {
        let results = self.stats.results(meta, config, &self.results)?;
        write_atomic(
            &self.dir.join(files::RESULTS),
            &serde_json::to_vec_pretty(&results)?,
        )
    }
}

/// Appends `{"seq":N,<event fields>}\n` to `out`; on error `out` is left as it was.
fn encode_line(out: &mut Vec<u8>, seq: u64, ev: &Event) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa_u64(seq, &mut [0u8; 20]));
    out.push(b',');
    let body_start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, ev) {
        out.truncate(start);
        return Err(e.into());
    }
    // `ev` serialized as `{"kind":...}`: drop its opening brace so `seq` joins the object.
    if out.get(body_start) == Some(&b'{') {
        out.remove(body_start);
    }
    out.push(b'\n');
    Ok(())
}

fn itoa_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
