//! [`Experiment`]: one config file in, everything a training program needs out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use exptrack_checkpoint::{CheckpointConfig, Location, ModelCheckpointer};
use exptrack_core::{
    ExperimentConfig, ExperimentTracker, FinishReport, Resume, RunStatus, Tracker, TrackingSection,
};
use exptrack_trainer::burn::tensor::Device;
use exptrack_trainer::{BatchSource, TrainModel, TrainingConfig, TrainingManager, TrainingResult};

use crate::facade_error::{FacadeError, Result};

/// An experiment read from its config, once: `[experiment]` (the identity), `[tracking]` (the
/// backends), `[checkpointing]` and `[training]`. [`start`](Self::start) either reports that the
/// experiment already completed, or opens everything a run needs: the tracker with every backend
/// `[tracking]` switches on, the checkpointer for the experiment id and a
/// [`TrainingManager`] wired to both, which resumes from the newest checkpoint.
///
/// ```
/// use exptrack::trainer::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
/// use exptrack::{Experiment, Start};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tmp = tempfile::tempdir()?;
/// let config = r#"
///     [experiment]
///     name = "doc-example"
///     [tracking]
///     use_tensorboard = false
///     [training]
///     num_epochs = 1
///     progress = false
/// "#;
/// let experiment = Experiment::from_toml(config)?.runs_dir(tmp.path());
/// let mut run = match experiment.start()? {
///     Start::Completed(done) => {
///         println!("{done}");
///         return Ok(());
///     }
///     Start::Train(run) => run,
/// };
/// let (train, valid) = generate_dataset(256, 64, 1)?;
/// let model = Mlp::new(FEATURES, 32, CLASSES, run.device());
/// let (_model, result) = run.fit(model, &train, &valid)?;
/// let report = run.finish(&result)?;
/// assert!(report.is_complete());
/// // The same config again: already completed.
/// let again = Experiment::from_toml(config)?.runs_dir(tmp.path()).start()?;
/// assert!(matches!(again, Start::Completed(_)));
/// # Ok(()) }
/// ```
pub struct Experiment {
    config: ExperimentConfig,
    training: TrainingConfig,
    checkpointing: CheckpointConfig,
    runs_dir: Option<PathBuf>,
    trackers: Vec<Box<dyn Tracker>>,
}

impl std::fmt::Debug for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiment")
            .field("config", &self.config)
            .field("training", &self.training)
            .field("checkpointing", &self.checkpointing)
            .field("runs_dir", &self.runs_dir)
            .field("extra_trackers", &self.trackers.len())
            .finish()
    }
}

impl Experiment {
    /// Reads an experiment config file (TOML). Errors name the file, line and key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(ExperimentConfig::from_file(path)?)
    }

    /// Reads an experiment config from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_config(ExperimentConfig::parse(
            text,
            "experiment config (TOML text)",
        )?)
    }

    /// An experiment from a parsed config: its `[training]` and `[checkpointing]` sections are
    /// read (and checked) here.
    pub fn from_config(config: ExperimentConfig) -> Result<Self> {
        let training = TrainingConfig::from_experiment(&config)?;
        let checkpointing = match config.section("checkpointing") {
            Some(t) => CheckpointConfig::from_table(t)?,
            None => CheckpointConfig::default(),
        };
        check_store_compiled(&checkpointing)?;
        Ok(Experiment {
            config,
            training,
            checkpointing,
            runs_dir: None,
            trackers: Vec::new(),
        })
    }

    /// Restart the experiment from scratch even when it completed or has checkpoints (they are
    /// archived under the checkpoint directory), in a new run. Typically from a `--force` flag.
    pub fn force(mut self, force: bool) -> Self {
        self.checkpointing.force = force;
        self
    }

    /// Puts the local run store in `dir` and the checkpoints in `dir/checkpoints` (instead of
    /// `[tracking].runs_dir` and a local `[checkpointing].dir`). Checkpoints in object storage
    /// (`[checkpointing] dir = "s3://..."`) stay there: only local directories move.
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        if !Location::from_dir(&self.checkpointing.dir).is_ok_and(|l| l.is_remote()) {
            self.checkpointing.dir = dir.join("checkpoints");
        }
        self.runs_dir = Some(dir);
        self
    }

    /// Adds a tracker besides those `[tracking]` switches on.
    pub fn with_tracker(mut self, tracker: Box<dyn Tracker>) -> Self {
        self.trackers.push(tracker);
        self
    }

    /// The whole config.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }

    /// `[tracking]`, to switch backends on or off before [`start`](Self::start) (e.g. from
    /// command-line flags). It is not part of the experiment id unless `hash_exclude` says so.
    pub fn tracking_mut(&mut self) -> &mut TrackingSection {
        &mut self.config.tracking
    }

    /// `[training]`.
    pub fn training(&self) -> &TrainingConfig {
        &self.training
    }

    /// `[training]`, to adjust before [`start`](Self::start) (e.g. `progress = false`).
    pub fn training_mut(&mut self) -> &mut TrainingConfig {
        &mut self.training
    }

    /// `[checkpointing]` (with [`force`](Self::force) and [`runs_dir`](Self::runs_dir) applied).
    pub fn checkpointing(&self) -> &CheckpointConfig {
        &self.checkpointing
    }

    /// The experiment id: `[experiment].id`, or `{name}-{12 hex of the config hash}`.
    pub fn id(&self) -> String {
        self.config.experiment_id()
    }

    /// Where the local run store goes.
    pub fn runs_root(&self) -> &Path {
        self.runs_dir
            .as_deref()
            .unwrap_or(&self.config.tracking.runs_dir)
    }

    /// How the tracker picks its run: a forced experiment starts a new run, otherwise the latest
    /// unfinished run of the experiment (an interrupted one) is continued.
    pub fn resume(&self) -> Resume {
        if self.checkpointing.force {
            Resume::Never
        } else {
            Resume::LatestUnfinished
        }
    }

    /// Opens the checkpointer for the experiment id; then either reports that the experiment
    /// completed before (unless [`force`](Self::force)d), or validates `[training]` (device and
    /// precision included), opens the tracker with its backends and returns the [`Run`].
    pub fn start(self) -> Result<Start> {
        let id = self.id();
        let resume = self.resume();
        let runs_root = self.runs_root().to_path_buf();
        let Experiment {
            config,
            training,
            checkpointing,
            trackers,
            ..
        } = self;
        let checkpointer = ModelCheckpointer::open(&id, checkpointing)?;
        let checkpoint_dir = checkpointer.experiment_dir().to_path_buf();
        if !checkpointer.config().force
            && let Some(results) = checkpointer.completed_results()?
        {
            return Ok(Start::Completed(Completed {
                experiment_id: id,
                checkpoint_dir,
                results,
            }));
        }
        let manager = TrainingManager::new(training)?;
        let mut builder = crate::tracker(config)?.runs_dir(runs_root).resume(resume);
        for t in trackers {
            builder = builder.with_tracker(t);
        }
        let tracker = builder.build()?;
        let manager = manager
            .with_sink(Arc::new(tracker.clone()))
            .with_checkpointer(checkpointer);
        Ok(Start::Train(Run {
            manager,
            tracker,
            experiment_id: id,
            checkpoint_dir,
        }))
    }
}

/// `[checkpointing].dir` in object storage needs the facade's feature for its scheme (`s3`,
/// `gcs`, `azure`; any of them for `memory://`), whatever the checkpointer was compiled with, so
/// a program behaves the same in and out of a workspace that enables more.
fn check_store_compiled(checkpointing: &CheckpointConfig) -> Result<()> {
    let location = Location::from_dir(&checkpointing.dir)?;
    let (Some(scheme), Some(needed)) = (location.scheme(), location.feature()) else {
        return Ok(());
    };
    let (compiled, feature) = match needed {
        "s3" => (cfg!(feature = "s3"), "s3"),
        "gcs" => (cfg!(feature = "gcs"), "gcs"),
        "azure" => (cfg!(feature = "azure"), "azure"),
        _ => (
            cfg!(any(feature = "s3", feature = "gcs", feature = "azure")),
            "s3",
        ),
    };
    if compiled {
        Ok(())
    } else {
        Err(FacadeError::StoreNotCompiled {
            scheme: scheme.to_owned(),
            feature,
        })
    }
}

/// What [`Experiment::start`] found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one value per program
pub enum Start {
    /// The experiment completed before; nothing to train.
    Completed(Completed),
    /// Train (resuming from the newest checkpoint, if any).
    Train(Run),
}

/// An experiment that completed before.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The experiment id.
    pub experiment_id: String,
    /// Its checkpoint directory.
    pub checkpoint_dir: PathBuf,
    /// The results stored when it completed (for the training manager: its [`TrainingResult`]).
    pub results: serde_json::Value,
}

impl Completed {
    /// The results as the training manager stored them, if it did.
    pub fn training_result(&self) -> Option<TrainingResult> {
        let mut result: TrainingResult = serde_json::from_value(self.results.clone()).ok()?;
        result.already_completed = true;
        Some(result)
    }
}

impl std::fmt::Display for Completed {
    /// `experiment `ID` already completed (checkpoints in DIR): valid/accuracy 0.9712, ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "experiment `{}` already completed (checkpoints in {})",
            self.experiment_id,
            self.checkpoint_dir.display()
        )?;
        let Some(r) = self.training_result() else {
            return Ok(());
        };
        let metrics: Vec<String> = r
            .final_metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        if !metrics.is_empty() {
            write!(f, ": {}", metrics.join(", "))?;
        }
        match (r.best_metric, r.best_epoch) {
            (Some(m), Some(e)) => write!(f, ", best {} {m:.4} at epoch {}", r.monitor, e + 1),
            (Some(m), None) => write!(f, ", best {} {m:.4}", r.monitor),
            _ => Ok(()),
        }
    }
}

/// One run of an experiment: the tracker (local store plus backends), the checkpointer and the
/// training manager wired to both. [`fit`](Self::fit) trains (resuming from the newest
/// checkpoint); [`finish`](Self::finish) closes the run. Dropped without `finish` (an error, a
/// panic), the run is marked failed in every backend.
pub struct Run {
    manager: TrainingManager,
    tracker: ExperimentTracker,
    experiment_id: String,
    checkpoint_dir: PathBuf,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("experiment_id", &self.experiment_id)
            .field("run_dir", &self.tracker.run_dir())
            .field("checkpoint_dir", &self.checkpoint_dir)
            .field("manager", &self.manager)
            .finish()
    }
}

impl Run {
    /// The training device: create the model on it.
    pub fn device(&self) -> &Device {
        self.manager.device()
    }

    /// The tracker, for anything else the program logs (results, artifacts, text).
    pub fn tracker(&self) -> &ExperimentTracker {
        &self.tracker
    }

    /// The training manager (its config, [`validate`](TrainingManager::validate)).
    pub fn manager(&self) -> &TrainingManager {
        &self.manager
    }

    /// The checkpointer of the experiment (always present in a `Run`).
    pub fn checkpointer(&self) -> Option<&ModelCheckpointer> {
        self.manager.checkpointer()
    }

    /// The experiment id.
    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// The run directory in the local store.
    pub fn run_dir(&self) -> &Path {
        self.tracker.run_dir()
    }

    /// The experiment's checkpoint directory.
    pub fn checkpoint_dir(&self) -> &Path {
        &self.checkpoint_dir
    }

    /// The resume decision: the step of the newest committed checkpoint, which
    /// [`fit`](Self::fit) continues from (after verifying it, falling back to an older one if it
    /// is corrupt); `None` for a fresh start.
    pub fn resumes_from(&self) -> Option<u64> {
        self.checkpointer()
            .and_then(ModelCheckpointer::latest)
            .map(|c| c.step)
    }

    /// Stops (as if killed) right after the checkpoint at optimizer step `step`
    /// ([`TrainingManager::stop_after_step`]).
    pub fn stop_after_step(mut self, step: u64) -> Self {
        self.manager = self.manager.stop_after_step(step);
        self
    }

    /// Trains `model` ([`TrainingManager::fit`]): resumes from the newest valid checkpoint,
    /// logs to every backend, checkpoints, and marks the experiment completed at the end.
    pub fn fit<M, S>(&mut self, model: M, train: &S, valid: &S) -> Result<(M, TrainingResult)>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        Ok(self.manager.fit(model, train, valid)?)
    }

    /// Closes the run as completed, or as killed when `result` was interrupted (rerun to
    /// resume); waits for background checkpoint saves. The report says what each backend got.
    pub fn finish(self, result: &TrainingResult) -> Result<FinishReport> {
        self.finish_as(if result.interrupted {
            RunStatus::Killed
        } else {
            RunStatus::Completed
        })
    }

    /// Closes the run with `status` (e.g. [`RunStatus::Failed`] after an error).
    pub fn finish_as(self, status: RunStatus) -> Result<FinishReport> {
        let Run {
            manager, tracker, ..
        } = self;
        // Dropping the manager (which holds a clone of the tracker as its sink) waits for the
        // checkpointer's background saves, so the report covers their events.
        drop(manager);
        Ok(tracker.finish(status)?)
    }
}
