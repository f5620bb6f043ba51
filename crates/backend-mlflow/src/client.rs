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

/// Where an artifact goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArtifactTarget {
    /// Through the server's artifact proxy.
    Http(Url),
    /// A local directory (`file:` artifact roots on a server sharing this file system).
    Local(PathBuf),
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

    // ---------------------------------------------------------------- artifacts

    pub(crate) fn artifact_target(&self, artifact_uri: &str, rel: &str) -> Result<ArtifactTarget> {
        let rel = check_rel_path(rel)?;
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/path` (this server) or `mlflow-artifacts://host:port/path`.
            let (mut url, path) = if let Some(hostpath) = rest.strip_prefix("//") {
                let (host, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
                let u = Url::parse(&format!("{}://{host}", self.base.scheme()))
                    .map_err(|e| Error::Config(format!("artifact URI {artifact_uri:?}: {e}")))?;
                (u, path.to_owned())
            } else {
                (self.base.clone(), rest.trim_start_matches('/').to_owned())
            };
            {
                let mut segs = url.path_segments_mut().map_err(|()| {
                    Error::Config(format!("artifact URI {artifact_uri:?} has no path"))
                })?;
                segs.pop_if_empty();
                segs.extend(["api", "2.0", "mlflow-artifacts", "artifacts"]);
                segs.extend(path.split('/').filter(|s| !s.is_empty()));
                segs.extend(rel.split('/'));
            }
            return Ok(ArtifactTarget::Http(url));
        }
        if let Some(p) = artifact_uri.strip_prefix("file://") {
            return Ok(ArtifactTarget::Local(Path::new(p).join(rel)));
        }
        if artifact_uri.starts_with('/') {
            return Ok(ArtifactTarget::Local(Path::new(artifact_uri).join(rel)));
        }
        Err(Error::NotSupported(format!(
            "artifact root {artifact_uri:?}: only the server's artifact proxy (mlflow-artifacts:, the default of `mlflow server`) and local paths are supported"
        )))
    }

    /// Uploads a local file to `<artifact_uri>/<rel_path>` through the artifact proxy, streamed
    /// from disk (never read into memory whole).
    pub fn upload_artifact(&self, artifact_uri: &str, rel_path: &str, local: &Path) -> Result<()> {
        match self.artifact_target(artifact_uri, rel_path)? {
            ArtifactTarget::Http(url) => self
                .http
                .put_file(url.as_str(), local, None)
                .map(drop)
                .map_err(|e| self.http_err(format!("upload artifact {rel_path:?}"), e)),
            ArtifactTarget::Local(dest) => copy_local(local, &dest),
        }
    }

    /// Uploads bytes to `<artifact_uri>/<rel_path>`.
    pub fn upload_artifact_bytes(
        &self,
        artifact_uri: &str,
        rel_path: &str,
        bytes: &[u8],
    ) -> Result<()> {
        match self.artifact_target(artifact_uri, rel_path)? {
            ArtifactTarget::Http(url) => self
                .http
                .send_with_retry(|c| Ok(c.put(url.as_str()).body(bytes.to_vec())))
                .map(drop)
                .map_err(|e| self.http_err(format!("upload artifact {rel_path:?}"), e)),
            ArtifactTarget::Local(dest) => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                        context: "creating artifact directory",
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                std::fs::write(&dest, bytes).map_err(|source| Error::Io {
                    context: "writing artifact",
                    path: dest,
                    source,
                })
            }
        }
    }

    /// Downloads `<artifact_uri>/<rel_path>` into memory.
    pub fn download_artifact(&self, artifact_uri: &str, rel_path: &str) -> Result<Vec<u8>> {
        match self.artifact_target(artifact_uri, rel_path)? {
            ArtifactTarget::Http(url) => {
                let resp = self
                    .http
                    .send_with_retry(|c| Ok(c.get(url.as_str())))
                    .map_err(|e| self.http_err(format!("download artifact {rel_path:?}"), e))?;
                resp.bytes().map(|b| b.to_vec()).map_err(|e| {
                    Error::UnexpectedResponse(format!(
                        "download artifact {rel_path:?}: {}",
                        e.without_url()
                    ))
                })
            }
            ArtifactTarget::Local(p) => std::fs::read(&p).map_err(|source| Error::Io {
                context: "reading artifact",
                path: p,
                source,
            }),
        }
    }

    /// Lists the files and directories directly under `<artifact_uri>/<rel_dir>` (`rel_dir`
    /// empty: the root), through the artifact proxy (`GET mlflow-artifacts/artifacts?path=`) or
    /// the local directory. A directory that does not exist lists as empty, as MLflow answers.
    pub fn list_artifacts(&self, artifact_uri: &str, rel_dir: &str) -> Result<Vec<ArtifactEntry>> {
        let rel = rel_dir.trim_matches('/');
        let rel = if rel.is_empty() {
            String::new()
        } else {
            check_rel_path(rel)?
        };
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            let (origin, path) = if let Some(hostpath) = rest.strip_prefix("//") {
                let (host, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
                (format!("{}://{host}", self.base.scheme()), path.to_owned())
            } else {
                (
                    self.tracking_uri().to_owned(),
                    rest.trim_start_matches('/').to_owned(),
                )
            };
            let full = [path.trim_matches('/'), rel.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            let url = format!("{origin}/api/2.0/mlflow-artifacts/artifacts");
            let v: Value = self
                .http
                .get_json(&url, &[("path", full.as_str())])
                .map_err(|e| self.http_err(format!("list artifacts {rel:?}"), e))?;
            let files = v.get("files").and_then(Value::as_array).cloned();
            let mut out = Vec::new();
            for f in files.unwrap_or_default() {
                let Some(p) = f.get("path").and_then(Value::as_str) else {
                    continue;
                };
                // The proxy answers names relative to the listed directory; keep the last part.
                let name = p.rsplit('/').next().unwrap_or(p).to_owned();
                out.push(ArtifactEntry {
                    path: if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    },
                    is_dir: f.get("is_dir").and_then(Value::as_bool).unwrap_or(false),
                    file_size: f.get("file_size").and_then(|s| {
                        s.as_u64()
                            .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
                    }),
                });
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(out);
        }
        let root = match artifact_uri.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if artifact_uri.starts_with('/') => PathBuf::from(artifact_uri),
            None => {
                return Err(Error::NotSupported(format!(
                    "artifact root {artifact_uri:?}: only the server's artifact proxy (mlflow-artifacts:) and local paths are supported"
                )));
            }
        };
        let dir = if rel.is_empty() {
            root
        } else {
            root.join(&rel)
        };
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok();
            out.push(ArtifactEntry {
                path: if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                },
                is_dir: meta.as_ref().is_some_and(std::fs::Metadata::is_dir),
                file_size: meta.filter(|m| m.is_file()).map(|m| m.len()),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every file (not directory) under `<artifact_uri>/<rel_dir>`, recursively, at most
    /// `limit` of them (a guard against listing a huge tree by mistake).
    pub fn list_artifact_files(
        &self,
        artifact_uri: &str,
        rel_dir: &str,
        limit: usize,
    ) -> Result<Vec<ArtifactEntry>> {
        let mut files = Vec::new();
        let mut dirs = vec![rel_dir.trim_matches('/').to_owned()];
        while let Some(d) = dirs.pop() {
            for e in self.list_artifacts(artifact_uri, &d)? {
                if e.is_dir {
                    dirs.push(e.path);
                } else {
                    files.push(e);
                    if files.len() >= limit {
                        return Ok(files);
                    }
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Uploads every file under the local directory `local` to `<artifact_uri>/<rel_prefix>/...`
    /// (`rel_prefix` empty: the root), keeping the relative layout; returns the uploaded
    /// relative paths. Symbolic links and non-UTF-8 names are refused.
    pub fn upload_dir(
        &self,
        artifact_uri: &str,
        rel_prefix: &str,
        local: &Path,
    ) -> Result<Vec<String>> {
        let prefix = rel_prefix.trim_matches('/');
        let mut uploaded = Vec::new();
        for (rel, path) in local_files(local)? {
            let dest = if prefix.is_empty() {
                rel
            } else {
                format!("{prefix}/{rel}")
            };
            self.upload_artifact(artifact_uri, &dest, &path)?;
            uploaded.push(dest);
        }
        Ok(uploaded)
    }

    /// Downloads every file under `<artifact_uri>/<rel_dir>` into the local directory `dest`
    /// (created), keeping the layout relative to `rel_dir`; returns the files written.
    pub fn download_dir(
        &self,
        artifact_uri: &str,
        rel_dir: &str,
        dest: &Path,
    ) -> Result<Vec<PathBuf>> {
        let base = rel_dir.trim_matches('/');
        let mut written = Vec::new();
        for f in self.list_artifact_files(artifact_uri, base, 100_000)? {
            let rel = if base.is_empty() {
                f.path.as_str()
            } else {
                f.path
                    .strip_prefix(base)
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(f.path.as_str())
            };
            let rel = check_rel_path(rel)?;
            let bytes = self.download_artifact(artifact_uri, &f.path)?;
            let out = dest.join(&rel);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    context: "creating download directory",
                    path: parent.to_owned(),
                    source,
                })?;
            }
            std::fs::write(&out, bytes).map_err(|source| Error::Io {
                context: "writing downloaded artifact",
                path: out.clone(),
                source,
            })?;
            written.push(out);
        }
        Ok(written)
    }

    // ---------------------------------------------------------------- logged models

    /// Creates an MLflow 3 logged model (status PENDING until finalized).
    pub fn create_logged_model(
        &self,
        experiment_id: &str,
        name: &str,
        source_run_id: Option<&str>,
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<LoggedModelInfo> {
        let mut body = json!({
            "experiment_id": experiment_id,
            "name": name,
            "params": params,
            "tags": tags,
        });
        if let Some(r) = source_run_id {
            body["source_run_id"] = json!(r);
        }
        let v = self.post("logged-models", &body, || {
            format!("create logged model {name:?}")
        })?;
        Self::field(v, "/model/info", "logged-models create")
    }

    /// Sets a logged model's final status (READY after its artifacts are uploaded).
    pub fn finalize_logged_model(
        &self,
        model_id: &str,
        status: LoggedModelStatus,
    ) -> Result<LoggedModelInfo> {
        let url = self.api(&format!("logged-models/{model_id}"));
        let v: Value = self
            .http
            .send_json(
                Method::PATCH,
                &url,
                &json!({"model_id": model_id, "status": status}),
            )
            .map_err(|e| self.http_err(format!("finalize logged model {model_id}"), e))?;
        Self::field(v, "/model/info", "logged-models finalize")
    }

    /// A logged model.
    pub fn get_logged_model(&self, model_id: &str) -> Result<LoggedModelInfo> {
        let url = self.api(&format!("logged-models/{model_id}"));
        let resp = self
            .http
            .send_with_retry(|c| Ok(c.get(&url)))
            .map_err(|e| self.http_err(format!("get logged model {model_id}"), e))?;
        let v: Value = decode(resp).map_err(|e| self.http_err("get logged model", e))?;
        Self::field(v, "/model/info", "logged-models get")
    }

    // ---------------------------------------------------------------- registry

    /// Creates a registered model.
    pub fn create_registered_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel> {
        let v = self.post(
            "registered-models/create",
            &json!({"name": name, "description": description}),
            || format!("create registered model {name:?}"),
        )?;
        Self::field(v, "/registered_model", "registered-models/create")
    }

    /// A registered model, or `None`.
    pub fn get_registered_model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        match self.get("registered-models/get", &[("name", name)], || {
            format!("get registered model {name:?}")
        }) {
            Ok(v) => Self::field(v, "/registered_model", "registered-models/get").map(Some),
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The registered model `name`, created if missing.
    pub fn get_or_create_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        if let Some(m) = self.get_registered_model(name)? {
            return Ok(m);
        }
        match self.create_registered_model(name, "") {
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                .get_registered_model(name)?
                .ok_or_else(|| Error::UnexpectedResponse(format!("registered model {name:?}"))),
            other => other,
        }
    }

    /// Creates a model version of `name` from `source` (e.g. `runs:/<run_id>/<path>` or
    /// `models:/<model_id>`), linked to `run_id` and, for MLflow 3, the logged model.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        model_id: Option<&str>,
    ) -> Result<ModelVersion> {
        let mut body = json!({"name": name, "source": source});
        if let Some(r) = run_id {
            body["run_id"] = json!(r);
        }
        if let Some(m) = model_id {
            body["model_id"] = json!(m);
        }
        let v = self.post("model-versions/create", &body, || {
            format!("create version of model {name:?}")
        })?;
        Self::field(v, "/model_version", "model-versions/create")
    }

    /// A model version.
    pub fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        let v = self.get(
            "model-versions/get",
            &[("name", name), ("version", version)],
            || format!("get version {version} of model {name:?}"),
        )?;
        Self::field(v, "/model_version", "model-versions/get")
    }

    /// Points `alias` of model `name` at `version` (moving it if it pointed elsewhere).
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.post(
            "registered-models/alias",
            &json!({"name": name, "alias": alias, "version": version}),
            || format!("set alias {alias:?} of model {name:?} to version {version}"),
        )
        .map(drop)
    }

    /// The version `alias` points to, or `None` when the alias does not exist.
    pub fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<ModelVersion>> {
        match self.get(
            "registered-models/alias",
            &[("name", name), ("alias", alias)],
            || format!("get alias {alias:?} of model {name:?}"),
        ) {
            Ok(v) => Self::field(v, "/model_version", "registered-models/alias").map(Some),
            Err(e) if matches!(e.status(), Some(400 | 404)) => {
                // Servers answer a missing alias with 404 or with 400 INVALID_PARAMETER_VALUE
                // ("alias ... not found"): confirm through the model's alias list.
                match self.get_registered_model(name)? {
                    Some(m) if m.aliases.iter().any(|a| a.alias == alias) => Err(e),
                    _ => Ok(None),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes `alias` of model `name`.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        let _: Value = self
            .http
            .send_json(
                Method::DELETE,
                &self.api("registered-models/alias"),
                &json!({"name": name, "alias": alias}),
            )
            .map_err(|e| self.http_err(format!("delete alias {alias:?} of model {name:?}"), e))?;
        Ok(())
    }

    /// Moves a version to a stage (the pre-alias workflow, deprecated since MLflow 2.9 but
    /// still served); `archive_existing` archives the versions currently in that stage.
    pub fn transition_stage(
        &self,
        name: &str,
        version: &str,
        stage: Stage,
        archive_existing: bool,
    ) -> Result<ModelVersion> {
        let v = self.post(
            "model-versions/transition-stage",
            &json!({
                "name": name,
                "version": version,
                "stage": stage.as_str(),
                "archive_existing_versions": archive_existing,
            }),
            || {
                format!(
                    "transition version {version} of model {name:?} to {}",
                    stage.as_str()
                )
            },
        )?;
        Self::field(v, "/model_version", "model-versions/transition-stage")
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

/// Rejects absolute paths and `..` in artifact paths; normalizes separators.
fn check_rel_path(rel: &str) -> Result<String> {
    let parts: Vec<&str> = rel
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if rel.starts_with('/') || parts.contains(&"..") || parts.is_empty() {
        return Err(Error::Config(format!(
            "artifact path {rel:?} must be relative, non-empty and without `..`"
        )));
    }
    Ok(parts.join("/"))
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArtifactEntry {
    /// Path relative to the artifact root (`model/MLmodel`).
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Size in bytes, for files when the server says.
    pub file_size: Option<u64>,
}

/// Every regular file under `dir`, with its path relative to `dir` (`/`-separated), sorted.
pub(crate) fn local_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            context: "reading model directory",
            path,
            source,
        }
    };
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), dir.to_owned())];
    while let Some((prefix, d)) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let path = e.path();
            let name = e.file_name().into_string().map_err(|n| {
                Error::Config(format!(
                    "model file name {} is not UTF-8",
                    n.to_string_lossy()
                ))
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = e.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                todo.push((rel, path));
            } else if kind.is_file() {
                out.push((rel, path));
            } else {
                return Err(Error::Config(format!(
                    "model directory entry {rel:?} is not a regular file or directory (symbolic links are not followed)"
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn copy_local(src: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            context: "creating artifact directory",
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::copy(src, dest)
        .map(drop)
        .map_err(|source| Error::Io {
            context: "copying artifact",
            path: src.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uri: &str) -> MlflowClient {
        MlflowClient::new(uri, HttpClient::builder().build().unwrap()).unwrap()
    }

    #[test]
    fn artifact_urls() {
        let c = client("http://127.0.0.1:5000/");
        assert_eq!(
            c.artifact_target("mlflow-artifacts:/1/abc/artifacts", "ckpt/model v1.bin")
                .unwrap(),
            ArtifactTarget::Http(
                Url::parse("http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/ckpt/model%20v1.bin")
                    .unwrap()
            )
        );
        let c = client("https://example.invalid/mlflow");
        assert_eq!(
            c.artifact_target("mlflow-artifacts:/1/abc/artifacts", "a.txt")
                .unwrap(),
            ArtifactTarget::Http(
                Url::parse("https://example.invalid/mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a.txt")
                    .unwrap()
            )
        );
        assert_eq!(
            c.artifact_target("mlflow-artifacts://other:81/1/r/artifacts", "a.txt")
                .unwrap(),
            ArtifactTarget::Http(
                Url::parse(
                    "https://other:81/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt"
                )
                .unwrap()
            )
        );
        assert_eq!(
            c.artifact_target("file:///tmp/x", "a/b.txt").unwrap(),
            ArtifactTarget::Local(PathBuf::from("/tmp/x/a/b.txt"))
        );
        assert!(c.artifact_target("s3://bucket/x", "a").is_err());
        assert!(
            c.artifact_target("mlflow-artifacts:/1", "../etc/passwd")
                .is_err()
        );
        assert!(c.artifact_target("mlflow-artifacts:/1", "/abs").is_err());
    }

    #[test]
    fn rejects_non_http_uris_and_inline_credentials() {
        let h = HttpClient::builder().build().unwrap();
        assert!(MlflowClient::new("sqlite:///mlflow.db", h.clone()).is_err());
        let e = MlflowClient::new("http://bob:pw-secret@127.0.0.1:5000", h).unwrap_err();
        assert!(!e.to_string().contains("pw-secret"));
    }
}
