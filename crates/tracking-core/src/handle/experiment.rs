//! [`ExperimentTracker`]: the user's handle on a run (logging calls, `flush`, `finish`) and the
//! run guard that finishes an abandoned run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};

use crate::config::ExperimentConfig;
use crate::dispatch::{FinishReport, Msg};
use crate::error::{Error, Result};
use crate::event::{ArtifactKind, Event, Metric, ParamValue, TimestampMs, now_ms};
use crate::media::png_dimensions;
use crate::metadata::{ExperimentMetadata, RunStatus};

use super::builder::ExperimentTrackerBuilder;

pub(crate) struct Sampler {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) join: JoinHandle<()>,
}

/// The state behind every clone of one handle.
pub(super) struct Inner {
    pub(super) tx: crate::dispatch::Queue,
    pub(super) finished: AtomicBool,
    pub(super) finish_lock: Mutex<Option<FinishReport>>,
    pub(super) dispatcher: Mutex<Option<JoinHandle<()>>>,
    pub(super) sampler: Mutex<Option<Sampler>>,
    pub(super) run_dir: PathBuf,
    pub(super) metadata: ExperimentMetadata,
    pub(super) n_trackers: usize,
    pub(super) finish_timeout: Duration,
    pub(super) relogged: Option<Relogged>,
}

/// Metric steps a resumed run logged before this process: what
/// [`ExperimentTrackerBuilder::skip_relogged_metrics`] drops.
#[derive(Debug)]
pub(super) struct Relogged {
    /// The highest step over all keys (steps above it need no lookup).
    max_step: u64,
    per_key: std::collections::HashMap<String, u64>,
}

impl Relogged {
    pub(super) fn new(per_key: std::collections::HashMap<String, u64>) -> Option<Self> {
        let max_step = per_key.values().copied().max()?;
        Some(Relogged { max_step, per_key })
    }

    /// Whether `key` at `step` was logged before the resume.
    fn seen(&self, key: &str, step: u64) -> bool {
        step <= self.max_step && self.per_key.get(key).is_some_and(|&m| step <= m)
    }
}

impl Inner {
    fn send(&self, msg: Msg) -> Result<()> {
        if self.finished.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        self.tx.send(msg).map_err(|()| Error::Closed)
    }

    pub(super) fn finish(&self, status: RunStatus) -> Result<FinishReport> {
        let mut guard = self.finish_lock.lock().map_err(|_| Error::Closed)?;
        if let Some(r) = guard.as_ref() {
            return Ok(r.clone());
        }
        if let Ok(mut s) = self.sampler.lock()
            && let Some(s) = s.take()
        {
            s.stop.store(true, Ordering::SeqCst);
            let _ = s.join.join();
        }
        self.finished.store(true, Ordering::SeqCst);
        let (rtx, rrx) = bounded(1);
        self.tx
            .send(Msg::Finish(status, rtx))
            .map_err(|()| Error::Closed)?;
        let wait = self
            .finish_timeout
            .min(crate::clock::FOREVER)
            .saturating_add(Duration::from_secs(5));
        let report = rrx
            .recv_timeout(wait)
            .map_err(|_| Error::Timeout(wait, "the dispatcher to finish"))?;
        if let Ok(mut d) = self.dispatcher.lock()
            && let Some(j) = d.take()
        {
            let _ = j.join();
        }
        *guard = Some(report.clone());
        Ok(report)
    }
}

/// The user's handle on a run: every call enqueues and returns; one dispatcher thread writes the
/// local store and fans out to every tracker.
///
/// - **The caller never waits on I/O.** Calls put the event into a queue bounded in messages
///   (`[tracking].queue_capacity`, default 65 536) and in bytes of payload
///   (`[tracking].queue_capacity_bytes`, default 256 MiB, so 65 536 large images cannot fill the
///   memory). Only under sustained overload, when the queue is full, does a call wait for the
///   dispatcher to take earlier events off it (backpressure); events are never dropped. Past the
///   queue, memory stays bounded too: batches hold at most 8 MiB, a slow backend's live queue
///   64 MiB (beyond that it catches up from `events.jsonl`), the log's sequence index a few
///   thousand entries, and metric histories kept for `results.json` 4 million points
///   ([`store::HISTORY_TOTAL_CAP`](crate::store::HISTORY_TOTAL_CAP)).
/// - **Backends are isolated.** Each tracker has its own thread; an error, a hang or a panic in
///   one never delays or drops events for the others or for the caller. A failing backend is
///   retried with backoff and replayed from the local store's `events.jsonl`, in order, exactly
///   once.
/// - **Resume-safe.** A resumed run drops metric points at or below the step each key already
///   reached before the interruption, so replaying steps from the last checkpoint does not log
///   them twice ([`ExperimentTrackerBuilder::skip_relogged_metrics`]); system metrics continue
///   their step count.
/// - **Run guard.** Dropping the handle without [`finish`](Self::finish) (an early return or a
///   panic) finishes the run as [`RunStatus::Failed`]; Ctrl-C / SIGTERM finish it as
///   [`RunStatus::Killed`].
///
/// The handle is `Send + Sync` and cheap to [`Clone`] (an `Arc` inside): every clone is the same
/// run, so hand one to each thread, evaluator or callback that logs. Any clone may
/// [`finish`](Self::finish) the run (once; later calls return the same report); dropping the
/// last clone of an unfinished run finishes it as [`RunStatus::Failed`].
///
/// ```no_run
/// use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
/// # fn main() -> exptrack_core::Result<()> {
/// let tracker = ExperimentTracker::builder(ExperimentConfig::named("demo")).build()?;
/// let for_thread = tracker.clone();
/// std::thread::spawn(move || for_thread.log_metric(1, "eval/accuracy", 0.9)).join().ok();
/// let report = tracker.finish(RunStatus::Completed)?;
/// assert_eq!(tracker.finish(RunStatus::Failed)?, report); // idempotent: the first report
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ExperimentTracker {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for ExperimentTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExperimentTracker")
            .field("experiment_id", &self.inner.metadata.experiment_id)
            .field("run_id", &self.inner.metadata.run_id)
            .field("run_dir", &self.inner.run_dir)
            .finish_non_exhaustive()
    }
}

impl ExperimentTracker {
    /// Starts building a tracker for `config`.
    pub fn builder(config: ExperimentConfig) -> ExperimentTrackerBuilder {
        ExperimentTrackerBuilder::new(config)
    }

    /// The run directory (`<runs>/<experiment_id>/<run_id>`).
    pub fn run_dir(&self) -> &Path {
        &self.inner.run_dir
    }

    /// The run's metadata as of its start.
    pub fn metadata(&self) -> &ExperimentMetadata {
        &self.inner.metadata
    }

    /// Number of trackers besides the local store.
    pub fn tracker_count(&self) -> usize {
        self.inner.n_trackers
    }

    /// Logs scalar metrics at `step`.
    pub fn log_metrics<K: AsRef<str>>(&self, step: u64, values: &[(K, f64)]) -> Result<()> {
        let values = values
            .iter()
            .map(|(k, v)| Metric {
                key: k.as_ref().to_owned(),
                value: *v,
            })
            .collect();
        self.send_metrics(step, now_ms(), values)
    }

    /// Sends a metrics event, minus the points a resumed run already logged
    /// ([`ExperimentTrackerBuilder::skip_relogged_metrics`]); nothing when none is left.
    fn send_metrics(
        &self,
        step: u64,
        timestamp_ms: TimestampMs,
        mut values: Vec<Metric>,
    ) -> Result<()> {
        if let Some(r) = self.inner.relogged.as_ref().filter(|r| step <= r.max_step) {
            values.retain(|m| !r.seen(&m.key, step));
            if values.is_empty() {
                return Ok(());
            }
        }
        self.inner.send(Msg::Event(Event::Metrics {
            step,
            timestamp_ms,
            values,
        }))
    }

    /// Logs one scalar.
    pub fn log_metric(&self, step: u64, key: &str, value: f64) -> Result<()> {
        self.log_metrics(step, &[(key, value)])
    }

    /// Logs hyperparameters.
    pub fn log_hyperparameters<K, V>(&self, params: &[(K, V)]) -> Result<()>
    where
        K: AsRef<str>,
        V: Into<ParamValue> + Clone,
    {
        let params = params
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.clone().into()))
            .collect();
        self.inner.send(Msg::Event(Event::Params { params }))
    }

    /// Sets run tags.
    pub fn set_tags<K: AsRef<str>, V: AsRef<str>>(&self, tags: &[(K, V)]) -> Result<()> {
        let tags = tags
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        self.inner.send(Msg::Event(Event::Tags { tags }))
    }

    /// Logs text (markdown) at `step`.
    pub fn log_text(&self, step: u64, tag: &str, text: &str) -> Result<()> {
        self.inner.send(Msg::Event(Event::Text {
            step,
            timestamp_ms: now_ms(),
            tag: tag.to_owned(),
            text: text.to_owned(),
        }))
    }

    /// Logs a PNG image at `step`. Width, height and channels are read from the PNG header; bytes
    /// that are not a PNG are an error.
    pub fn log_image(&self, step: u64, tag: &str, png: Vec<u8>) -> Result<()> {
        let (width, height, channels) = png_dimensions(&png)
            .ok_or_else(|| Error::Config(format!("log_image({tag:?}): not a PNG file")))?;
        self.inner.send(Msg::Event(Event::Image {
            step,
            timestamp_ms: now_ms(),
            tag: tag.to_owned(),
            width,
            height,
            channels,
            png,
        }))
    }

    /// Logs a histogram of raw values at `step`.
    pub fn log_histogram(&self, step: u64, tag: &str, values: &[f64]) -> Result<()> {
        self.inner.send(Msg::Event(Event::Histogram {
            step,
            timestamp_ms: now_ms(),
            tag: tag.to_owned(),
            values: values.to_vec(),
        }))
    }

    /// Attaches a file to the run under `name`. The file is referenced, not copied: keep it until
    /// the run is finished (and synced).
    pub fn log_artifact(&self, path: impl AsRef<Path>, name: &str) -> Result<()> {
        self.artifact(path.as_ref(), name, ArtifactKind::File, None)
    }

    /// Attaches a model file (e.g. a checkpoint's weights) produced at `step`; registries can
    /// register it.
    pub fn log_model(&self, path: impl AsRef<Path>, name: &str, step: Option<u64>) -> Result<()> {
        self.artifact(path.as_ref(), name, ArtifactKind::Model, step)
    }

    fn artifact(
        &self,
        path: &Path,
        name: &str,
        kind: ArtifactKind,
        step: Option<u64>,
    ) -> Result<()> {
        let path = std::fs::canonicalize(path).map_err(|source| Error::Io {
            context: "resolving artifact",
            path: path.to_path_buf(),
            source,
        })?;
        check_artifact_path(&path)?;
        self.inner.send(Msg::Event(Event::Artifact {
            path,
            name: name.to_owned(),
            artifact_kind: kind,
            step,
        }))
    }

    /// Records a result of the run, e.g. `set_result("best_epoch", 7.into())`: an
    /// [`Event::Result`] in the event log (so a crash does not lose it and `exptrack sync`
    /// replays it), shown in each backend's run summary, and in `results.json` when the run
    /// completes. Setting a key again replaces its value.
    pub fn set_result(&self, key: &str, value: serde_json::Value) -> Result<()> {
        self.inner.send(Msg::Event(Event::Result {
            key: key.to_owned(),
            value,
            timestamp_ms: now_ms(),
        }))
    }

    /// Sends an already-built event.
    pub fn log_event(&self, event: Event) -> Result<()> {
        match event {
            Event::Metrics {
                step,
                timestamp_ms,
                values,
            } => self.send_metrics(step, timestamp_ms, values),
            Event::Artifact { ref path, .. } => {
                check_artifact_path(path)?;
                self.inner.send(Msg::Event(event))
            }
            event => self.inner.send(Msg::Event(event)),
        }
    }

    /// A barrier: returns once the local store is fsynced and every tracker has received and
    /// flushed everything logged before the call, or fails after `timeout` naming the trackers
    /// that did not confirm (their events stay queued; nothing is lost).
    pub fn flush_timeout(&self, timeout: Duration) -> Result<()> {
        let (tx, rx) = unbounded();
        self.inner.send(Msg::Flush(tx))?;
        let deadline = crate::clock::after(timeout);
        let mut acked = Vec::new();
        let mut errors = Vec::new();
        while acked.len() < self.inner.n_trackers + 1 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(a) => {
                    if let Some(e) = a.error {
                        errors.push(format!("{}: {e}", a.name));
                    }
                    acked.push(a.name);
                }
                Err(_) => {
                    return Err(Error::Tracker {
                        tracker: "flush".to_owned(),
                        message: format!("only {:?} confirmed within {timeout:?}", acked),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Tracker {
                tracker: "flush".to_owned(),
                message: errors.join("; "),
            })
        }
    }

    /// A barrier on the local store only: returns once everything logged before the call is in
    /// the run's `events.jsonl` and fsynced, without waiting for any tracker (they catch up from
    /// the log, now or after a crash). Call it before committing something that a resumed run
    /// trusts, such as a checkpoint: a crash right after the commit then never loses the metrics
    /// logged before it (the resumed run starts after the checkpoint and never logs them again).
    pub fn sync_log(&self) -> Result<()> {
        let (tx, rx) = unbounded();
        self.inner.send(Msg::SyncLog(tx))?;
        let timeout = self.inner.finish_timeout;
        match rx.recv_timeout(timeout) {
            Ok(a) => match a.error {
                None => Ok(()),
                Some(e) => Err(Error::Tracker {
                    tracker: a.name,
                    message: e,
                }),
            },
            Err(_) => Err(Error::Tracker {
                tracker: "local".to_owned(),
                message: format!("the log was not synced within {timeout:?}"),
            }),
        }
    }

    /// [`flush_timeout`](Self::flush_timeout) with the finish timeout.
    pub fn flush(&self) -> Result<()> {
        self.flush_timeout(self.inner.finish_timeout)
    }

    /// Ends the run: records `status`, writes `summary.json` (and `results.json` when completed),
    /// closes every tracker, waiting at most the finish timeout for slow ones (their remaining
    /// events stay in the local store; the report says how to sync them).
    ///
    /// Idempotent: the run is finished once, by the first call from any clone; every later call
    /// (from this or another clone, with any status) returns that first call's report, whose
    /// [`status`](FinishReport::status) says how the run ended. Logging after it fails with
    /// [`Error::Closed`].
    pub fn finish(&self, status: RunStatus) -> Result<FinishReport> {
        self.inner.finish(status)
    }

    /// Whether the run has been finished (by any clone, or by a signal).
    pub fn is_finished(&self) -> bool {
        self.inner.finished.load(Ordering::SeqCst)
    }
}

/// The run guard: runs when the last clone of the handle is dropped.
impl Drop for Inner {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            let panicking = std::thread::panicking();
            match self.finish(RunStatus::Failed) {
                Ok(r) => tracing::warn!(
                    panicking,
                    "experiment tracker dropped without finish(): run marked failed ({})",
                    r.run_dir.display()
                ),
                Err(e) => tracing::error!("could not mark the run failed: {e}"),
            }
        }
    }
}

/// Refuses an artifact path that is not valid UTF-8: it could be neither stored in
/// `events.jsonl` nor named to a backend, so the caller hears of it now.
fn check_artifact_path(path: &Path) -> Result<()> {
    if path.to_str().is_none() {
        return Err(Error::Config(format!(
            "artifact path {} is not valid UTF-8; rename the file",
            path.display()
        )));
    }
    Ok(())
}
