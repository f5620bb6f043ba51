//! [`TensorBoardTracker`]: the [`Tracker`] that writes a run as TensorBoard event files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exptrack_core::metadata::sanitize_component;
use exptrack_core::{
    Batch, Event, EventKind, Metric, ParamValue, RunContext, RunStatus, Tracker, TrackerError,
    now_ms,
};

use crate::encode;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::writer::EventFileWriter;

/// Default interval between automatic flushes while events are being written.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Writes a run as TensorBoard event files that `tensorboard --logdir` and tbparse read.
///
/// | exptrack event | TensorBoard |
/// |---|---|
/// | `Metrics` | one `Summary` per event, one `simple_value` (f32) per metric, tag = key |
/// | `Text` | text plugin, tag `<tag>/text_summary`, `DT_STRING` tensor of shape `[1]` |
/// | `Image` | `Summary.Image` with the PNG as given (height, width, colorspace = channels) |
/// | `Histogram` | `HistogramProto`, see [`histogram`](crate::encode::histogram) |
/// | `Params` | HParams plugin: `session_start_info` (before the first data event after the params), `experiment` (all params, every scalar tag) and `session_end_info` (at close) |
/// | `Tags` | a markdown table as text, tag `tags/text_summary`, step 0 |
/// | `Status` | remembered; the status given to `close` becomes `session_end_info` |
/// | `Result` | a number: a scalar `<key>` at the latest step, listed among the HParams experiment's metrics (so the HParams dashboard shows it next to the params); anything else: text `result/<key>` |
/// | `Checkpoint` | text plugin, tag `checkpoints/text_summary` at the checkpoint's step: a markdown line with its name, location and size, a table of its files (name, size, hash), its metrics and the steps retention deleted since the previous report (TensorBoard's Text tab lists one entry per commit; the weights stay where they are) |
/// | `Artifact` | not supported |
///
/// TensorBoard keeps the first hparams record of each tag per run, so params logged after the
/// session started (after the first metric following the params) appear in the experiment's
/// hyperparameter list but have no value in the session; a warning says so.
///
/// Files go to `<log_root>/<experiment_id>/<run_id>/` when a log root is given, else into the
/// run's own directory (`RunContext::run_dir`), so `tensorboard --logdir runs` lists runs next to
/// the local store. Every `open` creates a new file (resumed runs get a second file in the same
/// directory, which TensorBoard reads as one run).
///
/// Resuming writes nothing twice: every [`flush`](Tracker::flush) and `close` fsyncs the event
/// file and records, in `.exptrack-tensorboard.json` beside it, its length and the sequence number
/// of the last event in it. The next `open` of the run cuts records written after that point
/// (by a process killed between two flushes) off the file and reports the sequence number as its
/// [`resume_point`](Tracker::resume_point), so the dispatcher replays exactly the events after it.
///
/// Errors: I/O failures (disk full, directory deleted) are transient [`TrackerError`]s; the
/// tracker never panics. A batch that is delivered again after an error is not written twice:
/// events whose sequence number was already written are skipped. If the event file is deleted
/// while the run is live, the next call creates a new file (as TensorFlow's writer does); what
/// had been flushed to the deleted file is gone.
#[derive(Debug)]
pub struct TensorBoardTracker {
    log_root: Option<PathBuf>,
    companion_dir: Option<PathBuf>,
    flush_interval: Duration,
    sync_on_flush: bool,
    run: Option<OpenRun>,
}

/// Builder for [`TensorBoardTracker`].
///
/// ```
/// use std::time::Duration;
/// use exptrack_tensorboard::TensorBoardTracker;
///
/// let tracker = TensorBoardTracker::builder()
///     .log_root("runs/tensorboard")
///     .flush_interval(Duration::from_secs(5))
///     .sync_on_flush(true)
///     .build();
/// assert_eq!(tracker.log_root(), Some(std::path::Path::new("runs/tensorboard")));
/// ```
#[derive(Debug, Clone)]
pub struct TensorBoardTrackerBuilder {
    log_root: Option<PathBuf>,
    companion_dir: Option<PathBuf>,
    flush_interval: Duration,
    sync_on_flush: bool,
}

impl Default for TensorBoardTrackerBuilder {
    fn default() -> Self {
        TensorBoardTrackerBuilder {
            log_root: None,
            companion_dir: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            sync_on_flush: false,
        }
    }
}

impl TensorBoardTrackerBuilder {
    /// Write under `<root>/<experiment_id>/<run_id>/` instead of the run's directory.
    pub fn log_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.log_root = Some(root.into());
        self
    }

    /// Write a second event file into another run's TensorBoard directory `dir` (e.g. an
    /// evaluator beside the training run), so TensorBoard overlays both processes' curves as one
    /// run. A companion writes metrics, text, images and histograms; the owner's params (the
    /// HParams session) and tags are left to the owner.
    pub fn companion_of(mut self, dir: impl Into<PathBuf>) -> Self {
        self.companion_dir = Some(dir.into());
        self
    }

    /// How long `write` may keep events buffered before it flushes them itself (default 2 s).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Whether the flushes `write` does on its own (every flush interval) also wait for stable
    /// storage (`fsync`); default `false` (they make data visible to readers).
    /// [`Tracker::flush`] and `close` always sync: the resume point they record must be durable.
    pub fn sync_on_flush(mut self, sync: bool) -> Self {
        self.sync_on_flush = sync;
        self
    }

    /// The tracker.
    pub fn build(self) -> TensorBoardTracker {
        TensorBoardTracker {
            log_root: self.log_root,
            companion_dir: self.companion_dir,
            flush_interval: self.flush_interval,
            sync_on_flush: self.sync_on_flush,
            run: None,
        }
    }
}

impl TensorBoardTracker {
    /// A tracker writing under `log_root` (`<log_root>/<experiment_id>/<run_id>/`), or into each
    /// run's own directory when `None`.
    pub fn new(log_root: Option<PathBuf>) -> Self {
        TensorBoardTracker {
            log_root,
            ..Self::builder().build()
        }
    }

    /// A builder with the defaults of [`new(None)`](Self::new).
    pub fn builder() -> TensorBoardTrackerBuilder {
        TensorBoardTrackerBuilder::default()
    }

    /// The configured log root.
    pub fn log_root(&self) -> Option<&Path> {
        self.log_root.as_deref()
    }

    /// The directory of the open run's event files.
    pub fn log_dir(&self) -> Option<&Path> {
        self.run.as_ref().map(|r| r.dir.as_path())
    }

    /// The event file currently written.
    pub fn event_file(&self) -> Option<&Path> {
        self.run
            .as_ref()
            .and_then(|r| r.writer.as_ref())
            .map(|w| w.path())
    }

    fn dir_for(&self, ctx: &RunContext) -> PathBuf {
        if let Some(dir) = &self.companion_dir {
            return dir.clone();
        }
        match &self.log_root {
            Some(root) => root
                .join(sanitize_component(&ctx.metadata.experiment_id))
                .join(sanitize_component(&ctx.metadata.run_id)),
            None => ctx.run_dir.clone(),
        }
    }
}

#[derive(Debug)]
struct OpenRun {
    dir: PathBuf,
    run_id: String,
    experiment_name: String,
    description: String,
    start_secs: f64,
    /// `None` after the file was lost; the next call creates a new one.
    writer: Option<EventFileWriter>,
    params: Vec<(String, ParamValue)>,
    session_started: bool,
    /// A companion writer of another run's directory: params and tags are the owner's.
    companion: bool,
    late_params_warned: bool,
    scalar_tags: Vec<String>,
    scalar_tag_set: HashSet<String>,
    /// Keys of the previous metrics event (most events repeat them; skips the set lookups).
    last_keys: Vec<String>,
    /// Sequence number of the next event not yet written.
    next_seq: Option<u64>,
    /// Sequence number of the last event written (or held from earlier processes).
    written_seq: u64,
    /// What earlier processes left in the log directory ([`Tracker::resume_point`]).
    held: Option<u64>,
    /// The progress last recorded (not rewritten while nothing changed).
    recorded: Option<Progress>,
    last_flush: Instant,
    dirty: bool,
    close_records_written: bool,
    status: RunStatus,
    /// The highest step written (results are written at it).
    last_step: u64,
}

impl OpenRun {
    fn writer(&mut self) -> Result<&mut EventFileWriter> {
        if self.writer.is_none() {
            tracing::warn!(dir = %self.dir.display(), "tensorboard: event file lost, creating a new one");
            self.writer = Some(EventFileWriter::create(&self.dir)?);
            // The new file must carry the session again; close re-emits the closing records.
            self.close_records_written = false;
            if self.session_started {
                self.session_started = false;
                self.start_session()?;
            }
        }
        match self.writer.as_mut() {
            Some(w) => Ok(w),
            None => Err(Error::NotOpen),
        }
    }

    /// Drops the writer when its file is gone so the next call makes a new one.
    fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(Error::FileLost { .. }) = &r {
            self.writer = None;
        }
        r
    }

    fn write_values(
        &mut self,
        step: u64,
        wall_time: f64,
        values: Vec<crate::proto::summary::Value>,
    ) -> Result<()> {
        let event = encode::summary_event(wall_time, encode::step_i64(step), values);
        self.dirty = true;
        let r = self.writer()?.write_event(&event);
        self.note(r)
    }

    fn start_session(&mut self) -> Result<()> {
        if self.session_started || self.params.is_empty() {
            return Ok(());
        }
        let value = encode::session_start_value(&self.params, self.start_secs);
        self.write_values(0, now_secs(), vec![value])?;
        self.session_started = true;
        Ok(())
    }

    fn register_tags(&mut self, values: &[Metric]) {
        let same = values.len() == self.last_keys.len()
            && values.iter().zip(&self.last_keys).all(|(m, k)| m.key == *k);
        if same {
            return;
        }
        self.last_keys.clear();
        for m in values {
            self.last_keys.push(m.key.clone());
            if !self.scalar_tag_set.contains(m.key.as_str()) {
                self.scalar_tag_set.insert(m.key.clone());
                self.scalar_tags.push(m.key.clone());
            }
        }
    }

    fn write_event(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Metrics {
                step,
                timestamp_ms,
                values,
            } => {
                if values.is_empty() {
                    return Ok(());
                }
                self.last_step = self.last_step.max(*step);
                self.start_session()?;
                self.dirty = true;
                let r = self.writer()?.write_scalars(
                    encode::wall_time(*timestamp_ms),
                    encode::step_i64(*step),
                    values,
                );
                self.note(r)?;
                self.register_tags(values);
            }
            Event::Params { .. } | Event::Tags { .. } if self.companion => {}
            Event::Params { params } => {
                for (k, v) in params {
                    match self.params.iter_mut().find(|(key, _)| key == k) {
                        Some(slot) => slot.1 = v.clone(),
                        None => self.params.push((k.clone(), v.clone())),
                    }
                }
                if self.session_started && !self.late_params_warned {
                    self.late_params_warned = true;
                    tracing::warn!(
                        run_id = %self.run_id,
                        "tensorboard: params logged after the first metrics are not shown as session values in the HParams dashboard"
                    );
                }
            }
            Event::Tags { tags } if !tags.is_empty() => {
                let text = encode::tags_markdown(tags);
                self.write_values(0, now_secs(), vec![encode::text_value("tags", &text)])?;
            }
            Event::Text {
                step,
                timestamp_ms,
                tag,
                text,
            } => {
                self.start_session()?;
                let value = encode::text_value(tag, text);
                self.write_values(*step, encode::wall_time(*timestamp_ms), vec![value])?;
            }
            Event::Image {
                step,
                timestamp_ms,
                tag,
                width,
                height,
                channels,
                png,
            } => {
                self.start_session()?;
                let value = encode::image_value(tag, *width, *height, *channels, png);
                self.write_values(*step, encode::wall_time(*timestamp_ms), vec![value])?;
            }
            Event::Histogram {
                step,
                timestamp_ms,
                tag,
                values,
            } => {
                self.start_session()?;
                let value = encode::histogram_value(tag, values);
                self.write_values(*step, encode::wall_time(*timestamp_ms), vec![value])?;
            }
            Event::Checkpoint(c) => {
                self.start_session()?;
                let value = encode::text_value("checkpoints", &c.markdown());
                self.write_values(c.step, encode::wall_time(c.timestamp_ms), vec![value])?;
            }
            Event::Status { status, .. } => self.status = *status,
            Event::Result {
                key,
                value,
                timestamp_ms,
            } => {
                self.start_session()?;
                let wall = encode::wall_time(*timestamp_ms);
                match value.as_f64() {
                    Some(v) => {
                        let metric = [Metric::new(key.clone(), v)];
                        self.dirty = true;
                        let step = encode::step_i64(self.last_step);
                        let r = self.writer()?.write_scalars(wall, step, &metric);
                        self.note(r)?;
                        self.register_tags(&metric);
                    }
                    None => {
                        let text = match value {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let v = encode::text_value(&format!("result/{key}"), &text);
                        self.write_values(self.last_step, wall, vec![v])?;
                    }
                }
            }
            // Artifacts (and kinds added later) have no TensorBoard form.
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self, sync: bool) -> Result<()> {
        let r = {
            let w = self.writer()?;
            if sync { w.sync() } else { w.flush() }
        };
        self.note(r)?;
        self.dirty = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Flushes and fsyncs the event file, then records how far it goes (see [`Progress`]).
    fn record_progress(&mut self) -> Result<()> {
        self.flush(false)?;
        let current = self.progress()?;
        if self.recorded.as_ref() == Some(&current) {
            return Ok(()); // nothing new since the last record, which was synced
        }
        self.flush(true)?;
        let current = self.progress()?;
        current.write(&self.dir)?;
        self.recorded = Some(current);
        Ok(())
    }

    fn progress(&self) -> Result<Progress> {
        let w = self.writer.as_ref().ok_or(Error::NotOpen)?;
        let file = w
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or(Error::NotOpen)?
            .to_owned();
        Ok(Progress {
            run_id: self.run_id.clone(),
            file,
            len: w.file_len(),
            seq: self.written_seq,
        })
    }

    fn write_close_records(&mut self, status: RunStatus) -> Result<()> {
        if self.close_records_written {
            return Ok(());
        }
        if !self.params.is_empty() {
            self.start_session()?;
            let experiment = encode::experiment_value(
                &self.experiment_name,
                &self.description,
                self.start_secs,
                &self.params,
                &self.scalar_tags,
            );
            let end = encode::session_end_value(status, now_secs());
            self.write_values(0, now_secs(), vec![experiment])?;
            self.write_values(0, now_secs(), vec![end])?;
        }
        self.close_records_written = true;
        Ok(())
    }
}

fn now_secs() -> f64 {
    encode::wall_time(now_ms())
}

fn not_open() -> TrackerError {
    TrackerError::permanent("tensorboard: write before open (or after close)")
        .with_source(Error::NotOpen)
}

impl Tracker for TensorBoardTracker {
    fn name(&self) -> &str {
        "tensorboard"
    }

    fn supports(&self, kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::Metrics
                | EventKind::Params
                | EventKind::Tags
                | EventKind::Text
                | EventKind::Image
                | EventKind::Histogram
                | EventKind::Status
                | EventKind::Result
                | EventKind::Checkpoint
        )
    }

    fn open(&mut self, ctx: &RunContext) -> Result<(), TrackerError> {
        let dir = self.dir_for(ctx);
        let run_id = ctx.metadata.run_id.clone();
        let err = |e: Error| e.into_tracker_error(&run_id);
        // What an earlier process of this run left: cut back to its last recorded flush.
        let held = match Progress::read(&dir) {
            Some(p) if p.run_id == run_id => p.restore(&dir).map_err(err)?,
            Some(p) => {
                tracing::warn!(dir = %dir.display(), found = %p.run_id, run_id = %run_id, "tensorboard: the progress file belongs to another run; ignoring it");
                None
            }
            None => None,
        };
        let writer = EventFileWriter::create(&dir).map_err(err)?;
        let start_secs = ctx.metadata.start_time.timestamp_millis() as f64 / 1000.0;
        let mut run = OpenRun {
            dir,
            run_id: run_id.clone(),
            experiment_name: ctx.metadata.experiment_name.clone(),
            description: ctx.metadata.description.clone(),
            start_secs,
            writer: Some(writer),
            params: Vec::new(),
            session_started: false,
            companion: self.companion_dir.is_some(),
            late_params_warned: false,
            scalar_tags: Vec::new(),
            scalar_tag_set: HashSet::new(),
            last_keys: Vec::new(),
            next_seq: None,
            written_seq: held.unwrap_or(0),
            held: held.filter(|s| *s > 0),
            recorded: None,
            last_flush: Instant::now(),
            dirty: false,
            close_records_written: false,
            status: ctx.metadata.status,
            last_step: 0,
        };
        // Point the record at the new file at once (holding nothing new yet), so that what this
        // process writes before its first flush is cut off by the next resume too.
        run.record_progress().map_err(err)?;
        self.run = Some(run);
        Ok(())
    }

    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError> {
        let interval = self.flush_interval;
        let sync = self.sync_on_flush;
        let run = self.run.as_mut().ok_or_else(not_open)?;
        for (seq, event) in batch.iter_seq() {
            if run.next_seq.is_some_and(|next| seq < next) {
                continue; // already written before a retried error
            }
            if let Err(e) = run.write_event(event) {
                return Err(e.into_tracker_error(&run.run_id));
            }
            run.next_seq = Some(seq + 1);
            run.written_seq = seq;
        }
        if run.dirty && run.last_flush.elapsed() >= interval {
            run.flush(sync)
                .map_err(|e| e.into_tracker_error(&run.run_id))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TrackerError> {
        match self.run.as_mut() {
            Some(run) => run
                .record_progress()
                .map_err(|e| e.into_tracker_error(&run.run_id)),
            None => Ok(()),
        }
    }

    fn close(&mut self, status: RunStatus) -> Result<(), TrackerError> {
        let Some(run) = self.run.as_mut() else {
            return Ok(()); // never opened, or already closed
        };
        run.status = status;
        let result = run
            .write_close_records(status)
            .and_then(|()| run.record_progress());
        match result {
            Ok(()) => {
                self.run = None;
                Ok(())
            }
            // Keep the run so that a retried close finishes the job.
            Err(e) => Err(e.into_tracker_error(&run.run_id)),
        }
    }

    fn resume_point(&mut self) -> Option<u64> {
        self.run.as_ref().and_then(|r| r.held)
    }
}

#[cfg(test)]
mod tests;
