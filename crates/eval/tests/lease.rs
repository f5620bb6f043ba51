//! Pruning never removes the checkpoint under evaluation: the evaluator blocks while the trainer
//! saves more checkpoints than keep-last allows; the leased one survives until the evaluation
//! finishes, and retention removes it afterwards.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_core::RunStatus;
use exptrack_eval::{BoxError, EvalWatcher, Outcome, RecordKind};

#[test]
fn leased_checkpoint_survives_pruning_until_evaluation_ends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let exp = "lease";
    let mut trainer = common::trainer(&ckpt_dir, exp, Some(2));
    trainer.save(common::checkpoint(1)).expect("save 1");
    let ckpt1 = ckpt_dir.join(exp).join("ckpt-000000000001");
    assert!(ckpt1.is_dir());

    let (started_tx, started_rx) = mpsc::channel::<u64>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let runs = tmp.path().join("runs");
    let dir = ckpt_dir.clone();
    let watcher_thread = std::thread::spawn(move || {
        let tracker = common::eval_tracker(&runs, "eval");
        let mut watcher = EvalWatcher::builder(&dir, exp)
            .poll_interval(Duration::from_millis(10))
            .dataset("valid", move |c: &LoadedCheckpoint| {
                started_tx.send(c.step()).map_err(BoxError::from)?;
                // Blocks until the test lets it go.
                release_rx.recv().map_err(BoxError::from)?;
                common::fake_eval(c, 0.0).map_err(BoxError::from)
            })
            .tracker(&tracker)
            .build()
            .expect("watcher");
        let first = watcher.poll_once().expect("poll");
        drop(watcher);
        tracker.finish(RunStatus::Completed).expect("finish");
        first
    });

    assert_eq!(started_rx.recv_timeout(Duration::from_secs(10)), Ok(1));
    // While step 1 is being evaluated the trainer saves 2..=6 with keep-last 2.
    for step in 2..=6 {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    trainer.wait().expect("reapers");
    let steps: Vec<u64> = trainer.list().iter().map(|c| c.step).collect();
    assert_eq!(
        steps,
        [1, 5, 6],
        "the leased step 1 is kept beside the last two"
    );
    assert!(ckpt1.join("model.bin").is_file(), "leased files are intact");
    assert!(!ckpt_dir.join(exp).join("ckpt-000000000002").exists());
    assert!(
        trainer.prune().expect("prune").is_empty(),
        "prune spares it too"
    );

    release_tx.send(()).expect("release");
    let first = watcher_thread.join().expect("watcher thread");
    // The watcher evaluated step 1 from intact files, then 5 and 6 (2..4 were pruned unseen or
    // were listed and then missed: never evaluated from a deleted directory).
    assert_eq!(first[0].step, 1);
    assert!(
        matches!(first[0].outcome, Outcome::Evaluated { .. }),
        "{:?}",
        first[0]
    );
    // Lease released: the next save prunes step 1.
    trainer.save(common::checkpoint(7)).expect("save 7");
    trainer.wait().expect("reapers");
    let steps: Vec<u64> = trainer.list().iter().map(|c| c.step).collect();
    assert_eq!(steps, [6, 7]);
    assert!(
        !ckpt1.exists(),
        "retention removed step 1 once its lease was gone"
    );

    let state =
        exptrack_eval::EvalState::load(&ckpt_dir.join(exp).join(exptrack_eval::STATE_FILE_NAME))
            .expect("state")
            .expect("exists");
    assert!(state.steps_with(RecordKind::Evaluated).contains(&1));
}

#[test]
fn checkpoint_pruned_before_its_turn_is_reported_missed_by_retention() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let exp = "missed";
    let mut trainer = common::trainer(&ckpt_dir, exp, Some(3));
    for step in 1..=3 {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    let trainer = std::sync::Mutex::new(trainer);
    let runs = tmp.path().join("runs");
    let tracker = common::eval_tracker(&runs, "eval");
    let mut watcher = EvalWatcher::builder(&ckpt_dir, exp)
        .poll_interval(Duration::from_millis(10))
        .dataset("valid", |c: &LoadedCheckpoint| {
            if c.step() == 1 {
                // Training races ahead while step 1 (leased) is evaluated: with keep-last 3,
                // saving 4..=6 prunes 2 and 3, which this poll has already listed.
                let mut t = trainer.lock().expect("trainer");
                for step in 4..=6 {
                    t.save(common::checkpoint(step)).expect("save");
                }
                t.wait().expect("reapers");
            }
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .tracker(&tracker)
        .build()
        .expect("watcher");
    let first = watcher.poll_once().expect("poll 1");
    let outcomes: Vec<(u64, bool)> = first
        .iter()
        .map(|e| (e.step, matches!(e.outcome, Outcome::MissedByRetention)))
        .collect();
    assert_eq!(outcomes, [(1, false), (2, true), (3, true)], "{first:?}");
    assert!(matches!(first[0].outcome, Outcome::Evaluated { .. }));
    let second = watcher.poll_once().expect("poll 2");
    assert_eq!(second.iter().map(|e| e.step).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(
        watcher.state().steps_with(RecordKind::MissedByRetention),
        [2, 3]
    );
    drop(watcher);
    tracker.flush().expect("flush");
    let counts = common::eval_event_counts(tracker.run_dir());
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [1, 4, 5, 6]);
    tracker.finish(RunStatus::Completed).expect("finish");
}

#[test]
fn failed_step_pruned_before_its_retry_is_missed_and_run_still_ends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let exp = "retry-pruned";
    let mut trainer = common::trainer(&ckpt_dir, exp, Some(2));
    trainer.save(common::checkpoint(1)).expect("save");
    let runs = tmp.path().join("runs");
    let tracker = common::eval_tracker(&runs, "eval");
    let mut watcher = EvalWatcher::builder(&ckpt_dir, exp)
        .poll_interval(Duration::from_millis(10))
        .dataset("valid", |c: &LoadedCheckpoint| {
            if c.step() == 1 {
                return Err(BoxError::from("transient failure"));
            }
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .tracker(&tracker)
        .build()
        .expect("watcher");
    let first = watcher.poll_once().expect("poll 1");
    assert!(matches!(
        first[0].outcome,
        Outcome::Retrying { attempt: 1, .. }
    ));
    // Retention prunes step 1 before its retry; then training completes.
    for step in 2..=3 {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    trainer
        .mark_completed(serde_json::json!({}))
        .expect("complete");
    let summary = watcher
        .run()
        .expect("run ends although step 1 never succeeded");
    let outcomes: Vec<(u64, bool)> = summary
        .steps
        .iter()
        .map(|e| (e.step, matches!(e.outcome, Outcome::MissedByRetention)))
        .collect();
    assert_eq!(outcomes, [(1, true), (2, false), (3, false)]);
    drop(watcher);
    tracker.finish(RunStatus::Completed).expect("finish");
}
