//! The quickstart's model and data: a burn MLP classifier ([`Mlp`]) and a generated
//! Gaussian-mixture dataset ([`generate_dataset`], no download), with the quickstart's default
//! experiment config ([`DEFAULT_CONFIG`]) and its `[quickstart]` sizes ([`QuickstartSizes`]).
//! The program that trains it with tracking, checkpoints and resume is
//! `exptrack::quickstart::run` (the facade builds the trackers from the config).
//!
//! ```
//! use exptrack_trainer::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
//! use exptrack_trainer::{TrainingConfig, TrainingManager};
//! # fn main() -> Result<(), exptrack_trainer::Error> {
//! let config = TrainingConfig {
//!     num_epochs: 1,
//!     batch_size: 64,
//!     progress: false,
//!     ..TrainingConfig::default()
//! };
//! let mut manager = TrainingManager::new(config)?;
//! let (train, valid) = generate_dataset(256, 64, 42)?;
//! let model = Mlp::new(FEATURES, 32, CLASSES, manager.device());
//! let (_model, result) = manager.fit(model, &train, &valid)?;
//! assert_eq!(result.steps, 4); // 256 items in batches of 64
//! # Ok(()) }
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use exptrack_core::ExperimentConfig;
use rand::{Rng, SeedableRng};

use crate::data::{ClassificationBatch, ClassificationData};
use crate::error::{Error, Result};
use crate::model::{StepOutput, TrainModel};

/// Number of input features of the generated dataset.
pub const FEATURES: usize = 16;
/// Number of classes of the generated dataset.
pub const CLASSES: usize = 10;

/// The default experiment configuration of the quickstart (used when no file is given).
pub const DEFAULT_CONFIG: &str = r#"[experiment]
name = "quickstart"
description = "burn MLP classifier on a generated Gaussian-mixture dataset"
tags = ["quickstart", "mlp"]

[tracking]
runs_dir = "runs"
use_tensorboard = true

[checkpointing]
dir = "runs/checkpoints"
max_checkpoints = 2
async = true

[training]
num_epochs = 8
batch_size = 64
learning_rate = 0.002
optimizer = "adamw"
weight_decay = 0.0001
scheduler = "cosine"
warmup_steps = 50
gradient_clipping = "norm"
max_grad_norm = 1.0
log_frequency = 25
eval_frequency = 0
checkpoint_save_frequency = 200
seed = 42
device = "cpu"

[training.early_stopping]
monitor = "valid/accuracy"
mode = "max"
patience = 3
min_delta = 0.0005
restore_best_weights = true

[quickstart]
train_items = 8000
valid_items = 2000
hidden = 128
"#;

/// A two-hidden-layer ReLU MLP classifier.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    out: Linear,
}

impl Mlp {
    /// `inputs → hidden → hidden → classes`, on `device`.
    pub fn new(inputs: usize, hidden: usize, classes: usize, device: &Device) -> Self {
        Mlp {
            fc1: LinearConfig::new(inputs, hidden).init(device),
            fc2: LinearConfig::new(hidden, hidden).init(device),
            out: LinearConfig::new(hidden, classes).init(device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.out.forward(x)
    }
}

impl TrainModel for Mlp {
    type Batch = ClassificationBatch<2>;

    fn step(&self, batch: Self::Batch) -> StepOutput {
        StepOutput::classification(self.forward(batch.inputs), batch.targets)
    }
}

/// A Gaussian mixture with two clusters per class (so the classes are not linearly separable):
/// cluster centres `~ N(0, 1.2²)` per feature, items `centre + N(0, 1)`. Deterministic in `seed`.
/// Returns `(train, valid)`.
pub fn generate_dataset(
    train_items: usize,
    valid_items: usize,
    seed: u64,
) -> Result<(ClassificationData<2>, ClassificationData<2>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_DA7A);
    let mut normal = move || -> f32 {
        // Box–Muller.
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random_range(0.0..1.0);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let centres: Vec<Vec<f32>> = (0..CLASSES * 2)
        .map(|_| (0..FEATURES).map(|_| 1.2 * normal()).collect())
        .collect();
    let total = train_items + valid_items;
    let mut x = Vec::with_capacity(total * FEATURES);
    let mut y = Vec::with_capacity(total);
    for i in 0..total {
        let cluster = i % (CLASSES * 2);
        for c in &centres[cluster] {
            x.push(c + normal());
        }
        y.push((cluster / 2) as i64);
    }
    let split = train_items * FEATURES;
    let valid_x = x.split_off(split);
    let valid_y = y.split_off(train_items);
    Ok((
        ClassificationData::new(x, vec![FEATURES], y, CLASSES)?,
        ClassificationData::new(valid_x, vec![FEATURES], valid_y, CLASSES)?,
    ))
}

/// The `[quickstart]` section: dataset sizes and the hidden width of the [`Mlp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickstartSizes {
    /// Training items (default 8000).
    pub train_items: usize,
    /// Validation items (default 2000).
    pub valid_items: usize,
    /// Hidden width (default 128).
    pub hidden: usize,
}

impl QuickstartSizes {
    /// Reads `[quickstart]` of `config` (each key optional; each a positive integer).
    pub fn from_config(config: &ExperimentConfig) -> Result<Self> {
        let get = |key: &str, default: usize| -> Result<usize> {
            match config.section("quickstart").and_then(|t| t.get(key)) {
                None => Ok(default),
                Some(v) => v
                    .as_integer()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i > 0)
                    .ok_or_else(|| {
                        Error::Config(format!("[quickstart].{key} must be a positive integer"))
                    }),
            }
        };
        Ok(QuickstartSizes {
            train_items: get("train_items", 8000)?,
            valid_items: get("valid_items", 2000)?,
            hidden: get("hidden", 128)?,
        })
    }
}

/// Renders the run's curves into `<run_dir>/plots` and logs them as artifacts (feature `plots`).
/// A plotting failure is reported on stderr and never fails the run; without the feature this does
/// nothing.
pub fn log_plots(tracker: &exptrack_core::ExperimentTracker, run_dir: &std::path::Path) {
    #[cfg(feature = "plots")]
    {
        // The plots are drawn from the local store: make sure it has every event first. A
        // backend that did not confirm is reported (once, with its cause) when the run finishes.
        if let Err(e) = tracker.flush_timeout(std::time::Duration::from_secs(10)) {
            tracing::debug!("flush before plotting: {e}");
        }
        match exptrack_plot::plot_run(run_dir, run_dir.join("plots")) {
            Ok(files) => {
                for f in files {
                    let name = match f.file_name() {
                        Some(n) => format!("plots/{}", n.to_string_lossy()),
                        None => continue,
                    };
                    if let Err(e) = tracker.log_artifact(&f, &name) {
                        eprintln!("warning: logging plot {}: {e}", f.display());
                    }
                }
            }
            Err(e) => eprintln!("warning: plotting the run failed: {e}"),
        }
    }
    #[cfg(not(feature = "plots"))]
    let _ = (tracker, run_dir);
}
