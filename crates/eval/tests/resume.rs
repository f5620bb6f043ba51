//! Restart and resume: the state file is respected (nothing re-evaluated), a second watcher on
//! the same state file is refused, and completion stops `run`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_core::RunStatus;
use exptrack_eval::{BoxError, Error, EvalWatcher, Outcome, RecordKind, StopReason};

type Calls = Arc<Mutex<Vec<(u64, &'static str)>>>;

fn watcher<'t>(
    ckpt_dir: &std::path::Path,
    exp: &str,
    tracker: &'t exptrack_core::ExperimentTracker,
    calls: &Calls,
) -> exptrack_eval::Result<EvalWatcher<'t>> {
    let valid = Arc::clone(calls);
    let ood = Arc::clone(calls);
    EvalWatcher::builder(ckpt_dir, exp)
        .poll_interval(Duration::from_millis(10))
        .dataset("valid", move |c: &LoadedCheckpoint| {
            valid.lock().expect("calls").push((c.step(), "valid"));
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .dataset("ood", move |c: &LoadedCheckpoint| {
            ood.lock().expect("calls").push((c.step(), "ood"));
            common::fake_eval(c, 0.3).map_err(BoxError::from)
        })
        .tracker(tracker)
        .build()
}

#[test]
fn restart_resumes_from_the_state_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let runs = tmp.path().join("runs");
    let exp = "resume";
    let mut trainer = common::trainer(&ckpt_dir, exp, None);
    for step in [10, 20, 30] {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    let calls: Calls = Arc::default();

    // First watcher: evaluates 10..30, then stops (process restart simulated by drop).
    let tracker = common::eval_tracker(&runs, "eval");
    {
        let mut w = watcher(&ckpt_dir, exp, &tracker, &calls).expect("watcher 1");
        // A second watcher on the same state file is refused while the first lives.
        let second = watcher(&ckpt_dir, exp, &tracker, &calls);
        assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
        let got = w.poll_once().expect("poll");
        let steps: Vec<u64> = got.iter().map(|e| e.step).collect();
        assert_eq!(steps, [10, 20, 30]);
        if let Outcome::Evaluated { metrics } = &got[0].outcome {
            let keys: Vec<&str> = metrics.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "eval/ood/accuracy",
                    "eval/ood/entropy",
                    "eval/ood/loss",
                    "eval/valid/accuracy",
                    "eval/valid/entropy",
                    "eval/valid/loss"
                ]
            );
            assert_eq!(got[0].epoch, Some(1));
        } else {
            panic!("{:?}", got[0]);
        }
    }
    tracker.finish(RunStatus::Completed).expect("finish 1");

    for step in [40, 50] {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    trainer
        .mark_completed(serde_json::json!({}))
        .expect("complete");

    // Second watcher, new tracker on the same run: only 40 and 50 are new.
    let tracker = common::eval_tracker(&runs, "eval");
    let mut w = watcher(&ckpt_dir, exp, &tracker, &calls).expect("watcher 2");
    assert!(w.recovered().is_empty());
    assert!(w.training_completed());
    let t = Instant::now();
    let summary = w.run().expect("run");
    assert_eq!(summary.reason, StopReason::TrainingCompleted);
    assert_eq!(summary.evaluated_steps(), [40, 50]);
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(w);
    tracker.flush().expect("flush");
    let counts = common::eval_event_counts(tracker.run_dir());
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [10, 20, 30, 40, 50]
    );
    assert!(counts.values().all(|c| c["valid"] == 1 && c["ood"] == 1));
    tracker.finish(RunStatus::Completed).expect("finish 2");

    let calls = calls.lock().expect("calls");
    for step in [10, 20, 30, 40, 50] {
        assert_eq!(
            calls.iter().filter(|(s, _)| *s == step).count(),
            2,
            "step {step}"
        );
    }

    // A third watcher logging to a *new* run still evaluates nothing again.
    let tracker = common::eval_tracker(&runs, "eval-2");
    let calls2: Calls = Arc::default();
    let mut w = watcher(&ckpt_dir, exp, &tracker, &calls2).expect("watcher 3");
    assert!(w.poll_once().expect("poll").is_empty());
    assert_eq!(w.state().steps_with(RecordKind::Evaluated).len(), 5);
    assert_eq!(w.state().runs.len(), 2);
    drop(w);
    assert!(calls2.lock().expect("calls").is_empty());
    tracker.finish(RunStatus::Completed).expect("finish 3");
}

#[test]
fn stop_flag_ends_run_and_failing_evaluator_is_retried_then_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let runs = tmp.path().join("runs");
    let exp = "stop";
    let mut trainer = common::trainer(&ckpt_dir, exp, None);
    trainer.save(common::checkpoint(1)).expect("save");
    trainer.save(common::checkpoint(2)).expect("save");
    let tracker = common::eval_tracker(&runs, "eval");
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let mut w = EvalWatcher::builder(&ckpt_dir, exp)
        .poll_interval(Duration::from_millis(10))
        .max_attempts(2)
        .dataset("valid", move |c: &LoadedCheckpoint| {
            if c.step() == 1 {
                a.fetch_add(1, Ordering::SeqCst);
                if a.load(Ordering::SeqCst) == 1 {
                    return Err(BoxError::from("device lost"));
                }
                panic!("evaluator bug");
            }
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .tracker(&tracker)
        .build()
        .expect("watcher");
    let first = w.poll_once().expect("poll 1");
    assert!(
        matches!(&first[0].outcome, Outcome::Retrying { attempt: 1, reason } if reason.contains("device lost")),
        "{first:?}"
    );
    assert!(matches!(first[1].outcome, Outcome::Evaluated { .. }));
    let second = w.poll_once().expect("poll 2");
    assert!(
        matches!(&second[0].outcome, Outcome::Failed { attempts: 2, reason } if reason.contains("evaluator bug")),
        "{second:?}"
    );
    assert!(w.poll_once().expect("poll 3").is_empty());
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    // Not completed: run_until returns only when the flag is set.
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s.store(true, Ordering::SeqCst);
    });
    let t = Instant::now();
    let summary = w.run_until(&stop).expect("run");
    setter.join().expect("setter");
    assert_eq!(summary.reason, StopReason::Stopped);
    assert!(t.elapsed() >= Duration::from_millis(90));
    assert!(t.elapsed() < Duration::from_secs(3));
    drop(w);
    tracker.finish(RunStatus::Completed).expect("finish");
}

#[test]
fn builder_rejects_bad_configuration() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tracker = common::eval_tracker(&tmp.path().join("runs"), "eval");
    let ok = |_: &LoadedCheckpoint| Ok::<_, BoxError>([("accuracy", 1.0)]);
    let cases = [
        EvalWatcher::builder(tmp.path(), "x")
            .tracker(&tracker)
            .build()
            .err(),
        EvalWatcher::builder(tmp.path(), "x")
            .dataset("valid", ok)
            .build()
            .err(),
        EvalWatcher::builder(tmp.path(), "x")
            .dataset("a/b", ok)
            .tracker(&tracker)
            .build()
            .err(),
        EvalWatcher::builder(tmp.path(), "x")
            .dataset("v", ok)
            .dataset("v", ok)
            .tracker(&tracker)
            .build()
            .err(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(matches!(c, Some(Error::Config { .. })), "case {i}: {c:?}");
    }
    drop(cases);
    tracker.finish(RunStatus::Completed).expect("finish");
}
