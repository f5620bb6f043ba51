//! Where an experiment's runs and checkpoints are, and its state (completed / interrupted / not started).

use super::*;

/// Where a recipe's run store and checkpoints are.
#[derive(Debug, Clone)]
pub struct Locations {
    /// Root of the local run store.
    pub runs_dir: PathBuf,
    /// The `[checkpointing]` section (with the directory resolved and `force` set).
    pub checkpoint: CheckpointConfig,
}

/// Resolves the run store and checkpoint directory of `config` as the quickstart does.
pub fn locations(
    config: &ExperimentConfig,
    options: &BatchOptions,
) -> std::result::Result<Locations, String> {
    let mut checkpoint = match config.section("checkpointing") {
        Some(t) => CheckpointConfig::from_table(t).map_err(|e| format!("[checkpointing]: {e}"))?,
        None => CheckpointConfig::default(),
    };
    let runs_dir = match &options.runs_dir {
        Some(dir) => {
            checkpoint.dir = dir.join("checkpoints");
            dir.clone()
        }
        None => config.tracking.runs_dir.clone(),
    };
    checkpoint.force = options.force;
    Ok(Locations {
        runs_dir,
        checkpoint,
    })
}

/// Whether an experiment completed, was interrupted, or never started (the store's rule, shared
/// with `exptrack batch status`).
pub use exptrack_core::store::ExperimentState as RecipeState;

/// What is on disk for one experiment.
#[derive(Debug, Clone)]
pub struct StateReport {
    /// The state.
    pub state: RecipeState,
    /// The step of the newest checkpoint, if any.
    pub checkpoint_step: Option<u64>,
    /// The run whose metrics describe the experiment: the latest completed run of a completed
    /// experiment, else the latest run.
    pub run: Option<store::RunEntry>,
    /// Whether that run is open in a process right now (its lock is held).
    pub in_use: bool,
}

impl StateReport {
    /// A short description: `completed`, `interrupted at step 40 (last run killed)`, ...
    pub fn describe(&self) -> String {
        let mut s = self.state.to_string();
        if self.state == RecipeState::Interrupted {
            match self.checkpoint_step {
                Some(step) => s.push_str(&format!(" at step {step}")),
                None => s.push_str(" (no checkpoint)"),
            }
            if let Some(run) = &self.run {
                if self.in_use {
                    s.push_str("; its run is open in another process");
                } else {
                    s.push_str(&format!("; last run {}", run.metadata.status));
                }
            }
        }
        s
    }
}

/// The state of one experiment (`experiment_id`) from its checkpoint directory and run store,
/// without writing anything.
pub fn experiment_state(
    experiment_id: &str,
    locations: &Locations,
) -> std::result::Result<StateReport, String> {
    let mut completed = false;
    let mut checkpoint_step = None;
    if locations.checkpoint.dir.join(experiment_id).is_dir() {
        let ckpt = ModelCheckpointer::open_read_only(experiment_id, locations.checkpoint.clone())
            .map_err(|e| format!("reading checkpoints of {experiment_id}: {e}"))?;
        completed = ckpt
            .completed_results()
            .map_err(|e| format!("reading the completion marker of {experiment_id}: {e}"))?
            .is_some();
        checkpoint_step = ckpt.latest().map(|c| c.step);
    }
    let store::ExperimentProgress { state, run, in_use } = store::experiment_progress(
        &locations.runs_dir,
        experiment_id,
        completed,
        checkpoint_step.is_some(),
    )
    .map_err(|e| listing_error(&locations.runs_dir, e))?;
    Ok(StateReport {
        state,
        checkpoint_step,
        run,
        in_use,
    })
}

pub(super) fn listing_error(runs_dir: &Path, e: exptrack_core::Error) -> String {
    format!("listing runs under {}: {e}", runs_dir.display())
}
