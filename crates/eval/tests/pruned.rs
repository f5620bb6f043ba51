//! Issue 16 §3: the watcher says how many checkpoints retention removed before it could evaluate
//! them. The checkpointer numbers its commits (`commit_seq`); a gap between two scans is a
//! checkpoint that came and went unseen. Counted exactly, logged as `eval/skipped_pruned`, kept
//! across a watcher restart, and in a fast training with `max_checkpoints = 2` every one of the
//! saves is either evaluated or counted.

mod common;

use std::time::Duration;

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_core::store::RunReader;
use exptrack_core::{Event, RunStatus};
use exptrack_eval::{EvalWatcher, SKIPPED_PRUNED_METRIC};

/// A watcher of `exp` polling every `poll_ms`, one fake dataset, logging to `tracker`.
fn fake_watcher<'t>(
    ckpt_dir: &std::path::Path,
    exp: &str,
    tracker: &'t exptrack_core::ExperimentTracker,
    poll_ms: u64,
) -> EvalWatcher<'t> {
    EvalWatcher::builder(ckpt_dir, exp)
        .poll_interval(Duration::from_millis(poll_ms))
        .dataset("valid", |c: &LoadedCheckpoint| common::fake_eval(c, 0.0))
        .tracker(tracker)
        .build()
        .unwrap()
}

/// `(step, value)` of every `eval/skipped_pruned` point in a run's log.
fn skipped_points(run_dir: &std::path::Path) -> Vec<(u64, f64)> {
    let mut out = Vec::new();
    for (_, event) in RunReader::open(run_dir).unwrap().events().unwrap() {
        if let Event::Metrics { step, values, .. } = event {
            for m in values {
                if m.key == SKIPPED_PRUNED_METRIC {
                    out.push((step, m.value));
                }
            }
        }
    }
    out
}

#[test]
fn commit_numbers_count_each_save_and_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt_dir = tmp.path().join("checkpoints");
    let mut trainer = common::trainer(&ckpt_dir, "seq", Some(2));
    for step in 1..=5 {
        let info = trainer.save(common::checkpoint(step)).unwrap();
        assert_eq!(info.commit_seq, Some(step));
    }
    // A step saved again is a new commit.
    let info = trainer.save(common::checkpoint(5)).unwrap();
    assert_eq!(info.commit_seq, Some(6));
    trainer.wait().unwrap();
    drop(trainer);
    // Reopened: the counter goes on from the committed checkpoints (4 and 5 are left).
    let mut trainer = common::trainer(&ckpt_dir, "seq", Some(2));
    let info = trainer.save(common::checkpoint(6)).unwrap();
    assert_eq!(info.commit_seq, Some(7));
    let listed: Vec<(u64, Option<u64>)> = trainer
        .list()
        .iter()
        .map(|c| (c.step, c.commit_seq))
        .collect();
    assert_eq!(listed, [(5, Some(6)), (6, Some(7))]);
}

#[test]
fn watcher_counts_checkpoints_pruned_between_polls_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt_dir = tmp.path().join("checkpoints");
    let runs = tmp.path().join("runs");
    let exp = "pruned";
    let mut trainer = common::trainer(&ckpt_dir, exp, Some(2));
    for step in 1..=10 {
        trainer.save(common::checkpoint(step)).unwrap();
    }
    trainer.wait().unwrap();

    let tracker = common::eval_tracker(&runs, "eval");
    let run_dir = tracker.run_dir().to_path_buf();
    let mut watcher = fake_watcher(&ckpt_dir, exp, &tracker, 10);
    let first: Vec<u64> = watcher
        .poll_once()
        .unwrap()
        .iter()
        .map(|e| e.step)
        .collect();
    assert_eq!(first, [9, 10]);
    assert_eq!(
        watcher.removed_before_evaluation(),
        8,
        "steps 1..=8 went unseen"
    );

    // Nothing new: nothing counted.
    assert!(watcher.poll_once().unwrap().is_empty());
    assert_eq!(watcher.removed_before_evaluation(), 8);

    for step in 11..=15 {
        trainer.save(common::checkpoint(step)).unwrap();
    }
    trainer.wait().unwrap();
    let second: Vec<u64> = watcher
        .poll_once()
        .unwrap()
        .iter()
        .map(|e| e.step)
        .collect();
    assert_eq!(second, [14, 15]);
    assert_eq!(watcher.removed_before_evaluation(), 11, "and 11..=13");
    assert_eq!(watcher.state().pruned_unseen, 11);
    assert_eq!(watcher.state().last_commit_seq, Some(15));
    drop(watcher);
    tracker.finish(RunStatus::Completed).unwrap();

    // The count goes with each evaluation into the run.
    assert_eq!(
        skipped_points(&run_dir),
        [(9, 8.0), (10, 8.0), (14, 11.0), (15, 11.0)]
    );

    // A restarted watcher (same state file) keeps the count and does not count again.
    trainer.save(common::checkpoint(16)).unwrap();
    trainer.mark_completed(serde_json::json!({})).unwrap();
    let tracker = common::eval_tracker(&runs, "eval");
    let mut watcher = fake_watcher(&ckpt_dir, exp, &tracker, 10);
    let summary = watcher.run().unwrap();
    assert_eq!(summary.evaluated_steps(), [16]);
    assert_eq!(
        summary.pruned_unseen, 0,
        "nothing was removed unseen in this run"
    );
    assert_eq!(watcher.removed_before_evaluation(), 11);
    drop(watcher);
    tracker.finish(RunStatus::Completed).unwrap();
}

#[test]
fn fast_training_with_two_kept_checkpoints_accounts_for_every_save() {
    const SAVES: u64 = 40;
    let tmp = tempfile::tempdir().unwrap();
    let ckpt_dir = tmp.path().join("checkpoints");
    let runs = tmp.path().join("runs");
    let exp = "fast";
    // The watcher polls every 200 ms while training saves every 10 ms: most checkpoints are
    // pruned before any poll sees them.
    let mut trainer = common::trainer(&ckpt_dir, exp, Some(2));
    trainer.save(common::checkpoint(1)).unwrap();
    let dir = ckpt_dir.clone();
    let training = std::thread::spawn(move || {
        for step in 2..=SAVES {
            std::thread::sleep(Duration::from_millis(10));
            trainer.save(common::checkpoint(step)).unwrap();
        }
        trainer.wait().unwrap();
        trainer.mark_completed(serde_json::json!({})).unwrap();
    });
    let tracker = common::eval_tracker(&runs, "eval");
    let run_dir = tracker.run_dir().to_path_buf();
    let mut watcher = fake_watcher(&dir, exp, &tracker, 200);
    let summary = watcher.run().unwrap();
    training.join().unwrap();
    let evaluated = summary.evaluated_steps().len() as u64;
    let removed = summary.removed_before_evaluation();
    assert!(removed > 0, "{}", summary.describe());
    assert_eq!(
        evaluated + removed,
        SAVES,
        "every save is evaluated or counted: {}",
        summary.describe()
    );
    assert_eq!(watcher.removed_before_evaluation(), removed);
    assert!(
        summary
            .describe()
            .contains(&format!("{removed} removed by retention")),
        "{}",
        summary.describe()
    );
    drop(watcher);
    tracker.finish(RunStatus::Completed).unwrap();
    // The last evaluation (of the last save, which retention keeps) carries the final count.
    let points = skipped_points(&run_dir);
    assert_eq!(points.last(), Some(&(SAVES, removed as f64)), "{points:?}");
}
