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
//!   data position, RNG seeds), **automatic resume**, and completed experiments skipped unless
//!   forced ([`checkpoint`]).
//! - **Logging** through any [`MetricSink`], e.g. an
//!   [`ExperimentTracker`](exptrack_core::ExperimentTracker) that fans out to every backend.
//! - An **evaluator** ([`eval`]) for classification, regression and calibration metrics and a
//!   K-fold helper; the [`quickstart`] example model as a library function.
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
//!
//! ## Example
//! ```ignore
//! use exptrack_trainer::{TrainingConfig, TrainingManager, DirCheckpointStore, MemorySink};
//! let config = TrainingConfig { num_epochs: 5, batch_size: 64, ..TrainingConfig::default() };
//! let sink = MemorySink::new();
//! let mut manager = TrainingManager::new(config)?
//!     .with_sink(sink.clone())
//!     .with_checkpoints(DirCheckpointStore::new("checkpoints", 2)?);
//! let model = MyModel::new(manager.device());
//! let (model, result) = manager.fit(model, &train, &valid)?;
//! println!("best {:?} at epoch {:?}", result.best_metric, result.best_epoch);
//! ```

pub mod amp;
pub mod batch;
#[cfg(feature = "burn-train")]
pub mod burn_train;
pub mod checkpoint;
pub mod cnn;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod grads;
pub mod idx;
pub mod logging;
pub mod manager;
pub mod model;
pub mod quickstart;
pub mod scheduler;

#[cfg(feature = "burn-train")]
pub use burn_train::BurnTrainModel;
pub use checkpoint::{CheckpointStore, DirCheckpointStore, TrainingCheckpoint};
pub use config::{
    ClippingKind, EarlyStoppingConfig, MixedPrecision, Mode, OptimizerKind, SchedulerKind,
    SchedulerOptions, TrainingConfig,
};
pub use data::{BatchContext, BatchSource, ClassificationBatch, ClassificationData};
pub use error::{Error, Result};
pub use logging::{MemorySink, MetricSink};
pub use manager::{EvalRecord, TrainingManager, TrainingResult};
pub use model::{ModelOutput, StepOutput, TrainModel, TrainStepOutput};

/// burn, re-exported so users build models against the exact version this crate uses.
pub use burn;
