//! # exptrack
//!
//! Experiment tracking for [burn](https://burn.dev) users: one handle that fans events out to
//! TensorBoard, MLflow and Weights & Biases, a local run store that never loses an event,
//! crash-safe checkpoints and a training manager.
//!
//! Training (feature `trainer`): [`Experiment`] reads the config once and yields the tracker
//! with its backends, the checkpointer for the experiment id, the training config and the resume
//! decision, or says the experiment already completed (the README's program):
//!
//! ```no_run
//! # #[cfg(feature = "trainer")]
//! # fn main() -> exptrack::Result<()> {
//! use exptrack::trainer::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
//! use exptrack::{Experiment, Start};
//!
//! let mut run = match Experiment::from_file("experiment.toml")?.start()? {
//!     Start::Completed(done) => {
//!         println!("{done}");
//!         return Ok(());
//!     }
//!     Start::Train(run) => run,
//! };
//! let (train, valid) = generate_dataset(8000, 2000, 42)?;
//! let model = Mlp::new(FEATURES, 128, CLASSES, run.device());
//! let (_model, result) = run.fit(model, &train, &valid)?;
//! println!("{}", run.finish(&result)?);
//! # Ok(()) }
//! # #[cfg(not(feature = "trainer"))]
//! # fn main() {}
//! ```
//!
//! Tracking alone (any loop):
//!
//! ```no_run
//! use exptrack::{ExperimentConfig, RunStatus};
//!
//! # fn main() -> exptrack::Result<()> {
//! // Every backend switched on in `[tracking]` (and compiled in) is opened, plus the local store.
//! let config = ExperimentConfig::from_file("experiment.toml")?;
//! let tracker = exptrack::tracker(config)?.build()?;
//! tracker.log_hyperparameters(&[("lr", 1e-3)])?;
//! for step in 0..100u64 {
//!     tracker.log_metrics(step, &[("train/loss", 1.0 / (step + 1) as f64)])?;
//! }
//! println!("{}", tracker.finish(RunStatus::Completed)?);
//! # Ok(()) }
//! ```
//!
//! # Names
//! Everything of [`exptrack_core`] is re-exported here; [`Resume`] is how the *tracker* picks its
//! run. The other crates' like-named types get distinct names: [`CheckpointResume`] (what the
//! checkpointer found: fresh, resumed, completed), [`MonitorMode`] (min/max of a monitored
//! metric, for checkpoints and early stopping alike) and [`WandbMode`] (online/offline).
//!
//! # Feature flags
//! - `tensorboard` (default): the TensorBoard event-file backend ([`tensorboard`]).
//! - `mlflow`: the MLflow REST backend ([`mlflow`]).
//! - `wandb`: the Weights & Biases backend, offline run directories and the online API
//!   ([`wandb`]).
//! - `checkpoint`: the crash-safe checkpointer ([`checkpoint`]).
//! - `trainer`: the burn training manager ([`trainer`]; pulls in burn), [`Experiment`] and the
//!   [`quickstart`] program; implies `checkpoint`.
//! - `wgpu`: GPU training through burn's wgpu backend (implies `trainer`).
//! - `vulkan`: burn's wgpu backend on Vulkan (SPIR-V) (implies `wgpu`).
//! - `cuda`: GPU training through burn's CUDA backend (implies `trainer`).
//! - `burn-train`: `burn_train`: exptrack for burn-train's own `SupervisedTraining` loop (a
//!   tracker logger, a metric history for its checkpointing and early stopping, crash-safe
//!   per-epoch checkpoints and resume); see the README section "Already using burn-train?"
//!   (implies `trainer`).
//! - `safetensors`: export a checkpoint's weights as safetensors in PyTorch's layout
//!   (`checkpoint::burn_support::export_safetensors`; implies `checkpoint`).
//! - `nvml`: per-GPU utilisation, memory, temperature and power in the system metrics, through
//!   NVIDIA's NVML loaded at run time (without a driver: one debug line, no GPU keys).
//! - `s3`, `gcs`, `azure`: checkpoints in object storage (`[checkpointing] dir =
//!   "s3://bucket/prefix"`, `gs://`, `az://`), credentials from the provider's environment
//!   variables (implies `checkpoint`).

// The crate docs above link to items of optional features; with some of them off those links
// have nothing to point at. A doc build with `trainer`, `mlflow` and `wandb` checks every link.
#![cfg_attr(
    not(all(feature = "trainer", feature = "mlflow", feature = "wandb")),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(feature = "trainer")]
mod experiment;
mod facade_error;
#[cfg(feature = "trainer")]
pub mod quickstart;
mod trackers;

pub use exptrack_core as core;
pub use exptrack_core::*;

#[cfg(feature = "trainer")]
pub use experiment::{Completed, Experiment, Run, Start};
pub use facade_error::{FacadeError, Result};
#[cfg(feature = "wandb")]
pub use trackers::wandb_builder;
pub use trackers::{tracker, trackers_from_config};

/// The facade's error type.
pub type Error = FacadeError;

#[cfg(feature = "checkpoint")]
pub use exptrack_checkpoint::{Mode as MonitorMode, Resume as CheckpointResume};
#[cfg(feature = "wandb")]
pub use exptrack_wandb::Mode as WandbMode;

#[cfg(feature = "tensorboard")]
pub use exptrack_tensorboard as tensorboard;

#[cfg(feature = "mlflow")]
pub use exptrack_mlflow as mlflow;

#[cfg(feature = "wandb")]
pub use exptrack_wandb as wandb;

#[cfg(feature = "checkpoint")]
pub use exptrack_checkpoint as checkpoint;

#[cfg(feature = "trainer")]
pub use exptrack_trainer as trainer;

#[cfg(feature = "burn-train")]
pub use exptrack_trainer::burn_train;
