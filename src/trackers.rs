//! Trackers from the config: the trackers (backends) `[tracking]` switches on.

use exptrack_core::{ExperimentConfig, ExperimentTracker, ExperimentTrackerBuilder, Tracker};

use crate::facade_error::{FacadeError, Result};

/// A builder for an [`ExperimentTracker`] with every backend that `config`'s `[tracking]`
/// section switches on: TensorBoard (`use_tensorboard`, on by default), MLflow (`use_mlflow`)
/// and W&B (`use_wandb`). The local store is always on. Adjust the builder (runs dir, resume,
/// extra trackers) before `build()`.
pub fn tracker(config: ExperimentConfig) -> Result<ExperimentTrackerBuilder> {
    let trackers = trackers_from_config(&config)?;
    let mut b = ExperimentTracker::builder(config);
    for t in trackers {
        b = b.with_tracker(t);
    }
    Ok(b)
}

/// The trackers `config`'s `[tracking]` section switches on, built but not opened.
pub fn trackers_from_config(config: &ExperimentConfig) -> Result<Vec<Box<dyn Tracker>>> {
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
            let t = b.build().map_err(|e| FacadeError::backend("mlflow", e))?;
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
            let t = wandb_builder(config)?
                .build()
                .map_err(|e| FacadeError::backend("wandb", e))?;
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

/// The W&B tracker builder `config`'s `[tracking]` section describes (`wandb_project`,
/// `wandb_entity`, `wandb_dir`, `wandb_mode`, then the `WANDB_*` environment), as
/// [`trackers_from_config`] builds it; e.g. to add
/// [`attach_to_run`](exptrack_wandb::WandbTrackerBuilder::attach_to_run) for an evaluator that
/// logs into the training's run.
#[cfg(feature = "wandb")]
pub fn wandb_builder(config: &ExperimentConfig) -> Result<exptrack_wandb::WandbTrackerBuilder> {
    let tr = &config.tracking;
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
            .map_err(|e: exptrack_wandb::Error| FacadeError::backend("wandb", e))?;
        b = b.mode(mode);
    }
    Ok(b)
}
