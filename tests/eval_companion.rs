//! Issue 16 §3: the evaluator's metrics in the training run itself. A watcher in "another
//! process" (its own tracker, its own local write-ahead log under the training run's
//! `companions/` directory) logs `eval/*` into the training run: the same MLflow run id, a second
//! event file in the training run's TensorBoard directory (read back by the real TensorBoard
//! reader), the same W&B run id (both offline directories uploaded by the real `wandb sync`, the
//! evaluator's with the shared-mode sync its directory names: its rows carry the step metric and
//! are appended after training's, whose history, config, summary and exit status stay), and
//! `exptrack plot` of the training run draws the evaluation curves.
#![cfg(feature = "mlflow")]

#[path = "../crates/backend-mlflow/tests/common/mod.rs"]
mod mlflow_harness;
#[cfg(feature = "wandb")]
#[path = "../crates/backend-wandb/tests/common/mod.rs"]
#[allow(unused_imports, unreachable_pub)]
mod wandb_harness;

use std::time::Duration;

use exptrack::mlflow::MlflowTrackerBuilder;
use exptrack::tensorboard::TensorBoardTracker;
use exptrack::{ExperimentConfig, ExperimentTracker, Resume, RunStatus};
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, LoadedCheckpoint, ModelCheckpointer};
use exptrack_eval::{BoxError, EvalWatcher};
use mlflow_harness::{MlflowServer, mlflow_exe};
use serde_json::json;

fn accuracy_of(c: &LoadedCheckpoint) -> Result<Vec<(&'static str, f64)>, BoxError> {
    let b = c.file("model.bin").ok_or("no model.bin")?;
    let acc = f64::from(b[0]) / 100.0;
    Ok(vec![("accuracy", acc), ("loss", 1.0 - acc)])
}

#[test]
fn evaluator_metrics_land_in_the_training_run_of_each_backend() {
    let Some(exe) = mlflow_exe() else { return };
    let py = std::path::PathBuf::from(std::env::var("EXPTRACK_PEER_PYTHON").unwrap());
    let server = MlflowServer::start(&exe);
    let uri = server.uri();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let ckpt_dir = tmp.path().join("checkpoints");
    let name = "companion-demo";

    // ---- the training process: TensorBoard (in its run directory) and MLflow
    let config = ExperimentConfig::named(name);
    let experiment_id = config.experiment_id();
    let wandb_dir = tmp.path().join("wandb-root");
    let training = ExperimentTracker::builder(config.clone())
        .runs_dir(&runs)
        .with_tracker(Box::new(TensorBoardTracker::new(None)))
        .with_tracker(Box::new(
            MlflowTrackerBuilder::new()
                .tracking_uri(&uri)
                .build()
                .unwrap(),
        ));
    // Its rows also carry the companion's step metric, so W&B draws both over one x-axis.
    #[cfg(feature = "wandb")]
    let training = training.with_tracker(Box::new(
        exptrack::wandb::WandbTracker::builder()
            .mode(exptrack::WandbMode::Offline)
            .dir(&wandb_dir)
            .step_metric(exptrack::wandb::DEFAULT_STEP_METRIC)
            .build()
            .unwrap(),
    ));
    let training = training
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .unwrap();
    training.log_hyperparameters(&[("lr", 0.01)]).unwrap();
    let train_dir = training.run_dir().to_path_buf();
    let train_run = training.metadata().run_id.clone();
    let mut ckpt = ModelCheckpointer::open(
        &experiment_id,
        CheckpointConfig {
            dir: ckpt_dir.clone(),
            ..CheckpointConfig::default()
        },
    )
    .unwrap();
    for (i, step) in [10u64, 20, 30, 40].into_iter().enumerate() {
        training
            .log_metrics(step, &[("train/loss", 1.0 / step as f64)])
            .unwrap();
        ckpt.save(Checkpoint::new(step).file("model.bin", vec![60 + 10 * i as u8; 8]))
            .unwrap();
    }
    ckpt.mark_completed(json!({})).unwrap();
    training.flush_timeout(Duration::from_secs(30)).unwrap();

    // ---- the evaluator: its own local run under <training run>/companions/, companions of
    // the training run in TensorBoard and MLflow
    let mut eval_config = config.clone();
    eval_config.experiment.id = Some(experiment_id.clone());
    let evaluator = ExperimentTracker::builder(eval_config)
        .runs_dir(train_dir.join(exptrack_plot::COMPANIONS_DIR))
        .resume(Resume::RunId("async-eval".into()))
        .with_tracker(Box::new(
            TensorBoardTracker::builder()
                .companion_of(&train_dir)
                .build(),
        ))
        .with_tracker(Box::new(
            MlflowTrackerBuilder::new()
                .tracking_uri(&uri)
                .attach_to_exptrack_run(&experiment_id, &train_run)
                .build()
                .unwrap(),
        ));
    // Offline, in its own run directory (the default for a companion).
    #[cfg(feature = "wandb")]
    let evaluator = evaluator.with_tracker(Box::new(
        exptrack::wandb::WandbTracker::builder()
            .mode(exptrack::WandbMode::Offline)
            .attach_to_run(&train_run)
            .build()
            .unwrap(),
    ));
    let evaluator = evaluator
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .unwrap();
    let eval_dir = evaluator.run_dir().to_path_buf();
    let mut watcher = EvalWatcher::builder(&ckpt_dir, &experiment_id)
        .poll_interval(Duration::from_millis(50))
        .dataset("valid", accuracy_of)
        .tracker(&evaluator)
        .build()
        .unwrap();
    let summary = watcher.run().unwrap();
    assert_eq!(summary.evaluated_steps(), [10, 20, 30, 40]);
    assert_eq!(summary.missed_by_retention(), 0);
    drop(watcher);
    let report = evaluator.finish(RunStatus::Completed).unwrap();
    assert!(report.problem_lines().is_empty(), "{report}");
    let report = training.finish(RunStatus::Completed).unwrap();
    assert!(report.problem_lines().is_empty(), "{report}");

    // ---- each process kept its own write-ahead log
    assert!(eval_dir.starts_with(&train_dir), "{}", eval_dir.display());
    let train_log = std::fs::read_to_string(train_dir.join("events.jsonl")).unwrap();
    let eval_log = std::fs::read_to_string(eval_dir.join("events.jsonl")).unwrap();
    assert!(
        !train_log.contains("eval/valid"),
        "the training log got eval events"
    );
    assert!(eval_log.contains("eval/valid/accuracy"));

    // ---- MLflow: one run holds both, its status set by the training
    let exp = server.get("experiments/get-by-name", &[("experiment_name", name)]);
    let exp_id = exp["experiment"]["experiment_id"].as_str().unwrap();
    let found = server.post("runs/search", &json!({"experiment_ids": [exp_id]}));
    let all = found["runs"].as_array().unwrap();
    assert_eq!(
        all.len(),
        1,
        "one MLflow run, not a separate eval run: {found}"
    );
    let run_id = all[0]["info"]["run_id"].as_str().unwrap();
    assert_eq!(all[0]["info"]["status"], "FINISHED");
    let steps: Vec<i64> = server
        .history(run_id, "eval/valid/accuracy")
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(steps, [10, 20, 30, 40]);
    assert_eq!(server.history(run_id, "train/loss").len(), 4);

    // ---- TensorBoard: two event files in the training run's directory, one run for the reader
    let files: Vec<String> = std::fs::read_dir(&train_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.out.tfevents"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(
            "import json,sys\n\
             from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
             ea = EventAccumulator(sys.argv[1]); ea.Reload()\n\
             print(json.dumps(sorted(ea.Tags()['scalars'])))",
        )
        .arg(&train_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tags: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for t in ["train/loss", "eval/valid/accuracy", "eval/valid/loss"] {
        assert!(tags.iter().any(|x| x == t), "{t} not in {tags:?}");
    }

    #[cfg(feature = "wandb")]
    wandb_same_run(&py, tmp.path(), &wandb_dir, &eval_dir, &train_run);
    #[cfg(not(feature = "wandb"))]
    let _ = wandb_dir;

    // ---- plot of the training run draws the evaluation series (only the evaluator logged an
    // accuracy)
    let written = exptrack_plot::plot_run(&train_dir, tmp.path().join("plots")).unwrap();
    assert!(
        written.iter().any(|p| p.ends_with("accuracy.png")),
        "{written:?}"
    );
}

/// W&B: both offline directories carry the training's run id; the real `wandb sync` uploads the
/// training's, then the evaluator's with the shared-mode command its `exptrack-companion.json`
/// names; the stand-in server then holds the training rows first, the evaluation rows after
/// them with their step metric, and the evaluator sent no config of its own, no exit code and
/// only `eval/*` summary keys.
#[cfg(feature = "wandb")]
fn wandb_same_run(
    py: &std::path::Path,
    tmp: &std::path::Path,
    wandb_dir: &std::path::Path,
    eval_dir: &std::path::Path,
    train_run: &str,
) {
    use exptrack::wandb::DEFAULT_STEP_METRIC;
    use serde_json::Value;
    use std::path::PathBuf;

    let only_dir = |root: PathBuf, prefix: &str| -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.into_iter().next().unwrap()
    };
    let train_wb = only_dir(wandb_dir.join("wandb"), "offline-run-");
    let eval_wb = only_dir(eval_dir.join("wandb"), "companion-offline-run-");
    let wandb_id = exptrack::wandb::sanitize_run_id(train_run);
    for d in [&train_wb, &eval_wb] {
        assert!(
            d.join(format!("run-{wandb_id}.wandb")).is_file(),
            "{}",
            d.display()
        );
    }
    let marker: Value = serde_json::from_str(
        &std::fs::read_to_string(eval_wb.join("exptrack-companion.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["companion_of"], wandb_id.as_str());

    let home = tmp.join("wandb-home");
    let rec = wandb_harness::Recorder::start_stateful(py, tmp);
    let sync = |cmd: &str| wandb_harness::run_wandb_shell(py, &home, &rec, cmd);
    sync(&format!("wandb sync {}", train_wb.display()));
    let owner_requests = rec.requests().len();
    sync(marker["sync"].as_str().unwrap());
    let requests = rec.requests();
    let (owner, companion) = requests.split_at(owner_requests);
    let streams = |reqs: &[Value]| -> Vec<Value> {
        reqs.iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/file_stream"))
            })
            .cloned()
            .collect()
    };
    for r in streams(owner).iter().chain(&streams(companion)) {
        let path = r["path"].as_str().unwrap();
        assert!(
            path.ends_with(&format!("/{wandb_id}/file_stream")),
            "{path}"
        );
    }
    for r in streams(companion) {
        assert_eq!(r["wandb_headers"]["X-WANDB-USE-ASYNC-FILESTREAM"], "true");
        assert!(r["body"].get("exitcode").is_none(), "{r}");
        if let Some(s) = r["body"]["files"].get("wandb-summary.json") {
            let summary =
                exptrack::wandb::parse_lenient(s["content"][0].as_str().unwrap()).unwrap();
            for k in summary.as_object().unwrap().keys() {
                assert!(k.starts_with("eval/") || k == "_step", "{k}: {summary}");
            }
        }
    }
    let owner_exit = streams(owner)
        .iter()
        .find_map(|r| r["body"].get("exitcode").cloned());
    assert_eq!(owner_exit, Some(serde_json::json!(0)));
    let defined_against_step_metric = |reqs: &[Value], key: &str| {
        let config = reqs
            .iter()
            .rev()
            .filter(|r| r["body"]["operationName"] == "UpsertBucket")
            .find_map(|r| r["body"]["variables"]["config"].as_str())
            .map(|c| exptrack::wandb::parse_lenient(c).unwrap())
            .unwrap();
        // wandb-core's encoding of `define_metric`: "5" is the 1-based index of the step metric.
        let defs = config["_wandb"]["value"]["m"].as_array().unwrap().clone();
        let step_index = defs
            .iter()
            .position(|d| d["1"] == DEFAULT_STEP_METRIC)
            .unwrap_or_else(|| panic!("no step metric definition: {config}"));
        assert!(
            defs.iter()
                .any(|d| d["1"] == key && d["5"].as_u64() == Some(step_index as u64 + 1)),
            "{key} not defined against {DEFAULT_STEP_METRIC}: {defs:?}"
        );
        config
    };
    let owner_config = defined_against_step_metric(owner, "train/loss");
    assert_eq!(owner_config["lr"]["value"], 0.01, "{owner_config}");
    // The evaluator's config is the metric definitions (and the training's keys it read back).
    let upserts: Vec<Value> = companion
        .iter()
        .filter(|r| r["body"]["operationName"] == "UpsertBucket")
        .map(|r| {
            exptrack::wandb::parse_lenient(r["body"]["variables"]["config"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    for c in &upserts {
        // The training's hyperparameter, if the sync sends it back, is the training's value.
        if let Some(lr) = c.get("lr") {
            assert_eq!(lr["value"], 0.01, "{c}");
        }
        for k in c.as_object().unwrap().keys() {
            assert!(
                ["_wandb", "lr", "experiment"].contains(&k.as_str()),
                "{k}: {c}"
            );
        }
    }
    for key in ["eval/valid/accuracy", "eval/valid/loss"] {
        defined_against_step_metric(companion, key);
    }

    let state = rec.state();
    let history = state[wandb_id.as_str()]["history"].as_object().unwrap();
    let rows: Vec<Value> = (0..history.len())
        .map(|i| exptrack::wandb::parse_lenient(history[&i.to_string()].as_str().unwrap()).unwrap())
        .collect();
    let train_steps: Vec<(u64, u64)> = rows
        .iter()
        .filter(|r| r.get("train/loss").is_some())
        .map(|r| {
            (
                r["_step"].as_u64().unwrap(),
                r[DEFAULT_STEP_METRIC].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(train_steps, [(10, 10), (20, 20), (30, 30), (40, 40)]);
    let eval_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("eval/valid/accuracy").is_some())
        .collect();
    let eval_steps: Vec<u64> = eval_rows
        .iter()
        .map(|r| r[DEFAULT_STEP_METRIC].as_u64().unwrap())
        .collect();
    assert_eq!(eval_steps, [10, 20, 30, 40]);
    assert!(
        rows[..4].iter().all(|r| r.get("train/loss").is_some()),
        "training rows first"
    );
    for (r, acc) in eval_rows.iter().zip([0.6, 0.7, 0.8, 0.9]) {
        assert_eq!(r["eval/valid/accuracy"].as_f64(), Some(acc), "{r}");
    }
}
