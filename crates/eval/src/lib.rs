//! # exptrack-eval
//!
//! Asynchronous evaluation beside training: an [`EvalWatcher`] polls an experiment's checkpoint
//! directory (written by [`exptrack_checkpoint::ModelCheckpointer`], usually in another process),
//! evaluates each newly committed checkpoint once on one or more named datasets, and logs
//! `eval/<dataset>/<metric>` (`accuracy`, `loss`, `entropy`, ...) at the checkpoint's step
//! through an [`exptrack_core::ExperimentTracker`], so through every backend configured on it.
//!
//! Like tf-keras' `SidecarEvaluator` or Orbax's `checkpoints_iterator`, with what they lack:
//! - a reader **lease** on the checkpoint under evaluation, so retention (keep-last-N ...) never
//!   deletes it, across processes;
//! - a **state file** (`<checkpoint_dir>/<experiment_id>/eval-state.json`, atomically replaced;
//!   for checkpoints in object storage, `<tracker run dir>/eval-state-<experiment_id>.json`)
//!   plus recovery from the run log, so a watcher that is killed and restarted evaluates no
//!   checkpoint twice and misses none (see [`EvalWatcher`]'s guarantees for the exact window);
//! - corrupt checkpoints (digest mismatch) and checkpoints pruned before the watcher got to them
//!   are **reported and recorded**, not retried forever, and never stop the watcher;
//! - it **stops by itself** when the training run is marked completed, after evaluating everything
//!   committed before that.
//!
//! The checkpoints may live in object storage:
//! `EvalWatcher::builder_url("s3://bucket/prefix/<experiment_id>")` (feature `s3`; `gs://`,
//! `az://` with `gcs`, `azure`; also `file://` and plain paths) takes the URLs
//! `ModelCheckpointer::open_url` takes, with leases as small objects in the bucket.
//!
//! The evaluator is yours: a closure (or an [`Evaluator`]) that receives the loaded, verified
//! checkpoint — its files as bytes and its metadata (step, epoch, metrics at save time) — and
//! returns named metrics. This crate does not depend on burn; decode the model record in the
//! closure (e.g. with `exptrack_checkpoint::burn_support`).
//!
//! ```no_run
//! use std::time::Duration;
//! use exptrack_checkpoint::LoadedCheckpoint;
//! use exptrack_core::{ExperimentConfig, ExperimentTracker, Resume, RunStatus};
//! use exptrack_eval::{BoxError, EvalWatcher};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Log to a run of its own that a restarted watcher continues.
//! let tracker = ExperimentTracker::builder(ExperimentConfig::named("mnist-eval"))
//!     .resume(Resume::RunId("async-eval".into()))
//!     .build()?;
//! let mut watcher = EvalWatcher::builder("checkpoints", "mnist")
//!     .poll_interval(Duration::from_secs(10))
//!     .dataset("valid", |ckpt: &LoadedCheckpoint| {
//!         let _weights = ckpt.file("model.bpk").ok_or("no model.bpk")?;
//!         Ok::<_, BoxError>([("accuracy", 0.97), ("loss", 0.09)])
//!     })
//!     .tracker(&tracker)
//!     .build()?;
//! let summary = watcher.run()?;
//! println!("evaluated steps {:?}", summary.evaluated_steps());
//! drop(watcher);
//! tracker.finish(RunStatus::Completed)?;
//! # Ok(()) }
//! ```
//!
//! # Decoupled evaluation (features `burn`, `mlflow`)
//! Besides the watcher, the crate evaluates a *logged* model after training: `save_model_dir`
//! writes a model as an MLflow model directory ([`model_dir`]: `MLmodel` naming the
//! `exptrack_burn` flavour, the burn record, safetensors weights, the signature) for
//! `tracker.log_model(dir, "model", step)`; `evaluate_mlflow_run` downloads it from a run,
//! evaluates it on a [`TestSet`] (`ClassificationEvaluation`: the trainer Evaluator's metrics,
//! `classification_report.json`, `confusion_matrix.png`, `misclassified_examples.png`) and logs
//! it all to the same run; `evaluate_ensemble` scores the mean softmax of the best `k`
//! checkpoints (`ensemble/<dataset>/...`). `exptrack eval` is the command for all of it; see
//! `docs/evaluation.md`.
//!
//! # Feature flags
//! - `burn`: model directories, classifiers, classification reports and ensembles (pulls in
//!   burn through `exptrack-trainer`, and `exptrack-plot` for the images).
//! - `mlflow`: `burn` plus evaluation of a model logged to an MLflow run (`exptrack-mlflow`).
//! - `s3`, `gcs`, `azure`: watch checkpoints in S3 (and compatible servers), Google Cloud Storage
//!   or Azure Blob Storage (forward to `exptrack-checkpoint`'s features of the same names;
//!   credentials from the provider's environment variables).
//! - `testing`: fault-injection hooks for this crate's own crash tests
//!   (`EvalWatcherBuilder::abort_after_log`); never needed by users.
//!
//! Without features the crate depends on `exptrack-core` and `exptrack-checkpoint` only.

#![warn(missing_debug_implementations, unreachable_pub)]

mod builder;
#[cfg(feature = "burn")]
mod classifier;
#[cfg(feature = "burn")]
mod classify;
mod data;
#[cfg(feature = "burn")]
mod ensemble;
mod error;
mod evaluator;
#[cfg(feature = "mlflow")]
mod mlflow_eval;
pub mod model_dir;
mod outcome;
mod state;
mod watcher;

pub use builder::{EvalWatcherBuilder, MAX_INTERVAL, parse_interval_secs};
#[cfg(feature = "burn")]
pub use classifier::{
    Classifier, MlpClassifier, QUICKSTART_MLP, class_probabilities, load_classifier, load_record,
    quickstart_spec, save_model_dir,
};
#[cfg(feature = "burn")]
pub use classify::{
    CONFUSION_FILE, ClassificationEvaluation, ECE_BINS, MAX_EXAMPLES, MISCLASSIFIED_FILE,
    REPORT_FILE,
};
pub use data::TestSet;
#[cfg(feature = "burn")]
pub use ensemble::{Ensemble, EnsembleOptions, best_checkpoints, evaluate_ensemble, mlp_member};
pub use error::{BoxError, Error, Result};
pub use evaluator::{EvalMetrics, Evaluator};
#[cfg(feature = "mlflow")]
pub use mlflow_eval::{
    MlflowEvalOptions, MlflowEvaluation, ModelLocation, evaluate_mlflow_run, find_run_model,
};
pub use model_dir::ModelSpec;
pub use outcome::{Evaluated, Outcome, RunSummary, StopReason};
pub use state::{EvalState, RecordKind, STATE_FILE_NAME, STATE_FORMAT_VERSION, StepRecord};
pub use watcher::{
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_POLL_INTERVAL, EvalWatcher,
    SKIPPED_PRUNED_METRIC,
};
