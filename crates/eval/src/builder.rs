//! [`EvalWatcherBuilder`]: the watcher's settings, validated by [`build`](EvalWatcherBuilder::build).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exptrack_checkpoint::{CheckpointConfig, LoadedCheckpoint, Location, ModelCheckpointer};
use exptrack_core::ExperimentTracker;

use crate::error::{BoxError, Error, Result};
use crate::evaluator::{EvalMetrics, Evaluator, FnEvaluator};
use crate::state::{EvalState, STATE_FILE_NAME, StateLock};
use crate::watcher::{EvalWatcher, Sink};

/// The longest [`poll_interval`](EvalWatcherBuilder::poll_interval) and
/// [`flush_timeout`](EvalWatcherBuilder::flush_timeout) accepted: 30 days. Longer durations
/// are refused by [`build`](EvalWatcherBuilder::build) (they would overflow the clock's
/// arithmetic and mean "never" anyway).
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses an interval given in seconds on a command line (`"2"`, `"0.5"`) into a [`Duration`]:
/// a clear error, never a panic, for anything that is not a finite number in `(0, 30 days]`
/// ([`MAX_INTERVAL`]).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(exptrack_eval::parse_interval_secs("0.5")?, Duration::from_millis(500));
/// assert!(exptrack_eval::parse_interval_secs("inf").is_err());
/// assert!(exptrack_eval::parse_interval_secs("1e30").is_err());
/// assert!(exptrack_eval::parse_interval_secs("-1").is_err());
/// # Ok::<(), exptrack_eval::Error>(())
/// ```
pub fn parse_interval_secs(text: &str) -> Result<Duration> {
    let bad = |why: &str| Error::Config {
        message: format!("interval {text:?} (seconds): {why}"),
    };
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|e: std::num::ParseFloatError| bad(&e.to_string()))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad("must be a finite number of seconds above 0"));
    }
    let d = Duration::try_from_secs_f64(secs).map_err(|e| bad(&e.to_string()))?;
    if d.is_zero() {
        return Err(bad("rounds to zero"));
    }
    if d > MAX_INTERVAL {
        return Err(bad(&format!(
            "longer than the maximum of {} s (30 days)",
            MAX_INTERVAL.as_secs()
        )));
    }
    Ok(d)
}

/// Builds an [`EvalWatcher`]; see [`EvalWatcher::builder`].
#[must_use = "call build() to create the watcher"]
pub struct EvalWatcherBuilder<'t> {
    checkpoint_dir: PathBuf,
    experiment_id: String,
    poll_interval: Duration,
    flush_timeout: Duration,
    max_attempts: u32,
    stop_when_completed: bool,
    datasets: Vec<(String, Box<dyn Evaluator + 't>)>,
    tracker: Option<Sink<'t>>,
    state_file: Option<PathBuf>,
    abort_after_log: Option<u64>,
    /// A URL that did not name an experiment ([`EvalWatcher::builder_url`]), reported by `build`.
    url_error: Option<Error>,
}

impl<'t> EvalWatcherBuilder<'t> {
    pub(crate) fn new(checkpoint_dir: PathBuf, experiment_id: String) -> Self {
        EvalWatcherBuilder {
            checkpoint_dir,
            experiment_id,
            url_error: None,
            poll_interval: crate::DEFAULT_POLL_INTERVAL,
            flush_timeout: crate::DEFAULT_FLUSH_TIMEOUT,
            max_attempts: crate::DEFAULT_MAX_ATTEMPTS,
            stop_when_completed: true,
            datasets: Vec::new(),
            tracker: None,
            state_file: None,
            abort_after_log: None,
        }
    }

    /// A builder for the experiment a URL or path names (its last segment is the experiment
    /// id), split as [`ModelCheckpointer::open_url`] splits it; an invalid one is reported by
    /// [`build`](Self::build).
    pub(crate) fn from_url(url: &str) -> Self {
        match Location::split_experiment(url) {
            Ok((root, id)) => Self::new(root.into(), id),
            Err(source) => {
                let mut b = Self::new(PathBuf::new(), String::new());
                b.url_error = Some(Error::Checkpoint {
                    experiment_id: String::new(),
                    source,
                });
                b
            }
        }
    }
}

impl std::fmt::Debug for EvalWatcherBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalWatcherBuilder")
            .field("checkpoint_dir", &self.checkpoint_dir)
            .field("experiment_id", &self.experiment_id)
            .field("poll_interval", &self.poll_interval)
            .field(
                "datasets",
                &self.datasets.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl<'t> EvalWatcherBuilder<'t> {
    /// How often the checkpoint directory is scanned (default 10 s; at most [`MAX_INTERVAL`],
    /// longer is refused by [`build`](Self::build)).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Adds a named dataset with a closure evaluator. The closure gets the loaded, verified
    /// checkpoint and returns `(metric, value)` pairs (a `Vec`, an array, a map), logged as
    /// `eval/<name>/<metric>`.
    ///
    /// Names must be non-empty, unique, and contain no `/` or whitespace.
    pub fn dataset<F, M, K, E>(mut self, name: impl Into<String>, mut evaluator: F) -> Self
    where
        F: FnMut(&LoadedCheckpoint) -> std::result::Result<M, E> + Send + 't,
        M: IntoIterator<Item = (K, f64)>,
        K: Into<String>,
        E: Into<BoxError>,
    {
        let f = move |c: &LoadedCheckpoint| -> std::result::Result<EvalMetrics, BoxError> {
            evaluator(c)
                .map(|m| m.into_iter().map(|(k, v)| (k.into(), v)).collect())
                .map_err(Into::into)
        };
        self.datasets.push((
            name.into(),
            Box::new(FnEvaluator(f)) as Box<dyn Evaluator + 't>,
        ));
        self
    }

    /// Adds a named dataset with an [`Evaluator`] (for evaluators that keep state).
    pub fn dataset_evaluator(
        mut self,
        name: impl Into<String>,
        evaluator: impl Evaluator + 't,
    ) -> Self {
        self.datasets.push((name.into(), Box::new(evaluator)));
        self
    }

    /// Logs through a borrowed tracker (every backend configured on it gets the metrics).
    pub fn tracker(mut self, tracker: &'t ExperimentTracker) -> Self {
        self.tracker = Some(Sink::Borrowed(tracker));
        self
    }

    /// Logs through a tracker the watcher owns (get it back with
    /// [`EvalWatcher::into_tracker`] to `finish` the run).
    pub fn owned_tracker(mut self, tracker: ExperimentTracker) -> Self {
        self.tracker = Some(Sink::Owned(tracker));
        self
    }

    /// Logs through a tracker shared with other code.
    pub fn shared_tracker(mut self, tracker: Arc<ExperimentTracker>) -> Self {
        self.tracker = Some(Sink::Shared(tracker));
        self
    }

    /// Where the state file lives. The default is `<checkpoint_dir>/<experiment_id>/eval-state.json`
    /// for a local checkpoint directory; for checkpoints in an object store (`s3://...`), which
    /// are not a local directory, it is `<tracker run dir>/eval-state-<experiment_id>.json`, in
    /// the run directory of the tracker the metrics go to (a watcher restarted with the same
    /// run, e.g. `Resume::RunId("async-eval")`, continues from it; one logging to a new run
    /// starts a new state and evaluates every checkpoint for that run). Give each watcher of the
    /// same experiment its own file.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// How long the flush barrier after each step waits for remote backends (default 10 s). The
    /// local store is fsynced first; a backend that does not confirm in time gets the events from
    /// the store's spool later. While backends keep failing, later steps wait at most 1 s.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How many times a step whose loading or evaluation fails is tried (default 3, at least 1)
    /// before it is recorded as failed. Counted per watcher process.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Whether [`run_until`](EvalWatcher::run_until) returns once the training run is completed
    /// (default true). When false only the stop flag ends it.
    pub fn stop_when_completed(mut self, on: bool) -> Self {
        self.stop_when_completed = on;
        self
    }

    /// Fault injection for tests (feature `testing`): abort the process right after the metrics
    /// of `step` are logged and flushed, before the step is recorded in the state file.
    #[cfg(feature = "testing")]
    pub fn abort_after_log(mut self, step: Option<u64>) -> Self {
        self.abort_after_log = step;
        self
    }

    /// Opens the checkpoint directory read-only, takes the state file's lock, loads the state and
    /// recovers steps that were logged but not recorded when a previous watcher died.
    pub fn build(self) -> Result<EvalWatcher<'t>> {
        if let Some(e) = self.url_error {
            return Err(e);
        }
        let config_err = |message: String| Err(Error::Config { message });
        let Some(sink) = self.tracker else {
            return config_err(
                "no tracker: call .tracker(&t), .owned_tracker(t) or .shared_tracker(t)".into(),
            );
        };
        if self.datasets.is_empty() {
            return config_err(
                "no dataset: add at least one with .dataset(name, evaluator)".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (name, _) in &self.datasets {
            if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
                return config_err(format!(
                    "dataset name {name:?} must be non-empty without '/' or whitespace"
                ));
            }
            if !names.insert(name.clone()) {
                return config_err(format!("dataset {name:?} given twice"));
            }
        }
        if self.poll_interval.is_zero() {
            return config_err("poll_interval must be > 0".into());
        }
        for (what, d) in [
            ("poll_interval", self.poll_interval),
            ("flush_timeout", self.flush_timeout),
        ] {
            if d > MAX_INTERVAL {
                return config_err(format!(
                    "{what} of {} s is longer than the maximum of {} s (30 days)",
                    d.as_secs(),
                    MAX_INTERVAL.as_secs()
                ));
            }
        }
        let ckpt_err = |source| Error::Checkpoint {
            experiment_id: self.experiment_id.clone(),
            source,
        };
        let config = CheckpointConfig {
            dir: self.checkpoint_dir.clone(),
            ..CheckpointConfig::default()
        };
        let checkpointer =
            ModelCheckpointer::open_read_only(&self.experiment_id, config).map_err(ckpt_err)?;
        let tracker = sink.get();
        let run_dir = tracker.run_dir().to_path_buf();
        let state_path = match self.state_file {
            Some(path) => path,
            // An object store's location is a URL, not a directory to write into.
            None if checkpointer.is_remote() => {
                run_dir.join(format!("eval-state-{}.json", self.experiment_id))
            }
            None => checkpointer.experiment_dir().join(STATE_FILE_NAME),
        };
        if let Some(parent) = state_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                op: "create directory",
                path: parent.to_owned(),
                source,
            })?;
        }
        let lock = StateLock::acquire(&state_path)?;
        let mut state = match EvalState::load(&state_path)? {
            Some(s) if s.experiment_id != self.experiment_id => {
                return Err(Error::State {
                    path: state_path,
                    message: format!(
                        "it belongs to experiment {:?}, not {:?}",
                        s.experiment_id, self.experiment_id
                    ),
                });
            }
            Some(s) => s,
            None => EvalState::new(&self.experiment_id),
        };
        let new_datasets: Vec<&String> = names
            .iter()
            .filter(|n| !state.datasets.contains(*n))
            .collect();
        if !state.steps.is_empty() && !new_datasets.is_empty() {
            tracing::warn!(
                datasets = ?new_datasets,
                "datasets added after steps were recorded; those steps are not evaluated on them"
            );
        }
        state.datasets.extend(names);

        let run_id = tracker.metadata().run_id.clone();
        if !state.runs.contains(&run_dir) {
            state.runs.push(run_dir.clone());
        }
        let mut watcher = EvalWatcher {
            checkpointer,
            datasets: self.datasets,
            sink,
            state,
            state_path,
            _lock: lock,
            run_dir,
            run_id,
            poll_interval: self.poll_interval,
            flush_timeout: self.flush_timeout,
            max_attempts: self.max_attempts,
            stop_when_completed: self.stop_when_completed,
            attempts: BTreeMap::new(),
            warned_unreadable: BTreeSet::new(),
            recovered: Vec::new(),
            abort_after_log: self.abort_after_log,
            backend_degraded: false,
            pruned_unseen: 0,
            experiment_id: self.experiment_id,
        };
        watcher.recover()?;
        watcher.state.save(&watcher.state_path)?;
        Ok(watcher)
    }
}
