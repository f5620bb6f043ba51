//! `Tracker::resume_point`: after a crash a tracker may hold events past its cursor; the live
//! dispatcher and `sync_run` both replay from `max(cursor, resume_point)`, clamped to the log.

mod common;

use common::{Behaviour, TestTracker};
use exptrack_core::store::{read_cursors, write_cursors};
use exptrack_core::{ExperimentConfig, ExperimentTracker, Resume, RunStatus};

fn builder(dir: &std::path::Path) -> exptrack_core::ExperimentTrackerBuilder {
    ExperimentTracker::builder(ExperimentConfig::named("resume-point"))
        .runs_dir(dir)
        .handle_signals(false)
        .collect_system_info(false)
}

/// A failed run of 10 metric events (seq 1..=10, status 11) whose cursor for "rec" lags at 3,
/// as after a kill between the tracker's writes and the next cursor save.
fn lagging_run(root: &std::path::Path) -> std::path::PathBuf {
    let (rec, _) = TestTracker::new("rec", Behaviour::default());
    let t = builder(root).with_tracker(Box::new(rec)).build().unwrap();
    for step in 0..10 {
        t.log_metric(step, "a", step as f64).unwrap();
    }
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Failed).unwrap();
    let mut cursors = read_cursors(&dir).unwrap();
    assert_eq!(cursors["rec"], 11);
    cursors.insert("rec".into(), 3);
    write_cursors(&dir, &cursors).unwrap();
    dir
}

fn resume_with(root: &std::path::Path, resume_point: Option<u64>) -> Vec<u64> {
    let (rec, seen) = TestTracker::new(
        "rec",
        Behaviour {
            resume_point,
            ..Behaviour::default()
        },
    );
    let t = builder(root)
        .with_tracker(Box::new(rec))
        .resume(Resume::LatestUnfinished)
        .skip_relogged_metrics(false)
        .build()
        .unwrap();
    t.log_metric(10, "a", 10.0).unwrap();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    seen.lock()
        .unwrap()
        .events
        .iter()
        .map(|(s, _)| *s)
        .collect()
}

#[test]
fn the_live_replay_starts_after_what_the_tracker_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lagging_run(tmp.path());
    // It holds everything the old process wrote: only the new events come.
    assert_eq!(resume_with(tmp.path(), Some(11)), vec![12, 13]);
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 13);
}

#[test]
fn without_a_resume_point_the_cursor_decides() {
    let tmp = tempfile::tempdir().unwrap();
    lagging_run(tmp.path());
    assert_eq!(
        resume_with(tmp.path(), None),
        (4..=13).collect::<Vec<_>>(),
        "at least once: 4..=11 again"
    );
}

#[test]
fn a_resume_point_behind_the_cursor_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    lagging_run(tmp.path());
    assert_eq!(
        resume_with(tmp.path(), Some(1)),
        (4..=13).collect::<Vec<_>>()
    );
}

#[test]
fn a_resume_point_past_the_log_is_clamped_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lagging_run(tmp.path());
    // Claims events the log never had (its tail was lost): new events that reuse those numbers
    // must still be delivered.
    assert_eq!(resume_with(tmp.path(), Some(1000)), vec![12, 13]);
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 13);
}

#[test]
fn sync_run_starts_after_what_the_tracker_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lagging_run(tmp.path());
    let (mut rec, seen) = TestTracker::new(
        "rec",
        Behaviour {
            resume_point: Some(8),
            ..Behaviour::default()
        },
    );
    let r = exptrack_core::sync_run(&dir, &mut rec).unwrap();
    assert_eq!((r.from_seq, r.to_seq, r.delivered), (8, 11, 3));
    let seqs: Vec<u64> = seen
        .lock()
        .unwrap()
        .events
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs, vec![9, 10, 11]);
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 11);

    // Past the log: clamped, nothing to send, the cursor moves to the log's end.
    let mut cursors = read_cursors(&dir).unwrap();
    cursors.insert("rec".into(), 2);
    write_cursors(&dir, &cursors).unwrap();
    let (mut rec, seen) = TestTracker::new(
        "rec",
        Behaviour {
            resume_point: Some(500),
            ..Behaviour::default()
        },
    );
    let r = exptrack_core::sync_run(&dir, &mut rec).unwrap();
    assert_eq!((r.from_seq, r.to_seq, r.delivered), (11, 11, 0));
    assert!(seen.lock().unwrap().events.is_empty());
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 11);
}

#[test]
fn sync_run_clamps_a_cursor_past_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lagging_run(tmp.path());
    let mut cursors = read_cursors(&dir).unwrap();
    cursors.insert("rec".into(), 99);
    write_cursors(&dir, &cursors).unwrap();
    let (mut rec, _) = TestTracker::new("rec", Behaviour::default());
    let r = exptrack_core::sync_run(&dir, &mut rec).unwrap();
    assert_eq!((r.from_seq, r.to_seq), (11, 11));
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 11, "clamped on disk");
}
