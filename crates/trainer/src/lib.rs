//! # exptrack-trainer
//!
//! A training manager for [burn](https://burn.dev) 0.22 that closes what burn-train leaves open
//! and wires training to exptrack's trackers and checkpoints:
//!
//! - **Mixed precision** ([`amp`]): f16/bf16 forward and backward through casts of the f32 master
//!   weights inside the forward pass, f32 optimizer state, dynamic loss scaling with PyTorch
//!   `GradScaler` semantics (2^16, ×2 after 2000 finite steps, ×0.5 and the step skipped on
//!   inf/NaN), clipping after unscaling, one host readback per step.
//! - **Gradient accumulation** that averages over micro-batches and **clipping** by global norm
//!   or by value ([`grads`]).
//! - **Schedules** ([`scheduler`]): burn's cosine, linear, step and exponential, plus
//!   `ReduceLROnPlateau` and `OneCycleLR` written here, with warm-up; state in checkpoints.
//! - **Early stopping** with `monitor`, `mode`, `patience`, `min_delta`, `check_finite` and
//!   `restore_best_weights`.
//! - **Checkpoints** every N steps and at epoch ends (model, optimizer, scheduler, loss scaler,
//!   data position, RNG seeds) as one checkpoint of exptrack-checkpoint's
//!   [`ModelCheckpointer`](exptrack_checkpoint::ModelCheckpointer) (atomic, hashed, retention,
//!   background saves), **automatic resume**, and completed experiments skipped unless forced.
//! - **Logging** through any [`MetricSink`], e.g. an
//!   [`ExperimentTracker`](exptrack_core::ExperimentTracker) that fans out to every backend.
//! - An **evaluator** ([`eval`]) for classification, regression and calibration metrics and a
//!   K-fold helper; the [`quickstart`]'s model and generated dataset.
//!
//! ## Feature flags
//! - `flex` (default): burn's pure-Rust CPU backend (`device = "cpu"`), with SIMD and rayon.
//! - `ndarray`: burn-ndarray for users who pin it (`device = "ndarray"`; `cpu` when `flex` is off).
//! - `wgpu`, `vulkan`, `cuda`: GPU backends (`device = "wgpu" | "vulkan" | "cuda"`; `auto` picks
//!   the first compiled GPU backend with a hardware adapter, else the CPU). Off by default so the
//!   default build stays CPU-only.
//! - `burn-train`: module `burn_train`: exptrack's logger, metric history and checkpointer for
//!   burn-train's own `SupervisedTraining` loop (`burn_train::Tracking`), and `BurnTrainModel`,
//!   which trains models written for burn-train's `TrainStep` / `InferenceStep` with the
//!   TrainingManager (pulls in burn's `train` feature).
//! - `plots` (default): loss / accuracy / lr plots of a run (PNG + SVG, [`quickstart::log_plots`]).
//! - `testing`: test hooks (`TrainingManager::inject_nonfinite_grads_at`), for this crate's
//!   tests and yours; off in normal builds.
//!
//! ## Example
//! ```
//! use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
//! use exptrack_trainer::quickstart::{Mlp, generate_dataset};
//! use exptrack_trainer::{MemorySink, TrainingConfig, TrainingManager};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let config = TrainingConfig {
//!     num_epochs: 2,
//!     batch_size: 64,
//!     progress: false,
//!     ..TrainingConfig::default()
//! };
//! let checkpoints = CheckpointConfig { dir: tmp.path().join("checkpoints"), ..CheckpointConfig::default() };
//! let sink = MemorySink::new(); // or an `ExperimentTracker`, which fans out to every backend
//! let mut manager = TrainingManager::new(config)?
//!     .with_sink(sink.clone())
//!     .with_checkpointer(ModelCheckpointer::open("my-experiment", checkpoints)?);
//! let (train, valid) = generate_dataset(512, 128, 1)?;
//! let model = Mlp::new(16, 32, 10, manager.device());
//! let (_model, result) = manager.fit(model, &train, &valid)?;
//! println!("best {:?} at epoch {:?}", result.best_metric, result.best_epoch);
//! # Ok(()) }
//! ```

pub mod amp;
pub mod batch;
#[cfg(feature = "burn-train")]
pub mod burn_train;
mod checkpointing;
pub mod cnn;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod grads;
pub mod idx;
pub mod logging;
pub mod manager;
pub mod model;
pub mod optim;
mod progress;
pub mod quickstart;
pub mod result;
pub mod scheduler;

#[cfg(feature = "burn-train")]
pub use burn_train::BurnTrainModel;
pub use config::{
    ClippingKind, EarlyStoppingConfig, MixedPrecision, Mode, OptimizerKind, SchedulerKind,
    SchedulerOptions, TrainingConfig,
};
pub use data::{BatchContext, BatchSource, ClassificationBatch, ClassificationData};
pub use error::{Error, Result};
pub use logging::{MemorySink, MetricSink};
pub use manager::TrainingManager;
pub use model::{ModelOutput, StepOutput, TrainModel, TrainStepOutput};
pub use result::{EvalRecord, TrainingResult};

/// burn, re-exported so users build models against the exact version this crate uses.
pub use burn;
