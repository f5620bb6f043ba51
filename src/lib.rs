//! # exptrack
//!
//! Experiment tracking for [burn](https://burn.dev) users: one handle that fans events out to
//! TensorBoard, MLflow and Weights & Biases, a local run store that never loses an event, crash-safe
//! checkpoints and a training manager.
//!
//! # Feature flags
//! - `tensorboard` (default): the TensorBoard event-file backend.
//! - `mlflow`: the MLflow REST backend.
//! - `wandb`: the Weights & Biases backend (offline run directories and the online API).
//! - `checkpoint`: the crash-safe [`ModelCheckpointer`](exptrack_checkpoint).
//! - `trainer`: the burn training manager (pulls in burn).
//! - `wgpu`: GPU training through burn's wgpu backend.

pub use exptrack_core as core;
pub use exptrack_core::*;

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
