//! One logical run, logged by our tracker (`log_ours`) or described for the Python client
//! (`PY_SCRIPT`), so both can be compared.
#![allow(dead_code)]

use std::path::Path;

use exptrack_core::{ArtifactKind, Batch, Event, Metric, ParamValue, RunStatus, Tracker};

/// The run's TOML config (everything but `[tracking]` becomes W&B config).
pub const CONFIG: &str = r#"
[experiment]
name = "wbtest"

[model]
layers = 4
act = "relu"

[optim]
lr = 0.001
betas = [0.9, 0.999]

[tracking]
use_wandb = true
"#;

pub const STEPS: u64 = 12;
/// Start of the run (ms since the epoch).
pub const T0: i64 = 1_760_000_000_000;

/// The metrics of step `s`, as W&B history keys and values.
pub fn step_values(s: u64) -> Vec<(String, f64)> {
    let mut v = vec![
        ("train/loss".to_owned(), 1.0 / (s as f64 + 1.0)),
        ("train/acc".to_owned(), s as f64 * 0.05),
    ];
    if s.is_multiple_of(5) {
        v.push(("val/loss".to_owned(), 2.0 / (s as f64 + 2.0)));
    }
    if s == 7 {
        v.push(("weird".to_owned(), f64::NAN));
    }
    if s == 8 {
        v.push(("big".to_owned(), f64::INFINITY));
    }
    v
}

/// The event stream (step 3's metrics arrive in two events, which W&B merges into one row).
pub fn events(artifact: &Path) -> Vec<Event> {
    let mut ev = vec![
        Event::Params {
            params: vec![
                ("batch_size".to_owned(), ParamValue::Int(32)),
                ("dropout".to_owned(), ParamValue::Float(0.1)),
                ("optimizer".to_owned(), ParamValue::Str("adam".into())),
                ("amp".to_owned(), ParamValue::Bool(true)),
            ],
        },
        Event::Tags {
            tags: vec![
                ("team".to_owned(), "vision".to_owned()),
                ("baseline".to_owned(), String::new()),
            ],
        },
    ];
    for s in 0..STEPS {
        let values: Vec<Metric> = step_values(s)
            .into_iter()
            .map(|(k, v)| Metric::new(k, v))
            .collect();
        let ts = T0 + 1000 * s as i64;
        if s == 3 {
            let (a, b) = values.split_at(1);
            ev.push(Event::Metrics {
                step: s,
                timestamp_ms: ts,
                values: a.to_vec(),
            });
            ev.push(Event::Metrics {
                step: s,
                timestamp_ms: ts + 10,
                values: b.to_vec(),
            });
        } else {
            ev.push(Event::Metrics {
                step: s,
                timestamp_ms: ts,
                values,
            });
        }
    }
    ev.push(Event::Artifact {
        path: artifact.to_owned(),
        name: "notes/readme.txt".to_owned(),
        artifact_kind: ArtifactKind::File,
        step: None,
    });
    ev.push(Event::Status {
        status: RunStatus::Completed,
        timestamp_ms: T0 + 20_000,
    });
    ev
}

/// Feeds `events` to `tracker` in batches of `batch`, flushing after each batch.
pub fn feed(tracker: &mut dyn Tracker, events: &[Event], batch: usize) {
    let mut seq = 0u64;
    for chunk in events.chunks(batch) {
        let chunk: Vec<Event> = chunk
            .iter()
            .filter(|e| tracker.supports(e.kind()))
            .cloned()
            .collect();
        tracker
            .write(&Batch {
                first_seq: seq,
                events: &chunk,
            })
            .expect("write");
        seq += chunk.len() as u64;
        tracker.flush().expect("flush");
    }
}

/// The same run for the Python client (argv: dir, run id, project).
pub const PY_SCRIPT: &str = r#"
import sys, math, wandb
d, run_id, project = sys.argv[1], sys.argv[2], sys.argv[3]
config = {
    "experiment": {"name": "wbtest"},
    "model": {"layers": 4, "act": "relu"},
    "optim": {"lr": 0.001, "betas": [0.9, 0.999]},
}
run = wandb.init(mode="offline", dir=d, id=run_id, project=project, config=config,
                 tags=["exp-tag", "team:vision", "baseline"], name="wbtest", notes="a test run")
run.config.update({"batch_size": 32, "dropout": 0.1, "optimizer": "adam", "amp": True})
for s in range(12):
    row = {"train/loss": 1.0 / (s + 1.0), "train/acc": s * 0.05}
    if s % 5 == 0:
        row["val/loss"] = 2.0 / (s + 2.0)
    if s == 7:
        row["weird"] = float("nan")
    if s == 8:
        row["big"] = float("inf")
    run.log(row, step=s)
run.finish()
print(run.dir)
"#;
