//! What a W&B client sent to the recorder, normalized for comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;

/// The content of one recorded run upload.
#[derive(Debug, Default)]
pub struct Upload {
    /// `UpsertBucket` variables, in order.
    pub upserts: Vec<Value>,
    /// History lines by line offset.
    pub history: BTreeMap<u64, Value>,
    /// History lines as sent (raw text), by offset.
    pub history_raw: BTreeMap<u64, String>,
    /// The last summary sent.
    pub summary: Option<Value>,
    /// `complete` of the last file_stream request that had it.
    pub complete: Option<bool>,
    /// `exitcode` of the request that completed the run.
    pub exitcode: Option<i64>,
    /// File names announced in `uploaded`.
    pub uploaded: Vec<String>,
    /// Authorization headers of PUT uploads.
    pub put_auth: Vec<Option<String>>,
    /// Paths of PUT uploads and their text.
    pub puts: BTreeMap<String, String>,
    /// file_stream URL paths.
    pub stream_paths: Vec<String>,
    /// Authorization headers of GraphQL and file_stream requests.
    pub auth: Vec<Option<String>>,
    /// CreateRunFiles `files` variables.
    pub create_run_files: Vec<Vec<String>>,
}

impl Upload {
    pub fn from_requests(reqs: &[Value]) -> Upload {
        let mut u = Upload::default();
        for r in reqs {
            if r.get("failed_with").is_some_and(|f| !f.is_null()) {
                continue;
            }
            let path = r["path"].as_str().unwrap_or_default();
            let body = &r["body"];
            if path.starts_with("/graphql") {
                u.auth.push(r["authorization"].as_str().map(str::to_owned));
                match body["operationName"].as_str() {
                    Some("UpsertBucket") => u.upserts.push(body["variables"].clone()),
                    Some("CreateRunFiles") => u.create_run_files.push(
                        body["variables"]["files"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|f| f.as_str().unwrap().to_owned())
                            .collect(),
                    ),
                    _ => {}
                }
            } else if path.ends_with("/file_stream") {
                u.auth.push(r["authorization"].as_str().map(str::to_owned));
                u.stream_paths.push(path.to_owned());
                let files = &body["files"];
                if let Some(h) = files.get("wandb-history.jsonl") {
                    let offset = h["offset"].as_u64().unwrap();
                    for (i, line) in h["content"].as_array().unwrap().iter().enumerate() {
                        let line = line.as_str().unwrap();
                        let v = exptrack_wandb::parse_lenient(line).unwrap();
                        let at = offset + i as u64;
                        if let Some(prev) = u.history_raw.get(&at) {
                            assert_eq!(
                                prev, line,
                                "history line {at} sent twice with different content"
                            );
                        }
                        u.history.insert(at, v);
                        u.history_raw.insert(at, line.to_owned());
                    }
                }
                if let Some(s) = files.get("wandb-summary.json") {
                    let content = s["content"].as_array().unwrap();
                    assert_eq!(content.len(), 1, "the summary is one line");
                    u.summary =
                        Some(exptrack_wandb::parse_lenient(content[0].as_str().unwrap()).unwrap());
                }
                if let Some(up) = body.get("uploaded").and_then(Value::as_array) {
                    u.uploaded
                        .extend(up.iter().map(|f| f.as_str().unwrap().to_owned()));
                }
                if let Some(c) = body.get("complete").and_then(Value::as_bool) {
                    u.complete = Some(c);
                    u.exitcode = body.get("exitcode").and_then(Value::as_i64);
                }
            } else if r["method"] == "PUT" {
                u.put_auth
                    .push(r["authorization"].as_str().map(str::to_owned));
                u.puts.insert(
                    path.to_owned(),
                    r["put_text"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
        u
    }

    /// The history rows in order (checks there are no gaps).
    pub fn rows(&self) -> Vec<Value> {
        for (i, k) in self.history.keys().enumerate() {
            assert_eq!(*k, i as u64, "history offsets have a gap");
        }
        self.history.values().cloned().collect()
    }

    /// The rows without the fields that legitimately differ between clients.
    pub fn rows_without_times(&self) -> Vec<Value> {
        self.rows()
            .into_iter()
            .map(|r| strip(r, &["_runtime", "_timestamp"]))
            .collect()
    }

    /// The final config: every UpsertBucket's config merged, `{"k": {"value": v}}` unwrapped.
    pub fn config(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for u in &self.upserts {
            if let Some(c) = u["config"].as_str() {
                let c: Value = exptrack_wandb::parse_lenient(c).unwrap();
                for (k, v) in c.as_object().unwrap() {
                    out.insert(k.clone(), v["value"].clone());
                }
            }
        }
        out
    }

    /// The tags of the last UpsertBucket that set them.
    pub fn tags(&self) -> Vec<String> {
        self.upserts
            .iter()
            .rev()
            .find_map(|u| u["tags"].as_array())
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
}

/// `v` without `keys` (top level).
pub fn strip(mut v: Value, keys: &[&str]) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
    v
}
