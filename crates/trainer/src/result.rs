//! What training reports: [`TrainingResult`] and its [`EvalRecord`]s.

use serde::{Deserialize, Serialize};

/// One evaluation of the validation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Global optimizer step at evaluation time.
    pub step: u64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Validation metrics (`valid/loss`, `valid/accuracy` for classification, ...).
    pub metrics: Vec<(String, f64)>,
}

impl EvalRecord {
    /// A metric by key.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// What [`TrainingManager::fit`](crate::TrainingManager::fit) reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingResult {
    /// Every evaluation, in order (including those before a resume).
    pub history: Vec<EvalRecord>,
    /// The monitored metric key.
    pub monitor: String,
    /// Best monitored value.
    pub best_metric: Option<f64>,
    /// Epoch of the best value.
    pub best_epoch: Option<usize>,
    /// Step of the best value.
    pub best_step: Option<u64>,
    /// Early stopping ended the run.
    pub stopped_early: bool,
    /// Why it stopped early.
    pub stop_reason: Option<String>,
    /// The run was interrupted on request ([`TrainingManager::stop_after_step`](crate::TrainingManager::stop_after_step)); rerun to resume.
    pub interrupted: bool,
    /// The experiment had already completed; nothing was trained.
    pub already_completed: bool,
    /// The step this run resumed from.
    pub resumed_from_step: Option<u64>,
    /// Optimizer steps taken in total.
    pub steps: u64,
    /// Epochs completed.
    pub epochs_completed: usize,
    /// The last evaluation's metrics.
    pub final_metrics: Vec<(String, f64)>,
    /// Optimizer steps skipped for non-finite gradients (mixed precision).
    pub skipped_steps: u64,
    /// Final loss scale (mixed precision).
    pub loss_scale: Option<f64>,
    /// Whether the best weights were restored at the end.
    pub restored_best_weights: bool,
}

impl TrainingResult {
    /// A final metric by key.
    pub fn final_metric(&self, key: &str) -> Option<f64> {
        self.final_metrics
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}
