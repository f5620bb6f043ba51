//! The local run store: `runs/<experiment_id>/<run_id>/`.
//!
//! | file | contents |
//! |---|---|
//! | `metadata.json` | [`ExperimentMetadata`], rewritten atomically at open and close |
//! | `config.toml` | the whole configuration document |
//! | `events.jsonl` | every [`Event`], one JSON object per line with its sequence number `seq` (1, 2, …); append-only, flushed to the OS after each batch and fsynced on `flush` and `finish` |
//! | `summary.json` | last, min, max, count per metric |
//! | `cursors.json` | per backend, the last `seq` it has acknowledged |
//! | `results.json` | on success: config, metric histories, best and final values, `completed: true`, timestamps |
//!
//! `events.jsonl` is the write-ahead log for every other backend: a backend that fails is replayed
//! from its cursor, in order, when it recovers, and [`sync_run`] replays a finished run later.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::event::{Event, finite_or_string};
use crate::fsutil::LockFile;
use crate::metadata::{ExperimentMetadata, RunStatus};
use crate::tracker::{Batch, RunContext, Tracker};

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

/// Statistics of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Last value logged.
    #[serde(with = "finite_or_string")]
    pub last: f64,
    /// Smallest value (NaN ignored).
    #[serde(with = "finite_or_string")]
    pub min: f64,
    /// Largest value (NaN ignored).
    #[serde(with = "finite_or_string")]
    pub max: f64,
    /// Number of values.
    pub count: u64,
    /// Step of the last value.
    pub last_step: u64,
    /// Step at which `min` was reached.
    pub min_step: u64,
    /// Step at which `max` was reached.
    pub max_step: u64,
}

impl MetricSummary {
    fn new(step: u64, v: f64) -> Self {
        let (min, max) = if v.is_nan() {
            (f64::INFINITY, f64::NEG_INFINITY)
        } else {
            (v, v)
        };
        MetricSummary {
            last: v,
            min,
            max,
            count: 1,
            last_step: step,
            min_step: step,
            max_step: step,
        }
    }

    fn update(&mut self, step: u64, v: f64) {
        self.last = v;
        self.count += 1;
        self.last_step = step;
        if v < self.min {
            self.min = v;
            self.min_step = step;
        }
        if v > self.max {
            self.max = v;
            self.max_step = step;
        }
    }
}

/// `summary.json`: per-metric statistics, by metric key.
pub type Summary = BTreeMap<String, MetricSummary>;

/// One metric's history as kept for `results.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricHistory {
    /// Steps, in logging order.
    pub steps: Vec<u64>,
    /// Values (non-finite as strings).
    #[serde(with = "vec_f64")]
    pub values: Vec<f64>,
    /// True when the history was longer than the in-memory cap and only its beginning is kept
    /// (the full history is always in `events.jsonl`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

mod vec_f64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "crate::event::finite_or_string")] f64);

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| W(*x)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
    }
}

/// `results.json`, written when a run finishes with [`RunStatus::Completed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Experiment id.
    pub experiment_id: String,
    /// Run id.
    pub run_id: String,
    /// Always true in a written file (the file exists only for completed runs).
    pub completed: bool,
    /// The configuration document.
    pub config: serde_json::Value,
    /// Run start.
    pub start_time: DateTime<Utc>,
    /// Run end.
    pub end_time: DateTime<Utc>,
    /// Duration in seconds.
    pub duration_secs: f64,
    /// Final (last) value of every metric.
    pub final_metrics: BTreeMap<String, serde_json::Value>,
    /// Per metric, min and max with their steps and the last value.
    pub summary: Summary,
    /// Metric histories (each capped at [`HISTORY_CAP`] points).
    pub history: BTreeMap<String, MetricHistory>,
    /// Values the caller added with `ExperimentTracker::set_result` (e.g. best epoch, test
    /// accuracy).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// How many points of one metric's history are kept in memory for `results.json`.
pub const HISTORY_CAP: usize = 100_000;
/// How many history points, over all metrics, are kept in memory for `results.json` (16 bytes
/// each: 64 MiB). Later points still update the summary; their histories are marked `truncated`.
/// The full history is always in `events.jsonl`.
pub const HISTORY_TOTAL_CAP: usize = 4_000_000;
/// How many distinct metric keys get a summary and a history (later keys are in `events.jsonl`
/// only, and a warning says so once).
pub const MAX_METRIC_KEYS: usize = 100_000;

/// Writes a file atomically: temp file in the same directory, fsync, rename, fsync the directory
/// ([`crate::fsutil::write_atomic`] with this crate's error).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes).ctx("replacing file atomically", path)
}

/// Why a run's lock is taken: decides what a refusal says.
#[derive(Clone, Copy)]
enum LockFor {
    Writing,
    Sync,
}

/// Takes the exclusive lock of a run directory (`.lock`); a run another process holds is refused
/// with a message that fits `purpose`.
fn lock_run_dir(dir: &Path, purpose: LockFor) -> Result<LockFile> {
    let path = dir.join(".lock");
    match LockFile::try_acquire(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(Error::Config(match purpose {
            LockFor::Writing => format!(
                "run directory {} is open in another process; use a new run (or wait for it to \
                 finish)",
                dir.display()
            ),
            LockFor::Sync => format!(
                "run {} is open in another process (its tracker holds {}): sync it after that \
                 process has finished the run; its own tracker is still delivering",
                dir.display(),
                path.display()
            ),
        })),
        Err(source) => Err(Error::Io {
            context: match purpose {
                LockFor::Writing => "locking run directory",
                LockFor::Sync => "locking run directory for sync",
            },
            path,
            source,
        }),
    }
}

/// Whether another process (or handle) has the run open.
pub fn run_in_use(dir: &Path) -> bool {
    LockFile::is_held(&dir.join(".lock"))
}

/// fsyncs a directory (no-op where directories cannot be opened, e.g. on Windows).
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::fsutil::sync_dir(dir).ctx("syncing directory", dir)
}

/// The run directory for an experiment and run under a runs root.
pub fn run_dir(runs_root: &Path, experiment_id: &str, run_id: &str) -> PathBuf {
    runs_root.join(experiment_id).join(run_id)
}

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

/// Sparse index from sequence number to byte offset in `events.jsonl`, shared with the workers so
/// they can replay from the log. Bounded: an entry at most every [`SeqIndex::SPACING`] bytes
/// (doubling when more than [`SeqIndex::MAX_ENTRIES`] would be needed), so a replay reads at most
/// that far past the event it needs.
#[derive(Debug, Default)]
pub(crate) struct SeqIndex {
    /// (first seq of a batch, byte offset of its first line), increasing.
    entries: Vec<(u64, u64)>,
    /// Current minimum distance in bytes between entries.
    spacing: u64,
    /// The log stopped for good before this seq: events from it on are not in the log.
    pub(crate) broken_at: Option<u64>,
}

impl SeqIndex {
    /// Initial minimum distance between entries (bytes).
    pub(crate) const SPACING: u64 = 256 << 10;
    /// Most entries kept.
    pub(crate) const MAX_ENTRIES: usize = 4096;

    fn push(&mut self, seq: u64, offset: u64) {
        if self.spacing == 0 {
            self.spacing = Self::SPACING;
        }
        if let Some(&(_, last)) = self.entries.last()
            && offset < last.saturating_add(self.spacing)
        {
            return;
        }
        if self.entries.len() >= Self::MAX_ENTRIES {
            // Keep every other entry and double the spacing.
            let mut i = 0;
            self.entries.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.spacing = self.spacing.saturating_mul(2);
        }
        self.entries.push((seq, offset));
    }

    /// Number of entries (bounded by [`Self::MAX_ENTRIES`]).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Offset of a line at or before `seq`.
    pub(crate) fn offset_for(&self, seq: u64) -> u64 {
        match self.entries.binary_search_by(|(s, _)| s.cmp(&seq)) {
            Ok(i) => self.entries[i].1,
            Err(0) => 0,
            Err(i) => self.entries[i - 1].1,
        }
    }
}

#[derive(Deserialize)]
struct SeqLine {
    seq: u64,
    #[serde(flatten)]
    event: Event,
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
        let sorted: Summary = self
            .stats
            .iter()
            .map(|(k, v)| (k.clone(), v.summary.clone()))
            .collect();
        write_atomic(
            &self.dir.join(files::SUMMARY),
            &serde_json::to_vec_pretty(&sorted)?,
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
        let end = meta.end_time.unwrap_or_else(Utc::now);
        let summary: Summary = self
            .stats
            .iter()
            .map(|(k, v)| (k.clone(), v.summary.clone()))
            .collect();
        let results = RunResults {
            experiment_id: meta.experiment_id.clone(),
            run_id: meta.run_id.clone(),
            completed: true,
            config: serde_json::to_value(crate::redact_config(config))?,
            start_time: meta.start_time,
            end_time: end,
            duration_secs: (end - meta.start_time).num_milliseconds() as f64 / 1000.0,
            final_metrics: summary
                .iter()
                .map(|(k, s)| (k.clone(), json_f64(s.last)))
                .collect(),
            summary,
            history: self
                .stats
                .iter()
                .map(|(k, v)| (k.clone(), v.history.clone()))
                .collect(),
            extra: self.results.clone(),
        };
        write_atomic(
            &self.dir.join(files::RESULTS),
            &serde_json::to_vec_pretty(&results)?,
        )
    }
}

fn json_f64(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(crate::event::float_to_string(v)))
}

/// Per-metric statistics and history, kept by the writer.
struct Stats {
    summary: MetricSummary,
    history: MetricHistory,
}

/// FNV-1a: metric keys are short, trusted strings; SipHash's DoS resistance is not needed on the
/// hot path.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Per-key statistics with bounded memory ([`HISTORY_CAP`], [`HISTORY_TOTAL_CAP`],
/// [`MAX_METRIC_KEYS`]).
#[derive(Default)]
struct StatsMap {
    map: HashMap<String, Stats, std::hash::BuildHasherDefault<Fnv>>,
    /// History points kept, over all keys.
    points: usize,
    /// Whether the key limit was reported.
    warned_keys: bool,
}

impl StatsMap {
    fn iter(&self) -> impl Iterator<Item = (&String, &Stats)> {
        self.map.iter()
    }
}

fn update_stats(stats: &mut StatsMap, key: &str, step: u64, v: f64) {
    if let Some(s) = stats.map.get_mut(key) {
        s.summary.update(step, v);
        push_history(s, &mut stats.points, step, v);
        return;
    }
    if stats.map.len() >= MAX_METRIC_KEYS {
        if !stats.warned_keys {
            stats.warned_keys = true;
            tracing::warn!(
                key,
                "more than {MAX_METRIC_KEYS} metric keys: later keys get no summary (they are \
                 still logged and delivered)"
            );
        }
        return;
    }
    let mut s = Stats {
        summary: MetricSummary::new(step, v),
        history: MetricHistory::default(),
    };
    push_history(&mut s, &mut stats.points, step, v);
    stats.map.insert(key.to_owned(), s);
}

fn push_history(s: &mut Stats, points: &mut usize, step: u64, v: f64) {
    if s.history.steps.len() < HISTORY_CAP && *points < HISTORY_TOTAL_CAP {
        s.history.steps.push(step);
        s.history.values.push(v);
        *points += 1;
    } else {
        s.history.truncated = true;
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

/// Reads a log, calling `f` for every event; returns (last seq, byte length of the valid prefix).
/// A torn (unterminated or unparsable) final line is ignored; a bad line elsewhere is an error.
/// The highest step logged for each metric key in a run directory's event log (empty when the run
/// has no log yet).
pub(crate) fn max_metric_steps(dir: &Path) -> Result<std::collections::HashMap<String, u64>> {
    let mut out = std::collections::HashMap::new();
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

fn scan_log(path: &Path, mut f: impl FnMut(Event)) -> Result<(u64, u64)> {
    let file = File::open(path).ctx("opening event log", path)?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut valid = 0u64;
    let mut last = 0u64;
    let mut lineno = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .ctx("reading event log", path)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let complete = line.last() == Some(&b'\n');
        match serde_json::from_slice::<SeqLine>(&line) {
            Ok(l) if complete => {
                if l.seq != last + 1 {
                    return Err(Error::Corrupt {
                        what: "event log",
                        path: path.to_path_buf(),
                        message: format!(
                            "line {lineno}: expected seq {}, found {}",
                            last + 1,
                            l.seq
                        ),
                    });
                }
                last = l.seq;
                valid += n as u64;
                f(l.event);
            }
            _ => {
                // Only the final line may be torn.
                let mut rest = Vec::new();
                reader
                    .read_to_end(&mut rest)
                    .ctx("reading event log", path)?;
                if !rest.is_empty() {
                    return Err(Error::Corrupt {
                        what: "event log",
                        path: path.to_path_buf(),
                        message: format!("line {lineno} is not a valid event"),
                    });
                }
                break;
            }
        }
    }
    Ok((last, valid))
}

/// A sequential reader over `events.jsonl` that can be resumed as the log grows.
pub(crate) struct LogTail {
    path: PathBuf,
    reader: BufReader<File>,
    /// Byte offset of the next unread line.
    offset: u64,
    /// Seq of the next unread line, once known.
    next_seq: Option<u64>,
    line: Vec<u8>,
}

impl LogTail {
    /// Opens the log positioned at `offset`, which must be the start of a line.
    pub(crate) fn open(path: &Path, offset: u64) -> Result<Self> {
        let mut file = File::open(path).ctx("opening event log", path)?;
        file.seek(SeekFrom::Start(offset))
            .ctx("seeking in event log", path)?;
        Ok(LogTail {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            offset,
            next_seq: None,
            line: Vec::with_capacity(512),
        })
    }

    /// Reads up to `max` events with `from <= seq <= until`, skipping earlier ones. Returns fewer
    /// (possibly none) at the current end of the log; a torn last line is left for a later call.
    pub(crate) fn read(&mut self, from: u64, until: u64, max: usize) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while out.len() < max {
            if self.next_seq.is_some_and(|s| s > until) {
                break;
            }
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .ctx("reading event log", &self.path)?;
            if n == 0 {
                break;
            }
            if self.line.last() != Some(&b'\n') {
                // Torn or still being written: rewind to its start for the next call.
                self.reader
                    .seek(SeekFrom::Start(self.offset))
                    .ctx("seeking in event log", &self.path)?;
                break;
            }
            let l: SeqLine = serde_json::from_slice(&self.line).map_err(|e| Error::Corrupt {
                what: "event log",
                path: self.path.clone(),
                message: format!("line at byte {}: {e}", self.offset),
            })?;
            if let Some(expected) = self.next_seq
                && l.seq != expected
            {
                return Err(Error::Corrupt {
                    what: "event log",
                    path: self.path.clone(),
                    message: format!(
                        "line at byte {}: expected seq {expected}, found {}",
                        self.offset, l.seq
                    ),
                });
            }
            if l.seq > until {
                // Leave it unread.
                self.reader
                    .seek(SeekFrom::Start(self.offset))
                    .ctx("seeking in event log", &self.path)?;
                self.next_seq = Some(l.seq);
                break;
            }
            self.offset += n as u64;
            self.next_seq = Some(l.seq + 1);
            if l.seq >= from {
                if out.is_empty() && l.seq != from {
                    return Err(Error::Corrupt {
                        what: "event log",
                        path: self.path.clone(),
                        message: format!("event {from} is missing (found {})", l.seq),
                    });
                }
                out.push(l.event);
            }
        }
        Ok(out)
    }
}

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

    /// The last sequence number in the log (0 when empty).
    pub fn last_seq(&self) -> Result<u64> {
        let p = self.dir.join(files::EVENTS);
        if !p.exists() {
            return Ok(0);
        }
        Ok(scan_log(&p, |_| {})?.0)
    }
}

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

/// What [`sync_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// The tracker's name.
    pub backend: String,
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
/// Refuses (with [`Error::Config`]) a run that is open in another process or handle: its tracker
/// is still delivering, and two writers of `cursors.json` would send events twice. The run's lock
/// is held for the whole sync, so the run cannot be resumed meanwhile either.
pub fn sync_run(run_dir: &Path, tracker: &mut dyn Tracker) -> Result<SyncReport> {
    let reader = RunReader::open(run_dir)?;
    let _lock = lock_run_dir(run_dir, LockFor::Sync)?;
    let metadata = reader.metadata()?;
    let config = reader.config()?;
    let name = tracker.name().to_owned();
    let mut cursors = reader.cursors()?;
    let from = cursors.get(&name).copied().unwrap_or(0);
    let ctx = RunContext {
        metadata: metadata.clone(),
        config,
        run_dir: run_dir.to_path_buf(),
        resumed: from > 0,
    };
    let backend_err = |e: crate::tracker::TrackerError| Error::Backend {
        backend: name.clone(),
        message: e.to_string(),
    };
    tracker.open(&ctx).map_err(backend_err)?;
    let path = run_dir.join(files::EVENTS);
    let mut cursor = from;
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
        cursors.insert(name.clone(), cursor);
        write_cursors(run_dir, &cursors)?;
    }
    tracker.flush().map_err(backend_err)?;
    let closed = metadata.status.is_terminal();
    if closed {
        tracker.close(metadata.status).map_err(backend_err)?;
    }
    Ok(SyncReport {
        backend: name,
        from_seq: from,
        to_seq: cursor,
        delivered: cursor - from,
        closed,
        errors,
    })
}

/// Whether a run's status (as stored) is terminal.
pub fn run_status(run_dir: &Path) -> Result<RunStatus> {
    Ok(RunReader::open(run_dir)?.metadata()?.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_index_stays_bounded_and_points_at_or_before_each_seq() {
        let mut idx = SeqIndex::default();
        // A million batches of 1 KiB each (1 GiB of log).
        let mut offsets = Vec::new();
        for i in 0..1_000_000u64 {
            idx.push(i * 10 + 1, i * 1024);
            if i % 9973 == 0 {
                offsets.push((i * 10 + 1, i * 1024));
            }
        }
        assert!(idx.len() <= SeqIndex::MAX_ENTRIES, "{}", idx.len());
        for (seq, offset) in offsets {
            let at = idx.offset_for(seq);
            assert!(at <= offset, "seq {seq}: {at} > {offset}");
            // Never more than the current spacing behind.
            assert!(
                offset - at <= idx.spacing + 1024,
                "seq {seq}: {at} vs {offset}"
            );
        }
    }

    #[test]
    fn metric_history_is_bounded_over_all_keys() {
        let mut stats = StatsMap::default();
        for k in 0..50 {
            let key = format!("k{k}");
            for step in 0..(HISTORY_TOTAL_CAP / 40) as u64 {
                update_stats(&mut stats, &key, step, 1.0);
            }
        }
        assert_eq!(stats.points, HISTORY_TOTAL_CAP);
        let kept: usize = stats.map.values().map(|s| s.history.steps.len()).sum();
        assert_eq!(kept, HISTORY_TOTAL_CAP);
        assert!(stats.map.values().any(|s| s.history.truncated));
        // The summary still counts every point.
        assert!(
            stats
                .map
                .values()
                .all(|s| s.summary.count == (HISTORY_TOTAL_CAP / 40) as u64)
        );
    }
}

/// The private log readers, for the fuzz targets (`crate::__fuzz`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    use super::*;

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
        if let Some(e) = w.append(&mut events).error {
            return Err(std::io::Error::other(e)).ctx("appending", dir.join("events.jsonl"));
        }
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
}
