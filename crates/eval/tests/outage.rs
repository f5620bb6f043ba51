//! A backend that is down while checkpoints are evaluated does not stop the watcher: every step
//! is evaluated, logged to the local store and recorded; when the backend comes back it receives
//! each step's metrics exactly once, from the core's spool.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_core::{
    Batch, Event, EventKind, ExperimentConfig, ExperimentTracker, Resume, RunContext, RunStatus,
    Tracker, TrackerError,
};
use exptrack_eval::{BoxError, EvalWatcher, Outcome, RecordKind};

/// A remote backend stand-in that refuses every call (transient error) while `down` is set.
struct FlakyBackend {
    down: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<(u64, Event)>>>,
}

impl Tracker for FlakyBackend {
    fn name(&self) -> &str {
        "flaky"
    }
    fn supports(&self, _kind: EventKind) -> bool {
        true
    }
    fn open(&mut self, _ctx: &RunContext) -> Result<(), TrackerError> {
        Ok(())
    }
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TrackerError::transient("connection refused"));
        }
        let mut r = self.received.lock().expect("received");
        for (i, e) in batch.events.iter().enumerate() {
            r.push((batch.first_seq + i as u64, e.clone()));
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TrackerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TrackerError::transient("connection refused"));
        }
        Ok(())
    }
    fn close(&mut self, _status: RunStatus) -> Result<(), TrackerError> {
        Ok(())
    }
}

#[test]
fn backend_outage_does_not_stop_evaluation_and_is_replayed_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let exp = "outage";
    let mut trainer = common::trainer(&ckpt_dir, exp, None);
    for step in [5, 10, 15] {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    let down = Arc::new(AtomicBool::new(true));
    let received = Arc::new(Mutex::new(Vec::new()));
    let tracker = ExperimentTracker::builder(ExperimentConfig::named("eval-outage"))
        .runs_dir(tmp.path().join("runs"))
        .resume(Resume::RunId("eval".into()))
        .handle_signals(false)
        .collect_system_info(false)
        .finish_timeout(Duration::from_secs(10))
        .with_tracker(Box::new(FlakyBackend {
            down: Arc::clone(&down),
            received: Arc::clone(&received),
        }))
        .build()
        .expect("tracker");
    let mut watcher = EvalWatcher::builder(&ckpt_dir, exp)
        .poll_interval(Duration::from_millis(10))
        .flush_timeout(Duration::from_millis(200))
        .dataset("valid", |c: &LoadedCheckpoint| {
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .tracker(&tracker)
        .build()
        .expect("watcher");
    let t = Instant::now();
    let got = watcher.poll_once().expect("poll during the outage");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "bounded by the flush timeout"
    );
    assert_eq!(got.iter().map(|e| e.step).collect::<Vec<_>>(), [5, 10, 15]);
    assert!(
        got.iter()
            .all(|e| matches!(e.outcome, Outcome::Evaluated { .. }))
    );
    assert_eq!(
        watcher.state().steps_with(RecordKind::Evaluated),
        [5, 10, 15]
    );
    let local = common::eval_event_counts(tracker.run_dir());
    assert_eq!(local.keys().copied().collect::<Vec<_>>(), [5, 10, 15]);
    assert!(
        received.lock().expect("received").is_empty(),
        "nothing got through while down"
    );

    // The backend recovers: the spool delivers every step once, in order.
    down.store(false, Ordering::SeqCst);
    tracker
        .flush_timeout(Duration::from_secs(20))
        .expect("flush after recovery");
    drop(watcher);
    tracker.finish(RunStatus::Completed).expect("finish");
    let received = received.lock().expect("received");
    let seqs: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {seqs:?}"
    );
    let mut per_step: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, e) in received.iter() {
        if let Event::Metrics { step, values, .. } = e
            && values.iter().any(|m| m.key.starts_with("eval/valid/"))
        {
            *per_step.entry(*step).or_default() += 1;
        }
    }
    assert_eq!(per_step, BTreeMap::from([(5, 1), (10, 1), (15, 1)]));
}
