//! exptrack wired into burn-train's own loop (`SupervisedTraining::launch`, feature
//! `burn-train`): TensorBoard (the real `EventAccumulator`) and a real `mlflow server` read the
//! metrics back, a run SIGKILLed in epoch 3 resumes from our checkpoint of epoch 2 without
//! duplicate or backward steps, the checkpoints pass `exptrack ckpt verify`, and burn-train's
//! early stopping and best-checkpoint strategy work with our loggers (and panic without the
//! `read_numeric` partner).
//!
//! Peer tests need `EXPTRACK_PEER_PYTHON` (scripts/peers.sh); without it they print
//! "skipping: ..." unless `CI=true`, where they fail.

mod burn_train_net;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn_train_net::{Net, NetBatcher, loaders};
use exptrack::burn_train::{Outcome, TrackerLogger, Tracking};
use exptrack::checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack::trainer::MemorySink;
use exptrack::trainer::burn;
use exptrack::{ExperimentConfig, ExperimentTracker, Resume, RunStatus, Tracker};

use burn::optim::AdamConfig;
use burn::tensor::Device;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    Learner, MetricEarlyStoppingStrategy, StoppingCondition, SupervisedTraining,
    checkpoint::MetricCheckpointingStrategy,
};
use serde_json::Value as J;

const TRAIN_ITEMS: usize = 256;
const VALID_ITEMS: usize = 64;
const BATCH: usize = 16;
const TRAIN_ITERS: u64 = (TRAIN_ITEMS / BATCH) as u64;
const VALID_ITERS: u64 = (VALID_ITEMS / BATCH) as u64;
const CHILD_ENV: &str = "EXPTRACK_BT_CHILD";

/// The peer interpreter with `modules` importable, or `None` after printing "skipping: ..."
/// (a panic with `CI=true`): the rule of crates/backend-tensorboard/tests/common.
fn peer_python(modules: &[&str]) -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let unavailable = |why: String| -> Option<PathBuf> {
        assert!(!ci, "peer Python unavailable with CI=true: {why}");
        eprintln!("skipping: {why}");
        None
    };
    let Some(py) = std::env::var_os("EXPTRACK_PEER_PYTHON").map(PathBuf::from) else {
        return unavailable("EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh)".into());
    };
    let import = format!("import {}", modules.join(", "));
    match Command::new(&py).args(["-c", &import]).output() {
        Ok(out) if out.status.success() => Some(py),
        Ok(out) => unavailable(format!(
            "{} cannot `{import}`: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => unavailable(format!("cannot run {}: {e}", py.display())),
    }
}

fn device() -> Device {
    Device::default()
}

fn config(name: &str) -> ExperimentConfig {
    ExperimentConfig::named(name)
}

fn tracker(
    root: &Path,
    name: &str,
    trackers: Vec<Box<dyn Tracker>>,
    resume: Resume,
) -> Arc<ExperimentTracker> {
    let mut b = ExperimentTracker::builder(config(name))
        .runs_dir(root.join("runs"))
        .collect_system_info(false)
        .handle_signals(false)
        .resume(resume);
    for t in trackers {
        b = b.with_tracker(t);
    }
    Arc::new(b.build().expect("tracker"))
}

fn checkpoint_config(root: &Path) -> CheckpointConfig {
    CheckpointConfig {
        dir: root.join("checkpoints"),
        max_checkpoints: Some(2),
        monitor: Some("valid/loss".into()),
        keep_best: Some(1),
        ..CheckpointConfig::default()
    }
}

/// burn-train's `SupervisedTraining` for the test net, quiet.
fn training(root: &Path, epochs: usize, batcher: NetBatcher) -> SupervisedTraining<Net> {
    let (train, valid) = loaders(TRAIN_ITEMS, VALID_ITEMS, BATCH, batcher);
    SupervisedTraining::new(root.join("artifacts"), train, valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .num_epochs(epochs)
        .with_application_logger(None)
}

fn learner(lr: f64) -> Learner<Net> {
    Learner::new(Net::new(&device().autodiff()), AdamConfig::new().init(), lr)
}

fn finish(tracker: Arc<ExperimentTracker>, status: RunStatus) {
    let t = Arc::try_unwrap(tracker).expect("tracker still shared");
    t.finish(status).expect("finish");
}

/// `[tag → [(step, value)]]` as the real tensorboard's EventAccumulator reads `dir`.
fn tensorboard_scalars(py: &Path, dir: &Path) -> BTreeMap<String, Vec<(u64, f64)>> {
    let script = "import json, sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})\n\
        ea.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))\n";
    let out = Command::new(py)
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "EventAccumulator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: BTreeMap<String, Vec<(u64, f64)>> =
        serde_json::from_slice(&out.stdout).expect("json from EventAccumulator");
    v
}

fn steps(points: &[(u64, f64)]) -> Vec<u64> {
    points.iter().map(|p| p.0).collect()
}

fn assert_one_point_per_step(tag: &str, points: &[(u64, f64)], expected: u64) {
    let s = steps(points);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "{tag}: steps not strictly increasing: {s:?}"
    );
    assert_eq!(
        s,
        (1..=expected).collect::<Vec<_>>(),
        "{tag}: expected one point at each step 1..={expected}"
    );
    assert!(points.iter().all(|p| p.1.is_finite()), "{tag}: {points:?}");
}

#[test]
fn tensorboard_reads_train_and_valid_loss_from_burn_train() {
    let Some(py) = peer_python(&["tensorboard"]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let tb = exptrack::tensorboard::TensorBoardTracker::new(None);
    let tracker = tracker(tmp.path(), "bt-tb", vec![Box::new(tb)], Resume::Never);
    let run_dir = tracker.run_dir().to_path_buf();
    let tracking = Tracking::new(Arc::clone(&tracker));
    tracking.log_model(&Net::new(&device())).expect("params");
    let result = tracking
        .attach(training(tmp.path(), 3, NetBatcher::default()))
        .launch(learner(1e-2));
    let outcome = tracking.finish(&result).expect("finish");
    assert_eq!(outcome.train_steps, 3 * TRAIN_ITERS);
    assert_eq!(outcome.last_epoch, Some(3));
    drop(tracking);
    finish(tracker, RunStatus::Completed);

    let scalars = tensorboard_scalars(&py, &run_dir);
    assert_one_point_per_step("train/loss", &scalars["train/loss"], 3 * TRAIN_ITERS);
    assert_one_point_per_step("valid/loss", &scalars["valid/loss"], 3 * VALID_ITERS);
    assert_one_point_per_step(
        "train/accuracy",
        &scalars["train/accuracy"],
        3 * TRAIN_ITERS,
    );
    assert_eq!(steps(&scalars["epoch/valid/loss"]), [1, 2, 3]);
    assert_eq!(steps(&scalars["epoch/train/loss"]), [1, 2, 3]);
    // Learning does happen (the loss reaches TensorBoard, not a constant).
    let v = &scalars["epoch/valid/loss"];
    assert!(v[2].1 < v[0].1, "valid loss did not decrease: {v:?}");
}

#[cfg(feature = "mlflow")]
#[path = "../crates/backend-mlflow/tests/common/mod.rs"]
mod mlflow_common;

#[cfg(feature = "mlflow")]
#[test]
fn mlflow_server_holds_the_same_histories_as_tensorboard() {
    let Some(py) = peer_python(&["tensorboard"]) else {
        return;
    };
    let Some(server) = mlflow_common::shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let experiment = format!("bt-mlflow-{}", std::process::id());
    let mlflow = exptrack::mlflow::MlflowTracker::builder()
        .tracking_uri(server.uri())
        .experiment_name(experiment.clone())
        .build()
        .expect("mlflow tracker");
    let tb = exptrack::tensorboard::TensorBoardTracker::new(None);
    let tracker = tracker(
        tmp.path(),
        "bt-mlflow",
        vec![Box::new(tb), Box::new(mlflow)],
        Resume::Never,
    );
    let run_dir = tracker.run_dir().to_path_buf();
    let tracking = Tracking::new(Arc::clone(&tracker));
    tracking
        .log_config(&serde_json::json!({"optimizer": {"lr": 0.01}, "epochs": 2}))
        .expect("config");
    tracking.log_model(&Net::new(&device())).expect("params");
    let result = tracking
        .attach(training(tmp.path(), 2, NetBatcher::default()))
        .launch(learner(1e-2));
    tracking.finish(&result).expect("finish");
    drop(tracking);
    finish(tracker, RunStatus::Completed);

    let exp = server.get(
        "experiments/get-by-name",
        &[("experiment_name", experiment.as_str())],
    );
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let runs = server.post(
        "runs/search",
        &serde_json::json!({"experiment_ids": [exp_id]}),
    );
    let runs = runs["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run_id = runs[0]["info"]["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let params = mlflow_common::kv(&server.run(&run_id), "params");
    assert_eq!(params.get("optimizer.lr").map(String::as_str), Some("0.01"));
    assert!(params.contains_key("model/num_params"), "{params:?}");

    let tb = tensorboard_scalars(&py, &run_dir);
    for (key, n) in [
        ("train/loss", 2 * TRAIN_ITERS),
        ("valid/loss", 2 * VALID_ITERS),
        ("epoch/valid/loss", 2),
    ] {
        let history = server.history(&run_id, key);
        let ml: Vec<(u64, f64)> = history
            .iter()
            .map(|(s, v, _)| (*s as u64, v.as_f64().expect("value")))
            .collect();
        assert_eq!(ml.len() as u64, n, "{key}: {ml:?}");
        assert_eq!(
            steps(&ml),
            steps(&tb[key]),
            "{key}: MLflow and TensorBoard steps differ"
        );
        for ((_, a), (_, b)) in ml.iter().zip(&tb[key]) {
            // TensorBoard stores f32.
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                "{key}: {a} vs {b}"
            );
        }
    }
}

/// The `exptrack` binary of this target directory, if built.
fn exptrack_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?; // target/debug/deps -> target/debug
    let bin = dir.join("exptrack");
    bin.is_file().then_some(bin)
}

/// The highest `train/loss` step in the run's local log (`events.jsonl`), 0 when none.
fn max_logged_train_step(run_dir: &Path) -> u64 {
    let text = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<J>(l).ok())
        .filter(|v| v["kind"] == "metrics")
        .filter(|v| {
            v["values"]
                .as_array()
                .is_some_and(|a| a.iter().any(|m| m["key"] == "train/loss"))
        })
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Child process body (run by `kill_9_during_epoch_3_resumes_from_epoch_2`).
fn child(root: &Path) {
    let kill_at: Option<usize> = std::env::var("EXPTRACK_BT_KILL_AT")
        .ok()
        .and_then(|v| v.parse().ok());
    let tb = exptrack::tensorboard::TensorBoardTracker::new(None);
    let tracker = tracker(
        root,
        "bt-kill",
        vec![Box::new(tb)],
        Resume::LatestUnfinished,
    );
    let mut ccfg = checkpoint_config(root);
    ccfg.fsync = true;
    let ckpt = ModelCheckpointer::open("bt-kill", ccfg).expect("checkpointer");
    let tracking = Tracking::new(Arc::clone(&tracker))
        .with_checkpointer(ckpt)
        .expect("tracking");
    let report = |name: &str, v: J| {
        std::fs::write(root.join(name), v.to_string()).expect("report");
    };
    if let Some(results) = tracking.completed() {
        report("completed.json", results.clone());
        return;
    }
    let resumed = tracking.resume_point().map(|r| r.epoch);
    report(
        &format!("start-{}.json", std::process::id()),
        serde_json::json!({ "resumed_epoch": resumed }),
    );
    let batcher = match kill_at {
        None => NetBatcher::default(),
        Some(at) => {
            let count = Arc::new(AtomicUsize::new(0));
            let t = Arc::clone(&tracker);
            let root = root.to_owned();
            NetBatcher {
                hook: Some(Arc::new(move || {
                    if count.fetch_add(1, Ordering::SeqCst) + 1 != at {
                        return;
                    }
                    // In epoch 3: wait until epoch 2's checkpoint is committed and epoch 3's
                    // first points reached the backends, then die without any cleanup.
                    let ro = ModelCheckpointer::open_read_only("bt-kill", checkpoint_config(&root))
                        .expect("read-only");
                    let t0 = Instant::now();
                    while !ro.list().iter().any(|c| c.epoch == Some(2)) {
                        assert!(
                            t0.elapsed() < Duration::from_secs(60),
                            "no epoch-2 checkpoint"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                        ro.refresh().expect("refresh");
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    t.flush_timeout(Duration::from_secs(20)).expect("flush");
                    // The dispatcher records the backends' acknowledged positions
                    // (`cursors.json`) once a second, not at the flush: a kill sooner replays
                    // (and TensorBoard shows twice) what the backends already had — a transport
                    // matter of the core, not of the adapter's steps (see the local store check).
                    std::thread::sleep(Duration::from_millis(1500));
                    let max = max_logged_train_step(t.run_dir());
                    std::fs::write(root.join("killed-max-step"), max.to_string()).expect("write");
                    // SAFETY: kill(2) on our own pid.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                })),
            }
        }
    };
    let result = tracking
        .attach(training(root, 5, batcher))
        .launch(learner(1e-2));
    let outcome: Outcome = tracking.finish(&result).expect("finish");
    report(
        "finished.json",
        serde_json::json!({ "completed": outcome.completed, "train_steps": outcome.train_steps }),
    );
    drop(tracking);
    finish(tracker, RunStatus::Completed);
}

/// The highest `train/loss` step the killed child had logged (it writes it before dying).
fn scalars_before_resume(root: &Path) -> u64 {
    std::fs::read_to_string(root.join("killed-max-step"))
        .expect("killed-max-step")
        .trim()
        .parse()
        .expect("number")
}

/// Runs this test binary's `child_process` test in a child process with `env`.
fn spawn_child(root: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn child")
}

#[test]
fn child_process() {
    let Some(root) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return; // only does something when spawned by another test
    };
    if std::env::var_os("EXPTRACK_BT_WRITE_ONLY").is_some() {
        write_only_child(&root);
    } else {
        child(&root);
    }
}

#[test]
fn kill_9_during_epoch_3_resumes_from_epoch_2() {
    let Some(py) = peer_python(&["tensorboard"]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let kill_at = (2 * TRAIN_ITERS + TRAIN_ITERS / 2) as usize; // mid epoch 3
    let first = spawn_child(root, &[("EXPTRACK_BT_KILL_AT", kill_at.to_string())]);
    assert!(
        !first.status.success(),
        "the child was not killed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(first.status.signal(), Some(libc::SIGKILL), "{first:?}");
    assert!(!root.join("finished.json").exists());

    let second = spawn_child(root, &[]);
    assert!(
        second.status.success(),
        "resumed child failed: {}\n{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
    let starts: Vec<J> = std::fs::read_dir(root)
        .expect("read root")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("start-"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json"))
        .collect();
    let mut resumed: Vec<J> = starts.iter().map(|s| s["resumed_epoch"].clone()).collect();
    resumed.sort_by_key(|v| v.as_u64());
    assert_eq!(resumed, [J::Null, J::from(2)], "resume points: {starts:?}");
    let finished: J =
        serde_json::from_slice(&std::fs::read(root.join("finished.json")).expect("finished"))
            .expect("json");
    assert_eq!(finished["completed"], J::Bool(true));
    assert_eq!(finished["train_steps"], J::from(5 * TRAIN_ITERS));

    // One run (resumed), read by the real TensorBoard: no duplicate or backward step.
    let runs_dir = root.join("runs");
    let exp_dirs: Vec<PathBuf> = std::fs::read_dir(&runs_dir)
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(exp_dirs.len(), 1, "{exp_dirs:?}");
    let run_dirs: Vec<PathBuf> = std::fs::read_dir(&exp_dirs[0])
        .expect("exp")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        run_dirs.len(),
        1,
        "the rerun did not resume the run: {run_dirs:?}"
    );
    // The local store (what every backend is fed from): each step of each key once, in order.
    let events = std::fs::read_to_string(run_dirs[0].join("events.jsonl")).expect("events");
    let mut store: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in events.lines() {
        let v: J = serde_json::from_str(line).expect("event line");
        if v["kind"] != "metrics" {
            continue;
        }
        for m in v["values"].as_array().into_iter().flatten() {
            let key = m["key"].as_str().unwrap_or_default().to_owned();
            store
                .entry(key)
                .or_default()
                .push(v["step"].as_u64().expect("step"));
        }
    }
    assert_eq!(
        store["train/loss"],
        (1..=5 * TRAIN_ITERS).collect::<Vec<_>>()
    );
    assert_eq!(
        store["valid/loss"],
        (1..=5 * VALID_ITERS).collect::<Vec<_>>()
    );
    assert_eq!(store["epoch/valid/loss"], [1, 2, 3, 4, 5]);
    // The killed run logged part of epoch 3, which the resumed run replayed from step 2 × 16.
    let killed_max = scalars_before_resume(root);
    assert!(
        killed_max > 2 * TRAIN_ITERS,
        "nothing of epoch 3 was logged before the kill"
    );

    let scalars = tensorboard_scalars(&py, &run_dirs[0]);
    assert_one_point_per_step("train/loss", &scalars["train/loss"], 5 * TRAIN_ITERS);
    assert_one_point_per_step("valid/loss", &scalars["valid/loss"], 5 * VALID_ITERS);
    assert_eq!(steps(&scalars["epoch/valid/loss"]), [1, 2, 3, 4, 5]);

    // The adapter's checkpoints: one per epoch with the three records, all verifying.
    let ckpt = ModelCheckpointer::open_read_only("bt-kill", checkpoint_config(root)).expect("ro");
    let list = ckpt.list();
    assert!(!list.is_empty());
    assert_eq!(list.last().and_then(|c| c.epoch), Some(5));
    assert_eq!(list.last().map(|c| c.step), Some(5 * TRAIN_ITERS));
    for c in &list {
        ckpt.verify(c.step).expect("verify");
        let names: Vec<&str> = c.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["model.bpk", "optimizer.bpk", "scheduler.bpk"]);
        assert!(c.metrics.contains_key("valid/loss"), "{:?}", c.metrics);
    }
    assert!(ckpt.is_completed());
    match exptrack_bin() {
        Some(bin) => {
            let out = Command::new(bin)
                .args(["ckpt", "verify"])
                .arg(root.join("checkpoints").join("bt-kill"))
                .output()
                .expect("exptrack ckpt verify");
            assert!(
                out.status.success(),
                "exptrack ckpt verify: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(stdout.matches("ok ").count(), list.len(), "{stdout}");
        }
        None => eprintln!("note: no exptrack binary in the target dir; verified in-process only"),
    }

    // A third run finds the experiment completed.
    let third = spawn_child(root, &[]);
    assert!(third.status.success());
    let results: J =
        serde_json::from_slice(&std::fs::read(root.join("completed.json")).expect("completed"))
            .expect("json");
    assert_eq!(results["epochs"], J::from(5));
    assert!(results["valid/loss"].is_number(), "{results}");
}

fn early_stopping(n_epochs: usize) -> MetricEarlyStoppingStrategy {
    MetricEarlyStoppingStrategy::new(
        &LossMetric::new(),
        Aggregate::Mean,
        Direction::Lowest,
        Split::Valid,
        StoppingCondition::NoImprovementSince { n_epochs },
    )
}

/// burn-train with only a write-only logger and early stopping (run in a child: it panics).
fn write_only_child(root: &Path) {
    let training = training(root, 4, NetBatcher::default())
        .with_metric_logger(TrackerLogger::new(MemorySink::new()))
        .early_stopping(early_stopping(1));
    let _ = training.launch(learner(0.0));
}

#[test]
fn early_stopping_triggers_with_our_loggers_and_panics_without_the_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // lr = 0: the valid loss never improves after epoch 1, so NoImprovementSince { 1 } stops
    // after epoch 2 of 10, which burn-train decides from `read_numeric`.
    let sink = MemorySink::new();
    let tracking = Tracking::new(sink.clone());
    let result = tracking
        .attach(training(tmp.path(), 10, NetBatcher::default()).early_stopping(early_stopping(1)))
        .launch(learner(0.0));
    assert!(result.error.is_none(), "{:?}", result.error);
    let outcome = tracking.finish(&result).expect("finish");
    assert_eq!(outcome.last_epoch, Some(2));
    assert_eq!(steps(&sink.series("epoch/valid/loss")), [1, 2]);
    assert_eq!(sink.series("train/loss").len() as u64, 2 * TRAIN_ITERS);

    // The same with only the write-only logger: burn-train's aggregator panics ("Can read values").
    let out = spawn_child(tmp.path(), &[("EXPTRACK_BT_WRITE_ONLY", "1".into())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "burn-train did not fail without a history: {stderr}"
    );
    assert!(stderr.contains("Can read values"), "{stderr}");
}

#[test]
fn best_checkpoint_by_valid_loss_is_what_burn_train_chose() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = MemorySink::new();
    let ccfg = CheckpointConfig {
        dir: tmp.path().join("checkpoints"),
        monitor: Some("valid/loss".into()),
        fsync: false,
        ..CheckpointConfig::default()
    };
    let ckpt = ModelCheckpointer::open("bt-best", ccfg.clone()).expect("open");
    let tracking = Tracking::new(sink.clone())
        .with_checkpointer(ckpt)
        .expect("tracking");
    // Only burn-train's "best by valid loss" strategy: it saves an epoch only when it is the
    // best so far (found through `read_numeric`).
    let result = tracking
        .attach(
            training(tmp.path(), 5, NetBatcher::default()).with_checkpointing_strategy(
                MetricCheckpointingStrategy::new(
                    &LossMetric::new(),
                    Aggregate::Mean,
                    Direction::Lowest,
                    Split::Valid,
                ),
            ),
        )
        .launch(learner(3e-2));
    tracking.finish(&result).expect("finish");
    drop(tracking);
    let valid: Vec<(u64, f64)> = sink.series("epoch/valid/loss");
    assert_eq!(steps(&valid), [1, 2, 3, 4, 5]);
    let mut best = f64::MAX;
    let expected: Vec<u64> = valid
        .iter()
        .filter(|(_, v)| {
            let b = *v < best;
            if b {
                best = *v;
            }
            b
        })
        .map(|(e, _)| *e)
        .collect();
    let ckpt = ModelCheckpointer::open_read_only("bt-best", ccfg).expect("ro");
    let saved: Vec<u64> = ckpt.list().iter().filter_map(|c| c.epoch).collect();
    assert_eq!(saved, expected, "valid losses {valid:?}");
    let argmin = valid.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map(|p| p.0);
    assert_eq!(ckpt.best().and_then(|c| c.epoch), argmin);
    // Each checkpoint records its epoch's values as metrics, as logged.
    for c in ckpt.list() {
        let e = c.epoch.expect("epoch");
        let logged = valid.iter().find(|p| p.0 == e).map(|p| p.1);
        assert_eq!(c.metrics.get("valid/loss").copied(), logged);
    }
}

#[test]
fn eval_watcher_evaluates_burn_train_checkpoints_while_it_trains() {
    use exptrack::checkpoint::LoadedCheckpoint;

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_owned();
    let ccfg = CheckpointConfig {
        dir: root.join("checkpoints"),
        fsync: false,
        ..CheckpointConfig::default()
    };
    let ckpt = ModelCheckpointer::open("bt-eval", ccfg.clone()).expect("open");
    let trainer = {
        let root = root.clone();
        std::thread::spawn(move || {
            let tracking = Tracking::new(MemorySink::new())
                .with_checkpointer(ckpt)
                .expect("tracking");
            let result = tracking
                .attach(training(&root, 3, NetBatcher::default()))
                .launch(learner(1e-2));
            tracking.finish(&result).expect("finish")
        })
    };
    let eval_tracker = tracker(&root, "bt-eval-watch", vec![], Resume::Never);
    let device = device();
    let mut watcher = exptrack_eval::EvalWatcher::builder(&ccfg.dir, "bt-eval")
        .poll_interval(Duration::from_millis(50))
        .dataset("valid", |c: &LoadedCheckpoint| {
            let mut c = c.clone();
            let _model = c.load_model(Net::new(&device))?;
            Ok::<_, exptrack_eval::BoxError>([("epoch", c.info.epoch.unwrap_or(0) as f64)])
        })
        .tracker(&eval_tracker)
        .build()
        .expect("watcher");
    let summary = watcher.run().expect("watch");
    let outcome = trainer.join().expect("training thread");
    assert!(outcome.completed);
    drop(watcher);
    let committed: Vec<u64> = ModelCheckpointer::open_read_only("bt-eval", ccfg)
        .expect("ro")
        .list()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(committed, [TRAIN_ITERS, 2 * TRAIN_ITERS, 3 * TRAIN_ITERS]);
    assert_eq!(summary.evaluated_steps(), committed);
    finish(eval_tracker, RunStatus::Completed);
}

/// A sink in front of a real tracker that records, at every `sync`, how far the run's durable
/// `events.jsonl` goes (its highest `train/loss` step) and which checkpoint steps are committed.
struct SyncWitness {
    tracker: Arc<ExperimentTracker>,
    checkpoints: CheckpointConfig,
    id: &'static str,
    syncs: std::sync::Mutex<Vec<(u64, Vec<u64>)>>,
}

impl exptrack::trainer::MetricSink for SyncWitness {
    fn log_metrics(&self, step: u64, values: &[(String, f64)]) -> exptrack::trainer::Result<()> {
        exptrack::trainer::MetricSink::log_metrics(&*self.tracker, step, values)
    }
    fn sync(&self) -> exptrack::trainer::Result<()> {
        exptrack::trainer::MetricSink::sync(&*self.tracker)?;
        let logged = max_logged_train_step(self.tracker.run_dir());
        let committed = ModelCheckpointer::open_read_only(self.id, self.checkpoints.clone())
            .map(|c| c.list().iter().map(|i| i.step).collect())
            .unwrap_or_default();
        self.syncs.lock().expect("syncs").push((logged, committed));
        Ok(())
    }
}

/// Issue 12 (as the `TrainingManager`, tests/recipes.rs): the adapter syncs the tracker's
/// local log before each checkpoint commits, so a crash right after a commit never loses the
/// metrics up to it (the resumed run starts after the checkpoint and never logs them again).
#[test]
fn each_checkpoint_commits_after_its_metrics_are_in_the_durable_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tracker = tracker(tmp.path(), "bt-sync", Vec::new(), Resume::Never);
    let ccfg = CheckpointConfig {
        dir: tmp.path().join("checkpoints"),
        fsync: false,
        ..CheckpointConfig::default()
    };
    let witness = Arc::new(SyncWitness {
        tracker: Arc::clone(&tracker),
        checkpoints: ccfg.clone(),
        id: "bt-sync",
        syncs: std::sync::Mutex::new(Vec::new()),
    });
    let ckpt = ModelCheckpointer::open("bt-sync", ccfg.clone()).expect("open");
    let tracking = Tracking::new(Arc::clone(&witness))
        .with_checkpointer(ckpt)
        .expect("tracking");
    let result = tracking
        .attach(training(tmp.path(), 3, NetBatcher::default()))
        .launch(learner(1e-2));
    tracking.finish(&result).expect("finish");
    drop(tracking);
    let committed: Vec<u64> = ModelCheckpointer::open_read_only("bt-sync", ccfg)
        .expect("ro")
        .list()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(
        committed,
        [TRAIN_ITERS, 2 * TRAIN_ITERS, 3 * TRAIN_ITERS],
        "one checkpoint per epoch"
    );
    let syncs = witness.syncs.lock().expect("syncs").clone();
    for step in committed {
        assert!(
            syncs
                .iter()
                .any(|(logged, before)| *logged >= step && !before.contains(&step)),
            "checkpoint {step} committed without a sync of the log up to it first: {syncs:?}"
        );
    }
    drop(witness);
    finish(tracker, RunStatus::Completed);
}
