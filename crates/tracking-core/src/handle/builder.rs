//! [`ExperimentTrackerBuilder`]: which run to open, which trackers, the queue and timeouts; and
//! `build`, which opens the run directory and starts the dispatcher and the workers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ExperimentConfig;
use crate::dispatch::{DispatchSettings, Dispatcher, spawn_worker};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::metadata::{ExperimentMetadata, RunStatus, SystemInfo, check_component, new_run_id};
use crate::store::{CursorFile, RunWriter, list_runs, run_dir};
use crate::tracker::{RunContext, Tracker};

use super::experiment::{ExperimentTracker, Inner, Relogged};
use super::signals;

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
    /// The defaults ([`ExperimentTracker::builder`]).
    pub(super) fn new(config: ExperimentConfig) -> Self {
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
        // Read, and clamped to the log, by their one owner (also used by `sync_run`).
        let cursors = if resumed {
            CursorFile::open(&dir, writer.last_seq())?
        } else {
            CursorFile::new_run(&dir)
        };
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
            let start = cursors.get(&name);
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
            cursors,
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
