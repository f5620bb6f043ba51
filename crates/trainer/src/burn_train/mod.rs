//! burn-train integration (feature `burn-train`).
//!
//! **Already using burn-train?** [`Tracking::attach`] wires exptrack into a
//! `SupervisedTraining` that burn-train's own loop runs:
//!
//! - a write-only [`TrackerLogger`] sends every numeric metric to an
//!   [`ExperimentTracker`](exptrack_core::ExperimentTracker) (so TensorBoard, MLflow, W&B) as
//!   `train/<name>` / `valid/<name>` at global steps that increase across epochs and resumes, and
//!   epoch values as `epoch/<split>/<name>`;
//! - a [`MetricHistory`] answers burn-train's `read_numeric`, so its metric-based checkpointing
//!   ("best by valid loss") and early stopping keep working (registering any logger removes
//!   burn-train's default `FileMetricLogger`, and burn-train panics when no logger can answer);
//! - with [`Tracking::with_checkpointer`], three [`RecordCheckpointer`]s put each epoch's model,
//!   optimizer and scheduler records into one crash-safe [`ModelCheckpointer`] checkpoint, and
//!   the next run resumes from the last committed epoch (steps continue where they were).
//!
//! ```no_run
//! use exptrack_checkpoint::ModelCheckpointer;
//! use exptrack_trainer::MetricSink;
//! use exptrack_trainer::burn::train::{Learner, LearnerModel, SupervisedTraining};
//! use exptrack_trainer::burn_train::Tracking;
//!
//! /// `training` is burn-train's `SupervisedTraining::new(artifact_dir, train_loader,
//! /// valid_loader)` with its metrics and epochs; `sink` e.g. an `ExperimentTracker` (to
//! /// TensorBoard, MLflow, W&B); `checkpointer` opened for the experiment's id.
//! fn train<M: LearnerModel, S: MetricSink + Clone + 'static>(
//!     sink: S,
//!     checkpointer: ModelCheckpointer,
//!     training: SupervisedTraining<M>,
//!     learner: Learner<M>,
//!     config: &impl serde::Serialize,
//! ) -> exptrack_trainer::Result<()> {
//!     let tracking = Tracking::new(sink).with_checkpointer(checkpointer)?;
//!     if let Some(results) = tracking.completed() {
//!         println!("already completed: {results}");
//!         return Ok(());
//!     }
//!     tracking.log_config(config)?;
//!     let result = tracking.attach(training).launch(learner);
//!     let outcome = tracking.finish(&result)?; // waits for the last checkpoint, marks completion
//!     println!("{} steps, completed: {}", outcome.train_steps, outcome.completed);
//!     Ok(())
//! }
//! ```
//!
//! The whole program, with its model, data and tracker, is `examples/burn_train.rs` at the
//! repository root.
//!
//! Without checkpoints, one call: [`track`]`(training, &tracker)`.
//!
//! [`BurnTrainModel`] (module `model`) is the other direction: burn-train models trained by
//! exptrack's own `TrainingManager`.

mod checkpointer;
mod logger;
mod model;

use std::sync::Arc;

use burn::module::Module;
use burn::train::{LearnerModel, LearningResult, SupervisedTraining};
use exptrack_checkpoint::{ModelCheckpointer, Resume};
use exptrack_core::ParamValue;

pub use checkpointer::{Part, RecordCheckpointer};
pub use logger::{MetricHistory, TrackerLogger, metric_key};
pub use model::{BurnTrainModel, IntoStepOutput};

use crate::error::{Error, Result};
use crate::logging::MetricSink;
use checkpointer::{EXTRA_KEY, ResumeState, Store};
use logger::{EpochMark, Shared};

/// Wires `sink` (e.g. an `Arc<ExperimentTracker>`) into `training`: a [`MetricHistory`] and a
/// [`TrackerLogger`]. No checkpoints; see [`Tracking`] for those and for resuming.
pub fn track<M, S>(training: SupervisedTraining<M>, sink: &S) -> SupervisedTraining<M>
where
    M: LearnerModel,
    S: MetricSink + Clone + 'static,
{
    Tracking::new(sink.clone()).attach(training)
}

/// Where a [`Tracking`] resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumePoint {
    /// The last committed epoch (burn-train continues with the next one).
    pub epoch: usize,
    /// The checkpoint's step (training iterations done).
    pub step: u64,
}

/// What [`Tracking::finish`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// The training ran through (all epochs, or early stopping) and the experiment was marked
    /// completed (with a checkpointer).
    pub completed: bool,
    /// Training iterations logged, over all runs of this experiment.
    pub train_steps: u64,
    /// The last epoch whose validation ended.
    pub last_epoch: Option<usize>,
    /// The last epoch's values (`train/loss`, `valid/loss`, …).
    pub final_metrics: std::collections::BTreeMap<String, f64>,
    /// Metric points the sink refused (0 unless the tracker was finished or failed).
    pub dropped_points: u64,
}

/// exptrack for a burn-train run: loggers, checkpoints and resume (see the [module](self) docs).
pub struct Tracking<S> {
    sink: S,
    shared: Arc<Shared>,
    store: Option<Arc<Store>>,
    resume: Option<ResumePoint>,
    completed: Option<serde_json::Value>,
}

impl<S> std::fmt::Debug for Tracking<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("checkpoints", &self.store.is_some())
            .field("resume", &self.resume)
            .field("completed", &self.completed.is_some())
            .finish_non_exhaustive()
    }
}

fn ckpt_err(e: exptrack_checkpoint::Error) -> Error {
    Error::Checkpoint {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

impl<S: MetricSink + Clone + 'static> Tracking<S> {
    /// Logging to `sink`, no checkpoints.
    pub fn new(sink: S) -> Self {
        Tracking {
            sink,
            shared: Arc::new(Shared::default()),
            store: None,
            resume: None,
            completed: None,
        }
    }

    /// Checkpoints every epoch burn-train's checkpointing strategy saves into `checkpointer`, and
    /// looks for a resume point: the newest checkpoint that verifies (corrupt ones are skipped),
    /// or, for an experiment marked completed, its results ([`completed`](Self::completed);
    /// open the checkpointer with `force = true` to archive them and start over).
    ///
    /// A checkpoint that was not written by this adapter is an error (it has no step counters).
    pub fn with_checkpointer(mut self, mut checkpointer: ModelCheckpointer) -> Result<Self> {
        let mut resume = None;
        match checkpointer.resume_or_start().map_err(ckpt_err)? {
            Resume::Fresh => {}
            Resume::Completed(results) => self.completed = Some(results),
            Resume::Resumed(loaded) => {
                let loaded = *loaded;
                let state: ResumeState = loaded
                    .info
                    .extra
                    .get(EXTRA_KEY)
                    .cloned()
                    .ok_or_else(|| Error::Checkpoint {
                        message: format!(
                            "checkpoint at step {} in {} was not written by exptrack's burn-train \
                             adapter (no `extra.{EXTRA_KEY}`); use another experiment id",
                            loaded.step(),
                            checkpointer.experiment_dir().display()
                        ),
                        source: None,
                    })
                    .and_then(|v| {
                        serde_json::from_value(v).map_err(|source| Error::Json {
                            what: "burn-train resume state",
                            source,
                        })
                    })?;
                self.shared.lock().restore(
                    EpochMark {
                        train_step: state.train_step,
                        valid_step: state.valid_step,
                    },
                    state.epoch,
                    state.history,
                );
                self.resume = Some(ResumePoint {
                    epoch: state.epoch,
                    step: loaded.step(),
                });
                resume = Some((state.epoch, loaded));
            }
        }
        let sink: Arc<dyn MetricSink> = Arc::new(self.sink.clone());
        self.store = Some(Arc::new(Store::new(checkpointer, sink, resume)));
        Ok(self)
    }

    /// Where the run resumes (None: from the start).
    pub fn resume_point(&self) -> Option<ResumePoint> {
        self.resume
    }

    /// The results of an experiment marked completed by an earlier [`finish`](Self::finish).
    pub fn completed(&self) -> Option<&serde_json::Value> {
        self.completed.as_ref()
    }

    /// Registers the loggers (and, with a checkpointer, burn-train's three checkpointers and the
    /// resume epoch) on `training`. Call it last, after `num_epochs`, metrics and strategies.
    ///
    /// The [`MetricHistory`] is registered first, so burn-train's `read_numeric` gets its
    /// answer; burn-train's default `FileMetricLogger` is then not created.
    pub fn attach<M: LearnerModel>(
        &self,
        training: SupervisedTraining<M>,
    ) -> SupervisedTraining<M> {
        let mut training = training
            .with_metric_logger(MetricHistory::with_shared(Arc::clone(&self.shared)))
            .with_metric_logger(TrackerLogger::with_shared(
                self.sink.clone(),
                Arc::clone(&self.shared),
            ));
        if let Some(store) = &self.store {
            let part = |p| RecordCheckpointer::new(p, Arc::clone(&self.shared), Arc::clone(store));
            training = training.with_custom_checkpointers(
                part(Part::Model),
                part(Part::Optimizer),
                part(Part::Scheduler),
            );
            if let Some(r) = self.resume {
                training = training.checkpoint(r.epoch);
            }
        }
        training
    }

    /// Logs a burn `Config` (anything `Serialize`) as params, nested keys joined with `.`
    /// (`optimizer.beta_1`); arrays as JSON text.
    pub fn log_config(&self, config: &impl serde::Serialize) -> Result<()> {
        let value = serde_json::to_value(config).map_err(|source| Error::Json {
            what: "training config",
            source,
        })?;
        let mut params = Vec::new();
        flatten("", &value, &mut params);
        self.sink.log_hyperparameters(&params)
    }

    /// Logs the model's parameter count as the param `model/num_params`.
    pub fn log_model<M: Module>(&self, model: &M) -> Result<()> {
        self.sink.log_hyperparameters(&[(
            "model/num_params".to_owned(),
            ParamValue::from(model.num_params()),
        )])
    }

    /// After `launch`: waits for the background checkpoint saves (their errors are returned) and,
    /// when training ran through (no interruption, no error), marks the experiment completed with
    /// the final metrics so a rerun finds it [`completed`](Self::completed).
    pub fn finish<M>(&self, result: &LearningResult<M>) -> Result<Outcome> {
        let (train_steps, last_epoch, final_metrics, dropped_points) = {
            let s = self.shared.lock();
            let last = s.marks.keys().next_back().copied();
            let metrics = last.map(|e| s.epoch_values(e)).unwrap_or_default();
            (s.train_step, last, metrics, s.dropped)
        };
        let ran_through = result.interrupted.is_none() && result.error.is_none();
        let mut completed = false;
        if let Some(store) = &self.store {
            let mut ckpt = store.checkpointer();
            ckpt.wait().map_err(ckpt_err)?;
            if ran_through {
                let mut results = serde_json::Map::new();
                results.insert("epochs".into(), serde_json::json!(last_epoch));
                results.insert("train_steps".into(), serde_json::json!(train_steps));
                for (k, v) in &final_metrics {
                    results.insert(k.clone(), serde_json::json!(v));
                }
                ckpt.mark_completed(serde_json::Value::Object(results))
                    .map_err(ckpt_err)?;
                completed = true;
            }
        }
        if let Some(e) = &result.error {
            return Err(Error::BurnTrain(format!(
                "training stopped with an error: {e}"
            )));
        }
        Ok(Outcome {
            completed,
            train_steps,
            last_epoch,
            final_metrics,
            dropped_points,
        })
    }
}

/// Flattens JSON into `(dotted.key, value)` params.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, ParamValue)>) {
    use serde_json::Value as J;
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        J::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        J::Null => {}
        J::Bool(b) => out.push((prefix.to_owned(), ParamValue::Bool(*b))),
        J::Number(n) => out.push((
            prefix.to_owned(),
            match n.as_i64() {
                Some(i) => ParamValue::Int(i),
                None => ParamValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        )),
        J::String(s) => out.push((prefix.to_owned(), ParamValue::Str(s.clone()))),
        J::Array(_) => out.push((prefix.to_owned(), ParamValue::Str(v.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_flattens_to_dotted_params() {
        let mut out = Vec::new();
        flatten(
            "",
            &serde_json::json!({"lr": 0.5, "optim": {"beta": 0.9, "name": "adam"}, "sizes": [1, 2], "n": 3, "none": null}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                ("lr".to_owned(), ParamValue::Float(0.5)),
                ("n".to_owned(), ParamValue::Int(3)),
                ("optim.beta".to_owned(), ParamValue::Float(0.9)),
                ("optim.name".to_owned(), ParamValue::Str("adam".into())),
                ("sizes".to_owned(), ParamValue::Str("[1,2]".into())),
            ]
        );
    }
}
