//! Issue 16 §3: the evaluator's metrics in the training run itself. A watcher in "another
//! process" (its own tracker, its own local write-ahead log under the training run's
//! `companions/` directory) logs `eval/*` into the training run: the same MLflow run id, a second
//! event file in the training run's TensorBoard directory (read back by the real TensorBoard
//! reader), and `exptrack plot` of the training run draws the evaluation curves.
#![cfg(feature = "mlflow")]

#[path = "../crates/backend-mlflow/tests/common/mod.rs"]
mod mlflow_harness;

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
    let training = ExperimentTracker::builder(config.clone())
        .runs_dir(&runs)
        .with_tracker(Box::new(TensorBoardTracker::new(None)))
        .with_tracker(Box::new(
            MlflowTrackerBuilder::new()
                .tracking_uri(&uri)
                .build()
                .unwrap(),
        ))
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
        ))
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

    // ---- plot of the training run draws the evaluation series (only the evaluator logged an
    // accuracy)
    let written = exptrack_plot::plot_run(&train_dir, tmp.path().join("plots")).unwrap();
    assert!(
        written.iter().any(|p| p.ends_with("accuracy.png")),
        "{written:?}"
    );
}
