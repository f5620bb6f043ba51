//! [`ExperimentTracker`]: the user's handle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};

use crate::config::ExperimentConfig;
use crate::dispatch::{DispatchSettings, Dispatcher, FinishReport, Msg, spawn_worker};
use crate::error::{Error, Result};
use crate::event::{ArtifactKind, Event, EventKind, Metric, ParamValue, TimestampMs, now_ms};
use crate::metadata::{ExperimentMetadata, RunStatus, SystemInfo, check_component, new_run_id};
use crate::store::{RunWriter, list_runs, read_cursors, run_dir};
use crate::tracker::{RunContext, Tracker};

/// Which run a new tracker writes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resume {
    /// A new run with a fresh id (the default).
    #[default]
    Never,
    /// Continue the newest run of this experiment that did not complete (status running, failed
    /// or killed) and is not open in another process; start a new one when there is none.
    LatestUnfinished,
    /// Continue the run with this id (created when absent).
    RunId(String),
}

/// Builds an [`ExperimentTracker`].
///
/// ```no_run
/// use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
/// # fn main() -> exptrack_core::Result<()> {
/// let tracker = ExperimentTracker::builder(ExperimentConfig::named("demo"))
///     .runs_dir("runs")
///     .build()?;
/// tracker.log_metrics(1, &[("train/loss", 0.5)])?;
/// let report = tracker.finish(RunStatus::Completed)?;
/// println!("{report}");
/// # Ok(()) }
/// ```
#[must_use = "call build() to start the tracker"]
pub struct ExperimentTrackerBuilder {
    config: ExperimentConfig,
    trackers: Vec<Box<dyn Tracker>>,
    runs_dir: Option<PathBuf>,
    resume: Resume,
    queue_capacity: Option<usize>,
    queue_bytes: Option<usize>,
    finish_timeout: Option<Duration>,
    flush_interval: Duration,
    handle_signals: bool,
    system_metrics: Option<Duration>,
    crate_versions: BTreeMap<String, String>,
    collect_system_info: bool,
    skip_relogged_metrics: bool,
}

impl std::fmt::Debug for ExperimentTrackerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExperimentTrackerBuilder")
            .field("experiment", &self.config.experiment.name)
            .field(
                "trackers",
                &self.trackers.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("runs_dir", &self.runs_dir)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl ExperimentTrackerBuilder {
    /// Adds a tracker (backend). The local store is always present and needs no tracker.
    pub fn with_tracker(mut self, tracker: Box<dyn Tracker>) -> Self {
        self.trackers.push(tracker);
        self
    }

    /// Root of the local run store (overrides `[tracking].runs_dir`).
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runs_dir = Some(dir.into());
        self
    }

    /// Which run to write to (default: a new run).
    pub fn resume(mut self, resume: Resume) -> Self {
        self.resume = resume;
        self
    }

    /// Capacity of the caller → dispatcher queue in messages (overrides
    /// `[tracking].queue_capacity`). When it is full, logging calls wait (backpressure): nothing
    /// is ever dropped.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = Some(n.max(1));
        self
    }

    /// Capacity of the caller → dispatcher queue in bytes of event payload (overrides
    /// `[tracking].queue_capacity_bytes`, default 256 MiB). When the queue holds this much, a
    /// logging call waits until the dispatcher has taken earlier events off it (an in-memory
    /// hand-off, not a write); an event larger than the bound waits for an empty queue and goes
    /// through alone. Nothing is dropped.
    pub fn queue_bytes(mut self, n: usize) -> Self {
        self.queue_bytes = Some(n.max(1));
        self
    }

    /// How long `finish` waits for slow backends (overrides `[tracking].finish_timeout_secs`).
    /// Any duration is accepted; beyond a century (`Duration::MAX` included) it means "wait for
    /// them".
    pub fn finish_timeout(mut self, d: Duration) -> Self {
        self.finish_timeout = Some(d);
        self
    }

    /// How often trackers are flushed while events arrive (default 2 s).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Whether Ctrl-C / SIGTERM finish the run as `Killed` and exit the process with status 130
    /// (default true when the `signals` feature is on). Before exiting, the handler waits (at most
    /// the finish timeout) for durable work in flight, such as background checkpoint saves (see
    /// [`crate::shutdown`]), and prints what it waited for; a second signal exits at once. The
    /// handler is process-wide and installed once; it does nothing if the application installed
    /// its own first.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// Samples `system/cpu_percent`, `system/memory_percent` and `system/process_rss_mb` every
    /// `interval` (needs the `system-metrics` feature; overrides
    /// `[tracking].system_metrics_interval_secs`). `Duration::ZERO` switches the sampler off;
    /// intervals below 10 ms are raised to 10 ms, and any larger one (`Duration::MAX` included)
    /// is accepted.
    pub fn system_metrics(mut self, interval: Duration) -> Self {
        self.system_metrics = Some(interval);
        self
    }

    /// Records a crate version in the run's system info (e.g. `("burn", "0.22.1")`).
    pub fn crate_version(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.crate_versions.insert(name.into(), version.into());
        self
    }

    /// Skip collecting host/git information (faster start in tests).
    pub fn collect_system_info(mut self, on: bool) -> Self {
        self.collect_system_info = on;
        self
    }

    /// After a resume, drop metric points whose step is at or below the last step the resumed
    /// run already logged for that key (default: on). A training loop that restarts from its last
    /// checkpoint replays the steps between that checkpoint and the interruption; without this,
    /// those steps would reach every backend twice (MLflow keeps both points, TensorBoard draws a
    /// zigzag, W&B rejects steps that go backwards). With a deterministic loop the replayed values
    /// are the ones already logged. Turn it off to keep every point.
    pub fn skip_relogged_metrics(mut self, on: bool) -> Self {
        self.skip_relogged_metrics = on;
        self
    }

    /// Creates the run directory, opens every tracker on its own thread and starts the
    /// dispatcher.
    pub fn build(self) -> Result<ExperimentTracker> {
        let cfg = self.config;
        // Again here: the config's fields are public and may have been changed in code.
        cfg.validate()?;
        let runs_root = self
            .runs_dir
            .clone()
            .unwrap_or_else(|| cfg.tracking.runs_dir.clone());
        let experiment_id = cfg.experiment_id();
        let hash = cfg.hash();
        let exp_dir = runs_root.join(&experiment_id);

        let (run_id, resumed_meta) = match &self.resume {
            Resume::Never => (new_run_id(), None),
            Resume::RunId(id) => {
                check_component(id).map_err(|why| {
                    Error::Config(format!(
                        "run id {id:?} {why}; a run id becomes a directory name (at most 200 \
                         bytes of A-Z, a-z, 0-9, '_', '-' and '.', not starting with '.')"
                    ))
                })?;
                let id = id.clone();
                let dir = exp_dir.join(&id);
                let meta = crate::store::RunReader::open(&dir)
                    .and_then(|r| r.metadata())
                    .ok();
                (id, meta)
            }
            Resume::LatestUnfinished => {
                let latest = list_runs(&runs_root)?.into_iter().rfind(|r| {
                    r.metadata.experiment_id == experiment_id
                        && r.metadata.status != RunStatus::Completed
                        && !crate::store::run_in_use(&r.dir)
                });
                match latest {
                    // The run is the directory that was found, whatever its metadata says.
                    Some(r) => match r.dir.file_name().and_then(|n| n.to_str()) {
                        Some(name) if check_component(name).is_ok() => {
                            (name.to_owned(), Some(r.metadata))
                        }
                        _ => {
                            return Err(Error::Corrupt {
                                what: "run directory name",
                                path: r.dir.clone(),
                                message: "not a valid run id".to_owned(),
                            });
                        }
                    },
                    None => (new_run_id(), None),
                }
            }
        };
        let resumed = resumed_meta.is_some();
        let dir = run_dir(&runs_root, &experiment_id, &run_id);

        let mut metadata = match resumed_meta {
            Some(mut m) => {
                // Ids read from disk are not trusted: the run is where it was found.
                m.experiment_id = experiment_id.clone();
                m.run_id = run_id.clone();
                m.status = RunStatus::Running;
                m.end_time = None;
                m
            }
            None => {
                let mut m = ExperimentMetadata::new(cfg.experiment.name.clone(), hash.clone());
                m.experiment_id = experiment_id.clone();
                m.run_id = run_id.clone();
                m.description = cfg.experiment.description.clone();
                m.tags = cfg.experiment.tags.clone();
                m.version = cfg.experiment.version.clone();
                m
            }
        };
        if self.collect_system_info {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            metadata.system = SystemInfo::collect(&cwd);
        }
        metadata
            .system
            .crate_versions
            .extend(self.crate_versions.clone());

        // Trackers see (and may upload) the config: never its secrets.
        let ctx = RunContext {
            metadata: metadata.clone(),
            config: crate::redact_config(&cfg.document),
            run_dir: dir.clone(),
            resumed,
        };
        let writer = RunWriter::open(&ctx, &cfg.to_toml_string())?;
        let mut cursors = if resumed {
            read_cursors(&dir)?
        } else {
            BTreeMap::new()
        };
        // A cursor past the log (written before the log reached the disk, then a power loss) would
        // make the backend skip the new events that reuse those numbers: clamp it to the log.
        let log_end = writer.last_seq();
        let mut clamped = false;
        for (name, c) in cursors.iter_mut() {
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
            crate::store::write_cursors(&dir, &cursors)?;
        }
        let logged = if resumed {
            crate::store::max_metric_steps(&dir)?
        } else {
            std::collections::HashMap::new()
        };
        let sampler_start = logged.get(crate::sysmetrics::STEP_KEY).map_or(0, |s| s + 1);
        let relogged = if self.skip_relogged_metrics {
            Relogged::new(logged)
        } else {
            None
        };

        let flush_interval = self.flush_interval;
        let mut names = std::collections::BTreeSet::new();
        let mut workers = Vec::new();
        for t in self.trackers {
            let name = t.name().to_owned();
            if name == "local" || !names.insert(name.clone()) {
                return Err(Error::Config(format!(
                    "two trackers are named {name:?} (names must be unique and not \"local\")"
                )));
            }
            let start = cursors.get(&name).copied().unwrap_or(0);
            let w =
                spawn_worker(t, ctx.clone(), start, &writer, flush_interval).map_err(|source| {
                    Error::Io {
                        context: "spawning tracker thread",
                        path: dir.clone(),
                        source,
                    }
                })?;
            workers.push(w);
        }
        let n_trackers = workers.len();

        let capacity = self
            .queue_capacity
            .unwrap_or(cfg.tracking.queue_capacity)
            .max(1);
        let max_bytes = self.queue_bytes.unwrap_or_else(|| {
            usize::try_from(cfg.tracking.queue_capacity_bytes).unwrap_or(usize::MAX)
        });
        let (tx, rx, queue_bytes) = crate::dispatch::Queue::new(capacity, max_bytes);
        let finished = Arc::new(AtomicBool::new(false));
        let finish_timeout = match self.finish_timeout {
            Some(d) => d.min(crate::clock::FOREVER),
            None => secs(
                &cfg,
                "tracking.finish_timeout_secs",
                cfg.tracking.finish_timeout_secs,
            )?,
        };
        let dispatcher = Dispatcher {
            rx,
            queue_bytes,
            writer,
            workers,
            metadata: metadata.clone(),
            config: crate::redact_config(&cfg.document),
            settings: DispatchSettings { finish_timeout },
            store_errors: Vec::new(),
            warned: [false; EventKind::COUNT],
            finished: Arc::clone(&finished),
            last_cursors: cursors,
        };
        let join = std::thread::Builder::new()
            .name("exptrack-dispatch".to_owned())
            .spawn(move || dispatcher.run())
            .map_err(|source| Error::Io {
                context: "spawning dispatcher thread",
                path: dir.clone(),
                source,
            })?;

        let interval = match self.system_metrics {
            Some(d) => Some(d),
            None => match cfg
                .tracking
                .system_metrics_interval_secs
                .filter(|s| *s != 0.0)
            {
                Some(s) => Some(secs(&cfg, "tracking.system_metrics_interval_secs", s)?),
                None => None,
            },
        };
        let interval = interval
            .filter(|d| !d.is_zero())
            .map(|d| d.clamp(crate::sysmetrics::MIN_INTERVAL, crate::clock::FOREVER));
        let sampler = match interval {
            Some(i) => crate::sysmetrics::spawn(tx.clone(), i, sampler_start),
            None => None,
        };

        let inner = Arc::new(Inner {
            tx,
            finished: AtomicBool::new(false),
            finish_lock: Mutex::new(None),
            dispatcher: Mutex::new(Some(join)),
            sampler: Mutex::new(sampler),
            run_dir: dir,
            metadata,
            n_trackers,
            finish_timeout,
            relogged,
        });
        if self.handle_signals {
            signals::register(&inner);
        }
        Ok(ExperimentTracker { inner })
    }
}

/// A validated number of seconds from the config as a `Duration`.
fn secs(cfg: &ExperimentConfig, key: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map(|d| d.min(crate::clock::FOREVER))
        .map_err(|e| cfg.key_error(key, format!("= {v}: {e}")))
}

pub(crate) struct Sampler {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) join: JoinHandle<()>,
}

struct Inner {
    tx: crate::dispatch::Queue,
    finished: AtomicBool,
    finish_lock: Mutex<Option<FinishReport>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    sampler: Mutex<Option<Sampler>>,
    run_dir: PathBuf,
    metadata: ExperimentMetadata,
    n_trackers: usize,
    finish_timeout: Duration,
    relogged: Option<Relogged>,
}

/// Metric steps a resumed run logged before this process: what
/// [`ExperimentTrackerBuilder::skip_relogged_metrics`] drops.
#[derive(Debug)]
struct Relogged {
    /// The highest step over all keys (steps above it need no lookup).
    max_step: u64,
    per_key: std::collections::HashMap<String, u64>,
}

impl Relogged {
    fn new(per_key: std::collections::HashMap<String, u64>) -> Option<Self> {
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

    fn finish(&self, status: RunStatus) -> Result<FinishReport> {
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
/// The handle is `Send + Sync`: share it by reference or in an `Arc`.
pub struct ExperimentTracker {
    inner: Arc<Inner>,
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
        ExperimentTrackerBuilder {
            config,
            trackers: Vec::new(),
            runs_dir: None,
            resume: Resume::Never,
            queue_capacity: None,
            queue_bytes: None,
            finish_timeout: None,
            flush_interval: Duration::from_secs(2),
            handle_signals: cfg!(feature = "signals"),
            system_metrics: None,
            crate_versions: BTreeMap::new(),
            collect_system_info: true,
            skip_relogged_metrics: true,
        }
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
                    return Err(Error::Backend {
                        backend: "flush".to_owned(),
                        message: format!("only {:?} confirmed within {timeout:?}", acked),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Backend {
                backend: "flush".to_owned(),
                message: errors.join("; "),
            })
        }
    }

    /// [`flush_timeout`](Self::flush_timeout) with the finish timeout.
    pub fn flush(&self) -> Result<()> {
        self.flush_timeout(self.inner.finish_timeout)
    }

    /// Ends the run: records `status`, writes `summary.json` (and `results.json` when completed),
    /// closes every tracker, waiting at most the finish timeout for slow ones (their remaining
    /// events stay in the local store; the report says how to sync them).
    pub fn finish(self, status: RunStatus) -> Result<FinishReport> {
        self.inner.finish(status)
    }
}

impl Drop for ExperimentTracker {
    fn drop(&mut self) {
        if !self.inner.finished.load(Ordering::SeqCst) {
            let panicking = std::thread::panicking();
            match self.inner.finish(RunStatus::Failed) {
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

/// Reads width, height and channel count from a PNG's IHDR chunk.
pub fn png_dimensions(png: &[u8]) -> Option<(u32, u32, u8)> {
    const SIG: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    if png.len() < 26 || png[..8] != SIG || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    let channels = match png[25] {
        0 => 1, // grey
        2 => 3, // RGB
        3 => 3, // palette, shown as RGB
        4 => 2, // grey + alpha
        6 => 4, // RGBA
        _ => return None,
    };
    Some((w, h, channels))
}

mod signals {
    use super::*;
    #[cfg(feature = "signals")]
    use std::sync::atomic::AtomicU64;

    static REGISTRY: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
    /// The longest finish timeout of any run registered: how long an exit on a signal waits for
    /// durable work ([`crate::shutdown`]) after the runs are finished.
    #[cfg(feature = "signals")]
    static WAIT_MS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn register(inner: &Arc<Inner>) {
        if let Ok(mut r) = REGISTRY.lock() {
            r.retain(|w| w.strong_count() > 0);
            r.push(Arc::downgrade(inner));
        }
        #[cfg(feature = "signals")]
        {
            let ms = u64::try_from(inner.finish_timeout.as_millis()).unwrap_or(u64::MAX);
            WAIT_MS.fetch_max(ms, Ordering::SeqCst);
        }
        install();
    }

    /// The orderly exit: every open run is finished as killed (which flushes it), then the exit
    /// waits, at most the finish timeout, for durable work in flight (background checkpoint saves
    /// hold a [`crate::shutdown::WorkGuard`]), says what it waited for, and exits with 130.
    #[cfg(feature = "signals")]
    fn shut_down() -> ! {
        let live: Vec<Arc<Inner>> = REGISTRY
            .lock()
            .map(|r| r.iter().filter_map(|w| w.upgrade()).collect())
            .unwrap_or_default();
        for inner in live {
            match inner.finish(RunStatus::Killed) {
                Ok(r) => {
                    eprintln!(
                        "exptrack: interrupted; run marked killed: {}",
                        r.run_dir.display()
                    );
                    for line in r.problem_lines() {
                        eprintln!("exptrack: warning: {line}");
                    }
                }
                Err(e) => eprintln!(
                    "exptrack: interrupted; could not finish the run {}: {e}",
                    inner.run_dir.display()
                ),
            }
        }
        let wait = Duration::from_millis(WAIT_MS.load(Ordering::SeqCst));
        let labels = crate::shutdown::in_flight_labels();
        if !labels.is_empty() {
            eprintln!(
                "exptrack: waiting up to {:.0} s for {} to finish ({}); press Ctrl-C again to exit now",
                wait.as_secs_f64(),
                labels.len(),
                labels.join(", ")
            );
            let started = Instant::now();
            if crate::shutdown::wait_idle(wait) {
                eprintln!(
                    "exptrack: {} finished after {:.1} s",
                    labels.join(", "),
                    started.elapsed().as_secs_f64()
                );
            } else {
                eprintln!(
                    "exptrack: gave up waiting after {:.0} s; still unfinished: {} (an unfinished \
                     checkpoint is never committed: the rerun resumes from the last committed one)",
                    wait.as_secs_f64(),
                    crate::shutdown::in_flight_labels().join(", ")
                );
            }
        }
        std::process::exit(130);
    }

    #[cfg(feature = "signals")]
    fn install() {
        use std::sync::Once;
        static ONCE: Once = Once::new();
        static SIGNALLED: AtomicBool = AtomicBool::new(false);
        ONCE.call_once(|| {
            let res = ctrlc::set_handler(|| {
                if SIGNALLED.swap(true, Ordering::SeqCst) {
                    // A second Ctrl-C / SIGTERM while the first is finishing up: exit now.
                    eprintln!("exptrack: interrupted again; exiting without waiting");
                    std::process::exit(130);
                }
                // On its own thread, so that the handler returns and a second signal reaches it.
                let spawned = std::thread::Builder::new()
                    .name("exptrack-shutdown".to_owned())
                    .spawn(|| shut_down());
                if spawned.is_err() {
                    shut_down();
                }
            });
            if let Err(e) = res {
                tracing::debug!("not installing exptrack's signal handler: {e}");
            }
        });
    }

    #[cfg(not(feature = "signals"))]
    fn install() {}
}
