//! Evaluation of the burn quickstart's checkpoints, shared by the `async_eval` example
//! (`examples/async_eval/main.rs`) and its end-to-end test (`tests/async_eval.rs`).
//!
//! Everything that has to agree with the training side comes from the same
//! [`Experiment`](exptrack::Experiment) as [`exptrack::quickstart::run`] builds: the config (a
//! file or [`DEFAULT_CONFIG`](exptrack::quickstart::DEFAULT_CONFIG)), the experiment id, the
//! runs directory and the checkpoint directory (`[checkpointing].dir`, or `<runs dir>/checkpoints`
//! when a runs directory is given), the `[quickstart]` sizes and the seed of the dataset.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use exptrack::quickstart::{
    CLASSES, FEATURES, Mlp, QuickstartArgs, QuickstartSizes, generate_dataset,
};
use exptrack::{ExperimentConfig, ExperimentTracker, ExperimentTrackerBuilder, Resume};
use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_checkpoint::burn_support::MODEL_FILE;
use exptrack_eval::{BoxError, EvalWatcher, Evaluated, Outcome};
use exptrack_trainer::burn::tensor::{Device, FloatDType};
use exptrack_trainer::data::{BatchContext, BatchSource, ClassificationData};
use exptrack_trainer::device::parse_device;

/// The run of the quickstart's experiment the evaluator logs to; a restarted evaluator
/// continues it.
pub const EVAL_RUN_ID: &str = "async-eval";

/// The out-of-distribution set is the validation set with this added to every feature
/// (a covariate shift of one noise standard deviation per feature).
pub const OOD_SHIFT: f32 = 1.0;

/// Items per forward pass.
const EVAL_BATCH: usize = 1024;

/// Where the quickstart described by one config trains, checkpoints and logs.
#[derive(Debug, Clone)]
pub struct QuickstartTarget {
    /// The experiment config (the file, or the built-in default).
    pub config: ExperimentConfig,
    /// The experiment id (checkpoints are in `<checkpoint_dir>/<experiment_id>/`).
    pub experiment_id: String,
    /// The checkpointer's directory (`[checkpointing].dir`).
    pub checkpoint_dir: PathBuf,
    /// The root of the local run store.
    pub runs_dir: PathBuf,
    /// `[quickstart].train_items`.
    pub train_items: usize,
    /// `[quickstart].valid_items`.
    pub valid_items: usize,
    /// `[quickstart].hidden`.
    pub hidden: usize,
    /// `[training].seed`.
    pub seed: u64,
}

impl QuickstartTarget {
    /// Resolves `config` (None: the built-in config) and an optional runs directory override
    /// the way the quickstart's `run` does.
    pub fn resolve(config: Option<&Path>, runs_dir: Option<&Path>) -> Result<Self, BoxError> {
        let experiment = QuickstartArgs {
            config: config.map(Path::to_path_buf),
            runs_dir: runs_dir.map(Path::to_path_buf),
            ..QuickstartArgs::default()
        }
        .experiment()?;
        let sizes = QuickstartSizes::from_config(experiment.config())?;
        Ok(QuickstartTarget {
            experiment_id: experiment.id(),
            checkpoint_dir: experiment.checkpointing().dir.clone(),
            runs_dir: experiment.runs_root().to_path_buf(),
            train_items: sizes.train_items,
            valid_items: sizes.valid_items,
            hidden: sizes.hidden,
            seed: experiment.training().seed,
            config: experiment.config().clone(),
        })
    }

    /// The experiment id of the evaluation run: `<experiment_id>-eval`.
    ///
    /// Not the training's own id: the quickstart resumes the newest *unfinished* run of its
    /// experiment id (`Resume::LatestUnfinished`), and a running evaluator's run is unfinished,
    /// so a training (re)started while the evaluator runs would write into the evaluator's run
    /// (two processes appending to one event log corrupts it). The experiment *name* stays the
    /// same, so backends that group by name (MLflow, W&B) show both runs together.
    pub fn eval_experiment_id(&self) -> String {
        format!("{}-eval", self.experiment_id)
    }

    /// A tracker builder for the evaluation run: every backend the config switches on, the same
    /// runs directory and experiment name, experiment id [`Self::eval_experiment_id`], run id
    /// [`EVAL_RUN_ID`] (continued when it exists).
    pub fn eval_tracker(&self) -> Result<ExperimentTrackerBuilder, BoxError> {
        let mut config = self.config.clone();
        config.experiment.id = Some(self.eval_experiment_id());
        Ok(exptrack::tracker(config)?
            .runs_dir(&self.runs_dir)
            .resume(Resume::RunId(EVAL_RUN_ID.to_owned())))
    }

    /// A tracker builder that logs **into the newest training run** of this experiment (issue 16
    /// §3) instead of a run of its own: its own local log under
    /// `<training run>/companions/<experiment_id>/async-eval/` (two processes never share one
    /// event log; `exptrack runs show` / `plot` of the training run include it), a second
    /// TensorBoard event file in the training run's TensorBoard directory, and the training
    /// run's MLflow run (found by its exptrack tags; build with `--features mlflow`), and the
    /// training run's W&B run as a companion writer (`--features wandb`). Returns the builder
    /// and the training run's directory.
    pub fn companion_tracker(&self) -> Result<(ExperimentTrackerBuilder, PathBuf), BoxError> {
        let train = exptrack_core::store::list_runs(&self.runs_dir)?
            .into_iter()
            .rfind(|r| r.metadata.experiment_id == self.experiment_id)
            .ok_or_else(|| {
                format!(
                    "no training run of experiment {} under {} yet: start the training first",
                    self.experiment_id,
                    self.runs_dir.display()
                )
            })?;
        let mut config = self.config.clone();
        config.experiment.id = Some(self.experiment_id.clone());
        let mut builder = ExperimentTracker::builder(config)
            .runs_dir(train.dir.join(exptrack_plot::COMPANIONS_DIR))
            .resume(Resume::RunId(EVAL_RUN_ID.to_owned()));
        let tracking = &self.config.tracking;
        #[cfg(feature = "tensorboard")]
        if tracking.use_tensorboard {
            let dir = match &tracking.tensorboard_log_dir {
                Some(root) => root.join(&self.experiment_id).join(&train.metadata.run_id),
                None => train.dir.clone(),
            };
            builder = builder.with_tracker(Box::new(
                exptrack::tensorboard::TensorBoardTracker::builder()
                    .companion_of(dir)
                    .build(),
            ));
        }
        if tracking.use_mlflow {
            #[cfg(feature = "mlflow")]
            {
                let mut m = exptrack::mlflow::MlflowTrackerBuilder::new().from_env();
                if let Some(uri) = &tracking.mlflow_tracking_uri {
                    m = m.tracking_uri(uri.clone());
                }
                builder = builder.with_tracker(Box::new(
                    m.attach_to_exptrack_run(&self.experiment_id, &train.metadata.run_id)
                        .build()?,
                ));
            }
            #[cfg(not(feature = "mlflow"))]
            return Err(
                "use_mlflow needs the `mlflow` feature (cargo run --features mlflow ...)".into(),
            );
        }
        if tracking.use_wandb {
            // The same W&B run, as a companion writer (its rows carry `trainer/global_step`;
            // offline, upload it after the training's with the command its directory's
            // `exptrack-companion.json` gives). Build with `--features wandb`.
            #[cfg(feature = "wandb")]
            {
                builder = builder.with_tracker(Box::new(
                    exptrack::wandb_builder(&self.config)?
                        .attach_to_run(&train.metadata.run_id)
                        .build()?,
                ));
            }
            #[cfg(not(feature = "wandb"))]
            return Err(
                "use_wandb needs the `wandb` feature (cargo run --features wandb ...)".into(),
            );
        }
        Ok((builder, train.dir))
    }

    /// A watcher of this experiment's checkpoints that evaluates each on the validation set
    /// (`eval/valid/*`) and its shifted copy (`eval/ood/*`) and logs through `tracker`.
    pub fn watcher<'t>(
        &self,
        tracker: &'t ExperimentTracker,
        poll_interval: Duration,
    ) -> Result<EvalWatcher<'t>, BoxError> {
        let evaluator = Arc::new(QuickstartEvaluator::new(self)?);
        let (valid, ood) = (Arc::clone(&evaluator), evaluator);
        Ok(
            EvalWatcher::builder(&self.checkpoint_dir, &self.experiment_id)
                .poll_interval(poll_interval)
                .dataset("valid", move |c: &LoadedCheckpoint| valid.evaluate(c, 0.0))
                .dataset("ood", move |c: &LoadedCheckpoint| {
                    ood.evaluate(c, OOD_SHIFT)
                })
                .tracker(tracker)
                .build()?,
        )
    }
}

/// The quickstart's `Mlp` on the CPU, evaluated on its validation split.
pub struct QuickstartEvaluator {
    device: Device,
    hidden: usize,
    valid: ClassificationData<2>,
    /// The model of the checkpoint evaluated last, keyed by `(step, created_ms)`: both datasets
    /// of a step share one decode.
    model: Mutex<Option<((u64, i64), Mlp)>>,
}

impl std::fmt::Debug for QuickstartEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickstartEvaluator")
            .field("hidden", &self.hidden)
            .field("valid_items", &self.valid.len())
            .finish_non_exhaustive()
    }
}

impl QuickstartEvaluator {
    /// Regenerates the validation split exactly as training does (same sizes and seed).
    pub fn new(target: &QuickstartTarget) -> Result<Self, BoxError> {
        let (_train, valid) =
            generate_dataset(target.train_items, target.valid_items, target.seed)?;
        Ok(QuickstartEvaluator {
            device: parse_device("cpu")?,
            hidden: target.hidden,
            valid,
            model: Mutex::new(None),
        })
    }

    fn model(&self, ckpt: &LoadedCheckpoint) -> Result<Mlp, BoxError> {
        let key = (ckpt.info.step, ckpt.info.created_ms);
        // A poisoned lock only means an earlier evaluation panicked; the cache is still valid
        // or None.
        let mut cache = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, m)) = cache.as_ref()
            && *k == key
        {
            return Ok(m.clone());
        }
        let bytes = ckpt
            .file(MODEL_FILE)
            .ok_or_else(|| format!("checkpoint step {} has no {MODEL_FILE}", key.0))?;
        // Only the model file, loaded by the checkpointer's burn support.
        let mut weights = LoadedCheckpoint {
            info: ckpt.info.clone(),
            files: [(MODEL_FILE.to_owned(), bytes.to_vec())].into(),
        };
        let fresh = Mlp::new(FEATURES, self.hidden, CLASSES, &self.device);
        let model = weights.load_model(fresh)?;
        *cache = Some((key, model.clone()));
        Ok(model)
    }

    /// Accuracy, cross-entropy loss and mean predictive entropy (nats) of the checkpoint's model
    /// on the validation set with `shift` added to every feature.
    pub fn evaluate(
        &self,
        ckpt: &LoadedCheckpoint,
        shift: f32,
    ) -> Result<[(&'static str, f64); 3], BoxError> {
        let model = self.model(ckpt)?;
        let ctx = BatchContext {
            device: self.device.clone(),
            float_dtype: FloatDType::F32,
        };
        let labels = self.valid.labels();
        let (mut correct, mut loss, mut entropy) = (0usize, 0.0f64, 0.0f64);
        let indices: Vec<usize> = (0..self.valid.len()).collect();
        for chunk in indices.chunks(EVAL_BATCH) {
            let batch = self.valid.batch(chunk, &ctx)?;
            let inputs = if shift == 0.0 {
                batch.inputs
            } else {
                batch.inputs.add_scalar(shift)
            };
            let logits = model.forward(inputs).into_data().try_to_vec::<f32>()?;
            if logits.len() != chunk.len() * CLASSES {
                return Err(format!(
                    "model returned {} logits for {} items",
                    logits.len(),
                    chunk.len()
                )
                .into());
            }
            for (row, &i) in logits.chunks_exact(CLASSES).zip(chunk) {
                let (argmax, max) =
                    row.iter()
                        .enumerate()
                        .fold((0, f32::NEG_INFINITY), |best, (c, &v)| {
                            if v > best.1 { (c, v) } else { best }
                        });
                let max = f64::from(max);
                let log_z = max
                    + row
                        .iter()
                        .map(|&v| (f64::from(v) - max).exp())
                        .sum::<f64>()
                        .ln();
                let label = usize::try_from(labels[i])?;
                correct += usize::from(argmax == label);
                loss += log_z - f64::from(row[label]);
                entropy -= row
                    .iter()
                    .map(|&v| {
                        let log_p = f64::from(v) - log_z;
                        log_p.exp() * log_p
                    })
                    .sum::<f64>();
            }
        }
        let n = self.valid.len().max(1) as f64;
        Ok([
            ("accuracy", correct as f64 / n),
            ("loss", loss / n),
            ("entropy", entropy / n),
        ])
    }
}

/// Why [`watch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The training run was completed and every checkpoint committed before that was dealt with.
    TrainingCompleted,
    /// `once` was set: one poll was made.
    Once,
}

/// Polls `watcher` until the training run is completed and every checkpoint committed before
/// was dealt with (or once), calling `on_step` for each step as soon as it is dealt with.
///
/// The same stop rule as [`EvalWatcher::run`] (with `stop_when_completed`): completion is
/// sampled *before* each scan, so everything committed before the marker is listed by that scan;
/// a step whose evaluation failed and will be retried keeps the loop going. `run` reports the
/// steps only when it returns; this loop reports them live.
pub fn watch(
    watcher: &mut EvalWatcher<'_>,
    poll_interval: Duration,
    once: bool,
    mut on_step: impl FnMut(&Evaluated),
) -> Result<Ended, BoxError> {
    loop {
        let started = Instant::now();
        let completed = watcher.training_completed();
        let steps = watcher.poll_once()?;
        steps.iter().for_each(&mut on_step);
        if once {
            return Ok(Ended::Once);
        }
        let retrying = steps
            .iter()
            .any(|e| matches!(e.outcome, Outcome::Retrying { .. }));
        if completed && !retrying {
            return Ok(Ended::TrainingCompleted);
        }
        std::thread::sleep(poll_interval.saturating_sub(started.elapsed()));
    }
}
