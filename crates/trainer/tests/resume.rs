//! Acceptance: a run stopped after step k and resumed ends with the same weights and the same
//! logged metrics as an uninterrupted run; completed experiments are skipped unless forced;
//! early stopping and best-weight restoration.
mod common;

use common::*;
use exptrack_trainer::manager::{model_from_bytes, model_to_bytes};
use exptrack_trainer::{
    ClippingKind, DirCheckpointStore, EarlyStoppingConfig, MemorySink, Mode, SchedulerKind,
    TrainingConfig, TrainingManager,
};

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

/// Metrics without the wall-clock throughput.
fn deterministic(sink: &MemorySink) -> Vec<(u64, String, f64)> {
    sink.snapshot()
        .metrics
        .into_iter()
        .filter(|(_, k, _)| k != "train/items_per_sec")
        .collect()
}

#[test]
fn resumed_run_matches_uninterrupted_run_bitwise() {
    let train = toy_data(100, 6, 11); // 13 micro-batches → 7 optimizer steps per epoch
    let valid = toy_data(30, 6, 12);
    let probe = TrainingManager::new(config()).unwrap();
    let init = model_to_bytes(&small_mlp(probe.device(), 6)).unwrap();

    // Uninterrupted.
    let dir_a = tempfile::tempdir().unwrap();
    let sink_a = MemorySink::new();
    let mut a = TrainingManager::new(config())
        .unwrap()
        .with_sink(sink_a.clone())
        .with_checkpoints(DirCheckpointStore::new(dir_a.path(), 2).unwrap());
    let model = model_from_bytes(small_mlp(a.device(), 6), init.clone()).unwrap();
    let (model_a, result_a) = a.fit(model, &train, &valid).unwrap();
    assert_eq!(result_a.steps, 21);

    // Stopped after step 10 (mid-epoch 2, between checkpoints 8 and 12), then rerun.
    let dir_b = tempfile::tempdir().unwrap();
    let sink_b = MemorySink::new();
    let mut b1 = TrainingManager::new(config())
        .unwrap()
        .with_sink(sink_b.clone())
        .with_checkpoints(DirCheckpointStore::new(dir_b.path(), 2).unwrap())
        .stop_after_step(10);
    let model = model_from_bytes(small_mlp(b1.device(), 6), init.clone()).unwrap();
    let (_, r1) = b1.fit(model, &train, &valid).unwrap();
    assert!(r1.interrupted);
    assert_eq!(r1.steps, 10);
    drop(b1);

    // A fresh process would build a fresh (differently initialized) model: the checkpoint wins.
    let mut b2 = TrainingManager::new(config())
        .unwrap()
        .with_sink(sink_b.clone())
        .with_checkpoints(DirCheckpointStore::new(dir_b.path(), 2).unwrap());
    let fresh = small_mlp(b2.device(), 6);
    let (model_b, result_b) = b2.fit(fresh, &train, &valid).unwrap();
    assert_eq!(result_b.resumed_from_step, Some(10));
    assert_eq!(result_b.steps, 21);

    // Bitwise-equal weights.
    assert_eq!(params_of(&model_a), params_of(&model_b));
    // The same logged metrics, step by step (throughput excluded: wall-clock).
    assert_eq!(deterministic(&sink_a), deterministic(&sink_b));
    assert_eq!(result_a.history, result_b.history);
    assert_eq!(result_a.final_metrics, result_b.final_metrics);
}

#[test]
fn completed_experiment_is_skipped_unless_forced() {
    let train = toy_data(40, 6, 1);
    let dir = tempfile::tempdir().unwrap();
    let mk = || {
        TrainingManager::new(quiet(TrainingConfig {
            num_epochs: 1,
            batch_size: 8,
            ..TrainingConfig::default()
        }))
        .unwrap()
        .with_checkpoints(DirCheckpointStore::new(dir.path(), 2).unwrap())
    };
    let mut m = mk();
    let (trained, r) = m.fit(small_mlp(m.device(), 6), &train, &train).unwrap();
    assert!(!r.already_completed);
    let mut again = mk();
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
    let mut forced = mk().force(true);
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
