//! The online client: GraphQL `UpsertBucket` / `CreateRunFiles` and the `file_stream` endpoint,
//! through `exptrack-http` (Basic auth `api:<key>`, W&B's retry rules).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exptrack_http::{Auth, HttpClient, RetryConfig, RetryPolicy, Secret};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// wandb-core's UpsertBucket mutation (same variables and selection).
const UPSERT_BUCKET: &str = "mutation UpsertBucket ($id: String, $name: String, $project: String, \
$entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, \
$commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, \
$jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {
	upsertBucket(input: {id:$id,name:$name,groupName:$groupName,modelName:$project,entityName:$entity,\
description:$description,displayName:$displayName,notes:$notes,config:$config,commit:$commit,host:$host,\
debug:$debug,jobProgram:$program,jobRepo:$repo,jobType:$jobType,state:$state,sweep:$sweep,tags:$tags,\
summaryMetrics:$summaryMetrics}) {
		bucket { id name displayName description config sweepName project { id name entity { id name } } historyLineCount }
		inserted
	}
}";

/// wandb-core's CreateRunFiles mutation.
const CREATE_RUN_FILES: &str = "mutation CreateRunFiles ($entity: String!, $project: String!, \
$run: String!, $files: [String!]!) { createRunFiles(input: {entityName:$entity,projectName:$project,\
runName:$run,files:$files}) { runID uploadHeaders files { name uploadUrl } } }";

/// Largest file_stream request body we build (wandb-core splits at about 10 MiB).
const MAX_REQUEST_BYTES: usize = 8 << 20;

/// The default retry settings for W&B: its retry table, backoff 2 s doubling to 60 s with up to
/// 1 s jitter, 60 s per attempt, at most 2 minutes per request (the dispatcher retries later).
pub fn default_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        initial_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(60),
        backoff_factor: 2.0,
        jitter: Duration::from_secs(1),
        request_timeout: Duration::from_secs(60),
        retry_timeout: Duration::from_secs(120),
        policy: RetryPolicy::wandb(),
    }
}

/// What the run is, for `UpsertBucket`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFields {
    pub(crate) run_id: String,
    pub(crate) project: String,
    pub(crate) entity: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) notes: Option<String>,
    pub(crate) commit: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) program: Option<String>,
    pub(crate) job_type: Option<String>,
    /// A companion's writer id: the run is joined in W&B's shared mode (a non-primary writer
    /// that sends only its own rows, summary keys and metric definitions).
    pub(crate) shared_client_id: Option<String>,
}

impl RunFields {
    /// The fields of a companion of run `run_id`: only what names the run.
    pub(crate) fn companion(
        run_id: String,
        project: String,
        entity: Option<String>,
        client_id: String,
    ) -> Self {
        RunFields {
            run_id,
            project,
            entity,
            shared_client_id: Some(client_id),
            ..RunFields::default()
        }
    }
}

/// An online run: where it lives and what the server has acknowledged.
#[derive(Debug)]
pub(crate) struct OnlineRun {
    client: HttpClient,
    /// For pre-signed upload URLs: no W&B credentials.
    upload_client: HttpClient,
    base_url: String,
    fields: RunFields,
    entity: String,
    /// Line offset of the next history line the server has not acknowledged.
    history_offset: u64,
    /// History lines not yet acknowledged.
    pending_lines: Vec<String>,
    /// `wandb-events.jsonl` (system metrics) lines acknowledged so far.
    events_offset: u64,
    /// `wandb-events.jsonl` lines not sent yet.
    pending_events: Vec<String>,
    /// The summary to send (whole), if it changed since the last successful send.
    pending_summary: Option<String>,
    /// Files uploaded since the last file_stream request.
    uploaded: Vec<String>,
    last_send: Option<Instant>,
    interval: Duration,
    stopped: bool,
    /// The file_stream URL.
    stream_url: String,
}

fn http_err(operation: &'static str, run_id: &str, e: exptrack_http::Error) -> Error {
    Error::Api {
        operation,
        run_id: run_id.to_owned(),
        status: e.status(),
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref()
        .filter(|s| !s.is_empty())
        .map_or(Value::Null, |s| Value::String(s.clone()))
}

impl OnlineRun {
    /// Creates (or resumes) the run with `UpsertBucket`.
    pub(crate) fn start(
        base_url: &str,
        key: &Secret,
        retry: RetryConfig,
        interval: Duration,
        fields: RunFields,
        config_json: &str,
        tags: &[String],
    ) -> Result<Self> {
        let agent = concat!("exptrack-wandb/", env!("CARGO_PKG_VERSION"));
        let client = HttpClient::builder()
            .auth(Auth::basic("api", key.expose()))
            .retry(retry.clone())
            .user_agent(agent)
            .build()
            .map_err(|e| http_err("creating the HTTP client", &fields.run_id, e))?;
        let upload_client = HttpClient::builder()
            .retry(retry)
            .user_agent(agent)
            .build()
            .map_err(|e| http_err("creating the HTTP client", &fields.run_id, e))?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let mut run = OnlineRun {
            client,
            upload_client,
            base_url,
            entity: fields.entity.clone().unwrap_or_default(),
            fields,
            history_offset: 0,
            pending_lines: Vec::new(),
            events_offset: 0,
            pending_events: Vec::new(),
            pending_summary: None,
            uploaded: Vec::new(),
            last_send: None,
            interval,
            stopped: false,
            stream_url: String::new(),
        };
        let vars = json!({
            "id": null,
            "name": run.fields.run_id,
            "project": run.fields.project,
            "entity": opt(&run.fields.entity),
            "groupName": opt(&run.fields.group),
            "description": null,
            "displayName": opt(&run.fields.display_name),
            "notes": opt(&run.fields.notes),
            "commit": opt(&run.fields.commit),
            "config": config_json,
            "host": opt(&run.fields.host),
            "debug": null,
            "program": opt(&run.fields.program),
            "repo": null,
            "jobType": opt(&run.fields.job_type),
            "state": null,
            "sweep": null,
            // A shared-mode writer leaves the owner's tags alone.
            "tags": if run.fields.shared_client_id.is_some() { Value::Null } else { json!(tags) },
            "summaryMetrics": null,
        });
        let data = run.graphql("UpsertBucket", UPSERT_BUCKET, vars)?;
        let bucket = &data["upsertBucket"]["bucket"];
        if let Some(e) = bucket["project"]["entity"]["name"].as_str() {
            run.entity = e.to_owned();
        }
        if run.entity.is_empty() {
            return Err(Error::Api {
                operation: "UpsertBucket",
                run_id: run.fields.run_id.clone(),
                status: None,
                transient: false,
                message: "the server did not say which entity the run belongs to".into(),
            });
        }
        run.history_offset = bucket["historyLineCount"].as_u64().unwrap_or(0);
        run.stream_url = format!(
            "{}/files/{}/{}/{}/file_stream",
            run.base_url,
            path_segment(&run.entity),
            path_segment(&run.fields.project),
            path_segment(&run.fields.run_id)
        );
        Ok(run)
    }

    /// The entity the server placed the run in.
    pub(crate) fn entity(&self) -> &str {
        &self.entity
    }

    /// The history line offset the server will get next (lines sent and acknowledged).
    #[allow(dead_code)]
    pub(crate) fn history_offset(&self) -> u64 {
        self.history_offset
    }

    /// Updates config and tags (a later `UpsertBucket` with only what changed; a companion's
    /// config is only its metric definitions, and it sends no tags).
    pub(crate) fn update_run(
        &mut self,
        config_json: Option<&str>,
        tags: Option<&[String]>,
    ) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        let vars = json!({
            "id": null,
            "name": self.fields.run_id,
            "project": self.fields.project,
            "entity": self.entity,
            "groupName": null, "description": null, "displayName": null, "notes": null,
            "commit": null,
            "config": config_json,
            "host": null, "debug": null, "program": null, "repo": null, "jobType": null,
            "state": null, "sweep": null,
            "tags": if self.fields.shared_client_id.is_some() { None } else { tags },
            "summaryMetrics": null,
        });
        self.graphql("UpsertBucket", UPSERT_BUCKET, vars)
            .map(|_| ())
    }

    /// Queues history lines.
    pub(crate) fn push_lines(&mut self, lines: impl IntoIterator<Item = String>) {
        self.pending_lines.extend(lines);
    }

    /// Queues system-metrics lines (`wandb-events.jsonl`).
    pub(crate) fn push_events(&mut self, lines: impl IntoIterator<Item = String>) {
        self.pending_events.extend(lines);
    }

    /// Queues the whole summary.
    pub(crate) fn set_summary(&mut self, summary_json: String) {
        self.pending_summary = Some(summary_json);
    }

    /// Whether a batch is due (first send immediately, then at most every `interval`).
    pub(crate) fn due(&self) -> bool {
        self.last_send.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Sends everything queued (in requests of bounded size); with `exit_code`, the last request
    /// carries `complete` and `exitcode`.
    pub(crate) fn send(&mut self, exit_code: Option<i32>) -> Result<()> {
        if self.stopped {
            self.pending_lines.clear();
            self.pending_events.clear();
            self.pending_summary = None;
            return Ok(());
        }
        loop {
            let mut size = 0usize;
            let mut n = 0usize;
            for line in &self.pending_lines {
                if n > 0 && size + line.len() + 4 > MAX_REQUEST_BYTES {
                    break;
                }
                size += line.len() + 4;
                n += 1;
            }
            // System metrics fill what room the history left (at least one line a request).
            let mut e = 0usize;
            for line in &self.pending_events {
                if (n > 0 || e > 0) && size + line.len() + 4 > MAX_REQUEST_BYTES {
                    break;
                }
                size += line.len() + 4;
                e += 1;
            }
            let more_after = n < self.pending_lines.len() || e < self.pending_events.len();
            let summary = if more_after {
                None
            } else {
                self.pending_summary.clone()
            };
            let finishing = exit_code.filter(|_| !more_after);
            if n == 0
                && e == 0
                && summary.is_none()
                && finishing.is_none()
                && self.uploaded.is_empty()
            {
                return Ok(());
            }
            let mut files = serde_json::Map::new();
            if n > 0 {
                files.insert(
                    "wandb-history.jsonl".into(),
                    json!({"offset": self.history_offset, "content": &self.pending_lines[..n]}),
                );
            }
            if e > 0 {
                files.insert(
                    "wandb-events.jsonl".into(),
                    json!({"offset": self.events_offset, "content": &self.pending_events[..e]}),
                );
            }
            if let Some(s) = &summary {
                files.insert(
                    "wandb-summary.json".into(),
                    json!({"offset": 0, "content": [s]}),
                );
            }
            let mut body = serde_json::Map::new();
            body.insert("files".into(), Value::Object(files));
            if !self.uploaded.is_empty() && !more_after {
                body.insert("uploaded".into(), json!(self.uploaded));
            }
            if let Some(code) = finishing {
                body.insert("complete".into(), Value::Bool(true));
                body.insert("exitcode".into(), json!(code));
            }
            let headers = self.shared_headers("X-WANDB-ASYNC-CLIENT-ID");
            let resp: Value = post_json(
                &self.client,
                &self.stream_url,
                &Value::Object(body),
                &headers,
            )
            .map_err(|e| http_err("file_stream", &self.fields.run_id, e))?;
            self.last_send = Some(Instant::now());
            // The server sets the start (historyLineCount); a huge one must not wrap to 0.
            self.history_offset = self.history_offset.saturating_add(n as u64);
            self.pending_lines.drain(..n);
            self.events_offset = self.events_offset.saturating_add(e as u64);
            self.pending_events.drain(..e);
            if summary.is_some() {
                self.pending_summary = None;
            }
            if !more_after {
                self.uploaded.clear();
            }
            if resp.get("stopped").and_then(Value::as_bool) == Some(true) {
                tracing::warn!(run_id = %self.fields.run_id, "W&B: the server stopped this run; no more data is sent");
                self.stopped = true;
                self.pending_lines.clear();
                self.pending_events.clear();
                self.pending_summary = None;
                return Ok(());
            }
            if !more_after {
                return Ok(());
            }
        }
    }

    /// Uploads files (`(name in the run, local path)`) with `CreateRunFiles` + `PUT`; they are
    /// reported in the next file_stream request's `uploaded`.
    pub(crate) fn upload(&mut self, files: &[(String, PathBuf)]) -> Result<()> {
        if self.stopped || files.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let vars = json!({
            "entity": self.entity,
            "project": self.fields.project,
            "run": self.fields.run_id,
            "files": names,
        });
        let data = self.graphql("CreateRunFiles", CREATE_RUN_FILES, vars)?;
        let run_headers = headers_of(&data["createRunFiles"]["uploadHeaders"]);
        let listed = data["createRunFiles"]["files"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (name, path) in files {
            let url = listed
                .iter()
                .find(|f| f["name"].as_str() == Some(name.as_str()))
                .and_then(|f| f["uploadUrl"].as_str())
                .ok_or_else(|| Error::Api {
                    operation: "CreateRunFiles",
                    run_id: self.fields.run_id.clone(),
                    status: None,
                    transient: false,
                    message: format!("no upload URL for {name:?}"),
                })?
                .to_owned();
            self.put_file(&url, path, &run_headers)?;
            if !self.uploaded.contains(name) {
                self.uploaded.push(name.clone());
            }
        }
        Ok(())
    }

    fn put_file(&self, url: &str, path: &Path, headers: &[(String, String)]) -> Result<()> {
        // The upload URL is usually pre-signed (cloud storage): send no W&B credentials to it.
        self.upload_client
            .send_with_retry(|c| {
                let (body, _) = exptrack_http::file_body(path)?;
                let mut rb = c.put(url).body(body);
                for (k, v) in headers {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                Ok(rb)
            })
            .map(|_| ())
            .map_err(|e| http_err("file upload", &self.fields.run_id, e))
    }

    fn graphql(&self, operation: &'static str, query: &str, variables: Value) -> Result<Value> {
        let url = format!("{}/graphql", self.base_url);
        let body = json!({"query": query, "variables": variables, "operationName": operation});
        let headers = self.shared_headers("X-WANDB-CLIENT-ID");
        let resp: Value = post_json(&self.client, &url, &body, &headers)
            .map_err(|e| http_err(operation, &self.fields.run_id, e))?;
        if let Some(errors) = resp
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            let message = errors
                .iter()
                .filter_map(|e| e["message"].as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Api {
                operation,
                run_id: self.fields.run_id.clone(),
                status: Some(200),
                transient: false,
                message,
            });
        }
        Ok(resp.get("data").cloned().unwrap_or(Value::Null))
    }
}

impl OnlineRun {
    /// The headers of a shared-mode writer, as wandb-core sends them (`id_header` is
    /// `X-WANDB-CLIENT-ID` on GraphQL, `X-WANDB-ASYNC-CLIENT-ID` on the file stream); none for
    /// the run's owner.
    fn shared_headers(&self, id_header: &'static str) -> Vec<(&'static str, String)> {
        match &self.fields.shared_client_id {
            Some(id) => vec![
                ("X-WANDB-USE-ASYNC-FILESTREAM", "true".to_owned()),
                (id_header, id.clone()),
            ],
            None => Vec::new(),
        }
    }
}

/// `POST` JSON with extra headers and decodes the JSON response (the body is serialized once).
fn post_json(
    client: &HttpClient,
    url: &str,
    body: &Value,
    headers: &[(&'static str, String)],
) -> std::result::Result<Value, exptrack_http::Error> {
    if headers.is_empty() {
        return client.post_json(url, body);
    }
    let bytes = serde_json::to_vec(body).map_err(|e| exptrack_http::Error::Request {
        what: format!("POST {}", exptrack_http::redact_str(url)),
        message: e.to_string(),
    })?;
    let resp = client.send_with_retry(|c| {
        let mut rb = c
            .post(url)
            .header("Content-Type", "application/json")
            .body(bytes.clone());
        for (k, v) in headers {
            rb = rb.header(*k, v.as_str());
        }
        Ok(rb)
    })?;
    exptrack_http::decode(resp)
}

/// `["Key:Value", ...]` upload headers.
fn headers_of(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|h| h.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-encodes one URL path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
