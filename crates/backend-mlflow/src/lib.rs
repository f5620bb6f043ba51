//! # exptrack-mlflow
//!
//! Sends exptrack runs to an [MLflow](https://mlflow.org) tracking server over its REST API
//! (tested against `mlflow server` 3.17.2):
//!
//! - [`MlflowTracker`]: an [`exptrack_core::Tracker`] — experiment get-or-create, run create or
//!   resume (by the `exptrack.run_id` / `exptrack.experiment_id` tags), metrics/params/tags in
//!   `runs/log-batch` requests split to the server's limits, artifacts streamed through the
//!   artifact proxy, model checkpoints as MLflow 3 logged models, committed checkpoints by
//!   reference (a manifest per commit, an index of those that exist, tags naming the latest and
//!   the best: see [`CHECKPOINT_INDEX`]), final status and end time;
//! - [`MlflowClient`]: the REST calls, public for the model registry (registered models,
//!   versions, aliases, stage transitions) and for reading runs back;
//! - [`sync_run`]: replays a local run (from this backend's cursor) into a server, e.g. after the
//!   server was unreachable when the run finished.
//!
//! Configuration follows MLflow's Python client: `MLFLOW_TRACKING_URI`,
//! `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (Basic, takes precedence),
//! `MLFLOW_TRACKING_TOKEN` (Bearer), `MLFLOW_TRACKING_INSECURE_TLS`,
//! `MLFLOW_TRACKING_SERVER_CERT_PATH`, `MLFLOW_EXPERIMENT_NAME`. Credentials never appear in logs,
//! errors or `Debug` output.
//!
//! ## Delivery guarantees
//! Requests are retried (408, 429, 500, 502, 503, 504 and connection errors; exponential backoff
//! with jitter honouring `Retry-After`, see [`default_tracker_retry`]); when they still fail the
//! error is transient and the dispatcher keeps the events in the local spool and redelivers them in
//! order. Redelivery never duplicates data: the tracker skips events it already delivered, MLflow
//! stores a metric row once per (key, value, timestamp, step) — sending an identical row again is a
//! no-op, verified against the real server in `tests/` — and re-sending a param with the same value
//! is accepted. A `log-batch` request is one database transaction on the server, so a failed
//! request leaves nothing behind.
//!
//! ## Validation
//! Keys must match `^[/\w.\- :]*$`, be unchanged by path normalization and be at most 250
//! characters. By default invalid keys are repaired ([`sanitize_key`]) with one warning per key;
//! with [`strict`](MlflowTrackerBuilder::strict) they are rejected. Params longer than 6000
//! characters are truncated with a warning (the server would truncate silently). Logging a param
//! again with another value is reported as [`Error::ParamChanged`] (MLflow params are immutable);
//! the other entities of the batch are still delivered. NaN and ±infinity are sent as `"NaN"`,
//! `"Infinity"`, `"-Infinity"` (the server stores ±infinity as ±1.797e308).
//!
//! # Feature flags
//! None.
//!
//! # Example
//! ```no_run
//! use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
//! use exptrack_mlflow::MlflowTracker;
//!
//! let mlflow = MlflowTracker::builder()
//!     .from_env()
//!     .tracking_uri("http://127.0.0.1:5000")
//!     .build()?;
//! let run = ExperimentTracker::builder(ExperimentConfig::named("mnist"))
//!     .with_tracker(Box::new(mlflow))
//!     .build()?;
//! run.log_metrics(1, &[("loss", 0.5)])?;
//! run.finish(RunStatus::Completed)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_debug_implementations, unreachable_pub)]

mod builder;
mod client;
mod error;
pub mod media;
mod tracker;
mod types;
mod validate;

use std::path::Path;

pub use builder::{MlflowTrackerBuilder, default_tracker_retry};
pub use client::{ArtifactEntry, MlflowClient};
pub use error::{Error, Result};
pub use tracker::{
    CHECKPOINT_INDEX, MlflowTracker, TAG_CHECKPOINT_BEST, TAG_CHECKPOINT_LATEST, TAG_CONFIG_HASH,
    TAG_EXPERIMENT_ID, TAG_GIT_BRANCH, TAG_GIT_COMMIT, TAG_LOGGED_IMAGES, TAG_LOGGED_MODEL,
    TAG_RESULT_PREFIX, TAG_RUN_ID, TAG_SOURCE_NAME, TAG_SOURCE_TYPE, TAG_USER, manifest_path,
    standard_tags,
};
pub use types::{
    Experiment, KeyValue, LoggedModelInfo, LoggedModelStatus, MetricPoint, MlflowRunStatus,
    ModelAlias, ModelVersion, RegisteredModel, Run, RunData, RunInfo, Stage,
};
pub use validate::{
    MAX_ENTITIES_PER_BATCH, MAX_KEY_LENGTH, MAX_METRICS_PER_BATCH, MAX_PARAM_VALUE_LENGTH,
    MAX_PARAMS_PER_BATCH, MAX_TAG_VALUE_LENGTH, MAX_TAGS_PER_BATCH, is_valid_key, key_problem,
    sanitize_key,
};

pub use exptrack_core::store::SyncReport;

/// Replays the local run in `run_dir` into the MLflow server at `tracking_uri`, from this
/// backend's cursor (`mlflow`) in the run's `cursors.json`, and closes the MLflow run if the local
/// run has ended. Other settings (credentials, experiment name) come from the environment.
/// Running it again after success delivers nothing.
pub fn sync_run(run_dir: &Path, tracking_uri: &str) -> Result<SyncReport> {
    let mut tracker = MlflowTracker::builder()
        .from_env()
        .tracking_uri(tracking_uri)
        .build()?;
    sync_run_with(run_dir, &mut tracker)
}

/// [`sync_run`] with a tracker configured by the caller.
pub fn sync_run_with(run_dir: &Path, tracker: &mut MlflowTracker) -> Result<SyncReport> {
    Ok(exptrack_core::store::sync_run(run_dir, tracker)?)
}
