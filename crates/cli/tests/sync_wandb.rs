//! `exptrack sync RUN --to wandb` against a local stand-in for the W&B cloud API (the recorder of
//! exptrack-wandb's tests, `crates/backend-wandb/tests/recorder.py`: GraphQL `UpsertBucket`,
//! `file_stream`, file uploads, every request logged):
//!
//! - online (an API key configured): the built `exptrack` binary uploads the config, every history
//!   row and the summary itself, and the API key appears nowhere in its output (with every log
//!   level on) or in the local files it writes;
//! - offline (`--wandb-offline`): the real `wandb` package (0.31, the peer venv) accepts the
//!   directory the CLI wrote — `wandb sync` uploads it — and uploads the same data.
//!
//! The recorder needs a Python: the peer's (`EXPTRACK_PEER_PYTHON`, else
//! `~/.cache/exptrack-peers/venv/bin/python`), else `python3` (the online test needs nothing but
//! the standard library). The offline test needs `wandb==0.31.0` in the peer. A missing Python
//! fails the tests with `CI=true` and skips them otherwise.

mod common;
#[path = "../../backend-wandb/tests/common/upload.rs"]
mod upload;
// The W&B backend's test harness: the recorder (a local stand-in for the W&B API) and isolated().
#[path = "../../backend-wandb/tests/common/mod.rs"]
mod wandb_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_code, stderr, stdout};
use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use serde_json::{Value, json};
use upload::{Upload, strip};
use wandb_common::{Recorder, isolated};

/// A fake 40-character API key, distinctive enough to search for.
const API_KEY: &str = "c0ffee00deadbeef1234567890abcdefc0ffee00";
const STEPS: u64 = 20;
const PROJECT: &str = "cli-sync-project";
const CONFIG: &str = r#"
[experiment]
name = "cli-wandb-sync"
description = "exptrack sync to a local W&B stand-in"
tags = ["cli", "sync"]

[model]
layers = 4
act = "relu"

[optim]
lr = 0.001
betas = [0.9, 0.999]

[tracking]
use_tensorboard = false
"#;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Panics in CI, else prints `skipping: ...`; returns `None` for the caller to return.
fn missing<T>(why: &str) -> Option<T> {
    assert!(
        !ci(),
        "W&B sync test needs a Python peer with CI=true: {why}"
    );
    eprintln!("skipping: {why}");
    None
}

/// The peer Python: `EXPTRACK_PEER_PYTHON`, else the venv `scripts/peers.sh` creates.
fn peer_python() -> Option<PathBuf> {
    std::env::var_os("EXPTRACK_PEER_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/exptrack-peers/venv/bin/python"))
        })
        .filter(|p| p.is_file())
}

fn python_runs(py: &Path, code: &str) -> Option<String> {
    let o = Command::new(py)
        .args(["-c", code])
        .env("WANDB_SILENT", "true")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// A Python 3 for the recorder (standard library only).
fn recorder_python() -> Option<PathBuf> {
    let candidates = peer_python()
        .into_iter()
        .chain(std::iter::once(PathBuf::from("python3")));
    for py in candidates {
        if python_runs(&py, "import http.server, json").is_some() {
            return Some(py);
        }
    }
    missing("no Python 3 for the W&B recorder (run scripts/peers.sh)")
}

/// The peer Python with `wandb==0.31.0`.
fn wandb_python() -> Option<PathBuf> {
    let Some(py) = peer_python() else {
        return missing("no peer Python (EXPTRACK_PEER_PYTHON; run scripts/peers.sh)");
    };
    match python_runs(&py, "import wandb; print(wandb.__version__)") {
        Some(v) if v == "0.31.0" => Some(py),
        Some(v) => missing(&format!("wandb {v} in {}, 0.31.0 required", py.display())),
        None => missing(&format!("`import wandb` fails with {}", py.display())),
    }
}

fn exptrack(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = isolated(Path::new(env!("CARGO_BIN_EXE_exptrack")), home);
    cmd.args(args).env("EXPTRACK_LOG", "trace");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run exptrack")
}

type Metrics = Vec<(&'static str, f64)>;

/// The metrics of `step`: every step `train/*`, every fifth step also `valid/*` (a second event
/// at the same step).
fn metrics(step: u64) -> (Metrics, Metrics) {
    let x = step as f64;
    let train = vec![
        ("train/loss", 2.0 / x.sqrt()),
        ("train/lr", 0.01 * 0.9f64.powf(x)),
    ];
    let valid = if step.is_multiple_of(5) {
        vec![
            ("valid/loss", 2.5 / x.sqrt()),
            ("valid/accuracy", 1.0 - 0.3 / x),
        ]
    } else {
        Vec::new()
    };
    (train, valid)
}

/// Writes a completed run (config, hyperparameters, metrics, a result) under `runs`; returns its id.
fn make_run(runs: &Path) -> String {
    let cfg = ExperimentConfig::parse(CONFIG, "sync-test.toml").expect("config");
    let t = ExperimentTracker::builder(cfg)
        .runs_dir(runs)
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .expect("tracker");
    t.log_hyperparameters(&[("batch_size", 32i64)]).unwrap();
    t.log_hyperparameters(&[("optimizer", "adam")]).unwrap();
    t.log_hyperparameters(&[("dropout", 0.1f64)]).unwrap();
    t.log_hyperparameters(&[("amp", true)]).unwrap();
    for step in 1..=STEPS {
        let (train, valid) = metrics(step);
        t.log_metrics(step, &train).unwrap();
        if !valid.is_empty() {
            t.log_metrics(step, &valid).unwrap();
        }
    }
    t.set_result("test_accuracy", json!(0.97)).unwrap();
    let id = t.metadata().run_id.clone();
    assert!(t.finish(RunStatus::Completed).unwrap().is_complete());
    id
}

fn expected_config() -> Value {
    json!({
        "model": {"layers": 4, "act": "relu"},
        "optim": {"lr": 0.001, "betas": [0.9, 0.999]},
        "batch_size": 32, "optimizer": "adam", "dropout": 0.1, "amp": true,
    })
}

/// Compares numbers as f64 (an integral float may print as `1` or `1.0`), recursively.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

/// What a W&B client uploaded for the run: the config, every logged metric as one point per
/// step (rows of the same step merged, no key twice), the summary with every key's last value,
/// and a completed run.
fn assert_upload(u: &Upload, what: &str) {
    assert!(!u.upserts.is_empty(), "{what}: no UpsertBucket");
    assert_eq!(
        u.upserts[0]["project"], PROJECT,
        "{what}: project {}",
        u.upserts[0]
    );
    let mut config = u.config();
    config.remove("_wandb");
    // The experiment table (name, description, tags) is in the config too; the rest must match.
    let experiment = config.remove("experiment");
    assert_eq!(
        experiment.as_ref().and_then(|e| e["name"].as_str()),
        Some("cli-wandb-sync"),
        "{what}: config.experiment {experiment:?}"
    );
    let config = serde_json::to_value(config).unwrap();
    assert!(
        same(&config, &expected_config()),
        "{what}: config\n{config}\nexpected\n{}",
        expected_config()
    );
    let mut tags = u.tags();
    tags.sort();
    assert_eq!(tags, ["cli", "sync"], "{what}: tags");

    // History: every (step, key) once, with the value logged.
    let mut by_step: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    let mut last_step = 0;
    for row in u.rows() {
        let step = row["_step"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: row without _step: {row}"));
        assert!(step >= last_step, "{what}: steps go back at {row}");
        last_step = step;
        for (k, v) in strip(row.clone(), &["_step", "_runtime", "_timestamp"])
            .as_object()
            .unwrap()
        {
            let v = v.as_f64().unwrap_or_else(|| panic!("{what}: {k} = {v}"));
            let prev = by_step.entry(step).or_default().insert(k.clone(), v);
            assert!(prev.is_none(), "{what}: step {step} {k} sent twice");
        }
    }
    let mut expected: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for step in 1..=STEPS {
        let (train, valid) = metrics(step);
        for (k, v) in train.into_iter().chain(valid) {
            expected.entry(step).or_default().insert(k.to_owned(), v);
        }
    }
    assert_eq!(by_step, expected, "{what}: history");

    // Summary: each key's last value.
    let summary = u
        .summary
        .clone()
        .unwrap_or_else(|| panic!("{what}: no summary"));
    let summary = strip(summary, &["_wandb", "_runtime", "_timestamp", "_step"]);
    let (train, valid) = metrics(STEPS);
    let mut want = serde_json::Map::new();
    for (k, v) in train.into_iter().chain(valid) {
        want.insert(k.to_owned(), json!(v));
    }
    // The run's result (`set_result`) is part of the W&B summary too.
    want.insert("test_accuracy".to_owned(), json!(0.97));
    assert!(
        same(&summary, &Value::Object(want.clone())),
        "{what}: summary {summary}, expected {}",
        Value::Object(want)
    );
    assert_eq!(u.complete, Some(true), "{what}: run not completed");
    assert_eq!(u.exitcode, Some(0), "{what}: exit code");
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn sync_to_wandb_online_uploads_config_history_and_summary_without_leaking_the_key() {
    let Some(py) = recorder_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rec = Recorder::start(&py, tmp.path());
    let runs = tmp.path().join("runs");
    let id = make_run(&runs);
    let wandb_dir = tmp.path().join("wb");
    let runs_s = runs.to_str().unwrap();
    let wandb_s = wandb_dir.to_str().unwrap();
    let args = [
        "sync",
        id.as_str(),
        "--dir",
        runs_s,
        "--to",
        "wandb",
        "--wandb-project",
        PROJECT,
        "--wandb-dir",
        wandb_s,
    ];
    let base_url = rec.base_url();
    let env = [
        ("WANDB_BASE_URL", base_url.as_str()),
        ("WANDB_API_KEY", API_KEY),
    ];
    let o = exptrack(tmp.path(), &args, &env);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("wandb: delivered "), "{out}");
    assert!(out.contains("run closed as completed"), "{out}");
    // EXPTRACK_LOG=trace: every log line of the CLI and its HTTP stack is on stderr.
    assert!(!stderr(&o).is_empty(), "no log output at trace level");
    assert!(
        !stderr(&o).contains('\u{1b}'),
        "colour codes in log output that is not a terminal:\n{}",
        stderr(&o)
    );
    for (stream, text) in [("stdout", out.as_str()), ("stderr", &stderr(&o))] {
        assert!(
            !text.contains(API_KEY),
            "the API key is in the CLI's {stream}:\n{text}"
        );
    }
    // Online, not offline: the run went to the server, and no offline run was written.
    let reqs = rec.requests();
    let u = Upload::from_requests(&reqs);
    assert_upload(&u, "exptrack sync (online)");
    assert!(
        !std::fs::read_dir(wandb_dir.join("wandb"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("offline-run-")),
        "an offline run was written although an API key is configured"
    );
    // The key went to the server (HTTP basic auth as user `api`) and nowhere else.
    let basic = format!("Basic {}", base64(format!("api:{API_KEY}").as_bytes()));
    assert!(
        u.auth.iter().all(|a| a.as_deref() == Some(basic.as_str())),
        "authorization headers {:?}",
        u.auth
    );
    let leaked: Vec<PathBuf> = [runs.as_path(), wandb_dir.as_path()]
        .iter()
        .flat_map(|d| files_containing(d, API_KEY))
        .collect();
    assert!(leaked.is_empty(), "the API key was written to {leaked:?}");

    // Again: the cursor is at the end, nothing new reaches the server.
    let before = reqs.len();
    let o = exptrack(tmp.path(), &args, &env);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("delivered 0 event(s)"),
        "{}",
        stdout(&o)
    );
    let again = rec.requests();
    let streamed_again = again[before..]
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/file_stream"))
        })
        .any(|r| r["body"]["files"].get("wandb-history.jsonl").is_some());
    assert!(
        !streamed_again,
        "history sent again: {:?}",
        &again[before..]
    );
}

#[test]
fn sync_to_wandb_offline_is_accepted_by_wandb_sync() {
    let Some(py) = wandb_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let id = make_run(&runs);
    let wandb_dir = tmp.path().join("wb");
    let o = exptrack(
        tmp.path(),
        &[
            "sync",
            &id,
            "--dir",
            runs.to_str().unwrap(),
            "--to",
            "wandb",
            "--wandb-offline",
            "--wandb-project",
            PROJECT,
            "--wandb-dir",
            wandb_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_code(&o, 0);
    let offline: Vec<PathBuf> = std::fs::read_dir(wandb_dir.join("wandb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("offline-run-"))
        })
        .collect();
    assert_eq!(offline.len(), 1, "one offline run: {offline:?}");

    // The real client uploads it to the recorder.
    let rec = Recorder::start(&py, tmp.path());
    let wandb = py.with_file_name("wandb");
    let out = isolated(&wandb, tmp.path())
        .env("WANDB_BASE_URL", rec.base_url())
        .env("WANDB_API_KEY", API_KEY)
        // Only loopback may be reached.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("https_proxy", "http://127.0.0.1:9")
        .arg("sync")
        .arg(&offline[0])
        .output()
        .expect("run wandb sync");
    assert!(
        out.status.success(),
        "wandb sync failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let synced = std::fs::read_dir(&offline[0])
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".wandb.synced"));
    assert!(synced, "wandb sync did not mark the run synced");
    assert_upload(
        &Upload::from_requests(&rec.requests()),
        "wandb sync of the CLI's offline run",
    );
}
