//! [`TrainingManager`]: the training loop, as named steps: resume, step, log, evaluate, save,
//! finish.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, FloatDType, Tensor};
use exptrack_checkpoint::{ModelCheckpointer, Resume};

use crate::amp::LossScaler;
use crate::checkpointing::{self, Parts, TrainerState, ckpt_err};
use crate::config::{Mode, TrainingConfig};
use crate::data::{BatchContext, BatchSource, epoch_order};
use crate::error::{Error, Result};
use crate::grads::MeanGradAccumulator;
use crate::logging::MetricSink;
use crate::model::TrainModel;
use crate::optim::{build_optimizer, hyperparameters};
use crate::progress::Progress;
use crate::result::TrainingResult;
use crate::scheduler::LrSchedule;

mod evaluate;
mod step;

/// Runs training for a [`TrainModel`]: mixed precision with dynamic loss scaling, gradient
/// accumulation (averaging), global-norm or value clipping, schedules, early stopping,
/// evaluation, logging through a [`MetricSink`] (e.g. an
/// [`ExperimentTracker`](exptrack_core::ExperimentTracker)) and checkpoints through a
/// [`ModelCheckpointer`], with automatic resume.
///
/// ```
/// use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
/// use exptrack_trainer::quickstart::{Mlp, generate_dataset};
/// use exptrack_trainer::{MemorySink, TrainingConfig, TrainingManager};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tmp = tempfile::tempdir()?;
/// let config = TrainingConfig {
///     num_epochs: 2,
///     batch_size: 32,
///     log_frequency: 4,
///     progress: false,
///     ..TrainingConfig::default()
/// };
/// let checkpoints = CheckpointConfig { dir: tmp.path().join("checkpoints"), ..CheckpointConfig::default() };
/// let sink = MemorySink::new();
/// let mut manager = TrainingManager::new(config)?
///     .with_sink(sink.clone())
///     .with_checkpointer(ModelCheckpointer::open("my-experiment", checkpoints)?);
/// let (train, valid) = generate_dataset(256, 64, 7)?;
/// let model = Mlp::new(16, 32, 10, manager.device());
/// let (_model, result) = manager.fit(model, &train, &valid)?;
/// assert_eq!(result.epochs_completed, 2);
/// assert!(!sink.series("train/loss").is_empty());
/// // Rerun: the experiment is complete, nothing is trained.
/// let again = manager.fit(Mlp::new(16, 32, 10, manager.device()), &train, &valid)?.1;
/// assert!(again.already_completed);
/// # Ok(()) }
/// ```
pub struct TrainingManager {
    config: TrainingConfig,
    device: Device,
    sink: Option<Arc<dyn MetricSink>>,
    checkpointer: Option<ModelCheckpointer>,
    stop_after: Option<u64>,
    /// Test hook (feature `testing`): steps whose gradients are made infinite.
    inject_nonfinite: Vec<u64>,
    interactive: bool,
}

impl std::fmt::Debug for TrainingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingManager")
            .field("config", &self.config)
            .field("device", &self.device)
            .field("has_sink", &self.sink.is_some())
            .field("checkpointer", &self.checkpointer)
            .field("stop_after", &self.stop_after)
            .finish()
    }
}

/// Initializes every float parameter that is still lazy.
struct InitializeLazy;

impl ModuleVisitor for InitializeLazy {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_initialized() {
            let _ = param.val();
        }
    }
}

/// `splitmix64`: decorrelates per-step device seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The loop's state between its named steps (the model travels beside it, by value).
struct Loop<M> {
    optim: ModuleOptimizer,
    schedule: LrSchedule,
    st: TrainerState,
    best_model: Option<M>,
    resumed_from: Option<u64>,
    last_valid: Vec<(String, f64)>,
    monitor: String,
    mode: Mode,
    progress: Progress,
    train_ctx: BatchContext,
    acc: MeanGradAccumulator<M>,
    window_start: Instant,
    interrupted: bool,
}

impl<M> Loop<M> {
    /// The latest evaluation as a progress line.
    fn show_last_evaluation(&self) {
        if let Some(r) = self.st.history.last() {
            self.progress.line(&format!(
                "epoch {} step {}: train/loss {:.4} {}",
                r.epoch + 1,
                r.step,
                r.train_loss,
                r.metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
}

/// What [`TrainingManager::resume`] found.
enum Start<M> {
    /// The experiment completed before: its final weights and result.
    Completed(M, TrainingResult),
    /// Train from here (a checkpoint, or the beginning).
    Train(M, Box<Loop<M>>),
}

/// One optimizer step's figures, for logging.
struct StepStats {
    lr: f64,
    grad_norm: Option<f64>,
}

impl TrainingManager {
    /// A manager for `config` (validated; the device is resolved and checked for the requested
    /// mixed precision).
    pub fn new(config: TrainingConfig) -> Result<Self> {
        config.validate()?;
        let device = config.resolve_device()?.autodiff();
        device.seed(config.seed);
        Ok(TrainingManager {
            config,
            device,
            sink: None,
            checkpointer: None,
            stop_after: None,
            inject_nonfinite: Vec::new(),
            interactive: std::io::stdout().is_terminal(),
        })
    }

    /// Logs through `sink` (e.g. an [`ExperimentTracker`](exptrack_core::ExperimentTracker)).
    /// With a checkpointer, every commit is reported to it too
    /// ([`MetricSink::report_checkpoint`]; see [`with_checkpointer`](Self::with_checkpointer)).
    pub fn with_sink(mut self, sink: impl MetricSink + 'static) -> Self {
        self.sink = Some(Arc::new(sink));
        self.report_commits();
        self
    }

    /// Has the checkpointer report each commit (and the steps retention deleted) to the sink,
    /// unless its user set a commit hook of their own. The report is sent from the save thread
    /// for background saves; a sink error is logged, never fails the save.
    fn report_commits(&mut self) {
        let (Some(sink), Some(ckpt)) = (&self.sink, self.checkpointer.as_mut()) else {
            return;
        };
        if ckpt.has_commit_hook() {
            return;
        }
        let sink = Arc::clone(sink);
        ckpt.on_commit(move |info, pruned| {
            if let Err(e) = sink.report_checkpoint(info.checkpoint_report(pruned)) {
                tracing::warn!(step = info.step, error = %e, "checkpoint commit not reported");
            }
        });
    }

    /// Checkpoints through `checkpointer` (saved with `save_async` when its config says
    /// `async = true`); `fit` resumes from its newest valid checkpoint and skips a completed
    /// experiment, unless the checkpointer was opened with `force`, which restarts the
    /// experiment from scratch (its checkpoints are archived). With a sink, each commit is
    /// reported to it by reference ([`MetricSink::report_checkpoint`]: location, step, files
    /// with sizes and hashes, metrics, and the steps retention deleted), unless the checkpointer
    /// already has a commit hook ([`ModelCheckpointer::on_commit`]).
    pub fn with_checkpointer(mut self, checkpointer: ModelCheckpointer) -> Self {
        self.checkpointer = Some(checkpointer);
        self.report_commits();
        self
    }

    /// The checkpointer, if any.
    pub fn checkpointer(&self) -> Option<&ModelCheckpointer> {
        self.checkpointer.as_ref()
    }

    /// Stops (as if killed) right after the checkpoint written at optimizer step `step`;
    /// [`TrainingResult::interrupted`] is set. For resume tests and time-boxed jobs.
    pub fn stop_after_step(mut self, step: u64) -> Self {
        self.stop_after = Some(step);
        self
    }

    /// Test hook (feature `testing`): the gradients of these optimizer steps are made infinite
    /// (the loss is multiplied by +inf before `backward`; models that compute their own
    /// gradients are not affected).
    #[cfg(feature = "testing")]
    pub fn inject_nonfinite_grads_at(mut self, steps: Vec<u64>) -> Self {
        self.inject_nonfinite = steps;
        self
    }

    /// The training device (autodiff enabled). Create the model on it.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The configuration.
    pub fn config(&self) -> &TrainingConfig {
        &self.config
    }

    fn log(&self, step: u64, values: &[(String, f64)]) -> Result<()> {
        match &self.sink {
            Some(s) => s.log_metrics(step, values),
            None => Ok(()),
        }
    }

    fn monitor(&self) -> (String, Mode) {
        match &self.config.early_stopping {
            Some(es) => (es.monitor.clone(), es.mode),
            None => match &self.config.scheduler_options.monitor {
                Some(m) => (
                    m.clone(),
                    self.config.scheduler_options.mode.unwrap_or(Mode::Min),
                ),
                None => ("valid/loss".to_owned(), Mode::Min),
            },
        }
    }

    fn restore_best(&self) -> bool {
        self.config
            .early_stopping
            .as_ref()
            .is_some_and(|e| e.restore_best_weights)
    }

    /// Trains `model` on `train`, evaluating on `valid`; returns the trained model (the best
    /// weights when `restore_best_weights`) and the result. Resumes from the checkpointer's
    /// newest valid checkpoint; for an experiment the checkpointer marks completed, returns the
    /// final checkpoint's weights with [`TrainingResult::already_completed`] set, unless the
    /// checkpointer was opened with `force`.
    ///
    /// Create the model on [`device`](Self::device). Parameters burn has not initialized yet
    /// (it initializes lazily, on first use) are initialized when `fit` starts, from the device
    /// RNG as it is then ([`new`](Self::new) seeds it with `seed`), so a fresh model starts from
    /// the same weights as in a hand-written loop seeded the same way.
    pub fn fit<M, S>(&mut self, model: M, train: &S, valid: &S) -> Result<(M, TrainingResult)>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        if train.is_empty() {
            return Err(Error::Data("the training set is empty".into()));
        }
        let (mut model, mut lp) = match self.resume(model, train.len())? {
            Start::Completed(model, result) => return Ok((model, result)),
            Start::Train(model, lp) => (model, lp),
        };
        let (num_epochs, batch_size) = (self.config.num_epochs, self.config.batch_size);
        'epochs: while lp.st.epoch < num_epochs && !lp.st.stopped_early {
            let order = epoch_order(
                train.len(),
                self.config.seed,
                lp.st.epoch,
                self.config.shuffle,
            );
            let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
            while lp.st.position < batches.len() {
                let stats;
                (model, stats) = self.step(model, &mut lp, train, &batches)?;
                self.log_step(&mut lp, &stats)?;
                let epoch_end = lp.st.position >= batches.len();
                let eval_every = self.config.eval_frequency;
                if epoch_end || (eval_every > 0 && lp.st.step.is_multiple_of(eval_every)) {
                    self.evaluate(&model, &mut lp, valid)?;
                    lp.show_last_evaluation();
                }
                if epoch_end {
                    lp.st.epoch += 1;
                    lp.st.position = 0;
                    lp.st.epochs_completed = lp.st.epoch;
                }
                if self.save_due(&lp, epoch_end) {
                    self.save(&model, &lp)?;
                }
                if self.stop_after == Some(lp.st.step) {
                    lp.interrupted = true;
                    break 'epochs;
                }
                if lp.st.stopped_early {
                    break 'epochs;
                }
                if epoch_end {
                    continue 'epochs;
                }
            }
            // Only reached when the epoch had no batches left at resume time.
            lp.st.epoch += 1;
            lp.st.position = 0;
        }
        self.finish(model, *lp)
    }

    /// Resume: a completed experiment is reported (with its final weights); else the loop
    /// starts from the newest valid checkpoint, or from the beginning (initializing lazy
    /// parameters and logging the hyperparameters).
    fn resume<M: TrainModel>(&mut self, model: M, train_items: usize) -> Result<Start<M>> {
        let cfg = &self.config;
        let micro_per_epoch = train_items.div_ceil(cfg.batch_size);
        let steps_per_epoch = micro_per_epoch.div_ceil(cfg.gradient_accumulation_steps) as u64;
        let total_steps = steps_per_epoch * cfg.num_epochs as u64;
        let mut schedule = LrSchedule::new(cfg, total_steps)?;
        let mut optim = build_optimizer(cfg);
        let amp = cfg.mixed_precision.dtype();
        let mut st = TrainerState {
            seed: cfg.seed,
            scaler: amp
                .map(|_| LossScaler::new(cfg.loss_scale_init, cfg.loss_scale_growth_interval)),
            ..TrainerState::default()
        };
        let mut model = model;
        let mut best_model = None;
        let mut resumed_from = None;
        let decision = match self.checkpointer.as_mut() {
            Some(ckpt) => checkpointing::resume_point(ckpt)?,
            None => Resume::Fresh,
        };
        match decision {
            Resume::Completed(summary) => {
                let mut result: TrainingResult =
                    serde_json::from_value(summary).map_err(|source| Error::Json {
                        what: "completion summary",
                        source,
                    })?;
                result.already_completed = true;
                result.interrupted = false;
                let latest = match &self.checkpointer {
                    Some(ckpt) => ckpt.load_latest_valid().map_err(ckpt_err)?,
                    None => None,
                };
                if let Some(loaded) = latest {
                    model =
                        checkpointing::final_weights(loaded, model, result.restored_best_weights)?;
                }
                return Ok(Start::Completed(model, result));
            }
            Resume::Resumed(loaded) => {
                let r = checkpointing::restore(*loaded, model, optim, &mut schedule)?;
                (model, optim, st, best_model) = (r.model, r.optim, r.state, r.best_model);
                resumed_from = Some(st.step);
                tracing::info!(step = st.step, epoch = st.epoch, "resuming from checkpoint");
            }
            Resume::Fresh => {
                // burn initializes a parameter on first use; do it now, from the device RNG as
                // the caller left it, rather than inside the first step after the per-step reseed.
                model.visit(&mut InitializeLazy);
                if let Some(sink) = &self.sink {
                    sink.log_hyperparameters(&hyperparameters(cfg)?)?;
                }
            }
        }
        let (monitor, mode) = self.monitor();
        let progress = Progress::new(cfg.progress, self.interactive, total_steps, st.step);
        if let Some(step) = resumed_from {
            progress.line(&format!(
                "resuming from step {step} (epoch {}, batch {})",
                st.epoch + 1,
                st.position
            ));
        }
        let last_valid = st
            .history
            .last()
            .map(|h| h.metrics.clone())
            .unwrap_or_default();
        let lp = Loop {
            optim,
            schedule,
            st,
            best_model,
            resumed_from,
            last_valid,
            monitor,
            mode,
            progress,
            train_ctx: BatchContext {
                device: self.device.clone(),
                float_dtype: amp.unwrap_or(FloatDType::F32),
            },
            acc: MeanGradAccumulator::<M>::new(),
            window_start: Instant::now(),
            interrupted: false,
        };
        Ok(Start::Train(model, Box::new(lp)))
    }

    /// Whether a checkpoint is due: at epoch ends, every `checkpoint_save_frequency` steps,
    /// when early stopping ends the run and at the step [`stop_after_step`](Self::stop_after_step)
    /// names.
    fn save_due<M>(&self, lp: &Loop<M>, epoch_end: bool) -> bool {
        let step = lp.st.step;
        let every = self.config.checkpoint_save_frequency;
        self.checkpointer.is_some()
            && (epoch_end
                || lp.st.stopped_early
                || (every > 0 && step.is_multiple_of(every))
                || self.stop_after == Some(step))
    }

    /// Save: one checkpoint of everything resume needs, through the checkpointer (in the
    /// background with `async = true`).
    fn save<M: Module>(&mut self, model: &M, lp: &Loop<M>) -> Result<()> {
        let Some(ckpt) = self.checkpointer.as_mut() else {
            return Ok(());
        };
        let checkpoint = Parts {
            model,
            optim: &lp.optim,
            schedule: &lp.schedule,
            state: &lp.st,
            best_model: lp.best_model.as_ref(),
            metrics: &lp.last_valid,
        }
        .to_checkpoint()?;
        // The metrics up to this step reach the durable log before the checkpoint can commit:
        // a resumed run starts after it and never logs them again.
        if let Some(sink) = &self.sink {
            sink.sync()?;
        }
        ckpt.save_auto(checkpoint).map(|_| ()).map_err(ckpt_err)
    }

    /// Finish: waits for background saves, restores the best weights, reports the results to
    /// the sink and marks the experiment completed (unless interrupted).
    fn finish<M: TrainModel>(&mut self, mut model: M, lp: Loop<M>) -> Result<(M, TrainingResult)> {
        lp.progress.finish();
        if let Some(ckpt) = &self.checkpointer {
            ckpt.wait().map_err(ckpt_err)?;
        }
        let st = lp.st;
        let mut final_metrics = lp.last_valid;
        let mut restored = false;
        if !lp.interrupted
            && self.restore_best()
            && let Some(best) = lp.best_model
        {
            model = best;
            restored = true;
            // Report the metrics of the weights being returned.
            if let Some(best) = st.history.iter().find(|h| Some(h.step) == st.best_step) {
                final_metrics = best.metrics.clone();
            }
        }
        let result = TrainingResult {
            monitor: lp.monitor,
            best_metric: st.best,
            best_epoch: st.best_epoch,
            best_step: st.best_step,
            stopped_early: st.stopped_early,
            stop_reason: st.stop_reason,
            interrupted: lp.interrupted,
            already_completed: false,
            resumed_from_step: lp.resumed_from,
            steps: st.step,
            epochs_completed: st.epochs_completed,
            final_metrics,
            skipped_steps: st.scaler.as_ref().map(|s| s.skipped_steps).unwrap_or(0),
            loss_scale: st.scaler.as_ref().map(|s| s.scale),
            restored_best_weights: restored,
            history: st.history,
        };
        if result.interrupted {
            return Ok((model, result));
        }
        if let Some(sink) = &self.sink {
            for (k, v) in &result.final_metrics {
                sink.set_result(k, serde_json::json!(v))?;
            }
            if let Some(b) = result.best_metric {
                sink.set_result(&format!("best/{}", result.monitor), serde_json::json!(b))?;
            }
            if let Some(e) = result.best_epoch {
                sink.set_result("best_epoch", serde_json::json!(e))?;
            }
            sink.set_result("stopped_early", serde_json::json!(result.stopped_early))?;
        }
        if let Some(ckpt) = self.checkpointer.as_mut() {
            let summary = serde_json::to_value(&result).map_err(|source| Error::Json {
                what: "training result",
                source,
            })?;
            ckpt.mark_completed(summary).map_err(ckpt_err)?;
        }
        Ok((model, result))
    }
}
