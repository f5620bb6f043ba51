//! Issue 15: the watcher takes the URL a checkpointer writes to, `s3://bucket/prefix/<experiment>`
//! (and `file://`), against a real S3 server (SeaweedFS, the checkpointer's test harness). It
//! evaluates every checkpoint committed to the bucket, holds its lease while evaluating (the
//! trainer's retention keeps the leased checkpoint and deletes the others), stops when training
//! is marked completed, and keeps its state file locally in the tracker's run directory (the
//! checkpoint location is no directory to write into).
//!
//! Needs this crate's `s3` feature (scripts/test.sh enables it) and the `weed` binary of the peer
//! venv: without it the test prints "skipping: ..." unless `CI=true`, where it fails.

mod common;
#[path = "../../checkpointer/tests/common/seaweed.rs"]
mod seaweed;

use std::sync::mpsc;
use std::time::Duration;

use exptrack_checkpoint::{CheckpointConfig, LoadedCheckpoint, ModelCheckpointer};
use exptrack_core::RunStatus;
use exptrack_eval::{BoxError, EvalState, EvalWatcher, Outcome, RecordKind};

#[test]
fn watcher_evaluates_checkpoints_in_s3_and_its_lease_survives_retention() {
    let Some(weed) = seaweed::Weed::start() else {
        return;
    };
    // Before any checkpointer reads the environment (process-wide; this is the file's only S3
    // test).
    weed.export_env();
    let tmp = tempfile::tempdir().expect("tempdir");
    let exp = "s3-watch";
    let url = format!("{}/{exp}", weed.url("runs/ckpt"));
    let config = CheckpointConfig {
        max_checkpoints: Some(2),
        ..CheckpointConfig::default()
    };
    let mut trainer = ModelCheckpointer::open_url(&url, config, false).expect("trainer opens S3");
    assert!(trainer.is_remote());
    trainer.save(common::checkpoint(1)).expect("save 1");

    let (started_tx, started_rx) = mpsc::channel::<u64>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let runs = tmp.path().join("runs");
    let watch_url = url.clone();
    let watcher_thread = std::thread::spawn(move || {
        let tracker = common::eval_tracker(&runs, "eval");
        let run_dir = tracker.run_dir().to_path_buf();
        let mut watcher = EvalWatcher::builder_url(&watch_url)
            .poll_interval(Duration::from_millis(20))
            .dataset("valid", move |c: &LoadedCheckpoint| {
                if c.step() == 1 {
                    started_tx.send(c.step()).map_err(BoxError::from)?;
                    // Blocks (holding the lease on step 1) until the test lets it go.
                    release_rx.recv().map_err(BoxError::from)?;
                }
                let metrics = common::fake_eval(c, 0.0).map_err(BoxError::from);
                done_tx.send(c.step()).map_err(BoxError::from)?;
                metrics
            })
            .tracker(&tracker)
            .build()
            .expect("watcher on an s3:// URL");
        let state_path = watcher.state_path().to_path_buf();
        let summary = watcher.run().expect("run");
        drop(watcher);
        tracker.finish(RunStatus::Completed).expect("finish");
        (summary, state_path, run_dir)
    });

    assert_eq!(started_rx.recv_timeout(Duration::from_secs(60)), Ok(1));
    // While step 1 is under evaluation the trainer saves 2..=5 keeping the last two.
    for step in 2..=5 {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    trainer.wait().expect("retention");
    let kept: Vec<u64> = trainer.list().iter().map(|c| c.step).collect();
    assert_eq!(
        kept,
        [1, 4, 5],
        "the leased step 1 is kept beside the last two"
    );
    assert!(
        trainer.prune().expect("prune").is_empty(),
        "prune spares it"
    );
    trainer
        .verify(1)
        .expect("the leased checkpoint is intact in the bucket");

    release_tx.send(()).expect("release");
    // Wait until the watcher has evaluated step 5, then save one more and complete.
    loop {
        let step = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the watcher evaluates the checkpoints after step 1");
        if step == 5 {
            break;
        }
    }
    trainer.save(common::checkpoint(6)).expect("save 6");
    trainer.wait().expect("retention");
    trainer
        .mark_completed(serde_json::json!({"final": 6}))
        .expect("complete");
    let (summary, state_path, run_dir) = watcher_thread.join().expect("watcher thread");

    // Lease released: retention removed step 1 once newer saves came.
    let kept: Vec<u64> = trainer.list().iter().map(|c| c.step).collect();
    assert_eq!(kept, [5, 6]);
    let evaluated = summary.evaluated_steps();
    assert_eq!(evaluated.first(), Some(&1));
    assert!(evaluated.ends_with(&[5, 6]), "{evaluated:?}");
    assert!(
        summary.steps.iter().all(|e| matches!(
            e.outcome,
            Outcome::Evaluated { .. } | Outcome::MissedByRetention
        )),
        "{:?}",
        summary.steps
    );
    // Every checkpoint is accounted for: evaluated, or counted as removed before evaluation.
    assert_eq!(
        evaluated.len() as u64 + summary.removed_before_evaluation(),
        6,
        "{}",
        summary.describe()
    );

    // The state file is local, in the tracker's run directory; no `s3:` directory was created.
    assert_eq!(state_path, run_dir.join(format!("eval-state-{exp}.json")));
    let state = EvalState::load(&state_path)
        .expect("state")
        .expect("exists");
    assert_eq!(state.steps_with(RecordKind::Evaluated), evaluated);
    assert!(!std::path::Path::new("s3:").exists());
    assert!(!run_dir.join("s3:").exists());
    let logged = common::eval_event_counts(&common::run_dir(&tmp.path().join("runs"), "eval"));
    assert_eq!(
        logged.keys().copied().collect::<Vec<_>>(),
        evaluated,
        "each evaluated step is logged"
    );
    assert!(
        logged.values().all(|per| per["valid"] == 1),
        "once: {logged:?}"
    );
}

#[test]
fn watcher_takes_a_file_url_and_refuses_a_url_without_an_experiment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let exp = "file-watch";
    let mut trainer = common::trainer(&ckpt_dir, exp, None);
    for step in [10, 20] {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    trainer
        .mark_completed(serde_json::json!({}))
        .expect("complete");

    let tracker = common::eval_tracker(&tmp.path().join("runs"), "eval");
    let url = format!("file://{}/{exp}", ckpt_dir.display());
    let mut watcher = EvalWatcher::builder_url(&url)
        .poll_interval(Duration::from_millis(10))
        .dataset("valid", |c: &LoadedCheckpoint| {
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .tracker(&tracker)
        .build()
        .expect("watcher on a file:// URL");
    // A local location keeps its state beside the checkpoints, as with a path.
    assert_eq!(
        watcher.state_path(),
        ckpt_dir.join(exp).join(exptrack_eval::STATE_FILE_NAME)
    );
    assert_eq!(watcher.run().expect("run").evaluated_steps(), [10, 20]);
    drop(watcher);

    for bad in ["s3://bucket", "file://"] {
        let refused = EvalWatcher::builder_url(bad)
            .dataset("valid", |c: &LoadedCheckpoint| {
                common::fake_eval(c, 0.0).map_err(BoxError::from)
            })
            .tracker(&tracker)
            .build();
        assert!(
            matches!(refused, Err(exptrack_eval::Error::Checkpoint { .. })),
            "{bad}: {refused:?}"
        );
    }
    tracker.finish(RunStatus::Completed).expect("finish");
}
