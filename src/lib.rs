//! # exptrack
//!
//! Experiment tracking for [burn](https://burn.dev) users: one handle that fans events out to
//! TensorBoard, MLflow and Weights & Biases, a local run store that never loses an event,
//! crash-safe checkpoints and a training manager.
//!
//! ```no_run
//! use exptrack::{ExperimentConfig, RunStatus};
//!
//! # fn main() -> Result<(), exptrack::Error> {
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
//! # Feature flags
//! - `tensorboard` (default): the TensorBoard event-file backend ([`tensorboard`]).
//! - `mlflow`: the MLflow REST backend ([`mlflow`]).
//! - `wandb`: the Weights & Biases backend, offline run directories and the online API
//!   ([`wandb`]).
//! - `checkpoint`: the crash-safe checkpointer ([`checkpoint`]).
//! - `trainer`: the burn training manager ([`trainer`]; pulls in burn).
//! - `wgpu`: GPU training through burn's wgpu backend.
//! - `burn-train`: `burn_train`: exptrack for burn-train's own `SupervisedTraining` loop (a
//!   tracker logger, a metric history for its checkpointing and early stopping, crash-safe
//!   per-epoch checkpoints and resume); see the README section "Already using burn-train?".

pub use exptrack_core as core;
pub use exptrack_core::*;

/// The facade's error type.
pub type Error = FacadeError;

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

/// Errors of the facade: the core's, plus a backend that is enabled in the config but not
/// compiled in, or that failed to configure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FacadeError {
    /// From the tracking core.
    #[error(transparent)]
    Core(#[from] exptrack_core::Error),
    /// `[tracking].use_X = true` but the cargo feature is off.
    #[error(
        "[tracking].{key} = true, but exptrack was built without the `{feature}` feature \
         (enable it in Cargo.toml: exptrack = {{ features = [\"{feature}\"] }})"
    )]
    NotCompiled {
        /// The config key.
        key: &'static str,
        /// The cargo feature.
        feature: &'static str,
    },
    /// A backend could not be configured.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A builder for an [`ExperimentTracker`] with every backend that `config`'s `[tracking]`
/// section switches on: TensorBoard (`use_tensorboard`, on by default), MLflow (`use_mlflow`)
/// and W&B (`use_wandb`). The local store is always on. Adjust the builder (runs dir, resume,
/// extra trackers) before `build()`.
pub fn tracker(config: ExperimentConfig) -> Result<ExperimentTrackerBuilder, FacadeError> {
    let backends = backends_from_config(&config)?;
    let mut b = ExperimentTracker::builder(config);
    for t in backends {
        b = b.with_tracker(t);
    }
    Ok(b)
}

/// The backends `config` switches on, built but not opened.
pub fn backends_from_config(
    config: &ExperimentConfig,
) -> Result<Vec<Box<dyn Tracker>>, FacadeError> {
    let tr = &config.tracking;
    let mut out: Vec<Box<dyn Tracker>> = Vec::new();
    if tr.use_tensorboard {
        #[cfg(feature = "tensorboard")]
        out.push(Box::new(exptrack_tensorboard::TensorBoardTracker::new(
            tr.tensorboard_log_dir.clone(),
        )));
        #[cfg(not(feature = "tensorboard"))]
        return Err(FacadeError::NotCompiled {
            key: "use_tensorboard",
            feature: "tensorboard",
        });
    }
    if tr.use_mlflow {
        #[cfg(feature = "mlflow")]
        {
            let mut b = exptrack_mlflow::MlflowTracker::builder().from_env();
            if let Some(uri) = &tr.mlflow_tracking_uri {
                b = b.tracking_uri(uri.clone());
            }
            let name = tr
                .mlflow_experiment_name
                .clone()
                .unwrap_or_else(|| config.experiment.name.clone());
            b = b.experiment_name(name);
            let t = b.build().map_err(|e| FacadeError::Backend {
                backend: "mlflow",
                message: e.to_string(),
            })?;
            out.push(Box::new(t));
        }
        #[cfg(not(feature = "mlflow"))]
        return Err(FacadeError::NotCompiled {
            key: "use_mlflow",
            feature: "mlflow",
        });
    }
    if tr.use_wandb {
        #[cfg(feature = "wandb")]
        {
            let mut b = exptrack_wandb::WandbTracker::builder().from_env();
            if let Some(p) = &tr.wandb_project {
                b = b.project(p.clone());
            }
            if let Some(e) = &tr.wandb_entity {
                b = b.entity(e.clone());
            }
            if let Some(d) = &tr.wandb_dir {
                b = b.dir(d.clone());
            }
            if let Some(m) = &tr.wandb_mode {
                let mode = m
                    .parse()
                    .map_err(|e: exptrack_wandb::Error| FacadeError::Backend {
                        backend: "wandb",
                        message: e.to_string(),
                    })?;
                b = b.mode(mode);
            }
            let t = b.build().map_err(|e| FacadeError::Backend {
                backend: "wandb",
                message: e.to_string(),
            })?;
            out.push(Box::new(t));
        }
        #[cfg(not(feature = "wandb"))]
        return Err(FacadeError::NotCompiled {
            key: "use_wandb",
            feature: "wandb",
        });
    }
    Ok(out)
}
