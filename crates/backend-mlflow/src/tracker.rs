//! [`MlflowTracker`]: the [`Tracker`] implementation. Its parts, one concern each: opening the
//! run ([`open`]), assembling `log-batch` requests ([`entities`]), media and model uploads
//! ([`uploads`]) and checkpoint reports ([`checkpoints`]).

mod checkpoints;
mod entities;
mod open;
mod uploads;

use std::collections::{HashMap, HashSet};

use exptrack_core::{
    ArtifactKind, Batch, Event, EventKind, RunContext, RunStatus, Tracker, TrackerError, now_ms,
};

use crate::builder::MlflowTrackerBuilder;
use crate::client::MlflowClient;
use crate::error::{Error, Result};
use crate::types::{KeyValue, MetricPoint, MlflowRunStatus};
use crate::validate::sanitize_key;
use entities::{Entity, EntityKind, Pending};
use exptrack_core::media::{DEFAULT_BINS, Histogram};
use uploads::ModelProgress;

pub use checkpoints::{
    CHECKPOINT_INDEX, TAG_CHECKPOINT_BEST, TAG_CHECKPOINT_LATEST, manifest_path,
};
pub use open::standard_tags;

/// Tag holding exptrack's experiment id (name + config hash).
pub const TAG_EXPERIMENT_ID: &str = "exptrack.experiment_id";
/// Tag holding exptrack's run id.
pub const TAG_RUN_ID: &str = "exptrack.run_id";
/// Tag holding the config hash.
pub const TAG_CONFIG_HASH: &str = "exptrack.config_hash";
/// Tag holding the id of the last logged model.
pub const TAG_LOGGED_MODEL: &str = "exptrack.logged_model_id";

/// MLflow's tag for the kind of source (`LOCAL` for a program run on this machine).
pub const TAG_SOURCE_TYPE: &str = "mlflow.source.type";
/// MLflow's tag for the source's name: the program that ran (the UI's "Source").
pub const TAG_SOURCE_NAME: &str = "mlflow.source.name";
/// MLflow's tag for the user who started the run (the UI's "Created by").
pub const TAG_USER: &str = "mlflow.user";
/// MLflow's tag for the git commit of the source.
pub const TAG_GIT_COMMIT: &str = "mlflow.source.git.commit";
/// MLflow's tag for the git branch of the source.
pub const TAG_GIT_BRANCH: &str = "mlflow.source.git.branch";
/// MLflow's tag saying the run has images logged the way `log_image(key=, step=)` does (the
/// UI's image panel looks for it).
pub const TAG_LOGGED_IMAGES: &str = "mlflow.loggedImages";

/// Prefix of the tags holding the run's results (`set_result`), as JSON text.
pub const TAG_RESULT_PREFIX: &str = "exptrack.result.";

/// The open MLflow run.
#[derive(Debug, Clone)]
struct OpenRun {
    run_id: String,
    experiment_id: String,
    artifact_uri: String,
}

/// Sends a run to an MLflow tracking server.
///
/// - Open: finds or creates the experiment, then continues the run tagged with this
///   `exptrack.run_id` (or, for a resumed run, the latest run tagged with this
///   `exptrack.experiment_id`) or creates one with the run name, start time, the `exptrack.*`
///   tags, MLflow's standard tags ([`standard_tags`]: source, user, git commit) and
///   `mlflow.note.content` from the description.
/// - Metrics, params and tags go out as `runs/log-batch` requests split to the server's limits,
///   in event order; text becomes `text/<tag>/step_<n>.md`; images are logged the way
///   `MlflowClient.log_image(key=, step=)` does (see [`ImagePaths`](crate::media::ImagePaths): the PNG, a compressed WebP
///   copy, the run tag `mlflow.loggedImages`), so the UI's image panel with its step slider shows
///   them; histograms become `histograms/<tag>/step_<n>.json` (64 equal-width buckets, see
///   [`Histogram::to_json`]); results (`set_result`) become the tag `exptrack.result.<key>` (JSON
///   text) and, when numeric, the metric `<key>` at the latest step; file artifacts are streamed
///   through the artifact proxy; model
///   artifacts become MLflow 3 logged models (created, file uploaded, finalized READY, linked to the
///   run as an output).
/// - Committed checkpoints are shown by reference, never uploaded: a manifest per commit
///   (`checkpoints/ckpt-<step>.json`), the index of those that exist (`checkpoints/index.json`)
///   and the tags `exptrack.checkpoints.latest` / `.best`; see [`CHECKPOINT_INDEX`].
/// - Keys are checked against MLflow's rules: repaired with one warning per key, or rejected in
///   strict mode; params longer than 6000 characters are truncated with a warning; re-logging a
///   param with another value is a permanent [`Error::ParamChanged`] (the rest of the batch is
///   still delivered).
/// - Redelivery is safe: the tracker remembers the last sequence number it fully delivered and
///   skips it on redelivery; the server deduplicates identical metric rows and accepts identical
///   params again, so even a replay after a restart writes each point once.
///
/// Build with [`MlflowTracker::builder`].
#[derive(Debug)]
pub struct MlflowTracker {
    name: String,
    client: MlflowClient,
    experiment_name: Option<String>,
    run_name: Option<String>,
    strict: bool,
    run: Option<OpenRun>,
    remote_status: Option<RunStatus>,
    /// Params the server holds for this run (key → value).
    params: HashMap<String, String>,
    /// Keys already warned about (repaired keys, truncated values).
    warned: HashSet<String>,
    /// Last sequence number fully delivered.
    delivered: Option<u64>,
    /// Last sequence number whose entities were all added to requests (sent or pending).
    added_through: Option<u64>,
    /// Logged models by the sequence number of their event.
    models: HashMap<u64, ModelProgress>,
    logged_models: Vec<(String, String)>,
    /// Whether the run carries the `mlflow.loggedImages` tag.
    images_tagged: bool,
    /// The highest metric step delivered (results are logged at it).
    last_step: u64,
    /// Companion mode: log into this existing run, leaving its params, tags and status alone.
    attach: Option<crate::builder::Attach>,
    /// The checkpoints reported so far (what `checkpoints/index.json` lists).
    checkpoints: exptrack_core::CheckpointSet,
    /// Whether the run carries the `exptrack.checkpoints.best` tag.
    best_tagged: bool,
}

impl MlflowTracker {
    /// A builder.
    pub fn builder() -> MlflowTrackerBuilder {
        MlflowTrackerBuilder::new()
    }

    pub(crate) fn from_parts(client: MlflowClient, b: MlflowTrackerBuilder) -> Self {
        MlflowTracker {
            name: b.name.unwrap_or_else(|| "mlflow".to_owned()),
            client,
            experiment_name: b.experiment_name,
            run_name: b.run_name,
            strict: b.strict,
            run: None,
            remote_status: None,
            params: HashMap::new(),
            warned: HashSet::new(),
            delivered: None,
            added_through: None,
            models: HashMap::new(),
            logged_models: Vec::new(),
            images_tagged: false,
            last_step: 0,
            attach: b.attach,
            checkpoints: exptrack_core::CheckpointSet::new(),
            best_tagged: false,
        }
    }

    /// The REST client (for registry calls, read-back).
    pub fn client(&self) -> &MlflowClient {
        &self.client
    }

    /// The MLflow run id, once open.
    pub fn run_id(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.run_id.as_str())
    }

    /// The MLflow experiment id, once open.
    pub fn experiment_id(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.experiment_id.as_str())
    }

    /// The run's artifact root, once open.
    pub fn artifact_uri(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.artifact_uri.as_str())
    }

    /// The status the run had on the server when it was found at open (`None` for a new run);
    /// `FINISHED` is reported as [`RunStatus::Completed`].
    pub fn remote_status(&self) -> Option<RunStatus> {
        self.remote_status
    }

    /// Logged models created so far: (artifact name, model id).
    pub fn logged_models(&self) -> &[(String, String)] {
        &self.logged_models
    }

    /// The give-up hook of the HTTP client: cancel it (from any thread) to stop retrying at once,
    /// e.g. when `finish` has waited long enough.
    pub fn cancel_token(&self) -> exptrack_http::CancelToken {
        self.client.http().cancel_token().clone()
    }

    fn open_run(&self) -> Result<&OpenRun> {
        self.run.as_ref().ok_or(Error::NotOpen)
    }

    /// Whether this tracker is a companion writer of another process's run.
    pub fn is_companion(&self) -> bool {
        self.attach.is_some()
    }

    fn deliver(&mut self, batch: &Batch<'_>) -> std::result::Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        let mut pending = Pending::default();
        self.added_through = self.delivered;
        for (seq, event) in batch.iter_seq() {
            if self.delivered.is_some_and(|d| seq <= d) {
                continue;
            }
            match event {
                Event::Metrics {
                    step,
                    timestamp_ms,
                    values,
                } => {
                    self.last_step = self.last_step.max(*step);
                    for m in values {
                        let Some(key) = self.check_key(EntityKind::Metric, &m.key, &mut problems)
                        else {
                            continue;
                        };
                        let point = MetricPoint {
                            key,
                            value: m.value,
                            timestamp: (*timestamp_ms).max(0),
                            step: i64::try_from(*step).unwrap_or(i64::MAX),
                        };
                        self.push(
                            &mut pending,
                            EntityKind::Metric,
                            Entity::Metric(point),
                            &mut problems,
                        )?;
                    }
                }
                // A companion leaves the owner's params, tags and status alone.
                Event::Params { .. } | Event::Tags { .. } | Event::Status { .. }
                    if self.attach.is_some() => {}
                Event::Params { params } => {
                    for (k, v) in params {
                        self.add_param(&mut pending, k, v.to_string(), &mut problems)?;
                    }
                }
                Event::Tags { tags } => {
                    for (k, v) in tags {
                        if let Some(kv) =
                            self.check_tag(KeyValue::new(k.clone(), v.clone()), &mut problems)
                        {
                            self.push(
                                &mut pending,
                                EntityKind::Tag,
                                Entity::Tag(kv),
                                &mut problems,
                            )?;
                        }
                    }
                }
                Event::Text {
                    step, tag, text, ..
                } => {
                    self.send(&mut pending, &mut problems)?;
                    let rel = format!("text/{}/step_{step:08}.md", sanitize_key(tag));
                    let uri = self.open_run()?.artifact_uri.clone();
                    self.client
                        .upload_artifact_bytes(&uri, &rel, text.as_bytes())
                        .or_else(|e| keep_going(e, &mut problems))?;
                }
                Event::Image {
                    step,
                    timestamp_ms,
                    tag,
                    png,
                    ..
                } => {
                    self.send(&mut pending, &mut problems)?;
                    self.log_image(tag, *step, *timestamp_ms, png)
                        .or_else(|e| keep_going(e, &mut problems))?;
                }
                Event::Histogram {
                    step,
                    timestamp_ms,
                    tag,
                    values,
                } => {
                    self.send(&mut pending, &mut problems)?;
                    let rel = format!("histograms/{}/step_{step:08}.json", sanitize_key(tag));
                    let doc = Histogram::from_values(values, DEFAULT_BINS)
                        .to_json(tag, *step, *timestamp_ms)
                        .to_string();
                    let uri = self.open_run()?.artifact_uri.clone();
                    self.client
                        .upload_artifact_bytes(&uri, &rel, doc.as_bytes())
                        .or_else(|e| keep_going(e, &mut problems))?;
                }
                Event::Result {
                    key,
                    value,
                    timestamp_ms,
                } => {
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let tag = KeyValue::new(format!("{TAG_RESULT_PREFIX}{key}"), text);
                    if let Some(kv) = self.check_tag(tag, &mut problems) {
                        self.push(
                            &mut pending,
                            EntityKind::Tag,
                            Entity::Tag(kv),
                            &mut problems,
                        )?;
                    }
                    if let Some(v) = value.as_f64()
                        && let Some(key) = self.check_key(EntityKind::Metric, key, &mut problems)
                    {
                        let point = MetricPoint {
                            key,
                            value: v,
                            timestamp: (*timestamp_ms).max(0),
                            step: i64::try_from(self.last_step).unwrap_or(i64::MAX),
                        };
                        self.push(
                            &mut pending,
                            EntityKind::Metric,
                            Entity::Metric(point),
                            &mut problems,
                        )?;
                    }
                }
                Event::Artifact {
                    path,
                    name,
                    artifact_kind,
                    step,
                } => {
                    self.send(&mut pending, &mut problems)?;
                    let r = match artifact_kind {
                        ArtifactKind::Model => self.log_model(seq, path, name, *step),
                        ArtifactKind::File => {
                            let uri = self.open_run()?.artifact_uri.clone();
                            self.client.upload_artifact(&uri, name, path)
                        }
                    };
                    r.or_else(|e| keep_going(e, &mut problems))?;
                }
                Event::Checkpoint(report) => {
                    self.send(&mut pending, &mut problems)?;
                    self.report_checkpoint(report)
                        .or_else(|e| keep_going(e, &mut problems))?;
                }
                Event::Status {
                    status,
                    timestamp_ms,
                } => {
                    self.send(&mut pending, &mut problems)?;
                    let run_id = self.open_run()?.run_id.clone();
                    let end = status.is_terminal().then_some(*timestamp_ms);
                    self.client
                        .update_run(&run_id, MlflowRunStatus::from_core(*status), end)
                        .map(drop)
                        .or_else(|e| keep_going(e, &mut problems))?;
                }
                _ => {}
            }
            self.added_through = Some(seq);
            if matches!(
                event,
                Event::Text { .. }
                    | Event::Image { .. }
                    | Event::Histogram { .. }
                    | Event::Artifact { .. }
                    | Event::Checkpoint(_)
                    | Event::Status { .. }
            ) {
                self.delivered = Some(seq);
            }
        }
        self.send(&mut pending, &mut problems)?;
        Ok(problems)
    }
}

/// Transient errors stop the batch; permanent ones are recorded and the batch goes on.
fn keep_going(e: Error, problems: &mut Vec<String>) -> Result<()> {
    if e.is_transient() {
        Err(e)
    } else {
        problems.push(e.to_string());
        Ok(())
    }
}

impl Tracker for MlflowTracker {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::Metrics
                | EventKind::Params
                | EventKind::Tags
                | EventKind::Text
                | EventKind::Image
                | EventKind::Histogram
                | EventKind::Artifact
                | EventKind::Status
                | EventKind::Result
                | EventKind::Checkpoint
        )
    }

    fn open(&mut self, ctx: &RunContext) -> std::result::Result<(), TrackerError> {
        self.do_open(ctx).map_err(TrackerError::from)?;
        self.load_checkpoints(ctx);
        Ok(())
    }

    fn write(&mut self, batch: &Batch<'_>) -> std::result::Result<(), TrackerError> {
        if self.run.is_none() {
            return Err(TrackerError::transient("mlflow: run not open yet"));
        }
        let problems = self.deliver(batch).map_err(TrackerError::from)?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TrackerError::permanent(format!(
                "mlflow: {} problem(s) in events {}..={} (the rest was delivered): {}",
                problems.len(),
                batch.first_seq,
                batch.last_seq(),
                problems.join("; ")
            )))
        }
    }

    fn flush(&mut self) -> std::result::Result<(), TrackerError> {
        // Every write is sent synchronously; nothing is buffered.
        Ok(())
    }

    fn close(&mut self, status: RunStatus) -> std::result::Result<(), TrackerError> {
        let Some(run) = &self.run else {
            return Err(TrackerError::permanent(
                "mlflow: the run was never opened on the server (see earlier errors); sync it later with exptrack_mlflow::sync_run",
            ));
        };
        if self.attach.is_some() {
            // The owner of the run sets its status.
            return Ok(());
        }
        let run_id = run.run_id.clone();
        let end = status.is_terminal().then(now_ms);
        self.client
            .update_run(&run_id, MlflowRunStatus::from_core(status), end)
            .map(drop)
            .map_err(TrackerError::from)
    }

    fn canceller(&self) -> Option<exptrack_core::Canceller> {
        // Lets `finish` stop a request that is waiting to retry once its timeout has passed.
        let token = self.cancel_token();
        Some(Box::new(move || token.cancel()))
    }
}
