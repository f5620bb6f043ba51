//! Training reports every checkpoint commit to the run: `TrainingManager` with a real
//! `ModelCheckpointer` and the real `ExperimentTracker` writes one `Event::Checkpoint` per commit
//! to the run's `events.jsonl` (with the steps retention deleted), for direct and background
//! saves. (The quickstart's run, through the facade's `Experiment`, is checked in
//! tests/quickstart.rs, across an interruption.)

use std::path::Path;
use std::sync::Arc;

use exptrack::checkpoint::{CheckpointConfig, CheckpointInfo, ModelCheckpointer};
use exptrack::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
use exptrack::store::RunReader;
use exptrack::trainer::{TrainingConfig, TrainingManager};
use exptrack::{CheckpointReport, Event, ExperimentConfig, ExperimentTracker, RunStatus};

/// The checkpoint reports of a stored run, in log order.
fn reports(run_dir: &Path) -> Vec<CheckpointReport> {
    RunReader::open(run_dir)
        .unwrap()
        .events()
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Checkpoint(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The steps of the `ckpt-*` directories in an experiment's checkpoint directory.
fn steps_on_disk(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("ckpt-")?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    steps
}

/// Every report points at its checkpoint and describes its files as stored: for the checkpoints
/// that still exist, each file's size and digest match `checkpoint.json`.
fn check_files(reports: &[CheckpointReport], kept: &[CheckpointInfo]) {
    for info in kept {
        let r = reports
            .iter()
            .rev()
            .find(|r| r.step == info.step)
            .unwrap_or_else(|| panic!("no report of {}", info.step));
        assert_eq!(r.location, info.dir.display().to_string());
        let files: Vec<(String, u64, String)> = info
            .files
            .iter()
            .map(|f| (f.name.clone(), f.size, f.hash.to_string()))
            .collect();
        let reported: Vec<(String, u64, String)> = r
            .files
            .iter()
            .map(|f| (f.name.clone(), f.size, f.hash.clone()))
            .collect();
        assert_eq!(reported, files, "step {}", info.step);
        assert!(!r.files.is_empty());
    }
}

#[test]
fn the_training_manager_reports_each_commit_with_the_pruned_steps() {
    for async_save in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let tracker = ExperimentTracker::builder(ExperimentConfig::named("ckpt-reports"))
            .runs_dir(tmp.path().join("runs"))
            .handle_signals(false)
            .collect_system_info(false)
            .build()
            .unwrap();
        let checkpointer = ModelCheckpointer::open(
            "ckpt-reports",
            CheckpointConfig {
                dir: tmp.path().join("checkpoints"),
                max_checkpoints: Some(2),
                async_save,
                fsync: false,
                ..CheckpointConfig::default()
            },
        )
        .unwrap();
        // 256 items in batches of 32: 8 steps; saves every 3 steps and at the epoch's end.
        let mut manager = TrainingManager::new(TrainingConfig {
            num_epochs: 1,
            batch_size: 32,
            checkpoint_save_frequency: 3,
            device: "cpu".into(),
            progress: false,
            ..TrainingConfig::default()
        })
        .unwrap()
        .with_sink(Arc::new(tracker.clone()))
        .with_checkpointer(checkpointer);
        let (train, valid) = generate_dataset(256, 64, 5).unwrap();
        let model = Mlp::new(FEATURES, 16, CLASSES, manager.device());
        let (_, result) = manager.fit(model, &train, &valid).unwrap();
        assert_eq!(result.steps, 8);
        let run_dir = tracker.run_dir().to_path_buf();
        let ckpt = manager.checkpointer().unwrap();
        let exp_dir = ckpt.experiment_dir().to_path_buf();
        let kept = ckpt.list();
        drop(manager);
        // The log is complete once the run is finished (events are appended by the store's
        // writer, after the call that logged them returned).
        tracker.finish(RunStatus::Completed).unwrap();

        let got = reports(&run_dir);
        let commits: Vec<(u64, Vec<u64>)> =
            got.iter().map(|r| (r.step, r.pruned.clone())).collect();
        // Keep the last two: 8's commit deletes 3.
        assert_eq!(
            commits,
            [(3, vec![]), (6, vec![]), (8, vec![3])],
            "async_save = {async_save}"
        );
        assert_eq!(steps_on_disk(&exp_dir), [6, 8]);
        check_files(&got, &kept);
        // The validation metrics of the save are in the report of the epoch's end.
        let last = got.last().unwrap();
        assert!(
            last.metrics.iter().any(|m| m.key.starts_with("valid/")),
            "{:?}",
            last.metrics
        );
        // What the store reads back: the set that exists on disk.
        let set = RunReader::open(&run_dir).unwrap().checkpoints().unwrap();
        assert_eq!(set.present().map(|r| r.step).collect::<Vec<_>>(), [6, 8]);
        assert_eq!(set.pruned().collect::<Vec<_>>(), [3]);
        // By reference: the log holds no artifact (no copy of the weights).
        let log = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
        assert!(!log.contains(r#""kind":"artifact""#));
    }
}
