//! [`TrainingManager`]: the training loop.

use std::io::IsTerminal;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{
    AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, DType, Device, FloatDType, Tensor};
use exptrack_core::ParamValue;
use serde::{Deserialize, Serialize};

use crate::amp::{LossScaler, cast_module};
use crate::checkpoint::{CheckpointStore, TrainingCheckpoint};
use crate::config::{ClippingKind, Mode, OptimizerKind, TrainingConfig};
use crate::data::{BatchContext, BatchSource, epoch_order};
use crate::error::{Error, Result};
use crate::grads::{self, MeanGradAccumulator, clip_coefficient, read_scalars};
use crate::logging::MetricSink;
use crate::model::{ModelOutput, TrainModel, TrainStepOutput};
use crate::scheduler::LrSchedule;

/// One evaluation of the validation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Global optimizer step at evaluation time.
    pub step: u64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Validation metrics (`valid/loss`, `valid/accuracy` for classification, ...).
    pub metrics: Vec<(String, f64)>,
}

impl EvalRecord {
    /// A metric by key.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// What [`TrainingManager::fit`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingResult {
    /// Every evaluation, in order (including those before a resume).
    pub history: Vec<EvalRecord>,
    /// The monitored metric key.
    pub monitor: String,
    /// Best monitored value.
    pub best_metric: Option<f64>,
    /// Epoch of the best value.
    pub best_epoch: Option<usize>,
    /// Step of the best value.
    pub best_step: Option<u64>,
    /// Early stopping ended the run.
    pub stopped_early: bool,
    /// Why it stopped early.
    pub stop_reason: Option<String>,
    /// The run was interrupted on request ([`TrainingManager::stop_after_step`]); rerun to resume.
    pub interrupted: bool,
    /// The experiment had already completed; nothing was trained.
    pub already_completed: bool,
    /// The step this run resumed from.
    pub resumed_from_step: Option<u64>,
    /// Optimizer steps taken in total.
    pub steps: u64,
    /// Epochs completed.
    pub epochs_completed: usize,
    /// The last evaluation's metrics.
    pub final_metrics: Vec<(String, f64)>,
    /// Optimizer steps skipped for non-finite gradients (mixed precision).
    pub skipped_steps: u64,
    /// Final loss scale (mixed precision).
    pub loss_scale: Option<f64>,
    /// Whether the best weights were restored at the end.
    pub restored_best_weights: bool,
}

impl TrainingResult {
    /// A final metric by key.
    pub fn final_metric(&self, key: &str) -> Option<f64> {
        self.final_metrics
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}

/// Everything of the loop that a checkpoint must carry besides model, optimizer and scheduler.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct TrainerState {
    /// Epoch in progress.
    epoch: usize,
    /// Micro-batches of this epoch already consumed.
    position: usize,
    /// Global optimizer step.
    step: u64,
    /// Seed (the epoch order and the per-step device seed derive from it, the epoch and the step).
    seed: u64,
    scaler: Option<LossScaler>,
    /// Early stopping / best tracking.
    best: Option<f64>,
    best_epoch: Option<usize>,
    best_step: Option<u64>,
    bad_evals: usize,
    last_eval_step: Option<u64>,
    /// Logging window: loss sum, steps, items since the last log.
    window_loss: f64,
    window_steps: u64,
    window_items: u64,
    /// Since the last evaluation.
    eval_loss: f64,
    eval_steps: u64,
    history: Vec<EvalRecord>,
    stopped_early: bool,
    stop_reason: Option<String>,
    epochs_completed: usize,
}

const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optimizer.bpk";
const SCHED_FILE: &str = "scheduler.json";
const STATE_FILE: &str = "trainer.json";
const BEST_FILE: &str = "best_model.bpk";

fn record_err(what: &'static str) -> impl Fn(burn::store::RecordError) -> Error {
    move |e| Error::Record {
        what,
        message: e.to_string(),
    }
}

fn json_err(what: &'static str) -> impl Fn(serde_json::Error) -> Error {
    move |source| Error::Json { what, source }
}

/// Runs training for a [`TrainModel`]: mixed precision with dynamic loss scaling, gradient
/// accumulation (averaging), global-norm or value clipping, schedules, early stopping,
/// evaluation, logging through a [`MetricSink`] and checkpoints through a
/// [`CheckpointStore`] with automatic resume.
///
/// ```ignore
/// let mut manager = TrainingManager::new(config)?
///     .with_sink(tracker)
///     .with_checkpoints(DirCheckpointStore::new("runs/ckpt", 2)?);
/// let model = MyModel::new(manager.device());
/// let (model, result) = manager.fit(model, &train, &valid)?;
/// ```
pub struct TrainingManager {
    config: TrainingConfig,
    device: Device,
    sink: Option<Box<dyn MetricSink>>,
    store: Option<Box<dyn CheckpointStore>>,
    force: bool,
    stop_after: Option<u64>,
    inject_nonfinite: Vec<u64>,
    interactive: bool,
}

impl std::fmt::Debug for TrainingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingManager")
            .field("config", &self.config)
            .field("device", &self.device)
            .field("has_sink", &self.sink.is_some())
            .field("has_store", &self.store.is_some())
            .field("force", &self.force)
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

fn flatten_params(prefix: &str, v: &toml::Value, out: &mut Vec<(String, ParamValue)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_params(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), ParamValue::Str(s.clone()))),
        toml::Value::Integer(i) => out.push((prefix.to_owned(), ParamValue::Int(*i))),
        toml::Value::Float(f) => out.push((prefix.to_owned(), ParamValue::Float(*f))),
        toml::Value::Boolean(b) => out.push((prefix.to_owned(), ParamValue::Bool(*b))),
        other => out.push((prefix.to_owned(), ParamValue::Str(other.to_string()))),
    }
}

/// Builds the configured optimizer.
pub fn build_optimizer(c: &TrainingConfig) -> ModuleOptimizer {
    match c.optimizer {
        OptimizerKind::AdamW => AdamWConfig::new()
            .with_beta_1(c.beta1 as f32)
            .with_beta_2(c.beta2 as f32)
            .with_epsilon(c.epsilon as f32)
            .with_weight_decay(c.weight_decay as f32)
            .init(),
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(c.beta1 as f32)
            .with_beta_2(c.beta2 as f32)
            .with_epsilon(c.epsilon as f32)
            .with_weight_decay(
                (c.weight_decay > 0.0).then(|| WeightDecayConfig::new(c.weight_decay as f32)),
            )
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((c.momentum > 0.0).then_some(MomentumConfig {
                momentum: c.momentum,
                dampening: c.dampening,
                nesterov: c.nesterov,
            }))
            .with_weight_decay(
                (c.weight_decay > 0.0).then(|| WeightDecayConfig::new(c.weight_decay as f32)),
            )
            .init(),
    }
}

/// Serializes a module's parameters (burnpack bytes).
pub fn model_to_bytes<M: Module>(model: &M) -> Result<Vec<u8>> {
    Ok(model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(record_err("model record"))?
        .to_vec())
}

/// Loads parameters written by [`model_to_bytes`] into `model` (parameter ids are restored,
/// so optimizer state keyed by them matches).
pub fn model_from_bytes<M: Module>(model: M, bytes: Vec<u8>) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(record_err("model record"))?;
    model
        .try_load_record(record)
        .map_err(record_err("model record"))
}

enum Progress {
    Bar(indicatif::ProgressBar),
    Lines,
    Quiet,
}

impl Progress {
    fn new(enabled: bool, interactive: bool, total: u64, done: u64) -> Self {
        if !enabled {
            return Progress::Quiet;
        }
        if !interactive {
            return Progress::Lines;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(done);
        Progress::Bar(bar)
    }

    fn step(&self, step: u64, msg: impl FnOnce() -> String, log_line: bool) {
        match self {
            Progress::Bar(b) => {
                b.set_position(step);
                if log_line {
                    b.set_message(msg());
                }
            }
            Progress::Lines => {
                if log_line {
                    println!("{}", msg());
                }
            }
            Progress::Quiet => {}
        }
    }

    fn line(&self, text: &str) {
        match self {
            Progress::Bar(b) => b.println(text),
            Progress::Lines => println!("{text}"),
            Progress::Quiet => {}
        }
    }

    fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
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
            store: None,
            force: false,
            stop_after: None,
            inject_nonfinite: Vec::new(),
            interactive: std::io::stdout().is_terminal(),
        })
    }

    /// Logs through `sink` (e.g. an [`ExperimentTracker`](exptrack_core::ExperimentTracker)).
    pub fn with_sink(mut self, sink: impl MetricSink + 'static) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Checkpoints through `store`; `fit` resumes from its newest checkpoint and skips a
    /// completed experiment unless [`force`](Self::force) is set.
    pub fn with_checkpoints(mut self, store: impl CheckpointStore + 'static) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Retrain even when the checkpoint store says the experiment completed (its checkpoints
    /// and marker are cleared first).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Stops (as if killed) right after the checkpoint written at optimizer step `step`;
    /// [`TrainingResult::interrupted`] is set. For resume tests and time-boxed jobs.
    pub fn stop_after_step(mut self, step: u64) -> Self {
        self.stop_after = Some(step);
        self
    }

    /// Test hook: the gradients of these optimizer steps are made infinite (the loss is
    /// multiplied by +inf before `backward`; models that compute their own gradients are not
    /// affected).
    #[doc(hidden)]
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

    /// Evaluates `model` on `data` (no autodiff, compute dtype of the run): `valid/loss` (mean
    /// over items) and, for classification, `valid/accuracy`.
    pub fn validate<M, S>(&self, model: &M, data: &S) -> Result<Vec<(String, f64)>>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        let dtype = self.config.mixed_precision.dtype();
        let eval_model = model.valid();
        let eval_model = match dtype {
            Some(d) => cast_module(eval_model, d),
            None => eval_model,
        };
        let ctx = BatchContext {
            device: self.device.clone().without_autodiff(),
            float_dtype: dtype.unwrap_or(FloatDType::F32),
        };
        let n = data.len();
        let bs = self.config.batch_size;
        let (mut loss_sum, mut items, mut correct, mut is_cls) = (0.0, 0usize, 0.0, false);
        let mut start = 0;
        while start < n {
            let end = (start + bs).min(n);
            let idx: Vec<usize> = (start..end).collect();
            let out = eval_model.step(data.batch(&idx, &ctx)?);
            let nb = out.num_items.max(1);
            let loss = out.loss.cast(FloatDType::F32).reshape([1]);
            let vals = match out.output {
                ModelOutput::Classification { logits, targets } => {
                    is_cls = true;
                    let [b, _] = logits.dims();
                    let pred = logits.argmax(1).reshape([b]);
                    let hits = pred.equal(targets).float().cast(FloatDType::F32).sum();
                    read_scalars(Tensor::cat(vec![loss, hits], 0))?
                }
                _ => read_scalars(loss)?,
            };
            loss_sum += vals.first().copied().unwrap_or(f64::NAN) * nb as f64;
            correct += vals.get(1).copied().unwrap_or(0.0);
            items += nb;
            start = end;
        }
        let mut m = vec![("valid/loss".to_owned(), loss_sum / items.max(1) as f64)];
        if is_cls {
            m.push(("valid/accuracy".to_owned(), correct / items.max(1) as f64));
        }
        Ok(m)
    }

    /// Trains `model` on `train`, evaluating on `valid`; returns the trained model (the best
    /// weights when `restore_best_weights`) and the result. Resumes from the checkpoint store's
    /// newest checkpoint; for an experiment the store marks completed, returns the final
    /// checkpoint's weights with [`TrainingResult::already_completed`] set, unless forced.
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
        let cfg = self.config.clone();
        if train.is_empty() {
            return Err(Error::Data("the training set is empty".into()));
        }
        let mut model = model;

        // Completed experiment: report and skip unless forced.
        if let Some(store) = self.store.as_mut() {
            if self.force {
                store.reset()?;
            } else if let Some(summary) = store.completed()? {
                let mut result: TrainingResult =
                    serde_json::from_value(summary).map_err(json_err("completion summary"))?;
                result.already_completed = true;
                result.interrupted = false;
                if let Some(mut ck) = store.load_latest()? {
                    let name = if result.restored_best_weights && ck.file(BEST_FILE).is_some() {
                        BEST_FILE
                    } else {
                        MODEL_FILE
                    };
                    if let Some(pos) = ck.files.iter().position(|(n, _)| n == name) {
                        let (_, bytes) = ck.files.swap_remove(pos);
                        model = model_from_bytes(model, bytes)?;
                    }
                }
                return Ok((model, result));
            }
        }

        let micro_per_epoch = train.len().div_ceil(cfg.batch_size);
        let k = cfg.gradient_accumulation_steps;
        let steps_per_epoch = micro_per_epoch.div_ceil(k) as u64;
        let total_steps = steps_per_epoch * cfg.num_epochs as u64;
        let mut schedule = LrSchedule::new(&cfg, total_steps)?;
        let mut optim = build_optimizer(&cfg);
        let amp = cfg.mixed_precision.dtype();
        let mut st = TrainerState {
            seed: cfg.seed,
            scaler: amp
                .map(|_| LossScaler::new(cfg.loss_scale_init, cfg.loss_scale_growth_interval)),
            ..TrainerState::default()
        };
        let mut best_bytes: Option<Vec<u8>> = None;
        let mut resumed_from = None;

        if let Some(store) = self.store.as_mut()
            && let Some(mut ck) = store.load_latest()?
        {
            let mut take = |name: &str| -> Result<Vec<u8>> {
                match ck.files.iter().position(|(n, _)| n == name) {
                    Some(p) => Ok(ck.files.swap_remove(p).1),
                    None => Err(Error::Checkpoint {
                        message: format!("checkpoint at step {} lacks {name}", ck.step),
                        source: None,
                    }),
                }
            };
            model = model_from_bytes(model, take(MODEL_FILE)?)?;
            optim = optim
                .from_bytes(Bytes::from_bytes_vec(take(OPTIM_FILE)?))
                .map_err(record_err("optimizer record"))?;
            schedule.load_state(&take(SCHED_FILE)?)?;
            st = serde_json::from_slice(&take(STATE_FILE)?).map_err(json_err("trainer state"))?;
            best_bytes = take(BEST_FILE).ok();
            resumed_from = Some(st.step);
            tracing::info!(step = st.step, epoch = st.epoch, "resuming from checkpoint");
        }

        if resumed_from.is_none() {
            // burn initializes a parameter on first use; do it now, from the device RNG as the
            // caller left it, rather than inside the first step after the per-step reseed.
            model.visit(&mut InitializeLazy);
        }
        if resumed_from.is_none()
            && let Some(sink) = &self.sink
        {
            let mut params = Vec::new();
            flatten_params(
                "training",
                &toml::Value::Table(cfg.to_table()?),
                &mut params,
            );
            sink.log_hyperparameters(&params)?;
        }

        let (monitor, mode) = self.monitor();
        let es = cfg.early_stopping.clone();
        let restore_best = es.as_ref().is_some_and(|e| e.restore_best_weights);
        let progress = Progress::new(cfg.progress, self.interactive, total_steps, st.step);
        if let Some(step) = resumed_from {
            progress.line(&format!(
                "resuming from step {step} (epoch {}, batch {})",
                st.epoch + 1,
                st.position
            ));
        }
        let train_ctx = BatchContext {
            device: self.device.clone(),
            float_dtype: amp.unwrap_or(FloatDType::F32),
        };
        let mut acc = MeanGradAccumulator::<M>::new();
        let mut window_start = Instant::now();
        let mut interrupted = false;
        let mut last_valid: Vec<(String, f64)> = st
            .history
            .last()
            .map(|h| h.metrics.clone())
            .unwrap_or_default();

        'epochs: while st.epoch < cfg.num_epochs && !st.stopped_early {
            let order = epoch_order(train.len(), cfg.seed, st.epoch, cfg.shuffle);
            let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
            while st.position < batches.len() {
                // ---- one optimizer step over up to k micro-batches ----
                self.device.seed(mix(cfg.seed ^ mix(st.step)));
                let scale = st.scaler.as_ref().map(|s| s.scale).unwrap_or(1.0);
                let inject = self.inject_nonfinite.contains(&st.step);
                let mut loss_sum: Option<Tensor<1>> = None;
                let mut single: Option<GradientsParams> = None;
                let mut items = 0usize;
                let end = (st.position + k).min(batches.len());
                for idx in &batches[st.position..end] {
                    let batch = train.batch(idx, &train_ctx)?;
                    let out = match amp {
                        Some(d) => cast_module(model.clone(), d).train_step(batch),
                        None => model.train_step(batch),
                    };
                    let (out, own_grads) = match out {
                        TrainStepOutput::Loss(out) => (out, None),
                        TrainStepOutput::Gradients { .. } if amp.is_some() => {
                            return Err(Error::Config(format!(
                                "mixed_precision = \"{}\" needs the loss before backward to scale \
                                 it, but this model computes its own gradients (e.g. burn-train's \
                                 TrainStep); use mixed_precision = \"off\", or train it from its \
                                 loss (BurnTrainModel::with_inference_loss, or TrainModel::step)",
                                cfg.mixed_precision.name()
                            )));
                        }
                        TrainStepOutput::Gradients { grads, output } => (output, Some(grads)),
                    };
                    items += out.num_items;
                    let loss = if out.loss.dtype() == DType::F32 {
                        out.loss
                    } else {
                        out.loss.cast(FloatDType::F32)
                    };
                    let loss = if loss.dims() == [1] {
                        loss
                    } else {
                        loss.reshape([1])
                    };
                    let g = match own_grads {
                        Some(g) => g,
                        None => {
                            let mut scaled = if scale != 1.0 {
                                loss.clone().mul_scalar(scale)
                            } else {
                                loss.clone()
                            };
                            if inject {
                                scaled = scaled.mul_scalar(f32::INFINITY);
                            }
                            GradientsParams::from_grads(scaled.backward(), &model)
                        }
                    };
                    if k == 1 {
                        single = Some(g);
                    } else {
                        acc.add(&model, g);
                    }
                    let l = if k == 1 { loss } else { loss.detach() };
                    loss_sum = Some(match loss_sum {
                        Some(s) => s.add(l),
                        None => l,
                    });
                }
                // With k = 1 the accumulator (a visit of every parameter) is skipped.
                let (grads, n_micro) = match single.take() {
                    Some(g) => (g, 1),
                    None => acc.take_sum(),
                };
                let inv = 1.0 / (n_micro as f64 * scale);
                let need_norm = amp.is_some() || cfg.gradient_clipping == ClippingKind::Norm;
                // ONE host readback per step: [loss sum, squared grad norm (when needed)].
                let loss_t = loss_sum.ok_or_else(|| Error::Data("empty step".into()))?;
                let readback = match (need_norm, grads::squared_norm(&model, &grads)) {
                    (true, Some(sq)) => Tensor::cat(vec![loss_t, sq], 0),
                    _ => loss_t,
                };
                let vals = read_scalars(readback)?;
                let step_loss = vals.first().copied().unwrap_or(f64::NAN) / n_micro as f64;
                let grad_norm = vals.get(1).map(|sq| sq.sqrt() * inv);
                let finite = grad_norm.is_none_or(f64::is_finite);
                let take_step = match st.scaler.as_mut() {
                    Some(s) => s.update(finite),
                    None => true,
                };
                // A skipped step does not advance the schedule (see `TrainingConfig::mixed_precision`).
                let lr = if take_step {
                    schedule.next_lr()
                } else {
                    schedule.peek_lr()
                };
                if take_step {
                    let mut factor = inv;
                    if let (ClippingKind::Norm, Some(norm)) = (cfg.gradient_clipping, grad_norm) {
                        factor *= clip_coefficient(norm, cfg.max_grad_norm);
                    }
                    let grads = match cfg.gradient_clipping {
                        ClippingKind::Value => {
                            grads::scale_and_clamp(&model, grads, factor, cfg.max_grad_norm)
                        }
                        _ => grads::scale(&model, grads, factor),
                    };
                    model = model.optimize(&mut optim, lr, grads);
                }
                st.step += 1;
                st.position = end;
                if step_loss.is_finite() || amp.is_none() {
                    st.window_loss += step_loss;
                    st.eval_loss += step_loss;
                }
                st.window_steps += 1;
                st.eval_steps += 1;
                st.window_items += items as u64;

                if es.as_ref().is_some_and(|e| e.check_finite)
                    && !step_loss.is_finite()
                    && amp.is_none()
                {
                    st.stopped_early = true;
                    st.stop_reason =
                        Some(format!("training loss is {step_loss} at step {}", st.step));
                }

                let log_now = st.step.is_multiple_of(cfg.log_frequency);
                if log_now {
                    let elapsed = window_start.elapsed().as_secs_f64().max(1e-9);
                    let mean = st.window_loss / st.window_steps.max(1) as f64;
                    let mut m = vec![
                        ("train/loss".to_owned(), mean),
                        ("train/lr".to_owned(), lr),
                        (
                            "train/items_per_sec".to_owned(),
                            st.window_items as f64 / elapsed,
                        ),
                        ("train/epoch".to_owned(), st.epoch as f64),
                    ];
                    if let Some(s) = &st.scaler {
                        m.push(("train/loss_scale".to_owned(), s.scale));
                    }
                    if let Some(g) = grad_norm {
                        m.push(("train/grad_norm".to_owned(), g));
                    }
                    self.log(st.step, &m)?;
                    let ips = st.window_items as f64 / elapsed;
                    progress.step(
                        st.step,
                        || {
                            format!(
                                "epoch {}/{} step {} loss {mean:.4} lr {lr:.3e} {ips:.0} items/s",
                                st.epoch + 1,
                                cfg.num_epochs,
                                st.step
                            )
                        },
                        true,
                    );
                    st.window_loss = 0.0;
                    st.window_steps = 0;
                    st.window_items = 0;
                    window_start = Instant::now();
                } else {
                    progress.step(st.step, String::new, false);
                }

                let epoch_end = st.position >= batches.len();
                let eval_now = epoch_end
                    || (cfg.eval_frequency > 0 && st.step.is_multiple_of(cfg.eval_frequency));
                if eval_now {
                    last_valid = self.evaluate_and_track(
                        &model,
                        valid,
                        &mut st,
                        &mut schedule,
                        &monitor,
                        mode,
                        restore_best.then_some(&mut best_bytes),
                    )?;
                    if let Some(r) = st.history.last() {
                        progress.line(&format!(
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
                if epoch_end {
                    st.epoch += 1;
                    st.position = 0;
                    st.epochs_completed = st.epoch;
                }
                let save_now = epoch_end
                    || st.stopped_early
                    || (cfg.checkpoint_save_frequency > 0
                        && st.step.is_multiple_of(cfg.checkpoint_save_frequency))
                    || self.stop_after == Some(st.step);
                if save_now && self.store.is_some() {
                    self.save(&model, &optim, &schedule, &st, &best_bytes, &last_valid)?;
                }
                if self.stop_after == Some(st.step) {
                    interrupted = true;
                    break 'epochs;
                }
                if st.stopped_early {
                    break 'epochs;
                }
                if epoch_end {
                    continue 'epochs;
                }
            }
            // Only reached when the epoch had no batches left at resume time.
            st.epoch += 1;
            st.position = 0;
        }
        progress.finish();
        if let Some(store) = self.store.as_mut() {
            store.flush()?;
        }

        let mut restored = false;
        if !interrupted
            && restore_best
            && let Some(bytes) = best_bytes.clone()
        {
            model = model_from_bytes(model, bytes)?;
            restored = true;
            // Report the metrics of the weights being returned.
            if let Some(best) = st.history.iter().find(|h| Some(h.step) == st.best_step) {
                last_valid = best.metrics.clone();
            }
        }
        let result = TrainingResult {
            history: st.history.clone(),
            monitor,
            best_metric: st.best,
            best_epoch: st.best_epoch,
            best_step: st.best_step,
            stopped_early: st.stopped_early,
            stop_reason: st.stop_reason.clone(),
            interrupted,
            already_completed: false,
            resumed_from_step: resumed_from,
            steps: st.step,
            epochs_completed: st.epochs_completed,
            final_metrics: last_valid,
            skipped_steps: st.scaler.as_ref().map(|s| s.skipped_steps).unwrap_or(0),
            loss_scale: st.scaler.as_ref().map(|s| s.scale),
            restored_best_weights: restored,
        };
        if !interrupted {
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
            if let Some(store) = self.store.as_mut() {
                let summary = serde_json::to_value(&result).map_err(json_err("training result"))?;
                store.mark_completed(&summary)?;
            }
        }
        Ok((model, result))
    }

    #[allow(clippy::too_many_arguments)] // internal: the loop's state pieces
    fn evaluate_and_track<M, S>(
        &self,
        model: &M,
        valid: &S,
        st: &mut TrainerState,
        schedule: &mut LrSchedule,
        monitor: &str,
        mode: Mode,
        best_bytes: Option<&mut Option<Vec<u8>>>,
    ) -> Result<Vec<(String, f64)>>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        if st.last_eval_step == Some(st.step) {
            return Ok(st
                .history
                .last()
                .map(|h| h.metrics.clone())
                .unwrap_or_default());
        }
        st.last_eval_step = Some(st.step);
        let metrics = if valid.is_empty() {
            Vec::new()
        } else {
            self.validate(model, valid)?
        };
        let train_loss = st.eval_loss / st.eval_steps.max(1) as f64;
        st.eval_loss = 0.0;
        st.eval_steps = 0;
        let mut logged = metrics.clone();
        logged.push(("train/epoch_loss".to_owned(), train_loss));
        self.log(st.step, &logged)?;
        st.history.push(EvalRecord {
            epoch: st.epoch,
            step: st.step,
            train_loss,
            metrics: metrics.clone(),
        });
        let value = metrics
            .iter()
            .find(|(k, _)| k == monitor)
            .map(|(_, v)| *v)
            .or_else(|| (monitor == "train/loss").then_some(train_loss));
        let Some(value) = value else {
            return Ok(metrics);
        };
        if schedule.wants_metric() {
            schedule.observe(value);
        }
        let es = self.config.early_stopping.as_ref();
        let min_delta = es.map(|e| e.min_delta).unwrap_or(0.0);
        if es.is_some_and(|e| e.check_finite) && !value.is_finite() {
            st.stopped_early = true;
            st.stop_reason = Some(format!("{monitor} is {value} at step {}", st.step));
            return Ok(metrics);
        }
        let improved = match (st.best, mode) {
            (None, _) => value.is_finite(),
            (Some(b), Mode::Min) => value < b - min_delta,
            (Some(b), Mode::Max) => value > b + min_delta,
        };
        if improved {
            st.best = Some(value);
            st.best_epoch = Some(st.epoch);
            st.best_step = Some(st.step);
            st.bad_evals = 0;
            if let Some(slot) = best_bytes {
                *slot = Some(model_to_bytes(model)?);
            }
        } else {
            st.bad_evals += 1;
            if let Some(e) = es
                && st.bad_evals >= e.patience
            {
                st.stopped_early = true;
                st.stop_reason = Some(format!(
                    "{monitor} did not improve by more than {} for {} evaluations (best {:?} at step {:?})",
                    e.min_delta, st.bad_evals, st.best, st.best_step
                ));
            }
        }
        Ok(metrics)
    }

    fn save<M: Module>(
        &mut self,
        model: &M,
        optim: &ModuleOptimizer,
        schedule: &LrSchedule,
        st: &TrainerState,
        best: &Option<Vec<u8>>,
        metrics: &[(String, f64)],
    ) -> Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let mut files = vec![
            (MODEL_FILE.to_owned(), model_to_bytes(model)?),
            (
                OPTIM_FILE.to_owned(),
                optim
                    .into_bytes()
                    .map_err(record_err("optimizer record"))?
                    .to_vec(),
            ),
            (SCHED_FILE.to_owned(), schedule.state()?),
            (
                STATE_FILE.to_owned(),
                serde_json::to_vec(st).map_err(json_err("trainer state"))?,
            ),
        ];
        if let Some(b) = best {
            files.push((BEST_FILE.to_owned(), b.clone()));
        }
        store.save(TrainingCheckpoint {
            step: st.step,
            epoch: st.epoch as u64,
            metrics: metrics.to_vec(),
            files,
        })
    }
}
