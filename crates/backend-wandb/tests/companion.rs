//! Issue 16 §3 (W&B): a companion writer (an evaluator in another process) logs into the
//! training's W&B run, checked against the real wandb 0.31.0:
//!
//! - online, against the real client's shared mode (`mode="shared"`, `x_primary=False`,
//!   `x_update_finish_state=False`, `x_label`) recorded on the same stand-in server: the same
//!   shared-mode headers, an `UpsertBucket` that names only the run and defines the metrics
//!   (`_wandb.m`) against the step metric, rows appended after the owner's with the step metric
//!   and no `_step`, a summary of the companion's keys only, no exit code, no metadata files;
//! - offline, through the real `wandb sync`: the owner's run first, then the companion's
//!   directory with the shared-mode sync its tracker prints, which appends the companion's rows
//!   to the run and leaves the owner's history, config, summary and exit status alone.

mod common;
#[path = "common/upload.rs"]
mod upload;

use std::path::{Path, PathBuf};

use exptrack_core::{Batch, Event, Metric, ParamValue, RunStatus, Tracker};
use exptrack_wandb::{DEFAULT_STEP_METRIC, Mode, WandbTracker, WandbTrackerBuilder};
use serde_json::Value;

/// The owner's run: its exptrack run id is its W&B run id.
const TRAIN_RUN: &str = "20260101-120000-abc123";
/// Steps of the owner's rows.
const TRAIN_STEPS: [u64; 4] = [10, 20, 30, 40];
/// Steps the companion evaluates (checkpoints), in the order it logs them.
const EVAL_STEPS: [u64; 3] = [10, 20, 40];
const CONFIG: &str = "[experiment]\nname = \"wbshare\"\n\n[optim]\nlr = 0.01\n";

fn eval_accuracy(step: u64) -> f64 {
    0.5 + step as f64 / 100.0
}

/// The owner: config from the TOML, params, tags, train/loss at every step, completed.
fn owner(builder: WandbTrackerBuilder, dir: &Path) -> WandbTracker {
    let mut t = builder.dir(dir).project("wbshare").build().unwrap();
    t.open(&common::context(dir, "wbshare", TRAIN_RUN, CONFIG))
        .unwrap();
    let mut events = vec![
        Event::Params {
            params: vec![("batch_size".into(), ParamValue::Int(32))],
        },
        Event::Tags {
            tags: vec![("team".into(), "vision".into())],
        },
    ];
    for s in TRAIN_STEPS {
        events.push(Event::Metrics {
            step: s,
            timestamp_ms: 1_760_000_000_000 + s as i64,
            values: vec![Metric::new("train/loss", 1.0 / s as f64)],
        });
    }
    events.push(Event::Result {
        key: "best/loss".into(),
        value: serde_json::json!(0.025),
        timestamp_ms: 1_760_000_001_000,
    });
    feed(&mut t, &events);
    t.close(RunStatus::Completed).unwrap();
    t
}

/// The companion: eval metrics at the checkpoint steps, plus a params and a tags event (which a
/// companion does not send) and a result of its own.
fn companion(builder: WandbTrackerBuilder, dir: &Path) -> WandbTracker {
    let mut t = builder
        .attach_to_run(TRAIN_RUN)
        .label("eval")
        .project("wbshare")
        .build()
        .unwrap();
    let ctx = common::context(dir, "wbshare", "async-eval", CONFIG);
    t.open(&ctx).unwrap();
    assert_eq!(t.run_id(), Some(TRAIN_RUN));
    let mut events = vec![
        Event::Params {
            params: vec![("evaluator".into(), ParamValue::Str("mine".into()))],
        },
        Event::Tags {
            tags: vec![("eval".into(), String::new())],
        },
    ];
    for s in EVAL_STEPS {
        events.push(Event::Metrics {
            step: s,
            timestamp_ms: 1_760_000_002_000 + s as i64,
            values: vec![
                Metric::new("eval/valid/accuracy", eval_accuracy(s)),
                Metric::new("eval/valid/loss", 1.0 - eval_accuracy(s)),
            ],
        });
    }
    events.push(Event::Result {
        key: "eval/best_accuracy".into(),
        value: serde_json::json!(eval_accuracy(40)),
        timestamp_ms: 1_760_000_003_000,
    });
    feed(&mut t, &events);
    t.close(RunStatus::Completed).unwrap();
    t
}

/// Writes the events the tracker takes, one batch each, flushing after each (as the dispatcher
/// does with one event per batch).
fn feed(t: &mut WandbTracker, events: &[Event]) {
    for (seq, e) in events.iter().enumerate() {
        if t.supports(e.kind()) {
            t.write(&Batch {
                first_seq: seq as u64,
                events: std::slice::from_ref(e),
            })
            .unwrap();
            t.flush().unwrap();
        }
    }
}

/// The real client in shared mode as a non-primary writer of `run_id` (argv: run id, project),
/// as wandb's docs and its sweep scheduler set it up, logging what [`companion`] logs.
const PY_SHARED: &str = r#"
import sys, wandb
run_id, project = sys.argv[1], sys.argv[2]
run = wandb.init(mode="shared", id=run_id, project=project, settings=wandb.Settings(
    x_primary=False, x_update_finish_state=False, x_label="eval",
    x_disable_stats=True, x_disable_machine_info=True, console="off", disable_git=True))
run.define_metric("trainer/global_step")
run.define_metric("eval/*", step_metric="trainer/global_step")
for s in (10, 20, 40):
    acc = 0.5 + s / 100.0
    run.log({"eval/valid/accuracy": acc, "eval/valid/loss": 1.0 - acc, "trainer/global_step": s})
run.summary["eval/best_accuracy"] = 0.9
run.finish()
"#;

/// What one writer sent, from the recorder's log.
struct Sent {
    reqs: Vec<Value>,
}

impl Sent {
    fn graphql(&self, op: &str) -> Vec<&Value> {
        self.reqs
            .iter()
            .filter(|r| r["path"] == "/graphql" && r["body"]["operationName"] == op)
            .collect()
    }

    fn streams(&self) -> Vec<&Value> {
        self.reqs
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/file_stream"))
            })
            .collect()
    }

    /// The history lines sent, as (offset, parsed line).
    fn rows(&self) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        for r in self.streams() {
            if let Some(h) = r["body"]["files"].get("wandb-history.jsonl") {
                let offset = h["offset"].as_u64().unwrap();
                for (i, line) in h["content"].as_array().unwrap().iter().enumerate() {
                    let row = exptrack_wandb::parse_lenient(line.as_str().unwrap()).unwrap();
                    out.push((offset + i as u64, row));
                }
            }
        }
        out
    }

    /// The last summary sent.
    fn summary(&self) -> Value {
        self.streams()
            .iter()
            .rev()
            .find_map(|r| r["body"]["files"].get("wandb-summary.json"))
            .map(|s| exptrack_wandb::parse_lenient(s["content"][0].as_str().unwrap()).unwrap())
            .unwrap_or(Value::Null)
    }

    /// Every `UpsertBucket` config, parsed.
    fn configs(&self) -> Vec<Value> {
        self.graphql("UpsertBucket")
            .iter()
            .filter_map(|r| r["body"]["variables"]["config"].as_str())
            .map(|c| exptrack_wandb::parse_lenient(c).unwrap())
            .collect()
    }

    /// Files named in `CreateRunFiles`.
    fn created_files(&self) -> Vec<String> {
        self.graphql("CreateRunFiles")
            .iter()
            .flat_map(|r| r["body"]["variables"]["files"].as_array().unwrap().clone())
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    }

    /// Checks what every shared-mode writer must do and returns the client id it used: the
    /// shared-mode headers on every request, all to the owner's run, no exit code, none of the
    /// owner's files, no tags or run fields, a config of `_wandb` only (plus, where the sync
    /// resumed the run, the owner's keys it read back) with the step metric's definitions.
    fn assert_shared_writer(&self, who: &str, owner_config_keys: &[&str]) -> String {
        let mut ids = std::collections::BTreeSet::new();
        for r in self
            .graphql("UpsertBucket")
            .into_iter()
            .chain(self.streams())
        {
            let h = &r["wandb_headers"];
            assert_eq!(h["X-WANDB-USE-ASYNC-FILESTREAM"], "true", "{who}: {r}");
            let id = if r["path"] == "/graphql" {
                &h["X-WANDB-CLIENT-ID"]
            } else {
                &h["X-WANDB-ASYNC-CLIENT-ID"]
            };
            ids.insert(
                id.as_str()
                    .unwrap_or_else(|| panic!("{who}: no client id: {r}"))
                    .to_owned(),
            );
        }
        assert_eq!(ids.len(), 1, "{who}: one writer id: {ids:?}");
        for u in self.graphql("UpsertBucket") {
            let v = &u["body"]["variables"];
            assert_eq!(v["name"], TRAIN_RUN, "{who}");
            for k in [
                "tags",
                "groupName",
                "displayName",
                "notes",
                "jobType",
                "description",
            ] {
                assert!(
                    v[k].is_null() || v[k] == serde_json::json!([]),
                    "{who} sent {k}: {v}"
                );
            }
        }
        for path in self.streams().iter().map(|r| r["path"].as_str().unwrap()) {
            assert!(
                path.ends_with(&format!("/{TRAIN_RUN}/file_stream")),
                "{who}: {path}"
            );
        }
        for r in self.streams() {
            assert!(
                r["body"].get("complete").is_none(),
                "{who} completed the run: {r}"
            );
            assert!(
                r["body"].get("exitcode").is_none(),
                "{who} set the exit code: {r}"
            );
        }
        let created = self.created_files();
        for f in ["config.yaml", "wandb-summary.json", "wandb-metadata.json"] {
            assert!(
                !created.contains(&f.to_owned()),
                "{who} uploaded {f}: {created:?}"
            );
        }
        let configs = self.configs();
        assert!(!configs.is_empty(), "{who}");
        for c in &configs {
            for k in c.as_object().unwrap().keys() {
                assert!(
                    k == "_wandb" || owner_config_keys.contains(&k.as_str()),
                    "{who} wrote config key {k}: {c}"
                );
            }
        }
        let last = configs.last().unwrap();
        let m = last["_wandb"]["value"]["m"].as_array().unwrap();
        let index = m
            .iter()
            .position(|d| d["1"] == DEFAULT_STEP_METRIC)
            .unwrap_or_else(|| panic!("{who}: the step metric is not defined: {m:?}"));
        assert!(
            m.iter().any(|d| {
                (d["1"] == "eval/valid/accuracy" || d["2"] == "eval/*")
                    && d["5"].as_u64() == Some(index as u64 + 1)
            }),
            "{who}: eval metrics not defined against the step metric: {m:?}"
        );
        ids.into_iter().next().unwrap()
    }

    /// The rows carry the step metric and the eval values, appended after the owner's
    /// `owner_lines` lines.
    fn assert_eval_rows(&self, who: &str, owner_lines: u64) {
        let rows = self.rows();
        let offsets: Vec<u64> = rows.iter().map(|(o, _)| *o).collect();
        let expected: Vec<u64> = (owner_lines..owner_lines + EVAL_STEPS.len() as u64).collect();
        assert_eq!(offsets, expected, "{who}: rows appended after the owner's");
        for ((_, row), step) in rows.iter().zip(EVAL_STEPS) {
            assert_eq!(row[DEFAULT_STEP_METRIC], step, "{who}: {row}");
            assert_eq!(
                row["eval/valid/accuracy"].as_f64(),
                Some(eval_accuracy(step)),
                "{who}: {row}"
            );
            assert!(row.get("train/loss").is_none(), "{who}: {row}");
        }
    }
}

/// The owner's rows as the server holds them after every upload: `train/loss` at its steps.
fn assert_owner_history(state: &Value) {
    let history = &state[TRAIN_RUN]["history"];
    for (i, step) in TRAIN_STEPS.iter().enumerate() {
        let line = history[i.to_string()].as_str().unwrap();
        let row = exptrack_wandb::parse_lenient(line).unwrap();
        assert_eq!(row["_step"], *step, "line {i}: {row}");
        assert_eq!(
            row["train/loss"].as_f64(),
            Some(1.0 / *step as f64),
            "line {i}: {row}"
        );
        assert!(row.get("eval/valid/accuracy").is_none(), "line {i}: {row}");
    }
}

/// The owner's upload: the full run (config, tags, summary, exit code 0).
fn assert_owner_upload(sent: &Sent) {
    let configs = sent.configs();
    let last = configs.last().unwrap();
    assert_eq!(last["optim"]["value"]["lr"], 0.01, "{last}");
    assert_eq!(last["batch_size"]["value"], 32, "{last}");
    assert!(sent.streams().iter().all(|r| {
        r["wandb_headers"]
            .as_object()
            .unwrap()
            .get("X-WANDB-USE-ASYNC-FILESTREAM")
            .is_none()
    }));
    let summary = sent.summary();
    assert_eq!(summary["train/loss"], 0.025, "{summary}");
    assert_eq!(summary["best/loss"], 0.025, "{summary}");
    let exit = sent
        .streams()
        .iter()
        .find_map(|r| r["body"].get("exitcode").cloned());
    assert_eq!(exit, Some(serde_json::json!(0)));
}

#[test]
fn online_companion_joins_the_owner_run_as_the_real_shared_mode_client_does() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let mut rec = common::Recorder::start_stateful(&py, tmp.path());
    let base_url = rec.base_url();
    let online = || {
        WandbTracker::builder()
            .mode(Mode::Online)
            .api_key(common::FAKE_KEY)
            .base_url(&base_url)
            .flush_interval(std::time::Duration::from_secs(3600))
    };
    owner(online(), &tmp.path().join("owner"));
    let owner_sent = Sent {
        reqs: rec.requests(),
    };
    assert_owner_upload(&owner_sent);
    assert_eq!(owner_sent.rows().len(), TRAIN_STEPS.len());

    // The real client in shared mode, as the reference for what a second writer sends.
    rec.reset();
    let script = tmp.path().join("shared.py");
    std::fs::write(&script, PY_SHARED).unwrap();
    let out = common::run(
        common::isolated(&py, &home)
            .env("WANDB_BASE_URL", rec.base_url())
            .env("WANDB_API_KEY", common::FAKE_KEY)
            .env("WANDB_DIR", tmp.path().join("py"))
            .arg(&script)
            .arg(TRAIN_RUN)
            .arg("wbshare"),
    );
    assert!(out.status.success(), "the real shared-mode client failed");
    let real = Sent {
        reqs: rec.requests(),
    };
    let real_id = real.assert_shared_writer("wandb 0.31 shared mode", &[]);
    real.assert_eval_rows("wandb 0.31 shared mode", TRAIN_STEPS.len() as u64);
    let real_summary = real.summary();
    assert_eq!(real_summary["eval/best_accuracy"], 0.9, "{real_summary}");

    // Ours.
    rec.reset();
    let t = companion(online(), &tmp.path().join("companion"));
    assert_eq!(t.mode(), Some(Mode::Online));
    let ours = Sent {
        reqs: rec.requests(),
    };
    let our_id = ours.assert_shared_writer("exptrack companion", &[]);
    assert_ne!(our_id, real_id);
    ours.assert_eval_rows(
        "exptrack companion",
        TRAIN_STEPS.len() as u64 + EVAL_STEPS.len() as u64,
    );
    for (_, row) in ours.rows() {
        // W&B numbers a shared writer's rows; the real client sends a counter of its own.
        assert!(row.get("_step").is_none(), "{row}");
    }
    // Only its own keys in its summary (no `_step`, `_runtime`, `_wandb`: the owner's).
    let summary = ours.summary();
    let keys: Vec<&str> = summary
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "eval/best_accuracy",
            "eval/valid/accuracy",
            "eval/valid/loss"
        ],
        "{summary}"
    );
    // Only what names the run: no config but the metric definitions.
    let first = &ours.graphql("UpsertBucket")[0]["body"]["variables"];
    for k in ["host", "program", "commit"] {
        assert!(first[k].is_null(), "{k}: {first}");
    }
    // The owner's rows are intact; both writers' rows follow them.
    let state = rec.state();
    assert_owner_history(&state);
    assert_eq!(
        state[TRAIN_RUN]["history"].as_object().unwrap().len(),
        TRAIN_STEPS.len() + 2 * EVAL_STEPS.len()
    );
}

#[test]
fn offline_companion_is_appended_to_the_owner_run_by_the_shared_sync() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    let owner_t = owner(WandbTracker::builder().mode(Mode::Offline), &work);
    let owner_dir = owner_t.run_dir().unwrap().to_owned();
    let comp = companion(WandbTracker::builder().mode(Mode::Offline), &work);
    let comp_dir: PathBuf = comp.run_dir().unwrap().to_owned();

    // Its own offline directory, in its own exptrack run directory (a plain `wandb sync` of the
    // owner's `wandb/` does not pick it up), carrying the owner's run id.
    assert!(
        comp_dir.starts_with(work.join("runs").join("async-eval").join("wandb")),
        "{}",
        comp_dir.display()
    );
    assert!(!comp_dir.starts_with(owner_dir.parent().unwrap()));
    let name = comp_dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("companion-offline-run-") && name.ends_with(TRAIN_RUN),
        "{name}"
    );
    let marker: Value = serde_json::from_str(
        &std::fs::read_to_string(comp_dir.join("exptrack-companion.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["companion_of"], TRAIN_RUN);
    assert_eq!(marker["label"], "eval");
    assert_eq!(marker["sync"].as_str(), comp.sync_command().as_deref());

    // Its log, read by the real client: the run record names the run and resumes it, the metrics
    // are defined against the step metric, rows carry it instead of `_step`, the summary has its
    // own keys only, and no config or tags.
    let inspect = common::leet_inspect(&py, &home, comp.log_path().unwrap());
    assert!(inspect.ok, "{}", inspect.stderr);
    let of = |t: &str| -> Vec<&Value> {
        inspect
            .records
            .iter()
            .filter(|r| r["type"] == t)
            .map(|r| &r[t])
            .collect()
    };
    let run = of("run");
    assert_eq!(run.len(), 1, "{run:?}");
    assert_eq!(run[0]["run_id"], TRAIN_RUN);
    assert_eq!(run[0]["resume"], true);
    for k in ["config", "tags", "run_group", "display_name", "notes"] {
        assert!(run[0].get(k).is_none(), "{k}: {}", run[0]);
    }
    assert!(of("config").is_empty());
    let metrics = of("metric");
    assert_eq!(metrics[0]["name"], DEFAULT_STEP_METRIC);
    for m in &metrics[1..] {
        assert_eq!(m["step_metric"], DEFAULT_STEP_METRIC, "{m}");
    }
    let history = of("history");
    assert_eq!(history.len(), EVAL_STEPS.len());
    for (h, step) in history.iter().zip(EVAL_STEPS) {
        assert_eq!(h["item"][DEFAULT_STEP_METRIC], step, "{h}");
        assert!(h["item"].get("_step").is_none(), "{h}");
    }
    for s in of("summary") {
        for k in s["update"].as_object().unwrap().keys() {
            assert!(k.starts_with("eval/"), "summary key {k}");
        }
    }

    // A plain `wandb sync` of the directory skips it (it would set the run's summary and exit
    // status): only the shared-mode command takes it.
    let plain = common::run(
        common::isolated(&common::wandb_exe(&py), &home)
            .args(["sync", "--dry-run"])
            .arg(&comp_dir),
    );
    let said = String::from_utf8_lossy(&plain.stderr).into_owned()
        + &String::from_utf8_lossy(&plain.stdout);
    assert!(said.contains("No runs to sync"), "{said}");

    // The real `wandb sync`: the owner's run, then the companion's with its command.
    let mut rec = common::Recorder::start_stateful(&py, tmp.path());
    common::run_wandb_shell(&py, &home, &rec, &owner_t.sync_command().unwrap());
    let owner_sent = Sent {
        reqs: rec.requests(),
    };
    assert_owner_upload(&owner_sent);
    rec.reset();
    common::run_wandb_shell(&py, &home, &rec, &comp.sync_command().unwrap());
    let comp_sent = Sent {
        reqs: rec.requests(),
    };
    // The sync resumes the run: it reads the run back, and the config it sends keeps the
    // owner's keys as the server had them.
    assert_eq!(comp_sent.graphql("RunResumeStatus").len(), 1);
    comp_sent.assert_shared_writer(
        "wandb sync of the companion",
        &["experiment", "optim", "batch_size"],
    );
    for c in comp_sent.configs() {
        if let Some(lr) = c.get("optim") {
            assert_eq!(lr["value"]["lr"], 0.01, "{c}");
        }
    }
    comp_sent.assert_eval_rows("wandb sync of the companion", TRAIN_STEPS.len() as u64);
    let summary = comp_sent.summary();
    for k in summary.as_object().unwrap().keys() {
        // `_step` is added by the sync itself (it numbers the rows after the owner's).
        assert!(
            k.starts_with("eval/") || k == "_step",
            "summary key {k}: {summary}"
        );
    }
    assert_eq!(summary["eval/best_accuracy"], 0.9);
    let state = rec.state();
    assert_owner_history(&state);
    assert_eq!(
        state[TRAIN_RUN]["history"].as_object().unwrap().len(),
        TRAIN_STEPS.len() + EVAL_STEPS.len()
    );
    let _ = upload::strip;
}
