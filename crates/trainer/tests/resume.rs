//! Acceptance: a run stopped after step k and resumed ends with the same weights and the same
//! logged metrics as an uninterrupted run (through what users get: exptrack-checkpoint's
//! `ModelCheckpointer` saving in the background and a real `ExperimentTracker` resuming its run);
//! completed experiments are skipped unless forced; early stopping and best-weight restoration.
mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack_core::{Event, ExperimentConfig, ExperimentTracker, Resume, RunStatus};
use exptrack_trainer::{
    ClippingKind, EarlyStoppingConfig, Mode, SchedulerKind, TrainingConfig, TrainingManager,
};

/// A checkpointer as the quickstart opens one: background saves, keep the last two.
fn checkpointer(dir: &Path, force: bool) -> ModelCheckpointer {
    let config = CheckpointConfig {
        dir: dir.to_path_buf(),
        max_checkpoints: Some(2),
        async_save: true,
        fsync: false,
        force,
        ..CheckpointConfig::default()
    };
    ModelCheckpointer::open("resume-test", config).unwrap()
}

/// A tracker on the local store of `runs`, continuing the run an interruption left open.
fn tracker(runs: &Path) -> Arc<ExperimentTracker> {
    let tracker = ExperimentTracker::builder(ExperimentConfig::named("resume-test"))
        .runs_dir(runs)
        .resume(Resume::LatestUnfinished)
        .handle_signals(false)
        .build()
        .unwrap();
    Arc::new(tracker)
}

/// Finishes a tracker the manager no longer holds; returns its run directory.
fn finish(tracker: Arc<ExperimentTracker>, status: RunStatus) -> std::path::PathBuf {
    let tracker = Arc::try_unwrap(tracker).unwrap_or_else(|_| panic!("tracker still shared"));
    let dir = tracker.run_dir().to_path_buf();
    tracker.finish(status).unwrap();
    dir
}

/// The metrics of a run as its local store recorded them, `(step, key, value)` in logging order,
/// without the wall-clock throughput and the system metrics.
fn deterministic(run_dir: &Path) -> Vec<(u64, String, f64)> {
    let events = exptrack_core::store::RunReader::open(run_dir)
        .unwrap()
        .events()
        .unwrap();
    let mut out = Vec::new();
    for (_, event) in events {
        if let Event::Metrics { step, values, .. } = event {
            out.extend(
                values
                    .into_iter()
                    .filter(|m| m.key.starts_with("train/") || m.key.starts_with("valid/"))
                    .filter(|m| m.key != "train/items_per_sec")
                    .map(|m| (step, m.key, m.value)),
            );
        }
    }
    out
}

fn config() -> TrainingConfig {
    quiet(TrainingConfig {
        num_epochs: 3,
        batch_size: 8,
        gradient_accumulation_steps: 2,
        learning_rate: 0.01,
        scheduler: SchedulerKind::Cosine,
        warmup_steps: 3,
        gradient_clipping: ClippingKind::Norm,
        max_grad_norm: 0.5,
        log_frequency: 2,
        eval_frequency: 5,
        checkpoint_save_frequency: 4,
        ..TrainingConfig::default()
    })
}

#[test]
fn resumed_run_matches_uninterrupted_run_bitwise() {
    let train = toy_data(100, 6, 11); // 13 micro-batches → 7 optimizer steps per epoch
    let valid = toy_data(30, 6, 12);
    let probe = TrainingManager::new(config()).unwrap();
    let init = model_to_bytes(&small_mlp(probe.device(), 6)).unwrap();

    // Uninterrupted.
    let dir_a = tempfile::tempdir().unwrap();
    let tracker_a = tracker(&dir_a.path().join("runs"));
    let mut a = TrainingManager::new(config())
        .unwrap()
        .with_sink(Arc::clone(&tracker_a))
        .with_checkpointer(checkpointer(&dir_a.path().join("checkpoints"), false));
    let model = model_from_bytes(small_mlp(a.device(), 6), init.clone()).unwrap();
    let (model_a, result_a) = a.fit(model, &train, &valid).unwrap();
    assert_eq!(result_a.steps, 21);
    drop(a);
    let run_a = finish(tracker_a, RunStatus::Completed);

    // Stopped after step 10 (mid-epoch 2, between checkpoints 8 and 12), then rerun.
    let dir_b = tempfile::tempdir().unwrap();
    let tracker_b1 = tracker(&dir_b.path().join("runs"));
    let mut b1 = TrainingManager::new(config())
        .unwrap()
        .with_sink(Arc::clone(&tracker_b1))
        .with_checkpointer(checkpointer(&dir_b.path().join("checkpoints"), false))
        .stop_after_step(10);
    let model = model_from_bytes(small_mlp(b1.device(), 6), init.clone()).unwrap();
    let (_, r1) = b1.fit(model, &train, &valid).unwrap();
    assert!(r1.interrupted);
    assert_eq!(r1.steps, 10);
    drop(b1);
    let run_b1 = finish(tracker_b1, RunStatus::Killed);

    // A fresh process would build a fresh (differently initialized) model: the checkpoint wins.
    let tracker_b2 = tracker(&dir_b.path().join("runs"));
    let mut b2 = TrainingManager::new(config())
        .unwrap()
        .with_sink(Arc::clone(&tracker_b2))
        .with_checkpointer(checkpointer(&dir_b.path().join("checkpoints"), false));
    let fresh = small_mlp(b2.device(), 6);
    let (model_b, result_b) = b2.fit(fresh, &train, &valid).unwrap();
    assert_eq!(result_b.resumed_from_step, Some(10));
    assert_eq!(result_b.steps, 21);
    drop(b2);
    let run_b = finish(tracker_b2, RunStatus::Completed);
    assert_eq!(run_b1, run_b, "the interrupted run was continued");

    // Bitwise-equal weights.
    assert_eq!(params_of(&model_a), params_of(&model_b));
    // The same logged metrics, step by step (throughput excluded: wall-clock).
    assert_eq!(deterministic(&run_a), deterministic(&run_b));
    assert!(!deterministic(&run_a).is_empty());
    assert_eq!(result_a.history, result_b.history);
    assert_eq!(result_a.final_metrics, result_b.final_metrics);
}

#[test]
fn completed_experiment_is_skipped_unless_forced() {
    let train = toy_data(40, 6, 1);
    let dir = tempfile::tempdir().unwrap();
    let mk = |force: bool| {
        TrainingManager::new(quiet(TrainingConfig {
            num_epochs: 1,
            batch_size: 8,
            ..TrainingConfig::default()
        }))
        .unwrap()
        .with_checkpointer(checkpointer(dir.path(), force))
    };
    let mut m = mk(false);
    let (trained, r) = m.fit(small_mlp(m.device(), 6), &train, &train).unwrap();
    assert!(!r.already_completed);
    drop(m);
    let mut again = mk(false);
    let (loaded, r2) = again
        .fit(small_mlp(again.device(), 6), &train, &train)
        .unwrap();
    assert!(r2.already_completed);
    assert_eq!(r2.final_metrics, r.final_metrics);
    assert_eq!(
        params_of(&loaded),
        params_of(&trained),
        "final weights are returned"
    );
    drop(again);
    let mut forced = mk(true);
    let (_, r3) = forced
        .fit(small_mlp(forced.device(), 6), &train, &train)
        .unwrap();
    assert!(!r3.already_completed);
    assert_eq!(r3.resumed_from_step, None);
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    // With min_delta far above any change, only the first evaluation counts as an improvement:
    // patience runs out after 1 + patience evaluations and the first evaluation's weights
    // come back.
    let cfg = quiet(TrainingConfig {
        num_epochs: 50,
        batch_size: 10,
        learning_rate: 0.01,
        early_stopping: Some(EarlyStoppingConfig {
            monitor: "valid/loss".into(),
            mode: Mode::Min,
            patience: 2,
            min_delta: 10.0,
            check_finite: true,
            restore_best_weights: true,
        }),
        ..TrainingConfig::default()
    });
    let train = toy_data(30, 6, 2);
    let mut m = TrainingManager::new(cfg).unwrap();
    let (model, r) = m.fit(small_mlp(m.device(), 6), &train, &train).unwrap();
    assert!(r.stopped_early, "{r:?}");
    assert_eq!(r.history.len(), 3);
    assert_eq!(r.best_epoch, Some(0));
    assert_eq!(r.epochs_completed, 3);
    assert!(r.stop_reason.is_some());
    assert!(r.restored_best_weights);
    let best = r.best_metric.unwrap();
    let now = m.validate(&model, &train).unwrap();
    let loss = now.iter().find(|(k, _)| k == "valid/loss").unwrap().1;
    assert!(
        (loss - best).abs() < 1e-6,
        "restored model has valid/loss {loss}, best was {best}"
    );
    let last = r.history.last().unwrap().metric("valid/loss").unwrap();
    assert!(
        (last - best).abs() > 1e-4,
        "training changed nothing: {last} vs {best}"
    );
}
