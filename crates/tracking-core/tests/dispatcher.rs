//! The dispatcher: isolation, ordering, completeness, spool replay and the run guard.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, TestTracker, metric_points};
use exptrack_core::store::RunReader;
use exptrack_core::{Event, EventKind, ExperimentConfig, ExperimentTracker, RunStatus};

fn builder(dir: &std::path::Path) -> exptrack_core::ExperimentTrackerBuilder {
    ExperimentTracker::builder(ExperimentConfig::named("dispatch-test"))
        .runs_dir(dir)
        .handle_signals(false)
        .collect_system_info(false)
}

#[test]
fn every_backend_gets_every_event_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen_a) = TestTracker::new("a", Behaviour::default());
    let (b, seen_b) = TestTracker::new("b", Behaviour::default());
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .with_tracker(Box::new(b))
        .build()
        .unwrap();
    for step in 0..1000u64 {
        t.log_metrics(
            step,
            &[("loss", step as f64), ("acc", 1.0 / (step + 1) as f64)],
        )
        .unwrap();
    }
    let run_dir = t.run_dir().to_path_buf();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    for seen in [&seen_a, &seen_b] {
        let s = seen.lock().unwrap();
        assert_eq!(s.opened, 1);
        assert_eq!(s.closed, Some(RunStatus::Completed));
        let pts = metric_points(&s.events);
        assert_eq!(pts.len(), 2000);
        for (i, (step, key, v)) in pts.iter().enumerate() {
            let expected_step = (i / 2) as u64;
            assert_eq!(*step, expected_step);
            if i % 2 == 0 {
                assert_eq!(key, "loss");
                assert_eq!(*v, expected_step as f64);
            }
        }
        // Sequence numbers are consecutive from 1.
        for (i, (seq, _)) in s.events.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
        }
    }
    let reader = RunReader::open(&run_dir).unwrap();
    assert_eq!(reader.metadata().unwrap().status, RunStatus::Completed);
    let cursors = reader.cursors().unwrap();
    assert_eq!(cursors.get("a"), Some(&1001));
    assert_eq!(cursors.get("b"), Some(&1001));
    let summary = reader.summary().unwrap();
    assert_eq!(summary["loss"].last, 999.0);
    assert_eq!(summary["loss"].min, 0.0);
    assert_eq!(summary["loss"].max, 999.0);
    assert_eq!(summary["loss"].count, 1000);
    let results = reader
        .results()
        .unwrap()
        .expect("results.json for a completed run");
    assert!(results.completed);
    assert_eq!(results.history["loss"].values.len(), 1000);
    assert_eq!(results.final_metrics["loss"], serde_json::json!(999.0));
}

#[test]
fn slow_or_panicking_backend_does_not_delay_others_or_the_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let (fast, seen_fast) = TestTracker::new("fast", Behaviour::default());
    let (slow, seen_slow) = TestTracker::new(
        "slow",
        Behaviour {
            sleep_each: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    );
    let (bad, seen_bad) = TestTracker::new(
        "panicky",
        Behaviour {
            panic: true,
            ..Default::default()
        },
    );
    let t = builder(tmp.path())
        .with_tracker(Box::new(slow))
        .with_tracker(Box::new(bad))
        .with_tracker(Box::new(fast))
        .finish_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for step in 0..200u64 {
        let t0 = Instant::now();
        t.log_metrics(step, &[("x", step as f64)]).unwrap();
        worst = worst.max(t0.elapsed());
        if step % 50 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The caller never waited for the 5 s backend (a generous bound for a loaded CI machine).
    assert!(worst < Duration::from_millis(500), "a call took {worst:?}");
    // The fast backend has everything long before the slow one could have.
    let t0 = Instant::now();
    loop {
        if metric_points(&seen_fast.lock().unwrap().events).len() == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "fast backend starved by the slow one"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    let fast_r = report.trackers.iter().find(|b| b.name == "fast").unwrap();
    assert!(fast_r.complete, "{report}");
    assert_eq!(seen_fast.lock().unwrap().closed, Some(RunStatus::Completed));
    let bad_r = report
        .trackers
        .iter()
        .find(|b| b.name == "panicky")
        .unwrap();
    assert!(!bad_r.complete);
    assert!(
        bad_r.errors.iter().any(|e| e.contains("panicked")),
        "{report}"
    );
    assert!(seen_bad.lock().unwrap().events.is_empty());
    let slow_r = report.trackers.iter().find(|b| b.name == "slow").unwrap();
    assert!(
        !slow_r.complete,
        "the slow backend cannot have caught up: {report}"
    );
    assert!(seen_slow.lock().unwrap().events.len() < 200);
    // The report tells the user how to sync what is left.
    assert!(report.to_string().contains("exptrack sync"), "{report}");
}

#[test]
fn failing_and_hanging_backend_is_replayed_exactly_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (flaky, seen) = TestTracker::new(
        "flaky",
        Behaviour {
            fail_first: 4,
            hang_on_call: Some((6, Duration::from_millis(1500))),
            fail_open: 2,
            ..Default::default()
        },
    );
    let t = builder(tmp.path())
        .with_tracker(Box::new(flaky))
        .finish_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let n = 20_000u64;
    for step in 0..n {
        t.log_metrics(step, &[("v", step as f64)]).unwrap();
        if step % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let s = seen.lock().unwrap();
    assert!(
        s.write_calls > 6,
        "the failures and the hang were exercised"
    );
    let pts = metric_points(&s.events);
    assert_eq!(pts.len() as u64, n, "every metric exactly once");
    for (i, (step, _, v)) in pts.iter().enumerate() {
        assert_eq!(*step, i as u64);
        assert_eq!(*v, i as f64);
    }
    let seqs: Vec<u64> = s.events.iter().map(|(q, _)| *q).collect();
    let expected: Vec<u64> = (1..=n + 1).collect();
    assert_eq!(seqs, expected, "events in order, none twice, status last");
    assert!(matches!(
        s.events.last(),
        Some((
            _,
            Event::Status {
                status: RunStatus::Completed,
                ..
            }
        ))
    ));
}

#[test]
fn a_burst_of_a_million_events_arrives_complete_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen) = TestTracker::new("count", Behaviour::default());
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .queue_capacity(8192)
        .finish_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let run_dir = t.run_dir().to_path_buf();
    let n = 1_000_000u64;
    for step in 0..n {
        t.log_metrics(step, &[("m", step as f64)]).unwrap();
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.last_seq, n + 1);
    let s = seen.lock().unwrap();
    assert_eq!(s.events.len() as u64, n + 1);
    for (i, (seq, e)) in s.events.iter().take(n as usize).enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        match e {
            Event::Metrics { step, values, .. } => {
                assert_eq!(*step, i as u64);
                assert_eq!(values[0].value, i as f64);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(s);
    // The local store has them all too.
    let events = RunReader::open(&run_dir).unwrap().events().unwrap();
    assert_eq!(events.len() as u64, n + 1);
    assert_eq!(events[n as usize - 1].0, n);
}

#[test]
fn dropping_without_finish_marks_the_run_failed_even_on_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen) = TestTracker::new("a", Behaviour::default());
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .build()
        .unwrap();
    let run_dir = t.run_dir().to_path_buf();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        t.log_metrics(1, &[("loss", 1.0)]).unwrap();
        panic!("training blew up");
    }));
    assert!(res.is_err());
    let meta = RunReader::open(&run_dir).unwrap().metadata().unwrap();
    assert_eq!(meta.status, RunStatus::Failed);
    assert!(meta.end_time.is_some());
    let s = seen.lock().unwrap();
    assert_eq!(s.closed, Some(RunStatus::Failed));
    assert_eq!(metric_points(&s.events).len(), 1, "flushed before closing");
    // No results.json for a failed run.
    assert!(
        RunReader::open(&run_dir)
            .unwrap()
            .results()
            .unwrap()
            .is_none()
    );
}

#[test]
fn unsupported_kinds_are_skipped_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen) = TestTracker::new(
        "metrics-only",
        Behaviour {
            kinds: Some(vec![EventKind::Metrics, EventKind::Status]),
            ..Default::default()
        },
    );
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .build()
        .unwrap();
    for i in 0..10 {
        t.log_text(i, "note", "hello").unwrap();
        t.log_metrics(i, &[("x", 1.0)]).unwrap();
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let s = seen.lock().unwrap();
    assert_eq!(metric_points(&s.events).len(), 10);
    assert!(s.events.iter().all(|(_, e)| e.kind() != EventKind::Text));
}

#[test]
fn flush_is_a_barrier() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen) = TestTracker::new(
        "a",
        Behaviour {
            sleep_each: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    );
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .build()
        .unwrap();
    for i in 0..100 {
        t.log_metrics(i, &[("x", i as f64)]).unwrap();
    }
    t.flush().unwrap();
    {
        let s = seen.lock().unwrap();
        assert_eq!(metric_points(&s.events).len(), 100);
        assert!(s.flushes >= 1);
    }
    t.finish(RunStatus::Completed).unwrap();
}

#[test]
fn resume_continues_the_same_run_and_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let t = builder(tmp.path()).build().unwrap();
    let first_dir = t.run_dir().to_path_buf();
    t.log_metrics(0, &[("x", 0.0)]).unwrap();
    drop(t); // marked failed
    let t = builder(tmp.path())
        .resume(exptrack_core::Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(t.run_dir(), first_dir);
    t.log_metrics(1, &[("x", 1.0)]).unwrap();
    t.finish(RunStatus::Completed).unwrap();
    let events = RunReader::open(&first_dir).unwrap().events().unwrap();
    let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "metric, failed status, metric, completed status"
    );
    // A completed run is not resumed by LatestUnfinished: a new run starts.
    let t = builder(tmp.path())
        .resume(exptrack_core::Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_ne!(t.run_dir(), first_dir);
    t.finish(RunStatus::Completed).unwrap();
}

#[test]
fn sync_run_replays_from_the_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let t = builder(tmp.path()).build().unwrap();
    for i in 0..2500 {
        t.log_metrics(i, &[("x", i as f64)]).unwrap();
    }
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    let (mut late, seen) = TestTracker::new("late", Behaviour::default());
    let r = exptrack_core::sync_run(&dir, &mut late).unwrap();
    assert_eq!(r.delivered, 2501);
    assert!(r.closed);
    assert_eq!(metric_points(&seen.lock().unwrap().events).len(), 2500);
    // Nothing more to send the second time.
    let (mut again, seen2) = TestTracker::new("late", Behaviour::default());
    let r = exptrack_core::sync_run(&dir, &mut again).unwrap();
    assert_eq!(r.delivered, 0);
    assert!(seen2.lock().unwrap().events.is_empty());
}

#[test]
fn the_cursor_only_advances_when_the_tracker_has_flushed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, seen) = TestTracker::new("buffered", Behaviour::default());
    let t = builder(tmp.path())
        .with_tracker(Box::new(a))
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..10 {
        t.log_metrics(i, &[("x", i as f64)]).unwrap();
    }
    // Written but not flushed: after the dispatcher's 1 s cursor tick the cursor is still 0.
    let t0 = Instant::now();
    while metric_points(&seen.lock().unwrap().events).len() < 10 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1600));
    let cursors = RunReader::open(t.run_dir()).unwrap().cursors().unwrap();
    assert_eq!(
        cursors.get("buffered").copied().unwrap_or(0),
        0,
        "{cursors:?}"
    );
    t.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    let cursors = RunReader::open(t.run_dir()).unwrap().cursors().unwrap();
    assert_eq!(cursors.get("buffered").copied(), Some(10));
    t.finish(RunStatus::Completed).unwrap();
}

/// A tracker whose writes block until its canceller is called.
struct Blocking(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl exptrack_core::Tracker for Blocking {
    fn name(&self) -> &str {
        "blocking"
    }
    fn supports(&self, _: EventKind) -> bool {
        true
    }
    fn open(&mut self, _: &exptrack_core::RunContext) -> Result<(), exptrack_core::TrackerError> {
        Ok(())
    }
    fn write(&mut self, _: &exptrack_core::Batch<'_>) -> Result<(), exptrack_core::TrackerError> {
        let t0 = Instant::now();
        while !self.0.load(std::sync::atomic::Ordering::SeqCst) {
            if t0.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(exptrack_core::TrackerError::transient("cancelled"))
    }
    fn flush(&mut self) -> Result<(), exptrack_core::TrackerError> {
        Ok(())
    }
    fn close(&mut self, _: RunStatus) -> Result<(), exptrack_core::TrackerError> {
        Ok(())
    }
    fn canceller(&self) -> Option<exptrack_core::Canceller> {
        let flag = std::sync::Arc::clone(&self.0);
        Some(Box::new(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        }))
    }
}

#[test]
fn finish_cancels_a_blocked_tracker_at_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = builder(tmp.path())
        .with_tracker(Box::new(Blocking(std::sync::Arc::clone(&flag))))
        .finish_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    t.log_metrics(1, &[("x", 1.0)]).unwrap();
    let t0 = Instant::now();
    let report = t.finish(RunStatus::Completed).unwrap();
    let took = t0.elapsed();
    assert!(
        flag.load(std::sync::atomic::Ordering::SeqCst),
        "canceller called"
    );
    let b = &report.trackers[0];
    assert!(!b.complete);
    assert!(
        !b.errors.iter().any(|e| e.contains("hung")),
        "the worker answered after cancellation: {report}"
    );
    assert!(took < Duration::from_millis(2000), "finish took {took:?}");
}

#[test]
fn an_open_run_is_never_resumed_by_a_second_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let first = builder(tmp.path()).build().unwrap();
    first.log_metrics(0, &[("x", 0.0)]).unwrap();
    // LatestUnfinished skips the run that is still open (it is "running", not resumable)...
    let second = builder(tmp.path())
        .resume(exptrack_core::Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_ne!(second.run_dir(), first.run_dir());
    // ...and naming it explicitly is a clear error instead of two writers on one log.
    let run_id = first.metadata().run_id.clone();
    let err = builder(tmp.path())
        .resume(exptrack_core::Resume::RunId(run_id))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("open in another process"), "{err}");
    let first_dir = first.run_dir().to_path_buf();
    first.finish(RunStatus::Failed).unwrap();
    second.finish(RunStatus::Completed).unwrap();
    // Once closed, it can be resumed.
    let third = builder(tmp.path())
        .resume(exptrack_core::Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(third.run_dir(), first_dir);
    third.finish(RunStatus::Completed).unwrap();
}

/// A training loop resumed from its last checkpoint replays the steps logged before the
/// interruption: those points are dropped (each key by its own last step), later ones and keys
/// first seen at a replayed step go through, and every backend and the local log get each
/// (key, step) once. With the option off, the replayed points are kept.
#[test]
fn resumed_run_drops_metrics_replayed_after_a_crash() {
    for skip in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let t = builder(tmp.path()).build().unwrap();
        for step in 0..=10 {
            t.log_metrics(step, &[("train/loss", step as f64)]).unwrap();
        }
        t.log_metrics(5, &[("val/loss", 0.5)]).unwrap();
        let dir = t.run_dir().to_path_buf();
        drop(t); // the crash: marked failed

        let (tracker, seen) = TestTracker::new("backend", Behaviour::default());
        let t = builder(tmp.path())
            .with_tracker(Box::new(tracker))
            .resume(exptrack_core::Resume::LatestUnfinished)
            .skip_relogged_metrics(skip)
            .build()
            .unwrap();
        assert_eq!(t.run_dir(), dir);
        // The replay from the checkpoint at step 6, then new steps.
        for step in 6..=15 {
            t.log_metrics(step, &[("train/loss", step as f64), ("train/lr", 0.1)])
                .unwrap();
            if step % 5 == 0 {
                t.log_event(exptrack_core::Event::Metrics {
                    step,
                    timestamp_ms: 0,
                    values: vec![exptrack_core::Metric::new("val/loss", step as f64 / 10.0)],
                })
                .unwrap();
            }
        }
        t.finish(RunStatus::Completed).unwrap();

        let mut in_log: Vec<(String, u64)> = Vec::new();
        for (_, e) in RunReader::open(&dir).unwrap().events().unwrap() {
            if let exptrack_core::Event::Metrics { step, values, .. } = e {
                in_log.extend(values.into_iter().map(|m| (m.key, step)));
            }
        }
        let count =
            |key: &str, step: u64| in_log.iter().filter(|p| **p == (key.into(), step)).count();
        for step in 0..=15 {
            let replayed = (6..=10).contains(&step);
            let want = if replayed && !skip { 2 } else { 1 };
            assert_eq!(
                count("train/loss", step),
                want,
                "train/loss@{step} skip={skip}"
            );
        }
        // train/lr was never logged before: every step of it goes through.
        for step in 6..=15 {
            assert_eq!(count("train/lr", step), 1, "train/lr@{step}");
        }
        // val/loss had only step 5 before; 10 and 15 are new for it.
        assert_eq!(count("val/loss", 5), 1);
        assert_eq!(count("val/loss", 10), 1);
        assert_eq!(count("val/loss", 15), 1);

        // The backend (a fresh tracker, replayed from the log) sees the same multiset.
        let mut backend: Vec<(String, u64)> = metric_points(&seen.lock().unwrap().events)
            .into_iter()
            .map(|(s, k, _)| (k, s))
            .collect();
        backend.sort();
        in_log.sort();
        assert_eq!(backend, in_log, "skip={skip}");
    }
}

/// `sync_log` is a barrier on the local store alone: when it returns, everything logged before it
/// is in `events.jsonl`, even while a tracker is stuck (so a checkpoint committed after it never
/// outlives the metrics logged before it).
#[test]
fn sync_log_puts_everything_before_it_in_the_log_without_waiting_for_trackers() {
    let tmp = tempfile::tempdir().unwrap();
    let (slow, _seen) = TestTracker::new(
        "stuck",
        Behaviour {
            sleep_each: Some(Duration::from_secs(3)),
            ..Behaviour::default()
        },
    );
    let t = builder(tmp.path())
        .with_tracker(Box::new(slow))
        .build()
        .unwrap();
    for step in 1..=500u64 {
        t.log_metrics(step, &[("loss", step as f64)]).unwrap();
    }
    let started = Instant::now();
    t.sync_log().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "sync_log waited for a tracker: {:?}",
        started.elapsed()
    );
    let logged = std::fs::read_to_string(t.run_dir().join("events.jsonl")).unwrap();
    let steps: Vec<u64> = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "metrics")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=500).collect::<Vec<_>>());
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
}
