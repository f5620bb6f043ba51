//! [`MlflowTracker`]: the [`Tracker`] implementation.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use exptrack_core::{
    ArtifactKind, Batch, Event, EventKind, ExperimentMetadata, RunContext, RunStatus, Tracker,
    TrackerError, now_ms,
};

use crate::builder::MlflowTrackerBuilder;
use crate::client::MlflowClient;
use crate::error::{Error, Result, excerpt};
use crate::media::{self, ImagePaths};
use crate::types::{KeyValue, LoggedModelStatus, MetricPoint, MlflowRunStatus, Run};
use crate::validate::{
    MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAM_VALUE_LENGTH, MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH, MAX_TAGS_PER_BATCH, key_problem, sanitize_key, truncate_chars,
};
use exptrack_core::media::{DEFAULT_BINS, Histogram};

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

/// One `log-batch` request being assembled.
#[derive(Debug, Default)]
struct Pending {
    metrics: Vec<MetricPoint>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty()
    }
    fn entities(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }
    fn room_for(&self, kind: EntityKind) -> bool {
        if self.entities() >= MAX_ENTITIES_PER_BATCH {
            return false;
        }
        match kind {
            EntityKind::Metric => self.metrics.len() < MAX_METRICS_PER_BATCH,
            EntityKind::Param => self.params.len() < MAX_PARAMS_PER_BATCH,
            EntityKind::Tag => self.tags.len() < MAX_TAGS_PER_BATCH,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum EntityKind {
    Metric,
    Param,
    Tag,
}

impl EntityKind {
    fn name(self) -> &'static str {
        match self {
            EntityKind::Metric => "metric",
            EntityKind::Param => "param",
            EntityKind::Tag => "tag",
        }
    }
}

/// Progress of a logged model whose creation must not be repeated on redelivery.
#[derive(Debug, Clone)]
struct ModelProgress {
    model_id: String,
    artifact_uri: String,
    uploaded: bool,
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
///   `MlflowClient.log_image(key=, step=)` does (see [`ImagePaths`]: the PNG, a compressed WebP
///   copy, the run tag `mlflow.loggedImages`), so the UI's image panel with its step slider shows
///   them; histograms become `histograms/<tag>/step_<n>.json` (64 equal-width buckets, see
///   [`Histogram::to_json`]); results (`set_result`) become the tag `exptrack.result.<key>` (JSON
///   text) and, when numeric, the metric `<key>` at the latest step; file artifacts are streamed
///   through the artifact proxy; model
///   artifacts become MLflow 3 logged models (created, file uploaded, finalized READY, linked to the
///   run as an output).
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

    fn find_existing(&self, experiment_id: &str, ctx: &RunContext) -> Result<Option<Run>> {
        let md = &ctx.metadata;
        let by_run = format!(
            "tags.`{TAG_RUN_ID}` = '{}' AND tags.`{TAG_EXPERIMENT_ID}` = '{}'",
            quote(&md.run_id),
            quote(&md.experiment_id)
        );
        let mut runs = self.client.search_runs(
            &[experiment_id],
            &by_run,
            1,
            &["attributes.start_time DESC"],
        )?;
        if runs.is_empty() && ctx.resumed {
            let by_exp = format!(
                "tags.`{TAG_EXPERIMENT_ID}` = '{}'",
                quote(&md.experiment_id)
            );
            runs = self.client.search_runs(
                &[experiment_id],
                &by_exp,
                1,
                &["attributes.start_time DESC"],
            )?;
        }
        Ok(runs.into_iter().next())
    }

    /// Whether this tracker is a companion writer of another process's run.
    pub fn is_companion(&self) -> bool {
        self.attach.is_some()
    }

    fn open_attached(&mut self, attach: &crate::builder::Attach, ctx: &RunContext) -> Result<()> {
        use crate::builder::Attach;
        let run = match attach {
            Attach::MlflowRun(id) => self.client.get_run(id)?,
            Attach::ExptrackRun {
                experiment_id,
                run_id,
            } => {
                let exp_name = self
                    .experiment_name
                    .clone()
                    .unwrap_or_else(|| ctx.metadata.experiment_name.clone());
                let exp = self.client.get_experiment_by_name(&exp_name)?.ok_or_else(|| {
                    Error::Config(format!(
                        "attach to exptrack run {experiment_id}/{run_id}: MLflow has no experiment named {exp_name:?}"
                    ))
                })?;
                let filter = format!(
                    "tags.`{TAG_RUN_ID}` = '{}' AND tags.`{TAG_EXPERIMENT_ID}` = '{}'",
                    quote(run_id),
                    quote(experiment_id)
                );
                self.client
                    .search_runs(&[&exp.experiment_id], &filter, 1, &["attributes.start_time DESC"])?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "attach to exptrack run {experiment_id}/{run_id}: no MLflow run in experiment {exp_name:?} carries its tags (has the training logged to MLflow yet?)"
                        ))
                    })?
            }
        };
        tracing::info!(
            target: "exptrack_mlflow",
            run_id = %run.info.run_id,
            "logging into the existing MLflow run as a companion writer"
        );
        self.remote_status = Some(run.info.status.to_core());
        self.run = Some(OpenRun {
            run_id: run.info.run_id,
            experiment_id: run.info.experiment_id,
            artifact_uri: run.info.artifact_uri,
        });
        Ok(())
    }

    fn do_open(&mut self, ctx: &RunContext) -> Result<()> {
        if let Some(attach) = self.attach.clone() {
            return self.open_attached(&attach, ctx);
        }
        let md = &ctx.metadata;
        let exp_name = self
            .experiment_name
            .clone()
            .unwrap_or_else(|| md.experiment_name.clone());
        let experiment_id = self.client.get_or_create_experiment(&exp_name)?;
        if let Some(run) = self.find_existing(&experiment_id, ctx)? {
            let status = run.info.status.to_core();
            tracing::info!(
                target: "exptrack_mlflow",
                run_id = %run.info.run_id,
                "continuing existing MLflow run (status on server: {status})"
            );
            self.remote_status = Some(status);
            self.params = run
                .data
                .params
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect();
            if status.is_terminal() && !md.status.is_terminal() {
                // Training continues: the run is running again until close.
                self.client
                    .update_run(&run.info.run_id, MlflowRunStatus::Running, None)?;
            }
            self.run = Some(OpenRun {
                run_id: run.info.run_id,
                experiment_id,
                artifact_uri: run.info.artifact_uri,
            });
            return Ok(());
        }
        let mut tags = vec![
            KeyValue::new(TAG_EXPERIMENT_ID, md.experiment_id.clone()),
            KeyValue::new(TAG_RUN_ID, md.run_id.clone()),
            KeyValue::new(TAG_CONFIG_HASH, md.config_hash.clone()),
        ];
        if !md.description.is_empty() {
            tags.push(KeyValue::new("mlflow.note.content", md.description.clone()));
        }
        if !md.version.is_empty() {
            tags.push(KeyValue::new("exptrack.version", md.version.clone()));
        }
        tags.extend(standard_tags(md));
        if !md.system.hostname.is_empty() {
            tags.push(KeyValue::new("exptrack.host", md.system.hostname.clone()));
        }
        for t in &md.tags {
            tags.push(KeyValue::new(t.clone(), String::new()));
        }
        let mut problems = Vec::new();
        let tags: Vec<KeyValue> = tags
            .into_iter()
            .filter_map(|kv| self.check_tag(kv, &mut problems))
            .collect();
        for p in problems {
            tracing::warn!(target: "exptrack_mlflow", "run tag skipped: {p}");
        }
        let run_name = self.run_name.clone().unwrap_or_else(|| md.run_id.clone());
        let start = md.start_time.timestamp_millis();
        // Runs/create takes at most 100 tags in practice; the rest follow in log-batch.
        let (first, rest) = tags.split_at(tags.len().min(MAX_TAGS_PER_BATCH));
        let info = self
            .client
            .create_run(&experiment_id, &run_name, start, first)?;
        if !rest.is_empty() {
            self.client
                .log_batch_chunked(&info.run_id, &[], &[], rest)?;
        }
        tracing::info!(target: "exptrack_mlflow", run_id = %info.run_id, "created MLflow run");
        self.remote_status = None;
        self.run = Some(OpenRun {
            run_id: info.run_id,
            experiment_id,
            artifact_uri: info.artifact_uri,
        });
        Ok(())
    }

    /// Validates (and in the default mode repairs) a key; `None` (with a problem recorded) when
    /// the entity must be dropped.
    fn check_key(
        &mut self,
        kind: EntityKind,
        key: &str,
        problems: &mut Vec<String>,
    ) -> Option<String> {
        let Some(reason) = key_problem(key) else {
            return Some(key.to_owned());
        };
        if self.strict {
            problems.push(
                Error::InvalidKey {
                    kind: kind.name(),
                    key: key.to_owned(),
                    reason,
                }
                .to_string(),
            );
            return None;
        }
        let fixed = sanitize_key(key);
        if self.warned.insert(format!("key:{}:{key}", kind.name())) {
            tracing::warn!(
                target: "exptrack_mlflow",
                "{} key {key:?} is not valid for MLflow ({reason}); logging it as {fixed:?}",
                kind.name()
            );
        }
        Some(fixed)
    }

    fn check_tag(&mut self, kv: KeyValue, problems: &mut Vec<String>) -> Option<KeyValue> {
        let key = self.check_key(EntityKind::Tag, &kv.key, problems)?;
        let (v, cut) = truncate_chars(&kv.value, MAX_TAG_VALUE_LENGTH);
        if cut && self.warned.insert(format!("tagval:{key}")) {
            tracing::warn!(
                target: "exptrack_mlflow",
                "tag {key:?} is longer than {MAX_TAG_VALUE_LENGTH} characters; truncated"
            );
        }
        Some(KeyValue::new(key, v.to_owned()))
    }

    /// Sends the pending request; on a "changed param" rejection resends without params and
    /// records the problem. Transient errors are returned.
    fn send(&mut self, pending: &mut Pending, problems: &mut Vec<String>) -> Result<()> {
        if pending.is_empty() {
            self.delivered = self.added_through;
            return Ok(());
        }
        let run_id = self.open_run()?.run_id.clone();
        let p = std::mem::take(pending);
        let r = self.send_request(&run_id, p, problems);
        if r.is_ok() {
            // Every event fully added so far is now on the server.
            self.delivered = self.added_through;
        }
        r
    }

    fn send_request(&mut self, run_id: &str, p: Pending, problems: &mut Vec<String>) -> Result<()> {
        match self
            .client
            .log_batch(run_id, &p.metrics, &p.params, &p.tags)
        {
            Ok(()) => {
                for kv in p.params {
                    self.params.insert(kv.key, kv.value);
                }
                Ok(())
            }
            Err(e) if e.is_transient() => {
                // Nothing was committed (the server's log-batch is one transaction); the caller
                // returns a transient error and the batch is redelivered.
                Err(e)
            }
            Err(e) => {
                let params_rejected = e.status() == Some(400) && !p.params.is_empty();
                problems.push(e.to_string());
                if params_rejected {
                    // The server rolls the whole request back: deliver the rest without params.
                    if !(p.metrics.is_empty() && p.tags.is_empty()) {
                        match self.client.log_batch(run_id, &p.metrics, &[], &p.tags) {
                            Ok(()) => {}
                            Err(e) if e.is_transient() => return Err(e),
                            Err(e) => problems.push(e.to_string()),
                        }
                    }
                    // Keep the params that do go through, one at a time.
                    for kv in p.params {
                        match self
                            .client
                            .log_batch(run_id, &[], std::slice::from_ref(&kv), &[])
                        {
                            Ok(()) => {
                                self.params.insert(kv.key, kv.value);
                            }
                            Err(e) if e.is_transient() => return Err(e),
                            Err(_) => {}
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn push(
        &mut self,
        pending: &mut Pending,
        kind: EntityKind,
        entity: Entity,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        if !pending.room_for(kind) {
            self.send(pending, problems)?;
        }
        match entity {
            Entity::Metric(m) => pending.metrics.push(m),
            Entity::Param(p) => pending.params.push(p),
            Entity::Tag(t) => pending.tags.push(t),
        }
        Ok(())
    }

    fn add_param(
        &mut self,
        pending: &mut Pending,
        key: &str,
        value: String,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let Some(key) = self.check_key(EntityKind::Param, key, problems) else {
            return Ok(());
        };
        let value = {
            let (v, cut) = truncate_chars(&value, MAX_PARAM_VALUE_LENGTH);
            if cut && self.warned.insert(format!("paramval:{key}")) {
                tracing::warn!(
                    target: "exptrack_mlflow",
                    "param {key:?} is longer than {MAX_PARAM_VALUE_LENGTH} characters ({}); truncated",
                    value.chars().count()
                );
            }
            v.to_owned()
        };
        let earlier = self.params.get(&key).cloned().or_else(|| {
            pending
                .params
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.value.clone())
        });
        match earlier {
            Some(old) if old == value => Ok(()),
            Some(old) => {
                problems.push(
                    Error::ParamChanged {
                        run_id: self.run_id().unwrap_or_default().to_owned(),
                        key,
                        old: excerpt(&old, 200),
                        new: excerpt(&value, 200),
                    }
                    .to_string(),
                );
                Ok(())
            }
            None => self.push(
                pending,
                EntityKind::Param,
                Entity::Param(KeyValue::new(key, value)),
                problems,
            ),
        }
    }

    fn log_model(&mut self, seq: u64, path: &Path, name: &str, step: Option<u64>) -> Result<()> {
        let run = self.open_run()?.clone();
        let file_name = name.rsplit('/').next().unwrap_or(name).to_owned();
        let progress = match self.models.get(&seq) {
            Some(p) => p.clone(),
            None => {
                if !path.is_file() && !path.is_dir() {
                    return Err(Error::Io {
                        context: "model artifact",
                        path: path.to_owned(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not a file or directory",
                        ),
                    });
                }
                let model_name = file_name
                    .split('.')
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("model")
                    .to_owned();
                let mut tags = vec![
                    KeyValue::new("exptrack.artifact_name", name),
                    KeyValue::new(TAG_RUN_ID, run.run_id.clone()),
                ];
                if let Some(s) = step {
                    tags.push(KeyValue::new("exptrack.step", s.to_string()));
                }
                let info = self.client.create_logged_model(
                    &run.experiment_id,
                    &model_name,
                    Some(&run.run_id),
                    &[],
                    &tags,
                )?;
                let p = ModelProgress {
                    model_id: info.model_id,
                    artifact_uri: info.artifact_uri,
                    uploaded: false,
                };
                self.models.insert(seq, p.clone());
                p
            }
        };
        if !progress.uploaded {
            if path.is_dir() {
                // An MLflow model directory (`MLmodel` and its files): its content is the
                // logged model's artifact root, as `mlflow.<flavor>.log_model` lays it out.
                let files = self.client.upload_dir(&progress.artifact_uri, "", path)?;
                if files.is_empty() {
                    return Err(Error::Config(format!(
                        "model directory {} is empty",
                        path.display()
                    )));
                }
            } else {
                self.client
                    .upload_artifact(&progress.artifact_uri, &file_name, path)?;
            }
            if let Some(p) = self.models.get_mut(&seq) {
                p.uploaded = true;
            }
        }
        self.client
            .finalize_logged_model(&progress.model_id, LoggedModelStatus::LoggedModelReady)?;
        self.client
            .log_outputs(&run.run_id, &[(&progress.model_id, step)])?;
        self.client.log_batch(
            &run.run_id,
            &[],
            &[],
            &[KeyValue::new(TAG_LOGGED_MODEL, progress.model_id.clone())],
        )?;
        self.models.remove(&seq);
        self.logged_models
            .push((name.to_owned(), progress.model_id.clone()));
        Ok(())
    }

    /// Uploads an image as `log_image(key=, step=)` does (the PNG, its compressed WebP copy) and
    /// tags the run `mlflow.loggedImages` once, so the UI's image panel lists it.
    fn log_image(&mut self, tag: &str, step: u64, timestamp_ms: i64, png: &[u8]) -> Result<()> {
        let uri = self.open_run()?.artifact_uri.clone();
        let paths = ImagePaths::new(tag, step, timestamp_ms, png);
        self.client.upload_artifact_bytes(&uri, &paths.png, png)?;
        match media::compressed_webp(png) {
            Ok(webp) => self
                .client
                .upload_artifact_bytes(&uri, &paths.webp, &webp)?,
            Err(why) => {
                if self.warned.insert(format!("webp:{tag}")) {
                    tracing::warn!(
                        target: "exptrack_mlflow",
                        "image {tag:?}: no compressed copy for MLflow's image panel ({why}); the PNG is uploaded"
                    );
                }
            }
        }
        if !self.images_tagged {
            let run_id = self.open_run()?.run_id.clone();
            self.client.log_batch(
                &run_id,
                &[],
                &[],
                &[KeyValue::new(TAG_LOGGED_IMAGES, "True")],
            )?;
            self.images_tagged = true;
        }
        Ok(())
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
                    | Event::Status { .. }
            ) {
                self.delivered = Some(seq);
            }
        }
        self.send(&mut pending, &mut problems)?;
        Ok(problems)
    }
}

enum Entity {
    Metric(MetricPoint),
    Param(KeyValue),
    Tag(KeyValue),
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

/// MLflow's standard run tags (the ones its Python client fills) from the run's metadata:
/// `mlflow.source.type` (`LOCAL`), `mlflow.source.name` (the program), `mlflow.user`, and
/// `mlflow.source.git.commit` / `mlflow.source.git.branch` inside a git checkout. The UI shows them
/// as the run's "Source", "Created by" and git fields. Unknown values are left out.
pub fn standard_tags(md: &ExperimentMetadata) -> Vec<KeyValue> {
    let sys = &md.system;
    let mut tags = vec![KeyValue::new(TAG_SOURCE_TYPE, "LOCAL")];
    if !sys.program.is_empty() {
        tags.push(KeyValue::new(TAG_SOURCE_NAME, sys.program.clone()));
    }
    if !sys.user.is_empty() {
        tags.push(KeyValue::new(TAG_USER, sys.user.clone()));
    }
    if let Some(git) = &sys.git {
        tags.push(KeyValue::new(TAG_GIT_COMMIT, git.commit.clone()));
        if let Some(branch) = &git.branch {
            tags.push(KeyValue::new(TAG_GIT_BRANCH, branch.clone()));
        }
    }
    tags
}

/// Escapes a string for a single-quoted MLflow search literal.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
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
        )
    }

    fn open(&mut self, ctx: &RunContext) -> std::result::Result<(), TrackerError> {
        self.do_open(ctx).map_err(TrackerError::from)
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
