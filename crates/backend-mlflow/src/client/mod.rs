//! [`MlflowClient`]: MLflow's REST API (tracking, artifacts proxy, logged models, registry).

use std::path::{Path, PathBuf};

use exptrack_http::reqwest::{Method, Url};
use exptrack_http::{HttpClient, decode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::types::{
    Experiment, KeyValue, LoggedModelInfo, LoggedModelStatus, MetricPoint, MlflowRunStatus,
    ModelVersion, RegisteredModel, Run, RunInfo, Stage,
};
use crate::validate::{
    MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH,
};

/// A client for one MLflow tracking server (`http(s)://host:port[/prefix]`).
///
/// Every call retries per the [`HttpClient`]'s [`RetryConfig`](exptrack_http::RetryConfig);
/// errors say whether they are transient ([`Error::is_transient`]).
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: HttpClient,
    base: Url,
    /// Which credentials are sent and where they came from, for authentication errors.
    credentials: String,
}

/// What credentials `auth` sends, without their secret parts.
pub(crate) fn describe_auth(auth: &exptrack_http::Auth) -> String {
    match auth {
        exptrack_http::Auth::None => "no credentials were sent".to_owned(),
        exptrack_http::Auth::Bearer(_) => "a bearer token was sent".to_owned(),
        exptrack_http::Auth::Basic { user, .. } => {
            format!("user {user:?} and a password were sent")
        }
    }
}

impl MlflowClient {
    /// A client for `tracking_uri` using `http` for transport.
    pub fn new(tracking_uri: &str, http: HttpClient) -> Result<Self> {
        let trimmed = tracking_uri.trim().trim_end_matches('/');
        let base = Url::parse(trimmed).map_err(|e| {
            Error::Config(format!(
                "tracking URI {:?} is not a URL: {e}",
                exptrack_http::redact_str(trimmed)
            ))
        })?;
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Error::Config(format!(
                    "tracking URI scheme {other:?} is not supported: exptrack talks to MLflow over its REST API; start `mlflow server` and use its http(s):// address"
                )));
            }
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(Error::Config(
                "put credentials in MLFLOW_TRACKING_USERNAME/PASSWORD or a token, not in the tracking URI".into(),
            ));
        }
        let credentials = describe_auth(http.auth());
        Ok(MlflowClient {
            http,
            base,
            credentials,
        })
    }

    /// Replaces the description of the credentials that authentication errors carry (the
    /// builder says which environment variables it read them from).
    pub(crate) fn with_credentials_hint(mut self, hint: String) -> Self {
        self.credentials = hint;
        self
    }

    /// An HTTP error in `context`: [`Error::Auth`] for 401/403 (naming the credentials), else
    /// [`Error::Http`].
    pub(crate) fn http_err(&self, context: impl Into<String>, e: exptrack_http::Error) -> Error {
        match e.status() {
            Some(status @ (401 | 403)) => Error::Auth {
                context: context.into(),
                status,
                credentials: self.credentials.clone(),
                source: Box::new(e),
            },
            _ => Error::http(context, e),
        }
    }

    /// The tracking URI (no trailing slash).
    pub fn tracking_uri(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The HTTP client (for its [`CancelToken`](exptrack_http::CancelToken)).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.tracking_uri(), path.trim_start_matches('/'))
    }

    fn api(&self, path: &str) -> String {
        self.url(&format!("api/2.0/mlflow/{path}"))
    }

    fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        context: impl FnOnce() -> String,
    ) -> Result<Value> {
        self.http
            .post_json(&self.api(path), body)
            .map_err(|e| self.http_err(context(), e))
    }

    fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        context: impl FnOnce() -> String,
    ) -> Result<Value> {
        self.http
            .get_json(&self.api(path), query)
            .map_err(|e| self.http_err(context(), e))
    }

    fn field<T: for<'de> Deserialize<'de>>(v: Value, pointer: &str, what: &str) -> Result<T> {
        let inner = v
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| Error::UnexpectedResponse(format!("{what} (no {pointer})")))?;
        serde_json::from_value(inner).map_err(|e| Error::UnexpectedResponse(format!("{what}: {e}")))
    }

    /// `GET /health` (true when the server answers 200).
    pub fn health(&self) -> Result<()> {
        self.http
            .send_with_retry(|c| Ok(c.get(self.url("health"))))
            .map(drop)
            .map_err(|e| self.http_err("health check", e))
    }

    /// The server version (`GET /version`).
    pub fn server_version(&self) -> Result<String> {
        let resp = self
            .http
            .send_with_retry(|c| Ok(c.get(self.url("version"))))
            .map_err(|e| self.http_err("server version", e))?;
        resp.text()
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::UnexpectedResponse(format!("version: {}", e.without_url())))
    }

    // ---------------------------------------------------------------- experiments

    /// The experiment called `name`, or `None`.
    pub fn get_experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        match self.get(
            "experiments/get-by-name",
            &[("experiment_name", name)],
            || format!("get experiment {name:?}"),
        ) {
            Ok(v) => Self::field(v, "/experiment", "experiments/get-by-name").map(Some),
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an experiment; returns its id.
    pub fn create_experiment(&self, name: &str, tags: &[KeyValue]) -> Result<String> {
        let v = self.post(
            "experiments/create",
            &json!({"name": name, "tags": tags}),
            || format!("create experiment {name:?}"),
        )?;
        Self::field(v, "/experiment_id", "experiments/create")
    }

    /// The id of experiment `name`, created if missing (safe against a concurrent creator). A
    /// deleted experiment of that name is an error (MLflow keeps the name reserved).
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        if let Some(e) = self.get_experiment_by_name(name)? {
            if e.lifecycle_stage == "deleted" {
                return Err(Error::Config(format!(
                    "experiment {name:?} is deleted on the server (restore it with `mlflow experiments restore` or use another name)"
                )));
            }
            return Ok(e.experiment_id);
        }
        match self.create_experiment(name, &[]) {
            Ok(id) => Ok(id),
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                .get_experiment_by_name(name)?
                .map(|e| e.experiment_id)
                .ok_or_else(|| {
                    Error::UnexpectedResponse(format!("experiment {name:?} exists but not found"))
                }),
            Err(e) => Err(e),
        }
    }

    // ---------------------------------------------------------------- runs

    /// Creates a run.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time_ms: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo> {
        let user = std::env::var("USER").unwrap_or_default();
        let v = self.post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": start_time_ms,
                "user_id": user,
                "tags": tags,
            }),
            || format!("create run {run_name:?} in experiment {experiment_id}"),
        )?;
        Self::field(v, "/run/info", "runs/create")
    }

    /// A run with its data.
    pub fn get_run(&self, run_id: &str) -> Result<Run> {
        let v = self.get("runs/get", &[("run_id", run_id)], || {
            format!("get run {run_id}")
        })?;
        Self::field(v, "/run", "runs/get")
    }

    /// Runs matching `filter` (MLflow search syntax, e.g. ``tags.`exptrack.run_id` = 'x'``),
    /// first page only (at most `max_results`).
    pub fn search_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
        max_results: u32,
        order_by: &[&str],
    ) -> Result<Vec<Run>> {
        let v = self.post(
            "runs/search",
            &json!({
                "experiment_ids": experiment_ids,
                "filter": filter,
                "max_results": max_results,
                "order_by": order_by,
            }),
            || format!("search runs ({filter})"),
        )?;
        match v.get("runs") {
            None => Ok(Vec::new()),
            Some(r) => serde_json::from_value(r.clone())
                .map_err(|e| Error::UnexpectedResponse(format!("runs/search: {e}"))),
        }
    }

    /// One `runs/log-batch` request. The caller keeps it within the server's limits (see
    /// [`log_batch_chunked`](Self::log_batch_chunked)).
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<()> {
        self.post(
            "runs/log-batch",
            &LogBatchBody {
                run_id,
                metrics,
                params,
                tags,
            },
            || {
                format!(
                    "log-batch ({} metrics, {} params, {} tags) to run {run_id}",
                    metrics.len(),
                    params.len(),
                    tags.len()
                )
            },
        )
        .map(drop)
    }

    /// Logs any number of entities, split into requests within the server's limits (1000
    /// metrics, 100 params, 100 tags, 1000 entities per request), in order.
    pub fn log_batch_chunked(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<()> {
        let (mut m, mut p, mut t) = (metrics, params, tags);
        while !(m.is_empty() && p.is_empty() && t.is_empty()) {
            let np = p.len().min(MAX_PARAMS_PER_BATCH);
            let nt = t.len().min(MAX_TAGS_PER_BATCH);
            let nm = m
                .len()
                .min(MAX_METRICS_PER_BATCH)
                .min(MAX_ENTITIES_PER_BATCH - np - nt);
            self.log_batch(run_id, &m[..nm], &p[..np], &t[..nt])?;
            m = &m[nm..];
            p = &p[np..];
            t = &t[nt..];
        }
        Ok(())
    }

    /// Deletes a run tag (`runs/delete-tag`); a tag the run does not have is not an error.
    pub fn delete_tag(&self, run_id: &str, key: &str) -> Result<()> {
        match self.post(
            "runs/delete-tag",
            &json!({"run_id": run_id, "key": key}),
            || format!("delete tag {key:?} of run {run_id}"),
        ) {
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Sets a run's status (and end time).
    pub fn update_run(
        &self,
        run_id: &str,
        status: MlflowRunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<RunInfo> {
        let mut body = json!({"run_id": run_id, "status": status});
        if let Some(t) = end_time_ms {
            body["end_time"] = json!(t);
        }
        let v = self.post("runs/update", &body, || {
            format!("update run {run_id} to {status:?}")
        })?;
        Self::field(v, "/run_info", "runs/update")
    }

    /// The full history of metric `key` of a run, in the server's order (all pages).
    pub fn get_metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        let mut out = Vec::new();
        let mut token = String::new();
        // Tokens already followed: a server that hands one out again would be paged forever.
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut q = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if !token.is_empty() {
                q.push(("page_token", &token));
            }
            let v = self.get("metrics/get-history", &q, || {
                format!("get history of {key:?} in run {run_id}")
            })?;
            if let Some(m) = v.get("metrics") {
                let page: Vec<MetricPoint> = serde_json::from_value(m.clone())
                    .map_err(|e| Error::UnexpectedResponse(format!("metrics/get-history: {e}")))?;
                out.extend(page);
            }
            match v.get("next_page_token").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => {
                    if !seen.insert(t.to_owned()) {
                        return Err(Error::UnexpectedResponse(format!(
                            "metrics/get-history: the server repeated page token {t:?}"
                        )));
                    }
                    token = t.to_owned();
                }
                _ => return Ok(out),
            }
        }
    }

    /// Links logged models to a run as its outputs (`runs/outputs`).
    pub fn log_outputs(&self, run_id: &str, models: &[(&str, Option<u64>)]) -> Result<()> {
        let models: Vec<Value> = models
            .iter()
            .map(|(id, step)| match step {
                Some(s) => json!({"model_id": id, "step": s}),
                None => json!({"model_id": id}),
            })
            .collect();
        self.post(
            "runs/outputs",
            &json!({"run_id": run_id, "models": models}),
            || format!("log outputs of run {run_id}"),
        )
        .map(drop)
    }
}

/// The `runs/log-batch` body, serialized straight from borrowed slices.
#[derive(Serialize)]
struct LogBatchBody<'a> {
    run_id: &'a str,
    metrics: &'a [MetricPoint],
    params: &'a [KeyValue],
    tags: &'a [KeyValue],
}

mod artifacts;
mod registry;
#[cfg(test)]
mod tests;

pub use artifacts::ArtifactEntry;
#[cfg(test)]
use artifacts::ArtifactTarget;
