//! Acceptance tests against a real `mlflow server` (no mocks): everything is read back through
//! the REST API.

mod common;

use std::path::{Path, PathBuf};

use exptrack_core::{
    ArtifactKind, Batch, Event, ExperimentMetadata, Metric, ParamValue, RunContext, RunStatus,
    Tracker,
};
use exptrack_mlflow::{MlflowTracker, Stage};
use serde_json::{Value, json};

use common::{as_i64, kv, shared_server};

fn ctx(exp: &str, dir: &Path) -> RunContext {
    let mut md = ExperimentMetadata::new(exp, "ab12cd34ef56ab12cd34ef56");
    md.description = "A **test** run".into();
    md.tags = vec!["smoke".into(), "bad tag!".into()];
    md.version = "1.2.3".into();
    RunContext {
        metadata: md,
        config: toml::Table::new(),
        run_dir: dir.to_path_buf(),
        resumed: false,
    }
}

fn tracker(uri: &str) -> MlflowTracker {
    MlflowTracker::builder().tracking_uri(uri).build().unwrap()
}

fn metrics(step: u64, ts: i64, values: &[(&str, f64)]) -> Event {
    Event::Metrics {
        step,
        timestamp_ms: ts,
        values: values.iter().map(|(k, v)| Metric::new(*k, *v)).collect(),
    }
}

fn write(t: &mut MlflowTracker, first_seq: u64, events: &[Event]) -> Result<(), String> {
    t.write(&Batch { first_seq, events }).map_err(|e| {
        assert!(!e.is_transient(), "unexpected transient error: {e}");
        e.to_string()
    })
}

/// Expected `value` as the server returns it.
fn server_value(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(f64::MAX.copysign(v))
    } else {
        json!(v)
    }
}

fn loss(step: u64) -> f64 {
    match step {
        7 => f64::NAN,
        8 => f64::INFINITY,
        9 => f64::NEG_INFINITY,
        s => 1.0 / (1.0 + s as f64),
    }
}

fn write_file(dir: &Path, name: &str, len: usize, seed: u32) -> (PathBuf, Vec<u8>) {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

#[test]
fn full_run_reads_back_exactly_and_redelivery_is_idempotent() {
    let Some(server) = shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx("acceptance", tmp.path());
    let mut t = tracker(&server.uri());
    t.open(&ctx).unwrap();
    let run_id = t.run_id().unwrap().to_owned();
    assert_eq!(t.remote_status(), None, "new run");

    let (file, file_bytes) = write_file(tmp.path(), "report.bin", 300_000, 1);
    let (model, model_bytes) = write_file(tmp.path(), "model.mpk", 200_000, 2);
    let mut events = vec![
        Event::Params {
            params: vec![
                ("lr".into(), ParamValue::Float(0.001)),
                ("batch_size".into(), ParamValue::Int(64)),
                ("optimizer".into(), ParamValue::Str("adam".into())),
                ("amp".into(), ParamValue::Bool(true)),
            ],
        },
        Event::Tags {
            tags: vec![("team".into(), "vision".into())],
        },
    ];
    let t0 = 1_700_000_000_000i64;
    // 2 keys x 1500 steps = 3000 metric rows: several log-batch requests.
    for step in 0..1500u64 {
        events.push(metrics(
            step,
            t0 + step as i64,
            &[
                ("train/loss", loss(step)),
                ("train/acc", step as f64 / 1500.0),
            ],
        ));
        if step == 700 {
            events.push(Event::Artifact {
                path: file.clone(),
                name: "reports/report.bin".into(),
                artifact_kind: ArtifactKind::File,
                step: Some(step),
            });
            events.push(Event::Text {
                step,
                timestamp_ms: t0,
                tag: "notes".into(),
                text: "# halfway".into(),
            });
        }
    }
    events.push(Event::Artifact {
        path: model.clone(),
        name: "checkpoints/model.mpk".into(),
        artifact_kind: ArtifactKind::Model,
        step: Some(1499),
    });
    write(&mut t, 1, &events).unwrap();
    // Redelivery of the same batch (as after a transient failure) adds nothing.
    write(&mut t, 1, &events).unwrap();
    t.flush().unwrap();
    t.close(RunStatus::Completed).unwrap();

    // --- read back
    let run = server.run(&run_id);
    assert_eq!(run["info"]["status"], "FINISHED");
    assert!(as_i64(&run["info"]["end_time"]) > 0);
    assert_eq!(
        as_i64(&run["info"]["start_time"]),
        ctx.metadata.start_time.timestamp_millis()
    );
    assert_eq!(run["info"]["run_name"], json!(ctx.metadata.run_id));
    let params = kv(&run, "params");
    assert_eq!(params["lr"], "0.001");
    assert_eq!(params["batch_size"], "64");
    assert_eq!(params["optimizer"], "adam");
    assert_eq!(params["amp"], "true");
    let tags = kv(&run, "tags");
    assert_eq!(tags["exptrack.experiment_id"], ctx.metadata.experiment_id);
    assert_eq!(tags["exptrack.run_id"], ctx.metadata.run_id);
    assert_eq!(tags["exptrack.config_hash"], ctx.metadata.config_hash);
    assert_eq!(tags["mlflow.note.content"], "A **test** run");
    assert_eq!(tags["team"], "vision");
    assert!(tags.contains_key("smoke"));
    assert!(
        tags.contains_key("bad tag_"),
        "repaired user tag key: {tags:?}"
    );
    let model_id = tags["exptrack.logged_model_id"].clone();

    for key in ["train/loss", "train/acc"] {
        let h = server.history(&run_id, key);
        assert_eq!(h.len(), 1500, "{key}: every point exactly once");
        for (i, (step, value, ts)) in h.iter().enumerate() {
            let expect = if key == "train/loss" {
                loss(i as u64)
            } else {
                i as f64 / 1500.0
            };
            assert_eq!(*step, i as i64, "{key} order");
            assert_eq!(*value, server_value(expect), "{key} step {i}");
            assert_eq!(*ts, t0 + i as i64);
        }
    }

    let artifact_uri = run["info"]["artifact_uri"].as_str().unwrap().to_owned();
    assert_eq!(
        server.artifact(&artifact_uri, "reports/report.bin"),
        file_bytes
    );
    assert_eq!(
        server.artifact(&artifact_uri, "text/notes/step_00000700.md"),
        b"# halfway"
    );

    // Logged model READY, its artifact identical, linked to the run.
    let m = server.get(&format!("logged-models/{model_id}"), &[]);
    let info = &m["model"]["info"];
    assert_eq!(info["status"], "LOGGED_MODEL_READY");
    assert_eq!(info["source_run_id"], json!(run_id));
    let model_uri = info["artifact_uri"].as_str().unwrap();
    assert_eq!(server.artifact(model_uri, "model.mpk"), model_bytes);
    assert_eq!(
        t.logged_models(),
        &[("checkpoints/model.mpk".to_owned(), model_id.clone())]
    );

    // --- registry: register the model from the run, promote via aliases, stage for old servers.
    let c = t.client();
    let name = "acceptance-model";
    c.get_or_create_registered_model(name).unwrap();
    let v1 = c
        .create_model_version(
            name,
            &format!("models:/{model_id}"),
            Some(&run_id),
            Some(&model_id),
        )
        .unwrap();
    let v2 = c
        .create_model_version(
            name,
            &format!("runs:/{run_id}/checkpoints"),
            Some(&run_id),
            None,
        )
        .unwrap();
    assert_eq!((v1.version.as_str(), v2.version.as_str()), ("1", "2"));
    c.set_alias(name, "staging", "1").unwrap();
    // "Staging → Production" is an alias move.
    c.set_alias(name, "production", "1").unwrap();
    c.delete_alias(name, "staging").unwrap();
    c.set_alias(name, "staging", "2").unwrap();
    let reg = server.get("registered-models/get", &[("name", name)]);
    let mut aliases: Vec<(String, String)> = reg["registered_model"]["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["alias"].as_str().unwrap().to_owned(),
                a["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    aliases.sort();
    assert_eq!(
        aliases,
        vec![
            ("production".into(), "1".into()),
            ("staging".into(), "2".into())
        ]
    );
    let by_alias = server.get(
        "registered-models/alias",
        &[("name", name), ("alias", "production")],
    );
    assert_eq!(by_alias["model_version"]["version"], "1");
    assert_eq!(by_alias["model_version"]["run_id"], json!(run_id));
    assert_eq!(
        c.get_model_version_by_alias(name, "production")
            .unwrap()
            .unwrap()
            .version,
        "1"
    );
    c.delete_alias(name, "production").unwrap();
    assert!(
        c.get_model_version_by_alias(name, "production")
            .unwrap()
            .is_none()
    );
    let staged = c
        .transition_stage(name, "2", Stage::Production, true)
        .unwrap();
    assert_eq!(staged.current_stage, "Production");
    assert_eq!(
        server.get("model-versions/get", &[("name", name), ("version", "2")])["model_version"]["current_stage"],
        "Production"
    );

    // --- resume: a fresh tracker (no local cursor) continues the same run; the server keeps
    // one row per identical metric point, so a full replay changes nothing.
    let mut again = tracker(&server.uri());
    again.open(&ctx).unwrap();
    assert_eq!(again.run_id(), Some(run_id.as_str()), "same MLflow run");
    assert_eq!(
        again.remote_status(),
        Some(RunStatus::Completed),
        "FINISHED reported as completed"
    );
    write(&mut again, 1, &events).unwrap();
    again.close(RunStatus::Completed).unwrap();
    for key in ["train/loss", "train/acc"] {
        assert_eq!(
            server.history(&run_id, key).len(),
            1500,
            "{key} after replay"
        );
    }
    let runs = server.post(
        "runs/search",
        &json!({"experiment_ids": [run["info"]["experiment_id"]],
                "filter": format!("tags.`exptrack.run_id` = '{}'", ctx.metadata.run_id)}),
    );
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "no second run");

    // The server-side facts redelivery relies on, checked directly: an identical metric row is
    // stored once, and a param re-sent with the same value is accepted.
    let c = again.client();
    let row = exptrack_mlflow::MetricPoint {
        key: "train/acc".into(),
        value: 0.0,
        timestamp: t0,
        step: 0,
    };
    c.log_batch(&run_id, &[row.clone(), row], &[], &[]).unwrap();
    c.log_batch(
        &run_id,
        &[],
        &[exptrack_mlflow::KeyValue::new("lr", "0.001")],
        &[],
    )
    .unwrap();
    assert_eq!(server.history(&run_id, "train/acc").len(), 1500);
    assert_eq!(kv(&server.run(&run_id), "params")["lr"], "0.001");
}

#[test]
fn bad_input_is_handled_as_specified() {
    let Some(server) = shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // Default mode: keys repaired, long param truncated, changed param is a clear permanent
    // error while the rest of the batch is delivered; NaN/Inf pass through.
    let c = ctx("bad-input", tmp.path());
    let mut t = tracker(&server.uri());
    t.open(&c).unwrap();
    let run_id = t.run_id().unwrap().to_owned();
    let long = "x".repeat(7000);
    let events = vec![
        Event::Params {
            params: vec![
                ("long".into(), ParamValue::Str(long.clone())),
                ("seed".into(), ParamValue::Int(1)),
                ("bad/../key".into(), ParamValue::Int(5)),
            ],
        },
        metrics(
            0,
            10,
            &[("acc@top1", 0.5), ("nan", f64::NAN), ("inf", f64::INFINITY)],
        ),
        metrics(
            1,
            11,
            &[("/lead//slash/", 1.0), ("ninf", f64::NEG_INFINITY)],
        ),
    ];
    write(&mut t, 1, &events).unwrap();
    let changed = vec![
        Event::Params {
            params: vec![("seed".into(), ParamValue::Int(2))],
        },
        metrics(2, 12, &[("acc@top1", 0.75)]),
    ];
    let err = write(&mut t, 4, &changed).unwrap_err();
    assert!(
        err.contains("\"seed\"") && err.contains("already logged"),
        "{err}"
    );

    // A change the tracker cannot know about (someone else logged the param): the server's 400
    // is mapped to a permanent error, and the metrics of that request still arrive.
    server.post(
        "runs/log-batch",
        &json!({"run_id": run_id, "params": [{"key": "external", "value": "a"}]}),
    );
    let err = write(
        &mut t,
        6,
        &[
            Event::Params {
                params: vec![("external".into(), ParamValue::Str("b".into()))],
            },
            metrics(3, 13, &[("acc@top1", 0.875)]),
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("Changing param values is not allowed"),
        "{err}"
    );
    t.close(RunStatus::Completed).unwrap();

    let run = server.run(&run_id);
    let params = kv(&run, "params");
    assert_eq!(params["long"], long[..6000], "truncated to 6000 characters");
    assert_eq!(params["seed"], "1", "first value kept");
    assert_eq!(params["bad/__/key"], "5");
    assert_eq!(params["external"], "a");
    let h = server.history(&run_id, "acc_top1");
    assert_eq!(
        h.iter()
            .map(|(s, v, _)| (*s, v.clone()))
            .collect::<Vec<_>>(),
        vec![(0, json!(0.5)), (2, json!(0.75)), (3, json!(0.875))]
    );
    assert_eq!(server.history(&run_id, "lead/slash")[0].1, json!(1.0));
    assert_eq!(server.history(&run_id, "nan")[0].1, json!("NaN"));
    assert_eq!(server.history(&run_id, "inf")[0].1, json!(f64::MAX));
    assert_eq!(server.history(&run_id, "ninf")[0].1, json!(-f64::MAX));

    // Strict mode: invalid keys are errors naming the key; valid entities still go out.
    let c = ctx("bad-input-strict", tmp.path());
    let mut s = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .strict(true)
        .build()
        .unwrap();
    s.open(&c).unwrap();
    let err = write(
        &mut s,
        1,
        &[metrics(0, 1, &[("ok", 1.0), ("not ok!", 2.0)])],
    )
    .unwrap_err();
    assert!(err.contains("invalid metric key \"not ok!\""), "{err}");
    let sid = s.run_id().unwrap().to_owned();
    s.close(RunStatus::Failed).unwrap();
    assert_eq!(server.history(&sid, "ok").len(), 1);
    assert_eq!(server.run(&sid)["info"]["status"], "FAILED");
}

#[test]
fn end_to_end_through_experiment_tracker_and_sync() {
    let Some(server) = shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run =
        exptrack_core::ExperimentTracker::builder(exptrack_core::ExperimentConfig::named("e2e"))
            .runs_dir(tmp.path())
            .handle_signals(false)
            .with_tracker(Box::new(tracker(&server.uri())))
            .build()
            .unwrap();
    run.log_hyperparameters(&[("lr", 0.1)]).unwrap();
    for step in 0..200u64 {
        run.log_metrics(step, &[("loss", 1.0 / (step + 1) as f64)])
            .unwrap();
    }
    let run_dir = run.run_dir().to_path_buf();
    let local_id = run.metadata().run_id.clone();
    let report = run.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");

    let exp = server.get("experiments/get-by-name", &[("experiment_name", "e2e")]);
    let runs = server.post(
        "runs/search",
        &json!({"experiment_ids": [exp["experiment"]["experiment_id"]],
                "filter": format!("tags.`exptrack.run_id` = '{local_id}'")}),
    );
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run_id = runs[0]["info"]["run_id"].as_str().unwrap();
    assert_eq!(runs[0]["info"]["status"], "FINISHED");
    let h = server.history(run_id, "loss");
    assert_eq!(h.len(), 200);
    assert!(h.iter().enumerate().all(|(i, (s, _, _))| *s == i as i64));

    // Nothing left to sync: the cursor is at the end.
    let r = exptrack_mlflow::sync_run(&run_dir, &server.uri()).unwrap();
    assert_eq!(r.delivered, 0, "{r:?}");
    assert_eq!(server.history(run_id, "loss").len(), 200);
}

/// Reads scalars back from the server: the run tagged with the context's `exptrack.run_id`,
/// every metric key's full history.
struct ServerReader(&'static common::MlflowServer);

impl exptrack_core::conformance::ReadBack for ServerReader {
    fn scalars(&mut self, ctx: &RunContext) -> Result<Vec<(u64, String, f64)>, String> {
        let s = self.0;
        let exp = s.get(
            "experiments/get-by-name",
            &[("experiment_name", &ctx.metadata.experiment_name)],
        );
        let runs = s.post(
            "runs/search",
            &json!({"experiment_ids": [exp["experiment"]["experiment_id"]],
                    "filter": format!("tags.`exptrack.run_id` = '{}'", ctx.metadata.run_id)}),
        );
        let runs = runs["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() != 1 {
            return Err(format!(
                "{} MLflow runs for {}",
                runs.len(),
                ctx.metadata.run_id
            ));
        }
        let run_id = runs[0]["info"]["run_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut keys: Vec<String> = runs[0]["data"]["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["key"].as_str().map(str::to_owned))
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            for (step, value, _) in s.history(&run_id, &key) {
                let v = match &value {
                    Value::String(x) if x == "NaN" => f64::NAN,
                    other => other.as_f64().ok_or(format!("value {other}"))?,
                };
                out.push((step as u64, key.clone(), v));
            }
        }
        Ok(out)
    }
}

#[test]
fn core_conformance_suite() {
    let Some(server) = shared_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uri = server.uri();
    let mut make = || -> Box<dyn Tracker> { Box::new(tracker(&uri)) };
    let failures = exptrack_core::conformance::run_all(
        &mut make,
        &mut ServerReader(server),
        dir.path(),
        false,
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
