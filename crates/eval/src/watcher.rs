//! [`EvalWatcher`]: polls an experiment's checkpoints and evaluates each committed one once.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use exptrack_checkpoint::ModelCheckpointer;
use exptrack_core::fsutil::now_ms;
use exptrack_core::store::RunReader;
use exptrack_core::{Event, ExperimentTracker};

use crate::builder::EvalWatcherBuilder;
use crate::error::{Error, Result};
use crate::evaluator::Evaluator;
use crate::outcome::{Evaluated, Outcome, RunSummary, StopReason};
use crate::state::{EvalState, RecordKind, StateLock, StepRecord};

mod process;
mod recover;

/// Default poll interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Default time a flush barrier waits for remote backends before the watcher moves on.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Flush wait used while the previous flush was not confirmed by every backend.
const DEGRADED_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The metric logged with each evaluation once checkpoints were removed before they could be
/// evaluated: [`EvalWatcher::removed_before_evaluation`] at that moment.
pub const SKIPPED_PRUNED_METRIC: &str = "eval/skipped_pruned";
/// Default number of attempts for a checkpoint whose loading or evaluation fails.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Where the metrics go: a borrowed, owned or shared [`ExperimentTracker`].
pub(crate) enum Sink<'t> {
    Borrowed(&'t ExperimentTracker),
    Owned(ExperimentTracker),
    Shared(Arc<ExperimentTracker>),
}

impl Sink<'_> {
    pub(crate) fn get(&self) -> &ExperimentTracker {
        match self {
            Sink::Borrowed(t) => t,
            Sink::Owned(t) => t,
            Sink::Shared(t) => t,
        }
    }
}

/// Watches an experiment's checkpoint directory and evaluates every newly committed checkpoint
/// once, on every configured dataset, logging `eval/<dataset>/<metric>` at the checkpoint's step
/// through an [`ExperimentTracker`] (so through every backend configured on it).
///
/// # Guarantees
/// - **Each committed checkpoint is evaluated and logged once.** For every step the watcher
///   (1) takes a reader [`Lease`](exptrack_checkpoint::Lease), (2) loads and verifies it, (3) runs
///   every evaluator, (4) logs all `eval/*` values of that step as *one* metrics event, (5) flushes
///   the tracker (the local store's `events.jsonl` is fsynced first), (6) records the step in the
///   state file (atomic replace), (7) releases the lease. A watcher killed before (4) reached the
///   store evaluates the step again after a restart and logs it once; one killed between (4) and
///   (6) finds the step's event in the run log on restart (every run it ever logged to is listed in
///   the state file and scanned) and records it without evaluating again. So the local store holds
///   exactly one `eval/*` event per evaluated step; remote backends receive what the store holds
///   through the core's spool and cursors (exactly once unless the core itself crashes between a
///   backend's flush and its cursor update).
/// - **None missed.** Steps are evaluated oldest first. A checkpoint that retention deletes
///   after it was listed and before its lease was taken is reported as
///   [`Outcome::MissedByRetention`] (a warning) and recorded; one that is created and deleted
///   entirely while no watcher is running cannot be seen by anyone.
/// - **Retention never deletes a checkpoint under evaluation** (the lease; also across
///   processes). After the lease is dropped, the trainer's next save may prune it.
/// - **Bad checkpoints do not stop it.** Uncommitted saves are invisible (the checkpointer commits
///   by rename); corrupt ones are recorded as [`Outcome::Corrupt`] and never retried; load or
///   evaluator errors (and panics) are retried up to
///   [`max_attempts`](EvalWatcherBuilder::max_attempts) and then recorded as
///   [`Outcome::Failed`].
/// - **Backend outages do not stop it**: logging only enqueues; a flush that a remote backend does
///   not confirm within the flush timeout is a warning once the event is in the local store.
/// - **One watcher per state file** (an OS lock, released when the process dies).
///
/// ```
/// use std::time::Duration;
/// use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};
/// use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
/// use exptrack_eval::{EvalWatcher, BoxError};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tmp = tempfile::tempdir()?;
/// # let ckpt_dir = tmp.path().join("checkpoints");
/// // Training side (normally another process).
/// let config = CheckpointConfig { dir: ckpt_dir.clone(), ..CheckpointConfig::default() };
/// let mut ckpt = ModelCheckpointer::open("exp", config)?;
/// for step in [100, 200] {
///     ckpt.save(Checkpoint::new(step).file("model.bin", vec![step as u8; 16]))?;
/// }
/// ckpt.mark_completed(serde_json::json!({}))?;
///
/// // Evaluation side.
/// let tracker = ExperimentTracker::builder(ExperimentConfig::named("exp-eval"))
///     .runs_dir(tmp.path().join("runs"))
///     .handle_signals(false)
///     .build()?;
/// let mut watcher = EvalWatcher::builder(&ckpt_dir, "exp")
///     .poll_interval(Duration::from_millis(50))
///     .dataset("valid", |c: &exptrack_checkpoint::LoadedCheckpoint| {
///         let weights = c.file("model.bin").ok_or("no model.bin")?;
///         let accuracy = f64::from(weights[0]) / 255.0;
///         Ok::<_, BoxError>([("accuracy", accuracy), ("loss", 1.0 - accuracy)])
///     })
///     .tracker(&tracker)
///     .build()?;
/// let summary = watcher.run()?; // returns once training is completed and all is evaluated
/// assert_eq!(summary.evaluated_steps(), [100, 200]);
/// drop(watcher);
/// tracker.finish(RunStatus::Completed)?;
/// # Ok(()) }
/// ```
pub struct EvalWatcher<'t> {
    pub(crate) checkpointer: ModelCheckpointer,
    pub(crate) datasets: Vec<(String, Box<dyn Evaluator + 't>)>,
    pub(crate) sink: Sink<'t>,
    pub(crate) state: EvalState,
    pub(crate) state_path: PathBuf,
    pub(crate) _lock: StateLock,
    pub(crate) run_dir: PathBuf,
    pub(crate) run_id: String,
    pub(crate) experiment_id: String,
    pub(crate) poll_interval: Duration,
    pub(crate) flush_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) stop_when_completed: bool,
    pub(crate) attempts: BTreeMap<u64, u32>,
    pub(crate) warned_unreadable: BTreeSet<String>,
    pub(crate) recovered: Vec<u64>,
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) abort_after_log: Option<u64>,
    pub(crate) backend_degraded: bool,
    /// Checkpoints removed before any scan listed them, counted since this watcher was built.
    pub(crate) pruned_unseen: u64,
}

impl std::fmt::Debug for EvalWatcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalWatcher")
            .field("experiment_id", &self.experiment_id)
            .field("checkpoints", &self.checkpointer.experiment_dir())
            .field(
                "datasets",
                &self.datasets.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("run_dir", &self.run_dir)
            .field("state_file", &self.state_path)
            .field("recorded_steps", &self.state.steps.len())
            .finish_non_exhaustive()
    }
}

/// Steps (and their `created_ms`) still to be dealt with, oldest first.
type Candidates = Vec<(u64, Option<i64>)>;

impl<'t> EvalWatcher<'t> {
    /// Starts building a watcher for the checkpoints of `experiment_id` under `checkpoint_dir`
    /// (the checkpointer's `dir`; checkpoints are in `<checkpoint_dir>/<experiment_id>/`).
    pub fn builder(
        checkpoint_dir: impl Into<PathBuf>,
        experiment_id: impl Into<String>,
    ) -> EvalWatcherBuilder<'t> {
        EvalWatcherBuilder::new(checkpoint_dir.into(), experiment_id.into())
    }

    /// Starts building a watcher for the experiment a URL or path names, the way
    /// [`ModelCheckpointer::open_url`] takes it: `s3://bucket/prefix/<experiment_id>` (feature
    /// `s3`; also `gs://`, `az://` with `gcs`, `azure`), `file:///data/ckpt/<experiment_id>` or
    /// a plain path `checkpoints/<experiment_id>`. The last segment is the experiment id.
    /// Credentials and endpoint come from the provider's environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...), never from the URL. A URL that names no
    /// experiment, or whose scheme's feature is not enabled, is an error from
    /// [`build`](EvalWatcherBuilder::build).
    ///
    /// The default state file of an object-store location is local, in the tracker's run
    /// directory (see [`state_file`](EvalWatcherBuilder::state_file)).
    ///
    /// ```
    /// use exptrack_eval::{EvalWatcher, Error};
    /// // No experiment id after the bucket: refused (before anything is opened).
    /// let refused = EvalWatcher::builder_url("s3://bucket").build();
    /// assert!(matches!(refused, Err(Error::Checkpoint { .. })));
    /// ```
    pub fn builder_url(url: &str) -> EvalWatcherBuilder<'t> {
        EvalWatcherBuilder::from_url(url)
    }

    /// The tracker the metrics go to.
    pub fn tracker(&self) -> &ExperimentTracker {
        self.sink.get()
    }

    /// Gives back the tracker when it was passed with
    /// [`owned_tracker`](EvalWatcherBuilder::owned_tracker) (None otherwise), e.g. to `finish` it.
    pub fn into_tracker(self) -> Option<ExperimentTracker> {
        match self.sink {
            Sink::Owned(t) => Some(t),
            Sink::Borrowed(_) | Sink::Shared(_) => None,
        }
    }

    /// The state file's path.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The state as recorded so far.
    pub fn state(&self) -> &EvalState {
        &self.state
    }

    /// Steps found logged in the run log but not recorded when this watcher started (a previous
    /// watcher died between logging and recording); they were recorded without re-evaluation.
    pub fn recovered(&self) -> &[u64] {
        &self.recovered
    }

    /// True when the training run has been marked completed (the checkpointer's completion
    /// marker).
    pub fn training_completed(&self) -> bool {
        self.checkpointer.is_completed()
    }

    /// Scans the checkpoint directory once and deals with every committed checkpoint not yet
    /// recorded, oldest first. Returns what happened to each (empty when there was nothing new).
    pub fn poll_once(&mut self) -> Result<Vec<Evaluated>> {
        self.poll(None)
    }

    /// Polls every [`poll_interval`](EvalWatcherBuilder::poll_interval) until the training run is
    /// completed and every checkpoint committed before that was dealt with (unless
    /// [`stop_when_completed`](EvalWatcherBuilder::stop_when_completed) is off), or until `stop`
    /// is set (checked between steps and while sleeping; a step in progress is finished first).
    pub fn run_until(&mut self, stop: &AtomicBool) -> Result<RunSummary> {
        let mut steps = Vec::new();
        let unseen_before = self.pruned_unseen;
        loop {
            // Sampled before the scan: everything committed before the marker is then listed.
            let completed = self.stop_when_completed && self.checkpointer.is_completed();
            steps.extend(self.poll(Some(stop))?);
            if stop.load(Ordering::SeqCst) {
                return Ok(RunSummary {
                    reason: StopReason::Stopped,
                    steps,
                    pruned_unseen: self.pruned_unseen - unseen_before,
                });
            }
            if completed && self.attempts.is_empty() {
                let summary = RunSummary {
                    reason: StopReason::TrainingCompleted,
                    steps,
                    pruned_unseen: self.pruned_unseen - unseen_before,
                };
                if summary.removed_before_evaluation() > 0 {
                    tracing::warn!(
                        experiment = %self.experiment_id,
                        "training completed; watcher stops: {}",
                        summary.describe()
                    );
                } else {
                    tracing::info!(
                        experiment = %self.experiment_id,
                        "training completed; watcher stops: {}",
                        summary.describe()
                    );
                }
                return Ok(summary);
            }
            // The builder caps the interval; measure elapsed time anyway, so no interval can
            // overflow the clock's arithmetic.
            let slept_from = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let left = self.poll_interval.saturating_sub(slept_from.elapsed());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(25)));
            }
        }
    }

    /// [`run_until`](Self::run_until) with a flag that is never set: returns when training is
    /// completed.
    pub fn run(&mut self) -> Result<RunSummary> {
        self.run_until(&AtomicBool::new(false))
    }

    fn ckpt_err(&self, source: exptrack_checkpoint::Error) -> Error {
        Error::Checkpoint {
            experiment_id: self.experiment_id.clone(),
            source,
        }
    }

    fn track_err(&self, source: exptrack_core::Error) -> Error {
        Error::Tracking {
            run_id: self.run_id.clone(),
            source,
        }
    }

    fn poll(&mut self, stop: Option<&AtomicBool>) -> Result<Vec<Evaluated>> {
        self.checkpointer.refresh().map_err(|e| self.ckpt_err(e))?;
        self.count_unseen()?;
        let candidates = self.candidates();
        let mut out = Vec::new();
        // A step that failed an attempt and is no longer listed was pruned in between.
        let stale: Vec<u64> = self
            .attempts
            .keys()
            .filter(|s| !candidates.iter().any(|(c, _)| c == *s))
            .copied()
            .collect();
        for step in stale {
            if self.state.steps.contains_key(&step) {
                self.attempts.remove(&step);
            } else {
                out.push(self.missed(step, None)?);
            }
        }
        for (step, created_ms) in candidates {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                break;
            }
            out.push(self.process(step, created_ms)?);
        }
        Ok(out)
    }

    /// Counts the checkpoints committed since the last scan that this scan no longer lists (gaps
    /// in the checkpointer's commit numbers): removed by retention (or replaced by a new save of
    /// their step) before the watcher could see them.
    fn count_unseen(&mut self) -> Result<()> {
        let seqs: Vec<u64> = self
            .checkpointer
            .list()
            .iter()
            .filter_map(|i| i.commit_seq)
            .collect();
        let Some(&max) = seqs.iter().max() else {
            return Ok(());
        };
        let last = match self.state.last_commit_seq {
            Some(last) => last,
            // A state file from before the counter: what happened before is unknown; count from
            // here on.
            None if !self.state.steps.is_empty() => max,
            None => 0,
        };
        if self.state.last_commit_seq == Some(max) {
            return Ok(());
        }
        let listed_new = seqs.iter().filter(|s| **s > last).count() as u64;
        let gone = max.saturating_sub(last).saturating_sub(listed_new);
        self.state.last_commit_seq = Some(max.max(last));
        if gone > 0 {
            self.state.pruned_unseen += gone;
            self.pruned_unseen += gone;
            tracing::warn!(
                experiment = %self.experiment_id,
                count = gone,
                total = self.removed_before_evaluation(),
                "checkpoints were removed by retention before the watcher could see them \
                 (evaluation is slower than checkpointing, or the watcher was down); raise \
                 max_checkpoints or poll more often"
            );
        }
        self.state.save(&self.state_path)
    }

    /// Every checkpoint of the experiment that was removed before this watcher (or an earlier
    /// one with the same state file) could evaluate it: those deleted between a scan and the
    /// lease ([`Outcome::MissedByRetention`]) and those committed and removed between two scans
    /// (counted from the gaps in the checkpointer's commit numbers; checkpoints written before
    /// the counter existed are not counted). Logged as `eval/skipped_pruned` with each
    /// evaluation once it is above 0.
    pub fn removed_before_evaluation(&self) -> u64 {
        let missed = self
            .state
            .steps
            .values()
            .filter(|r| r.kind == RecordKind::MissedByRetention)
            .count() as u64;
        missed + self.state.pruned_unseen
    }

    fn candidates(&mut self) -> Candidates {
        let mut out: BTreeMap<u64, Option<i64>> = BTreeMap::new();
        for info in self.checkpointer.list() {
            let known = self.state.steps.get(&info.step);
            match known {
                None => {
                    out.insert(info.step, Some(info.created_ms));
                }
                Some(r) if r.created_ms.is_some_and(|c| c != info.created_ms) => {
                    tracing::info!(
                        step = info.step,
                        "checkpoint step was saved again since it was recorded; evaluating the new save"
                    );
                    out.insert(info.step, Some(info.created_ms));
                }
                Some(_) => {}
            }
        }
        // Committed directories whose checkpoint.json does not parse: the lease + load below
        // decides whether they are corrupt or were just being deleted.
        for name in self.checkpointer.reconcile_report().unreadable {
            let Some(step) = name
                .strip_prefix("ckpt-")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                if self.warned_unreadable.insert(name.clone()) {
                    tracing::warn!(dir = %name, "unreadable checkpoint directory ignored");
                }
                continue;
            };
            if !self.state.steps.contains_key(&step) {
                out.entry(step).or_insert(None);
            }
        }
        out.into_iter().collect()
    }
}

fn is_corrupt(e: &exptrack_checkpoint::Error) -> bool {
    use exptrack_checkpoint::Error as CkErr;
    e.is_corruption() || matches!(e, CkErr::Json { .. } | CkErr::NoSuchFile { .. })
}
