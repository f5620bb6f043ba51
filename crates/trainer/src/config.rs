//! `[training]`: everything the [`TrainingManager`](crate::TrainingManager) needs, from a TOML
//! table or built in code.
//!
//! ```toml
//! [training]
//! num_epochs = 10
//! batch_size = 64
//! learning_rate = 1e-3
//! weight_decay = 1e-4
//! optimizer = "adamw"            # adamw | adam | sgd
//! momentum = 0.9                 # sgd only (0 = plain SGD)
//! nesterov = false               # sgd only
//! scheduler = "cosine"           # constant | cosine | step | linear | exponential | plateau | onecycle
//! warmup_steps = 100
//! gradient_clipping = "norm"     # none | norm | value
//! max_grad_norm = 1.0            # threshold for "norm" (global L2 norm) and "value" (|g| <= v)
//! gradient_accumulation_steps = 1
//! mixed_precision = "off"        # off | f16 | bf16
//! log_frequency = 50             # optimizer steps
//! eval_frequency = 0             # optimizer steps; 0 = at every epoch end only
//! checkpoint_save_frequency = 500 # optimizer steps; 0 = at epoch ends only
//! seed = 42
//! device = "auto"                # cpu | flex | ndarray | wgpu | vulkan | cuda | auto
//!
//! [training.scheduler_options]   # all optional, PyTorch defaults
//! min_lr = 0.0
//!
//! [training.early_stopping]      # absent = no early stopping
//! monitor = "valid/loss"
//! mode = "min"
//! patience = 5
//! ```
//!
//! Unknown keys are errors that name the key.

use burn::tensor::{Device, FloatDType};
use serde::{Deserialize, Serialize};

use crate::device::{DEVICE_NAMES, check_precision, parse_device, parse_device_name};
use crate::error::{Error, Result};

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay).
    AdamW,
    /// Adam (L2 weight decay when `weight_decay > 0`).
    Adam,
    /// SGD with optional momentum / Nesterov.
    Sgd,
}

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Constant learning rate.
    Constant,
    /// Cosine annealing to `min_lr` over the run (burn's scheduler).
    Cosine,
    /// Multiply by `gamma` every `step_size` optimizer steps (burn's scheduler).
    Step,
    /// Linear from `learning_rate` to `final_lr` over the run (burn's scheduler).
    Linear,
    /// Multiply by `gamma` every optimizer step (burn's scheduler).
    Exponential,
    /// PyTorch `ReduceLROnPlateau`, stepped at every evaluation with the monitored metric.
    Plateau,
    /// PyTorch `OneCycleLR` (cosine anneal), stepped every optimizer step.
    OneCycle,
}

/// Gradient clipping mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClippingKind {
    /// No clipping.
    #[default]
    None,
    /// Scale all gradients so that their global L2 norm is at most `max_grad_norm`
    /// (PyTorch `clip_grad_norm_`).
    Norm,
    /// Clamp every gradient element to `[-max_grad_norm, max_grad_norm]`
    /// (PyTorch `clip_grad_value_`).
    Value,
}

/// Reduced precision for forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    /// Everything in f32.
    #[default]
    Off,
    /// f16 compute, f32 master weights, dynamic loss scaling.
    F16,
    /// bf16 compute, f32 master weights (loss scaling kept on, harmless).
    Bf16,
}

impl MixedPrecision {
    /// The compute dtype, `None` when off.
    pub fn dtype(self) -> Option<FloatDType> {
        match self {
            MixedPrecision::Off => None,
            MixedPrecision::F16 => Some(FloatDType::F16),
            MixedPrecision::Bf16 => Some(FloatDType::BF16),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            MixedPrecision::Off => "off",
            MixedPrecision::F16 => "f16",
            MixedPrecision::Bf16 => "bf16",
        }
    }
}

/// Whether a smaller or a larger monitored value is better (`mode = "min" | "max"`): the
/// checkpointer's own type, so `[training.early_stopping].mode` and `[checkpointing].mode` are
/// one idea with one name.
pub use exptrack_checkpoint::Mode;

/// Relative or absolute threshold for [`SchedulerKind::Plateau`] (PyTorch `threshold_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMode {
    /// `best * (1 ∓ threshold)`.
    #[default]
    Rel,
    /// `best ∓ threshold`.
    Abs,
}

/// Options of the schedulers; every field has PyTorch's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerOptions {
    /// Floor of cosine / plateau (PyTorch `eta_min` / `min_lr`).
    pub min_lr: f64,
    /// Final learning rate of `linear` (default `learning_rate / 100`... set explicitly).
    pub final_lr: Option<f64>,
    /// `step`: optimizer steps between decays.
    pub step_size: usize,
    /// `step` / `exponential`: multiplicative factor.
    pub gamma: f64,
    /// `plateau`: factor by which the learning rate is reduced (PyTorch 0.1).
    pub factor: f64,
    /// `plateau`: evaluations with no improvement before reducing (PyTorch 10).
    pub patience: usize,
    /// `plateau`: significance threshold (PyTorch 1e-4).
    pub threshold: f64,
    /// `plateau`: `rel` or `abs` (PyTorch `rel`).
    pub threshold_mode: ThresholdMode,
    /// `plateau`: evaluations to wait after a reduction (PyTorch 0).
    pub cooldown: usize,
    /// `plateau`: `min` or `max` (PyTorch `min`); defaults to the early-stopping mode when set.
    pub mode: Option<Mode>,
    /// `plateau`: minimal decay applied; smaller updates are ignored (PyTorch 1e-8).
    pub eps: f64,
    /// `plateau`: monitored metric (defaults to the early-stopping monitor, else `valid/loss`).
    pub monitor: Option<String>,
    /// `onecycle`: peak learning rate (defaults to `learning_rate`).
    pub max_lr: Option<f64>,
    /// `onecycle`: fraction of the cycle spent increasing (PyTorch 0.3).
    pub pct_start: f64,
    /// `onecycle`: `initial_lr = max_lr / div_factor` (PyTorch 25).
    pub div_factor: f64,
    /// `onecycle`: `min_lr = initial_lr / final_div_factor` (PyTorch 1e4).
    pub final_div_factor: f64,
    /// `onecycle`: PyTorch `three_phase`.
    pub three_phase: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            min_lr: 0.0,
            final_lr: None,
            step_size: 1000,
            gamma: 0.1,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            mode: None,
            eps: 1e-8,
            monitor: None,
            max_lr: None,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

/// Early stopping (Lightning / Keras semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    /// Metric key to watch, e.g. `valid/loss` or `valid/accuracy`.
    pub monitor: String,
    /// `min` or `max`.
    pub mode: Mode,
    /// Evaluations with no improvement before stopping.
    pub patience: usize,
    /// Minimum change that counts as an improvement.
    pub min_delta: f64,
    /// Stop when the monitored value (or the training loss) is NaN or infinite.
    pub check_finite: bool,
    /// Reload the best weights at the end of training.
    pub restore_best_weights: bool,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        EarlyStoppingConfig {
            monitor: "valid/loss".to_owned(),
            mode: Mode::Min,
            patience: 3,
            min_delta: 0.0,
            check_finite: true,
            restore_best_weights: true,
        }
    }
}

/// `[training]`. Build it with [`TrainingConfig::default`] and struct update syntax, or from a
/// table with [`TrainingConfig::from_table`] / [`TrainingConfig::from_experiment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Passes over the training data.
    pub num_epochs: usize,
    /// Items per micro-batch.
    pub batch_size: usize,
    /// Base learning rate.
    pub learning_rate: f64,
    /// Weight decay (decoupled for AdamW, L2 penalty for Adam and SGD).
    pub weight_decay: f64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// SGD momentum (0 disables it).
    pub momentum: f64,
    /// SGD dampening.
    pub dampening: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Adam/AdamW beta1.
    pub beta1: f64,
    /// Adam/AdamW beta2.
    pub beta2: f64,
    /// Adam/AdamW epsilon.
    pub epsilon: f64,
    /// Learning-rate schedule.
    pub scheduler: SchedulerKind,
    /// Linear warm-up from 0 over this many optimizer steps before the schedule starts.
    pub warmup_steps: usize,
    /// Schedule options.
    pub scheduler_options: SchedulerOptions,
    /// Gradient clipping mode.
    pub gradient_clipping: ClippingKind,
    /// Clipping threshold (norm for `norm`, absolute value for `value`).
    pub max_grad_norm: f64,
    /// Micro-batches averaged per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Reduced-precision compute, with dynamic loss scaling.
    ///
    /// An optimizer step whose gradients hold an inf or NaN is skipped (weights and optimizer
    /// state untouched, the loss scale halved) and does **not** advance the learning-rate
    /// schedule: the schedule counts applied updates, so warm-up, decay and `onecycle` keep their
    /// shape however many steps the scaler skips (as Hugging Face Accelerate does; Lightning
    /// steps the scheduler regardless, its open issue #5558). The step still counts for
    /// `log_frequency`, `eval_frequency`, checkpoints and the epoch, and is logged with the rate
    /// it would have used. [`TrainingResult::skipped_steps`](crate::TrainingResult) counts them.
    pub mixed_precision: MixedPrecision,
    /// Initial loss scale (PyTorch GradScaler `init_scale`, 2^16).
    pub loss_scale_init: f64,
    /// Finite steps before the loss scale doubles (PyTorch `growth_interval`, 2000).
    pub loss_scale_growth_interval: u64,
    /// Early stopping; `None` trains for `num_epochs`.
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// Log train loss, lr and throughput every this many optimizer steps.
    pub log_frequency: u64,
    /// Evaluate every this many optimizer steps (0: only at epoch ends; epoch ends always evaluate).
    pub eval_frequency: u64,
    /// Checkpoint every this many optimizer steps (0: only at epoch ends).
    pub checkpoint_save_frequency: u64,
    /// Seed for initialization, shuffling and the device RNG.
    pub seed: u64,
    /// Device: `cpu`, `flex`, `ndarray`, `wgpu`, `vulkan`, `cuda` or `auto` (the first compiled GPU
    /// runtime with a hardware adapter, else the CPU; see [`parse_device`]).
    pub device: String,
    /// Shuffle the training data every epoch.
    pub shuffle: bool,
    /// Show progress bars on a terminal (plain lines otherwise).
    pub progress: bool,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            num_epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            optimizer: OptimizerKind::AdamW,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            scheduler: SchedulerKind::Constant,
            warmup_steps: 0,
            scheduler_options: SchedulerOptions::default(),
            gradient_clipping: ClippingKind::None,
            max_grad_norm: 1.0,
            gradient_accumulation_steps: 1,
            mixed_precision: MixedPrecision::Off,
            loss_scale_init: 65536.0,
            loss_scale_growth_interval: 2000,
            early_stopping: None,
            log_frequency: 50,
            eval_frequency: 0,
            checkpoint_save_frequency: 0,
            seed: 42,
            device: "auto".to_owned(),
            shuffle: true,
            progress: true,
        }
    }
}

impl TrainingConfig {
    /// Parses a `[training]` table. Unknown keys are errors naming the key; bad values are errors
    /// naming the key and the allowed range.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let cfg: TrainingConfig = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(format!("[training]: {}", e.message())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses `[training]` from an experiment config (defaults when the section is absent).
    /// Errors name the file, line and column of the key when the config was read from a file.
    pub fn from_experiment(config: &exptrack_core::ExperimentConfig) -> Result<Self> {
        let cfg: TrainingConfig = match config.section_as("training") {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(TrainingConfig::default()),
            Err(e) => return Err(Error::Config(e.to_string())),
        };
        match cfg.problem() {
            None => Ok(cfg),
            Some((key, message)) => Err(Error::Config(
                config
                    .key_error(&format!("training.{key}"), message)
                    .to_string(),
            )),
        }
    }

    /// The config as a TOML table (to put back into an experiment config).
    pub fn to_table(&self) -> Result<toml::Table> {
        toml::Table::try_from(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Checks values and combinations. Errors name the key and the allowed range.
    pub fn validate(&self) -> Result<()> {
        match self.problem() {
            None => Ok(()),
            Some((key, message)) => Err(Error::Config(format!("{key} {message}"))),
        }
    }

    /// The first bad value: (dotted key inside `[training]`, what is wrong).
    fn problem(&self) -> Option<(&'static str, String)> {
        use Range::*;
        let o = &self.scheduler_options;
        let counts: [(&'static str, u64, u64, u64); 4] = [
            ("num_epochs", self.num_epochs as u64, 1, MAX_COUNT),
            ("batch_size", self.batch_size as u64, 1, MAX_COUNT),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps as u64,
                1,
                MAX_COUNT,
            ),
            ("log_frequency", self.log_frequency, 1, u64::MAX),
        ];
        for (key, v, lo, hi) in counts {
            if !(lo..=hi).contains(&v) {
                return Some((key, format!("= {v} is out of range: allowed {lo} to {hi}")));
            }
        }
        let counts: [(&'static str, u64, u64, u64); 2] = [
            (
                "loss_scale_growth_interval",
                self.loss_scale_growth_interval,
                1,
                u64::MAX,
            ),
            ("warmup_steps", self.warmup_steps as u64, 0, MAX_COUNT),
        ];
        for (key, v, lo, hi) in counts {
            if !(lo..=hi).contains(&v) {
                return Some((key, format!("= {v} is out of range: allowed {lo} to {hi}")));
            }
        }
        let mut floats: Vec<(&'static str, f64, Range)> = vec![
            ("learning_rate", self.learning_rate, Positive),
            ("weight_decay", self.weight_decay, NonNegative),
            ("momentum", self.momentum, Unit),
            ("dampening", self.dampening, Unit),
            ("beta1", self.beta1, UnitOpen),
            ("beta2", self.beta2, UnitOpen),
            ("epsilon", self.epsilon, Positive),
            ("loss_scale_init", self.loss_scale_init, Positive),
            ("scheduler_options.min_lr", o.min_lr, NonNegative),
            ("scheduler_options.gamma", o.gamma, Positive),
            ("scheduler_options.threshold", o.threshold, NonNegative),
            ("scheduler_options.eps", o.eps, NonNegative),
            ("scheduler_options.div_factor", o.div_factor, Positive),
            (
                "scheduler_options.final_div_factor",
                o.final_div_factor,
                Positive,
            ),
        ];
        if self.gradient_clipping != ClippingKind::None {
            floats.push(("max_grad_norm", self.max_grad_norm, Positive));
        } else {
            floats.push(("max_grad_norm", self.max_grad_norm, NonNegative));
        }
        if let Some(v) = o.final_lr {
            floats.push(("scheduler_options.final_lr", v, NonNegative));
        }
        if let Some(v) = o.max_lr {
            floats.push(("scheduler_options.max_lr", v, Positive));
        }
        if self.scheduler == SchedulerKind::Plateau {
            floats.push(("scheduler_options.factor", o.factor, Open01));
        }
        if self.scheduler == SchedulerKind::OneCycle {
            floats.push(("scheduler_options.pct_start", o.pct_start, Open01));
        }
        if let Some(es) = &self.early_stopping {
            floats.push(("early_stopping.min_delta", es.min_delta, NonNegative));
        }
        for (key, v, range) in floats {
            if !range.contains(v) {
                let v = if v.is_nan() {
                    "nan".to_owned()
                } else {
                    format!("{v}")
                };
                return Some((
                    key,
                    format!("= {v} is out of range: allowed {}", range.describe()),
                ));
            }
        }
        if self.scheduler == SchedulerKind::Step && o.step_size == 0 {
            return Some((
                "scheduler_options.step_size",
                "= 0 is out of range: allowed 1 or more".into(),
            ));
        }
        if let Some(es) = &self.early_stopping
            && es.monitor.is_empty()
        {
            return Some(("early_stopping.monitor", "must not be empty".into()));
        }
        if parse_device_name(&self.device).is_err() {
            return Some((
                "device",
                format!(
                    "= {:?} is unknown; expected one of {}",
                    self.device,
                    DEVICE_NAMES.join(", ")
                ),
            ));
        }
        None
    }

    /// Resolves `device` to a burn device (without autodiff) and checks that it can compute in
    /// the requested mixed precision.
    pub fn resolve_device(&self) -> Result<Device> {
        let device = parse_device(&self.device)?;
        check_precision(&device, self.mixed_precision)?;
        Ok(device)
    }
}

/// Largest epoch count, batch size, accumulation or warm-up step count accepted (2^32): larger
/// ones are typos, and step counters derived from them must not overflow.
const MAX_COUNT: u64 = 1 << 32;

/// An allowed range of a float option (always finite).
#[derive(Clone, Copy)]
enum Range {
    /// `> 0`.
    Positive,
    /// `>= 0`.
    NonNegative,
    /// `0 <= v <= 1`.
    Unit,
    /// `0 <= v < 1`.
    UnitOpen,
    /// `0 < v < 1`.
    Open01,
}

impl Range {
    fn contains(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Positive => v > 0.0,
                Range::NonNegative => v >= 0.0,
                Range::Unit => (0.0..=1.0).contains(&v),
                Range::UnitOpen => (0.0..1.0).contains(&v),
                Range::Open01 => v > 0.0 && v < 1.0,
            }
    }

    fn describe(self) -> &'static str {
        match self {
            Range::Positive => "a finite number > 0",
            Range::NonNegative => "a finite number >= 0",
            Range::Unit => "0 to 1",
            Range::UnitOpen => "0 to 1 (excluding 1)",
            Range::Open01 => "between 0 and 1 (excluding both)",
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
