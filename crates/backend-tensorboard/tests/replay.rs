//! Issue 12: a run killed (SIGKILL) after TensorBoard wrote events past its cursor in
//! `cursors.json`, then resumed, shows every step exactly once — read back with our reader, with
//! tensorboard's own event file loader (storage order, so duplicates show) and with its
//! `EventAccumulator`.
//!
//! Before the fix, the resumed run replayed every event after the cursor, and TensorBoard held
//! steps 10..20 twice.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use exptrack_core::store::{RunReader, read_cursors};
use exptrack_core::{ExperimentConfig, ExperimentTracker, Resume, RunStatus};
use exptrack_tensorboard::proto::event::What;
use exptrack_tensorboard::proto::summary::value::Value as V;
use exptrack_tensorboard::{TensorBoardTracker, event_files, read_event_file};

use common::{KillOnDrop, peer_python, run_python_json};

const CHILD: &str = "EXPTRACK_TEST_TB_REPLAY_CHILD";
/// Steps logged before the flush (acknowledged in `cursors.json`).
const FLUSHED: u64 = 10;
/// Steps logged after it (in the event file, not in the cursor) before the kill.
const UNFLUSHED: u64 = 10;
/// Steps logged by the resumed run.
const RESUMED: u64 = 5;

fn builder(root: &Path) -> exptrack_core::ExperimentTrackerBuilder {
    ExperimentTracker::builder(ExperimentConfig::named("tb-replay"))
        .runs_dir(root)
        .collect_system_info(false)
        .handle_signals(false)
        .system_metrics(Duration::ZERO)
        // The worker flushes (and so advances the cursor) only when asked.
        .flush_interval(Duration::from_secs(3600))
        // TensorBoard hands every batch to the OS at once, past the cursor.
        .with_tracker(Box::new(
            TensorBoardTracker::builder()
                .flush_interval(Duration::ZERO)
                .build(),
        ))
}

/// Every `(tag, step)` of the scalars in `dir`'s event files, with how often it occurs.
fn scalar_counts(dir: &Path) -> BTreeMap<(String, i64), usize> {
    let mut out = BTreeMap::new();
    for file in event_files(dir).unwrap() {
        for rec in read_event_file(&file).unwrap().events {
            if let Some(What::Summary(s)) = rec.event.what {
                for v in s.value {
                    if matches!(v.value, Some(V::SimpleValue(_))) {
                        *out.entry((v.tag, rec.event.step)).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    out
}

fn loss_steps(dir: &Path) -> usize {
    scalar_counts(dir)
        .keys()
        .filter(|(tag, _)| tag == "loss")
        .count()
}

#[test]
fn a_killed_run_resumed_shows_every_step_once_in_tensorboard() {
    if let Some(root) = std::env::var_os(CHILD) {
        child(Path::new(&root));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_run_resumed_shows_every_step_once_in_tensorboard",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut run_dir = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // The harness may print the test's name on the same line first.
        if let Some((_, dir)) = line.split_once("READY ") {
            run_dir = Some(PathBuf::from(dir));
            break;
        }
    }
    let run_dir = run_dir.expect("the child did not get ready");
    // SIGKILL: no destructor, no finish, no last cursor write.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success());

    // The scenario the bug needs: TensorBoard holds events past its recorded cursor.
    let cursor = read_cursors(&run_dir).unwrap()["tensorboard"];
    let log_end = RunReader::open(&run_dir).unwrap().last_seq().unwrap();
    assert_eq!(
        log_end,
        FLUSHED + UNFLUSHED,
        "every event is in the local log"
    );
    assert_eq!(cursor, FLUSHED, "the cursor is the flush's");
    assert_eq!(loss_steps(&run_dir), (FLUSHED + UNFLUSHED) as usize);

    let t = builder(&root)
        .resume(Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(t.run_dir(), run_dir, "resumed the killed run");
    let total = FLUSHED + UNFLUSHED + RESUMED;
    for step in FLUSHED + UNFLUSHED..total {
        t.log_metric(step, "loss", step as f64).unwrap();
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");

    let counts = scalar_counts(&run_dir);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "steps not exactly once: {twice:?}");
    let steps: Vec<i64> = counts
        .keys()
        .filter(|(tag, _)| tag == "loss")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(steps, (0..total as i64).collect::<Vec<_>>());

    // The real TensorBoard reads the same: storage order (duplicates would show) and the
    // accumulator the dashboards use.
    let Some(py) = peer_python(&["tensorboard"]) else {
        return;
    };
    let dir = run_dir.to_str().unwrap();
    let stored = run_python_json(&py, "scalars.py", &[dir]);
    let stored: Vec<u64> = stored
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[1] == "loss")
        .map(|r| r[0].as_u64().unwrap())
        .collect();
    assert_eq!(
        stored,
        (0..total).collect::<Vec<_>>(),
        "loader, storage order"
    );
    let acc = run_python_json(&py, "accumulator_steps.py", &[dir, "loss"]);
    let acc: Vec<u64> = acc
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(acc, (0..total).collect::<Vec<_>>(), "EventAccumulator");
}

/// Logs, flushes (the cursor records it), logs more, waits until TensorBoard's file holds the
/// later events too, then says so and waits to be killed.
fn child(root: &Path) {
    let t = builder(root).build().unwrap();
    for step in 0..FLUSHED {
        t.log_metric(step, "loss", step as f64).unwrap();
    }
    t.flush().unwrap();
    // The dispatcher saves cursors on a one-second timer: wait until the file holds the flush's.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_cursors(t.run_dir())
        .unwrap()
        .get("tensorboard")
        .copied()
        != Some(FLUSHED)
    {
        assert!(Instant::now() < deadline, "the cursor was never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
    for step in FLUSHED..FLUSHED + UNFLUSHED {
        t.log_metric(step, "loss", step as f64).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while loss_steps(t.run_dir()) < (FLUSHED + UNFLUSHED) as usize {
        assert!(
            Instant::now() < deadline,
            "tensorboard never wrote the events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the local log has them (appended before fan-out): a resume can replay them.
    println!("READY {}", t.run_dir().display());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
