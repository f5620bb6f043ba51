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

/// Whether a smaller or a larger monitored value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Lower is better (losses).
    #[default]
    Min,
    /// Higher is better (accuracy).
    Max,
}

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

/// Refuses `precision` on `device` when `device.supports_dtype` says no.
pub fn check_precision(device: &Device, precision: MixedPrecision) -> Result<()> {
    check_precision_with(&format!("{device:?}"), precision, |d| {
        device.supports_dtype(d)
    })
}

/// [`check_precision`] with the support query given as a function (for devices described
/// rather than opened).
pub fn check_precision_with(
    device: &str,
    precision: MixedPrecision,
    supports: impl Fn(FloatDType) -> bool,
) -> Result<()> {
    let Some(dtype) = precision.dtype() else {
        return Ok(());
    };
    if supports(dtype) {
        return Ok(());
    }
    let hint = if precision == MixedPrecision::Bf16 && supports(FloatDType::F16) {
        ", or `mixed_precision = \"f16\"`, which this device supports".to_owned()
    } else {
        String::new()
    };
    Err(Error::UnsupportedPrecision {
        precision: precision.name().to_owned(),
        device: device.to_owned(),
        hint,
    })
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

const DEVICE_NAMES: &[&str] = &["auto", "cpu", "flex", "ndarray", "wgpu", "vulkan", "cuda"];

fn parse_device_name(name: &str) -> Result<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    DEVICE_NAMES
        .iter()
        .find(|n| **n == lower)
        .copied()
        .ok_or_else(|| {
            Error::Config(format!(
                "device `{name}` is unknown; expected one of {}",
                DEVICE_NAMES.join(", ")
            ))
        })
}

fn not_compiled(name: &str, feature: &str) -> Error {
    Error::Device {
        device: name.to_owned(),
        reason: format!(
            "exptrack-trainer was built without the `{feature}` cargo feature; enable it to use this device"
        ),
    }
}

/// Parses a device name into a burn [`Device`] (no autodiff).
///
/// `cpu` means burn's `flex` backend (or `ndarray` when only that feature is on). `wgpu`,
/// `vulkan` and `cuda` fail with [`Error::Device`] when the runtime is not compiled in or the
/// machine offers no adapter for it (so a missing driver is reported here, not as a panic at the
/// first tensor). `auto` picks the first compiled GPU runtime with a hardware adapter
/// ([`detect_gpu`]) and falls back to the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    match parse_device_name(name)? {
        "cpu" => cpu_device(name),
        "flex" => {
            #[cfg(feature = "flex")]
            {
                Ok(Device::flex())
            }
            #[cfg(not(feature = "flex"))]
            {
                Err(not_compiled(name, "flex"))
            }
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            {
                #[allow(deprecated)] // the user asked for it by name
                Ok(Device::ndarray())
            }
            #[cfg(not(feature = "ndarray"))]
            {
                Err(not_compiled(name, "ndarray"))
            }
        }
        "auto" => match first_gpu() {
            Some((runtime, device)) => {
                tracing::info!(runtime, "device `auto`: using the GPU");
                Ok(device)
            }
            None => cpu_device(name).map_err(|e| Error::Device {
                device: name.to_owned(),
                reason: format!(
                    "no GPU adapter found (GPU runtimes compiled in: {}) and no CPU backend: {e}",
                    list_or_none(&compiled_gpu_runtimes())
                ),
            }),
        },
        runtime => gpu_device(runtime, false)?.ok_or_else(|| no_adapter(name, runtime)),
    }
}

/// The GPU runtimes compiled into this build (cargo features `cuda`, `vulkan`, `wgpu`), in the
/// order `device = "auto"` tries them.
pub fn compiled_gpu_runtimes() -> Vec<&'static str> {
    [
        ("cuda", cfg!(feature = "cuda")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("wgpu", cfg!(feature = "wgpu")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

/// The first compiled GPU runtime (see [`compiled_gpu_runtimes`]) for which the machine has a
/// hardware adapter; `None` when there is none. Software rasterizers (lavapipe, llvmpipe) do not
/// count: name the runtime explicitly to use one.
pub fn detect_gpu() -> Option<&'static str> {
    first_gpu().map(|(runtime, _)| runtime)
}

fn first_gpu() -> Option<(&'static str, Device)> {
    compiled_gpu_runtimes()
        .into_iter()
        .find_map(|runtime| Some((runtime, gpu_device(runtime, true).ok()??)))
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn no_adapter(name: &str, runtime: &str) -> Error {
    let reason = match runtime {
        "cuda" => {
            "no CUDA device found: the NVIDIA driver (libcuda) is not loadable or reports no GPU"
        }
        "vulkan" => {
            "no Vulkan adapter found: install the Vulkan loader (libvulkan1) and a GPU driver's \
             ICD, or point VK_DRIVER_FILES at one"
        }
        _ => "no wgpu adapter found on any graphics API (Vulkan, Metal, DX12, OpenGL)",
    };
    Error::Device {
        device: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The default device of GPU `runtime` when the machine has an adapter for it (with
/// `hardware_only`, one that is not a software rasterizer); `Err` when the runtime is not
/// compiled in. Enumerating adapters opens no device.
fn gpu_device(runtime: &str, hardware_only: bool) -> Result<Option<Device>> {
    // (the runtime's default device, every adapter it lists, its software adapter if any)
    #[allow(unused_mut, unused_assignments)] // which arms exist depends on the features
    let mut found: Option<(Device, Vec<Device>, Option<Device>)> = None;
    #[cfg(feature = "cuda")]
    if runtime == "cuda" {
        let adapters = Device::enumerate(burn::tensor::DeviceType::Cuda);
        found = Some((Device::cuda(0), adapters.to_vec(), None));
    }
    #[cfg(feature = "vulkan")]
    if runtime == "vulkan" {
        use burn::tensor::DeviceKind;
        let adapters = Device::enumerate(burn::tensor::DeviceType::Vulkan);
        found = Some((
            Device::vulkan(DeviceKind::DefaultDevice),
            adapters.to_vec(),
            Some(Device::vulkan(DeviceKind::Cpu)),
        ));
    }
    #[cfg(feature = "wgpu")]
    if runtime == "wgpu" {
        use burn::tensor::DeviceKind;
        let adapters = Device::enumerate(burn::tensor::DeviceType::Wgpu);
        found = Some((
            Device::wgpu(DeviceKind::DefaultDevice),
            adapters.to_vec(),
            Some(Device::wgpu(DeviceKind::Cpu)),
        ));
    }
    let Some((device, adapters, software)) = found else {
        return Err(not_compiled(runtime, runtime));
    };
    let usable = adapters
        .iter()
        .any(|a| !hardware_only || Some(a) != software.as_ref());
    Ok(usable.then_some(device))
}

fn cpu_device(name: &str) -> Result<Device> {
    #[cfg(feature = "flex")]
    {
        let _ = name;
        Ok(Device::flex())
    }
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    {
        let _ = name;
        #[allow(deprecated)] // only reached when flex is not compiled in
        Ok(Device::ndarray())
    }
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    {
        Err(not_compiled(name, "flex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn parses_every_field_from_toml() {
        let t = table(
            r#"
            num_epochs = 3
            batch_size = 16
            learning_rate = 0.01
            weight_decay = 0.001
            optimizer = "sgd"
            momentum = 0.9
            nesterov = true
            scheduler = "plateau"
            warmup_steps = 5
            gradient_clipping = "norm"
            max_grad_norm = 0.5
            gradient_accumulation_steps = 4
            mixed_precision = "bf16"
            log_frequency = 7
            eval_frequency = 11
            checkpoint_save_frequency = 13
            seed = 9
            device = "cpu"
            [scheduler_options]
            factor = 0.5
            patience = 2
            cooldown = 1
            [early_stopping]
            monitor = "valid/accuracy"
            mode = "max"
            patience = 4
            min_delta = 0.01
            check_finite = false
            restore_best_weights = false
            "#,
        );
        let c = TrainingConfig::from_table(&t).unwrap();
        assert_eq!(c.num_epochs, 3);
        assert_eq!(c.optimizer, OptimizerKind::Sgd);
        assert!(c.nesterov);
        assert_eq!(c.scheduler, SchedulerKind::Plateau);
        assert_eq!(c.scheduler_options.factor, 0.5);
        assert_eq!(c.scheduler_options.patience, 2);
        assert_eq!(c.gradient_clipping, ClippingKind::Norm);
        assert_eq!(c.gradient_accumulation_steps, 4);
        assert_eq!(c.mixed_precision, MixedPrecision::Bf16);
        assert_eq!(c.checkpoint_save_frequency, 13);
        let es = c.early_stopping.unwrap();
        assert_eq!(es.mode, Mode::Max);
        assert_eq!(es.patience, 4);
        assert!(!es.restore_best_weights);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = TrainingConfig::from_table(&table("learnig_rate = 0.1")).unwrap_err();
        assert!(err.to_string().contains("learnig_rate"), "{err}");
        let err = TrainingConfig::from_table(&table("[early_stopping]\npatiense = 1")).unwrap_err();
        assert!(err.to_string().contains("patiense"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (src, needle) in [
            ("batch_size = 0", "batch_size"),
            ("learning_rate = -1.0", "learning_rate"),
            (
                "gradient_accumulation_steps = 0",
                "gradient_accumulation_steps",
            ),
            ("device = \"tpu\"", "tpu"),
            ("mixed_precision = \"fp8\"", "fp8"),
            (
                "scheduler = \"onecycle\"\n[scheduler_options]\npct_start = 1.5",
                "pct_start",
            ),
        ] {
            let err = TrainingConfig::from_table(&table(src)).unwrap_err();
            assert!(err.to_string().contains(needle), "{src}: {err}");
        }
    }

    #[test]
    fn every_out_of_range_number_names_key_and_range() {
        for (src, key) in [
            ("num_epochs = 0", "num_epochs"),
            ("batch_size = 0", "batch_size"),
            ("batch_size = 100000000000", "batch_size"),
            ("learning_rate = inf", "learning_rate"),
            ("learning_rate = nan", "learning_rate"),
            ("weight_decay = -0.1", "weight_decay"),
            ("momentum = 2.0", "momentum"),
            ("beta1 = 1.0", "beta1"),
            ("beta2 = -0.5", "beta2"),
            ("epsilon = 0.0", "epsilon"),
            ("loss_scale_init = inf", "loss_scale_init"),
            ("log_frequency = 0", "log_frequency"),
            ("warmup_steps = 100000000000", "warmup_steps"),
            ("max_grad_norm = inf", "max_grad_norm"),
            (
                "[scheduler_options]\ngamma = inf",
                "scheduler_options.gamma",
            ),
            (
                "[scheduler_options]\nmin_lr = -1.0",
                "scheduler_options.min_lr",
            ),
            (
                "[scheduler_options]\nmax_lr = nan",
                "scheduler_options.max_lr",
            ),
            (
                "[early_stopping]\nmin_delta = inf",
                "early_stopping.min_delta",
            ),
        ] {
            let err = TrainingConfig::from_table(&table(src))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{src}: {err}");
            assert!(err.contains("allowed"), "{src}: {err}");
        }
    }

    #[test]
    fn errors_in_an_experiment_file_name_file_line_and_key() {
        let text =
            "[experiment]\nname = \"x\"\n\n[training]\nbatch_size = 8\nlearning_rate = inf\n";
        let exp = exptrack_core::ExperimentConfig::parse(text, "exp.toml").unwrap();
        let err = TrainingConfig::from_experiment(&exp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exp.toml:6:1: training.learning_rate = inf is out of range: allowed"),
            "{err}"
        );
        // Wrong types and unknown keys name the line too.
        let text = "[experiment]\nname = \"x\"\n[training]\nbatch_size = -4\n";
        let exp = exptrack_core::ExperimentConfig::parse(text, "exp.toml").unwrap();
        let err = TrainingConfig::from_experiment(&exp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exp.toml:4:"), "{err}");
        assert!(err.contains("training.batch_size"), "{err}");
        let text = "[experiment]\nname = \"x\"\n[training]\nlearnig_rate = 1.0\n";
        let exp = exptrack_core::ExperimentConfig::parse(text, "exp.toml").unwrap();
        let err = TrainingConfig::from_experiment(&exp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exp.toml:4:1") && err.contains("learnig_rate"),
            "{err}"
        );
        // Defaults are in range.
        TrainingConfig::default().validate().unwrap();
    }

    #[test]
    fn round_trips_through_a_table() {
        let c = TrainingConfig {
            num_epochs: 2,
            mixed_precision: MixedPrecision::F16,
            early_stopping: Some(EarlyStoppingConfig::default()),
            ..TrainingConfig::default()
        };
        let back = TrainingConfig::from_table(&c.to_table().unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn devices_parse_and_uncompiled_ones_are_explained() {
        assert!(parse_device("cpu").is_ok());
        assert!(parse_device("AUTO").is_ok());
        for runtime in ["cuda", "vulkan", "wgpu"] {
            if !compiled_gpu_runtimes().contains(&runtime) {
                let err = parse_device(runtime).unwrap_err().to_string();
                assert!(err.contains(&format!("`{runtime}` cargo feature")), "{err}");
            }
        }
        if compiled_gpu_runtimes().is_empty() {
            assert_eq!(detect_gpu(), None);
        }
    }

    #[test]
    fn flex_supports_both_half_precisions() {
        let d = parse_device("cpu").unwrap();
        check_precision(&d, MixedPrecision::F16).unwrap();
        check_precision(&d, MixedPrecision::Bf16).unwrap();
        check_precision(&d, MixedPrecision::Off).unwrap();
    }

    #[test]
    fn unsupported_precision_is_refused_with_a_hint() {
        // A Vulkan-like device: f16 arithmetic, bf16 storage only.
        let vulkan = |d: FloatDType| d == FloatDType::F16;
        let err = check_precision_with("Vulkan(0)", MixedPrecision::Bf16, vulkan).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bf16") && msg.contains("Vulkan(0)"), "{msg}");
        assert!(
            msg.contains("\"f16\"`, which this device supports"),
            "{msg}"
        );
        check_precision_with("Vulkan(0)", MixedPrecision::F16, vulkan).unwrap();
        let none = |_: FloatDType| false;
        let err = check_precision_with("X", MixedPrecision::F16, none).unwrap_err();
        assert!(
            !err.to_string().contains("which this device supports"),
            "{err}"
        );
    }
}
